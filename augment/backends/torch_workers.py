"""torch.utils.data.DataLoader workers run the batches: what a PyTorch user already trusts,
with torch's own shared-memory transfer, order and worker-death watchdog."""

from __future__ import annotations

import logging

import torch
from torch.utils.data import DataLoader, Dataset

from augment.backends.base import Backend, Done, register
from augment.backends.process import _quiet_native_threads
from augment.batch import BatchPlan, BatchResult, make_batch

log = logging.getLogger("augment")


class _Plans(Dataset):
    """A dataset whose items are batch plans: DataLoader's sampler hands a worker the plan
    itself, so every epoch can bring new plans to the same persistent workers."""

    def __init__(self, task):
        self.task = task

    def __getitem__(self, plan: BatchPlan) -> BatchResult:
        info = torch.utils.data.get_worker_info()
        return make_batch(self.task, plan, worker=info.id if info is not None else -1)

    def __len__(self) -> int:
        return len(self.task.dataset)


class _EpochPlans(torch.utils.data.Sampler):
    def __init__(self):
        self.plans: list[BatchPlan] = []

    def __iter__(self):
        return iter(self.plans)

    def __len__(self) -> int:
        return len(self.plans)


def _to_tensors(result: BatchResult) -> BatchResult:
    """Runs in the worker: images become a tensor, which torch moves through shared memory."""
    if result.images is not None:
        result.images = torch.from_numpy(result.images)
    return result


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)
    _quiet_native_threads()


class _Handle:
    def __init__(self, backend: TorchBackend, plan: BatchPlan):
        self.backend, self.plan = backend, plan

    def result(self) -> BatchResult:
        return self.backend._next_result(self.plan)

    def cancel(self) -> None:
        self.backend._abandon()


@register
class TorchBackend(Backend):
    name = "torch"

    def __init__(self, workers, capacity, timeout: float = 0):
        super().__init__(workers, capacity)
        self.timeout = timeout
        self._loader: DataLoader | None = None
        self._iter = None

    def start(self, task):
        super().start(task)
        if self.workers == 0:
            return
        self._sampler = _EpochPlans()
        prefetch = max(1, self.capacity // self.workers)
        self._loader = DataLoader(
            _Plans(task),
            batch_size=None,
            sampler=self._sampler,
            num_workers=self.workers,
            collate_fn=_to_tensors,
            prefetch_factor=prefetch,
            persistent_workers=True,
            worker_init_fn=_worker_init,
            timeout=self.timeout,
            # fork deadlocks once OpenCV's or torch's threads exist
            multiprocessing_context="spawn",
        )
        self._pending: list[BatchPlan] = []

    def submit(self, plan):
        if self.workers == 0:
            return Done(lazy=lambda: make_batch(self.task, plan))
        # The DataLoader pulls plans from the sampler itself; queue them for the next epoch.
        if self._iter is None:
            self._pending.append(plan)
        return _Handle(self, plan)

    def set_epoch_plans(self, plans: list[BatchPlan]) -> None:
        """The Loader hands over an epoch's plans before submitting them."""
        if self.workers == 0:
            return
        self._sampler.plans = list(plans)
        self._iter = iter(self._loader)

    def _next_result(self, plan: BatchPlan) -> BatchResult:
        try:
            result = next(self._iter)
        except RuntimeError as exc:
            if "worker" in str(exc) and ("exited unexpectedly" in str(exc) or "killed" in str(exc)):
                raise RuntimeError(f"torch backend: a DataLoader worker died: {exc}") from exc
            raise
        if result.plan != plan:
            raise RuntimeError(
                f"torch backend: expected batch {plan.number}, got {result.plan.number}"
            )
        if isinstance(result.images, torch.Tensor):
            result.images = result.images.numpy()
        return result

    def _abandon(self) -> None:
        """The loop stopped early: schedule nothing more and collect what is in flight, so the
        workers are idle when they are next reset or shut down (shutting down workers in the
        middle of a batch made some abort on exit)."""
        it, self._iter = self._iter, None
        if it is None:
            return
        self._sampler.plans.clear()  # the DataLoader's sampler iterator runs dry
        try:
            for _ in it:
                pass
        except Exception as exc:  # noqa: BLE001 - nobody wants these batches any more
            log.debug("torch backend: a batch abandoned with the epoch failed: %s", exc)

    def worker_pids(self) -> list[int]:
        it = getattr(self._loader, "_iterator", None)
        return [w.pid for w in getattr(it, "_workers", [])]

    def close(self):
        loader, self._loader, self._iter = self._loader, None, None
        it = getattr(loader, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            try:
                it._shutdown_workers()
            except RuntimeError as exc:  # a worker that dies on its way out lost nothing
                log.warning("torch backend: %s", exc)
