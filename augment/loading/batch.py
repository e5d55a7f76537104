"""The unit of work: turn one batch plan into pixels and targets, in whatever process.

``make_batch`` runs in a worker (or in the consumer for the serial backend). It takes each
sample through loading (``read`` and ``decode`` for a staged dataset, ``load`` for a
map-style one, see ``augment.sources.samples``), ``augment`` and ``collate`` before the next, so the
decoded image is still in cache when it is augmented (14% faster than stage by stage over
the batch). The batch buffer (``buffer``: shared memory for the process backend) is made
from the first sample's output; after that, a pipeline that ends with augment's geometric
warp writes each sample straight into its slot (``Compose(out=)``: no allocation, and
``collate`` costs next to nothing), and any other output is copied in ("collate"). Each
stage's time is summed over the batch and reported as one span per stage, the spans laid
end to end in stage order from the batch's start. A sample's randomness comes from (seed,
epoch, index) only (``KeyedRng``), so the output never depends on which worker ran it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from augment.loading import target_batch
from augment.loading.rng import KeyedRng
from augment.loading.watchdog import Lane
from augment.ops import box_moves
from augment.ops import sample_targets as ST
from augment.ops.compose import Compose
from augment.ops.images import BadImageError, as_image
from augment.ops.transforms import GeometricTransform
from augment.ops.warp_plan import SamplePlan
from augment.sources.samples import MapStyle, Staged
from augment.trace.schema import CONSUMER_LANE, Span
from augment.trace.stage_clock import StageClock

ON_ERROR = ("raise", "skip")
_HOST = socket.gethostname()


@dataclass(frozen=True)
class BatchPlan:
    """What to make: batch ``number`` of ``epoch``, from dataset ``indices``."""

    epoch: int
    number: int
    indices: tuple[int, ...]


@dataclass
class BatchResult:
    plan: BatchPlan
    images: np.ndarray | None  # N x H x W x C; None while it sits in shared memory
    targets: list = field(default_factory=list)  # per sample: a tuple or a dict (see samples)
    shape: tuple[int, ...] = ()
    dtype: str = "uint8"
    skipped: list[tuple[str, str]] = field(default_factory=list)
    error: BadImageError | None = None
    spans: list[Span] = field(default_factory=list)  # made by the worker
    pid: int = 0
    worker: int = CONSUMER_LANE  # lane index of the worker that made it
    host: str = ""  # the machine that made it
    node: str = ""  # the cluster node that made it (Ray), where there is one
    lost_on: list[str] = field(default_factory=list)  # nodes it was lost on before (Ray)
    transfer: Span | None = None  # the consumer's cost of receiving it, when a backend has one


@dataclass
class BatchTask:
    """Everything a worker needs, sent to it once: where samples come from (``source``, a
    ``samples.Staged`` or ``samples.MapStyle``), the transform ``(img, rng) -> img`` or None,
    the seed and the error policy."""

    source: Staged | MapStyle
    transform: Callable | None
    seed: int = 0
    on_error: str = "raise"
    # samples with targets (see augment.ops.sample_targets): the names of a tuple's items after
    # the image, the transform that moves targets (a Compose, or the albumentations
    # adapter), how they are kept, and pad_targets
    names: tuple[str, ...] | None = None
    sample_transform: Callable | None = None
    options: ST.TargetOptions = field(default_factory=ST.TargetOptions)
    pad_targets: bool | int = False

    @property
    def dataset(self):
        return self.source.dataset

    def plan(self, rng: np.random.Generator) -> SamplePlan | None:
        """The sample's transform, planned from the image's size (by the decoder, which may
        then decode smaller, see ``ImageFolder(reduced_decode=)``, or from the decoded
        pixels), or None where the transform is not augment's own geometric pipeline."""
        if isinstance(self.transform, (Compose, GeometricTransform)):
            return SamplePlan(self.transform, rng)
        return None

    def augment(
        self,
        img: np.ndarray,
        rng: np.random.Generator,
        index: int,
        planned: SamplePlan | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """The transform's output for ``img``. ``out`` is where the batch wants it: a
        planned warp that ends the pipeline writes its pixels there (and returns ``out``)
        when the shape and dtype match; anything else returns a new array."""
        if self.transform is None:
            return img
        if planned is not None:
            img = planned.finish(img, out)
        else:
            img = self.transform(img, rng)
        return as_image(img, lambda: f"the transform's output for {self.source.name(index)}")

    def has_targets(self, rest) -> bool:
        """Whether a sample's non-image part (``samples.MapStyle.load``'s) holds targets."""
        if type(rest) is dict:
            return ST.has_kinds(rest)
        return self.names is not None and type(rest) is tuple

    def augment_sample(
        self,
        img: np.ndarray,
        rest: dict | tuple,
        rng: np.random.Generator,
        index: int,
        out: np.ndarray | None = None,
        planned: SamplePlan | None = None,
        mask_out: np.ndarray | None = None,
        boxes_later: list | None = None,
    ) -> tuple[np.ndarray, dict]:
        """The image and targets of a sample with targets, moved together; the image into
        ``out`` where it fits (as ``augment``), its ``mask`` into ``mask_out`` where its
        warp can write there (``targets.warp_mask``). ``planned``: the plan the decoder drew
        from the file's size, where it did (the image may then be a smaller decode or a
        region of it, and the targets are the full image's). A bad target is a
        ``BadTargetError``. ``boxes_later``: where a ``Compose``'s boxes wait to be moved
        with the rest of the batch's (``SampleTargets.result``), where given."""

        def name():  # only made for an error message
            return self.source.name(index)

        if type(rest) is dict:
            sample = {"image": img, **rest}
        else:
            sample = ST.as_dict((img, *rest), self.names, name())
        t = self.sample_transform
        t.check_targets(ST.kinds_of(sample))
        if isinstance(t, Compose):
            plan = None if planned is None else planned.plan
            shape = img.shape[:2] if plan is None else plan.shape
            batched = boxes_later is not None
            moving = ST.SampleTargets.read(sample, shape, self.options, name, batched)
            moving.mask_out = mask_out
            img = t.finish(img, t.plan(shape, rng) if plan is None else plan, rng, out, moving)
            result = moving.result(sample, boxes_later)
        else:  # the albumentations adapter: it checks what it is given against the image
            checked = {k: v for k, v in sample.items() if k != "keypoints"}  # formats vary
            ST.SampleTargets.read(checked, img.shape[:2], self.options, name)
            result = t(sample, rng)
            img = result["image"]
        del result["image"]
        img = as_image(img, lambda: f"the transform's output for {name()}")
        return img, result


class _MaskSlots:
    """A batch's ``mask`` field as one array, each sample's slot written by its mask's warp
    where the warp can (``targets.warp_mask``), else copied there: no array per sample and
    no stack. Made from the first sample's mask; given up (``collate`` stacks the samples'
    masks, and says what differs) where a sample has none or one of another shape or
    dtype."""

    __slots__ = ("n", "array", "usable", "given")

    def __init__(self, n: int):
        self.n, self.array, self.usable = n, None, True
        self.given = None  # the slot handed out last

    def slot(self, i: int) -> np.ndarray | None:
        self.given = self.array[i] if self.usable and self.array is not None else None
        return self.given

    def keep(self, i: int, sample_targets) -> None:
        """Sample ``i``'s mask (in its result dict) into slot ``i``, unless it is there."""
        if not self.usable:
            return
        mask = sample_targets.get("mask") if type(sample_targets) is dict else None
        if type(mask) is not np.ndarray or (self.array is None and i != 0):
            self.usable = False
            return
        if self.array is None:
            self.array = np.empty((self.n, *mask.shape), dtype=mask.dtype)
        if mask is self.given:  # its warp wrote into the slot
            return
        slot = self.array[i]
        if mask.shape != slot.shape or mask.dtype != slot.dtype:
            self.usable = False
        elif not np.may_share_memory(mask, slot):  # its warp wrote elsewhere: copy
            slot[...] = mask
            sample_targets["mask"] = slot

    def stacked(self, kept: int) -> np.ndarray | None:
        """The first ``kept`` masks as one array, or None where they are not all there."""
        return self.array[:kept] if self.usable and self.array is not None else None


class _BatchBoxes:
    """The boxes of a batch's samples, moved together once every sample is made
    (``box_moves.move_boxes``). A sample whose boxes turn out bad then is the batch's error
    (it comes before any other: the batch stopped at the first) or, with
    ``on_error="skip"``, leaves the batch: the rows after it move up."""

    __slots__ = ("waiting", "rows", "skipped_at")

    def __init__(self):
        self.waiting: list = []  # (SampleTargets, result dict), filled by SampleTargets.result
        self.rows: list[tuple[int, int]] = []  # (row in the batch, position in the plan)
        self.skipped_at: list[int] = []  # the position in the plan of each skipped sample

    def placed(self, row: int | None, position: int) -> None:
        """The sample at ``position`` went to ``row`` (None: it was left out)."""
        if len(self.waiting) > len(self.rows):
            if row is None:
                del self.waiting[len(self.rows) :]
            else:
                self.rows.append((row, position))

    def move(self, task: BatchTask, result: BatchResult, images, masks: _MaskSlots) -> None:
        errors = box_moves.move_boxes(self.waiting, task.options)
        if not errors:
            return
        if task.on_error == "raise":
            result.error = errors[0][1]
            return
        bad = {self.rows[i][0] for i, _ in errors}
        for i, exc in errors:
            _bad(task, result, exc)
            self.skipped_at.append(self.rows[i][1])
        order = sorted(range(len(result.skipped)), key=self.skipped_at.__getitem__)
        result.skipped[:] = [result.skipped[i] for i in order]
        rows = [r for r in range(len(result.targets)) if r not in bad]
        result.targets[:] = [result.targets[r] for r in rows]
        for array in (images, masks.array if masks.usable else None):
            if array is not None:
                array[: len(rows)] = array[rows]


def target_transform(transform: Callable | None) -> tuple[Callable, ST.TargetOptions]:
    """What moves the targets of samples that have them, and how they are kept: a
    ``Compose`` as it is; the albumentations adapter as it is (its ``A.Compose`` says how);
    anything else (None, one transform, any callable) as the only step of a ``Compose``."""
    options = getattr(transform, "target_options", None)
    if isinstance(transform, Compose) or options is not None:
        return transform, options
    return Compose([] if transform is None else [transform]), ST.TargetOptions()


def make_batch(
    task: BatchTask,
    plan: BatchPlan,
    buffer: Callable[[tuple[int, ...], np.dtype], np.ndarray] | None = None,
    worker: int = CONSUMER_LANE,
    lane: Lane | None = None,
) -> BatchResult:
    """Load, augment and collate the samples of ``plan``.

    ``buffer(shape, dtype)`` provides the batch array to fill (shared memory for the process
    backend); by default a new array. ``worker`` is the lane the spans are drawn on. A bad
    image either ends the batch with ``error`` set (on_error="raise") or is left out and
    listed in ``skipped``. Any other exception propagates, with a note naming the sample.
    ``lane``, where given, records the batch and each sample as it begins (the watchdog's).
    """
    if lane is None:
        return _make_batch(task, plan, buffer, worker, None)
    lane.take(plan.epoch, plan.number, os.getpid())
    try:
        return _make_batch(task, plan, buffer, worker, lane.at)
    finally:
        lane.done()


def _make_batch(task: BatchTask, plan: BatchPlan, buffer, worker: int, at) -> BatchResult:
    source = task.source
    clock = StageClock(source.stages)
    result = BatchResult(plan, None, pid=os.getpid(), worker=worker, host=_HOST)
    targets = result.targets
    keyed = KeyedRng(task.seed)  # one generator for the batch, re-keyed for each sample
    reduce = source.reduces
    out: np.ndarray | None = None
    first = 0
    source.begin(plan.indices)
    layout = None  # samples with targets: "dict", or the names of a tuple's items
    masks = _MaskSlots(len(plan.indices))
    boxes = _BatchBoxes()
    for position, index in enumerate(plan.indices):
        if at is not None:
            at(position)
        rng = keyed.at(plan.epoch, index)
        planned = task.plan(rng)
        try:
            img, sample_targets = source.load(index, clock, planned if reduce else None)
        except BadImageError as exc:
            _bad(task, result, exc)
            boxes.skipped_at.append(position)
            if result.error is not None:
                break
            continue
        except Exception as exc:
            _add_note(exc, f"while loading {source.name(index)} (sample {index})")
            raise
        slot = None
        if out is not None and planned is not None:  # the warp may write into the batch
            slot = out[len(targets)]
            if img.ndim == 2:
                slot = slot[:, :, 0]
        try:
            if task.has_targets(sample_targets):
                layout = "dict" if type(sample_targets) is dict else task.names
                img, sample_targets = task.augment_sample(
                    img, sample_targets, rng, index, slot, planned, masks.slot(len(targets)),
                    boxes.waiting,
                )  # fmt: skip
                boxes.placed(len(targets), position)
            else:
                img = task.augment(img, rng, index, planned, slot)
        except BadImageError as exc:  # a bad target
            _bad(task, result, exc)
            boxes.skipped_at.append(position)
            boxes.placed(None, position)
            if result.error is not None:
                break
            continue
        except Exception as exc:
            _add_note(exc, f"while transforming {source.name(index)} (sample {index})")
            raise
        clock.lap("augment")
        if img is not slot:  # a new array: copy it into the batch ("collate")
            if out is None:
                out = _batch_buffer(img, len(plan.indices), buffer)
                first = index
            _check_sample(img, out, source, first, index)
            out[len(targets)] = img.reshape(out.shape[1:])
        if layout is not None:
            masks.keep(len(targets), sample_targets)
        targets.append(sample_targets)
        clock.lap("collate")
    if boxes.waiting:  # moved here, for the whole batch at once: part of "augment"
        boxes.move(task, result, out, masks)
        clock.lap("augment")
    if result.error is None:
        if out is None:
            result.images = np.zeros((0, 0, 0, 0), dtype=np.uint8)
        else:
            kept = len(targets)
            result.images = out[:kept]  # the process backend drops it when in shared memory
            result.shape, result.dtype = result.images.shape, result.images.dtype.str
            if layout is not None:  # samples with targets: batched here, in the worker
                fields = target_batch.collate(
                    targets, task.options, task.pad_targets, masks.stacked(kept)
                )
                result.targets = target_batch.TargetBatch(
                    fields, None if layout == "dict" else layout
                )
    clock.lap("collate")
    result.spans = clock.spans()
    return result


def _add_note(exc: BaseException, note: str) -> None:
    if hasattr(exc, "add_note"):  # Python >= 3.11; notes survive pickling to the consumer
        exc.add_note(note)


def _batch_buffer(img: np.ndarray, n: int, buffer) -> np.ndarray:
    shape = (n, *img.shape) if img.ndim == 3 else (n, *img.shape, 1)
    return buffer(shape, img.dtype) if buffer is not None else np.empty(shape, dtype=img.dtype)


def _bad(task: BatchTask, result: BatchResult, exc: BadImageError) -> None:
    """Record a bad image: the batch's error (on_error="raise") or one more skipped."""
    if task.on_error == "raise":
        result.error = exc
    else:
        result.skipped.append((exc.source, exc.cause))


def _check_sample(img: np.ndarray, out: np.ndarray, source, first: int, index: int) -> None:
    if img.dtype != out.dtype:
        raise ValueError(
            f"images of one batch must share a dtype, but {source.name(first)} is {out.dtype} "
            f"and {source.name(index)} is {img.dtype}"
        )
    if img.reshape(img.shape if img.ndim == 3 else (*img.shape, 1)).shape != out.shape[1:]:
        size = out.shape[1:] if out.shape[-1] != 1 else out.shape[1:-1]
        raise ValueError(
            f"images of one batch must share a shape, but {source.name(first)} is "
            f"{'x'.join(map(str, size))} and {source.name(index)} is "
            f"{'x'.join(map(str, img.shape))}: end the transform with a crop or resize "
            "to a fixed size"
        )
