"""A small synthetic dataset shaped like Kaggle's "Understanding the Amazon from Space", and
the sample dataset the profiler runs on when it is given no data.

``write_dataset(out, n, size, seed, quality)`` writes ``out/train_<i>.jpg`` (RGB, size x size)
and ``out/labels.csv`` (image_name,tags); the same arguments give byte-identical files. Tiles
are textured like aerial imagery so that decoding them costs about what real tiles cost.

``sample_dataset()`` returns the folder of the sample dataset (128 tiles of 256 x 256, seed 0:
the files of ``data/sample`` in the repository), making it on first use in the cache folder
(``$AUGMENT_CACHE``, else ``$XDG_CACHE_HOME/augment``, else ``~/.cache/augment``), so that an
installed package needs no checkout and writes nothing into site-packages.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

logger = logging.getLogger("augment")

# Tag frequencies loosely follow the real training set (40479 images).
WEATHER = {"clear": 0.70, "partly_cloudy": 0.18, "haze": 0.07, "cloudy": 0.05}
LAND = {
    "primary": 0.97, "agriculture": 0.32, "road": 0.21, "water": 0.19, "cultivation": 0.12,
    "habitation": 0.10, "bare_ground": 0.02, "selective_logging": 0.009, "artisinal_mine": 0.009,
    "blooming": 0.009, "slash_burn": 0.006, "blow_down": 0.003, "conventional_mine": 0.003,
}  # fmt: skip
# Small land features drawn as noisy patches: colour, count, side range (fraction of tile).
PATCHES = {
    "cultivation": ((0.40, 0.46, 0.26), 4, 1 / 16, 1 / 6),
    "bare_ground": ((0.60, 0.48, 0.36), 3, 1 / 16, 1 / 5),
    "conventional_mine": ((0.70, 0.64, 0.58), 2, 1 / 5, 1 / 3),
    "artisinal_mine": ((0.66, 0.52, 0.36), 6, 1 / 30, 1 / 10),
    "slash_burn": ((0.16, 0.14, 0.12), 2, 1 / 12, 1 / 5),
    "blow_down": ((0.36, 0.44, 0.26), 1, 1 / 6, 1 / 3),
    "selective_logging": ((0.45, 0.40, 0.30), 10, 0.0, 1 / 30),
    "blooming": ((0.55, 0.55, 0.40), 30, 0.0, 1 / 40),
}


def draw_tags(rng: np.random.Generator) -> list[str]:
    """One weather tag; land tags drawn independently; a cloudy tile has no other tags."""
    weather = str(rng.choice(list(WEATHER), p=list(WEATHER.values())))
    if weather == "cloudy":
        return [weather]
    land = [t for t, p in LAND.items() if rng.random() < p] or ["primary"]
    return [weather, *land]


def noise(rng: np.random.Generator, s: int, grids: tuple[int, ...], falloff: float) -> np.ndarray:
    """Multi-octave value noise in [0, 1]: random grids upsampled bicubically and summed."""
    out, amp = np.zeros((s, s), np.float32), 1.0
    for g in grids:
        grid = Image.fromarray(rng.random((g, g), dtype=np.float32))
        out += amp * np.asarray(grid.resize((s, s), Image.BICUBIC))
        amp *= falloff
    out -= out.min()
    return out / max(float(out.max()), 1e-6)


def paint(img: np.ndarray, mask: np.ndarray, rgb, rng: np.random.Generator, grain=0.15) -> None:
    """Blend a colour, roughened by per-pixel grain, into img where mask (0..1) is set."""
    s = img.shape[0]
    tex = np.asarray(rgb, np.float32) * (1 + grain * (rng.random((s, s, 1), np.float32) - 0.5))
    m = mask[..., None]
    img *= 1 - m
    img += m * tex


def forest(rng: np.random.Generator, s: int) -> np.ndarray:
    """Canopy: dark greens with crown-sized blobs and fine per-pixel grain."""
    n = noise(rng, s, (4, 16, s // 6, s // 3, s // 2, s), 1.0)[..., None]
    dark, light = np.array([0.10, 0.20, 0.10]), np.array([0.28, 0.42, 0.22])
    img = dark + (light - dark) * n
    return (img * (1 + 0.22 * (rng.random((s, s, 1)) - 0.5))).astype(np.float32)


def lines_mask(s: int, polylines: list, width: int) -> np.ndarray:
    """Rasterise polylines of (x, y) points to a 0..1 mask."""
    im = Image.new("L", (s, s))
    d = ImageDraw.Draw(im)
    for pts in polylines:
        d.line([tuple(map(float, p)) for p in pts], fill=255, width=width, joint="curve")
    return np.asarray(im, np.float32) / 255


def wander(rng: np.random.Generator, s: int, wiggle: float) -> np.ndarray:
    """A meandering path across the tile, as (x, y) points, in a random orientation."""
    t = np.linspace(-0.1, 1.1, 40) * s
    wave = np.sin(t / s * rng.uniform(3, 9) + rng.uniform(0, 6))
    drift = np.cumsum(rng.normal(0, wiggle * s * 0.1, t.size))
    pts = np.stack([t, rng.uniform(0.2, 0.8) * s + wiggle * s * wave + drift], 1)
    return pts[:, ::-1] if rng.random() < 0.5 else pts


def rects_mask(rng: np.random.Generator, s: int, n: int, lo: int, hi: int, near=None) -> np.ndarray:
    """n random axis-aligned rectangles of side lo..hi, optionally centred near given points."""
    im = Image.new("L", (s, s))
    d = ImageDraw.Draw(im)
    for _ in range(n):
        w, h = rng.integers(lo, max(lo, hi) + 1, 2)
        if near is None:
            cx, cy = rng.uniform(0, s, 2)
        else:
            cx, cy = near[rng.integers(len(near))] + rng.normal(0, hi, 2)
        d.rectangle([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], fill=255)
    return np.asarray(im, np.float32) / 255


def agriculture(img, rng, s):
    """Rectangular fields with slightly different tints inside one cleared region."""
    x0, y0 = rng.uniform(-0.2, 0.5, 2) * s
    xs = np.sort(rng.uniform(x0, x0 + rng.uniform(0.4, 1.0) * s, rng.integers(3, 7)))
    ys = np.sort(rng.uniform(y0, y0 + rng.uniform(0.4, 1.0) * s, rng.integers(3, 7)))
    for a, b in zip(xs[:-1], xs[1:], strict=True):
        for c, d in zip(ys[:-1], ys[1:], strict=True):
            m = np.zeros((s, s), np.float32)
            top, bottom, left, right = np.clip([c, d - 1, a, b - 1], 0, s).astype(int)
            m[top:bottom, left:right] = 1  # the 1-px gaps between fields read as hedgerows
            rgb = np.array([0.42, 0.50, 0.28]) + rng.uniform(-0.08, 0.12, 3)
            paint(img, m * rng.uniform(0.8, 1.0), rgb, rng, grain=0.25)


def patches(img, rng, s, rgb, n, lo, hi, grain=0.3, soft=0.6):
    """Irregular patches: rectangles softened by noise (cultivation, bare ground, mines...)."""
    m = rects_mask(rng, s, n, lo, hi) * (soft + (1 - soft) * noise(rng, s, (8, s // 4), 0.6))
    paint(img, m, rgb, rng, grain)


def water(img, rng, s):
    """A river: a meandering band of brown-green water with darker banks."""
    path = wander(rng, s, 0.12)
    for lo, hi, pad, rgb in ((24, 10, 4, (0.12, 0.16, 0.10)), (40, 14, 2, (0.30, 0.30, 0.22))):
        paint(img, lines_mask(s, [path], int(rng.integers(s // lo, s // hi + 1)) + pad), rgb, rng)


def road(img, rng, s) -> np.ndarray:
    """One or two thin tan roads; returns points on them (habitation clusters along roads)."""
    paths = [wander(rng, s, 0.04) for _ in range(rng.integers(1, 3))]
    paint(img, lines_mask(s, paths, max(2, s // 100)), (0.62, 0.55, 0.42), rng, grain=0.2)
    return np.concatenate(paths)


def haze(img, rng, s, strength):
    """Whitish overlay with low-frequency noise; strength 0..1."""
    m = strength * (0.6 + 0.4 * noise(rng, s, (2, 4, 8), 0.5))
    paint(img, m, (0.82, 0.82, 0.85), rng, grain=0.03)


def clouds(img, rng, s, cover):
    """Cumulus clouds: thresholded low-frequency noise, cover = fraction of sky."""
    n = noise(rng, s, (3, 6, 12, 24, s // 4), 0.55)
    m = np.clip((n - (1 - cover)) * 4, 0, 1)
    paint(img, m, (0.92, 0.92, 0.94), rng, grain=0.04)


def make_tile(rng: np.random.Generator, s: int, tags: list[str]) -> np.ndarray:
    """Draw one S x S RGB uint8 tile showing the given tags."""
    img = forest(rng, s)
    if "primary" not in tags:
        patches(img, rng, s, (0.45, 0.48, 0.30), 6, s // 3, s)
    if "agriculture" in tags:
        agriculture(img, rng, s)
    for tag, (rgb, n, lo, hi) in PATCHES.items():
        if tag in tags:
            patches(img, rng, s, rgb, n, max(2, int(lo * s)), int(hi * s))
    if "water" in tags:
        water(img, rng, s)
    along = road(img, rng, s) if "road" in tags else None
    if "habitation" in tags:
        m = rects_mask(rng, s, int(rng.integers(8, 30)), 2, max(3, s // 40), along)
        paint(img, m, (0.78, 0.76, 0.72), rng, grain=0.3)
    if "haze" in tags:
        haze(img, rng, s, rng.uniform(0.25, 0.45))
    if "partly_cloudy" in tags:
        clouds(img, rng, s, rng.uniform(0.15, 0.5))
    if "cloudy" in tags:
        haze(img, rng, s, rng.uniform(0.6, 0.8))
        clouds(img, rng, s, rng.uniform(0.6, 0.95))
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def write_dataset(
    out: str | Path, n: int = 64, size: int = 256, seed: int = 0, quality: int = 90
) -> int:
    """Write ``n`` tiles of ``size`` x ``size`` (JPEG ``quality``) and labels.csv into ``out``
    (made if missing); returns the bytes written. Same arguments, byte-identical files."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n (number of images) must be an integer >= 1, got {n!r}")
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size (tile side in pixels) must be an integer >= 8, got {size!r}")
    if not isinstance(quality, int) or not 1 <= quality <= 95:
        raise ValueError(f"quality (JPEG) must be an integer in 1..95, got {quality!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows, total = ["image_name,tags"], 0
    for i in range(n):
        tags = draw_tags(rng)
        path = out / f"train_{i}.jpg"
        Image.fromarray(make_tile(rng, size, tags)).save(
            path, "JPEG", quality=quality, optimize=False, subsampling="4:2:0"
        )
        total += path.stat().st_size
        rows.append(f"train_{i},{' '.join(tags)}")
    (out / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8", newline="\n")
    return total + (out / "labels.csv").stat().st_size


# The sample dataset: what data/sample in the repository holds. Change the name with the
# generator's output, so that a cache made by an older version is not taken for it.
SAMPLE = {"n": 128, "size": 256, "seed": 0, "quality": 90}
SAMPLE_NAME = "sample-v1"


def cache_dir() -> Path:
    """Where augment keeps what it makes for itself: ``$AUGMENT_CACHE``, else
    ``$XDG_CACHE_HOME/augment``, else ``~/.cache/augment``."""
    if os.environ.get("AUGMENT_CACHE"):
        return Path(os.environ["AUGMENT_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "augment"
    return Path.home() / ".cache" / "augment"


def sample_path() -> Path:
    """The sample dataset's folder, whether or not it is made yet."""
    return cache_dir() / SAMPLE_NAME


def sample_dataset() -> Path:
    """The sample dataset's folder, made on first use (``made_once``)."""
    return made_once(SAMPLE_NAME, "the sample dataset", lambda tmp: write_dataset(tmp, **SAMPLE))


def made_once(name: str, what: str, write) -> Path:
    """``cache_dir() / name``, made on first use by ``write(folder)``. It is written into a
    temporary folder beside it and renamed into place, so a process never sees a half-written
    one; when two make it at once, the first rename wins and the other's copy is dropped."""
    folder = cache_dir() / name
    if folder.is_dir():
        return folder
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        # mkdir (not mkdtemp) so the folder gets the usual permissions, umask applied
        tmp = folder.parent / f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.mkdir()
    except OSError as exc:
        raise OSError(
            f"cannot make {what} in {str(folder.parent)!r} ({exc}); "
            "set AUGMENT_CACHE to a writable folder"
        ) from None
    try:
        logger.info("making %s in %s", what, folder)
        write(tmp)
        os.rename(tmp, folder)
    except OSError:
        if not folder.is_dir():  # not another process's rename: a real failure
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
