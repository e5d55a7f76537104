"""Targets that move with the image: the arithmetic.

A mask is resampled by the image's own folded map (``warp_plan.PendingWarp``): the same
matrix, the same output size, the same border rule. An integer or boolean mask is sampled
nearest-neighbour, so no class value appears that was not there; it goes through the kernel
as bytes (an int32 map is four uint8 channels, and nearest moves whole pixels, so the bytes
reassemble exactly). A float32 mask is resampled as the image is (bilinear, antialiased).

Boxes and keypoints are mapped analytically, never rasterised. They live in continuous pixel
coordinates: pixel ``(row i, column j)`` covers ``[j, j + 1) x [i, i + 1)``, so the box
``(0, 0, W, H)`` is the whole image (the torchvision and albumentations convention) and the
centre of pixel ``j`` is ``j + 0.5``; the matrices of ``augment.ops.geometry`` put pixel centres
on integers, and ``continuous`` converts. A box's four corners are mapped and the box that
encloses them taken (``map_boxes``), then clipped to the output; its visibility is the
clipped area over the mapped area.
"""

from __future__ import annotations

import numpy as np

from augment.ops import functional as F
from augment.ops import geometry

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
    if box_format == "xyxy":
        return boxes.astype(np.float64)
    b = np.array(boxes, dtype=np.float64, copy=True).reshape(-1, 4)
    base, normalised = _split(box_format)
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
    if box_format == "xyxy":
        return boxes.astype(np.float32)
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


def map_boxes(xyxy: np.ndarray, m: geometry.Entries, out_shape: tuple[int, int]) -> np.ndarray:
    """Pixel xyxy boxes (N x 4, float64) through the map ``m`` (pixel-centre convention)
    onto an output of ``out_shape``: the boxes enclosing the mapped corners, not clipped.

    The enclosing box is linear in the box: the smallest ``a * x + b * y`` over the corners
    takes ``x0`` where ``a >= 0`` and ``x1`` where not (the same for ``b``, ``y``), so all
    boxes are one 4 x 4 product, whatever the rotation."""
    a, b, c, d, e, f = continuous(m)
    pa, pb, pd, pe = max(a, 0.0), max(b, 0.0), max(d, 0.0), max(e, 0.0)
    na, nb, nd, ne = min(a, 0.0), min(b, 0.0), min(d, 0.0), min(e, 0.0)
    # rows: x0, y0, x1, y1 in; columns: x0, y0, x1, y1 out
    k = np.array((pa, pd, na, nd, pb, pe, nb, ne, na, nd, pa, pd, nb, ne, pb, pe)).reshape(4, 4)
    mapped = xyxy @ k
    mapped += np.array((c, f, c, f))
    return mapped


def clip_boxes(boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``boxes`` (pixel xyxy) clipped to an image of ``shape``, in place."""
    h, w = shape
    np.maximum(boxes, 0.0, out=boxes)
    np.minimum(boxes, np.array((w, h, w, h), dtype=np.float64), out=boxes)
    return boxes


def box_areas(boxes: np.ndarray) -> np.ndarray:
    wh = boxes[:, 2:] - boxes[:, :2]
    return wh[:, 0] * wh[:, 1]


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
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``mask`` (H x W or H x W x C, integer, bool or float32) resampled by ``pending`` (a
    ``warp_plan.PendingWarp``: its matrix, output shape and border): nearest for integer and
    bool masks, the image's interpolation for float32 ones; ``fill`` where the border is
    "constant". ``out`` (a batch's slot) may receive the pixels of a 2-D uint8 mask warped
    by the opencv kernel; elsewhere it is left alone and the result is a new array."""
    m, shape, border, inverse = pending.entries, pending.shape, pending.border, pending.inverse()
    if mask.dtype == np.float32:
        return F._affine(
            mask, m, shape, pending.interpolation, border, float(fill), kernel, antialias, None,
            inverse,
        )  # fmt: skip
    if mask.dtype == np.uint8 and (border != "constant" or 0 <= fill <= 255):
        moved = F._nearest_u8(mask, inverse, shape, border, fill, kernel, out)
        if moved is not None:
            return moved
        return F._affine(
            mask, m, shape, "nearest", border, float(fill), kernel, False, None, inverse
        )
    src = mask if mask.ndim == 3 else mask[:, :, None]
    h, w, c = src.shape
    raw = np.ascontiguousarray(src).view(np.uint8).reshape(h, w, -1)  # bytes as channels
    fill_bytes = np.array(fill, dtype=mask.dtype).reshape(1).view(np.uint8)
    uniform = border != "constant" or (fill_bytes == fill_bytes[0]).all()
    byte_fill = float(fill_bytes[0]) if uniform else 0.0
    res = F._affine(raw, m, shape, "nearest", border, byte_fill, kernel, False, None, inverse)
    res = res.reshape(*shape, -1).view(mask.dtype).reshape(*shape, c)
    if not uniform:  # a fill whose bytes differ (int32 250): where the border filled, set it
        ones = np.ones((h, w), dtype=np.uint8)
        inside = F._affine(ones, m, shape, "nearest", border, 0.0, kernel, False, None, inverse)
        res[inside.reshape(shape) == 0] = fill
    return res if mask.ndim == 3 else res[:, :, 0]
