"""Chrome Trace Event JSON: opens in ui.perfetto.dev and chrome://tracing.

One ``pid`` per experiment, one ``tid`` per lane (a worker, or the training loop), complete
events (``"ph": "X"``, microseconds) for spans, counter events (``"ph": "C"``) for CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

from augment.trace.reader import Trace, load
from augment.trace.schema import CONSUMER_LANE


def lane_name(span: dict) -> str:
    where = f"{span['host']}:{span['pid']}"
    if span["worker"] == CONSUMER_LANE:
        return f"training loop ({where})"
    return f"{span['backend']} worker {span['worker']} ({where})"


def chrome_events(trace: Trace) -> list[dict]:
    events: list[dict] = []
    experiments = {name: i + 1 for i, name in enumerate(trace.experiments())}
    lanes: dict[tuple, int] = {}
    origin = min([s["start_ns"] for s in trace.spans] + [c["t_ns"] for c in trace.cpu], default=0)
    for s in trace.spans:
        pid = experiments[s["experiment"]]
        key = (s["experiment"], s["host"], s["pid"], s["worker"])
        if key not in lanes:
            lanes[key] = tid = len([k for k in lanes if k[0] == s["experiment"]]) + 1
            events.append(
                {
                    "ph": "M",
                    "name": "thread_name",
                    "pid": pid,
                    "tid": tid,
                    "args": {"name": lane_name(s)},
                }
            )
            # the training loop first, then workers in order
            events.append(
                {
                    "ph": "M",
                    "name": "thread_sort_index",
                    "pid": pid,
                    "tid": tid,
                    "args": {"sort_index": s["worker"]},
                }
            )
        events.append(
            {
                "ph": "X",
                "name": s["stage"],
                "cat": s["backend"],
                "pid": pid,
                "tid": lanes[key],
                "ts": (s["start_ns"] - origin) / 1000,
                "dur": max(0, s["end_ns"] - s["start_ns"]) / 1000,
                "args": {"batch": s["batch"], "epoch": s["epoch"], "cpu_ms": s["cpu_ns"] / 1e6},
            }
        )
    for name, pid in experiments.items():
        backends = sorted({s["backend"] for s in trace.spans if s["experiment"] == name})
        events.append(
            {
                "ph": "M",
                "name": "process_name",
                "pid": pid,
                "tid": 0,
                "args": {"name": f"{name} ({', '.join(backends)})"},
            }
        )
    if trace.cpu:
        cpu_pid = len(experiments) + 1
        events.append(
            {
                "ph": "M",
                "name": "process_name",
                "pid": cpu_pid,
                "tid": 0,
                "args": {"name": "CPU utilization (%)"},
            }
        )
        for sample in trace.cpu:
            events.append(
                {
                    "ph": "C",
                    "name": f"cpu {sample.get('host', '')}".strip(),
                    "pid": cpu_pid,
                    "tid": 0,
                    "ts": (sample["t_ns"] - origin) / 1000,
                    "args": {f"core {i}": pct for i, pct in enumerate(sample["cpu"])},
                }
            )
    return events


def to_chrome(directory: str | Path, path: str | Path) -> Path:
    """Write the trace folder ``directory`` as Chrome Trace Event JSON to ``path``."""
    events = chrome_events(load(directory))
    path = Path(path)
    path.write_text(json.dumps({"traceEvents": events, "displayTimeUnit": "ms"}))
    return path
