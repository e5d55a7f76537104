"""Boxes moved with the image: checked, mapped through each warp, clipped, dropped where
too little stays in view, and given back in their format.

One sample's (a ``Compose`` called on it) are checked when read (``prepared``), move with
each warp the image takes before its pixels are resampled (``targets.map_boxes`` and
``clip_boxes``) and are given back at the end (``give_back``). A batch's wait in their
``SampleTargets`` (as given, their shape checked, with the warps the image took) until
``move_boxes`` takes them all once the batch's samples are made: one set of numpy calls
for the batch rather than one per sample (a numpy call costs 1-2 us between two image
warps, far more than the arithmetic of 50 boxes). Both go through the same arithmetic
(each sample's boxes their own matrix product, then the same operations row by row), so a
box lands on the same float32 values alone and in a batch of any size.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from augment.ops import targets as T

_SIZES = np.array([[-1.0, 0.0], [0.0, -1.0], [1.0, 0.0], [0.0, 1.0]])  # xyxy -> w, h


def _error(source, cause: str):
    from augment.ops.sample_targets import BadTargetError

    return BadTargetError(source, cause)


def check_shape(boxes: np.ndarray, source) -> None:
    """A ``BadTargetError`` naming ``source`` (a name, or a function giving it) unless
    ``boxes`` is N x 4 numbers; their values are checked by ``move_boxes``."""
    if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.dtype.kind not in "iuf":
        shape = "x".join(map(str, boxes.shape))
        raise _error(source, f"boxes must be N x 4 numbers, got {boxes.dtype} of shape {shape}")


def check_values(boxes: np.ndarray, box_format: str, shape, source) -> None:
    """A ``BadTargetError`` naming ``source`` and the first bad row where a box of
    ``boxes`` (N x 4 numbers, ``box_format``, an image of ``shape``) is not finite or runs
    backwards."""
    if not len(boxes):
        return
    xyxy = T.to_xyxy(boxes, box_format, shape)
    finite = np.isfinite(boxes).all(axis=1)
    if not finite.all():
        row = int(np.argmin(finite))
        raise _error(source, f"boxes[{row}] is not finite: {boxes[row].tolist()}")
    bad = (xyxy[:, 2:] < xyxy[:, :2]).any(axis=1)
    if bad.any():
        row = int(np.argmax(bad))
        raise _error(
            source,
            f"boxes[{row}] = {boxes[row].tolist()} has its far edge before its near one in "
            f"box_format {box_format!r} (x1 < x0 or y1 < y0, or a negative size)",
        )
    if not np.isfinite(xyxy @ _SIZES).all():
        raise _error(source, "boxes are too large: a width or height overflows (near 1e308)")


def move_boxes(items: list, options, checked: bool = False) -> list[tuple[int, Exception]]:
    """Finish the boxes of ``items``, pairs of a ``SampleTargets`` holding boxes and the
    sample's result dict: each dict gets its ``boxes`` (float32, ``options.box_format``)
    and loses the rows of its ``options.box_fields`` whose boxes were dropped (see
    ``SampleTargets``). Returns ``(position in items, BadTargetError)`` for each item
    whose boxes are not finite or run backwards; its dict is left as it was. ``checked``:
    the values are known to be good."""
    full = []
    for i, (moving, out) in enumerate(items):
        if len(moving.boxes):
            full.append(i)
        else:
            out["boxes"] = np.zeros((0, 4), dtype=np.float32)
    if not full:
        return []
    chosen = [items[i] for i in full]
    counts = [len(moving.boxes) for moving, _ in chosen]
    xyxy = _as_xyxy(chosen, counts, options.box_format)
    if not checked and not _plausible(xyxy):
        return _bad_ones_apart(items, full, options)
    if len({len(moving.warps) for moving, _ in chosen}) > 1:  # rare: one sample at a time
        for pair in chosen:
            move_boxes([pair], options, checked=True)
        return []
    boxes, vis, track = xyxy, None, options.min_visibility > 0
    for step in range(len(chosen[0][0].warps)):
        warps = [moving.warps[step] for moving, _ in chosen]
        maps = np.array([_box_map(*w) for w in warps])
        boxes, vis = _through(boxes, vis, maps, counts, track)
    _give_back(boxes, vis, chosen, counts, options)
    return []


def prepared(boxes: np.ndarray, box_format: str, shape, source) -> np.ndarray:
    """One sample's boxes (N x 4 numbers, N > 0, ``box_format``, an image of ``shape``)
    as float64 pixel xyxy, checked: a ``BadTargetError`` naming ``source`` where one is not
    finite or runs backwards."""
    if box_format == "xyxy":  # contiguous float64, as a batch's: the same matrix product
        xyxy = np.ascontiguousarray(boxes, dtype=np.float64)
    else:
        xyxy = T.to_xyxy(boxes, box_format, shape)
    if not _plausible(xyxy):
        check_values(boxes, box_format, shape, source)
    return xyxy


def give_back(xyxy: np.ndarray, vis, out: dict, options, shape) -> None:
    """One sample's boxes, moved, into ``out`` as a batch's go: the ones that stay
    (``_kept``) in ``box_format`` for an image of ``shape``, the rows of the box fields to
    match."""
    keep = _kept(xyxy, vis, options)
    if keep is not None:
        xyxy = xyxy[keep]
        take(out, options.box_fields, keep)
    out["boxes"] = T.from_xyxy(xyxy, options.box_format, shape)


def _plausible(xyxy: np.ndarray) -> bool:
    """Whether every box is finite and runs forwards (NaN or inf anywhere makes a width
    or height NaN or inf)."""
    sizes = xyxy @ _SIZES
    return sizes.min() >= 0 and sizes.max() < math.inf


def _kept(boxes: np.ndarray, vis, options) -> np.ndarray | None:
    """Which boxes (clipped pixel xyxy) stay: some area, at least ``min_size`` wide and
    high, and ``min_visibility`` in view; None where all do."""
    if options.min_size > 0:
        wh = boxes @ _SIZES  # exact: each a difference of two coordinates
        keep = np.minimum(wh[:, 0], wh[:, 1]) >= options.min_size
    else:  # some area: x1 > x0 and y1 > y0
        forward = boxes[:, 2:] > boxes[:, :2]
        if vis is None:
            return None if forward.all() else forward[:, 0] & forward[:, 1]
        keep = forward[:, 0] & forward[:, 1]
    if vis is not None:
        keep &= vis >= options.min_visibility
    return None if keep.all() else keep


def _per_row(rows, counts: list[int]) -> np.ndarray:
    """``rows`` (one per sample) repeated for each of its boxes; a single row stays one row
    (it broadcasts)."""
    array = np.asarray(rows, dtype=np.float64)
    return array if len(counts) == 1 else np.repeat(array, counts, axis=0)


def _as_xyxy(items: list, counts: list[int], box_format: str) -> np.ndarray:
    """The boxes of ``items`` stacked, as float64 pixel xyxy."""
    raw = items[0][0].boxes if len(items) == 1 else np.concatenate([m.boxes for m, _ in items])
    if box_format == "xyxy":
        return np.ascontiguousarray(raw, dtype=np.float64)
    hw = _per_row([moving.read_shape for moving, _ in items], counts)
    return T.to_xyxy(raw, box_format, (hw[:, :1], hw[:, 1:]))


def _box_map(entries, shape) -> list[float]:
    """``targets.map_boxes``' map of one warp as a row, worked out as it does (the same
    values, signed zeros too): its 4 x 4 matrix, the offsets ``(c, f, c, f)`` and the
    output's bounds ``(w, h, w, h)`` (``targets.clip_boxes``')."""
    a, b, c, d, e, f = T.continuous(entries)
    pa, pb, pd, pe = max(a, 0.0), max(b, 0.0), max(d, 0.0), max(e, 0.0)
    na, nb, nd, ne = min(a, 0.0), min(b, 0.0), min(d, 0.0), min(e, 0.0)
    h, w = shape
    return [
        pa, pd, na, nd, pb, pe, nb, ne, na, nd, pa, pd, nb, ne, pb, pe,
        c, f, c, f, w, h, w, h,
    ]  # fmt: skip


def _through(boxes, vis, maps, counts, track: bool):
    """Stacked boxes (pixel xyxy, ``counts`` per sample) through one warp each (``maps``:
    a row of ``_box_map`` per sample): the boxes enclosing their mapped corners, clipped to
    the output (``targets.map_boxes`` and ``clip_boxes``, which one sample's take, the same
    operations on the same values); with ``track``, the visibility (clipped area over
    mapped area) times that of earlier warps."""
    k = maps[:, :16].reshape(-1, 4, 4)
    mapped, start = np.empty((len(boxes), 4)), 0
    for i, n in enumerate(counts):  # each sample's own product: a stack's may sum otherwise
        np.matmul(boxes[start : start + n], k[i], out=mapped[start : start + n])
        start += n
    rest = _per_row(maps[:, 16:], counts)  # offsets (c, f, c, f), bounds (w, h, w, h)
    mapped += rest[:, :4]
    clipped = np.maximum(mapped, 0.0, out=None if track else mapped)  # mapped: for vis
    np.minimum(clipped, rest[:, 4:], out=clipped)
    if track:
        area = T.box_areas(mapped)
        seen = np.divide(T.box_areas(clipped), area, np.zeros_like(area), where=area > 0)
        vis = seen if vis is None else vis * seen
    return clipped, vis


def _give_back(boxes, vis, items, counts, options) -> None:
    """The boxes that stay (``_kept``), each sample's in its dict in ``box_format`` with
    its box fields' rows to match."""
    keep = _kept(boxes, vis, options)
    shapes = [moving.shape for moving, _ in items]  # where the last warp left them
    if options.box_format.endswith("n") or options.box_format == "yolo":
        hw = _per_row(shapes, counts)
        shape = (hw[:, :1], hw[:, 1:])
    else:
        shape = None  # pixel formats do not read it
    if keep is None:
        given = T.from_xyxy(boxes, options.box_format, shape)
        kept = counts
    else:
        if shape is not None:
            shape = (shape[0][keep], shape[1][keep])
        given = T.from_xyxy(boxes[keep], options.box_format, shape)
        starts = [0, *itertools.accumulate(counts[:-1])]
        kept = np.add.reduceat(keep, starts, dtype=np.intp).tolist()
    first = 0
    for (_, out), k in zip(items, kept):
        out["boxes"] = given[first : first + k]
        first += k
    if kept is not counts:
        for key in options.box_fields:
            _take_rows([out for _, out in items], key, counts, kept, keep)


def _take_rows(outs: list[dict], key: str, counts: list[int], kept: list[int], keep) -> None:
    """The rows ``keep`` (over all samples' boxes) of field ``key`` of each dict in ``outs``
    (``counts`` rows each, ``kept`` of them kept): arrays of one dtype and row shape in one
    indexing for the batch, anything else sample by sample."""
    values = [out.get(key) for out in outs]
    first = values[0]
    if type(first) is np.ndarray and all(
        type(v) is np.ndarray and v.dtype == first.dtype and v.shape[1:] == first.shape[1:]
        for v in values
    ):
        rows = np.concatenate(values)[keep]
        start = 0
        for out, k in zip(outs, kept):
            out[key] = rows[start : start + k]
            start += k
        return
    start = 0
    for out, n, k in zip(outs, counts, kept):
        if k < n:
            take(out, (key,), keep[start : start + n])
        start += n


def take(out: dict, fields, keep: np.ndarray) -> None:
    """Keep the rows ``keep`` of each of ``fields`` in ``out`` (moved instance masks too)."""
    for key in fields:
        if key in out:
            value = out[key]
            if isinstance(value, np.ndarray) or type(value).__module__.startswith("torch"):
                out[key] = value[keep] if len(value) else value
            else:
                out[key] = [v for v, k in zip(value, keep.tolist()) if k]


def _bad_ones_apart(items, full, options) -> list[tuple[int, Exception]]:
    """Each sample's boxes checked alone: the errors of the bad ones, the rest moved."""
    errors, good = [], []
    for i in full:
        moving = items[i][0]
        try:
            check_values(moving.boxes, options.box_format, moving.read_shape, moving.source)
        except ValueError as exc:
            errors.append((i, exc))
        else:
            good.append(items[i])
    if good:
        move_boxes(good, options, checked=True)
    return errors
