"""The watchdog: a batch the training loop waits for, and a worker has held too long, becomes a
warning or an error that names the backend, the worker (lane and pid), the batch, the epoch
and the samples, so a silent freeze (a read on a dead network mount, a transform that
deadlocks) becomes a visible one.

Invariants:
- workers write what they make into ``Lanes`` (per lane: the batch, since when, the pid and
  the sample it is at; shared memory for worker processes), one write per batch and per
  sample; the consumer reads it, so a worker stuck in C code is seen without its help;
- a batch's clock starts when a worker takes it (for Ray, whose actors share no memory, when
  the loop asks for it); only the batch the loop waits for is judged, never the training step;
- past ``WARN_AFTER_S`` one warning is logged (logger "augment"), once per loader; past the
  loader's ``timeout`` the backend stops the worker (``Backend.stop``) and the wait raises
  the ``RuntimeError``, after which the loader closes. A batch no worker has begun (workers
  stuck starting: an import or a dataset's unpickling that never returns) is judged from
  when the loop asked, past the timeout but never before ``START_GRACE_S`` (workers may
  take that long to start); then every worker is stopped (``Backend.stop_all``). A thread
  cannot be stopped: the thread backend releases the loop and abandons the thread; the
  serial backend, whose loop makes the batch itself, can only warn, and raises if the batch
  ever comes back;
- one daemon thread per loader, started by its first wait and ended by ``close()``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("augment")

# Seconds a batch may take before the one warning of a loader without a timeout (a module
# constant: tests shorten it).
WARN_AFTER_S = 60.0
# Seconds a batch no worker has begun may wait, at least, before the timeout applies to it:
# spawning workers, importing torch and unpickling a dataset can take that long.
START_GRACE_S = 60.0
_FIELDS = 5  # per lane: batch number (-1: idle), epoch, since (monotonic ns), pid, sample
_MAX_NAMED = 8  # samples listed in a message, besides the one the worker is at


def check_timeout(timeout) -> float | None:
    """``timeout`` as seconds, or None; a ``ValueError`` naming the argument otherwise."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise ValueError(f"timeout must be a number of seconds > 0, or None; got {timeout!r}")
    if not (timeout > 0 and math.isfinite(timeout)):
        raise ValueError(f"timeout must be a number of seconds > 0, or None; got {timeout!r}")
    return float(timeout)


@dataclass(frozen=True)
class Held:
    """Who holds a batch: lane, pid, since when (None: unknown) and the sample's position in
    the batch (None: unknown)."""

    lane: int
    pid: int
    since_ns: int | None = None
    position: int | None = None


class Lanes:
    """What each worker is making. With a multiprocessing context, the cells live in shared
    memory (a ``RawArray``, which leaves nothing in /dev/shm) and travel to worker processes
    as they start; without one, a list for threads."""

    def __init__(self, lanes: int, ctx=None):
        cells = [-1] * (lanes * _FIELDS)
        self._cells = ctx.RawArray("q", cells) if ctx is not None else cells

    def lane(self, lane: int) -> Lane:
        return Lane(self._cells, lane * _FIELDS)

    def find(self, epoch: int, number: int) -> Held | None:
        """The lane making batch ``number`` of ``epoch``; None when none has taken it."""
        cells = self._cells
        for at in range(0, len(cells), _FIELDS):
            if cells[at] != number:
                continue
            # the number is written last and read first and last: a lane that moved on
            # meanwhile is not mistaken for this one
            seen_epoch, since, pid, position = cells[at + 1 : at + 5]
            if cells[at] == number and seen_epoch == epoch:
                return Held(at // _FIELDS, pid, since, position)
        return None


class Lane:
    """One worker's cells: ``take`` a batch, ``at`` each sample, ``done``."""

    __slots__ = ("_cells", "_at")

    def __init__(self, cells, at: int):
        self._cells, self._at = cells, at

    def take(self, epoch: int, number: int, pid: int) -> None:
        c, at = self._cells, self._at
        c[at + 1], c[at + 2], c[at + 3], c[at + 4] = epoch, time.monotonic_ns(), pid, 0
        c[at] = number

    def at(self, position: int) -> None:
        self._cells[self._at + 4] = position

    def done(self) -> None:
        self._cells[self._at] = -1


class Watchdog:
    """Watches the batch the loop waits for; see the module's docstring."""

    def __init__(self, timeout: float | None, name: Callable[[int], str]):
        self.timeout, self._name = timeout, name
        self.error: RuntimeError | None = None
        self._waiting: tuple | None = None  # (backend, plan, when the loop asked: monotonic ns)
        self._warned = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wait(self, backend, plan, handle):
        """``handle.result()``, watched; the watchdog's error replaces the one a stopped
        worker caused."""
        if self.error is not None:
            raise self.error
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="augment-watchdog")
            self._thread.daemon = True
            self._thread.start()
        self._waiting = (backend, plan, time.monotonic_ns())
        try:
            result = handle.result()
        except Exception as exc:
            if self.error is not None:
                raise self.error from exc
            raise
        finally:
            self._waiting = None
        if self.error is not None:  # the batch came back, past the timeout, from a worker
            raise self.error  # that could not be stopped (serial) or was stopped as it ended
        return result

    def close(self) -> None:
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _watch(self) -> None:
        limits = [t for t in (self.timeout, WARN_AFTER_S) if t]
        poll = min(1.0, max(0.01, min(limits) / 10))
        while not self._stop.wait(poll):
            waiting = self._waiting
            if waiting is not None and self.error is None:
                try:
                    self._check(*waiting)
                except Exception:  # noqa: BLE001 - the watchdog must not die of a race
                    log.debug("watchdog: check failed", exc_info=True)

    def _check(self, backend, plan, asked_ns: int) -> None:
        held = backend.holder(plan)
        now = time.monotonic_ns()
        if held is None:  # no worker has taken it yet: stuck starting, or slow to start
            waited = (now - asked_ns) / 1e9
            if self.timeout is not None and waited > max(self.timeout, START_GRACE_S):
                self._unbegun_error(backend, plan, waited)
            elif waited > WARN_AFTER_S and not self._warned:
                self._warned = True
                log.warning(
                    "%s: the loop has waited %.1f s for batch %d of epoch %d, which no worker "
                    "has begun (are the workers still starting?); %s. %s",
                    f"{backend.name} backend",
                    waited,
                    plan.number,
                    plan.epoch,
                    self._samples(plan, None),
                    self._advice(),
                )
            return
        since = asked_ns if held.since_ns is None else held.since_ns
        elapsed = (now - since) / 1e9
        if self.timeout is not None and elapsed > self.timeout:
            facts = self._describe(
                backend.name, plan, held, elapsed, f", past Loader(timeout={self.timeout:g})"
            )
            outcome = backend.stop(held)
            if outcome is None:  # the loop makes the batch itself: nothing can interrupt it
                self._warned = True
                log.warning(
                    "%s; the %s backend makes batches in the training loop itself, which "
                    "cannot be interrupted: the error is raised if the batch ever comes back",
                    facts,
                    backend.name,
                )
                outcome = "the loader is closed"
            self.error = RuntimeError(f"{facts}; {outcome}")
        elif elapsed > WARN_AFTER_S and not self._warned:
            self._warned = True
            facts = self._describe(backend.name, plan, held, elapsed, " so far")
            log.warning("%s. %s", facts, self._advice())

    def _unbegun_error(self, backend, plan, waited: float) -> None:
        facts = (
            f"{backend.name} backend: the loop has waited {waited:.1f} s for batch "
            f"{plan.number} of epoch {plan.epoch}, which no worker has begun, past "
            f"Loader(timeout={self.timeout:g}) (at least {START_GRACE_S:g} s for a batch not "
            "begun, as workers start): the workers are stuck before it (an import, or the "
            f"dataset's unpickling in a new worker, that never returns?); "
            f"{self._samples(plan, None)}"
        )
        outcome = backend.stop_all()
        if outcome is None:  # nothing to stop: only say it, once
            if not self._warned:
                self._warned = True
                log.warning("%s", facts)
            return
        self.error = RuntimeError(f"{facts}; {outcome}")

    def _advice(self) -> str:
        if self.timeout is None:
            return (
                "No timeout is set, so the loop keeps waiting; Loader(timeout=seconds) makes "
                "a batch that takes longer an error that stops its worker. This warning is "
                "logged once per loader"
            )
        return f"Loader(timeout={self.timeout:g}) counts from when a worker takes the batch"

    def _describe(self, backend: str, plan, held: Held, elapsed: float, verdict: str) -> str:
        """The facts: backend, batch, epoch, worker (lane and pid), and the samples."""
        if backend == "serial":
            where = f"in the training loop (pid {held.pid})"
        else:
            kind = "worker thread" if backend == "thread" else "worker"
            where = f"in {kind} {held.lane} (pid {held.pid})"
        return (
            f"{backend} backend: batch {plan.number} of epoch {plan.epoch} has taken "
            f"{elapsed:.1f} s {where}{verdict}: {self._samples(plan, held.position)}"
        )

    def _samples(self, plan, position: int | None) -> str:
        indices, text = plan.indices, ""
        if position is not None and 0 <= position < len(indices):
            index = indices[position]
            text = f"it is at sample {position + 1} of {len(indices)}, {self._name(index)}; "
        names = [self._name(i) for i in indices[:_MAX_NAMED]]
        more = f" and {len(indices) - _MAX_NAMED} more" if len(indices) > _MAX_NAMED else ""
        return f"{text}the batch holds {', '.join(names)}{more}"


__all__ = ["WARN_AFTER_S", "START_GRACE_S", "Watchdog", "Lanes", "Lane", "Held", "check_timeout"]
