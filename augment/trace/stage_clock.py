"""The worker's side of the trace: the wall and CPU time (and the wait for a core) of each
stage of a batch, summed over its samples. Imports nothing of the recorder, so a worker
process loads neither it nor psutil."""

from __future__ import annotations

import time

from augment.trace.schema import Span


def run_delay_ns() -> int | None:
    """This thread's time so far waiting on a run queue for a core, None where the kernel
    does not say (not Linux, or schedstats off)."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as f:
            return int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None


class StageClock:
    """Sums the wall and thread-CPU time of each stage over a batch's samples."""

    __slots__ = ("stages", "wall", "cpu", "t0", "c0", "start", "q0")

    def __init__(self, stages: tuple[str, ...]):
        self.stages = stages
        self.wall = dict.fromkeys(stages, 0)
        self.cpu = dict.fromkeys(stages, 0)
        self.start = time.time_ns()
        self.q0 = run_delay_ns()
        self.t0, self.c0 = time.perf_counter_ns(), time.thread_time_ns()

    def lap(self, stage: str) -> None:
        """Charge the time since the previous lap to ``stage``."""
        t, c = time.perf_counter_ns(), time.thread_time_ns()
        self.wall[stage] += t - self.t0
        self.cpu[stage] += c - self.c0
        self.t0, self.c0 = t, c

    def spans(self) -> list[Span]:
        """One span per stage, end to end. The batch's wait for a core (read once at each
        end: per sample it would cost more than it tells) is shared among the stages in
        proportion to their time off the CPU."""
        q1 = run_delay_ns()
        runq = q1 - self.q0 if q1 is not None and self.q0 is not None else None
        off = {s: max(0, self.wall[s] - self.cpu[s]) for s in self.stages}
        total_off = sum(off.values())
        spans, start = [], self.start
        for stage in self.stages:
            share = None
            if runq is not None:
                share = min(off[stage], round(runq * off[stage] / total_off)) if total_off else 0
            spans.append(Span(stage, start, start + self.wall[stage], self.cpu[stage], share))
            start += self.wall[stage]
        return spans
