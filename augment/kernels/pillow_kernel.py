"""Pillow's affine transform (C code), for bilinear; nearest is a plain gather in numpy. Pillow only knows a constant border, so the part of
the source that the output needs is cut out and padded by numpy first; Pillow then never
samples outside it and every border mode matches the reference."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from augment.kernels import numpy_kernel

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
    return full[y0 + top:y1 + top, x0 + left:x1 + left]


def _pillow_planes(region):
    """Split channels into images Pillow can transform: RGB triples and single planes."""
    c = region.shape[2]
    if region.dtype == np.float32:
        return [(i, 1, "F") for i in range(c)]
    planes, i = [], 0
    while i < c:
        n = 3 if c - i >= 3 else 1
        planes.append((i, n, "RGB" if n == 3 else "L"))
        i += n
    return planes


def warp(img, inverse, out_shape, interpolation, border, fill):
    if interpolation == "nearest":  # Pillow's nearest uses 16.16 fixed point: off at near-ties
        return numpy_kernel.warp(img, inverse, out_shape, interpolation, border, fill)
    h, w, c = img.shape
    box = _source_box(inverse, out_shape)
    too_large = (box[2] - box[0]) * (box[3] - box[1]) > _MAX_REGION_FACTOR * (h + 4) * (w + 4)
    region = None if too_large else _region(img, box, border, fill)
    if region is None:
        return numpy_kernel.warp(img, inverse, out_shape, interpolation, border, fill)
    a = np.array(inverse, dtype=np.float64)
    a[0, 2] -= box[0]
    a[1, 2] -= box[1]
    # Pillow maps output pixel corners to input pixel corners: shift by half a pixel each side.
    a[:, 2] += 0.5 - 0.5 * (a[:, 0] + a[:, 1])
    ho, wo = out_shape
    out = np.empty((ho, wo, c), dtype=img.dtype)
    for start, n, mode in _pillow_planes(region):
        plane = np.ascontiguousarray(region[:, :, start:start + n])
        pil = Image.fromarray(plane[:, :, 0] if n == 1 else plane, mode=mode)
        res = pil.transform((wo, ho), Image.Transform.AFFINE, tuple(a.ravel()),
                            resample=Image.Resampling.BILINEAR)
        out[:, :, start:start + n] = np.asarray(res).reshape(ho, wo, n)
    return out
