"""A sample's targets: read and checked (``SampleTargets.read``), moved by each warp the image
takes (``move``), and given back in the sample's own format (``result``); batched by
``augment.loading.target_batch``.

A sample is a dict with ``"image"`` and any of the named kinds (``targets.KINDS``):

- ``mask``: one array H x W or H x W x C (integer, bool or float32), the image's height and
  width; batched into N x H x W (or N x C x H x W, as images);
- ``masks``: K masks H x W (a list, or an array K x H x W), K may differ per sample;
- ``boxes``: N x 4 in ``box_format``; per-box fields (``box_fields``, default ``labels``)
  are dropped with the boxes that leave the view;
- ``keypoints``: N x 2 (x, y) or N x 3 (x, y, visibility);

and any other key, passed through as it is. Nothing is guessed from shapes: a key's name
says what it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from augment.ops import box_moves
from augment.ops import functional as F
from augment.ops import targets as T
from augment.ops.images import BadImageError

KEYPOINT_MODES = ("mark", "drop")
LISTED = ("masks", "boxes", "keypoints")  # kinds whose count varies per sample


class BadTargetError(BadImageError):
    """A sample's target that cannot be used (a mask of the wrong size, NaN boxes...).
    A ``BadImageError``, so the loader's ``on_error`` treats it as a bad image."""

    def __init__(self, source, cause: str):
        if callable(source):  # a function giving the name: made only when it is needed
            source = source()
        ValueError.__init__(self, f"bad target in {source}: {cause}")
        self.source, self.cause = source, cause

    def __reduce__(self):
        return BadTargetError, (self.source, self.cause)


@dataclass(frozen=True)
class TargetOptions:
    """How targets are read and kept (``Compose``'s target arguments, see there)."""

    box_format: str = "xyxy"
    min_visibility: float = 0.0
    min_size: float = 0.0
    keypoints: str = "mark"
    mask_fill: float = 0
    box_fields: tuple[str, ...] = ("labels",)
    keypoint_fields: tuple[str, ...] = ()

    def __post_init__(self):
        T.check_box_format(self.box_format)
        v = F._check_finite(self.min_visibility, "min_visibility")
        if not 0 <= v <= 1:
            raise ValueError(f"min_visibility must be in [0, 1], got {self.min_visibility}")
        if F._check_finite(self.min_size, "min_size") < 0:
            raise ValueError(f"min_size must be >= 0 pixels, got {self.min_size}")
        F._check_choice(self.keypoints, "keypoints", KEYPOINT_MODES)
        F._check_finite(self.mask_fill, "mask_fill")
        for name in ("box_fields", "keypoint_fields"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(k, str) for k in value):
                raise ValueError(f"{name} must be a tuple of key names, got {value!r}")
            object.__setattr__(self, name, tuple(value))

    def listed(self, key: str) -> bool:
        """Whether ``key``'s length varies per sample (batched as a list, or padded)."""
        return key in LISTED or key in self.box_fields or key in self.keypoint_fields


def kinds_of(sample: dict) -> tuple[str, ...]:
    """The target kinds a sample dict holds."""
    return tuple(filter(sample.__contains__, T.KINDS))


def has_kinds(sample: dict) -> bool:
    """Whether a sample dict holds any target kind."""
    return not _KIND_SET.isdisjoint(sample)


_KIND_SET = frozenset(T.KINDS)


def check_names(names, what: str = "targets") -> tuple[str, ...]:
    """``targets=``: the names of a tuple sample's items after the image."""
    if isinstance(names, str) or not isinstance(names, Sequence) or not names:
        raise ValueError(
            f"{what} must be a non-empty tuple of names for the items after the image, such as "
            f"('mask',) or ('boxes', 'labels'); known kinds: {', '.join(T.KINDS)}; got {names!r}"
        )
    if not all(isinstance(n, str) and n and n != "image" for n in names):
        raise ValueError(f"{what} must be names (str, not 'image'), got {names!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"{what} names must differ, got {names!r}")
    return tuple(names)


def _array(value, name: str, source: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if type(value).__module__.split(".")[0] == "torch":
        return value.detach().cpu().numpy()
    if type(value).__module__.split(".")[0] == "PIL":
        return np.asarray(value)
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise BadTargetError(source, f"{name} is not an array: {exc}") from None


class SampleTargets:
    """One sample's targets as they move: masks as arrays, keypoints as float64 x, y with
    whether each stayed in the frame, boxes as float64 pixel xyxy (``augment.ops.box_moves``:
    each warp maps a box to the box enclosing its corners, clipped to the image; with
    ``min_visibility``, the fraction of its area still in view is tracked), or, read
    ``batched``, as given with the warps they are to take, moved later with the rest of a
    batch's. A box is kept when its clipped width and height are above 0 (at least
    ``min_size`` where set) and its visibility at least ``min_visibility``."""

    # what a sample without that kind holds (set on the instance where it has it)
    boxes = box_vis = points = point_vis = inside = None
    batched = False  # boxes wait for box_moves.move_boxes with the batch's, else move now
    mask_out = None  # where the next warp of "mask" may write (a batch's slot)

    def __init__(self, options: TargetOptions, shape: tuple[int, int], source="the sample"):
        self.options, self.shape, self.read_shape, self.source = options, shape, shape, source
        self.masks: dict[str, np.ndarray] = {}
        self.warps: list = []  # (entries, shape) of each warp, for boxes read batched

    @classmethod
    def read(
        cls,
        sample: dict,
        shape: tuple[int, int],
        options: TargetOptions,
        source,
        batched: bool = False,
    ) -> SampleTargets:
        """The targets of ``sample`` (a dict) for an image of ``shape``, checked: a
        ``BadTargetError`` names ``source`` (a name, or a function that gives it) and what
        is wrong. ``batched``: the boxes wait, as given, to be checked and moved with the
        rest of a batch's (``box_moves.move_boxes``; their shape is checked here); else
        they are checked now and move with each warp, as one sample's do best."""
        self = cls(options, shape, source)
        self.batched = batched
        if "mask" in sample:
            mask = sample["mask"]
            if type(mask) is not np.ndarray:
                if type(mask).__module__.startswith("torch") and mask.ndim == 3:
                    mask = mask.permute(1, 2, 0)  # C x H x W, as torch images: H x W x C
                mask = _array(mask, "mask", source)
            _mask(mask, "mask", source)
            if mask.shape[:2] != shape:
                raise BadTargetError(
                    source, f"the mask is {_size(mask.shape)} but the image is "
                    f"{_size(shape)}",
                )  # fmt: skip
            self.masks["mask"] = mask
        if "masks" in sample:
            self.masks["masks"] = _instance_masks(sample["masks"], shape, source)
        if "boxes" in sample:
            boxes = _array(sample["boxes"], "boxes", source)
            if boxes.size == 0:
                boxes = _NO_BOXES
            else:
                box_moves.check_shape(boxes, source)
                if not batched:
                    boxes = box_moves.prepared(boxes, options.box_format, shape, source)
            self.boxes = boxes
            _check_fields(sample, options.box_fields, len(boxes), "boxes", source)
        if "keypoints" in sample:
            self.points, self.point_vis = _points(sample["keypoints"], source)
            self.inside = np.ones(len(self.points), dtype=bool)
            _check_fields(sample, options.keypoint_fields, len(self.points), "keypoints", source)
        return self

    def move(self, pending, kernel: str | None, antialias: bool) -> None:
        """Follow one warp of the image (a ``PendingWarp``, drawn for this shape)."""
        fill = self.options.mask_fill
        for key, mask in self.masks.items():
            if key == "masks":  # K x H x W: one warp of K channels
                stacked = np.ascontiguousarray(mask.transpose(1, 2, 0))
                if mask.shape[0]:
                    moved = T.warp_mask(stacked, pending, kernel, antialias, fill)
                    self.masks[key] = np.ascontiguousarray(
                        moved.reshape(*pending.shape, -1).transpose(2, 0, 1)
                    )
                else:
                    self.masks[key] = np.zeros((0, *pending.shape), dtype=mask.dtype)
            else:
                out, self.mask_out = self.mask_out, None
                self.masks[key] = T.warp_mask(mask, pending, kernel, antialias, fill, out)
        if self.boxes is not None:
            if self.batched:
                self.warps.append((pending.entries, pending.shape))
            elif len(self.boxes):  # the arithmetic of box_moves._through, for one sample
                mapped = T.map_boxes(self.boxes, pending.entries, pending.shape)
                if self.options.min_visibility == 0:
                    self.boxes = T.clip_boxes(mapped, pending.shape)
                else:  # clipped area / mapped area, over all warps
                    self.boxes = T.clip_boxes(mapped.copy(), pending.shape)
                    area = T.box_areas(mapped)
                    seen = np.divide(
                        T.box_areas(self.boxes), area, np.zeros_like(area), where=area > 0
                    )
                    self.box_vis = seen if self.box_vis is None else self.box_vis * seen
        if self.points is not None and len(self.points):
            self.points, inside = T.map_points(self.points, pending.entries, pending.shape)
            self.inside &= inside
        self.shape = pending.shape

    def result(self, sample: dict, boxes_later: list | None = None) -> dict:
        """``sample`` with its targets replaced by where they moved to: boxes (float32, in
        ``box_format``) and their fields dropped where too little stays in view, keypoints
        out of the frame marked invisible or dropped (``keypoints``). ``boxes_later``:
        where boxes read ``batched`` wait, a list to which ``(self, the result)`` is added
        for ``box_moves.move_boxes`` to finish them with the batch's."""
        options, out = self.options, dict(sample)
        if self.masks:
            out.update(self.masks)
        if self.points is not None:
            points = self.points.astype(np.float32)
            if options.keypoints == "drop":
                keep = self.inside
                if self.point_vis is not None:
                    points = np.column_stack((points, self.point_vis))[keep]
                else:
                    points = points[keep]
                box_moves.take(out, options.keypoint_fields, keep)
            else:
                visible = (
                    self.inside if self.point_vis is None else self.inside & (self.point_vis > 0)
                )
                points = np.column_stack((points, visible.astype(np.float32)))
            out["keypoints"] = points
        if self.boxes is not None:
            if self.batched:
                boxes_later.append((self, out))
            elif len(self.boxes):
                box_moves.give_back(self.boxes, self.box_vis, out, options, self.shape)
            else:
                out["boxes"] = np.zeros((0, 4), dtype=np.float32)
        return out


def _size(shape) -> str:
    return "x".join(map(str, shape))


def _mask(mask: np.ndarray, name: str, source: str) -> np.ndarray:
    if mask.ndim not in (2, 3) or mask.size == 0:
        raise BadTargetError(
            source, f"{name} must be H x W or H x W x C, got shape {_size(mask.shape)}"
        )
    if mask.dtype.kind not in "biu" and mask.dtype != np.float32:
        raise BadTargetError(
            source,
            f"{name} dtype {mask.dtype} is not accepted: integer or bool (class maps, warped "
            "nearest-neighbour) or float32 (warped as the image)",
        )
    return mask


def _instance_masks(value, shape, source: str) -> np.ndarray:
    if isinstance(value, (list, tuple)):
        arrays = [_array(v, "masks", source) for v in value]
        if not arrays:
            return np.zeros((0, *shape), dtype=np.uint8)
        for i, a in enumerate(arrays):
            if a.shape != shape:
                raise BadTargetError(
                    source, f"masks[{i}] is {_size(a.shape)}, not the image's {_size(shape)}"
                )
        value = np.stack(arrays)
    masks = _array(value, "masks", source)
    if masks.ndim != 3 or masks.shape[1:] != shape:
        raise BadTargetError(
            source,
            f"masks must be K masks of the image's {_size(shape)} (a list, or K x H x W), got "
            f"shape {_size(masks.shape)}",
        )
    return _mask(masks, "masks", source) if masks.size else masks


_NO_BOXES = np.zeros((0, 4))


def _points(value, source: str) -> tuple[np.ndarray, np.ndarray | None]:
    points = _array(value, "keypoints", source)
    if points.size == 0:
        return np.zeros((0, 2)), None
    if points.ndim != 2 or points.shape[1] not in (2, 3) or points.dtype.kind not in "iufb":
        raise BadTargetError(
            source,
            "keypoints must be N x 2 (x, y) or N x 3 (x, y, visibility), got "
            f"{points.dtype} of shape {_size(points.shape)}",
        )
    xy = points[:, :2].astype(np.float64)
    if not np.isfinite(xy).all():
        row = int(np.argwhere(~np.isfinite(xy))[0, 0])
        raise BadTargetError(source, f"keypoints[{row}] is not finite: {points[row].tolist()}")
    return xy, (points[:, 2].astype(np.float32) if points.shape[1] == 3 else None)


def _check_fields(sample: dict, fields, n: int, kind: str, source: str) -> None:
    for key in fields:
        if key in sample and len(sample[key]) != n:
            raise BadTargetError(
                source, f"{key!r} has {len(sample[key])} entries but there are {n} {kind}"
            )


def as_dict(item, names: tuple[str, ...] | None, source: str) -> dict:
    """A sample as a dict: a dict as it is; a tuple ``(image, *items)`` with its items named
    by ``names`` (``targets=``), any beyond them kept under ``"#<position>"``."""
    if isinstance(item, dict):
        if "image" not in item:
            raise ValueError(f"{source} is a dict without an 'image' key")
        return item
    if names is None:
        raise ValueError(
            f"{source} is a {type(item).__name__}: name what follows the image with "
            "targets=('mask',) (or ('boxes', 'labels'), ...), or give a dict"
        )
    if len(item) < 1 + len(names):
        raise ValueError(
            f"{source} has {len(item)} items, fewer than the image and targets={names!r}"
        )
    d = {"image": item[0], **dict(zip(names, item[1:]))}
    for i in range(1 + len(names), len(item)):
        d[f"#{i}"] = item[i]
    return d


def as_tuple(d: dict, names: tuple[str, ...]) -> tuple:
    """``as_dict``'s tuple back, in its order."""
    extra = sorted((k for k in d if k.startswith("#")), key=lambda k: int(k[1:]))
    return (d["image"], *(d[n] for n in names), *(d[k] for k in extra))


def call_sample(compose, item, rng: np.random.Generator, names, source: str = "the sample"):
    """``compose`` (an ``augment.ops.compose.Compose``) on a whole sample: a dict, or a
    tuple named by ``names``; the same structure back, the targets moved with the image."""
    sample = as_dict(item, names, source)
    img = sample["image"]
    F.check_image(img, "the sample's image")
    shape = img.shape[:2]
    kinds = kinds_of(sample)
    if kinds:
        compose.check_targets(kinds)
        moving = SampleTargets.read(sample, shape, compose.target_options, source)
        image = compose.finish(img, compose.plan(shape, rng), rng, None, moving)
        out = moving.result(sample)
    else:  # nothing to move
        image = compose.finish(img, compose.plan(shape, rng), rng)
        out = dict(sample)
    out["image"] = image
    return out if isinstance(item, dict) else as_tuple(out, names)
