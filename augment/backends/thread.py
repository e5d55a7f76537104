"""A thread pool: cheap to start, shares memory, but Python code holds the GIL.
Numpy, OpenCV and Pillow release it in their C loops, so decode and warp run in parallel."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from augment.backends.base import Backend, register
from augment.batch import make_batch


def _in_worker_thread(task, plan):
    # ThreadPoolExecutor names its threads "<prefix>_<n>": n is the lane.
    lane = int(threading.current_thread().name.rsplit("_", 1)[-1])
    return make_batch(task, plan, worker=lane)


@register
class ThreadBackend(Backend):
    name = "thread"

    def start(self, task):
        super().start(task)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="augment")

    def submit(self, plan):
        return self._pool.submit(_in_worker_thread, self.task, plan)

    def close(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
