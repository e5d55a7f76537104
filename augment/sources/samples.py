"""What a dataset gives, made into what the loader batches.

Two shapes of dataset are accepted; the Loader tells them apart once, at construction:

- staged (``StagedDataset``: ``read``, ``decode``, ``label``, ``source``), as the built-in
  ``ImageFolder`` and ``HTTPImages``: each stage is timed on its own;
- map-style (the torch convention: ``__len__`` and ``__getitem__``), returning an image, an
  ``(image, target, ...)`` tuple or a dict with the image under ``image_key`` ("image" by
  default; a Hugging Face dataset's column, such as "img" or "pixel_values"):
  ``__getitem__`` is timed as one ``load`` stage.

An image may be a numpy array (H, W) or (H, W, C), a ``PIL.Image`` or a torch tensor
C x H x W, uint8 or float32; the transform gets it as a numpy array (H, W[, C]).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from augment.ops.callables import ImageOnly, as_sample_transform  # noqa: F401 (imported from here)
from augment.ops.images import BadImageError, as_image
from augment.ops.targets import KINDS as TARGET_KINDS
from augment.trace.schema import MAP_STAGES, STAGED_STAGES

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
        takes a third argument, ``reduce`` (see ``augment.sources.data.decode_image``)."""

    def label(self, index: int) -> Any:
        """The target of sample ``index`` (anything ``default_collate`` batches)."""

    def source(self, index: int) -> str:
        """Where sample ``index`` comes from, for error messages."""


def source_for(
    dataset, image_key: str = "image", target_key: str | tuple[str, ...] | None = None
) -> Staged | MapStyle:
    """How the loader takes samples out of ``dataset``; a ``ValueError`` names what a dataset
    that is neither staged nor map-style lacks. ``image_key`` and ``target_key`` name the
    image and the targets of dict samples (``MapStyle``)."""
    missing_staged = [m for m in STAGED_METHODS if not callable(getattr(dataset, m, None))]
    if not missing_staged and hasattr(dataset, "__len__"):
        if image_key != "image" or target_key is not None:
            raise ValueError(
                f"image_key and target_key name the parts of dict samples; "
                f"{type(dataset).__name__} is a staged dataset (images and labels apart)"
            )
        return Staged(dataset)
    missing_map = [m for m in ("__len__", "__getitem__") if not hasattr(dataset, m)]
    if not missing_map:
        return MapStyle(dataset, image_key, target_key)
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

    def load(self, index: int, clock, reduce=None) -> tuple[np.ndarray, tuple | dict]:
        """The image and what comes with it: ``(label,)``, or the label itself where it is a
        dict holding targets that move with the image (``SegmentationFolder``'s mask),
        whose reading is timed with the decode."""
        stage = "read"
        try:
            data = self.dataset.read(index)
            clock.lap(stage)
            stage = "decode"
            if reduce is None:
                img = self.dataset.decode(data, index)
            else:
                img = self.dataset.decode(data, index, reduce)
            label = self.dataset.label(index)
            clock.lap(stage)
        except BadImageError:
            clock.lap(stage)
            raise
        if type(label) is dict and any(kind in label for kind in TARGET_KINDS):
            return img, label
        return img, (label,)

    def name(self, index: int) -> str:
        return self.dataset.source(index)


class MapStyle:
    """Samples of a map-style dataset: ``dataset[index]`` is one ``load`` stage (converting
    the image to a numpy array included); what comes with the image is kept as it is for
    ``default_collate``: the rest of a tuple, the other keys of a dict, or nothing.

    A dict sample holds its image under ``image_key``; the batch is the same dict, the
    images under that key, unless ``target_key`` names the targets (a key or a tuple of
    keys): then the batch is ``(images, *targets)`` and other keys are left out. A dataset
    that lists its columns (a Hugging Face ``Dataset``'s ``column_names``, unless a
    ``with_transform`` makes other keys) is checked for those keys when the Loader is
    built."""

    stages = MAP_STAGES
    reduces = False

    def begin(self, indices) -> None:
        pass

    def __init__(
        self, dataset, image_key: str = "image", target_key: str | tuple[str, ...] | None = None
    ):
        if not isinstance(image_key, str):
            raise ValueError(f"image_key must be a str (a dict sample's key), got {image_key!r}")
        targets = (target_key,) if isinstance(target_key, str) else target_key
        if targets is not None and (
            not isinstance(targets, (tuple, list))
            or not targets
            or not all(isinstance(k, str) for k in targets)
        ):
            raise ValueError(
                f"target_key must be None, a key or a tuple of keys, got {target_key!r}"
            )
        self.dataset, self.image_key = dataset, image_key
        self.target_keys = None if targets is None else tuple(targets)
        _check_columns(dataset, image_key, self.target_keys)

    def load(self, index: int, clock, reduce=None) -> tuple[np.ndarray, tuple | dict]:
        try:
            item = self.dataset[index]
            if isinstance(item, dict):
                img, rest = self._split(item, index)
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

    def _split(self, item: dict, index: int) -> tuple:
        key = self.image_key
        if self.target_keys is None and key in item:
            rest = dict(item)
            return rest.pop(key), rest
        missing = [k for k in (key, *(self.target_keys or ())) if k not in item]
        if missing:
            hint = ""
            if key not in item:
                guess = [repr(k) for k in item if k in IMAGE_KEYS] or ["..."]
                hint = f": name the image's key with Loader(image_key={guess[0]})"
            raise ValueError(
                f"{self.name(index)} is a dict without the key(s) "
                f"{', '.join(map(repr, missing))} (keys: {', '.join(map(str, item))}){hint}"
            )
        if self.target_keys is not None:
            return item[key], tuple(item[k] for k in self.target_keys)
        return item[key], {k: v for k, v in item.items() if k != key}

    def name(self, index: int) -> str:
        source = getattr(self.dataset, "source", None)
        if callable(source):
            return str(source(index))
        return f"{type(self.dataset).__name__}[{index}]"


# where datasets commonly keep the image (Hugging Face Hub columns among them)
IMAGE_KEYS = ("image", "img", "pixel_values", "images", "jpg", "png", "picture", "photo")


def _check_columns(dataset, image_key: str, target_keys: tuple[str, ...] | None) -> None:
    """A dataset that names its columns (Hugging Face's ``column_names``) must have the keys
    asked for; said at construction, not on the first batch."""
    columns = getattr(dataset, "column_names", None)
    if not isinstance(columns, (list, tuple)) or not all(isinstance(c, str) for c in columns):
        return
    form = getattr(dataset, "format", None)
    if isinstance(form, dict) and form.get("type") == "custom":
        return  # with_transform(): the samples' keys are the transform's, not the columns
    missing = [k for k in (image_key, *(target_keys or ())) if k not in columns]
    if not missing:
        return
    guess = [c for c in columns if c in IMAGE_KEYS]
    hint = f": name the image with image_key={guess[0]!r}" if image_key in missing and guess else ""
    raise ValueError(
        f"{type(dataset).__name__} has no column(s) {', '.join(map(repr, missing))} "
        f"(columns: {', '.join(columns)}){hint}"
    )


def _takes(fn: Callable, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
