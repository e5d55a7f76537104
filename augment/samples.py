"""What a dataset gives, made into what the loader batches.

Two shapes of dataset are accepted; the Loader tells them apart once, at construction:

- staged (``StagedDataset``: ``read``, ``decode``, ``label``, ``source``), as the built-in
  ``ImageFolder`` and ``HTTPImages``: each stage is timed on its own;
- map-style (the torch convention: ``__len__`` and ``__getitem__``), returning an image, an
  ``(image, target, ...)`` tuple or a dict with an ``"image"`` key: ``__getitem__`` is timed
  as one ``load`` stage.

An image may be a numpy array (H, W) or (H, W, C), a ``PIL.Image`` or a torch tensor
C x H x W, uint8 or float32; the transform gets it as a numpy array (H, W[, C]).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from augment.data import BadImageError
from augment.trace.schema import MAP_STAGES, STAGED_STAGES

DTYPES = (np.dtype(np.uint8), np.dtype(np.float32))
STAGED_METHODS = ("read", "decode", "label", "source")


@runtime_checkable
class StagedDataset(Protocol):
    """A dataset whose stages the loader times apart (``ImageFolder``, ``HTTPImages``).

    ``read`` may wait on I/O and ``decode`` computes; either raises ``BadImageError`` for a
    file that cannot be used, which ``on_error`` then raises or skips. A dataset that reads
    a batch's samples together (``Shards``: coalesced byte ranges) may also have
    ``will_read(indices)``, called with the batch's samples before the first ``read``."""

    def __len__(self) -> int: ...

    def read(self, index: int) -> bytes:
        """The raw bytes of sample ``index`` (a file, a URL)."""

    def decode(self, data: bytes, index: int) -> np.ndarray:
        """Pixels (H, W, C) from what ``read`` returned. A dataset that can decode smaller
        takes a third argument, ``reduce`` (see ``augment.data.decode_image``)."""

    def label(self, index: int) -> Any:
        """The target of sample ``index`` (anything ``default_collate`` batches)."""

    def source(self, index: int) -> str:
        """Where sample ``index`` comes from, for error messages."""


def source_for(dataset) -> Staged | MapStyle:
    """How the loader takes samples out of ``dataset``; a ``ValueError`` names what a dataset
    that is neither staged nor map-style lacks."""
    missing_staged = [m for m in STAGED_METHODS if not callable(getattr(dataset, m, None))]
    if not missing_staged and hasattr(dataset, "__len__"):
        return Staged(dataset)
    missing_map = [m for m in ("__len__", "__getitem__") if not hasattr(dataset, m)]
    if not missing_map:
        return MapStyle(dataset)
    raise ValueError(
        f"the dataset {type(dataset).__name__} is neither map-style (it lacks "
        f"{' and '.join(missing_map)}) nor staged (it lacks {', '.join(missing_staged)}): "
        "give it __len__ and __getitem__(index) -> image or (image, label), as a torch Dataset"
    )


class Staged:
    """Samples of a ``StagedDataset``: ``read`` then ``decode``, each on its own clock."""

    stages = STAGED_STAGES

    def __init__(self, dataset):
        self.dataset = dataset
        # decode(data, index, reduce): it may decode at the scale the transform's plan allows
        self.reduces = _takes(dataset.decode, "reduce")
        # will_read(indices): a dataset that reads a batch's samples together (Shards)
        self._will_read = getattr(dataset, "will_read", None)

    def begin(self, indices) -> None:
        """The samples of the batch about to be loaded, for a dataset that plans its reads
        (``will_read``); planning only: the reads themselves are timed as ``read``."""
        if self._will_read is not None:
            self._will_read(indices)

    def load(self, index: int, clock, reduce=None) -> tuple[np.ndarray, tuple]:
        stage = "read"
        try:
            data = self.dataset.read(index)
            clock.lap(stage)
            stage = "decode"
            if reduce is None:
                img = self.dataset.decode(data, index)
            else:
                img = self.dataset.decode(data, index, reduce)
            clock.lap(stage)
        except BadImageError:
            clock.lap(stage)
            raise
        return img, (self.dataset.label(index),)

    def name(self, index: int) -> str:
        return self.dataset.source(index)


class MapStyle:
    """Samples of a map-style dataset: ``dataset[index]`` is one ``load`` stage (converting
    the image to a numpy array included); what comes with the image is kept as it is for
    ``default_collate``: the rest of a tuple, the other keys of a dict, or nothing."""

    stages = MAP_STAGES
    reduces = False

    def begin(self, indices) -> None:
        pass

    def __init__(self, dataset):
        self.dataset = dataset

    def load(self, index: int, clock, reduce=None) -> tuple[np.ndarray, tuple | dict]:
        try:
            item = self.dataset[index]
            if isinstance(item, dict):
                if "image" not in item:
                    raise ValueError(
                        f"{self.name(index)} is a dict without an 'image' key (keys: "
                        f"{', '.join(map(str, item))})"
                    )
                img, rest = item["image"], {k: v for k, v in item.items() if k != "image"}
            elif isinstance(item, (tuple, list)):
                if not item:
                    raise ValueError(f"{self.name(index)} is an empty {type(item).__name__}")
                img, rest = item[0], tuple(item[1:])
            else:
                img, rest = item, ()
            img = as_image(img, lambda: self.name(index))
        finally:
            clock.lap("load")
        return img, rest

    def name(self, index: int) -> str:
        source = getattr(self.dataset, "source", None)
        if callable(source):
            return str(source(index))
        return f"{type(self.dataset).__name__}[{index}]"


def _takes(fn: Callable, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def as_image(img, describe: Callable[[], str]) -> np.ndarray:
    """``img`` (numpy, PIL or a torch tensor C x H x W) as a numpy array (H, W) or (H, W, C),
    uint8 or float32, without copying where it can. ``describe()`` names the image in an
    error (called only then: this runs for every sample)."""
    if not isinstance(img, np.ndarray):
        img = _from_pil(img, describe) if _is_pil(img) else _from_tensor(img, describe)
    if img.dtype in DTYPES and img.ndim in (2, 3) and img.size:
        return img
    where = describe()
    if img.ndim not in (2, 3) or img.size == 0:
        raise ValueError(
            f"{where}: an image must be (H, W) or (H, W, C), got shape {tuple(img.shape)}"
        )
    if img.dtype not in DTYPES:
        raise ValueError(
            f"{where}: image dtype {img.dtype} is not batched; accepted: uint8 or float32 "
            "(convert with .astype(np.float32))"
        )
    return img


def _is_pil(img) -> bool:
    image_module = sys.modules.get("PIL.Image")
    return image_module is not None and isinstance(img, image_module.Image)


def _from_pil(img, describe: Callable[[], str]) -> np.ndarray:
    if img.mode == "1":
        img = img.convert("L")
    elif img.mode in ("P", "PA"):
        img = img.convert("RGBA" if img.mode == "PA" or "transparency" in img.info else "RGB")
    if img.mode not in ("L", "LA", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "F"):
        raise ValueError(
            f"{describe()}: PIL image mode {img.mode!r} is not batched; convert it to 'RGB', 'L' "
            "or 'F' first"
        )
    return np.asarray(img)


def _from_tensor(img, describe: Callable[[], str]) -> np.ndarray:
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(img, torch.Tensor):
        raise ValueError(
            f"{describe()}: expected an image as a numpy array, a PIL image or a torch tensor "
            f"C x H x W; got {type(img).__name__}"
        )
    if img.device.type != "cpu":
        raise ValueError(f"{describe()}: the image tensor is on {img.device}; give a CPU tensor")
    array = img.detach().numpy()
    return array.transpose(1, 2, 0) if array.ndim == 3 else array


class ImageOnly:
    """A transform that takes the image alone, called as ``(img, rng)`` like the others."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def __call__(self, img, rng):
        return self.fn(img)

    def __repr__(self) -> str:
        return repr(self.fn)


def as_sample_transform(transform) -> Callable | None:
    """``transform`` as a callable ``(img, rng) -> img``; None for none.

    A callable that takes two positional arguments is called with the sample's rng; one that
    takes one with the image alone. An albumentations transform is wrapped by
    ``augment.adapters.albumentations`` so that it draws from the sample's rng."""
    if transform is None:
        return None
    if not callable(transform):
        raise ValueError(
            f"transform must be None or a callable (img, rng) -> img or (img) -> img, "
            f"got {transform!r}"
        )
    if type(transform).__module__.split(".")[0] == "albumentations":
        from augment import adapters

        return adapters.albumentations(transform)
    try:
        signature = inspect.signature(transform)
    except (TypeError, ValueError):  # a builtin without a signature: the image alone
        return ImageOnly(transform)
    try:
        signature.bind(None, None)
        return transform
    except TypeError:
        pass
    try:
        signature.bind(None)
    except TypeError:
        raise ValueError(
            f"transform {transform!r} must accept (img, rng) or (img); its signature is {signature}"
        ) from None
    return ImageOnly(transform)
