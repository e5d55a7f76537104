"""Threads: cheap to start, share memory, but Python code holds the GIL. Numpy, OpenCV and
Pillow release it in their C loops, so decode and warp run in parallel.

``workers`` daemon threads take batches from one queue, in order. A thread cannot be
stopped: when the watchdog gives up on a stuck one (``Loader(timeout=...)``), the loop is
released with the error and the thread is abandoned. It keeps running until its call
returns, but as a daemon thread it does not keep the interpreter from exiting (a
``ThreadPoolExecutor`` would join it at exit, forever).
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from augment.loading.backends.base import Backend, register
from augment.loading.batch import make_batch
from augment.loading.watchdog import Lanes

_POLL_S = 0.2  # how often a waiting loop looks whether its thread was abandoned


class _Handle:
    def __init__(self, backend: ThreadBackend, future: Future):
        self.backend, self.future = backend, future

    def result(self):
        while True:
            try:
                return self.future.result(timeout=_POLL_S)
            except FutureTimeout:
                if self.backend.abandoned:
                    raise RuntimeError(
                        f"thread backend: worker thread {min(self.backend.abandoned)} was "
                        "abandoned, stuck on a batch"
                    ) from None

    def cancel(self) -> None:
        self.future.cancel()


@register
class ThreadBackend(Backend):
    name = "thread"

    def start(self, task):
        super().start(task)
        self.lanes = Lanes(self.workers)
        self.abandoned: set[int] = set()
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run_lane, args=(lane,), name=f"augment_{lane}")
            for lane in range(self.workers)
        ]
        for thread in self._threads:
            thread.daemon = True
            thread.start()

    def _run_lane(self, lane: int) -> None:
        jobs, record = self._jobs, self.lanes.lane(lane)
        while (job := jobs.get()) is not None:
            future, plan = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(make_batch(self.task, plan, worker=lane, lane=record))
            except BaseException as exc:  # noqa: BLE001 - the loop gets it with the batch
                future.set_exception(exc)

    def submit(self, plan):
        future: Future = Future()
        self._jobs.put((future, plan))
        return _Handle(self, future)

    def stop(self, held):
        self.abandoned.add(held.lane)
        return (
            f"a thread cannot be stopped: worker thread {held.lane} keeps running until its "
            "call returns (a daemon thread, it does not keep Python from exiting), and the "
            "loader is closed"
        )

    def stop_all(self):
        self.abandoned.update(range(self.workers))
        return "threads cannot be stopped: they are abandoned, and the loader is closed"

    def close(self):
        threads, self._threads = getattr(self, "_threads", []), []
        if not threads:
            return
        while True:  # batches not begun are cancelled
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[0].cancel()
        for _ in threads:
            self._jobs.put(None)
        for lane, thread in enumerate(threads):
            if lane not in self.abandoned:
                thread.join()
        self.task = None
