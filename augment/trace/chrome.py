"""Chrome Trace Event JSON: opens in ui.perfetto.dev, chrome://tracing and speedscope.

One ``pid`` per experiment (1, 2, ... in name order) and one ``tid`` per lane: the training
loop is the experiment's main thread (``tid == pid``), then its workers in order (worker 0,
1, ..., a worker index re-created in new processes once per process), with tids
``pid * stride + 1, + 2, ...`` so that no two lanes anywhere share a tid. Spans are complete
events (``"ph": "X"``) in integer microseconds from the trace's first record: ``ts`` and
``dur`` come from rounding the start and the end, so spans that touch end to end still touch
and nested spans stay nested (a lane's slices always form a stack: see ``_nest``). CPU
samples are counter events (``"ph": "C"``) in one process per host, one series per core.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from augment.trace.reader import Trace, load
from augment.trace.schema import CONSUMER_LANE, OPTIONAL_SPAN_KEYS


def lane_name(span: dict) -> str:
    where = f"{span['host']}:{span['pid']}"
    if span["worker"] == CONSUMER_LANE:
        return f"training loop ({where})"
    return f"{span['backend']} worker {span['worker']} ({where})"


def cpu_counter_name(host: str) -> str:
    """The counter of one host's CPU samples; Perfetto shows one track per core, named
    ``CPU % (host vm) core 0``, chrome://tracing one track with a series per core."""
    return f"CPU % (host {host or 'unknown'})"


def _core_keys(n: int) -> list[str]:
    # zero-padded from 10 cores on, so that every viewer's name order is the core order
    width = len(str(n - 1)) if n > 10 else 1
    return [f"core {i:0{width}d}" for i in range(n)]


def _lane_order(lane: tuple) -> tuple:
    host, pid, worker = lane
    return (worker, str(host), pid)  # the training loop (-1) first, then workers 0, 1, ...


def _nest(slices: list[dict]) -> None:
    """Order one lane's slices (a parent before the children that start with it) and make
    them a well-formed stack: each slice either contains the next or ends before it starts.
    Rounding alone never breaks this; should the clocks of two processes make a slice end
    after the next one starts without containing it, it is cut to end there, its ``args``
    saying by how many microseconds (``cut_us``)."""
    slices.sort(key=lambda e: (e["ts"], -e["dur"]))
    stack: list[dict] = []
    for e in slices:
        while stack:
            top = stack[-1]
            top_end = top["ts"] + top["dur"]
            if top_end <= e["ts"]:
                stack.pop()
            elif top_end < e["ts"] + e["dur"]:
                cut = top_end - e["ts"]
                top["dur"] -= cut
                top["args"]["cut_us"] = top["args"].get("cut_us", 0) + cut
                stack.pop()
            else:
                break
        stack.append(e)


def chrome_events(trace: Trace) -> list[dict]:
    """Every event of ``trace``: metadata first, then each lane's slices (a parent before
    the children that start with it), then the CPU counters."""
    experiments = {name: i + 1 for i, name in enumerate(trace.experiments())}
    hosts = sorted({str(c.get("host", "")) for c in trace.cpu})
    origin = min([s["start_ns"] for s in trace.spans] + [c["t_ns"] for c in trace.cpu], default=0)

    def us(ns) -> int:
        """Microseconds from the origin, rounded half up: exact on integers, monotonic."""
        return int((ns - origin + 500) // 1000)

    lanes: dict[str, dict[tuple, str]] = defaultdict(dict)  # experiment -> lane -> backend
    for s in trace.spans:
        lanes[s["experiment"]].setdefault((s["host"], s["pid"], s["worker"]), s["backend"])
    # tids: pid for the loop, pid * stride + 1, 2, ... for the other lanes; a stride above
    # every pid and every lane count keeps them unique across experiments
    biggest = max([len(v) for v in lanes.values()] + [len(experiments) + len(hosts)])
    stride = 10 ** max(3, len(str(biggest)))

    events: list[dict] = []
    tids: dict[tuple, tuple[int, int]] = {}  # (experiment, host, pid, worker) -> (pid, tid)
    for name, pid in experiments.items():
        backends = sorted({s["backend"] for s in trace.spans if s["experiment"] == name})
        events += [
            _meta("process_name", pid, pid, name=f"{name} ({', '.join(backends)})"),
            _meta("process_sort_index", pid, pid, sort_index=pid),
        ]
        ordered = sorted(lanes[name], key=_lane_order)
        # the first training loop is the main thread; a worker never is
        main = ordered[0][2] == CONSUMER_LANE
        for rank, lane in enumerate(ordered):
            tid = pid if main and rank == 0 else pid * stride + rank + (not main)
            tids[(name, *lane)] = (pid, tid)
            host, real_pid, worker = lane
            backend = lanes[name][lane]
            label = lane_name({"host": host, "pid": real_pid, "worker": worker, "backend": backend})
            events += [
                _meta("thread_name", pid, tid, name=label),
                _meta("thread_sort_index", pid, tid, sort_index=rank),
            ]

    slices: dict[tuple[int, int], list[dict]] = defaultdict(list)
    for s in trace.spans:
        pid, tid = tids[(s["experiment"], s["host"], s["pid"], s["worker"])]
        start = us(s["start_ns"])
        slices[(pid, tid)].append(
            {
                "ph": "X",
                "name": s["stage"],
                "cat": s["backend"],
                "pid": pid,
                "tid": tid,
                "ts": start,
                "dur": max(0, us(s["end_ns"]) - start),
                "args": {
                    "batch": s["batch"],
                    "epoch": s["epoch"],
                    "cpu_ms": s["cpu_ns"] / 1e6,
                    **{k: s[k] for k in OPTIONAL_SPAN_KEYS if k in s},  # node, lost_on
                },
            }
        )
    for key in sorted(slices):
        _nest(slices[key])
        events += slices[key]

    for rank, host in enumerate(hosts):
        pid = len(experiments) + 1 + rank
        events += [
            _meta(
                "process_name",
                pid,
                pid,
                name=f"CPU utilization of host {host or 'unknown'} (% per core)",
            ),
            _meta("process_sort_index", pid, pid, sort_index=pid),
        ]
        for sample in trace.cpu:
            if str(sample.get("host", "")) != host:
                continue
            events.append(
                {
                    "ph": "C",
                    "name": cpu_counter_name(host),
                    "pid": pid,
                    "tid": pid,
                    "ts": us(sample["t_ns"]),
                    "args": dict(zip(_core_keys(len(sample["cpu"])), sample["cpu"])),
                }
            )
    return events


def _meta(kind: str, pid: int, tid: int, **args) -> dict:
    return {"ph": "M", "name": kind, "pid": pid, "tid": tid, "args": args}


def to_chrome(directory: str | Path, path: str | Path) -> Path:
    """Write the trace folder ``directory`` as Chrome Trace Event JSON to ``path``."""
    events = chrome_events(load(directory))
    path = Path(path)
    path.write_text(json.dumps({"traceEvents": events, "displayTimeUnit": "ms"}))
    return path
