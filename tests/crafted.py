"""Crafted trace folders for the report's tests: span records, a meta line and CPU samples
laid out as the Tracer and its sampler write them, so that the expected figures can be
computed on paper."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from augment.profiler.report import summarize
from augment.trace import load
from augment.trace.schema import STAGED_STAGES as WORKER_STAGES

MS = 1_000_000
T0 = 1_700_000_000_000_000_000  # an epoch in ns: any fixed wall clock will do
HOST = "crafted"


@dataclass
class Plan:
    """One crafted experiment. Batch i's loop lane: ``wait`` (the transfer at its end), then
    ``step``, back to back; its worker stages run one after another and end where the
    transfer begins, on worker lane ``i % workers``. All times in ms."""

    name: str
    backend: str = "process"
    workers: int = 2
    batches: int = 10
    batch_size: int = 16
    first_wait: float = 40.0  # the first batch waits for worker start-up
    wait: float = 40.0
    step: float = 10.0
    stages: dict = field(
        default_factory=lambda: {
            "read": (2, 2),
            "decode": (20, 20),
            "augment": (10, 10),
            "collate": (2, 2),
        }
    )
    transfer: tuple = (1.0, 1.0)  # (wall, cpu)
    start_ms: float = 0.0  # offset from T0
    pid: int = 1000
    epoch: int = 0

    @property
    def t0(self) -> int:
        return T0 + int(self.start_ms * MS)

    def asked(self, i: int) -> int:
        if i == 0:
            return self.t0
        return self.t0 + int((self.first_wait + self.step + (i - 1) * (self.wait + self.step)) * MS)

    def wait_ms(self, i: int) -> float:
        return self.first_wait if i == 0 else self.wait

    @property
    def end(self) -> int:
        last = self.batches - 1
        return self.asked(last) + int((self.wait_ms(last) + self.step) * MS)

    @property
    def start(self) -> int:
        made = sum(w for w, *_ in self.stages.values()) + self.transfer[0]
        return min(self.t0, self.t0 + int((self.first_wait - made) * MS))

    def records(self) -> list[dict]:
        out = []
        for i in range(self.batches):
            common = {
                "experiment": self.name,
                "backend": self.backend,
                "host": HOST,
                "batch": i,
                "epoch": self.epoch,
                "images": self.batch_size,
            }
            asked = self.asked(i)
            got = asked + int(self.wait_ms(i) * MS)
            transfer_start = got - int(self.transfer[0] * MS)
            lane = -1 if self.backend == "serial" or self.workers == 0 else i % self.workers
            pid = self.pid if self.backend in ("serial", "thread") else self.pid + 1 + lane
            t = transfer_start - int(sum(w for w, *_ in self.stages.values()) * MS)
            for stage in WORKER_STAGES:
                wall, cpu, *runq = self.stages[stage]  # (wall, cpu[, waiting for a core])
                out.append(
                    {
                        **common,
                        "pid": pid,
                        "worker": lane,
                        "stage": stage,
                        "start_ns": t,
                        "end_ns": t + int(wall * MS),
                        "cpu_ns": int(cpu * MS),
                        **({"runq_ns": int(runq[0] * MS)} if runq else {}),
                    }
                )
                t += int(wall * MS)
            loop = {**common, "pid": self.pid, "worker": -1}
            out += [
                {
                    **loop,
                    "stage": "transfer",
                    "start_ns": transfer_start,
                    "end_ns": got,
                    "cpu_ns": int(self.transfer[1] * MS),
                },
                {
                    **loop,
                    "stage": "wait",
                    "start_ns": asked,
                    "end_ns": got,
                    "cpu_ns": int(self.transfer[1] * MS) + 50_000,
                },
                {
                    **loop,
                    "stage": "step",
                    "start_ns": got,
                    "end_ns": got + int(self.step * MS),
                    "cpu_ns": 100_000,
                },
            ]
        return out

    def meta(self) -> dict:
        return {
            "meta": {
                "experiment": self.name,
                "host": HOST,
                "pid": self.pid,
                "backend": self.backend,
                "workers": 0 if self.backend == "serial" else self.workers,
                "batch_size": self.batch_size,
                "epoch": self.epoch,
            }
        }

    # figures computed on paper
    @property
    def steady_s(self) -> float:
        return (self.end - (self.t0 + int(self.first_wait * MS))) / 1e9

    @property
    def images_per_s(self) -> float:
        return (self.batches - 1) * self.batch_size / self.steady_s

    @property
    def stall(self) -> float:
        return (self.batches - 1) * self.wait / 1000 / self.steady_s


def write_trace(
    directory: Path, plans: list[Plan], cores: list[float] | None, extra_cpu: bool = True
) -> Path:
    """Span files named as the Tracer names them, and a CPU sampler file: one sample every
    100 ms over the whole run with ``cores`` percent per core, plus one idle sample long
    before, which no experiment's interval contains."""
    directory.mkdir(parents=True, exist_ok=True)
    for plan in plans:
        lines = [plan.meta()] + plan.records()
        (directory / f"{plan.name}.{plan.pid}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in lines)
        )
    if cores is not None:
        first = min(p.start for p in plans)
        last = max(p.end for p in plans)
        samples = []
        if extra_cpu:
            samples.append({"t_ns": first - 10_000 * MS, "host": HOST, "cpu": [0.0] * len(cores)})
        t = first + 50 * MS
        while t < last:
            samples.append({"t_ns": t, "host": HOST, "cpu": list(cores)})
            t += 100 * MS
        (directory / f"cpu-samples.{HOST}.999.jsonl").write_text(
            "".join(json.dumps(s) + "\n" for s in samples)
        )
    return directory


def report(directory: Path) -> dict:
    return summarize(load(directory))


def by_name(summary: dict) -> dict[str, dict]:
    return {e["name"]: e for e in summary["experiments"]}
