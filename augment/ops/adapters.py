"""Adapters: third-party transforms made reproducible the way augment's own transforms are.

An augment transform is called as ``t(img, rng)`` and takes all of its randomness from
``rng``, the sample's ``numpy.random.Generator`` (the Loader derives it from seed, epoch and
index), so a seed gives the same batches on every backend and with any number of workers.
A third-party transform draws from state of its own instead, which differs from worker to
worker and from run to run. The adapters here point that state at the sample's ``rng``.

Importing this module imports none of those libraries; each adapter imports its own when
it is built.
"""

from __future__ import annotations

import copy
import random
import threading

import numpy as np

__all__ = ["albumentations"]

_INSTALL = "pip install 'augment[albumentations]'"


def albumentations(transform) -> Albumentations:
    """Wrap an albumentations (2.x) transform as an augment transform ``(img, rng) -> img``.

    ``transform`` is one transform (``A.HorizontalFlip(p=0.5)``) or a composition
    (``A.Compose([...])``, ``A.OneOf([...])``, ...). albumentations draws from a numpy
    Generator and a ``random.Random`` held by each transform, not from augment's per-sample
    generator, so used as is it gives different batches on each backend, worker count and
    run. The adapter makes both draw from the sample's ``rng`` on every call: the same rng
    state gives the same image, whatever thread or process runs it, and global ``random`` /
    ``np.random`` seeds play no part.

    The image is passed as ``image=`` and ``out["image"]`` returned. Each thread calling the
    adapter uses its own copy of the transform (made on its first call), so the thread
    backend is safe; the adapter pickles without those copies. The transform given is copied
    at once and never changed. A transform that keeps state from one call to the next
    cannot be made reproducible this way (none of the common ones does).
    """
    return Albumentations(transform)


class Albumentations:
    """The callable returned by ``albumentations(transform)``; see there."""

    __slots__ = ("transform", "_local", "target_options")

    def __init__(self, transform):
        try:
            from albumentations.core.composition import BaseCompose
            from albumentations.core.transforms_interface import BasicTransform
        except ImportError as exc:
            raise ImportError(
                f"augment.adapters.albumentations needs albumentations 2.x: {_INSTALL}"
            ) from exc
        accepted = (
            "an albumentations transform instance, such as A.HorizontalFlip(p=0.5), or a "
            "composition such as A.Compose([...]) or A.OneOf([...])"
        )
        if isinstance(transform, type) and issubclass(transform, (BasicTransform, BaseCompose)):
            raise ValueError(
                f"albumentations() takes {accepted}; got the class {transform.__name__}: "
                f"build one, e.g. {transform.__name__}(...)"
            )
        if not isinstance(transform, (BasicTransform, BaseCompose)):
            raise ValueError(
                f"albumentations() takes {accepted}; got {type(transform).__name__} "
                f"{_short_repr(transform)}"
                + (
                    " (augment's own transforms take (img, rng) already: use them as they are)"
                    if _takes_rng(transform)
                    else ""
                )
            )
        if not hasattr(transform, "set_random_state"):
            raise ValueError(f"albumentations() needs albumentations 2.x ({_INSTALL})")
        self.transform = copy.deepcopy(transform)
        self._local = threading.local()
        self.target_options = _target_options(transform)

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The image's output; for a sample dict (``"image"`` with ``mask``, ``masks``,
        ``boxes``, ``keypoints``, box label fields and any other key), the sample's, its
        targets moved by albumentations (see ``check_targets``)."""
        local = self._local
        try:
            t, py_random = local.state
        except AttributeError:
            t, py_random = local.state = (copy.deepcopy(self.transform), _GeneratorRandom())
        py_random.use(rng)
        t.set_random_state(rng, py_random)
        if type(img) is dict:
            return _call_sample(t, img, self.target_options)
        return t(image=img)["image"]

    def check_targets(self, kinds) -> None:
        """Boxes need the ``A.Compose`` to have ``bbox_params``, keypoints
        ``keypoint_params``, or albumentations would not know their format."""
        processors = getattr(self.transform, "processors", None) or {}
        for kind, needs, param in (
            ("boxes", "bboxes", "bbox_params=A.BboxParams(format='pascal_voc')"),
            ("keypoints", "keypoints", "keypoint_params=A.KeypointParams(format='xy')"),
        ):
            if kind in kinds and needs not in processors:
                raise ValueError(
                    f"albumentations() got samples with {kind}, but {_short_repr(self.transform)}"
                    f" has no {param.split('=')[0]}: wrap it as A.Compose([...], {param})"
                )

    def __getstate__(self) -> dict:
        return {"transform": self.transform}  # not the per-thread copies: a local won't pickle

    def __setstate__(self, state: dict) -> None:
        self.transform = state["transform"]
        self._local = threading.local()
        self.target_options = _target_options(self.transform)

    def __repr__(self) -> str:
        return f"albumentations({self.transform!r})"


class _GeneratorRandom(random.Random):
    """A ``random.Random`` whose every draw comes from a numpy Generator (``use(rng)``).

    Cheaper than seeding a Mersenne Twister from ``rng`` on every call (about 6 us): a
    sample needs a handful of draws. ``random()`` and ``getrandbits()`` are the two
    primitives the other methods (``uniform``, ``randint``, ``choice``, ``gauss``...) are
    built on, as the ``random`` module documents for subclasses.
    """

    def __init__(self):  # no Mersenne Twister seeding: it is never used
        self.gauss_next = None

    def use(self, rng: np.random.Generator) -> None:
        self.random = rng.random  # an instance attribute: no Python frame per draw
        self._raw = rng.bit_generator.random_raw
        self.gauss_next = None  # gauss() keeps a second value; it must not reach the next sample

    def getrandbits(self, k: int) -> int:
        if k <= 64:
            if k < 0:
                raise ValueError("number of bits must be non-negative")
            return self._raw() >> (64 - k) if k else 0
        words = (k + 63) // 64
        value = 0
        for _ in range(words):
            value = (value << 64) | self._raw()
        return value >> (words * 64 - k)

    def seed(self, *args, **kwargs):
        raise TypeError("this Random draws from the sample's numpy Generator; it has no seed")

    def getstate(self):
        raise TypeError("this Random draws from the sample's numpy Generator; it has no state")

    setstate = getstate


# albumentations' names for augment's, and its box formats for augment's
_NAMES = {"mask": "mask", "masks": "masks", "boxes": "bboxes", "keypoints": "keypoints"}
_FORMATS = {"pascal_voc": "xyxy", "coco": "xywh", "yolo": "yolo", "albumentations": "xyxyn"}


def _target_options(transform):
    """How augment checks and batches the targets of samples the transform gets: the box
    format and the label fields of its ``bbox_params`` and ``keypoint_params``."""
    from augment.ops.sample_targets import TargetOptions

    processors = getattr(transform, "processors", None) or {}
    boxes, points = processors.get("bboxes"), processors.get("keypoints")
    return TargetOptions(
        box_format=_FORMATS.get(boxes.params.format, "xyxy") if boxes else "xyxy",
        box_fields=tuple(boxes.params.label_fields or ()) if boxes else (),
        keypoint_fields=tuple(points.params.label_fields or ()) if points else (),
    )


def _call_sample(t, sample: dict, options) -> dict:
    fields = (*options.box_fields, *options.keypoint_fields)
    given = {_NAMES.get(k, k): v for k, v in sample.items() if k in _NAMES or k in fields}
    got = t(image=sample["image"], **given)
    out = dict(sample)
    out["image"] = got["image"]
    for key in sample:
        if key in _NAMES:
            out[key] = got[_NAMES[key]]
        elif key in fields:  # albumentations gives labels back as floats: their own dtype
            out[key] = np.asarray(got[key], dtype=np.asarray(sample[key]).dtype)
    if "boxes" in out:
        out["boxes"] = np.asarray(out["boxes"], dtype=np.float32).reshape(-1, 4)
    if "keypoints" in out:
        out["keypoints"] = np.asarray(out["keypoints"], dtype=np.float32)
    if "masks" in out and isinstance(out["masks"], (list, tuple)):
        h, w = out["image"].shape[:2]
        masks = out["masks"]
        out["masks"] = np.stack(masks) if len(masks) else np.zeros((0, h, w), np.uint8)
    return out


def _takes_rng(obj) -> bool:
    from augment.ops.compose import Compose
    from augment.ops.transforms import Transform

    return isinstance(obj, (Transform, Compose))


def _short_repr(obj, limit: int = 60) -> str:
    text = repr(obj)
    return text if len(text) <= limit else text[: limit - 3] + "..."
