"""The unit of work: turn one batch plan into pixels and labels, in whatever process.

``make_batch`` runs in a worker (or in the consumer for the serial backend). It does the
stages one after another for the whole batch, so each stage is one contiguous span:
``read`` (bytes of every sample), ``decode``, ``augment``, ``collate`` (copy into the batch
buffer, which may be shared memory). A sample's randomness comes from (seed, epoch, index)
only, so the output never depends on which worker ran it.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from augment.data import BadImageError

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


@dataclass
class BatchResult:
    plan: BatchPlan
    images: np.ndarray | None  # N x H x W x C uint8; None while it sits in shared memory
    labels: np.ndarray
    shape: tuple[int, ...] = ()
    skipped: list[tuple[str, str]] = field(default_factory=list)
    error: BadImageError | None = None
    spans: list[Span] = field(default_factory=list)  # made by the worker
    pid: int = 0
    worker: int = -1  # lane index of the worker; -1 is the consumer (the training loop)
    host: str = ""  # the machine that made it
    transfer: Span | None = None  # the consumer's cost of receiving it, when a backend has one


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, 1, index])


def order_rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, 0])


class _Stage:
    """Times a stage: ``with stage("decode"): ...`` appends a Span."""

    __slots__ = ("spans", "name", "t0", "c0")

    def __init__(self, spans: list[Span]):
        self.spans = spans

    def __call__(self, name: str) -> _Stage:
        self.name = name
        return self

    def __enter__(self) -> None:
        self.t0, self.c0 = time.time_ns(), time.thread_time_ns()

    def __exit__(self, *exc) -> None:
        self.spans.append(Span(self.name, self.t0, time.time_ns(), time.thread_time_ns() - self.c0))


@dataclass
class BatchTask:
    """Everything a worker needs, sent to it once: dataset, transform, seed, error policy."""

    dataset: object
    transform: Callable
    seed: int = 0
    on_error: str = "raise"

    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one transformed sample (the first readable one): sizes shared memory."""
        for index in range(len(self.dataset)):
            try:
                img = self.dataset.decode(self.dataset.read(index), index)
            except BadImageError:
                continue
            return np.asarray(self.transform(img, sample_rng(self.seed, 0, index))).shape
        raise ValueError("no image of the dataset could be read")


def make_batch(
    task: BatchTask,
    plan: BatchPlan,
    buffer: Callable[[tuple[int, ...]], np.ndarray] | None = None,
    worker: int = -1,
) -> BatchResult:
    """Read, decode, augment and collate the samples of ``plan``.

    ``buffer(shape)`` provides the batch array to fill (shared memory for the process
    backend); by default a new array. ``worker`` is the lane the spans are drawn on. A bad
    image either ends the batch with ``error`` set (on_error="raise") or is left out and
    listed in ``skipped``.
    """
    ds = task.dataset
    spans: list[Span] = []
    stage = _Stage(spans)
    result = BatchResult(
        plan, None, np.zeros(0), pid=os.getpid(), spans=spans, worker=worker, host=_HOST
    )
    keep: list[int] = []
    blobs: list = []
    with stage("read"):
        for index in plan.indices:
            try:
                blobs.append(ds.read(index))
                keep.append(index)
            except BadImageError as exc:
                if _bad(task, result, exc):
                    return result
    with stage("decode"):
        decoded = []
        for index, blob in zip(list(keep), blobs):
            try:
                decoded.append(ds.decode(blob, index))
            except BadImageError as exc:
                keep.remove(index)
                if _bad(task, result, exc):
                    return result
    del blobs
    with stage("augment"):
        images = [
            np.asarray(task.transform(img, sample_rng(task.seed, plan.epoch, index)))
            for index, img in zip(keep, decoded)
        ]
    del decoded
    with stage("collate"):
        result.labels = np.stack([np.asarray(ds.label(i)) for i in keep]) if keep else np.zeros(0)
        if images:
            _check_same_shape(images, keep, ds)
            shape = (len(images), *images[0].shape)
            if images[0].ndim == 2:
                shape = (*shape, 1)
            out = buffer(shape) if buffer is not None else np.empty(shape, dtype=np.uint8)
            for slot, img in zip(out, images):
                slot[...] = img.reshape(slot.shape)
            result.shape = shape
            result.images = out  # the process backend drops it when it sits in shared memory
        else:
            result.images = np.zeros((0, 0, 0, 0), dtype=np.uint8)
    return result


def _bad(task: BatchTask, result: BatchResult, exc: BadImageError) -> bool:
    """Record a bad image; True when the batch must stop here."""
    if task.on_error == "raise":
        result.error = exc
        return True
    result.skipped.append((exc.source, exc.cause))
    return False


def _check_same_shape(images: list[np.ndarray], indices: list[int], ds) -> None:
    first = images[0].shape
    for img, index in zip(images, indices):
        if img.shape != first:
            raise ValueError(
                f"images of one batch must share a shape, but {ds.source(indices[0])} is "
                f"{'x'.join(map(str, first))} and {ds.source(index)} is "
                f"{'x'.join(map(str, img.shape))}: end the transform with a crop or resize "
                "to a fixed size"
            )
        if img.dtype != np.uint8:
            raise ValueError(
                f"the transform returned {img.dtype} for {ds.source(index)}; the "
                "loader batches uint8 images"
            )
