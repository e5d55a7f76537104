"""The writing side: span records appended to ``<out_dir>/<experiment>.<pid>.jsonl``.

Records are flushed once per batch, so a crash loses at most the batch in flight. Each
consumer process writes its own file (its workers' spans travel back with their batches),
so several experiments in several processes share one folder without clobbering.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import psutil

from augment.trace.sampler import CpuSampler
from augment.trace.schema import CONSUMER_LANE, STAGES  # noqa: F401 - re-exported


class Tracer:
    """Records the spans of one experiment into ``out_dir``; pass it as ``Loader(tracer=...)``.

    ``sample_cpu`` starts a psutil sampler of every core (about every 100 ms) while a traced
    loader runs, written to ``cpu-samples.<host>.<pid>.jsonl`` in the same folder.
    """

    def __init__(
        self,
        out_dir: str | Path,
        experiment: str = "experiment",
        sample_cpu: bool = True,
        cpu_interval_s: float = 0.1,
    ):
        if not experiment or any(c in experiment for c in "/\\\0"):
            raise ValueError(
                f"experiment must be a non-empty name without slashes, got {experiment!r}"
            )
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.experiment = experiment
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.path = self.out_dir / f"{experiment}.{self.pid}.jsonl"
        self._file = None
        self._sampler = CpuSampler(self.out_dir, cpu_interval_s) if sample_cpu else None
        self._active = 0

    def start(self) -> None:
        """A loader begins an epoch: open the file, start the CPU sampler."""
        if self._file is None:
            self._file = open(self.path, "a", buffering=1 << 16)
        self._active += 1
        if self._sampler is not None and self._active == 1:
            self._sampler.start()

    def stop(self) -> None:
        """A loader ends an epoch: flush; stop sampling when no epoch is running."""
        self._active = max(0, self._active - 1)
        if self._file is not None:
            self._file.flush()
        if self._sampler is not None and self._active == 0:
            self._sampler.stop()

    def write(self, records: list[dict]) -> None:
        """Append a batch's records and flush them to the OS."""
        if self._file is None:
            self._file = open(self.path, "a", buffering=1 << 16)
        self._file.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
        self._file.flush()

    def record(
        self,
        *,
        backend: str,
        batch: int,
        epoch: int,
        images: int,
        spans,
        pid: int,
        worker: int,
        host: str | None = None,
        node: str | None = None,
    ) -> list[dict]:
        """Span records for one batch of ``images`` (``spans`` are ``augment.trace.schema.Span``);
        ``runq_ns`` (time waiting for a core) where the span knows it; ``node``, the cluster
        node that made them, where given (traces without it, older ones included, read the
        same)."""
        records = []
        for s in spans:
            record = {
                "experiment": self.experiment,
                "backend": backend,
                "host": host or self.host,
                "pid": pid,
                "worker": worker,
                "batch": batch,
                "epoch": epoch,
                "images": images,
                "stage": s.stage,
                "start_ns": s.start_ns,
                "end_ns": s.end_ns,
                "cpu_ns": s.cpu_ns,
            }
            if getattr(s, "runq_ns", None) is not None:
                record["runq_ns"] = s.runq_ns
            if node is not None:
                record["node"] = node
            records.append(record)
        return records

    def write_meta(self, **info) -> None:
        """A line describing the loader (backend, workers, batch size) for the report."""
        self.write(
            [{"meta": {"experiment": self.experiment, "host": self.host, "pid": self.pid, **info}}]
        )

    def mark_measured(self, waited_from_ns: int | None = None) -> int:
        """From now on the experiment is measured: what came before was warm-up (the report
        leaves out batches handed over before this). ``waited_from_ns``: when it began to
        wait for the experiments that run with it. Returns the time written."""
        now = time.time_ns()
        mark = {"experiment": self.experiment, "measured_from_ns": now}
        if waited_from_ns is not None:
            mark["waited_from_ns"] = waited_from_ns
        self.write([{"mark": mark}])
        return now

    def record_process_cpu(self, pids: list[int]) -> None:
        """The CPU time so far of this process and ``pids`` (its workers): two such records
        give what the experiment cost in all, traced stages or not (``{"proc": ...}``)."""
        total = 0.0
        for pid in [os.getpid(), *pids]:
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.Error:  # a worker that has exited: its time is lost, say so
                continue
            total += times.user + times.system
        record = {
            "experiment": self.experiment,
            "t_ns": time.time_ns(),
            "cpu_s": total,
            "processes": 1 + len(pids),
        }
        self.write([{"proc": record}])

    def record_calibration(self, images: int, cpu_s: float) -> None:
        """The CPU time ``images`` took through the pipeline alone in one thread (no other
        worker contending for the GIL or a core): what a process worker would spend."""
        record = {"experiment": self.experiment, "images": images, "cpu_s": cpu_s}
        self.write([{"calibration": record}])

    def close(self) -> None:
        if self._sampler is not None:
            self._sampler.stop()
        if self._file is not None:
            self._file.close()
            self._file = None

    def __getstate__(self):
        raise TypeError("a Tracer stays in the consumer process; spans come back with batches")

    def __repr__(self) -> str:
        return f"Tracer({str(self.out_dir)!r}, experiment={self.experiment!r})"


def tracer_from_env() -> Tracer | None:
    """A Tracer when ``AUGMENT_TRACE_DIR`` is set: trace any script without changing it.
    The experiment is ``AUGMENT_EXPERIMENT``, else the script's name."""
    out_dir = os.environ.get("AUGMENT_TRACE_DIR")
    if not out_dir:
        return None
    name = os.environ.get("AUGMENT_EXPERIMENT") or Path(sys.argv[0] or "python").stem or "python"
    return Tracer(out_dir, experiment=name)
