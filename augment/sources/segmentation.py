"""Images with their class maps, as segmentation datasets lay them out on disk.

``SegmentationFolder(root)`` pairs ``root/images/<name>.<ext>`` with ``root/masks/<name>.<ext>``
(the layout of Kaggle's salt, ship and nuclei competitions, of Carvana and of most U-Net
tutorials): same file name, any image suffix each side (GIF too for masks), in the two
folders themselves (not their sub-folders). A sample is the dict the targets
machinery moves (docs/targets.md): ``{"image": H x W x 3 uint8, "mask": H x W, "name": str}``.

It is a staged dataset (``augment.StagedDataset``): the Loader times reading the image
apart from decoding it and its mask (``label`` gives the mask and the name), and decodes
only the part of a JPEG, at the scale, that the sample's warp reads, as ``ImageFolder``
does; the mask is read whole, as the image's full-size warp moves it.

A mask file is a class map: each pixel's value is its class. An 8-bit grey or palette PNG
(Pascal VOC's) gives uint8 values as stored (a palette image its indices, not its colours),
a 1-bit image 0 and 1, a 16- or 32-bit grey image int32. A colour mask (RGB) is refused: its
colours would need a table of classes. Save masks losslessly (PNG): a JPEG's artefacts make
values that are no class.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from augment.ops.sample_targets import BadTargetError
from augment.sources.data import IMAGE_SUFFIXES, Reduce, decode_planned, read_file

logger = logging.getLogger("augment")

# Pillow modes of a class map, and the dtype each is read as
MASK_MODES = {"L": np.uint8, "P": np.uint8, "1": np.uint8, "I;16": np.int32, "I": np.int32}
MASK_SUFFIXES = (*IMAGE_SUFFIXES, ".gif")  # Carvana's masks are GIFs
CLASSES_FILE = "classes.txt"  # one class name per line, the first for value 0
SCAN_MASKS = 16  # without classes.txt: the class count read from this many masks


class SegmentationFolder:
    """Every image of ``root/images`` with the mask of the same name in ``root/masks``
    (folder names ``images=`` and ``masks=``); sorted by name.

    ``classes``: the class names (value 0 first), or a count; by default the lines of
    ``root/classes.txt`` if there is one, else ``class_<v>`` for ``v`` up to the largest
    value in the first masks (a few are read to find it). An image without a mask is a
    ``ValueError`` naming it; masks without an image are left out, with a warning.
    ``reduced_decode`` and ``partial_decode`` as for ``ImageFolder``. A mask that cannot be
    read is a ``BadTargetError`` naming it (the Loader's ``on_error`` applies)."""

    def __init__(
        self,
        root: str | Path,
        images: str = "images",
        masks: str = "masks",
        classes: int | list[str] | None = None,
        reduced_decode: bool = True,
        partial_decode: bool = True,
    ):
        self.root = Path(root)
        self.reduced_decode, self.partial_decode = bool(reduced_decode), bool(partial_decode)
        image_dir, mask_dir = self.root / images, self.root / masks
        for folder, what in ((image_dir, "images"), (mask_dir, "masks")):
            if not folder.is_dir():
                raise ValueError(
                    f"SegmentationFolder: {str(folder)!r} is not a folder; accepted: a root "
                    "holding images/ and masks/ (image and mask of a sample share a file name; "
                    f"other folder names with {what}=)"
                )
        image_files = _by_stem(image_dir, IMAGE_SUFFIXES)
        mask_files = _by_stem(mask_dir, MASK_SUFFIXES)
        if not image_files:
            raise ValueError(
                f"SegmentationFolder: no images in {str(image_dir)!r} "
                f"(accepted: {', '.join(IMAGE_SUFFIXES)})"
            )
        missing = [path for stem, path in image_files.items() if stem not in mask_files]
        if missing:
            raise ValueError(
                f"SegmentationFolder: {len(missing)} image(s) have no mask of the same name in "
                f"{str(mask_dir)!r}, the first {str(missing[0])!r}"
            )
        orphans = len(mask_files) - len(image_files)
        if orphans:
            logger.warning("%s: %d masks have no image and are left out", mask_dir, orphans)
        self.names = sorted(image_files)
        self.images = [image_files[n] for n in self.names]
        self.masks = [mask_files[n] for n in self.names]
        self._classes = _check_classes(classes)

    def __len__(self) -> int:
        return len(self.names)

    def source(self, index: int) -> str:
        return str(self.images[index])

    def read(self, index: int) -> bytes:
        return read_file(self.images[index])

    def decode(self, data: bytes, index: int, reduce: Reduce | None = None) -> np.ndarray:
        """The image of sample ``index`` (``reduce`` as for ``ImageFolder.decode``)."""
        return decode_planned(
            data, self.source(index), reduce, self.reduced_decode, self.partial_decode
        )

    def label(self, index: int) -> dict:
        """The mask and the name of sample ``index``."""
        try:
            mask = read_mask(self.masks[index])
        except ValueError as exc:
            raise BadTargetError(self.source(index), str(exc)) from None
        return {"mask": mask, "name": self.names[index]}

    def __getitem__(self, index: int) -> dict:
        return {"image": self.decode(self.read(index), index), **self.label(index)}

    @property
    def classes(self) -> list[str]:
        """The class names, value 0 first (see the class docstring)."""
        if self._classes is None:
            listed = self.root / CLASSES_FILE
            if listed.is_file():
                self._classes = [n.strip() for n in listed.read_text().splitlines() if n.strip()]
            else:
                top = max(int(read_mask(p).max()) for p in self.masks[:SCAN_MASKS])
                self._classes = [f"class_{v}" for v in range(top + 1)]
        return self._classes

    def __repr__(self) -> str:
        return f"SegmentationFolder({str(self.root)!r}, {len(self)} samples)"


def read_mask(path: Path) -> np.ndarray:
    """The class map in ``path`` (H x W; see the module's docstring for the modes); a
    ``ValueError`` names a file that is not one."""
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode not in MASK_MODES:
                raise ValueError(
                    f"mask {str(path)!r} is a {mode} image; accepted: a class map, one value "
                    f"per pixel ({', '.join(MASK_MODES)} modes: grey or palette PNG)"
                )
            return np.asarray(im, dtype=MASK_MODES[mode])
    except OSError as exc:
        raise ValueError(f"mask {str(path)!r} cannot be read: {exc}") from None


def _by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """The files of ``folder`` (not its sub-folders) with one of ``suffixes``, by name."""
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in suffixes and path.is_file():
            if path.stem in files:
                raise ValueError(
                    f"SegmentationFolder: {str(files[path.stem])!r} and {str(path)!r} share a "
                    "name: which one is the sample is ambiguous"
                )
            files[path.stem] = path
    return files


def _check_classes(classes) -> list[str] | None:
    if classes is None:
        return None
    if isinstance(classes, int) and not isinstance(classes, bool) and classes >= 1:
        return [f"class_{v}" for v in range(classes)]
    if isinstance(classes, (list, tuple)) and classes and all(isinstance(c, str) for c in classes):
        return list(classes)
    raise ValueError(
        f"classes must be a count >= 1 or a list of names (value 0 first), got {classes!r}"
    )
