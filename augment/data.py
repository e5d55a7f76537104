"""Datasets: where images come from, how they are decoded, and their labels.

A dataset exposes the three stages separately (``read`` bytes, ``decode`` pixels, ``label``)
so the loader can time each one. Anything unreadable raises ``BadImageError`` naming the
file and the cause.
"""

from __future__ import annotations

import csv
import io
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger("augment")

try:
    import simplejpeg as _simplejpeg
except ImportError:
    _simplejpeg = None
try:
    import cv2 as _cv2
except ImportError:
    _cv2 = None

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# Pillow's own limit (about 89 Mpx) is a warning up to twice that; here it is an error.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


class BadImageError(ValueError):
    """An image that cannot be read or decoded. ``source`` names the file or URL."""

    def __init__(self, source: str, cause: str):
        super().__init__(f"cannot load image {source}: {cause}")
        self.source, self.cause = source, cause

    def __reduce__(self):  # keep source and cause across process boundaries
        return BadImageError, (self.source, self.cause)


def decode_image(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode image bytes to an RGB uint8 (H, W, 3) array.

    Grayscale, palette, RGBA (alpha dropped), 16-bit and CMYK are converted; EXIF
    orientation is applied. Pillow reads every format. A plain, complete RGB JPEG goes to
    simplejpeg or OpenCV when installed (``augment[fast]``): the same libjpeg-turbo pixels,
    up to twice as fast as Pillow's decode and copy (``scripts/benchmark.py decoders``).
    """
    if not data:
        raise BadImageError(source, "the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:  # reads the header only
                if im.width * im.height > MAX_PIXELS:
                    raise BadImageError(
                        source,
                        f"{im.width}x{im.height} pixels is over the "
                        f"{MAX_PIXELS} pixel limit (decompression bomb?)",
                    )
                fast = _fast_jpeg(im, data)
                if fast is not None:
                    return fast
                im.load()
                return _to_rgb(im)
    except BadImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImageError(source, f"decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise BadImageError(source, "not an image file Pillow can identify") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadImageError(source, f"corrupt or truncated: {exc}") from None


def _fast_jpeg(im: Image.Image, data: bytes) -> np.ndarray | None:
    """A complete RGB JPEG with no EXIF rotation, decoded by simplejpeg or OpenCV (the
    faster first, by ``scripts/benchmark.py decoders``), else None. Truncated files are left
    to Pillow, which refuses them where OpenCV would pad them with grey."""
    if im.format != "JPEG" or im.mode != "RGB":
        return None
    if not data.rstrip(b"\0").endswith(b"\xff\xd9") or im.getexif().get(0x0112, 1) != 1:
        return None
    pixels = None
    if _simplejpeg is not None:
        try:
            pixels = _simplejpeg.decode_jpeg(data, colorspace="RGB")
        except ValueError:
            return None
    elif _cv2 is not None:
        pixels = _cv2.imdecode(np.frombuffer(data, np.uint8), _cv2.IMREAD_COLOR_RGB)
    if pixels is None or pixels.shape[:2] != (im.height, im.width):
        return None
    return pixels


def _to_rgb(im: Image.Image) -> np.ndarray:
    if im.getexif().get(0x0112, 1) != 1:  # orientation tag
        im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grey: keep the high byte
        grey = np.asarray(im).astype(np.uint32)
        top = 65535 if im.mode.startswith("I;16") or grey.max() > 255 else 255
        grey = (grey * 255 + top // 2) // top
        return np.repeat(grey.astype(np.uint8)[:, :, None], 3, axis=2)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im)


def read_file(path: str | Path) -> bytes:
    """The bytes of ``path``; a missing or unreadable file is a ``BadImageError``."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise BadImageError(str(path), f"cannot read the file: {exc.strerror or exc}") from None


class ImageFolder:
    """Every image file under ``root`` (sorted paths), with labels.

    Labels come from ``labels_csv`` (Kaggle style: ``image_name,tags``, space-separated tags,
    names without extension) as a float32 multi-hot vector over the sorted tag set, or else
    from the name of each image's sub-folder as an int64 class index. ``classes`` lists them.
    """

    def __init__(self, root: str | Path, labels_csv: str | Path | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"ImageFolder root {str(self.root)!r} is not a directory")
        self.paths = sorted(
            p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        if not self.paths:
            raise ValueError(
                f"no image files under {str(self.root)!r} (accepted: {', '.join(IMAGE_SUFFIXES)})"
            )
        if labels_csv is not None:
            self.classes, self.labels = _csv_labels(Path(labels_csv), self.paths)
        else:
            self.classes, self.labels = _folder_labels(self.root, self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def source(self, index: int) -> str:
        return str(self.paths[index])

    def read(self, index: int) -> bytes:
        return read_file(self.paths[index])

    def decode(self, data: bytes, index: int) -> np.ndarray:
        return decode_image(data, self.source(index))

    def label(self, index: int) -> np.ndarray:
        return self.labels[index]

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.decode(self.read(index), index), self.label(index)

    def __repr__(self) -> str:
        return f"ImageFolder({str(self.root)!r}, {len(self)} images, {len(self.classes)} classes)"


def _folder_labels(root: Path, paths: Sequence[Path]) -> tuple[list[str], np.ndarray]:
    # The class is the top-level folder (as torchvision's ImageFolder): b/sub/x.jpg is a "b".
    folders = [
        p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else "." for p in paths
    ]
    loose = [str(p) for p, f in zip(paths, folders) if f == "."]
    if loose:
        raise ValueError(
            f"{len(loose)} image(s) directly in {str(root)!r} (e.g. {loose[0]!r}) have "
            "no label: put images in one sub-folder per class or pass labels_csv"
        )
    classes = sorted(set(folders))
    lookup = {c: i for i, c in enumerate(classes)}
    return classes, np.array([lookup[f] for f in folders], dtype=np.int64)


def _csv_labels(path: Path, images: Sequence[Path]) -> tuple[list[str], np.ndarray]:
    tags_of = read_tags_csv(path)
    seen: dict[str, Path] = {}
    for p in images:
        if p.stem in seen:
            raise ValueError(
                f"{str(seen[p.stem])!r} and {str(p)!r} share the name {p.stem!r}, so "
                f"one row of {str(path)!r} would label both: rename one"
            )
        seen[p.stem] = p
    missing = [str(p) for p in images if p.stem not in tags_of]
    if missing:
        raise ValueError(
            f"{len(missing)} image(s) have no row in {str(path)!r}, "
            f"e.g. {missing[0]!r} (image_name is the file name without extension)"
        )
    unused = len(set(tags_of) - {p.stem for p in images})
    if unused:
        log.warning("%d row(s) of %s name no image file under the root", unused, path)
    return multi_hot([tags_of[p.stem] for p in images])


def read_tags_csv(path: Path) -> dict[str, list[str]]:
    """``{image_name: [tags]}`` from a Kaggle-style ``image_name,tags`` CSV."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not {"image_name", "tags"} <= set(reader.fieldnames):
                raise ValueError(
                    f"labels CSV {str(path)!r} needs the columns image_name,tags; "
                    f"found {reader.fieldnames}"
                )
            return {row["image_name"]: (row["tags"] or "").split() for row in reader}
    except OSError as exc:
        raise ValueError(f"cannot read labels CSV {str(path)!r}: {exc}") from None


def multi_hot(tag_lists: Sequence[Sequence[str]]) -> tuple[list[str], np.ndarray]:
    classes = sorted({t for tags in tag_lists for t in tags})
    lookup = {c: i for i, c in enumerate(classes)}
    labels = np.zeros((len(tag_lists), len(classes)), dtype=np.float32)
    for row, tags in enumerate(tag_lists):
        labels[row, [lookup[t] for t in tags]] = 1.0
    return classes, labels
