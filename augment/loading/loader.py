"""Loader: epochs, order, seeds, sharding, batching and in-order delivery on a pluggable
backend.

Invariants:
- every sample's randomness comes from (seed, epoch, index), and the order of an epoch from
  (seed, epoch): the same seed gives the same batches, bit for bit, on every backend and
  with any number of workers;
- with ``world_size`` ranks, each rank takes every ``world_size``-th sample of the epoch's
  order (``DistributedSampler``'s split): the ranks' shares are disjoint and together hold
  every sample of the epoch;
- an epoch is taken when its first batch is taken (``iter()`` alone takes nothing);
- one rule for state: while an epoch's iterator is alive, ``state_dict()`` is that epoch's
  position (its batches delivered); once the iterator is finished or abandoned (a ``break``,
  an exception, garbage collection), it is what iterating the loader does next. A Loader
  restored from it yields what the live one would: the uninterrupted run's batches;
- ``set_epoch(n)`` (also ``loader.sampler.set_epoch(n)``, which Lightning and DDP loops call
  at each epoch's start) makes ``n`` the next epoch; when ``n`` is already the next epoch it
  changes nothing, so a position restored by ``load_state_dict`` is kept;
- batches are yielded in order, with at most ``prefetch x workers`` submitted and not yet
  yielded (bounded memory); one epoch is delivered at a time, but once all of an epoch's
  batches are submitted, the next epoch's first ones are too, into the room left
  (``augment.loading.ahead``): used only if that epoch is begun from its first batch, cancelled
  otherwise, and counted in no state until delivered;
- a batch's pixels are not copied on their way to the loop: the tensor views the buffer the
  worker filled (the process backend's shared-memory slot, torch's shared storage, the
  array made in the loop or a thread; Ray's object store is read-only, so that backend
  copies once). The tensor is the loop's: nothing writes into it after it is handed over,
  and the loop may write into it. Memory in flight is the batches submitted plus those the
  loop still holds, as it would be with copies;
- workers start on the first epoch and live until ``close()`` (or garbage collection, or the
  end of the ``with`` block); an error or Ctrl-C during an epoch closes them, and ``close()``
  releases what they held (processes, queues, shared memory) even while something still
  references the loader (a kept traceback);
- the batch the loop waits for is watched (``augment.loading.watchdog``): one warning when it takes
  longer than a minute, an error that stops its worker past ``timeout``.
"""

from __future__ import annotations

import inspect
import logging
import multiprocessing as mp
import sys
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from typing import ClassVar

import numpy as np
import torch
from torch.utils.data import default_collate

from augment.loading import backends
from augment.loading.ahead import Ahead
from augment.loading.backends import worker
from augment.loading.batch import ON_ERROR, BatchPlan, BatchResult, BatchTask, target_transform
from augment.loading.compat import (
    EpochSampler,
    can_pin,
    check_dataloader_keywords,
    pin,
    sampler_of,
)
from augment.loading.rng import check_seed, order_rng
from augment.loading.sharding import Sharding, check_int
from augment.loading.target_batch import TargetBatch, check_pad
from augment.loading.watchdog import Watchdog, check_timeout
from augment.ops.sample_targets import check_names
from augment.ops.targets import KINDS
from augment.sources.samples import as_sample_transform, source_for
from augment.trace.loop import LoopClock
from augment.trace.recorder import tracer_from_env

log = logging.getLogger("augment")
STATE_VERSION = 1


class Loader:
    """Batches of augmented images for a PyTorch training loop.

    Iterating runs one epoch. A staged dataset (``ImageFolder``, ``HTTPImages``) yields
    ``(images, labels)``; a map-style dataset yields its samples' structure batched: an
    image alone gives ``images``, a tuple ``(images, *targets)``, a dict the same dict (its
    image under ``image_key``, "image" by default: "img", "pixel_values" for Hugging Face
    datasets). ``target_key`` (a key or a tuple of keys) makes a dict sample yield
    ``(images, *targets)`` of those keys instead.
    ``images`` is a tensor N x C x H x W of the samples' dtype (uint8 or float32; channels-last
    in memory: no transpose copy); targets are batched by ``default_collate``.
    ``transform`` is None or any ``(img, rng) -> img`` or ``(img) -> img``. ``backend`` is
    one of ``augment.backends.names()``; its extra options (``start_method`` for "process"
    and "torch", ``threads``, native threads per library in each worker, for "process",
    "torch" and "ray"; ``replace_timeout`` for "ray", see docs/scaling_out.md) go in
    ``backend_options``. ``rank`` and
    ``world_size`` shard every epoch for data-parallel training (by default those of an
    initialised ``torch.distributed``). ``tracer`` (an ``augment.Tracer``; by default one
    from ``AUGMENT_TRACE_DIR`` if set) records every stage of every batch. ``timeout``
    (seconds, or None; 0 is None, as DataLoader's) is how long a worker may take over the
    batch the loop waits for before a ``RuntimeError`` names it and its samples, and the
    loader closes; without one, a batch taking over a minute logs one warning.
    ``pin_memory`` copies each batch into page-locked memory when an accelerator is
    present, as DataLoader's does.

    Targets (``docs/targets.md``): a dict sample holding ``mask``, ``masks``, ``boxes`` or
    ``keypoints`` has them moved with its image by the transform (a ``Compose`` says the box
    format and what to drop; the albumentations adapter passes them to its ``A.Compose``),
    and its batch is a dict: ``mask`` stacked N x H x W, ``boxes``, ``keypoints``, ``masks``
    and their per-box fields (``labels``) a list of one tensor per sample, or padded to the
    batch's largest count (``pad_targets=True``) or to ``pad_targets`` rows, with
    ``num_<key>`` counts. A tuple sample's items after the image are targets only when
    ``targets`` names them (``targets=("mask",)``); nothing is guessed from shapes. A bad
    target is a ``ValueError`` naming its sample, skipped with ``on_error="skip"``.

    DataLoader's other keywords are taken with its meaning (``persistent_workers=True``,
    ``timeout=0``) or refused with a ``TypeError`` naming what to write instead
    (``num_workers`` -> ``workers=`` and ``backend=``; see ``augment.loading.compat``).
    """

    # what Lightning's checks read on a DataLoader: no batch sampler (the sampler is below)
    batch_sampler: ClassVar[None] = None

    def __init__(
        self,
        dataset,
        transform: Callable | None = None,
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
        rank: int | None = None,
        world_size: int | None = None,
        timeout: float | None = None,
        targets: tuple[str, ...] | None = None,
        pad_targets: bool | int = False,
        pin_memory: bool = False,
        image_key: str = "image",
        target_key: str | tuple[str, ...] | None = None,
        **dataloader_keywords,
    ):
        check_dataloader_keywords(dataloader_keywords, _ARGUMENTS)
        check_int(batch_size, "batch_size", 1)
        check_int(workers, "workers", 0)
        check_int(prefetch, "prefetch", 1)
        seed = check_seed(seed)
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}; got {on_error!r}")
        backends.check_name(backend)
        if timeout == 0 and not isinstance(timeout, bool):
            timeout = None  # DataLoader's timeout=0: none
        self.timeout = check_timeout(timeout)
        self._source = source_for(dataset, image_key, target_key)
        self._transform = as_sample_transform(transform)
        self.targets = None if targets is None else check_names(targets)
        self.pad_targets = check_pad(pad_targets)
        self._moves, self._target_options = target_transform(self._transform)
        if self.targets is not None:
            self._moves.check_targets([k for k in KINDS if k in self.targets])
        if len(dataset) == 0:
            raise ValueError("the dataset is empty")
        self._sharding = Sharding(rank, world_size)
        self.dataset, self.transform = dataset, transform
        self.batch_size, self.workers, self.seed = batch_size, workers, seed
        self.shuffle, self.drop_last, self.prefetch = shuffle, drop_last, prefetch
        self.on_error = on_error
        self.pin_memory = bool(pin_memory)
        self._pin = self.pin_memory and can_pin()
        self.image_key, self.target_key = image_key, target_key
        self.tracer = tracer if tracer is not None else tracer_from_env()
        self._owns_tracer = tracer is None and self.tracer is not None
        self.backend_name = backend
        self._backend_options = dict(backend_options or {})
        self.skipped: list[tuple[str, str]] = []
        self._logged: set[str] = set()
        self._next_epoch, self._resume_at = 0, 0  # what the next iteration runs
        self._progress: list[int] | None = None  # [epoch, batches delivered] of the running one
        self._running = None  # the generator of the epoch in progress
        self._ahead: Ahead | None = None  # the next epoch's first batches, submitted early
        self._live: weakref.ref | None = None  # its iterator (the _Epoch), while referenced
        self._closed_by: str | None = None
        self._backend = None
        self._watchdog = Watchdog(self.timeout, self._source.name)
        weakref.finalize(self, self._watchdog.close)  # its thread ends with the loader
        self._open_backend()

    @property
    def epoch(self) -> int:
        """The epoch the next iteration runs (or resumes)."""
        return self._next_epoch

    @property
    def capacity(self) -> int:
        """Batches that may be in flight at once: prefetch x workers (at least 1)."""
        return self.prefetch * max(self.workers, 1)

    @property
    def rank(self) -> int:
        return self._sharding.resolve()[0]

    @property
    def world_size(self) -> int:
        return self._sharding.resolve()[1]

    def __len__(self) -> int:
        n = self._sharding.share(len(self.dataset), self.drop_last)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def sampler(self) -> EpochSampler:
        """The order of the next epoch on this rank, with ``set_epoch``: what frameworks
        written for ``DistributedSampler`` call at each epoch's start (Lightning does). A
        ``SequentialSampler`` too when the loader does not shuffle, on one rank."""
        return sampler_of(self)

    def set_epoch(self, epoch: int) -> None:
        """Run ``epoch`` on the next iteration (as ``DistributedSampler.set_epoch``).

        When ``epoch`` is already the next epoch, nothing changes: a position restored by
        ``load_state_dict`` is kept (as StatefulDataLoader's sampler keeps it), so a loop
        that calls ``set_epoch(epoch)`` before each epoch resumes mid-epoch. Another epoch
        starts from its first batch, and ends any epoch in progress."""
        check_int(epoch, "epoch", 0)
        if int(epoch) != self._next_epoch:
            self._end_running()
            self._cancel_ahead()
            self._next_epoch, self._resume_at = int(epoch), 0

    def plan_epoch(self, epoch: int) -> list[BatchPlan]:
        """The batches of ``epoch`` on this rank: which samples, in which order."""
        n = len(self.dataset)
        order = order_rng(self.seed, epoch).permutation(n) if self.shuffle else np.arange(n)
        order = self._sharding.take(order, self.drop_last)
        plans = []
        for number in range(len(self)):
            chunk = order[number * self.batch_size : (number + 1) * self.batch_size]
            plans.append(BatchPlan(epoch, number, tuple(int(i) for i in chunk)))
        return plans

    def state_dict(self) -> dict:
        """Where the loader stands: the epoch the next batch comes from and how many of its
        batches were delivered, with the seed, sharding and batching they depend on.

        While an epoch's iterator is alive, its position; once it is finished or abandoned
        (``break``, an exception, garbage collected), the epoch iterating the loader runs
        next. A Loader restored from it yields what this one would."""
        live = self._live is not None and self._live() is not None
        if live and self._progress is not None and self._progress[1] < len(self):
            epoch, delivered = self._progress
        else:
            epoch, delivered = self._next_epoch, self._resume_at
        rank, world_size = self._sharding.resolve()
        return {
            "version": STATE_VERSION,
            "epoch": epoch,
            "batches": delivered,
            "seed": self.seed,
            "rank": rank,
            "world_size": world_size,
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
            "samples": len(self.dataset),
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume from ``state_dict()``: the next iteration yields the rest of its epoch. An
        epoch in progress ends (its iterator stops).

        Resuming mid-epoch needs the same samples, batching and sharding (else the batches
        already delivered cannot be told apart): a ``ValueError`` names what differs."""
        missing = {"epoch", "batches", "seed"} - set(state)
        if missing:
            raise ValueError(f"not a Loader state: it lacks {', '.join(sorted(missing))}")
        if state["batches"]:
            now = self.state_dict()
            differ = [
                f"{key} {state[key]!r} (now {now[key]!r})"
                for key in ("samples", "batch_size", "shuffle", "drop_last", "world_size", "rank")
                if key in state and state[key] != now[key]
            ]
            if differ:
                raise ValueError(
                    f"cannot resume epoch {state['epoch']} after batch {state['batches']}: the "
                    f"saved state had {', '.join(differ)}"
                )
        self._end_running()
        self._cancel_ahead()
        if state["seed"] != self.seed:
            self.seed = state["seed"]
            self._reopen_backend()  # workers hold the seed they were started with
        self._next_epoch, self._resume_at = int(state["epoch"]), int(state["batches"])

    def __iter__(self) -> Iterator:
        return _Epoch(self)

    def _begin_epoch(self, iterator: _Epoch):
        """The first batch is asked for: take the next epoch, and end any other in progress."""
        self._end_running()
        epoch, skip = self._next_epoch, self._resume_at
        self._next_epoch, self._resume_at = epoch + 1, 0
        progress = self._progress = [epoch, skip]
        self._live = weakref.ref(iterator)
        plans = self.plan_epoch(epoch)
        pending = None
        if self._ahead is not None and skip == 0:  # submitted while the last epoch ended
            pending = self._ahead.take(epoch, plans)
        self._cancel_ahead()
        if pending:
            plans = plans[len(pending) :]
        self._running = self._run(plans[skip:], progress, pending)
        return self._running

    def _cancel_ahead(self) -> None:
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead.cancel()

    def _end_running(self) -> None:
        """End the epoch in progress, if any: its iterator stops, its batches in flight are
        dropped and the state no longer points into it."""
        running, self._running = self._running, None
        self._progress = self._live = None
        if running is not None:
            running.close()

    def _run(self, plans: list[BatchPlan], progress: list[int], pending: deque | None = None):
        """Deliver ``plans`` (the rest of epoch ``progress[0]``), after ``pending`` (its first
        batches, submitted ahead by the epoch before)."""
        backend = self._ensure_started()
        pending = deque() if pending is None else pending
        backend.set_epoch_plans([plan for plan, _ in pending] + plans)
        todo = iter(plans)
        finished = False
        if self.tracer is not None:
            self.tracer.start()
            self.tracer.write_meta(
                backend=self.backend_name,
                workers=backend.workers,
                batch_size=self.batch_size,
                epoch=progress[0],
            )
        timing = LoopClock(self.tracer, self.backend_name, getattr(backend, "loop_node", None))
        try:
            self._submit(backend, pending, todo, progress[0])
            while pending:
                timing.ask()
                result = self._watchdog.wait(backend, *pending.popleft())
                self._submit(backend, pending, todo, progress[0])
                timing.arrived()
                batch = self._deliver(result)
                timing.hand_over(
                    batch=result.plan.number,
                    epoch=result.plan.epoch,
                    images=0 if result.images is None else len(result.images),
                    worker=(
                        result.spans,
                        result.pid,
                        result.worker,
                        result.host or None,
                        result.node or None,
                    ),
                    transfer=result.transfer,
                    lost_on=result.lost_on,
                )
                progress[1] += 1
                if batch is not None:
                    yield batch
                # the loop holds the batch, not this generator: a process-backend slot is
                # free again as soon as the loop lets go of it
                batch = result = None
                timing.back()
            finished = True
            if self._progress is progress:  # the epoch is over: the state is the next one
                self._progress = None
        except GeneratorExit:  # the loop stopped early: let in-flight work finish, keep workers
            timing.back()  # the step of the last batch ended when the loop let go
            for _, handle in pending:
                handle.cancel()
            raise
        finally:
            if self.tracer is not None:
                self.tracer.stop()
            reason = None if finished else _closing_reason()
            if reason is not None:
                self._running = None  # this generator: it cannot close itself
                self._close(reason)

    def _submit(self, backend, pending: deque, todo: Iterator[BatchPlan], epoch: int) -> None:
        """Fill the room in flight (``capacity``) with this epoch's next batches; once all are
        submitted, with the next epoch's first ones (``augment.loading.ahead``)."""
        ahead = self._ahead
        room = self.capacity - len(pending) - (0 if ahead is None else len(ahead.pending))
        while room > 0 and (plan := next(todo, None)) is not None:
            pending.append((plan, backend.submit(plan)))
            room -= 1
        if room <= 0 or not backend.crosses_epochs:
            return
        if ahead is None:
            ahead = self._ahead = Ahead(epoch + 1, self.plan_epoch(epoch + 1))
        if ahead.epoch == epoch + 1:
            ahead.submit(backend, room)

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
        images = result.images
        if not isinstance(images, torch.Tensor):  # no copy: the tensor views the array
            images = torch.from_numpy(images)
        batch = _assemble(images.permute(0, 3, 1, 2), result.targets, self.image_key)
        return pin(batch) if self._pin else batch

    def worker_pids(self) -> list[int]:
        """The process ids of the running workers (empty before the first epoch, and for
        backends whose workers are threads)."""
        return [] if self._backend is None else self._backend.worker_pids()

    def worker_nodes(self) -> dict[int, str]:
        """``{worker: node}`` of the running workers on a cluster (the Ray backend: the node
        id's first 8 hex digits, as in the trace); empty for other backends."""
        nodes = getattr(self._backend, "worker_nodes", None)
        return {} if nodes is None else nodes()

    def _open_backend(self) -> None:
        self._backend = backends.create(
            self.backend_name, self.workers, self.capacity, **self._backend_options
        )
        self._started = False
        self._finalizer = weakref.finalize(self, self._backend.close)

    def _reopen_backend(self) -> None:
        if self._backend is not None and self._started:
            self._finalizer()
            self._open_backend()

    def _ensure_started(self):
        if self._backend is None:
            raise RuntimeError(f"this Loader is closed: {self._closed_by}")
        if not self._started:
            if getattr(mp.current_process(), "_inheriting", False):
                worker.refuse_reimported_main()
            task = BatchTask(
                self._source,
                self._transform,
                self.seed,
                self.on_error,
                self.targets,
                self._moves,
                self._target_options,
                self.pad_targets,
            )
            self._backend.start(task)
            self._started = True
        return self._backend

    def close(self) -> None:
        """Stop the workers and free shared memory. The loader cannot be used afterwards."""
        self._close("close() was called")

    def _close(self, reason: str) -> None:
        self._end_running()
        self._cancel_ahead()
        if self._backend is not None:
            self._finalizer()
            self._backend = None
            self._closed_by = reason
        self._watchdog.close()
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


class _Epoch:
    """``iter(loader)``: takes its epoch when the first batch is asked for, so a framework
    that calls ``iter()`` to check the loader (Lightning does) uses up nothing."""

    def __init__(self, loader: Loader):
        self._loader, self._batches = loader, None

    def __iter__(self) -> _Epoch:
        return self

    def __next__(self):
        if self._batches is None:
            self._batches = self._loader._begin_epoch(self)
        return next(self._batches)

    def close(self) -> None:
        if self._batches is not None:
            self._batches.close()


def _assemble(images: torch.Tensor, targets: list, image_key: str):
    """The batch in the samples' structure: images alone, (images, *targets) or a dict with
    the images under ``image_key``."""
    if isinstance(targets, TargetBatch):
        return targets.assemble(images, torch.from_numpy, default_collate, image_key)
    if isinstance(targets[0], dict):
        return {image_key: images, **default_collate(targets)}
    if not targets[0]:
        return images
    return (images, *default_collate(targets))


_ARGUMENTS = [  # the names Loader takes, offered for a misspelt keyword
    name
    for name, p in inspect.signature(Loader.__init__).parameters.items()
    if name not in ("self", "dataset") and p.kind is not p.VAR_KEYWORD
]


def _closing_reason() -> str | None:
    """Why an epoch that did not finish closes the loader; None when it should not (the loop
    let go of it early, or a new epoch replaced it)."""
    exc = sys.exc_info()[1]
    if exc is None or isinstance(exc, GeneratorExit):
        return None
    if isinstance(exc, KeyboardInterrupt):
        return (
            "a KeyboardInterrupt (Ctrl-C, or a notebook's stop button) during an epoch "
            "closed it and its workers; make a new Loader"
        )
    return f"an error during an epoch closed it: {type(exc).__name__}: {exc}"
