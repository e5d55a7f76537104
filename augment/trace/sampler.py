"""Each core's utilization, sampled by psutil in a background thread."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import psutil


class CpuSampler:
    """Writes ``{"since_ns", "t_ns", "host", "cpu": [percent per core]}`` lines, each the cores'
    load over ``since_ns..t_ns``, every ``interval_s`` to
    ``cpu-samples.<host>.<pid>.jsonl`` while started.

    Sampling starts at ``start()`` and a last sample is written at ``stop()``, so a run shorter
    than one interval still has one sample covering exactly its time."""

    def __init__(self, out_dir: Path, interval_s: float = 0.1):
        self.path = Path(out_dir) / f"cpu-samples.{socket.gethostname()}.{os.getpid()}.jsonl"
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        psutil.cpu_percent(percpu=True)  # the baseline: the first sample covers from here
        started = time.time_ns()
        self._thread = threading.Thread(
            target=self._run, args=(started,), name="augment-cpu-sampler", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join()

    def _run(self, since: int) -> None:
        host = socket.gethostname()
        with open(self.path, "a") as f:
            while True:
                stopping = self._stop.wait(self.interval_s)
                cores = psutil.cpu_percent(percpu=True)
                now = time.time_ns()
                record = {"since_ns": since, "t_ns": now, "host": host, "cpu": cores}
                f.write(json.dumps(record) + "\n")
                f.flush()
                since = now
                if stopping:
                    return
