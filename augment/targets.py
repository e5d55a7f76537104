"""Targets that move with the image: the arithmetic.

A mask is resampled by the image's own folded map (``warp_plan.PendingWarp``): the same
matrix, the same output size, the same border rule. An integer or boolean mask is sampled
nearest-neighbour, so no class value appears that was not there; it goes through the kernel
as bytes (an int32 map is four uint8 channels, and nearest moves whole pixels, so the bytes
reassemble exactly). A float32 mask is resampled as the image is (bilinear, antialiased).

Boxes and keypoints are mapped analytically, never rasterised. They live in continuous pixel
coordinates: pixel ``(row i, column j)`` covers ``[j, j + 1) x [i, i + 1)``, so the box
``(0, 0, W, H)`` is the whole image (the torchvision and albumentations convention) and the
centre of pixel ``j`` is ``j + 0.5``; the matrices of ``augment.geometry`` put pixel centres
on integers, and ``continuous`` converts. A box's four corners are mapped and the box that
encloses them taken, then clipped to the output; its visibility is the clipped area over the
mapped area.
"""

from __future__ import annotations

import numpy as np

from augment import functional as F
from augment import geometry

KINDS = ("mask", "masks", "boxes", "keypoints")
# pixel formats, their normalised twins (coordinates divided by the width and height), and
# "yolo", which is normalised cxcywh
BOX_FORMATS = ("xyxy", "xywh", "cxcywh", "xyxyn", "xywhn", "cxcywhn", "yolo")


def check_box_format(box_format: str) -> str:
    if box_format not in BOX_FORMATS:
        raise ValueError(
            f"box_format must be one of {', '.join(BOX_FORMATS)} (an 'n' at the end: "
            f"normalised by the image's width and height; 'yolo' is cxcywhn); got {box_format!r}"
        )
    return box_format


def _split(box_format: str) -> tuple[str, bool]:
    if box_format == "yolo":
        return "cxcywh", True
    if box_format.endswith("n"):
        return box_format[:-1], True
    return box_format, False


def to_xyxy(boxes: np.ndarray, box_format: str, shape: tuple[int, int]) -> np.ndarray:
    """``boxes`` (N x 4) in ``box_format`` for an image of ``shape`` as float64 pixel xyxy."""
    base, normalised = _split(box_format)
    b = np.array(boxes, dtype=np.float64, copy=True).reshape(-1, 4)
    if normalised:
        h, w = shape
        b[:, 0::2] *= w
        b[:, 1::2] *= h
    if base == "xywh":
        b[:, 2:] += b[:, :2]
    elif base == "cxcywh":
        half = b[:, 2:] / 2.0
        b[:, 2:] = b[:, :2] + half
        b[:, :2] -= half
    return b


def from_xyxy(boxes: np.ndarray, box_format: str, shape: tuple[int, int]) -> np.ndarray:
    """Pixel xyxy boxes (N x 4) in ``box_format`` for an image of ``shape``, float32."""
    base, normalised = _split(box_format)
    b = np.array(boxes, dtype=np.float64, copy=True).reshape(-1, 4)
    if base == "xywh":
        b[:, 2:] -= b[:, :2]
    elif base == "cxcywh":
        size = b[:, 2:] - b[:, :2]
        b[:, :2] += size / 2.0
        b[:, 2:] = size
    if normalised:
        h, w = shape
        b[:, 0::2] /= w
        b[:, 1::2] /= h
    return b.astype(np.float32)


def continuous(m: geometry.Entries) -> geometry.Entries:
    """The map ``m`` (pixel centres on integers) in continuous coordinates (centres at
    ``j + 0.5``): ``T(+0.5) . m . T(-0.5)``."""
    a, b, c, d, e, f = m
    return a, b, c + 0.5 - 0.5 * (a + b), d, e, f + 0.5 - 0.5 * (d + e)


def map_boxes(
    xyxy: np.ndarray, m: geometry.Entries, out_shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel xyxy boxes through the map ``m`` (pixel-centre convention) onto an output of
    ``out_shape``: the boxes enclosing the mapped corners, clipped to the output, and each
    one's visibility (clipped area / mapped area; a box of no area: 1 inside, 0 outside)."""
    a, b, c, d, e, f = continuous(m)
    x0, y0, x1, y1 = xyxy[:, 0], xyxy[:, 1], xyxy[:, 2], xyxy[:, 3]
    if b == 0 and d == 0:  # axis-aligned (flips, crops, scales): two corners say it all
        xs = np.stack((a * x0 + c, a * x1 + c))
        ys = np.stack((e * y0 + f, e * y1 + f))
    elif a == 0 and e == 0:  # quarter turns
        xs = np.stack((b * y0 + c, b * y1 + c))
        ys = np.stack((d * x0 + f, d * x1 + f))
    else:
        cx = np.stack((x0, x1, x0, x1))
        cy = np.stack((y0, y0, y1, y1))
        xs, ys = a * cx + b * cy + c, d * cx + e * cy + f
    mapped = np.stack((xs.min(0), ys.min(0), xs.max(0), ys.max(0)), axis=1)
    h, w = out_shape
    clipped = np.empty_like(mapped)
    np.clip(mapped[:, 0::2], 0.0, w, out=clipped[:, 0::2])
    np.clip(mapped[:, 1::2], 0.0, h, out=clipped[:, 1::2])
    area = (mapped[:, 2] - mapped[:, 0]) * (mapped[:, 3] - mapped[:, 1])
    kept = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    inside = (mapped == clipped).all(axis=1) & (mapped[:, 0] < w) & (mapped[:, 1] < h)
    with np.errstate(divide="ignore", invalid="ignore"):
        visibility = np.where(area > 0, kept / np.where(area > 0, area, 1.0), inside * 1.0)
    return clipped, visibility


def map_points(
    points: np.ndarray, m: geometry.Entries, out_shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints (N x 2, continuous x, y) through ``m`` (pixel-centre convention): the mapped
    points and whether each lies in the output (``0 <= x < W``, ``0 <= y < H``)."""
    a, b, c, d, e, f = continuous(m)
    x, y = points[:, 0], points[:, 1]
    moved = np.stack((a * x + b * y + c, d * x + e * y + f), axis=1)
    h, w = out_shape
    inside = (moved[:, 0] >= 0) & (moved[:, 0] < w) & (moved[:, 1] >= 0) & (moved[:, 1] < h)
    return moved, inside


def warp_mask(
    mask: np.ndarray,
    pending,
    kernel: str | None = None,
    antialias: bool = True,
    fill: float = 0,
) -> np.ndarray:
    """``mask`` (H x W or H x W x C, integer, bool or float32) resampled by ``pending`` (a
    ``warp_plan.PendingWarp``: its matrix, output shape and border): nearest for integer and
    bool masks, the image's interpolation for float32 ones; ``fill`` where the border is
    "constant"."""
    m, shape, border = pending.entries, pending.shape, pending.border
    if mask.dtype == np.float32:
        return F._affine(
            mask, m, shape, pending.interpolation, border, float(fill), kernel, antialias, None
        )
    src = mask if mask.ndim == 3 else mask[:, :, None]
    h, w, c = src.shape
    raw = np.ascontiguousarray(src).view(np.uint8).reshape(h, w, -1)  # bytes as channels
    fill_bytes = np.array(fill, dtype=mask.dtype).reshape(1).view(np.uint8)
    uniform = border != "constant" or (fill_bytes == fill_bytes[0]).all()
    byte_fill = float(fill_bytes[0]) if uniform else 0.0
    out = F._affine(raw, m, shape, "nearest", border, byte_fill, kernel, False, None)
    out = out.reshape(*shape, -1).view(mask.dtype).reshape(*shape, c)
    if not uniform:  # a fill whose bytes differ (int32 250): where the border filled, set it
        ones = np.ones((h, w), dtype=np.uint8)
        inside = F._affine(ones, m, shape, "nearest", border, 0.0, kernel, False, None)
        out[inside.reshape(shape) == 0] = fill
    return out if mask.ndim == 3 else out[:, :, 0]
