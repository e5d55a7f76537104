"""Each core's utilization, sampled in a background thread.

The load of a core over an interval is computed here from two ``psutil.cpu_times`` readings
this sampler holds itself: ``psutil.cpu_percent`` keeps its baseline per calling thread, so
a baseline taken in one thread and a reading in another gives a false 0%."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import psutil


def busy_percent(before, after) -> list[float]:
    """Each core's busy share (0-100) between two ``psutil.cpu_times(percpu=True)``."""
    out = []
    for a, b in zip(before, after):
        # guest time is counted in user time already (Linux)
        total = (sum(b) - sum(a)) - _guest(b) + _guest(a)
        idle = (b.idle + getattr(b, "iowait", 0.0)) - (a.idle + getattr(a, "iowait", 0.0))
        out.append(
            round(min(100.0, max(0.0, 100.0 * (total - idle) / total)), 1) if total > 0 else 0.0
        )
    return out


def nice_percent(before, after) -> list[float]:
    """Each core's share (0-100) spent in niced processes between two readings: load that
    yields to programs of normal priority (a background job started with ``nice``)."""
    out = []
    for a, b in zip(before, after):
        total = (sum(b) - sum(a)) - _guest(b) + _guest(a)
        nice = getattr(b, "nice", 0.0) - getattr(a, "nice", 0.0)
        out.append(round(min(100.0, max(0.0, 100.0 * nice / total)), 1) if total > 0 else 0.0)
    return out


def _guest(t) -> float:
    return getattr(t, "guest", 0.0) + getattr(t, "guest_nice", 0.0)


class CpuSampler:
    """Writes ``{"since_ns", "t_ns", "host", "cpu": [percent per core], "nice": [...]}`` lines,
    each the cores' load over ``since_ns..t_ns`` (``nice``: the part of it in niced
    processes), every ``interval_s`` to ``cpu-samples.<host>.<pid>.jsonl`` while started.

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
        baseline = (time.time_ns(), psutil.cpu_times(percpu=True))
        self._thread = threading.Thread(
            target=self._run, args=baseline, name="augment-cpu-sampler", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join()

    def _run(self, since: int, before) -> None:
        host = socket.gethostname()
        with open(self.path, "a") as f:
            while True:
                stopping = self._stop.wait(self.interval_s)
                after = psutil.cpu_times(percpu=True)
                now = time.time_ns()
                record = {
                    "since_ns": since,
                    "t_ns": now,
                    "host": host,
                    "cpu": busy_percent(before, after),
                    "nice": nice_percent(before, after),
                }
                f.write(json.dumps(record) + "\n")
                f.flush()
                since, before = now, after
                if stopping:
                    return
