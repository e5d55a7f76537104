"""OpenCV's warpAffine, into the caller's ``out`` where given (OpenCV's ``dst``).

OpenCV 5 interpolates in floating point, within half a grey level of the reference; older
releases quantise coordinates to 1/32 pixel, so they are refused.

A bilinear map that only shrinks a whole-pixel box of the image along its axes (and maybe
mirrors it), what RandomResizedCrop and Resize do, goes to ``cv2.resize`` of that box
instead: the same sample positions (half-pixel centres, all inside the box, so no border
rule applies), separable, in float32 and rounded to nearest like the warp, about twice as
fast as it."""

from __future__ import annotations

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
    """(start, length, mirrored) of the whole-pixel run of the input axis that ``x_in = scale
    * x_out + offset`` resizes onto ``n_out`` pixels with half-pixel centres, shrinking or
    keeping its size; None when the map is not such a resize."""
    mirrored = scale < 0
    if mirrored:  # read the output backwards: the same map with a positive scale
        scale, offset = -scale, offset + scale * (n_out - 1)
    length = scale * n_out
    start = offset - 0.5 * scale + 0.5
    if scale < 1 or abs(length - round(length)) > _WHOLE or abs(start - round(start)) > _WHOLE:
        return None
    start, length = round(start), round(length)
    if start < 0 or start + length > n_in:
        return None
    return start, length, mirrored


def _resize_box(img, inverse, out_shape, out):
    """The map as ``cv2.resize`` of a box, when it is one (see the module's docstring)."""
    (a, b, c), (d, e, f) = inverse
    if b != 0 or d != 0:
        return None
    ho, wo = out_shape
    xs = _box_axis(a, c, wo, img.shape[1])
    ys = _box_axis(e, f, ho, img.shape[0])
    if xs is None or ys is None:
        return None
    (x0, w, flip_x), (y0, h, flip_y) = xs, ys
    box = img[y0 : y0 + h, x0 : x0 + w]
    flip = {(True, False): 1, (False, True): 0, (True, True): -1}.get((flip_x, flip_y))
    n = img.shape[2]
    dst = None if out is None else out[:, :, 0] if n == 1 else out
    # in float: OpenCV's uint8 resize has fixed-point weights that darken by 0.13 grey
    # levels on average; float32 then rounding to nearest is the reference's result
    res = cv2.resize(box.astype(np.float32), (wo, ho), interpolation=cv2.INTER_LINEAR)
    if flip is not None:
        res = cv2.flip(res, flip)
    if img.dtype == np.uint8:
        res = cv2.convertScaleAbs(res, dst=dst)  # rounds to nearest, saturates
    elif dst is not None:
        dst[...] = res
        res = dst
    if out is None:
        return res.reshape(ho, wo, n)
    if not np.shares_memory(res, out):  # OpenCV made its own array after all
        out[...] = res.reshape(ho, wo, n)
    return out


def warp(img, inverse, out_shape, interpolation, border, fill, out=None):
    ho, wo = out_shape
    c = img.shape[2]
    if interpolation == "bilinear":
        resized = _resize_box(img, inverse, out_shape, out)
        if resized is not None:
            return resized
    flags = _INTERPOLATION[interpolation] | cv2.WARP_INVERSE_MAP
    kwargs = dict(flags=flags, borderMode=_BORDER[border], borderValue=(float(fill),) * 4)
    matrix = np.ascontiguousarray(inverse, dtype=np.float64)
    if c in (1, 3, 4):
        if out is None:
            return cv2.warpAffine(img, matrix, (wo, ho), **kwargs).reshape(ho, wo, c)
        dst = out[:, :, 0] if c == 1 else out
        res = cv2.warpAffine(img, matrix, (wo, ho), dst=dst, **kwargs)
        if not np.shares_memory(res, out):  # OpenCV made its own array after all
            out[...] = res.reshape(ho, wo, c)
        return out
    if out is None:
        out = np.empty((ho, wo, c), dtype=img.dtype)
    for start, n in _channel_groups(c):
        part = np.ascontiguousarray(img[:, :, start : start + n])
        out[:, :, start : start + n] = cv2.warpAffine(part, matrix, (wo, ho), **kwargs).reshape(
            ho, wo, n
        )
    return out
