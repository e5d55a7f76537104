"""``Compose``: a pipeline of transforms, its leading geometric steps folded into one warp
that resamples once (``plan`` from the image's shape alone, ``finish`` with its pixels), and
the targets of a whole sample (masks, boxes, keypoints) moved by the same warps. The
transforms themselves are in ``augment.ops.transforms``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from augment.ops import functional as F
from augment.ops import kernels
from augment.ops import sample_targets as ST
from augment.ops import transforms as T
from augment.ops.callables import as_sample_transform
from augment.ops.targets import KINDS
from augment.ops.transforms import GeometricTransform, Shape, Transform
from augment.ops.warp_plan import PendingWarp, WarpPlan, copy_into, fits, fold, warp


def _plan(transforms: Sequence[Callable], shape: Shape, rng: np.random.Generator) -> WarpPlan:
    leading = 0
    while leading < len(transforms) and isinstance(transforms[leading], GeometricTransform):
        leading += 1
    return fold(transforms[:leading], shape, rng)


class Compose(Transform):
    """Apply ``transforms`` in order. Each is a ``Transform``, any ``(img, rng) -> img`` or
    ``(img) -> img`` (read when the Compose is built: ``augment.ops.callables``), or an
    albumentations transform (made to draw from the sample's rng). A step may return a PIL
    image or a tensor C x H x W; the next step gets it as a numpy array.

    Consecutive geometric transforms are folded into one affine warp, so the image is
    resampled once and only the output pixels are computed; when the folded map only moves
    whole pixels (flips, quarter turns, crops) it is an exact copy. ``kernel`` names the
    resampling kernel (default: the fastest installed, fixed when the Compose is built so
    every worker process uses the same one). ``antialias`` (default on): a bilinear warp that
    shrinks an axis by more than 2x first averages blocks of pixels (``F.affine``).

    ``plan(shape, rng)`` draws the leading geometric steps from the image's shape alone and
    ``finish(img, plan, rng)`` does the rest, so a loader can decode a JPEG no larger than
    the warp needs (``plan.reduction``); calling the Compose is ``finish(img, plan(...))``.

    ``out=``: an array for the output (a slot of the loader's batch buffer). When the
    pipeline ends with geometric steps, the warp they fold into writes its pixels straight
    into it (and ``out`` is returned) if it is C-contiguous and its shape, dtype and
    channels are the output's; when it ends with any other step, or ``out`` does not match,
    the output is a new array and ``out`` is untouched. The pixels are the same either way.
    """

    def __init__(
        self,
        transforms: Sequence[Callable],
        kernel: str | None = None,
        antialias: bool = True,
        targets: Sequence[str] | None = None,
        box_format: str = "xyxy",
        min_visibility: float = 0.0,
        min_size: float = 0.0,
        keypoints: str = "mark",
        mask_fill: float = 0,
        box_fields: Sequence[str] = ("labels",),
        keypoint_fields: Sequence[str] = (),
    ):
        if isinstance(transforms, (str, bytes)) or not isinstance(transforms, Iterable):
            raise ValueError(
                f"Compose takes a list of transforms, got {type(transforms).__name__}: "
                "Compose([t1, t2, ...])"
            )
        # every step called as (img, rng): a step taking the image alone is wrapped, and one
        # that takes neither is refused now, not on a worker at batch N
        self.transforms = [
            as_sample_transform(t, f"transforms[{i}]") for i, t in enumerate(transforms)
        ]
        self.kernel = kernels.default_name() if kernel is None else kernel
        kernels.get(self.kernel)  # fails early on an unknown or missing kernel
        self.antialias = bool(antialias)
        self.targets = None if targets is None else ST.check_names(targets)
        self.box_format, self.min_visibility, self.min_size = box_format, min_visibility, min_size
        self.keypoints, self.mask_fill = keypoints, mask_fill
        self.box_fields, self.keypoint_fields = tuple(box_fields), tuple(keypoint_fields)
        self.target_options = ST.TargetOptions(
            box_format, min_visibility, min_size, keypoints, mask_fill, box_fields, keypoint_fields
        )
        self._checked: set[tuple[str, ...]] = set()
        if self.targets is not None:
            self.check_targets(tuple(k for k in KINDS if k in self.targets))

    @property
    def supported_targets(self) -> frozenset:
        """As a step of another pipeline: none if it moves pixels (its warps are its own),
        else the kinds all its steps leave alone."""
        if any(isinstance(t, (GeometricTransform, Compose)) for t in self.transforms):
            return frozenset()
        return frozenset(KINDS).intersection(*(_supported(t) for t in self.transforms))

    def check_targets(self, kinds: Sequence[str]) -> None:
        """A ``ValueError`` naming the first step that does not support one of ``kinds``
        (see ``Transform.supported_targets``)."""
        kinds = tuple(kinds)
        if kinds in self._checked:
            return
        for i, t in enumerate(self.transforms):
            if isinstance(t, GeometricTransform):
                continue
            missing = [k for k in kinds if k not in _supported(t)]
            if missing:
                raise ValueError(
                    f"transforms[{i}] {t!r} does not support {', '.join(missing)} targets: "
                    "augment cannot tell whether it moves pixels, so the targets would no "
                    "longer match the image. A step that only changes pixel values (colour, "
                    "noise) says so with a class or function attribute "
                    f"supported_targets = frozenset({KINDS!r})"
                )
        self._checked.add(kinds)

    def __call__(
        self, img: np.ndarray, rng: np.random.Generator, out: np.ndarray | None = None
    ) -> np.ndarray:
        """The transformed image; or, for a whole sample (a dict with ``"image"``, or a tuple
        named by ``targets``), the same structure with its targets moved too."""
        if type(img) is not np.ndarray:
            if isinstance(img, dict) or (self.targets and isinstance(img, (tuple, list))):
                return ST.call_sample(self, img, rng, self.targets)
            if isinstance(img, tuple):
                raise ValueError(
                    "img must be a numpy array, got a tuple: for a sample (image, mask, ...) "
                    "name its items after the image with Compose(targets=('mask',)), or give a "
                    "dict {'image': ..., 'mask': ...}"
                )
        F.check_image(img)
        return self.finish(img, self.plan(img.shape[:2], rng), rng, out)

    def plan(self, shape: Shape, rng: np.random.Generator) -> WarpPlan:
        """Draw the parameters of the leading geometric steps for an image of ``shape``, before
        its pixels exist: the warp, and how much smaller a decode it allows (``reduction``)."""
        return _plan(self.transforms, shape, rng)

    def finish(
        self,
        img: np.ndarray,
        plan: WarpPlan,
        rng: np.random.Generator,
        out: np.ndarray | None = None,
        targets: ST.SampleTargets | None = None,
    ) -> np.ndarray:
        """The output for ``img``, the image ``plan`` was drawn for, or that image decoded at
        ``1 / plan.reduction`` (its shape tells which): the planned warp, then the steps after
        it, drawing from ``rng`` where ``plan`` left it; into ``out`` where it can (see the
        class docstring). ``targets`` (``SampleTargets`` of the full-size image), where
        given, follow every warp the image takes."""
        F.check_image(img)
        original = img
        scale, origin = plan.decoded(img.shape[:2])
        rest = self.transforms[plan.rest :] if plan.rest < len(self.transforms) else ()
        if targets is not None and plan.warp is not None:
            targets.move(plan.warp, self.kernel, self.antialias)
        if not rest:  # the planned warp is the whole pipeline
            if plan.warp is None:
                return copy_into(img, out)
            return self._flush(img, plan.warp, scale, fits(out, img, plan.warp.shape), origin)
        img = self._flush(img, plan.warp, scale, origin=origin)
        pending: PendingWarp | None = None
        for t in rest:
            if isinstance(t, GeometricTransform):
                shape = pending.shape if pending else img.shape[:2]
                matrix, out_shape = t.geometry(shape, t.make_params(shape, rng))
                if pending is None:
                    pending = PendingWarp(shape)
                pending.add(t, matrix, out_shape)
            else:
                if targets is not None and pending is not None:
                    targets.move(pending, self.kernel, self.antialias)
                img = self._flush(img, pending)
                pending = None
                img = t(img, rng)
                if not isinstance(img, np.ndarray):  # a PIL image or a tensor C x H x W
                    img = _as_array(img, t)
        if pending is not None:
            if targets is not None:
                targets.move(pending, self.kernel, self.antialias)
            return self._flush(img, pending, 1, fits(out, img, pending.shape))
        return copy_into(img, out) if img is original else img

    def _flush(
        self,
        img: np.ndarray,
        pending: PendingWarp | None,
        scale: int = 1,
        out: np.ndarray | None = None,
        origin: tuple[int, int] = (0, 0),
    ) -> np.ndarray:
        if pending is None:
            return img
        return warp(img, pending, scale, self.kernel, self.antialias, out, origin)

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        aa = "" if self.antialias else ", antialias=False"
        defaults = Compose.__init__.__defaults__[2:]
        names = ("targets", "box_format", "min_visibility", "min_size", "keypoints", "mask_fill")
        names += ("box_fields", "keypoint_fields")
        extra = "".join(
            f", {n}={getattr(self, n)!r}"
            for n, d in zip(names, defaults)
            if getattr(self, n) != (tuple(d) if isinstance(d, tuple) else d)
        )
        return f"Compose([{inner}\n], kernel={self.kernel!r}{aa}{extra})"

    def __len__(self) -> int:
        return len(self.transforms)


def _supported(step) -> frozenset:
    """The target kinds ``step`` supports: its own ``supported_targets``, or the function's
    that ``callables.ImageOnly`` wraps."""
    found = getattr(step, "supported_targets", None)
    if found is None and hasattr(step, "fn"):
        found = getattr(step.fn, "supported_targets", None)
    return frozenset(found or ())


def _as_array(img, step) -> np.ndarray:
    """A step's output as the numpy array the next step takes."""
    from augment.ops.images import as_image  # the same conversion as a dataset's images

    return as_image(img, lambda: f"the output of {step!r}")


def kaggle_steps(crop: int = 224) -> list[dict]:
    """The seed's pipeline as config tables (``{"op": name, **arguments}``, as a profiler
    config writes it): flips, quarter turns, a small rotation, a scale jitter, a crop."""
    return [
        {"op": "RandomFlip", "horizontal": 0.5, "vertical": 0.5},
        {"op": "RandomRotate90", "p": 0.5},
        {"op": "RandomRotate", "degrees": 30},
        {"op": "RandomScale", "low": 0.9, "high": 1.1},
        {"op": "RandomCrop", "size": crop},
    ]


def kaggle_pipeline(crop: int = 224, kernel: str | None = None) -> Compose:
    """The seed's pipeline (``kaggle_steps``) as a ``Compose``."""
    steps = [dict(step) for step in kaggle_steps(crop)]
    return Compose([getattr(T, step.pop("op"))(**step) for step in steps], kernel=kernel)


__all__ = ["Compose", "kaggle_pipeline", "kaggle_steps"]
