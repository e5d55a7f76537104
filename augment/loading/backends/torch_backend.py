"""torch.utils.data.DataLoader workers run the batches: what a PyTorch user already trusts,
with torch's own shared-memory transfer, order and worker-death watchdog.

Each worker records the batch it makes in shared ``Lanes`` (written in ``_Plans``), so the
loader's watchdog names and kills a stuck one. A worker makes every batch in a new storage
in shared memory (``_SharedBuffer``), which torch sends to the loop as a handle (a file
descriptor): the pixels are written once, where the loop reads them, and no copy is made on
the way (torch would otherwise copy the batch into shared memory as it sends it). The
worker lets go of the storage once sent, so a batch the loop holds is the loop's alone.
When /dev/shm cannot hold a batch, the worker's "No space left on device" (or its death by
SIGBUS) becomes the loader's error saying what to change.

One DataLoader iterator serves every epoch: its sampler is fed the plans as the Loader
submits them (``_Feed``), so the next epoch's first batches are in flight while this one's
last are consumed, as on every backend. Results come back in the order submitted; a
cancelled batch is still received, in its turn, and dropped.
"""

from __future__ import annotations

import functools
import logging
import math
import multiprocessing as mp
import os
import signal
from collections import deque

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from augment.loading import shm as shm_check
from augment.loading.backends import worker as worker_setup
from augment.loading.backends.base import Backend, register
from augment.loading.batch import BatchPlan, BatchResult, make_batch
from augment.loading.watchdog import Lanes
from augment.trace import torch_internals

log = logging.getLogger("augment")


class _Plans(Dataset):
    """A dataset whose items are batch plans: DataLoader's sampler hands a worker the plan
    itself, so every epoch can bring new plans to the same persistent workers. The task
    travels by value (cloudpickle bytes) and is unpacked in the worker on first use, so a
    failure to load it reaches the loop as torch re-raises a worker's exception."""

    def __init__(self, task, lanes: Lanes):
        self.packed, self.size, self._task = worker_setup.pack(task), len(task.dataset), None
        self.lanes = lanes

    def __getstate__(self):
        return {"packed": self.packed, "size": self.size, "_task": None, "lanes": self.lanes}

    def __getitem__(self, plan: BatchPlan) -> BatchResult:
        if self._task is None:
            self._task = worker_setup.unpack(self.packed)
        info = torch.utils.data.get_worker_info()
        if info is None:
            return make_batch(self._task, plan)
        buffer = _SharedBuffer()
        result = make_batch(self._task, plan, buffer, worker=info.id, lane=self.lanes.lane(info.id))
        if result.images is not None:
            result.images = buffer.tensor(result.images)
        return result

    def __len__(self) -> int:
        return self.size


class _Feed(torch.utils.data.Sampler):
    """The DataLoader's sampler: the plans submitted and not yet sent to a worker. Its
    iterator is itself, empty (``StopIteration``) until a plan is fed, then drawn from again
    (``torch_internals.pull_index``): one iterator, and one DataLoader iterator, for every
    epoch."""

    def __init__(self):
        self.plans: deque[BatchPlan] = deque()

    def __iter__(self):
        return self

    def __next__(self) -> BatchPlan:
        if not self.plans:
            raise StopIteration
        return self.plans.popleft()


class _SharedBuffer:
    """A worker's batch buffer (``make_batch``'s ``buffer``): a numpy view of a new storage
    in shared memory, made there from the start, so the batch is sent as it was written.
    Allocated in the worker, not when the queue's feeder thread pickles it, so that a full
    /dev/shm is an error the loop receives: in the feeder thread it is only printed, the
    batch is lost and the loop waits forever."""

    def __init__(self):
        self.storage: torch.UntypedStorage | None = None
        self.dtype: torch.dtype | None = None

    def __call__(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        try:  # the dtypes torch has (not big-endian ones, say): others go back pickled
            tdtype = torch.from_numpy(np.empty(0, dtype)).dtype
        except (TypeError, ValueError):
            return np.empty(shape, dtype)
        count = math.prod(shape)
        if count == 0:
            return np.empty(shape, dtype)
        self.storage, self.dtype = torch_internals.shared_storage(count * dtype.itemsize), tdtype
        return self._flat(count).numpy().reshape(shape)

    def _flat(self, count: int) -> torch.Tensor:
        return torch.empty(0, dtype=self.dtype).set_(self.storage, 0, (count,))

    def tensor(self, images: np.ndarray) -> np.ndarray | torch.Tensor:
        """``images`` (the batch, the buffer's first samples) as a tensor on the shared
        storage; anything else unchanged."""
        if (
            self.storage is None
            or not isinstance(images, np.ndarray)
            or images.size == 0
            or images.ctypes.data != self.storage.data_ptr()
            or not images.flags.c_contiguous
        ):
            return images
        return self._flat(images.size).view(images.shape)


def _to_tensors(result: BatchResult) -> BatchResult:
    """Runs in the worker: images not already in shared memory (a buffer torch has no dtype
    for) are copied into it here, for the reason ``_SharedBuffer`` says."""
    if isinstance(result.images, np.ndarray):
        result.images = torch.from_numpy(result.images).share_memory_()
    return result


def _worker_init(threads: int, _worker_id: int) -> None:
    worker_setup.set_up(threads)


class _Handle:
    def __init__(self, backend: TorchBackend, plan: BatchPlan):
        self.backend, self.plan, self.cancelled = backend, plan, False

    def result(self) -> BatchResult:
        return self.backend._next_result(self)

    def cancel(self) -> None:
        self.cancelled = True
        self.backend._drop_cancelled()


@register
class TorchBackend(Backend):
    name = "torch"

    def __init__(
        self, workers, capacity, timeout: float = 0, start_method: str = "spawn", threads: int = 1
    ):
        super().__init__(workers, capacity)
        if start_method not in torch.multiprocessing.get_all_start_methods():
            raise ValueError(
                f"start_method must be one of {torch.multiprocessing.get_all_start_methods()}, "
                f"got {start_method!r}"
            )
        self.timeout, self.start_method = timeout, start_method
        self.threads = worker_setup.check_threads(threads)
        self._loader: DataLoader | None = None
        self._iter = None
        self._batch_nbytes = 0  # the largest batch yet, for the shared-memory error

    def start(self, task):
        super().start(task)
        self._sampler = _Feed()
        self._order: deque[_Handle] = deque()  # submitted, in order, not yet received
        prefetch = max(1, self.capacity // self.workers)
        self.lanes = Lanes(self.workers, mp.get_context(self.start_method))
        self._loader = DataLoader(
            _Plans(task, self.lanes),
            batch_size=None,
            sampler=self._sampler,
            num_workers=self.workers,
            collate_fn=_to_tensors,
            prefetch_factor=prefetch,
            persistent_workers=True,
            worker_init_fn=functools.partial(_worker_init, self.threads),
            timeout=self.timeout,
            # spawn by default: fork can deadlock once OpenCV's or torch's threads exist
            multiprocessing_context=self.start_method,
        )
        self._loader._augment_trace = False  # traced as the Loader's batches, not as a DataLoader

    def submit(self, plan):
        if self._iter is None:  # the workers start (once: they persist)
            self._iter = iter(self._loader)
        handle = _Handle(self, plan)
        self._order.append(handle)
        self._sampler.plans.append(plan)
        torch_internals.pull_index(self._iter)  # sent to a worker now
        return handle

    def _next_result(self, handle: _Handle) -> BatchResult:
        self._drop_cancelled()
        if not self._order or self._order[0] is not handle:
            raise RuntimeError("torch backend: batches are collected in the order submitted")
        self._order.popleft()
        plan = handle.plan
        try:
            result = next(self._iter)
        except RuntimeError as exc:
            if _out_of_shm(exc):
                raise shm_check.too_small(
                    self.name,
                    f"the batches in flight ({self.capacity}, prefetch x workers, and those "
                    "the training loop holds)",
                    self.capacity * self._batch_nbytes if self._batch_nbytes else None,
                    shm_check.free_bytes(),
                ) from exc
            if torch_internals.is_worker_death(exc):
                if worker_setup.REIMPORTED_MAIN_EXIT in self._exit_codes():
                    raise RuntimeError(
                        "torch backend: a DataLoader worker stopped because "
                        + worker_setup.REIMPORTED_MAIN.format(method=self.start_method)
                    ) from None
                raise RuntimeError(f"torch backend: a DataLoader worker died: {exc}") from exc
            raise
        if result.plan != plan:
            raise RuntimeError(
                f"torch backend: expected batch {plan.number}, got {result.plan.number}"
            )
        if isinstance(result.images, torch.Tensor):  # the worker's storage, not a copy
            self._batch_nbytes = max(self._batch_nbytes, result.images.nbytes)
        return result

    def _drop_cancelled(self) -> None:
        """Receive and drop the cancelled batches next in line, so that the workers are idle
        once everything submitted is collected or cancelled (shutting down workers in the
        middle of a batch made some abort on exit)."""
        while self._order and self._order[0].cancelled and self._iter is not None:
            self._order.popleft()
            try:
                next(self._iter)
            except Exception as exc:  # noqa: BLE001 - nobody wants this batch any more
                log.debug("torch backend: a cancelled batch failed: %s", exc)

    def worker_pids(self) -> list[int]:
        return [w.pid for w in self._workers()]

    def stop(self, held):
        if held.pid in self.worker_pids():  # not a pid reused since
            os.kill(held.pid, signal.SIGKILL)
        return "the worker was killed and the loader closed"

    def stop_all(self):
        for pid in self.worker_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:  # gone already
                pass
        return "every worker was killed and the loader closed"

    def _exit_codes(self) -> list[int | None]:
        for w in self._workers():
            w.join(0.5)  # a worker that just died may not be reaped yet
        return [w.exitcode for w in self._workers()]

    def _workers(self) -> list:
        return torch_internals.workers(self._loader)

    def close(self):
        loader, self._loader, self._iter = self._loader, None, None
        self._order = deque()
        try:
            torch_internals.shutdown_workers(loader)
        except RuntimeError as exc:  # a worker that dies on its way out lost nothing
            log.warning("torch backend: %s", exc)
        shm_check.forget(*torch_internals.release(loader))
        # whoever still holds this backend (a kept traceback's frames) holds nothing here
        self.lanes, self.task = None, None


def _out_of_shm(exc: RuntimeError) -> bool:
    """Whether a worker failed for want of shared memory: torch's "No space left on device"
    writing a batch's shared file, or a worker killed by SIGBUS (a sparse file's page that
    /dev/shm could not supply)."""
    text = str(exc)
    return ("</torch_" in text and "No space left on device" in text) or (
        torch_internals.is_worker_death(exc) and "Bus error" in text
    )
