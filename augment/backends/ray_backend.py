"""Ray actors run the batches: the same pipeline and the same trace across a cluster.

Invariants:
- ``workers`` actors (one CPU each), started once per loader; the ``n``-th batch submitted
  goes to actor ``n % workers`` (counted across epochs, so that epochs of a few batches, whose
  next epoch's first batches are submitted early, load every actor alike), which keeps the
  dataset and transform it was given at start;
- at most ``capacity`` batches submitted and not collected (backpressure), results in order;
- images come back through Ray's object store and are copied out (the ``transfer`` span);
- ``ray_address`` (or ``RAY_ADDRESS``) connects to a running cluster and leaves it running;
  without one a local Ray is started for the loader's lifetime, unless this process already
  runs one, which is then used as it is.
"""

from __future__ import annotations

import copy
import os
import time

from augment.backends import worker as worker_setup
from augment.backends.base import Backend, register
from augment.batch import BatchResult, Span, make_batch
from augment.watchdog import Held

try:
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError, RayError
except ImportError:  # the backend stays registered and says what to install
    ray = None

READY_TIMEOUT_S = 120.0


class _Worker:
    """One Ray actor: makes batches of the task it was started with."""

    def __init__(self, task, lane: int, threads: int = 1):
        from augment.backends import worker

        worker.set_up(threads, ignore_sigint=False)
        self.task, self.lane = task, lane

    def ready(self) -> int:
        return os.getpid()

    def make(self, plan) -> BatchResult:
        return make_batch(self.task, plan, worker=self.lane)


class _Handle:
    def __init__(self, backend: RayBackend, ref, lane: int, plan):
        self.backend, self.ref, self.lane, self.plan = backend, ref, lane, plan

    def result(self) -> BatchResult:
        try:
            result = ray.get(self.ref)
        except RayActorError as exc:
            raise RuntimeError(f"ray backend: worker {self.lane} died: {exc}") from exc
        finally:
            self.backend._lane_of.pop((self.plan.epoch, self.plan.number), None)
        t0, c0 = time.time_ns(), time.thread_time_ns()
        # out of the read-only object store
        if result.images is not None and not result.images.flags.writeable:
            result.images = result.images.copy()
        result.targets = copy.deepcopy(result.targets)
        result.transfer = Span("transfer", t0, time.time_ns(), time.thread_time_ns() - c0)
        return result

    def cancel(self) -> None:
        try:
            ray.get(self.ref)
        except RayError:
            pass
        finally:
            self.backend._lane_of.pop((self.plan.epoch, self.plan.number), None)


def _free_cpus(wanted: int, patience_s: float = 10.0) -> float:
    """Free CPUs, waiting a little for actors killed just before (Ray frees them async)."""
    deadline = time.monotonic() + patience_s
    while True:
        free = ray.available_resources().get("CPU", 0)
        if free >= wanted or time.monotonic() > deadline:
            return free
        time.sleep(0.1)


@register
class RayBackend(Backend):
    name = "ray"

    def __init__(self, workers, capacity, ray_address: str | None = None, threads: int = 1):
        super().__init__(workers, capacity)
        if ray is None:
            raise ValueError("backend 'ray' needs Ray: pip install 'augment[ray]'")
        self.threads = worker_setup.check_threads(threads)
        self.address = ray_address or os.environ.get("RAY_ADDRESS") or None
        self._owns_ray = False
        self._actors: list = []
        self._submitted = 0
        self._lane_of: dict[tuple[int, int], int] = {}  # (epoch, batch) in flight: its actor

    def start(self, task):
        super().start(task)
        if not ray.is_initialized():
            ray.init(
                address=self.address,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
            self._owns_ray = self.address is None
        cpus = ray.cluster_resources().get("CPU", 0)
        free = _free_cpus(self.workers) if cpus >= self.workers else 0
        if free < self.workers:
            self.close()
            raise ValueError(
                f"ray backend: {self.workers} workers need {self.workers} CPUs, the cluster has "
                f"{cpus:g} ({free:g} free; other loaders' workers hold the rest)"
            )
        actor = ray.remote(num_cpus=1, max_restarts=0)(_Worker)
        task_ref = ray.put(task)
        self._actors = [actor.remote(task_ref, lane, self.threads) for lane in range(self.workers)]
        try:
            self._pids = ray.get([a.ready.remote() for a in self._actors], timeout=READY_TIMEOUT_S)
        except (GetTimeoutError, RayActorError) as exc:
            self.close()
            raise RuntimeError(f"ray backend: workers did not start: {exc}") from exc

    def submit(self, plan):
        lane, self._submitted = self._submitted % self.workers, self._submitted + 1
        self._lane_of[(plan.epoch, plan.number)] = lane
        return _Handle(self, self._actors[lane].make.remote(plan), lane, plan)

    def worker_pids(self) -> list[int]:
        return list(getattr(self, "_pids", []))

    def holder(self, plan):
        # Actors share no memory with the loop: an actor runs its batches in order, so the
        # one given this batch is on it while the loop waits; since: unknown.
        lane = self._lane_of.get((plan.epoch, plan.number))
        if lane is None:
            return None
        pids = self.worker_pids()
        return Held(lane, pids[lane] if lane < len(pids) else 0)

    def stop(self, held):
        if held.lane < len(self._actors):
            ray.kill(self._actors[held.lane])
        return "the Ray actor was killed (its task with it) and the loader closed"

    def close(self):
        actors, self._actors = self._actors, []
        if ray is None or not ray.is_initialized():
            return
        for actor in actors:
            ray.kill(actor)
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False
