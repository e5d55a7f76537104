"""Augmentation ops on numpy arrays: the pixels.

Every op takes an ``(H, W)`` or ``(H, W, C)`` uint8 or float32 array and returns a new
C-contiguous array of the same dtype; the input is never modified. Bad arguments raise a
``ValueError`` that says what was wrong and what is accepted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from augment.ops import geometry, kernels

try:  # only for its 2x2 block mean, which is bit-identical to box_reduce's and 10x faster
    import cv2 as _cv2
except ImportError:
    _cv2 = None

INTERPOLATIONS = ("nearest", "bilinear")
BORDERS = ("reflect", "edge", "constant")
DTYPES = (np.uint8, np.float32)
# Nearest-neighbour ties (x.5) go up in every kernel: nudge coordinates past the tie.
_NEAREST_NUDGE = 1e-4
# A shrink within this of an integer counts as that integer (2.0 stays "not more than 2x").
_SHRINK_TOL = 1e-6


def check_image(img: np.ndarray, name: str = "img") -> None:
    if not isinstance(img, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(img).__name__}")
    if img.ndim not in (2, 3):
        raise ValueError(f"{name} must be (H, W) or (H, W, C), got shape {img.shape}")
    if img.dtype not in DTYPES:
        raise ValueError(f"{name} dtype must be uint8 or float32, got {img.dtype}")
    if img.size == 0:
        raise ValueError(f"{name} is empty: shape {img.shape}")


def _check_choice(value: str, name: str, accepted: Sequence[str]) -> None:
    if value not in accepted:
        raise ValueError(f"{name} must be one of {', '.join(accepted)}; got {value!r}")


def _check_finite(value: float, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _check_size(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _copy(view: np.ndarray) -> np.ndarray:
    return np.array(view, order="C", copy=True)


def hflip(img: np.ndarray) -> np.ndarray:
    """Mirror left-right."""
    check_image(img)
    return _copy(img[:, ::-1])


def vflip(img: np.ndarray) -> np.ndarray:
    """Mirror top-bottom."""
    check_image(img)
    return _copy(img[::-1])


def rot90(img: np.ndarray, k: int = 1) -> np.ndarray:
    """Rotate by ``k`` quarter turns counter-clockwise, as ``np.rot90``."""
    check_image(img)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an integer number of quarter turns, got {k!r}")
    return _copy(np.rot90(img, int(k)))


def crop(img: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    """The ``height x width`` window whose top-left pixel is ``(top, left)``."""
    check_image(img)
    height, width = _check_size(height, "height"), _check_size(width, "width")
    for name, v in (("top", top), ("left", left)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {v!r}")
    h, w = img.shape[:2]
    if top < 0 or left < 0 or top + height > h or left + width > w:
        raise ValueError(
            f"crop (top={top}, left={left}, height={height}, width={width}) "
            f"lies outside the {h}x{w} image"
        )
    return _copy(img[top : top + height, left : left + width])


def center_crop(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """The centred ``height x width`` window (rounded up-left when the margin is odd)."""
    check_image(img)
    height, width = _check_size(height, "height"), _check_size(width, "width")
    h, w = img.shape[:2]
    if height > h or width > w:
        raise ValueError(f"center crop {height}x{width} is larger than the {h}x{w} image")
    return crop(img, (h - height) // 2, (w - width) // 2, height, width)


def scale(
    img: np.ndarray,
    factor: float,
    interpolation: str = "bilinear",
    kernel: str | None = None,
    antialias: bool = True,
) -> np.ndarray:
    """Resize by ``factor``: output ``round(H*f) x round(W*f)``, half-pixel centres."""
    check_image(img)
    factor = _check_finite(factor, "factor")
    if factor <= 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    out_shape = geometry.scaled_shape(img.shape[:2], factor)
    if min(out_shape) < 1:
        raise ValueError(
            f"factor {factor} shrinks the {img.shape[0]}x{img.shape[1]} image "
            f"to {out_shape[0]}x{out_shape[1]}"
        )
    matrix = geometry.resize(img.shape[:2], out_shape)
    return affine(img, matrix, out_shape, interpolation, "edge", kernel=kernel, antialias=antialias)


def resize(
    img: np.ndarray,
    height: int,
    width: int,
    interpolation: str = "bilinear",
    kernel: str | None = None,
    antialias: bool = True,
) -> np.ndarray:
    """Stretch to exactly ``height x width``, half-pixel centres (as Pillow and OpenCV)."""
    check_image(img)
    out_shape = (_check_size(height, "height"), _check_size(width, "width"))
    matrix = geometry.resize(img.shape[:2], out_shape)
    return affine(img, matrix, out_shape, interpolation, "edge", kernel=kernel, antialias=antialias)


def resized_crop(
    img: np.ndarray,
    top: int,
    left: int,
    height: int,
    width: int,
    size: tuple[int, int],
    interpolation: str = "bilinear",
    kernel: str | None = None,
    antialias: bool = True,
) -> np.ndarray:
    """The ``height x width`` window at ``(top, left)`` stretched to ``size`` (h, w), in one
    resampling pass: what ``RandomResizedCrop`` does with the box it draws."""
    check_image(img)
    height, width = _check_size(height, "height"), _check_size(width, "width")
    h, w = img.shape[:2]
    for name, v in (("top", top), ("left", left)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {v!r}")
    if top < 0 or left < 0 or top + height > h or left + width > w:
        raise ValueError(
            f"crop (top={top}, left={left}, height={height}, width={width}) "
            f"lies outside the {h}x{w} image"
        )
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise ValueError(f"size must be (height, width), got {size!r}")
    out_shape = (_check_size(size[0], "size height"), _check_size(size[1], "size width"))
    matrix = geometry.then(
        geometry.crop(int(top), int(left)), geometry.resize((height, width), out_shape)
    )
    return affine(img, matrix, out_shape, interpolation, "edge", kernel=kernel, antialias=antialias)


def rotate(
    img: np.ndarray,
    angle: float,
    interpolation: str = "bilinear",
    border: str = "reflect",
    fill: float = 0.0,
    kernel: str | None = None,
) -> np.ndarray:
    """Rotate by ``angle`` degrees counter-clockwise about the centre; same size out."""
    check_image(img)
    angle = _check_finite(angle, "angle")
    matrix = geometry.rotation(img.shape[:2], angle)
    return affine(img, matrix, img.shape[:2], interpolation, border, fill, kernel=kernel)


def affine(
    img: np.ndarray,
    matrix: np.ndarray,
    out_shape: tuple[int, int],
    interpolation: str = "bilinear",
    border: str = "reflect",
    fill: float = 0.0,
    kernel: str | None = None,
    antialias: bool = True,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Warp by a 2x3 ``matrix`` mapping input pixel coordinates to output coordinates.

    Maps that only move whole pixels (flips, quarter turns, integer shifts) are done as
    exact copies; the rest are resampled once by ``kernel`` (default: the fastest installed).
    With ``antialias`` (bilinear only), a map that shrinks an input axis by more than 2x
    first averages blocks of 2, 4, 8... pixels along it (``antialias_factors``,
    ``box_reduce``: the same for every kernel), so the bilinear warp that follows shrinks by
    less than 2x and does not alias; only the part of the input that the output samples is
    reduced.

    ``out``: where to write the result (returned), a C-contiguous array of ``img``'s dtype
    shaped ``out_shape`` plus ``img``'s channels (a slot of a batch buffer, say), so the
    warp allocates no output; the pixels are those of the call without it.
    """
    check_image(img)
    _check_choice(interpolation, "interpolation", INTERPOLATIONS)
    _check_choice(border, "border", BORDERS)
    fill = _check_finite(fill, "fill")
    try:
        m = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"matrix must be a finite 2x3 array of numbers, got {matrix!r}") from None
    if m.shape != (2, 3) or not np.all(np.isfinite(m)):
        raise ValueError(f"matrix must be a finite 2x3 array, got {m.tolist()}")
    if not isinstance(out_shape, (tuple, list)) or len(out_shape) != 2:
        raise ValueError(f"out_shape must be (height, width), got {out_shape!r}")
    out_shape = (
        _check_size(out_shape[0], "out_shape height"),
        _check_size(out_shape[1], "out_shape width"),
    )
    if out is not None:
        _check_out(out, img, out_shape)
    return _affine(
        img, geometry.entries(m), out_shape, interpolation, border, fill, kernel, antialias, out
    )


def _affine(img, m, out_shape, interpolation, border, fill, kernel, antialias, out, inverse=None):
    """``affine`` once its arguments are known good (``Compose`` checked them when it was
    built): ``m`` is the map's six entries (``geometry.Entries``); ``inverse``, where given,
    its snapped inverse (``PendingWarp.inverse``: one for the image and its masks)."""
    if img.dtype == np.uint8:
        if not 0 <= fill <= 255:
            raise ValueError(f"fill must be in 0..255 for a uint8 image, got {fill}")
        fill = float(round(fill))  # every kernel fills with the same whole grey level
    if inverse is None:
        inverse = geometry.snapped(geometry.inverse(m))
    if geometry.moves_whole_pixels(inverse):
        copied = _permute_pixels(img, inverse, out_shape, out)
        if copied is not None:
            return copied
    if interpolation == "nearest":
        a, b, c, d, e, f = inverse
        inverse = (a, b, c + _NEAREST_NUDGE, d, e, f + _NEAREST_NUDGE)
    warp = kernels.get(kernel)
    src = img if img.ndim == 3 else img[:, :, None]
    if antialias and interpolation == "bilinear":
        src, inverse = _antialias(src, m, inverse, out_shape)
    src = np.ascontiguousarray(src)
    inverse = geometry.as_matrix(inverse)
    if out is None:
        res = warp(src, inverse, out_shape, interpolation, border, fill)
        return res.reshape(out_shape) if img.ndim == 2 else res
    warp(src, inverse, out_shape, interpolation, border, fill, out=out.reshape(*out_shape, -1))
    return out


def _nearest_u8(img, inverse, out_shape, border, fill, kernel, out=None):
    """``_affine`` of a 2-D uint8 array (a class map), nearest, without antialiasing, by the
    opencv kernel, its snapped ``inverse`` given: the kernel's one OpenCV call, not the
    general path's steps around it (a mask follows every image warp); into ``out`` where
    it is a writeable C-contiguous uint8 array of ``out_shape``. None where the general
    path does more (a whole-pixel map, a source worth cutting, another kernel)."""
    if kernel != "opencv" or img.ndim != 2 or not 0 <= fill <= 255:
        return None
    if geometry.moves_whole_pixels(inverse):
        return None
    if out is not None and not (
        out.shape == out_shape
        and out.dtype == np.uint8
        and out.flags.c_contiguous
        and out.flags.writeable
    ):
        out = None
    a, b, c, d, e, f = inverse
    matrix = np.array(((a, b, c + _NEAREST_NUDGE), (d, e, f + _NEAREST_NUDGE)))
    cv = kernels.module("opencv")
    return cv.nearest_2d(img, matrix, out_shape, border, float(round(fill)), out)


def _check_out(out, img: np.ndarray, out_shape: tuple[int, int]) -> None:
    expected = (*out_shape, *img.shape[2:])
    if not isinstance(out, np.ndarray) or out.shape != expected or out.dtype != img.dtype:
        got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ValueError(f"out must be a {img.dtype} array of shape {expected}, got {got}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be a writeable C-contiguous array")


def antialias_factors(matrix: np.ndarray, shape: tuple[int, int]) -> tuple[int, int]:
    """The block sizes ``(kx, ky)`` that ``affine(..., antialias=True)`` averages before a
    bilinear warp by ``matrix`` of an image of ``shape``: along each input axis that the map
    shrinks by more than 2x (``geometry.shrink``), the largest power of two not above the
    shrink, else 1. Powers of two, like the scales a JPEG decodes at (1/2, 1/4, 1/8): a
    reduced decode then stands in for the same blocks, and the warp after both shrinks by
    less than 2x."""
    sx, sy = geometry.shrink(matrix)
    h, w = shape
    return _power_of_two(sx, w), _power_of_two(sy, h)


def _power_of_two(shrink: float, n: int) -> int:
    if not shrink > 2 + _SHRINK_TOL:
        return 1
    k = 1 << (int(min(shrink + _SHRINK_TOL, n)).bit_length() - 1)
    return max(k, 1)


def box_reduce(img: np.ndarray, kx: int, ky: int | None = None) -> np.ndarray:
    """Average blocks of ``ky`` rows by ``kx`` columns: output ``ceil(H/ky) x ceil(W/kx)``.

    A partial block at the bottom or right edge is completed by repeating the edge pixel, as
    a JPEG encoder pads its last blocks, so this matches decoding at scale 1/k. uint8 means
    are rounded to nearest (halves up). Pixel ``j`` of the output is centred on input
    coordinate ``k*j + (k - 1) / 2`` (``geometry.from_reduced``)."""
    check_image(img)
    ky = kx if ky is None else ky
    kx, ky = _check_size(kx, "kx"), _check_size(ky, "ky")
    src = img if img.ndim == 3 else img[:, :, None]
    out = _box_reduce(src, kx, ky)
    return out if img.ndim == 3 else out[:, :, 0]


def _box_reduce(src: np.ndarray, kx: int, ky: int) -> np.ndarray:
    h, w, _ = src.shape
    bh, bw = -(-h // ky), -(-w // kx)
    if bh * ky != h or bw * kx != w:
        src = np.pad(src, ((0, bh * ky - h), (0, bw * kx - w), (0, 0)), mode="edge")
    n = kx * ky
    if kx == 2 and ky <= 2 and src.dtype == np.uint8 and src.shape[2] in (1, 3, 4) and _cv2:
        # OpenCV's INTER_AREA at exactly 1/2 is (a + b + c + d + 2) >> 2, and its INTER_LINEAR
        # at 1/2 along x alone (weights 1/2, 1/2, fixed point without loss) is (a + b + 1) >> 1:
        # the same integers, 8x faster than numpy's 3-byte strides for the latter.
        flag = _cv2.INTER_AREA if ky == 2 else _cv2.INTER_LINEAR
        return _cv2.resize(src, (bw, bh), interpolation=flag).reshape(bh, bw, -1)
    if src.dtype == np.uint8:
        acc_dtype = np.uint16 if n <= 257 else np.uint32
    else:
        acc_dtype = np.float32
    rows = src[0::ky].astype(acc_dtype) if ky > 1 else src.astype(acc_dtype)
    for i in range(1, ky):
        rows += src[i::ky]
    acc = rows[:, 0::kx].copy() if kx > 1 else rows
    for j in range(1, kx):
        acc += rows[:, j::kx]
    if src.dtype == np.uint8:
        acc += n // 2
        acc //= n
        return acc.astype(np.uint8)
    acc /= n
    return acc


def _antialias(src, matrix, inverse, out_shape):
    """Box-reduce the part of ``src`` that the warp samples, where the map shrinks an axis by
    more than 2x, and the inverse map onto the reduced part (see ``affine``)."""
    h, w, _ = src.shape
    kx, ky = antialias_factors(matrix, (h, w))
    if kx == 1 and ky == 1:
        return src, inverse
    a, b, c, d, e, f = inverse
    ho, wo = out_shape
    corners = [(0, 0), (wo - 1, 0), (0, ho - 1), (wo - 1, ho - 1)]
    xs = [a * x + b * y + c for x, y in corners]
    ys = [d * x + e * y + f for x, y in corners]
    # Blocks of the reduced grid (aligned on the image's corner) that the samples and their
    # bilinear neighbours touch, within the image.
    x0, x1 = _block_span(min(xs), max(xs), kx, w)
    y0, y1 = _block_span(min(ys), max(ys), ky, h)
    if x0 > x1 or y0 > y1:  # the output samples only the border outside the image
        return src, inverse
    part = src[y0 * ky : min((y1 + 1) * ky, h), x0 * kx : min((x1 + 1) * kx, w)]
    reduced = _box_reduce(part, kx, ky)
    to_reduced = geometry.inverse(geometry.entries(geometry.from_reduced(kx, ky)))
    a, b, c, d, e, f = geometry.compose(inverse, to_reduced)
    return reduced, (a, b, c - x0, d, e, f - y0)


def _block_span(lo: float, hi: float, k: int, n: int) -> tuple[int, int]:
    """First and last block (of ``k`` pixels, ``ceil(n/k)`` blocks) whose centres bracket the
    coordinates ``lo .. hi``, one block of margin each side, clipped to the image."""
    centre = (k - 1) / 2.0
    first = math.floor((lo - centre) / k) - 1
    last = math.floor((hi - centre) / k) + 2
    return max(first, 0), min(last, -(-n // k) - 1)


def _permute_pixels(img, inverse, out_shape, out=None):
    """Output as a strided view of the input, copied (into ``out`` where given) when every
    output pixel is one input pixel inside the image; None when some fall outside (the
    kernel handles the border then)."""
    ho, wo = out_shape
    a, b, tx, d, e, ty = inverse  # six entries, snapped to whole numbers
    tx, ty = int(tx), int(ty)
    src = img
    if a == 0:  # x_src comes from y_out: transpose so each axis maps to itself
        src = np.swapaxes(img, 0, 1)
        sx, sy = int(d), int(b)
        tx, ty = ty, tx
    else:
        sx, sy = int(a), int(e)
    h, w = src.shape[:2]
    xs_end, ys_end = tx + sx * (wo - 1), ty + sy * (ho - 1)
    if min(tx, xs_end) < 0 or max(tx, xs_end) >= w or min(ty, ys_end) < 0 or max(ty, ys_end) >= h:
        return None
    rows = slice(ty, ys_end + sy if ys_end + sy >= 0 else None, sy)
    cols = slice(tx, xs_end + sx if xs_end + sx >= 0 else None, sx)
    if out is None:
        return _copy(src[rows, cols])
    np.copyto(out, src[rows, cols])
    return out


def row_gains(img: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Multiply each row by its own per-channel gains (``gains`` is H x C), clipped to the
    dtype's range for uint8. Deliberately a Python loop over rows: the per-call overhead keeps
    the GIL held most of the time, which is the GIL-bound regime the profiler should expose."""
    check_image(img)
    h = img.shape[0]
    c = 1 if img.ndim == 2 else img.shape[2]
    gains = np.asarray(gains, dtype=np.float32)
    if gains.shape != (h, c):
        raise ValueError(f"gains must be {h}x{c} (rows x channels), got {gains.shape}")
    out = np.empty_like(img)
    for r in range(h):
        row = img[r] * (gains[r] if img.ndim == 3 else gains[r, 0])
        if img.dtype == np.uint8:
            np.clip(row, 0, 255, out=row)
            np.rint(row, out=row)
        out[r] = row
    return out
