"""A sample's warp, planned before its pixels exist: the geometric steps folded into one
map (``PendingWarp``), what a plan holds (``WarpPlan``: the map, and how much smaller a
JPEG may be decoded for it), the one resampling of the pixels (``warp``), and the per-sample
handle a decoder calls with the image's size (``SamplePlan``).

Which steps are geometric is the transforms' business (``augment.ops.transforms``); here they
are only asked for their ``geometry`` and drawn parameters.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from augment.ops import functional as F
from augment.ops import geometry
from augment.ops.geometry import Entries

if TYPE_CHECKING:
    from collections.abc import Sequence

    from augment.ops.transforms import GeometricTransform

Shape = tuple[int, int]
Box = tuple[int, int, int, int]  # (y0, y1, x0, x1), end-exclusive
# A baseline JPEG's rows above a region still pass through the Huffman decoder: about this
# share of a decode's time (quality-90 photographs: the top half of each file decodes in
# 0.54x the time of the whole, the bottom half in 0.8-0.85x, scripts/partial_decode.py).
_ENTROPY_SHARE = 0.6
# A region decode is worth it where that model says it saves at least this share of the
# decode, and the work of this many pixels: a region costs tens of microseconds more to set
# up and hand on (on 256 x 256 tiles a region of 85% of the tile took longer, measured).
_PARTIAL_MIN_SAVING = 0.1
_PARTIAL_MIN_PIXELS = 16384


class PendingWarp:
    """Geometric steps folded so far: their product map (``entries``, the six entries of its
    2x3 matrix, see ``geometry``), the output shape and how to resample it."""

    __slots__ = ("entries", "shape", "interpolation", "border", "fill", "reach", "_inverse")

    def __init__(self, shape: Shape):
        self.entries = geometry.IDENTITY
        self.shape = shape
        self.interpolation = "nearest"
        self.border, self.fill = "reflect", 0.0
        self.reach = -1.0  # how far outside its input the border-deciding step samples
        self._inverse: tuple = (None, None)  # (entries, their snapped inverse)

    def inverse(self) -> Entries:
        """The folded map's inverse, snapped (``geometry.snapped``), worked out once for the
        image and its masks."""
        of, inverse = self._inverse
        if of is not self.entries:
            inverse = geometry.snapped(geometry.inverse(self.entries))
            self._inverse = (self.entries, inverse)
        return inverse

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
    box: Box | None = None  # the region last asked for (``region``), in the image at 1/k
    box_scale: int = 1  # that k

    @functools.cached_property
    def reduction(self) -> int:
        return decode_reduction(self.warp, self.shape)

    def region(self, k: int) -> Box | None:
        """The rectangle of the image decoded at 1/k (``k`` is 1 or ``reduction``) that the
        warp reads, for a decoder that can decode just that (``read_box``); None where it
        reads (nearly) all of it."""
        self.box, self.box_scale = read_box(self.warp, self.shape, k), k
        return self.box

    def decoded_scale(self, shape: Shape) -> int:
        """1 for an image of the planned shape, ``reduction`` for one decoded that much
        smaller; anything else is a ``ValueError``."""
        return self.decoded(shape)[0]

    def decoded(self, shape: Shape) -> tuple[int, tuple[int, int]]:
        """``(scale, origin)`` of an image of ``shape``: the planned image (1, (0, 0)), that
        image decoded ``reduction`` times smaller, or just the ``region`` asked for (its
        top-left corner as origin); anything else is a ``ValueError``."""
        if shape == self.shape:
            return 1, (0, 0)
        k = self.reduction
        if k > 1 and shape == geometry.reduced_shape(self.shape, k):
            return k, (0, 0)
        if self.box is not None:
            y0, y1, x0, x1 = self.box
            if shape == (y1 - y0, x1 - x0):
                return self.box_scale, (y0, x0)
        raise ValueError(
            f"the image is {shape[0]}x{shape[1]}, but its transform was planned for "
            f"{self.shape[0]}x{self.shape[1]}"
            + (f" (or 1/{self.reduction} of it)" if self.reduction > 1 else "")
            + (f" (or its region {self.box})" if self.box is not None else "")
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
    origin: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """Resample ``img`` once by the folded map; ``scale`` > 1 when ``img`` was decoded that
    many times smaller than the image the map was drawn for, ``origin`` (y, x) where its
    top-left pixel lies in that (reduced) image when it is only a region of it; into
    ``out`` where given."""
    m = pending.entries
    of, inverse = pending._inverse  # worked out already where a mask moved first
    if scale > 1 or origin != (0, 0):  # map img's pixels onto the full image's first
        m = geometry.compose(_placed(scale, origin), m)
    if of is not m:
        inverse = None
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
        inverse,
    )


def _placed(k: int, origin: tuple[int, int]) -> Entries:
    """Pixel (x, y) of a region whose corner is ``origin`` in an image decoded at 1/k, in
    the full image's coordinates (see ``geometry.from_reduced``)."""
    oy, ox = origin
    return (float(k), 0.0, k * ox + (k - 1) / 2.0, 0.0, float(k), k * oy + (k - 1) / 2.0)


def read_box(pending: PendingWarp | None, shape: Shape, k: int) -> Box | None:
    """The rectangle ``(y0, y1, x0, x1)`` of an image of ``shape`` decoded at 1/k whose
    pixels give the warp ``pending`` all it reads, or None where decoding just that would
    save too little (``_worth_it``: the entropy decoding of every row down to ``y1`` is never
    saved, and a region has a cost of its own).

    It holds the samples' bilinear neighbours and the antialiasing blocks around them, with
    margin, its corner on the blocks' grid. Along an axis where samples fall outside the
    image and the border is mirrored, the whole axis (a reflection may reach anywhere); with
    the other borders the region meets the image's edge there, so the border is the same."""
    if pending is None:
        return None
    hk, wk = geometry.reduced_shape(shape, k)
    m = pending.entries
    if k > 1:
        m = geometry.compose(_placed(k, (0, 0)), m)
    a, b, c, d, e, f = geometry.inverse(m)
    ho, wo = pending.shape
    ax, by, dx, ey = a * (wo - 1), b * (ho - 1), d * (wo - 1), e * (ho - 1)
    xs = (c + min(ax, 0.0) + min(by, 0.0), c + max(ax, 0.0) + max(by, 0.0))
    ys = (f + min(dx, 0.0) + min(ey, 0.0), f + max(dx, 0.0) + max(ey, 0.0))
    # the samples alone, without margins: most warps that read nearly everything stop here
    if not _worth_it(max(ys[0], 0), min(ys[1], hk), max(xs[0], 0), min(xs[1], wk), hk, wk):
        return None
    kx, ky = 1, 1
    if pending.interpolation == "bilinear":  # as F.affine's antialiasing would average
        kx, ky = F.antialias_factors(m, (hk, wk))
    reflect = pending.border == "reflect"
    x0, x1 = _read_span(xs, wk, kx, reflect)
    y0, y1 = _read_span(ys, hk, ky, reflect)
    if x0 >= x1 or y0 >= y1 or not _worth_it(y0, y1, x0, x1, hk, wk):
        return None
    return y0, y1, x0, x1


def _worth_it(y0: float, y1: float, x0: float, x1: float, h: int, w: int) -> bool:
    """Whether decoding rows y0..y1 and columns x0..x1 of an h x w JPEG saves enough of
    decoding it whole, by the cost model above (Huffman decoding down to y1, the rest by
    area)."""
    if y1 <= y0 or x1 <= x0:
        return True  # reads nothing inside: left to the caller
    area = (y1 - y0) * (x1 - x0) / (h * w)
    saved = 1 - _ENTROPY_SHARE * y1 / h - (1 - _ENTROPY_SHARE) * area
    return saved >= _PARTIAL_MIN_SAVING and saved * h * w >= _PARTIAL_MIN_PIXELS


def _read_span(span: tuple[float, float], n: int, block: int, reflect: bool) -> tuple[int, int]:
    """The pixels [start, stop) of an axis of ``n`` that samples at ``span`` read (see
    ``read_box``): two pixels and two blocks of margin, ``start`` on the block grid and
    ``stop`` too unless it is the image's edge."""
    lo, hi = span
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 0, n
    if reflect and (lo < 0 or hi > n - 1):
        return 0, n
    margin = 2 + 2 * block
    start = max(math.floor(lo) - margin, 0) // block * block
    stop = math.ceil(hi) + 1 + margin
    stop = min(-(-stop // block) * block, n)
    return max(start, 0), max(stop, 0)


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

    def region(self, k: int) -> Box | None:
        """After the call: the rectangle of the image decoded at 1/k that the warp reads,
        for a decoder that can decode only that (``WarpPlan.region``), or None."""
        return None if self.plan is None else self.plan.region(k)

    def finish(self, img: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The transform's output for ``img``; written into ``out`` (and ``out`` returned)
        where the pipeline ends with a warp of that shape and dtype, see ``Compose.finish``."""
        plan = self.plan
        if plan is None:
            F.check_image(img)
            plan = self.transform.plan(img.shape[:2], self.rng)
        return self.transform.finish(img, plan, self.rng, out)
