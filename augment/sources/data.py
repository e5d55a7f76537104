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
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from augment.ops.images import BadImageError  # noqa: F401 (raised here, named from here too)
from augment.sources import jpeg_region

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
# Scales libjpeg-turbo decodes at in the DCT domain (1/k), and OpenCV's flags for them.
REDUCTIONS = (1, 2, 4, 8)
_CV2_REDUCED = {k: f"IMREAD_REDUCED_COLOR_{k}" for k in (2, 4, 8)}
# reduce(height, width) -> k: given a JPEG's size, the scale 1/k to decode it at.
Reduce = Callable[[int, int], int]


def decode_image(data: bytes, source: str = "<bytes>", reduce: Reduce | None = None) -> np.ndarray:
    """Decode image bytes to an RGB uint8 (H, W, 3) array.

    Grayscale, palette, RGBA (alpha dropped), 16-bit and CMYK are converted; EXIF
    orientation is applied. Pillow reads every format. A plain, complete RGB JPEG goes to
    simplejpeg or OpenCV when installed (``augment[fast]``): the same libjpeg-turbo pixels,
    up to twice as fast as Pillow's decode and copy (``scripts/benchmark.py decoders``).

    ``reduce(height, width) -> k`` is called with the size in the header of a plain RGB
    JPEG (none other): for k of 2, 4 or 8 the image is decoded at scale 1/k in the DCT
    domain, ``ceil(H/k) x ceil(W/k)`` pixels, each close to the mean of a k x k block
    (pixel j centred on k*j + (k-1)/2). Every decoder gives the same pixels (tested).

    Where ``reduce`` also has ``region(k)`` (a sample's plan, ``SamplePlan``) and it answers
    a rectangle ``(y0, y1, x0, x1)`` of the image at scale 1/k, only that rectangle is
    decoded and returned, with the pixels a full decode has there (``augment.sources.jpeg_region``;
    without its library, the whole image, as before).
    """
    if not data:
        raise BadImageError(source, "the file is empty (0 bytes)")
    try:
        return _decode(data, source, reduce)
    except _NotTheFile as wrapper:
        error = wrapper.error
    raise error  # outside the handler: the transform's own error, as it was raised


class _NotTheFile(Exception):
    """An error of the ``reduce`` callback, carried past the handlers that blame the file."""

    def __init__(self, error: BaseException):
        self.error = error


def _decode(data: bytes, source: str, reduce: Reduce | None) -> np.ndarray:
    size = _plain_jpeg_size(data)
    if size is not None:  # the common case without Pillow's header parse (~65 us an image)
        k = 1 if reduce is None else _reduction(reduce, size)
        part = _region_jpeg(data, reduce, k)
        if part is not None:
            return part
        fast = _fast_jpeg(data, k, (-(-size[1] // k), -(-size[0] // k)))
        if fast is not None:
            return fast
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
                if not _plain_jpeg(im, data):
                    im.load()
                    return _to_rgb(im)
                k = 1 if reduce is None else _reduction(reduce, im.size)
                part = _region_jpeg(data, reduce, k)
                if part is not None:
                    return part
                fast = _fast_jpeg(data, k, (-(-im.height // k), -(-im.width // k)))
                if fast is not None:
                    return fast
                if k > 1:  # Pillow's draft: scale = the largest 1/k its size allows
                    im.draft("RGB", (im.width // k, im.height // k))
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


def _plain_jpeg(im: Image.Image, data: bytes) -> bool:
    """A complete RGB JPEG with no EXIF rotation: what the fast decoders and reduced decoding
    take. Truncated files are left to Pillow, which refuses them where OpenCV would pad them
    with grey."""
    if im.format != "JPEG" or im.mode != "RGB":
        return False
    return _complete_jpeg(data) and im.getexif().get(0x0112, 1) == 1


def _complete_jpeg(data: bytes) -> bool:
    """The file ends with the JPEG end-of-image marker (padding zeros allowed)."""
    return data.rstrip(b"\0").endswith(b"\xff\xd9")


def _plain_jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(w, h) of what ``_plain_jpeg`` accepts, read by simplejpeg's header parser, for a
    complete colour JPEG within the pixel limit and without an EXIF block (which may rotate
    it); None for anything else, which then goes through Pillow as before."""
    if _simplejpeg is None or not data.startswith(b"\xff\xd8"):
        return None
    try:
        h, w, colorspace, _ = _simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    limit = Image.MAX_IMAGE_PIXELS or MAX_PIXELS  # Pillow's, as a user may have set it
    if colorspace not in ("YCbCr", "RGB") or w * h > limit or b"Exif\x00\x00" in data:
        return None
    return (w, h) if _complete_jpeg(data) else None


def _reduction(reduce: Reduce, size: tuple[int, int]) -> int:
    """What ``reduce`` answers for an image of ``size`` (w, h): 1 where the image is smaller
    than a block. Its errors, and a wrong answer, are not the file's fault."""
    try:
        k = reduce(size[1], size[0])
        if isinstance(k, bool) or k not in REDUCTIONS:
            raise ValueError(f"reduce(height, width) must return one of {REDUCTIONS}, got {k!r}")
    except Exception as exc:
        raise _NotTheFile(exc) from None
    return k if k <= min(size) else 1


def _region_jpeg(data: bytes, reduce: Reduce | None, k: int) -> np.ndarray | None:
    """The rectangle that ``reduce.region(k)`` asks for, decoded alone (``jpeg_region``), or
    None: no such method, no rectangle, or no library for it."""
    region = getattr(reduce, "region", None)
    if region is None or not jpeg_region.available():
        return None
    try:
        box = region(k)
    except Exception as exc:
        raise _NotTheFile(exc) from None
    return None if box is None else jpeg_region.decode(data, k, box)


def _fast_jpeg(data: bytes, k: int, shape: tuple[int, int]) -> np.ndarray | None:
    """A plain JPEG decoded at scale 1/k by simplejpeg or OpenCV (the faster first, by
    ``scripts/benchmark.py decoders``), or None when neither is installed or gives ``shape``."""
    pixels = None
    if _simplejpeg is not None:
        size = {} if k == 1 else {"min_height": shape[0], "min_width": shape[1]}
        try:
            pixels = _simplejpeg.decode_jpeg(data, colorspace="RGB", **size)
        except ValueError:
            return None
    elif _cv2 is not None:
        buffer = np.frombuffer(data, np.uint8)
        if k == 1:
            pixels = _cv2.imdecode(buffer, _cv2.IMREAD_COLOR_RGB)
        else:  # the reduced flags give BGR only
            pixels = _cv2.imdecode(buffer, getattr(_cv2, _CV2_REDUCED[k]))
            if pixels is not None:
                pixels = _cv2.cvtColor(pixels, _cv2.COLOR_BGR2RGB)
    if pixels is None or pixels.shape[:2] != shape:
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

    ``reduced_decode`` (default on): when the Loader's transform plans its warp from the
    image's size (``Compose``, a geometric transform) and that warp shrinks the image by 2x
    or more, a JPEG is decoded at scale 1/2, 1/4 or 1/8 and the warp takes the rest. The
    choice depends only on the sample's drawn parameters and the file's header, so batches
    stay identical across backends; they differ slightly from full decoding (docs/manual.md).

    ``partial_decode`` (default on, with ``reduced_decode``): only the rectangle of a JPEG
    that the warp reads is decoded, with the pixels a full decode has there
    (docs/decoding.md); off, the whole image is decoded.
    """

    def __init__(
        self,
        root: str | Path,
        labels_csv: str | Path | None = None,
        reduced_decode: bool = True,
        partial_decode: bool = True,
    ):
        self.root = Path(root)
        self.reduced_decode = bool(reduced_decode)
        self.partial_decode = bool(partial_decode)
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

    def decode(self, data: bytes, index: int, reduce: Reduce | None = None) -> np.ndarray:
        """Pixels of sample ``index``; ``reduce`` as in ``decode_image``, used only with
        ``reduced_decode`` (and its ``region`` only with ``partial_decode``)."""
        return decode_planned(
            data, self.source(index), reduce, self.reduced_decode, self.partial_decode
        )

    def label(self, index: int) -> np.ndarray:
        return self.labels[index]

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.decode(self.read(index), index), self.label(index)

    def __repr__(self) -> str:
        off = "" if self.reduced_decode else ", reduced_decode=False"
        off += "" if self.partial_decode else ", partial_decode=False"
        return (
            f"ImageFolder({str(self.root)!r}, {len(self)} images, {len(self.classes)} classes{off})"
        )


def decode_planned(
    data: bytes, source: str, reduce: Reduce | None, reduced: bool, partial: bool
) -> np.ndarray:
    """``decode_image`` with the loader's ``reduce`` where the dataset allows it: smaller
    (``reduced``), and only the region the warp reads (``partial``, with ``reduced``)."""
    if not reduced or reduce is None:
        return decode_image(data, source)
    return decode_image(data, source, reduce if partial else _no_region(reduce))


def _no_region(reduce: Reduce) -> Reduce:
    """``reduce`` without its ``region``: a decoder then decodes the whole image."""
    return lambda height, width: reduce(height, width)


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
