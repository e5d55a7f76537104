"""OpenCV's warpAffine, into the caller's ``out`` where given (OpenCV's ``dst``).

OpenCV 5 interpolates in floating point, within half a grey level of the reference; older
releases quantise coordinates to 1/32 pixel, so they are refused.

An image more than twice the output's area is warped from just the part its samples touch
(a smaller source stays in cache, and less is converted below). Which OpenCV call is
cheapest depends on the pixels (measured on the RandomResizedCrop boxes of the realistic
benchmark, 224 x 224 out):

- uint8 with 3 or 4 channels: ``warpAffine`` on 4 channels, a 3-channel image converted to
  RGBA and back (OpenCV's 4-channel path is vectorised; the first three channels hold the
  same values as its 3-channel warp, tested). 0.6-0.7x the time of the 3-channel warp of the
  whole image, and as fast as or faster than the resize below.
- anything else: a bilinear map that resizes a whole-pixel box along its axes (maybe
  mirrored), what RandomResizedCrop and Resize do, is ``cv2.resize`` of the box in float32,
  rounded to nearest like the warp: the same sample positions (half-pixel centres), 0.7x
  the warp's time for grey uint8 and float32 RGB. Where a box is enlarged, its outermost
  output rows and columns sample just outside the box (the image's pixels there, or the
  border rule), which ``cv2.resize`` would clamp to the box: those few are warped and
  written over."""

from __future__ import annotations

import math

import cv2
import numpy as np

if int(cv2.__version__.split(".")[0]) < 5:
    raise ImportError(f"OpenCV {cv2.__version__} quantises warp coordinates; augment needs >= 5")

_INTERPOLATION = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR}
_BORDER = {
    "reflect": cv2.BORDER_REFLECT_101,
    "edge": cv2.BORDER_REPLICATE,
    "constant": cv2.BORDER_CONSTANT,
}


def _channel_groups(c: int) -> list[tuple[int, int]]:
    """OpenCV's floating-point warp covers 1, 3 and 4 channels; 2 channels take its older
    fixed-point path (off by several grey levels). Split other counts into those sizes."""
    groups, start = [], 0
    while start < c:
        n = 4 if c - start >= 4 else 3 if c - start == 3 else 1
        groups.append((start, n))
        start += n
    return groups


_WHOLE = 1e-7  # how close to a whole pixel a box edge must be


def _box_axis(scale: float, offset: float, n_out: int, n_in: int):
    """(start, length, mirrored, edge) of the whole-pixel run of the input axis that ``x_in =
    scale * x_out + offset`` resizes onto ``n_out`` pixels with half-pixel centres; ``edge``
    output pixels at each end sample outside the run (an enlarged run). None when the map is
    not such a resize, or when those ends would be most of the output."""
    mirrored = scale < 0
    if mirrored:  # read the output backwards: the same map with a positive scale
        scale, offset = -scale, offset + scale * (n_out - 1)
    if scale <= 0:
        return None
    length = scale * n_out
    start = offset - 0.5 * scale + 0.5
    if abs(length - round(length)) > _WHOLE or abs(start - round(start)) > _WHOLE:
        return None
    start, length = round(start), round(length)
    if start < 0 or start + length > n_in:
        return None
    # output x samples before the run's first pixel centre when (x + 0.5) * scale < 0.5
    edge = max(0, math.ceil((0.5 - _WHOLE) / scale - 0.5))
    if 4 * edge > n_out:
        return None
    return start, length, mirrored, edge


def _resize_box(img, inverse, out_shape, out, warp_part):
    """The map as ``cv2.resize`` of a box, when it is one (see the module's docstring);
    ``warp_part(inverse, shape)`` warps the few output rows or columns next to the edges of
    an enlarged box."""
    (a, b, c), (d, e, f) = inverse
    if b != 0 or d != 0:
        return None
    ho, wo = out_shape
    xs = _box_axis(a, c, wo, img.shape[1])
    ys = _box_axis(e, f, ho, img.shape[0])
    if xs is None or ys is None:
        return None
    (x0, w, flip_x, edge_x), (y0, h, flip_y, edge_y) = xs, ys
    box = img[y0 : y0 + h, x0 : x0 + w]
    n = img.shape[2]
    if out is None:
        out = np.empty((ho, wo, n), img.dtype)
    dst = out[:, :, 0] if n == 1 else out
    # in float: OpenCV's uint8 resize has fixed-point weights that darken by 0.13 grey
    # levels on average; float32 then rounding to nearest is the reference's result
    res = cv2.resize(box.astype(np.float32), (wo, ho), interpolation=cv2.INTER_LINEAR)
    flip = {(True, False): 1, (False, True): 0, (True, True): -1}.get((flip_x, flip_y))
    if img.dtype == np.uint8:  # rounds to nearest, saturates
        res = cv2.convertScaleAbs(res, dst=None if flip is not None else dst)
    if flip is not None:  # the samples are symmetric: mirror the result (cheapest in uint8)
        res = cv2.flip(res, flip, dst=dst)
    elif img.dtype != np.uint8:
        dst[...] = res.reshape(dst.shape)
        res = dst
    if not np.shares_memory(res, out):  # OpenCV made its own array after all
        out[...] = res.reshape(ho, wo, n)
    for rows, cols in _edges(edge_y, edge_x, ho, wo):
        part = np.array(inverse, dtype=np.float64)
        part[:, 2] += part[:, 0] * cols.start + part[:, 1] * rows.start
        out[rows, cols] = warp_part(part, (rows.stop - rows.start, cols.stop - cols.start))
    return out


def _edges(edge_y: int, edge_x: int, ho: int, wo: int):
    """(rows, cols) slices of the output's outermost ``edge_y`` rows and ``edge_x`` columns."""
    if edge_y:
        yield slice(0, edge_y), slice(0, wo)
        yield slice(ho - edge_y, ho), slice(0, wo)
    if edge_x:
        yield slice(edge_y, ho - edge_y), slice(0, edge_x)
        yield slice(edge_y, ho - edge_y), slice(wo - edge_x, wo)


def _part_read(img, inverse, out_shape, border):
    """The rectangle of ``img`` that the samples and their bilinear neighbours read, as
    ``(y0, y1, x0, x1)``, and whether a warp of just that rectangle gives the same samples:
    always when it lies inside the image; when it does not, for the edge and constant
    borders only (mirrored reads may reach anywhere)."""
    h, w = img.shape[:2]
    ho, wo = out_shape
    (a, b, c), (d, e, f) = inverse.tolist()  # Python floats: numpy scalars are slow
    ax, by, dx, ey = a * (wo - 1), b * (ho - 1), d * (wo - 1), e * (ho - 1)
    x0 = math.floor(c + min(ax, 0.0) + min(by, 0.0)) - 1
    x1 = math.ceil(c + max(ax, 0.0) + max(by, 0.0)) + 2
    y0 = math.floor(f + min(dx, 0.0) + min(ey, 0.0)) - 1
    y1 = math.ceil(f + max(dx, 0.0) + max(ey, 0.0)) + 2
    inside = x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    usable = x0 < x1 and y0 < y1 and (inside or border != "reflect")
    return (y0, y1, x0, x1), usable


def _warp_affine(img, matrix, out_shape, border, kwargs, out=None):
    """``cv2.warpAffine`` of the part of ``img`` read, 3-channel uint8 as RGBA."""
    ho, wo = out_shape
    h, w = img.shape[:2]
    if h * w > 2 * ho * wo:  # a part worth cutting out (else not worth the Python)
        (y0, y1, x0, x1), usable = _part_read(img, matrix, out_shape, border)
        usable = usable and (y0, y1, x0, x1) != (0, h, 0, w)
    else:
        usable = False
    if usable:
        img = img[y0:y1, x0:x1]
        matrix = matrix.copy()
        matrix[0, 2] -= x0
        matrix[1, 2] -= y0
    c = img.shape[2]
    if c == 3 and img.dtype == np.uint8:  # as RGBA: see the module's docstring
        rgba = cv2.warpAffine(cv2.cvtColor(img, cv2.COLOR_RGB2RGBA), matrix, (wo, ho), **kwargs)
        if out is None:
            return cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB)
        res = cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB, dst=out)
    elif out is None:
        return cv2.warpAffine(img, matrix, (wo, ho), **kwargs).reshape(ho, wo, c)
    else:
        dst = out[:, :, 0] if c == 1 else out
        res = cv2.warpAffine(img, matrix, (wo, ho), dst=dst, **kwargs)
    if not np.shares_memory(res, out):  # OpenCV made its own array after all
        out[...] = res.reshape(ho, wo, c)
    return out


def nearest_2d(img, inverse, out_shape, border, fill, out=None):
    """``warp`` of a 2-D uint8 array (a class map), nearest, in one OpenCV call and 2-D
    back (into ``out``, 2-D, where given): what ``warp`` does for one channel when the
    source is not worth cutting (at most twice the output's area); None where it is."""
    ho, wo = out_shape
    if img.shape[0] * img.shape[1] > 2 * ho * wo:
        return None
    return cv2.warpAffine(
        img, inverse, (wo, ho), dst=out, flags=_NEAREST_INVERSE, borderMode=_BORDER[border],
        borderValue=(fill,) * 4,
    )  # fmt: skip


_NEAREST_INVERSE = cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP


def warp(img, inverse, out_shape, interpolation, border, fill, out=None):
    ho, wo = out_shape
    c = img.shape[2]
    flags = _INTERPOLATION[interpolation] | cv2.WARP_INVERSE_MAP
    kwargs = dict(flags=flags, borderMode=_BORDER[border], borderValue=(float(fill),) * 4)
    if c not in (1, 3, 4):
        if out is None:
            out = np.empty((ho, wo, c), dtype=img.dtype)
        for start, n in _channel_groups(c):
            part = np.ascontiguousarray(img[:, :, start : start + n])
            out[:, :, start : start + n] = warp(part, inverse, out_shape, interpolation, border,
                                                fill)  # fmt: skip
        return out
    matrix = np.ascontiguousarray(inverse, dtype=np.float64)
    if interpolation == "bilinear" and not (img.dtype == np.uint8 and c >= 3):

        def warp_part(part_inverse, shape):
            return _warp_affine(img, part_inverse, shape, border, kwargs).reshape(*shape, c)

        resized = _resize_box(img, matrix, out_shape, out, warp_part)
        if resized is not None:
            return resized
    return _warp_affine(img, matrix, out_shape, border, kwargs, out)
