"""Figures per experiment from a trace folder, and the report files."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import psutil

from augment.report.verdicts import verdict
from augment.trace import load, to_chrome
from augment.trace.reader import Trace
from augment.trace.schema import CONSUMER_LANE, STAGES

SAMPLE_PERIOD_NS = 100_000_000


def summarize(trace: Trace) -> dict:
    """``{"experiments": [...], "machine": {...}}`` with the fields listed in README."""
    by_exp: dict[str, list[dict]] = defaultdict(list)
    for s in trace.spans:
        by_exp[s["experiment"]].append(s)
    meta = {}
    for m in trace.meta:
        meta.setdefault(m["experiment"], m)
    cores = len(trace.cpu[0]["cpu"]) if trace.cpu else psutil.cpu_count()
    intervals = {
        name: (min(s["start_ns"] for s in spans), max(s["end_ns"] for s in spans))
        for name, spans in by_exp.items()
    }
    experiments = []
    for name, spans in sorted(by_exp.items(), key=lambda kv: intervals[kv[0]][0]):
        info = meta.get(name, {})
        workers = info.get(
            "workers", len({(s["pid"], s["worker"]) for s in spans if s["worker"] != CONSUMER_LANE})
        )
        start, end = intervals[name]
        exp = _figures(name, spans, info, workers, start, end)
        exp["cpu_utilization"] = _utilization(trace.cpu, start, end)
        exp["concurrent_workers"] = sum(
            max(meta.get(other, {}).get("workers", 1), 1)
            for other, (s0, s1) in intervals.items()
            if s0 < end and start < s1
        )
        experiments.append(exp)
    machine = {
        "cores": cores,
        "concurrent_workers": max((e["concurrent_workers"] for e in experiments), default=0),
    }
    for exp in experiments:
        exp["bottleneck"], exp["advice"] = verdict(
            exp, {"cores": cores, "concurrent_workers": exp["concurrent_workers"]}
        )
    return {"experiments": experiments, "machine": machine}


def _figures(name, spans, info, workers, start, end) -> dict:
    """Rates and stall are measured in the steady state, from the moment the first batch
    reaches the loop: worker start-up is reported apart as ``startup_s``."""
    cpu, wall = defaultdict(float), defaultdict(float)
    for s in spans:
        cpu[s["stage"]] += s["cpu_ns"] / 1e9
        wall[s["stage"]] += (s["end_ns"] - s["start_ns"]) / 1e9
    waits = sorted(
        (s for s in spans if s["worker"] == CONSUMER_LANE and s["stage"] == "wait"),
        key=lambda s: s["start_ns"],
    )
    images = [s.get("images", info.get("batch_size") or 0) for s in waits]
    if len(waits) > 1:
        steady_from, counted = waits[0]["end_ns"], sum(images[1:])
        stalled = sum(s["end_ns"] - s["start_ns"] for s in waits[1:]) / 1e9
    else:
        steady_from, counted = start, sum(images)
        stalled = sum(s["end_ns"] - s["start_ns"] for s in waits) / 1e9
    steady_s = (end - steady_from) / 1e9
    return {
        "name": name,
        "backend": info.get("backend", spans[0]["backend"]),
        "workers": workers,
        "batch_size": info.get("batch_size"),
        "images": sum(images),
        "wall_s": round((end - start) / 1e9, 4),
        "startup_s": round((waits[0]["end_ns"] - waits[0]["start_ns"]) / 1e9, 4) if waits else 0.0,
        "images_per_s": round(counted / steady_s, 2) if steady_s > 0 else 0.0,
        "stage_cpu_s": {k: round(cpu[k], 4) for k in STAGES if k in cpu},
        "stage_wall_s": {k: round(wall[k], 4) for k in STAGES if k in wall},
        "stall_fraction": round(min(stalled / steady_s, 1.0), 4) if steady_s > 0 else 0.0,
        "start_ns": start,
        "end_ns": end,
    }


def _utilization(samples: list[dict], start: int, end: int) -> float:
    # a sample covers the interval before it: widen by one period so short runs get one
    inside = [
        s["cpu"] for s in samples if start <= s["t_ns"] <= end + SAMPLE_PERIOD_NS and s["cpu"]
    ]
    if not inside:
        return 0.0
    return round(sum(sum(c) / len(c) for c in inside) / len(inside) / 100.0, 4)


def markdown(summary: dict) -> str:
    m = summary["machine"]
    lines = [
        f"{m['cores']} cores, up to {m['concurrent_workers']} workers busy at once.",
        "",
        "| experiment | backend | workers | images/s | stall | CPU | bottleneck |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for e in summary["experiments"]:
        lines.append(
            f"| {e['name']} | {e['backend']} | {e['workers']} | {e['images_per_s']:.0f} | "
            f"{e['stall_fraction']:.0%} | {e['cpu_utilization']:.0%} | {e['bottleneck']} |"
        )
    lines.append("")
    lines += [f"- **{e['name']}**: {e['advice']}" for e in summary["experiments"]]
    return "\n".join(lines) + "\n"


def write_report(trace_dir: str | Path, out_dir: str | Path) -> dict:
    """summary.json, summary.md, trace.json, timeline.png and throughput.png in ``out_dir``."""
    from augment.report import plots

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    trace = load(trace_dir)
    if not trace.spans:
        raise ValueError(f"no spans in {str(trace_dir)!r}: nothing was traced there")
    summary = summarize(trace)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    (out_dir / "summary.md").write_text(markdown(summary))
    to_chrome(trace_dir, out_dir / "trace.json")
    plots.timeline(trace, summary, out_dir / "timeline.png")
    plots.throughput(summary, out_dir / "throughput.png")
    return summary
