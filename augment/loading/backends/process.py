"""Worker processes: no GIL to share, pixels come back through shared memory, uncopied.

Invariants:
- workers start once per backend (once per loader), not per epoch;
- a worker writes a batch into a shared-memory slot and the consumer hands the training loop
  a view of that slot: no copy. A slot is given to a new batch only once every array and
  tensor viewing its last batch has been released (``weakref.finalize`` on the array the
  tensor is made from: a tensor, its views and its storage keep that array alive), so a
  batch never changes under whoever holds it, and the loop may write into it;
- when a batch needs a slot and every slot is in flight or still held by the loop (a loop
  that keeps batches in a list), a new slot is made; nothing is overwritten and nothing
  blocks. Memory in flight is ``capacity`` batches plus the batches the loop still holds,
  as with copies (a kept copy costs as much as a kept slot); a ``for`` loop holds two while
  it asks for the next (the one in its variable, the one being handed over), so
  ``capacity + 2`` slots are kept, and slots made beyond that are unlinked once free;
- slots belong to the consumer, which creates and unlinks them; workers only attach (and
  let go of slots the consumer no longer has), and share the consumer's resource tracker
  whatever the start method, so nothing else unlinks;
- the task goes to workers by value (cloudpickle): what a notebook or the main script
  defines runs there too;
- each worker answers on a pipe of its own: one killed halfway through a message leaves
  that pipe at its end (an error naming the worker), never a shared queue half-written and
  locked for the others;
- while waiting, the consumer checks every 0.2 s that all workers live: a dead worker is a
  ``RuntimeError`` naming it and, where the worker could say, why; never a hang;
- before a slot is made or grown, /dev/shm must hold every slot at that size (``capacity +
  2``, or more while the loop holds more, x the largest batch), and each slot's pages are
  allocated as it is made: too little shared memory is a ``RuntimeError`` in the consumer
  saying what to change, never a SIGBUS;
- ``close()`` drops the queues (their semaphores live in /dev/shm), the processes and the
  slots: every slot's name is unlinked at once, so nothing stays in /dev/shm whoever still
  holds the backend (a kept traceback); a slot still viewed by a batch the loop holds stays
  mapped, and valid, until the last view of it is released, which unmaps it.

Start methods: "spawn" (the default) starts clean interpreters, safe with any threads in the
consumer; "forkserver" forks them from a clean server process, faster to start after the
first; "fork" starts fastest but copies the consumer as it is, which can deadlock when the
consumer already runs native threads (OpenCV, torch intra-op, a BLAS).
"""

from __future__ import annotations

import itertools
import math
import mmap
import multiprocessing as mp
import queue
import signal
import time
import traceback
import weakref
from multiprocessing import connection, resource_tracker, shared_memory

import numpy as np

from augment.loading import shm as shm_check
from augment.loading.backends import worker as worker_setup
from augment.loading.backends.base import Backend, register
from augment.loading.batch import BatchResult, make_batch
from augment.loading.watchdog import Lanes
from augment.trace.schema import Span

_POLL_S = 0.2
_JOIN_S = 2.0
_FATAL = -1  # the job id of a worker's last word
_READY = -2  # the job id of a worker's first: it has its task
# Batches a training loop holds while it asks for the next one: the one in its loop variable
# and the one being handed over. Slots kept beyond ``capacity``.
LOOP_HOLDS = 2


def _attach(name: str) -> shared_memory.SharedMemory:
    # Workers share the consumer's resource tracker (started before them: see start), so
    # attaching registers nothing new and the consumer's unlink stays the only one.
    return shared_memory.SharedMemory(name=name)


class _Slot:
    """The batch buffer a worker fills: the shared-memory slot when the batch fits, else a
    private array that goes back pickled (the consumer then grows the slot)."""

    def __init__(self, shm: shared_memory.SharedMemory | None, size: int):
        self.shm, self.size, self.used = shm, size, False

    def buffer(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        if self.shm is not None and math.prod(shape) * np.dtype(dtype).itemsize <= self.size:
            self.used = True
            return np.ndarray(shape, dtype=dtype, buffer=self.shm.buf)
        return np.empty(shape, dtype=dtype)


def _worker_main(worker: int, packed_task: bytes, jobs, answers, lanes, threads: int) -> None:
    """Loop of one worker: make batches until told to stop (None) or the consumer stops
    listening. A task that cannot be loaded goes back to the consumer as the worker's last
    message."""
    try:
        _serve(worker, packed_task, jobs, answers, lanes, threads)
    except (BrokenPipeError, ConnectionResetError):  # the consumer closed its end: nobody waits
        pass
    finally:
        answers.close()


def _serve(worker: int, packed_task: bytes, jobs, answers, lanes, threads: int) -> None:
    worker_setup.set_up(threads)
    lane = lanes.lane(worker)
    try:
        task = worker_setup.unpack(packed_task)
    except worker_setup.WorkerSetupError as exc:
        answers.send((_FATAL, "error", (worker, _portable(exc))))
        return
    answers.send((_READY, "ok", worker))
    attached: dict[str, shared_memory.SharedMemory] = {}
    while (job := _next_job(jobs)) is not None:
        job_id, plan, slot_name, slot_size, live = job
        shm = slot = result = None
        try:
            if slot_name is not None:
                shm = attached.get(slot_name) or attached.setdefault(slot_name, _attach(slot_name))
            slot = _Slot(shm, slot_size)
            result = make_batch(task, plan, slot.buffer, worker=worker, lane=lane)
            if slot.used and result.images is not None and result.images.size:
                result.images = None  # it sits in the slot, where the consumer views it
            message = (job_id, "ok", result)
        except Exception as exc:  # noqa: BLE001 - everything goes back to the consumer
            message = (job_id, "error", _portable(exc))
        answers.send(message)
        message = slot = shm = result = None  # no view of a slot outlives its batch here
        _detach(attached, live)


def _detach(attached: dict[str, shared_memory.SharedMemory], live: frozenset[str]) -> None:
    """Let go of the slots the consumer no longer has (unlinked when it shrank its pool or
    grew a slot), so their memory goes once the consumer's views of them go."""
    for name in [n for n in attached if n not in live]:
        try:
            attached[name].close()
        except BufferError:  # still viewed (a traceback's frame): next time
            continue
        del attached[name]


def _next_job(jobs):
    """The next job, or None to stop: when told to, or when the consumer is gone (killed, say),
    so no worker outlives it."""
    parent = mp.parent_process()
    while True:
        try:
            return jobs.get(timeout=_POLL_S * 5)
        except queue.Empty:
            if parent is not None and not parent.is_alive():
                return None


def _portable(exc: Exception) -> Exception:
    """``exc`` with the worker's traceback as a note, in a form that survives pickling."""
    import pickle

    where = "".join(traceback.format_exception(exc))
    try:
        copy = pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001
        return RuntimeError(where)
    if hasattr(copy, "add_note"):
        copy.add_note(f"in the worker process:\n{where}")
    return copy


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class _Block:
    """One shared-memory slot, as the consumer holds it: its name (which workers attach to)
    and a mapping of its own, which the batches handed to the loop view. The
    ``SharedMemory``'s own mapping is closed at once, so nothing ever needs closing while a
    view lives; the consumer's mapping goes when the block and its last view are gone."""

    def __init__(self, backend: str, what: str, nbytes: int):
        self.shm = shared_memory.SharedMemory(create=True, size=max(nbytes, 1))
        self.name, self.size = self.shm.name, self.shm.size
        try:
            shm_check.reserve(getattr(self.shm, "_fd", -1), self.size, backend, what)
            self.map = mmap.mmap(self.shm._fd, self.size)
        except BaseException:
            self.shm.close()
            self.shm.unlink()
            raise
        self.shm.close()  # its fd and its own mapping; the name stays until unlink()

    def unlink(self) -> None:
        """Remove the name from /dev/shm; the memory goes with the last mapping of it."""
        self.shm.unlink()


class _Pool:
    """The consumer's slots. A slot is free when no batch is in it and nothing views it;
    ``release`` (called by ``weakref.finalize`` when the array a batch's tensor is made from
    dies, in whatever thread) makes it free again. ``keep`` slots stay; more are made while
    the loop holds batches, and unlinked when they are free again."""

    def __init__(self, keep: int):
        self.keep = keep
        self.blocks: dict[int, _Block] = {}
        self.free: list[int] = []  # appended to by finalizers: list operations only
        self.closed = False
        self._ids = itertools.count()

    def release(self, slot: int) -> None:
        if not self.closed and slot in self.blocks:
            self.free.append(slot)

    def take(self) -> tuple[int, _Block | None]:
        """A free slot (its block None when it has none yet), or a new one when none is free;
        free slots beyond ``keep`` are unlinked first."""
        while len(self.blocks) > self.keep and len(self.free) > 1:
            self.blocks.pop(self.free.pop(0)).unlink()
        if self.free:
            slot = self.free.pop()
            return slot, self.blocks.get(slot)
        return next(self._ids), None

    def add(self, slot: int, block: _Block) -> None:
        old = self.blocks.pop(slot, None)
        if old is not None:
            old.unlink()
        self.blocks[slot] = block

    def live(self) -> frozenset[str]:
        return frozenset(b.name for b in self.blocks.values())

    def close(self) -> None:
        """Unlink every slot: /dev/shm is empty at once. A slot a batch still views stays
        mapped until the view is released."""
        self.closed = True
        blocks = list(self.blocks.values())
        self.blocks.clear()
        self.free.clear()
        for block in blocks:
            block.unlink()


class _Handle:
    def __init__(self, backend: ProcessBackend, job: int, slot: int):
        self.backend, self.job, self.slot = backend, job, slot

    def result(self) -> BatchResult:
        return self.backend._collect(self.job, self.slot)

    def cancel(self) -> None:
        try:
            self.result()
        except Exception:  # noqa: BLE001 - a cancelled batch's error is nobody's
            pass


@register
class ProcessBackend(Backend):
    name = "process"

    def __init__(self, workers, capacity, start_method: str = "spawn", threads: int = 1):
        super().__init__(workers, capacity)
        if start_method not in mp.get_all_start_methods():
            raise ValueError(
                f"start_method must be one of {mp.get_all_start_methods()}, got {start_method!r}"
            )
        self.start_method, self.threads = start_method, worker_setup.check_threads(threads)
        self._procs: list = []
        self._pool: _Pool | None = None

    def start(self, task):
        super().start(task)
        ctx = mp.get_context(self.start_method)
        # Sized by the first batches, which come back pickled: nothing runs the dataset or
        # the transform in the consumer (where OpenCV's thread pool would then deadlock the
        # workers of a later fork).
        self._sample_nbytes = self._largest = 0
        resource_tracker.ensure_running()  # before forking, so workers share it
        self._jobs = ctx.Queue()
        self.lanes = Lanes(self.workers, ctx)
        self._pool = _Pool(self.capacity + LOOP_HOLDS)
        self._in_flight = 0  # submitted, not yet collected
        self._arrived: dict[int, tuple] = {}
        self._ready: set[int] = set()
        self._next_job = 0
        packed = worker_setup.pack(task)
        self._procs, self._answers = [], {}
        for i in range(self.workers):
            answers, sender = ctx.Pipe(duplex=False)
            p = ctx.Process(
                target=_worker_main,
                args=(i, packed, self._jobs, sender, self.lanes, self.threads),
                name=f"augment-worker-{i}",
                daemon=True,
            )
            p.start()
            # only the worker holds the sending end (and no later worker inherits it): its
            # death is the end of this pipe, even halfway through a message
            sender.close()
            self._procs.append(p)
            self._answers[answers] = i

    def submit(self, plan):
        if self._in_flight >= self.capacity:
            raise RuntimeError("process backend: more batches submitted than its capacity")
        # sized for the largest batch yet, so a short last batch does not shrink a slot
        self._largest = max(self._largest, len(plan.indices))
        slot, block = self._slot(self._largest * self._sample_nbytes)
        job, self._next_job = self._next_job, self._next_job + 1
        name, size = (None, 0) if block is None else (block.name, block.size)
        self._jobs.put((job, plan, name, size, self._pool.live()))
        self._in_flight += 1
        return _Handle(self, job, slot)

    def _slot(self, nbytes: int) -> tuple[int, _Block | None]:
        """A slot no batch is in and nothing views, with room for ``nbytes`` (its block None
        until the sample size is known): a free one, grown if it is too small, or a new one
        when the loop holds all the others."""
        pool = self._pool
        slot, block = pool.take()
        if nbytes == 0 or (block is not None and block.size >= nbytes):
            return slot, block
        count = max(pool.keep, len(pool.blocks) + (block is None))
        held = count - self.capacity
        what = (
            f"{count} shared-memory slots of {self._largest} images, {nbytes / 2**20:.1f} MiB "
            f"each ({self.capacity} for the batches in flight, prefetch x workers, and {held} "
            "for those the training loop holds"
            + ("" if held <= LOOP_HOLDS else ": .clone() the batches you keep")
            + "),"
        )
        own = sum(b.size for b in pool.blocks.values())
        shm_check.check(self.name, what, count * nbytes, own)
        pool.add(slot, _Block(self.name, what, nbytes))
        return slot, pool.blocks[slot]

    def _collect(self, job: int, slot: int) -> BatchResult:
        self._in_flight -= 1
        viewed = False
        try:
            _, kind, payload = self._wait(job)
            if kind == "error":
                raise payload
            result: BatchResult = payload
            if result.images is None and result.shape:  # in the slot (None with an error)
                t0, c0 = time.time_ns(), time.thread_time_ns()
                # a view, not a copy: the slot is the batch's until this array (and every
                # tensor made from it) is released
                block = self._pool.blocks[slot]
                result.images = np.ndarray(result.shape, dtype=result.dtype, buffer=block.map)
                weakref.finalize(result.images, self._pool.release, slot).atexit = False
                viewed = True
                result.transfer = Span("transfer", t0, time.time_ns(), time.thread_time_ns() - c0)
            elif result.shape and result.images.size:  # the sample size grew: next time it fits
                self._sample_nbytes = max(self._sample_nbytes, result.images[0].nbytes)
            return result
        finally:
            pool = self._pool  # None once closed (a batch cancelled as the loader is collected)
            if not viewed and pool is not None:
                pool.release(slot)

    def _wait(self, job: int) -> tuple:
        while job not in self._arrived:
            if not self._answers:  # closed (at exit, say) while a batch was awaited
                raise RuntimeError("process backend: the loader is closed")
            ready = connection.wait(list(self._answers), timeout=_POLL_S)
            if not ready:
                self._check_workers()
            for answers in ready:
                self._receive(answers)
        return self._arrived.pop(job)

    def _receive(self, answers) -> None:
        worker = self._answers[answers]
        try:
            message = answers.recv()
        except (EOFError, OSError):  # the worker is gone, perhaps halfway through a message
            message = None
        if message is None:  # said outside the except: the EOF is no part of the story
            self._procs[worker].join(_JOIN_S)
            self._check_workers()
            raise RuntimeError(
                f"process backend: worker {worker} (pid {self._procs[worker].pid}) closed its "
                "pipe without exiting; the loader is closed"
            )
        if message[0] == _READY:
            self._ready.add(message[2])
        elif message[0] == _FATAL:
            worker, exc = message[2]
            raise RuntimeError(
                f"process backend: worker {worker} could not start: {exc}; the loader is closed"
            ) from exc
        else:
            self._arrived[message[0]] = message

    def _check_workers(self) -> None:
        for i, p in enumerate(self._procs):
            if p.exitcode == worker_setup.REIMPORTED_MAIN_EXIT:
                raise RuntimeError(
                    f"process backend: worker {i} (pid {p.pid}) stopped because "
                    + worker_setup.REIMPORTED_MAIN.format(method=self.start_method)
                )
            if p.exitcode is not None:
                early = ""
                if i not in self._ready:
                    early = " before it started (see its error above"
                    if self.start_method != "fork":
                        early += (
                            f"; the {self.start_method!r} start method first imports the main "
                            "script in each worker"
                        )
                    early += ")"
                raise RuntimeError(
                    f"process backend: worker {i} (pid {p.pid}) "
                    f"{_exit_reason(p.exitcode)}{early}; the loader is closed"
                )

    def worker_pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def stop(self, held):
        self._procs[held.lane].kill()
        return "the worker was killed and the loader closed"

    def stop_all(self):
        for proc in self._procs:
            if proc.pid is not None and proc.is_alive():
                proc.kill()
        return "every worker was killed and the loader closed"

    def close(self):
        procs, self._procs = [p for p in self._procs if p.pid is not None], []
        jobs, answers = getattr(self, "_jobs", None), getattr(self, "_answers", {})
        self._jobs, self._answers = None, {}
        for pipe in answers:  # a worker still sending finds the pipe closed and stops
            pipe.close()
        for _ in procs:
            try:
                jobs.put_nowait(None)
            except Exception:  # noqa: BLE001 - a broken queue: terminate below
                break
        deadline = time.monotonic() + _JOIN_S
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(_JOIN_S)
        if jobs is not None:
            jobs.cancel_join_thread()
            jobs.close()
        shm_check.forget(jobs)  # its semaphores, even if a kept frame holds it
        pool, self._pool = self._pool, None
        if pool is not None:  # names go now; a slot a kept batch views stays mapped until then
            pool.close()
        # whoever still holds this backend (a kept traceback's frames) holds nothing here
        self._arrived, self.lanes, self.task = {}, None, None


__all__ = ["ProcessBackend"]
