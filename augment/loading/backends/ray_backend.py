"""Ray actors run the batches: the same pipeline and the same trace across a cluster, and an
epoch that survives losing a node.

Invariants:
- ``workers`` actors (one CPU each, spread over the nodes), started once per loader; the
  ``n``-th batch submitted goes to worker ``n % workers`` while every worker lives (counted
  across epochs, so that epochs of a few batches, whose next epoch's first batches are
  submitted early, load every worker alike), else to the living worker with the fewest
  batches in hand; each keeps the dataset and transform it was given at start;
- at most ``capacity`` batches submitted and not collected (backpressure), results in order;
- images come back through Ray's object store and are copied out (the ``transfer`` span);
  every result names the node that made it (its spans carry it into the trace);
- a worker lost mid-epoch (its node removed or dead, its process killed) loses nothing: the
  batches it held are made again on the workers left, at once, and a warning names the
  node and the batches. A batch is a pure function of (seed, epoch, batch), so the epoch
  yields exactly the batches of an uninterrupted run, each once. A replacement is started
  where the cluster has a free CPU and joins as soon as it is ready; at the start of every
  epoch, lost workers are replaced where the cluster has room again (a node that joined is
  used from the next epoch). Only when no worker is left and none starts within
  ``replace_timeout`` seconds is it an error; a batch lost ``MAX_ATTEMPTS`` times (a batch
  that kills whoever makes it) is one too;
- ``ray_address`` (or ``RAY_ADDRESS``) connects to a running cluster and leaves it running;
  without one a local Ray is started for the loader's lifetime, unless this process already
  runs one, which is then used as it is.
"""

from __future__ import annotations

import copy
import logging
import os
import time

from augment.loading.backends import worker as worker_setup
from augment.loading.backends.base import Backend, register
from augment.loading.batch import BatchResult, make_batch
from augment.loading.watchdog import Held, check_timeout
from augment.trace.schema import Span

try:
    import ray
    from ray.exceptions import GetTimeoutError, ObjectLostError, RayActorError, RayError
except ImportError:  # the backend stays registered and says what to install
    ray = None

log = logging.getLogger("augment")
READY_TIMEOUT_S = 120.0
REPLACE_TIMEOUT_S = 60.0
SPREAD_TIMEOUT_S = 10.0  # how long a worker may take to start on a node that joined
MAX_ATTEMPTS = 3  # times one batch may be lost with its worker before it is an error
_MAX_NAMED = 10  # batches listed in a warning


def node_name(node_id: str) -> str:
    """How spans, warnings and the report name a Ray node: its id's first 8 hex digits."""
    return node_id[:8]


class _Worker:
    """One Ray actor: makes batches of the task it was started with."""

    def __init__(self, task, lane: int, threads: int = 1):
        from augment.loading.backends import worker

        worker.set_up(threads, ignore_sigint=False)
        self.task, self.lane = task, lane
        context = ray.get_runtime_context()
        self.node = node_name(context.get_node_id())

    def ready(self) -> tuple[int, str, str, str]:
        node_id = ray.get_runtime_context().get_node_id()
        return os.getpid(), self.node, ray.util.get_node_ip_address(), node_id

    def make(self, plan) -> BatchResult:
        result = make_batch(self.task, plan, worker=self.lane)
        result.node = self.node
        return result


class _Handle:
    """One batch in flight: which worker has it (``lane``, ``actor``) and how often it was
    lost; the backend moves it to another worker when its own is lost."""

    def __init__(self, backend: RayBackend, plan, lane: int):
        self.backend, self.plan = backend, plan
        self.attempts, self.lost_on = 0, []
        self.lane, self.actor, self.ref = lane, None, None

    def result(self) -> BatchResult:
        while True:
            try:
                result = ray.get(self.ref)
                break
            except (RayActorError, ObjectLostError) as exc:
                self.backend._lost(self, exc)  # moves this batch (and its worker's) or raises
        self.backend._collected(self)
        t0, c0 = time.time_ns(), time.thread_time_ns()
        # out of the read-only object store
        if result.images is not None and not result.images.flags.writeable:
            result.images = result.images.copy()
        result.targets = copy.deepcopy(result.targets)
        result.lost_on = list(self.lost_on)
        result.transfer = Span("transfer", t0, time.time_ns(), time.thread_time_ns() - c0)
        return result

    def cancel(self) -> None:
        self.backend._collected(self)
        try:
            ray.get(self.ref)
        except RayError:
            pass


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

    def __init__(
        self,
        workers,
        capacity,
        ray_address: str | None = None,
        threads: int = 1,
        replace_timeout: float = REPLACE_TIMEOUT_S,
    ):
        super().__init__(workers, capacity)
        if ray is None:
            raise ValueError("backend 'ray' needs Ray: pip install 'augment[ray]'")
        self.threads = worker_setup.check_threads(threads)
        self.replace_timeout = check_timeout(replace_timeout)
        if self.replace_timeout is None:
            raise ValueError("replace_timeout must be a number of seconds > 0")
        self.address = ray_address or os.environ.get("RAY_ADDRESS") or None
        self._owns_ray = False
        self._task_ref = None
        self.loop_node: str | None = None  # the node the training loop runs on
        self._actors: dict[int, object] = {}  # lane -> the living actor
        self._where: dict[int, tuple[int, str, str]] = {}  # lane -> (pid, node, ip)
        self._starting: dict[int, tuple] = {}  # lane -> (actor, ready ref): replacements
        self._open: dict[int, list[_Handle]] = {}  # lane -> batches it holds, not collected
        self._submitted = 0  # batches submitted, every epoch: the next one's lane
        self._waited: set[int] = set()  # lanes whose replacement an epoch waited for
        self._tried: set[str] = set()  # nodes a worker was moved to, or tried
        self._stopped: set[int] = set()  # lanes the watchdog stopped: no remaking there
        self.remade: list[tuple[str, int, int]] = []  # (node lost, epoch, batch) made again

    # -- starting and replacing workers ---------------------------------------------------
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
        self._task_ref = ray.put(task)
        self.loop_node = node_name(ray.get_runtime_context().get_node_id())  # the driver's
        for lane in range(self.workers):
            self._launch(lane)
        try:
            self._join(list(self._starting), READY_TIMEOUT_S, strict=True)
        except (GetTimeoutError, RayActorError) as exc:
            self.close()
            raise RuntimeError(f"ray backend: workers did not start: {exc}") from exc

    def _launch(self, lane: int, node_id: str | None = None) -> None:
        """Start a worker for ``lane``: anywhere (spread over the nodes) or on ``node_id``."""
        strategy = "SPREAD"
        if node_id is not None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            strategy = NodeAffinitySchedulingStrategy(node_id, soft=False)
        actor = ray.remote(num_cpus=1, max_restarts=0, scheduling_strategy=strategy)(_Worker)
        handle = actor.remote(self._task_ref, lane, self.threads)
        self._starting[lane] = (handle, handle.ready.remote())

    def _join(self, lanes: list[int], timeout: float, strict: bool = False) -> list[int]:
        """Wait up to ``timeout`` s for the replacements of ``lanes``; those ready join.
        ``strict``: any that fails or is late is an error (at start); else it is dropped."""
        refs = {self._starting[lane][1]: lane for lane in lanes if lane in self._starting}
        if not refs:
            return []
        if strict:
            answers = ray.get(list(refs), timeout=timeout)
            ready = list(refs)
        else:
            ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
            answers = []
            for ref in list(ready):
                try:
                    answers.append(ray.get(ref))
                except RayError as exc:  # it died starting: forget it
                    log.warning("ray backend: a replacement worker failed to start: %s", exc)
                    self._starting.pop(refs[ref], None)
                    ready.remove(ref)
        joined = []
        for ref, where in zip(ready, answers):
            lane = refs[ref]
            actor, _ = self._starting.pop(lane)
            old = self._actors.get(lane)
            if old is not None:  # a move to a node that joined: the new one takes over
                ray.kill(old)
            self._actors[lane], self._where[lane] = actor, where
            self._open.setdefault(lane, [])
            self._waited.discard(lane)
            joined.append(lane)
        return joined

    def _promote(self) -> None:
        """Replacements that became ready since last asked join now (never waits)."""
        if self._starting:
            joined = self._join(list(self._starting), 0)
            for lane in joined:
                pid, node, *_ = self._where[lane]
                log.info("ray backend: worker %d started again (pid %d, node %s)", lane, pid, node)

    def _replace(self, lanes: list[int]) -> None:
        """Ask for replacements of ``lanes``: Ray starts each where a CPU is free, now or
        when one comes free (a node that joins); each joins when ready (``_promote``)."""
        for lane in lanes:
            if lane not in self._starting and lane not in self._actors:
                self._launch(lane)

    def set_epoch_plans(self, plans):
        """A new epoch: lost workers are replaced. Replacements asked for and not yet ready
        are waited for once, up to ``replace_timeout``, where the cluster has the CPUs for
        every worker (else they join whenever a node with room does)."""
        self._promote()
        if self._task_ref is None:
            return
        self._replace([lane for lane in range(self.workers) if lane not in self._actors])
        pending = [lane for lane in self._starting if lane not in self._waited]
        if pending:
            room = ray.cluster_resources().get("CPU", 0) >= self.workers
            self._join(pending, self.replace_timeout if room else 0)
            self._waited.update(lane for lane in pending if lane in self._starting)
        self._spread()
        left = self.workers - len(self._actors)
        if left:
            log.warning(
                "ray backend: epoch %d runs on %d of %d workers: the cluster has no free CPU "
                "for the %d lost (they join as soon as it has)",
                plans[0].epoch if plans else -1,
                len(self._actors),
                self.workers,
                left,
            )

    def _spread(self) -> None:
        """Between epochs: a node with CPUs and none of the workers (one that joined) takes
        a worker from the node that holds the most, while that one holds two or more."""
        mine: dict[str, list[int]] = {}
        for lane, where in self._where.items():
            mine.setdefault(where[3], []).append(lane)
        for node in ray.nodes():
            crowded = max(mine.values(), key=len, default=[])
            if len(crowded) < 2:
                return
            node_id = node["NodeID"]
            if not node["Alive"] or node_id in mine or node_id in self._tried:
                continue
            if node.get("Resources", {}).get("CPU", 0) < 1:
                continue
            self._tried.add(node_id)  # once: a node that has no room now is not waited for
            lane = crowded[-1]
            if self._open.get(lane):  # batches in hand (an epoch left early): not moved
                continue
            self._launch(lane, node_id)
            if self._join([lane], SPREAD_TIMEOUT_S):
                crowded.pop()
                mine[node_id] = [lane]
                log.info("ray backend: worker %d moved to node %s", lane, node_name(node_id))
                continue
            late = self._starting.pop(lane, None)  # no room there after all: it stays put
            if late is not None:
                ray.kill(late[0])

    # -- batches ----------------------------------------------------------------------------
    def submit(self, plan):
        self._promote()
        lane, self._submitted = self._submitted % self.workers, self._submitted + 1
        handle = _Handle(self, plan, lane)
        self._send(handle)
        return handle

    def _send(self, handle: _Handle) -> None:
        """Give ``handle``'s batch to a living worker: its own lane's if alive, else the one
        with the fewest batches in hand."""
        if handle.lane not in self._actors:
            if not self._actors:
                self._wait_for_a_worker(handle)
            handle.lane = min(self._actors, key=lambda lane: (len(self._open[lane]), lane))
        handle.actor = self._actors[handle.lane]
        handle.ref = handle.actor.make.remote(handle.plan)
        self._open[handle.lane].append(handle)

    def _collected(self, handle: _Handle) -> None:
        held = self._open.get(handle.lane, [])
        if handle in held:
            held.remove(handle)

    def _lost(self, handle: _Handle, exc: Exception) -> None:
        """``handle``'s worker (or its result's node) is gone: make again every batch that
        worker held, on the workers left; raise where that cannot be."""
        lane = handle.lane
        if lane in self._stopped:  # stopped by the watchdog: its error is the one to see
            raise RuntimeError(f"ray backend: worker {lane} was stopped: {exc}") from exc
        if isinstance(exc, ObjectLostError) and self._actors.get(lane) is handle.actor:
            where, moved = "its node's object store", []  # only the result is gone
        else:
            where, moved = self._drop_lane(lane, handle.actor)
        if handle not in moved:
            self._collected(handle)
            moved.append(handle)
        for h in moved:
            h.attempts += 1
            h.lost_on.append(where.split()[1] if where.startswith("node ") else "")
            if h.attempts >= MAX_ATTEMPTS:
                raise RuntimeError(
                    f"ray backend: workers died {h.attempts} times making batch "
                    f"{h.plan.number} of epoch {h.plan.epoch} (samples "
                    f"{', '.join(self.task.source.name(i) for i in h.plan.indices[:8])}"
                    f"{' ...' if len(h.plan.indices) > 8 else ''}): does the batch itself kill "
                    f"them? Last: {type(exc).__name__}: {str(exc).splitlines()[0]}"
                ) from exc
        for h in moved:
            self._send(h)
            self.remade.append((h.lost_on[-1], h.plan.epoch, h.plan.number))
        batches = sorted(h.plan.number for h in moved)
        named = ", ".join(map(str, batches[:_MAX_NAMED]))
        more = f" and {len(batches) - _MAX_NAMED} more" if len(batches) > _MAX_NAMED else ""
        to = sorted({h.lane for h in moved})
        log.warning(
            "ray backend: worker %d on %s was lost (%s); batch%s %s%s of epoch %d made again "
            "on worker%s %s",
            lane,
            where,
            type(exc).__name__,
            "es" if len(batches) > 1 else "",
            named,
            more,
            handle.plan.epoch,
            "s" if len(to) > 1 else "",
            ", ".join(map(str, to)),
        )

    def _drop_lane(self, lane: int, actor) -> tuple[str, list[_Handle]]:
        """Forget the lost worker of ``lane`` (if ``actor`` is still the lane's) and start a
        replacement where there is room; returns where it was and the batches it held."""
        if self._actors.get(lane) is not actor:
            return "a worker already replaced", []
        pid, node, ip, _ = self._where.pop(lane)
        del self._actors[lane]
        held = self._open.pop(lane, [])
        try:
            ray.kill(actor)  # gone already, or unreachable: make sure it holds no CPU
        except RayError:
            pass
        self._replace([lane])
        return f"node {node} ({ip}, pid {pid})", held

    def _wait_for_a_worker(self, handle: _Handle) -> None:
        """No worker is left: wait up to ``replace_timeout`` for a replacement."""
        self._replace(list(range(self.workers)))
        deadline = time.monotonic() + self.replace_timeout
        while not self._actors and time.monotonic() < deadline:
            self._join(list(self._starting), min(1.0, max(0.0, deadline - time.monotonic())))
            self._replace(list(range(self.workers)))  # any that failed to start: again
        if not self._actors:
            raise RuntimeError(
                f"ray backend: every worker was lost and none started again within "
                f"replace_timeout={self.replace_timeout:g} s (the cluster has "
                f"{ray.available_resources().get('CPU', 0):g} free CPUs); batch "
                f"{handle.plan.number} of epoch {handle.plan.epoch} cannot be made"
            )

    # -- watchdog and shutdown ----------------------------------------------------------------
    def worker_pids(self) -> list[int]:
        return [self._where[lane][0] for lane in sorted(self._where)]

    def worker_nodes(self) -> dict[int, str]:
        """``{worker: node}`` of the living workers."""
        return {lane: self._where[lane][1] for lane in sorted(self._where)}

    def holder(self, plan):
        # Actors share no memory with the loop: the batch is its worker's, which runs its
        # batches in order, so it is on this one while the loop waits; since: unknown.
        for lane, held in self._open.items():
            if any(h.plan == plan for h in held) and lane in self._where:
                return Held(lane, self._where[lane][0])
        return None

    def stop(self, held):
        actor = self._actors.get(held.lane)
        if actor is not None:
            self._stopped.add(held.lane)
            ray.kill(actor)
        return "the Ray actor was killed (its task with it) and the loader closed"

    def close(self):
        actors = list(self._actors.values()) + [a for a, _ in self._starting.values()]
        self._actors, self._starting, self._open, self._where = {}, {}, {}, {}
        if ray is None or not ray.is_initialized():
            return
        for actor in actors:
            try:
                ray.kill(actor)
            except RayError:
                pass
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False
