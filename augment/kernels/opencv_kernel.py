"""OpenCV's warpAffine, into the caller's ``out`` where given (OpenCV's ``dst``).

OpenCV 5 interpolates in floating point, within half a grey level of the reference; older
releases quantise coordinates to 1/32 pixel, so they are refused."""

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


def warp(img, inverse, out_shape, interpolation, border, fill, out=None):
    ho, wo = out_shape
    c = img.shape[2]
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
