"""The sample segmentation dataset: the sample tiles with a class map each.

``sample_segmentation()`` returns a folder laid out for ``SegmentationFolder``
(``images/train_<i>.jpg``, the sample dataset's tiles; ``masks/train_<i>.png``; and
``classes.txt``), made on first use in the cache folder beside the sample dataset. Each class
map is read from its tile's colours, so it lies on what the tile shows: forest, open ground
(roads, fields, bare soil, houses), dark ground (water, burnt patches) and cloud or haze.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from augment.sources.sample_data import made_once, sample_dataset

CLASSES = ("forest", "open_ground", "dark_ground", "cloud")
SEGMENTATION_NAME = "segmentation-v1"


def class_map(rgb: np.ndarray) -> np.ndarray:
    """A uint8 class map (values index ``CLASSES``) of an RGB tile, from its colours
    smoothed over a few pixels: bright and grey is cloud, dark is dark ground, reddish or
    light is open ground, the rest forest."""
    smooth = np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(1.5)), np.float32)
    r, g, b = smooth[..., 0], smooth[..., 1], smooth[..., 2]
    light = (r + g + b) / 3
    grey = np.max(smooth, axis=2) - np.min(smooth, axis=2) < 40
    out = np.zeros(rgb.shape[:2], np.uint8)
    out[(r > 0.8 * g) | (light > 110)] = 1
    out[light < 40] = 2
    out[(light > 170) & grey] = 3
    return out


def write_segmentation(out: str | Path, tiles: str | Path) -> None:
    """``out/images`` (the JPEGs of ``tiles``), ``out/masks`` (a class map PNG each) and
    ``out/classes.txt``."""
    out, tiles = Path(out), Path(tiles)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    for path in sorted(tiles.glob("*.jpg")):
        shutil.copyfile(path, out / "images" / path.name)
        with Image.open(path) as im:
            mask = class_map(np.asarray(im.convert("RGB")))
        Image.fromarray(mask, mode="L").save(out / "masks" / f"{path.stem}.png")
    (out / "classes.txt").write_text("\n".join(CLASSES) + "\n", encoding="utf-8")


def sample_segmentation() -> Path:
    """The sample segmentation dataset's folder, made on first use."""
    tiles = sample_dataset()
    what = "the sample segmentation dataset"
    return made_once(SEGMENTATION_NAME, what, lambda tmp: write_segmentation(tmp, tiles))
