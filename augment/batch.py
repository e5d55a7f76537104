"""The unit of work: turn one batch plan into pixels and targets, in whatever process.

``make_batch`` runs in a worker (or in the consumer for the serial backend). It takes each
sample through loading (``read`` and ``decode`` for a staged dataset, ``load`` for a
map-style one, see ``augment.samples``), ``augment`` and ``collate`` before the next, so the
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
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from augment import sample_targets as ST
from augment import target_batch
from augment.data import BadImageError
from augment.samples import MapStyle, Staged, as_image
from augment.trace.schema import CONSUMER_LANE
from augment.transforms import Compose, GeometricTransform
from augment.warp_plan import SamplePlan
from augment.watchdog import Lane

ON_ERROR = ("raise", "skip")
_HOST = socket.gethostname()


@dataclass(frozen=True)
class BatchPlan:
    """What to make: batch ``number`` of ``epoch``, from dataset ``indices``."""

    epoch: int
    number: int
    indices: tuple[int, ...]


@dataclass
class Span:
    """One stage of one batch in one thread: wall clock (``time.time_ns``, shared by every
    process of a machine and comparable across NTP-synced hosts) and the thread's CPU time
    over it (far below the wall time when the thread waited for the GIL or a core)."""

    stage: str
    start_ns: int
    end_ns: int
    cpu_ns: int
    # of the wall time, how long the thread was runnable but waited for a core (Linux's
    # schedstat), None where unknown: the rest of the time off the CPU it slept (the GIL, I/O)
    runq_ns: int | None = None


def run_delay_ns() -> int | None:
    """This thread's time so far waiting on a run queue for a core, None where the kernel
    does not say (not Linux, or schedstats off)."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as f:
            return int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None


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


# Philox streams, keyed directly (no SeedSequence hashing, see ``KeyedRng``): the key is
# (seed, stream tag), the counter starts at (0, 0, epoch, index).
ORDER_STREAM, SAMPLE_STREAM = 0, 1
_WORD = 1 << 64


class KeyedRng:
    """A ``numpy.random.Generator`` on a Philox bit generator, re-keyed for each sample.

    Philox (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011) turns a
    256-bit counter into random bits under a 128-bit key; numpy's ``Philox`` takes both as
    they are. The stream of ``(seed, epoch, index)`` is key ``(seed, tag)`` and counter
    ``(0, 0, epoch, index)``; each draw of 4 words adds 1 to the counter, carrying upwards.
    Distinct ``(seed, tag)`` are distinct keys; under one key, distinct ``(epoch, index)``
    start 2**128 blocks apart, farther than any sample draws, so no two samples (and no
    sample and an epoch's order, whose tag differs) ever share a block of random bits. Each
    of seed, epoch and index is an integer in ``[0, 2**64)``, else a ``ValueError``.

    Why not ``np.random.default_rng([seed, epoch, 1, index])`` as before: it hashes a
    ``SeedSequence`` for every sample (about 13 us); building a ``Philox`` is no cheaper (it
    draws OS entropy for a ``SeedSequence`` it then ignores), but setting the state of one
    already built takes about 1 us. ``at(epoch, index)`` does that and returns the same
    generator each time: what a transform got for one sample is re-keyed for the next, so a
    transform must not keep the generator beyond its call (none of augment's does).
    """

    __slots__ = ("seed", "tag", "generator", "_bits", "_state", "_counter")

    def __init__(self, seed: int, tag: int = SAMPLE_STREAM):
        self.seed = _check_word(seed, "seed")
        self.tag = _check_word(tag, "tag")
        self._bits = np.random.Philox(key=np.array([self.seed, self.tag], dtype=np.uint64))
        self.generator = np.random.Generator(self._bits)
        self._counter = [0, 0, 0, 0]
        self._state = {
            "bit_generator": "Philox",
            "state": {"counter": self._counter, "key": [self.seed, self.tag]},
            "buffer": [0, 0, 0, 0],
            "buffer_pos": 4,  # the buffer is empty: the first draw computes a block
            "has_uint32": 0,
            "uinteger": 0,
        }

    def at(self, epoch: int, index: int = 0) -> np.random.Generator:
        """The generator, set to the start of the stream of ``(epoch, index)``."""
        if not (
            type(epoch) is int and type(index) is int and 0 <= epoch < _WORD and 0 <= index < _WORD
        ):
            epoch, index = _check_word(epoch, "epoch"), _check_word(index, "index")
        counter = self._counter
        counter[2], counter[3] = epoch, index
        self._bits.state = self._state
        return self.generator


def _check_word(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer in [0, 2**64), got {value!r}")
    if not 0 <= value < _WORD:
        raise ValueError(
            f"{name} must be in [0, 2**64) (the random streams are keyed on 64-bit words), "
            f"got {value}"
        )
    return int(value)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """A new generator for sample ``index`` of ``epoch`` (see ``KeyedRng``): the one
    ``make_batch`` hands the transform, which re-keys a single generator instead."""
    return KeyedRng(seed, SAMPLE_STREAM).at(epoch, index)


def order_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator of ``epoch``'s order (see ``KeyedRng``; a stream no sample shares)."""
    return KeyedRng(seed, ORDER_STREAM).at(epoch, 0)


class _StageClock:
    """Sums the wall and thread-CPU time of each stage over a batch's samples."""

    __slots__ = ("stages", "wall", "cpu", "t0", "c0", "start", "q0")

    def __init__(self, stages: tuple[str, ...]):
        self.stages = stages
        self.wall = dict.fromkeys(stages, 0)
        self.cpu = dict.fromkeys(stages, 0)
        self.start = time.time_ns()
        self.q0 = run_delay_ns()
        self.t0, self.c0 = time.perf_counter_ns(), time.thread_time_ns()

    def lap(self, stage: str) -> None:
        """Charge the time since the previous lap to ``stage``."""
        t, c = time.perf_counter_ns(), time.thread_time_ns()
        self.wall[stage] += t - self.t0
        self.cpu[stage] += c - self.c0
        self.t0, self.c0 = t, c

    def spans(self) -> list[Span]:
        """One span per stage, end to end. The batch's wait for a core (read once at each
        end: per sample it would cost more than it tells) is shared among the stages in
        proportion to their time off the CPU."""
        q1 = run_delay_ns()
        runq = q1 - self.q0 if q1 is not None and self.q0 is not None else None
        off = {s: max(0, self.wall[s] - self.cpu[s]) for s in self.stages}
        total_off = sum(off.values())
        spans, start = [], self.start
        for stage in self.stages:
            share = None
            if runq is not None:
                share = min(off[stage], round(runq * off[stage] / total_off)) if total_off else 0
            spans.append(Span(stage, start, start + self.wall[stage], self.cpu[stage], share))
            start += self.wall[stage]
        return spans


@dataclass
class BatchTask:
    """Everything a worker needs, sent to it once: where samples come from (``source``, a
    ``samples.Staged`` or ``samples.MapStyle``), the transform ``(img, rng) -> img`` or None,
    the seed and the error policy."""

    source: Staged | MapStyle
    transform: Callable | None
    seed: int = 0
    on_error: str = "raise"
    # samples with targets (see augment.sample_targets): the names of a tuple's items after
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
            return any(k in rest for k in ST.LISTED) or "mask" in rest
        return self.names is not None and type(rest) is tuple

    def augment_sample(
        self,
        img: np.ndarray,
        rest: dict | tuple,
        rng: np.random.Generator,
        index: int,
        out: np.ndarray | None = None,
    ) -> tuple[np.ndarray, dict]:
        """The image and targets of a sample with targets, moved together; the image into
        ``out`` where it fits (as ``augment``). A bad target is a ``BadTargetError``."""
        name = self.source.name(index)
        if type(rest) is dict:
            sample = {"image": img, **rest}
        else:
            sample = ST.as_dict((img, *rest), self.names, name)
        t = self.sample_transform
        t.check_targets(ST.kinds_of(sample))
        if isinstance(t, Compose):
            moving = ST.SampleTargets.read(sample, img.shape[:2], self.options, name)
            img = t.finish(img, t.plan(img.shape[:2], rng), rng, out, moving)
            result = moving.result(sample)
        else:  # the albumentations adapter: it checks what it is given against the image
            checked = {k: v for k, v in sample.items() if k != "keypoints"}  # formats vary
            ST.SampleTargets.read(checked, img.shape[:2], self.options, name)
            result = t(sample, rng)
            img = result["image"]
        del result["image"]
        img = as_image(img, lambda: f"the transform's output for {name}")
        return img, result


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
    clock = _StageClock(source.stages)
    result = BatchResult(plan, None, pid=os.getpid(), worker=worker, host=_HOST)
    targets = result.targets
    keyed = KeyedRng(task.seed)  # one generator for the batch, re-keyed for each sample
    reduce = source.reduces
    out: np.ndarray | None = None
    first = 0
    source.begin(plan.indices)
    layout = None  # samples with targets: "dict", or the names of a tuple's items
    for position, index in enumerate(plan.indices):
        if at is not None:
            at(position)
        rng = keyed.at(plan.epoch, index)
        planned = task.plan(rng)
        try:
            img, sample_targets = source.load(index, clock, planned if reduce else None)
        except BadImageError as exc:
            _bad(task, result, exc)
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
                img, sample_targets = task.augment_sample(img, sample_targets, rng, index, slot)
            else:
                img = task.augment(img, rng, index, planned, slot)
        except BadImageError as exc:  # a bad target
            _bad(task, result, exc)
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
        targets.append(sample_targets)
        clock.lap("collate")
    if result.error is None:
        if out is None:
            result.images = np.zeros((0, 0, 0, 0), dtype=np.uint8)
        else:
            kept = len(targets)
            result.images = out[:kept]  # the process backend drops it when in shared memory
            result.shape, result.dtype = result.images.shape, result.images.dtype.str
            if layout is not None:  # samples with targets: batched here, in the worker
                fields = target_batch.collate(targets, task.options, task.pad_targets)
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
