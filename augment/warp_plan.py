"""A sample's warp, planned before its pixels exist: the geometric steps folded into one
map (``PendingWarp``), what a plan holds (``WarpPlan``: the map, and how much smaller a
JPEG may be decoded for it), the one resampling of the pixels (``warp``), and the per-sample
handle a decoder calls with the image's size (``SamplePlan``).

Which steps are geometric is the transforms' business (``augment.transforms``); here they
are only asked for their ``geometry`` and drawn parameters.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from augment import functional as F
from augment import geometry

if TYPE_CHECKING:
    from collections.abc import Sequence

    from augment.transforms import GeometricTransform

Shape = tuple[int, int]


class PendingWarp:
    """Geometric steps folded so far: their product map (``entries``, the six entries of its
    2x3 matrix, see ``geometry``), the output shape and how to resample it."""

    __slots__ = ("entries", "shape", "interpolation", "border", "fill", "reach")

    def __init__(self, shape: Shape):
        self.entries = geometry.IDENTITY
        self.shape = shape
        self.interpolation = "nearest"
        self.border, self.fill = "reflect", 0.0
        self.reach = -1.0  # how far outside its input the border-deciding step samples

    @property
    def matrix(self) -> np.ndarray:
        """The folded map as a 2x3 array."""
        return geometry.as_matrix(self.entries)

    def add(self, t: GeometricTransform, matrix: np.ndarray, out_shape: Shape) -> None:
        in_shape = self.shape
        matrix = geometry.entries(matrix)
        self.entries = geometry.compose(self.entries, matrix)
        self.shape = out_shape
        if t.resamples:
            # The step that samples furthest outside its input brings the border in (a
            # rotation, say), not one that only grazes it by half a pixel (a scale).
            reach = geometry.outside_reach(matrix, in_shape, out_shape)
            if reach > self.reach:
                self.border, self.fill, self.reach = t.border, t.fill, reach
            if t.interpolation == "bilinear":
                self.interpolation = "bilinear"


# DCT-domain decode scales libjpeg-turbo offers, largest first.
_DECODE_SCALES = (8, 4, 2)


@dataclass
class WarpPlan:
    """The leading geometric steps of a pipeline, drawn for an image of ``shape``.

    ``warp`` is their folded map (None when the pipeline does not start with one), ``rest``
    the index of the first step not in it, ``reduction`` the largest of 1, 2, 4, 8 by which
    the image may be decoded smaller (the warp shrinks both axes by at least that much),
    worked out only when asked (a plain call never needs it)."""

    shape: Shape
    warp: PendingWarp | None
    rest: int

    @functools.cached_property
    def reduction(self) -> int:
        return decode_reduction(self.warp, self.shape)

    def decoded_scale(self, shape: Shape) -> int:
        """1 for an image of the planned shape, ``reduction`` for one decoded that much
        smaller; anything else is a ``ValueError``."""
        if shape == self.shape:
            return 1
        if self.reduction > 1 and shape == geometry.reduced_shape(self.shape, self.reduction):
            return self.reduction
        raise ValueError(
            f"the image is {shape[0]}x{shape[1]}, but its transform was planned for "
            f"{self.shape[0]}x{self.shape[1]}"
            + (f" (or 1/{self.reduction} of it)" if self.reduction > 1 else "")
        )


def fold(steps: Sequence[GeometricTransform], shape: Shape, rng: np.random.Generator) -> WarpPlan:
    """Draw ``steps`` (geometric, in order) for an image of ``shape`` and fold them into one
    map; ``rest`` is how many there were."""
    pending: PendingWarp | None = None
    for t in steps:
        current = pending.shape if pending else shape
        matrix, out_shape = t.geometry(current, t.make_params(current, rng))
        if pending is None:
            pending = PendingWarp(shape)
        pending.add(t, matrix, out_shape)
    return WarpPlan(shape, pending, len(steps))


def warp(
    img: np.ndarray,
    pending: PendingWarp,
    scale: int = 1,
    kernel: str | None = None,
    antialias: bool = True,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Resample ``img`` once by the folded map; ``scale`` > 1 when ``img`` was decoded that
    many times smaller than the image the map was drawn for; into ``out`` where given."""
    m = pending.entries
    if scale > 1:  # map the reduced image's pixels onto the full image's first
        m = geometry.compose(geometry.entries(geometry.from_reduced(scale)), m)
    # F.affine without its checks: the transforms checked their arguments when built
    return F._affine(
        img,
        m,
        pending.shape,
        pending.interpolation,
        pending.border,
        pending.fill,
        kernel,
        antialias,
        out,
    )


def fits(out: np.ndarray | None, img: np.ndarray, shape: Shape) -> np.ndarray | None:
    """``out`` where a warp of ``img`` to ``shape`` can write into it (same dtype, same
    channels, C-contiguous), else None: the warp then makes a new array."""
    if out is None or out.dtype != img.dtype or not out.flags.c_contiguous:
        return None
    return out if out.shape == (*shape, *img.shape[2:]) else None


def decode_reduction(pending: PendingWarp | None, shape: Shape) -> int:
    """The largest of 8, 4, 2 that the bilinear warp ``pending`` shrinks both of the image's
    axes by (never more than the image's shorter side), else 1."""
    if pending is None or pending.interpolation != "bilinear":
        return 1
    shrink = min(geometry.shrink(pending.entries))
    for k in _DECODE_SCALES:
        if k <= shrink + F._SHRINK_TOL and k <= min(shape):
            return k
    return 1


def copy_into(img: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    """A copy of ``img``: into ``out`` where it fits, else a new array."""
    target = fits(out, img, img.shape[:2])
    if target is None:
        return img.copy()
    np.copyto(target, img)
    return target


class SamplePlan:
    """One sample's transform, planned when its decoder knows the image's size.

    A dataset's ``decode(data, index, reduce=plan)`` calls it with the header's
    ``(height, width)``; it draws the plan from the sample's rng and answers the scale the
    decode may reduce by. ``finish(img)`` then transforms what was decoded; a decoder that
    never called it (not a JPEG, a dataset without reduced decoding) leaves the plan to be
    drawn from the pixels, with the same draws."""

    __slots__ = ("transform", "rng", "plan")

    def __init__(self, transform, rng: np.random.Generator):
        self.transform, self.rng, self.plan = transform, rng, None

    def __call__(self, height: int, width: int) -> int:
        self.plan = self.transform.plan((height, width), self.rng)
        return self.plan.reduction

    def finish(self, img: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The transform's output for ``img``; written into ``out`` (and ``out`` returned)
        where the pipeline ends with a warp of that shape and dtype, see ``Compose.finish``."""
        plan = self.plan
        if plan is None:
            F.check_image(img)
            plan = self.transform.plan(img.shape[:2], self.rng)
        return self.transform.finish(img, plan, self.rng, out)
