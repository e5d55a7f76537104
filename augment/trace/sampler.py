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
    """Writes ``{"t_ns", "host", "cpu": [percent per core]}`` lines every ``interval_s``
    to ``cpu-samples.<host>.<pid>.jsonl`` while started."""

    def __init__(self, out_dir: Path, interval_s: float = 0.1):
        self.path = Path(out_dir) / f"cpu-samples.{socket.gethostname()}.{os.getpid()}.jsonl"
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="augment-cpu-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join()

    def _run(self) -> None:
        host = socket.gethostname()
        psutil.cpu_percent(percpu=True)  # the first call only sets the baseline
        with open(self.path, "a") as f:
            while not self._stop.wait(self.interval_s):
                cores = psutil.cpu_percent(percpu=True)
                f.write(json.dumps({"t_ns": time.time_ns(), "host": host, "cpu": cores}) + "\n")
                f.flush()
