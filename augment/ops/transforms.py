"""Random transforms: each class draws its parameters from a ``numpy.random.Generator``
and hands the pixels to ``augment.functional``.

A transform is called as ``t(img, rng)``; the same generator state gives the same output.
Geometric transforms also describe themselves as a matrix, so ``Compose`` can fold a run of
them into one warp that resamples once and computes only the output pixels.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence

import numpy as np

from augment.ops import functional as F
from augment.ops import geometry
from augment.ops.targets import KINDS
from augment.ops.warp_plan import (
    WarpPlan,
    fits,
    fold,
    warp,
)

Shape = tuple[int, int]
Params = dict


class Transform:
    """Base class: a readable repr and equality built from the constructor's arguments.

    ``supported_targets``: the target kinds (``augment.ops.targets.KINDS``) a pipeline with this
    step keeps aligned with the image: every kind for geometric steps (``Compose`` moves the
    targets with their map) and for pixel-only ones (they leave targets alone), none for a
    step that does not say."""

    supported_targets: frozenset = frozenset()

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def _arguments(self) -> dict:
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._arguments().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._arguments() == other._arguments()

    def __hash__(self) -> int:
        return hash((type(self).__name__, repr(self)))


class GeometricTransform(Transform):
    """A transform that is an affine map of pixel coordinates.

    Subclasses implement ``make_params(shape, rng)`` (all randomness) and
    ``geometry(shape, params) -> (matrix, out_shape)``. ``resamples`` is False for maps that
    only move whole pixels; those never blur the image.
    """

    resamples = True
    supported_targets = frozenset(KINDS)
    interpolation = "bilinear"
    border = "reflect"
    fill = 0.0

    def make_params(self, shape: Shape, rng: np.random.Generator) -> Params:
        raise NotImplementedError

    def geometry(self, shape: Shape, params: Params) -> tuple[np.ndarray, Shape]:
        raise NotImplementedError

    def apply(
        self,
        img: np.ndarray,
        params: Params,
        kernel: str | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        matrix, out_shape = self.geometry(img.shape[:2], params)
        return F.affine(
            img, matrix, out_shape, self.interpolation, self.border, self.fill, kernel, out=out
        )

    def __call__(
        self, img: np.ndarray, rng: np.random.Generator, out: np.ndarray | None = None
    ) -> np.ndarray:
        """The transformed image; in ``out`` (returned) where given (``F.affine``)."""
        F.check_image(img)
        return self.apply(img, self.make_params(img.shape[:2], rng), out=out)

    def plan(self, shape: Shape, rng: np.random.Generator) -> WarpPlan:
        """Draw the parameters for an image of ``shape``, as ``Compose.plan``."""
        return fold((self,), shape, rng)

    def finish(
        self,
        img: np.ndarray,
        plan: WarpPlan,
        rng: np.random.Generator,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """The planned warp of ``img`` (full size or decoded smaller), as ``Compose.finish``."""
        F.check_image(img)
        pending = plan.warp
        scale, origin = plan.decoded(img.shape[:2])
        return warp(img, pending, scale, out=fits(out, img, pending.shape), origin=origin)


def _probability(p: float, name: str) -> float:
    p = F._check_finite(p, name)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
    return p


def _crop_size(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (size, size)
    if not (isinstance(size, Sequence) and len(size) == 2):
        raise ValueError(f"size must be an int or (height, width), got {size!r}")
    return F._check_size(size[0], "size height"), F._check_size(size[1], "size width")


class RandomFlip(GeometricTransform):
    """Mirror left-right with probability ``horizontal``, top-bottom with ``vertical``."""

    resamples = False

    def __init__(self, horizontal: float = 0.5, vertical: float = 0.0):
        self.horizontal = _probability(horizontal, "horizontal")
        self.vertical = _probability(vertical, "vertical")

    def make_params(self, shape, rng):
        u = rng.random(2)
        return {"h": bool(u[0] < self.horizontal), "v": bool(u[1] < self.vertical)}

    def geometry(self, shape, params):
        (h, w), flip_x, flip_y = shape, params["h"], params["v"]
        # geometry.hflip then geometry.vflip, as chosen: x -> w-1-x, y -> h-1-y
        m = [
            [-1.0 if flip_x else 1.0, 0.0, w - 1.0 if flip_x else 0.0],
            [0.0, -1.0 if flip_y else 1.0, h - 1.0 if flip_y else 0.0],
        ]
        return np.array(m), shape


class RandomRotate90(GeometricTransform):
    """With probability ``p``, turn counter-clockwise by 1, 2 or 3 quarter turns (uniform)."""

    resamples = False

    def __init__(self, p: float = 0.5):
        self.p = _probability(p, "p")

    def make_params(self, shape, rng):
        apply, k = rng.random() < self.p, int(rng.integers(1, 4))
        return {"k": k if apply else 0}

    def geometry(self, shape, params):
        return geometry.rot90(shape, params["k"])


class RandomRotate(GeometricTransform):
    """Rotate by an angle uniform in ``[-degrees, degrees]`` about the centre; same size out."""

    def __init__(
        self,
        degrees: float,
        interpolation: str = "bilinear",
        border: str = "reflect",
        fill: float = 0.0,
    ):
        self.degrees = F._check_finite(degrees, "degrees")
        if self.degrees < 0:
            raise ValueError(f"degrees must be >= 0, got {degrees}")
        F._check_choice(interpolation, "interpolation", F.INTERPOLATIONS)
        F._check_choice(border, "border", F.BORDERS)
        self.interpolation, self.border, self.fill = (
            interpolation,
            border,
            F._check_finite(fill, "fill"),
        )

    def make_params(self, shape, rng):
        return {"angle": float(rng.uniform(-self.degrees, self.degrees))}

    def geometry(self, shape, params):
        return geometry.rotation(shape, params["angle"]), shape


class RandomScale(GeometricTransform):
    """Resize by a factor uniform in ``[low, high]``: output ``round(H*f) x round(W*f)``."""

    border = "edge"

    def __init__(self, low: float, high: float, interpolation: str = "bilinear"):
        self.low, self.high = F._check_finite(low, "low"), F._check_finite(high, "high")
        if not 0 < self.low <= self.high:
            raise ValueError(f"need 0 < low <= high, got low={low}, high={high}")
        F._check_choice(interpolation, "interpolation", F.INTERPOLATIONS)
        self.interpolation = interpolation

    def make_params(self, shape, rng):
        factor = float(rng.uniform(self.low, self.high))
        out = geometry.scaled_shape(shape, factor)
        if min(out) < 1:
            raise ValueError(
                f"scale factor {factor:.4g} shrinks the {shape[0]}x{shape[1]} image to nothing"
            )
        return {"factor": factor, "out_shape": out}

    def geometry(self, shape, params):
        return geometry.resize(shape, params["out_shape"]), params["out_shape"]


class _Crop(GeometricTransform):
    """A window of ``size`` (int or (h, w)); subclasses choose where."""

    resamples = False

    def __init__(self, size: int | Sequence[int]):
        self.size = _crop_size(size)

    def make_params(self, shape, rng):
        (h, w), (ch, cw) = shape, self.size
        if ch > h or cw > w:
            raise ValueError(
                f"{type(self).__name__} size {ch}x{cw} is larger than the {h}x{w} image"
            )
        return self.place(h - ch, w - cw, rng)

    def place(self, spare_h: int, spare_w: int, rng) -> dict:
        raise NotImplementedError

    def geometry(self, shape, params):
        return geometry.crop(params["top"], params["left"]), self.size


class RandomCrop(_Crop):
    """A window of ``size`` (int or (h, w)) at a uniformly random position."""

    def place(self, spare_h, spare_w, rng):
        return {"top": int(rng.integers(0, spare_h + 1)), "left": int(rng.integers(0, spare_w + 1))}


class CenterCrop(_Crop):
    """The centred window of ``size`` (int or (h, w))."""

    def place(self, spare_h, spare_w, rng):
        return {"top": spare_h // 2, "left": spare_w // 2}


def _range(value, name: str) -> tuple[float, float]:
    """A ``(low, high)`` pair of finite numbers with ``0 < low <= high``."""
    if not (isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2):
        raise ValueError(f"{name} must be a pair (low, high), got {value!r}")
    low, high = F._check_finite(value[0], f"{name} low"), F._check_finite(value[1], f"{name} high")
    if not 0 < low <= high:
        raise ValueError(f"{name} needs 0 < low <= high, got {value!r}")
    return low, high


class RandomResizedCrop(GeometricTransform):
    """A box of random area and aspect ratio, stretched to ``size`` (int or (h, w)).

    The box is drawn as torchvision documents for its ``RandomResizedCrop``: "a crop of
    random size (default: of 0.08 to 1.0) of the original size and a random aspect ratio
    (default: of 3/4 to 4/3) of the original aspect ratio". Up to 10 attempts each take an
    area fraction uniform in ``scale`` and an aspect ratio (width / height) log-uniform in
    ``ratio``, round the box's width and height to whole pixels, and keep the first box
    that fits in the image, at a uniformly random position. When none fits, the box is
    the whole image, cut to the nearest aspect ratio inside ``ratio`` and centred.
    Bilinear, with ``Compose``'s antialiasing when it shrinks by more than 2x.
    """

    border = "edge"
    attempts = 10

    def __init__(
        self,
        size: int | Sequence[int],
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
    ):
        self.size = _crop_size(size)
        self.scale = _range(scale, "scale")
        self.ratio = _range(ratio, "ratio")

    def make_params(self, shape, rng):
        h, w = shape
        (s0, s1), (r0, r1) = self.scale, self.ratio
        log_r0, log_span = math.log(r0), math.log(r1) - math.log(r0)
        u = rng.random(2 * self.attempts + 2).tolist()  # one draw: attempts, then position
        for k in range(self.attempts):
            area = h * w * (s0 + (s1 - s0) * u[2 * k])
            aspect = math.exp(log_r0 + log_span * u[2 * k + 1])
            cw = round(math.sqrt(area * aspect))
            ch = round(math.sqrt(area / aspect))
            if 0 < cw <= w and 0 < ch <= h:
                top = min(int(u[-2] * (h - ch + 1)), h - ch)
                left = min(int(u[-1] * (w - cw + 1)), w - cw)
                return {"top": top, "left": left, "height": ch, "width": cw}
        if w / h < r0:  # too tall for every ratio: full width, the tallest box allowed
            cw, ch = w, min(h, max(1, round(w / r0)))
        elif w / h > r1:  # too wide: full height, the widest box allowed
            cw, ch = min(w, max(1, round(h * r1))), h
        else:
            cw, ch = w, h
        return {"top": (h - ch) // 2, "left": (w - cw) // 2, "height": ch, "width": cw}

    def geometry(self, shape, params):
        box = (params["height"], params["width"])
        matrix = geometry.then(
            geometry.crop(params["top"], params["left"]), geometry.resize(box, self.size)
        )
        return matrix, self.size


class Resize(GeometricTransform):
    """Resize to ``size``: an int sets the shorter side to ``size`` and keeps the aspect
    ratio (the longer side ``int(size * long / short)``, as torchvision's ``Resize``); an
    ``(h, w)`` pair is the output shape exactly. Bilinear, half-pixel centres."""

    border = "edge"

    def __init__(self, size: int | Sequence[int]):
        if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
            self.size = F._check_size(size, "size")
        else:
            self.size = _crop_size(size)

    def out_shape(self, shape: Shape) -> Shape:
        if isinstance(self.size, tuple):
            return self.size
        h, w = shape
        if h <= w:
            return self.size, max(1, int(self.size * w / h))
        return max(1, int(self.size * h / w)), self.size

    def make_params(self, shape, rng):
        return {}

    def geometry(self, shape, params):
        out = self.out_shape(shape)
        return geometry.resize(shape, out), out


class RandomRowJitter(Transform):
    """Scanline colour jitter: each row gets its own per-channel gain, uniform in
    ``[1 - strength, 1 + strength]``. Pure Python over rows, on purpose: it holds the GIL, so
    thread workers cannot run it in parallel (the GIL-bound regime); processes can."""

    supported_targets = frozenset(KINDS)  # pixels only: targets stay where they are

    def __init__(self, strength: float = 0.1):
        self.strength = F._check_finite(strength, "strength")
        if not 0 <= self.strength <= 1:
            raise ValueError(f"strength must be in [0, 1], got {strength}")

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        F.check_image(img)
        c = 1 if img.ndim == 2 else img.shape[2]
        gains = rng.uniform(1 - self.strength, 1 + self.strength, size=(img.shape[0], c))
        return F.row_gains(img, gains)


__all__ = [
    "Transform",
    "GeometricTransform",
    "RandomFlip",
    "RandomRotate90",
    "RandomRotate",
    "RandomScale",
    "RandomCrop",
    "CenterCrop",
    "RandomResizedCrop",
    "Resize",
    "RandomRowJitter",
]


def __getattr__(name: str):
    # Compose and the seed's pipeline live in augment.ops.compose (which builds on this
    # module); they are importable from here as they were before it was split off
    if name in ("Compose", "kaggle_pipeline", "kaggle_steps"):
        from augment.ops import compose

        return getattr(compose, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
