"""Pillow's affine transform (C code), for bilinear; nearest is a plain gather in numpy.

Pillow's uint8 modes truncate and its nearest uses 16.16 fixed point, so this kernel samples
each channel in float ("F" mode). Exact that way, it measured slower than the numpy kernel,
so it comes last in the preference order (docs/manual.md, "Kernels").

Pillow only knows a constant border, so the part of the source that the output needs is cut
out and padded by numpy first; Pillow then never samples outside it and every border mode
matches the reference."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from augment.ops.kernels import numpy_kernel

_NP_BORDER = {"reflect": "reflect", "edge": "edge", "constant": "constant"}
_MAX_REGION_FACTOR = 4  # a source region this much larger than the image: use numpy instead


def _source_box(inverse, out_shape):
    ho, wo = out_shape
    corners = np.array([[0, 0, 1], [wo - 1, 0, 1], [0, ho - 1, 1], [wo - 1, ho - 1, 1]], float)
    pts = corners @ np.asarray(inverse).T
    x0, y0 = (math.floor(v) - 1 for v in pts.min(axis=0))
    x1, y1 = (math.floor(v) + 3 for v in pts.max(axis=0))
    return x0, y0, x1, y1


def _region(img, box, border, fill):
    """img[y0:y1, x0:x1], with what lies outside the image made by the border rule, or None
    when that would need an unreasonably large padded copy."""
    h, w, _ = img.shape
    x0, y0, x1, y1 = box
    top, left = max(-y0, 0), max(-x0, 0)
    bottom, right = max(y1 - h, 0), max(x1 - w, 0)
    if not (top or left or bottom or right):
        return img[y0:y1, x0:x1]
    if (h + top + bottom) * (w + left + right) > _MAX_REGION_FACTOR * (h + 4) * (w + 4):
        return None
    pads = ((top, bottom), (left, right), (0, 0))
    if border == "constant":
        full = np.pad(img, pads, mode="constant", constant_values=fill)
    else:
        full = np.pad(img, pads, mode=_NP_BORDER[border])
    return full[y0 + top : y1 + top, x0 + left : x1 + left]


def warp(img, inverse, out_shape, interpolation, border, fill, out=None):
    if interpolation == "nearest":  # Pillow's nearest uses 16.16 fixed point: off at near-ties
        return numpy_kernel.warp(img, inverse, out_shape, interpolation, border, fill, out)
    h, w, c = img.shape
    box = _source_box(inverse, out_shape)
    too_large = (box[2] - box[0]) * (box[3] - box[1]) > _MAX_REGION_FACTOR * (h + 4) * (w + 4)
    region = None if too_large else _region(img, box, border, fill)
    if region is None:
        return numpy_kernel.warp(img, inverse, out_shape, interpolation, border, fill, out)
    a = np.array(inverse, dtype=np.float64)
    a[0, 2] -= box[0]
    a[1, 2] -= box[1]
    # Pillow maps output pixel corners to input pixel corners: shift by half a pixel each side.
    a[:, 2] += 0.5 - 0.5 * (a[:, 0] + a[:, 1])
    ho, wo = out_shape
    if out is None:
        out = np.empty((ho, wo, c), dtype=img.dtype)
    for channel in range(c):
        # Pillow's 8-bit modes truncate (half a grey level darker on average): sample each
        # channel as 32-bit float and round here instead.
        plane = Image.fromarray(region[:, :, channel].astype(np.float32), mode="F")
        res = plane.transform(
            (wo, ho), Image.Transform.AFFINE, tuple(a.ravel()), resample=Image.Resampling.BILINEAR
        )
        values = np.asarray(res)
        out[:, :, channel] = np.rint(values) if img.dtype == np.uint8 else values
    return out
