"""Loader: epochs, order, seeds, batching and in-order delivery on a pluggable backend.

Invariants:
- every sample's randomness comes from (seed, epoch, index), and the order of an epoch from
  (seed, epoch): the same seed gives the same batches, bit for bit, on every backend and
  with any number of workers;
- batches are yielded in order, with at most ``prefetch x workers`` submitted and not yet
  yielded (bounded memory);
- workers start on the first epoch and live until ``close()`` (or garbage collection, or the
  end of the ``with`` block); an error or Ctrl-C during an epoch closes them.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator

import numpy as np
import torch

from augment import backends
from augment.batch import ON_ERROR, BatchPlan, BatchResult, BatchTask, Span, order_rng
from augment.trace.recorder import CONSUMER_LANE, tracer_from_env

log = logging.getLogger("augment")


class Loader:
    """Batches of augmented images for a PyTorch training loop.

    Iterating runs one epoch and yields ``(images, labels)``: ``images`` a ``torch.uint8``
    tensor N x C x H x W (channels-last in memory: no transpose copy), ``labels`` a tensor.
    Iterating again runs the next epoch. ``backend`` is one of ``augment.backends.names()``;
    its extra options (``start_method`` for "process", ``timeout`` for "torch") go in
    ``backend_options``. ``tracer`` (an ``augment.Tracer``; by default one from
    ``AUGMENT_TRACE_DIR`` if set) records every stage of every batch.
    """

    def __init__(
        self,
        dataset,
        transform: Callable,
        batch_size: int = 64,
        backend: str = "serial",
        workers: int = 2,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        prefetch: int = 2,
        on_error: str = "raise",
        tracer=None,
        backend_options: dict | None = None,
    ):
        _check_int(batch_size, "batch_size", 1)
        _check_int(workers, "workers", 0)
        _check_int(prefetch, "prefetch", 1)
        _check_int(seed, "seed", 0)
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}; got {on_error!r}")
        if backend not in backends.names():
            raise ValueError(
                f"unknown backend {backend!r}; accepted: {', '.join(backends.names())}"
            )
        if not callable(transform):
            raise ValueError(f"transform must be callable (img, rng) -> img, got {transform!r}")
        if len(dataset) == 0:
            raise ValueError("the dataset is empty")
        self.dataset, self.transform = dataset, transform
        self.batch_size, self.workers, self.seed = batch_size, workers, seed
        self.shuffle, self.drop_last, self.prefetch = shuffle, drop_last, prefetch
        self.on_error = on_error
        self.tracer = tracer if tracer is not None else tracer_from_env()
        self._owns_tracer = tracer is None and self.tracer is not None
        self.backend_name = backend
        self.epoch = 0
        self.skipped: list[tuple[str, str]] = []
        self._logged: set[str] = set()
        self._backend = backends.create(backend, workers, self.capacity, **(backend_options or {}))
        self._started = False
        self._finalizer = weakref.finalize(self, self._backend.close)

    @property
    def capacity(self) -> int:
        """Batches that may be in flight at once: prefetch x workers (at least 1)."""
        return self.prefetch * max(self.workers, 1)

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def plan_epoch(self, epoch: int) -> list[BatchPlan]:
        """The batches of ``epoch``: which samples, in which order."""
        n = len(self.dataset)
        order = order_rng(self.seed, epoch).permutation(n) if self.shuffle else np.arange(n)
        plans = []
        for number in range(len(self)):
            chunk = order[number * self.batch_size : (number + 1) * self.batch_size]
            plans.append(BatchPlan(epoch, number, tuple(int(i) for i in chunk)))
        return plans

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        return self._run(self.plan_epoch(epoch))

    def _run(self, plans: list[BatchPlan]):
        backend = self._ensure_started()
        if hasattr(backend, "set_epoch_plans"):
            backend.set_epoch_plans(plans)
        pending: deque = deque()
        todo = iter(plans)
        finished = False
        if self.tracer is not None:
            self.tracer.start()
            self.tracer.write_meta(
                backend=self.backend_name,
                workers=0 if self.backend_name == "serial" else self.workers,
                batch_size=self.batch_size,
                epoch=plans[0].epoch if plans else 0,
            )
        untraced = None  # the batch handed over whose step has not ended yet
        try:
            for plan in todo:
                pending.append(backend.submit(plan))
                if len(pending) >= self.capacity:
                    break
            while pending:
                asked = _clock()
                result = pending.popleft().result()
                for plan in todo:
                    pending.append(backend.submit(plan))
                    break
                received = _clock()
                batch = self._deliver(result)
                untraced = (result, asked, received, _clock())
                if batch is not None:
                    yield batch
                self._trace(*untraced, _clock())
                untraced = None
            finished = True
        except GeneratorExit:  # the loop stopped early: let in-flight work finish, keep workers
            if untraced is not None:  # its step ended when the loop let go of the loader
                self._trace(*untraced, _clock())
            for handle in pending:
                handle.cancel()
            raise
        finally:
            if self.tracer is not None:
                self.tracer.stop()
            if not finished and not _exiting_normally():
                self.close()

    def _trace(self, result: BatchResult, asked, received, handed, back) -> None:
        """Write one batch's spans: the worker's stages, then the consumer's transfer (the
        backend's own, or handing over as tensors), wait (the stall) and step."""
        if self.tracer is None:
            return
        plan = result.plan
        images = 0 if result.images is None else len(result.images)
        common = dict(backend=self.backend_name, batch=plan.number, epoch=plan.epoch, images=images)
        transfer = result.transfer or Span(
            "transfer", received[0], handed[0], handed[1] - received[1]
        )
        consumer = [
            transfer,
            Span("wait", asked[0], handed[0], handed[1] - asked[1]),
            Span("step", handed[0], back[0], back[1] - handed[1]),
        ]
        self.tracer.write(
            self.tracer.record(
                spans=result.spans,
                pid=result.pid,
                worker=result.worker,
                host=result.host or None,
                **common,
            )
            + self.tracer.record(spans=consumer, pid=os.getpid(), worker=CONSUMER_LANE, **common)
        )

    def _deliver(self, result: BatchResult):
        if result.error is not None:
            raise result.error
        for source, reason in result.skipped:
            self.skipped.append((source, reason))
            if source not in self._logged:
                self._logged.add(source)
                log.warning("skipped %s: %s", source, reason)
        if result.images is None or len(result.images) == 0:
            return None
        images = torch.from_numpy(result.images).permute(0, 3, 1, 2)
        return images, torch.from_numpy(np.asarray(result.labels))

    def _ensure_started(self):
        if self._backend is None:
            raise RuntimeError("this Loader is closed")
        if not self._started:
            self._backend.start(BatchTask(self.dataset, self.transform, self.seed, self.on_error))
            self._started = True
        return self._backend

    def close(self) -> None:
        """Stop the workers and free shared memory. The loader cannot be used afterwards."""
        if self._backend is not None:
            self._finalizer()
            self._backend = None
        if self._owns_tracer:
            self.tracer.close()

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Loader({self.dataset!r}, batch_size={self.batch_size}, "
            f"backend={self.backend_name!r}, workers={self.workers}, seed={self.seed})"
        )


def _clock() -> tuple[int, int]:
    return time.time_ns(), time.thread_time_ns()


def _exiting_normally() -> bool:
    import sys

    exc = sys.exc_info()[1]
    return exc is None or isinstance(exc, GeneratorExit)


def _check_int(value, name: str, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
