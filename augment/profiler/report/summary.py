"""Figures per experiment from a trace folder, and the report files."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import psutil

from augment.profiler.report import overlap
from augment.profiler.report.recommend import headline, recommend
from augment.profiler.report.verdicts import advice, verdict
from augment.trace import load, to_chrome
from augment.trace.reader import Trace
from augment.trace.schema import CONSUMER_LANE, CONSUMER_STAGES, STAGES

SAMPLE_PERIOD_NS = 100_000_000
# Shorter runs are too short to judge: too few CPU samples and batches for a verdict.
MIN_BATCHES = 3
MIN_STEADY_S = 0.3
JUDGE_FOR_S = 2.0  # what "run at least" aims for


def summarize(trace: Trace) -> dict:
    """``{"experiments": [...], "machine": {...}}`` with the fields listed in docs/profiler.md."""
    by_exp: dict[str, list[dict]] = defaultdict(list)
    for s in trace.spans:
        by_exp[s["experiment"]].append(s)
    meta, marks = {}, {}
    for m in trace.meta:
        meta.setdefault(m["experiment"], m)
    for m in trace.marks:
        marks.setdefault(m["experiment"], m["measured_from_ns"])
    by_exp = {name: _measured(spans, marks.get(name)) for name, spans in by_exp.items()}
    by_exp = {name: spans for name, spans in by_exp.items() if spans}
    cores = len(trace.cpu[0]["cpu"]) if trace.cpu else psutil.cpu_count()
    intervals = {
        name: (
            marks.get(name, min(s["start_ns"] for s in spans)),
            max(s["end_ns"] for s in spans),
        )
        for name, spans in by_exp.items()
    }
    workers_of = {}
    experiments = []
    for name, spans in sorted(by_exp.items(), key=lambda kv: intervals[kv[0]][0]):
        info = meta.get(name, {})
        workers = info.get(
            "workers", len({(s["pid"], s["worker"]) for s in spans if s["worker"] != CONSUMER_LANE})
        )
        workers_of[name] = max(workers, 1)  # a serial loader is one busy worker, the loop
        start, end = intervals[name]
        exp = _figures(name, spans, info, workers, start, end, marks.get(name))
        nodes = by_node(spans)
        if nodes:
            exp["nodes"] = nodes
        experiments.append(exp)
    # the steady state is what the rates describe: load and concurrency are taken over it
    windows = {e["name"]: (e.pop("steady_from_ns"), e["end_ns"]) for e in experiments}
    for exp in experiments:
        exp["cpu_utilization"] = _utilization(trace.cpu, *windows[exp["name"]])
        exp["niced_utilization"] = _utilization(trace.cpu, *windows[exp["name"]], key="nice")
        exp["cpu_cores_used"] = _cores_used(by_exp[exp["name"]], *windows[exp["name"]])
        exp["process_cores"] = _process_cores(trace.procs, exp["name"])
        exp["uncontended_cpu_per_image_ms"] = _calibrated(trace.calibrations, exp["name"])
    active = {name: overlap.active_intervals(by_exp[name], *w) for name, w in windows.items()}
    ran_with = overlap.fractions(active)
    for exp in experiments:
        exp["concurrent_workers"] = _concurrent_workers(exp["name"], ran_with, workers_of)
        exp["other_load_cores"] = _other_load(exp, experiments, active, windows, cores)
    machine = {
        "cores": cores,
        "concurrent_workers": max((e["concurrent_workers"] for e in experiments), default=0),
    }
    verdicts = {
        exp["name"]: verdict(exp, {"cores": cores, "concurrent_workers": exp["concurrent_workers"]})
        for exp in experiments
    }
    for exp in experiments:
        exp["bottleneck"] = verdicts[exp["name"]].bottleneck
    recommend(experiments, ran_with, cores)
    for exp in experiments:
        exp["advice"] = advice(verdicts[exp["name"]], exp)
    return {"experiments": experiments, "machine": machine}


def by_node(spans: list[dict]) -> list[dict]:
    """Per cluster node (spans that name one: the Ray backend's), what its workers made and
    how long the loop waited for it: ``{"node", "workers", "batches", "busy_s", "wait_s",
    "wait_per_batch_ms", "lost_batches"}``, the node the loop waited for most first; a
    batch made again after its node was lost is counted where it was made, and as lost on
    the node it was lost with, which the loop's wait for it is charged to (the gap is the
    loss). Empty for traces without nodes."""
    made_on: dict[tuple, str] = {}
    nodes: dict[str, dict] = {}
    for s in spans:
        node = s.get("node")
        if node is None or s["worker"] == CONSUMER_LANE:
            continue
        made_on[(s["epoch"], s["batch"])] = node
        n = nodes.setdefault(node, {"node": node, "workers": set(), "busy_s": 0.0})
        n["workers"].add((s["pid"], s["worker"]))
        n["busy_s"] += (s["end_ns"] - s["start_ns"]) / 1e9
    # a node lost before any of its workers finished a batch shows only where a batch was
    # lost with it: it is a node of the run all the same
    for s in spans:
        if s["worker"] == CONSUMER_LANE and s["stage"] == "wait":
            for lost in s.get("lost_on") or ():
                nodes.setdefault(lost, {"node": lost, "workers": set(), "busy_s": 0.0})
    if not nodes:
        return []
    for n in nodes.values():
        n.update(workers=len(n["workers"]), batches=0, wait_s=0.0, lost_batches=0)
    for s in spans:
        if s["worker"] != CONSUMER_LANE or s["stage"] != "wait":
            continue
        lost_on = list(s.get("lost_on") or ())
        for lost in lost_on:
            nodes[lost]["lost_batches"] += 1
        node = made_on.get((s["epoch"], s["batch"]))
        if node is not None:
            nodes[node]["batches"] += 1
        # the wait for a batch made again is the lost node's doing: charged to it
        blamed = lost_on[-1] if lost_on else node
        if blamed is not None:
            nodes[blamed]["wait_s"] += (s["end_ns"] - s["start_ns"]) / 1e9
    for n in nodes.values():
        waited_for = max(n["batches"] + n["lost_batches"], 1)
        n["wait_per_batch_ms"] = round(1e3 * n["wait_s"] / waited_for, 2)
        n["busy_s"], n["wait_s"] = round(n["busy_s"], 4), round(n["wait_s"], 4)
    return sorted(nodes.values(), key=lambda n: (-n["wait_per_batch_ms"], n["node"]))


def nodes_markdown(exp: dict) -> str | None:
    """One line: each node's workers and batches, how long the loop waited for them, the
    batches lost with a node, and whose workers stalled the loop most."""
    nodes = exp.get("nodes")
    if not nodes:
        return None
    parts = []
    for n in nodes:
        text = (
            f"node {n['node']}: {n['workers']} worker(s), {n['batches']} batches, the loop "
            f"waited {n['wait_s']:.2f} s for it ({n['wait_per_batch_ms']:.0f} ms a batch)"
        )
        if n["lost_batches"]:
            text += f", {n['lost_batches']} batch(es) lost with it and made again elsewhere"
        parts.append(text)
    line = f"- **{exp['name']}** by node: " + "; ".join(parts) + "."
    if len(nodes) > 1 and nodes[0]["wait_s"] > 0:
        line += f" The loop stalled most on node {nodes[0]['node']}'s workers."
    return line


def _measured(spans: list[dict], measured_from: int | None) -> list[dict]:
    """The spans of the measured part: without the batches handed to the loop before the
    experiment's mark (its warm-up), if it has one."""
    if measured_from is None:
        return spans
    warmup = {
        (s["epoch"], s["batch"])
        for s in spans
        if s["worker"] == CONSUMER_LANE and s["stage"] == "wait" and s["end_ns"] <= measured_from
    }
    return [s for s in spans if (s["epoch"], s["batch"]) not in warmup]


def _concurrent_workers(name: str, ran_with: dict, workers_of: dict) -> float:
    """Workers busy while ``name`` ran: each experiment's workers weighted by the share of
    ``name``'s active time it was active too (its own count in full)."""
    return round(sum(n * ran_with[(name, other)] for other, n in workers_of.items()), 2)


def _calibrated(calibrations: list[dict], name: str) -> float | None:
    """CPU per image (ms) of the experiment's pipeline run alone in one thread after its
    window (``augment.profiler.measure.calibrate``), None without such a run."""
    mine = [c for c in calibrations if c["experiment"] == name and c["images"] > 0]
    if not mine:
        return None
    return round(1e3 * sum(c["cpu_s"] for c in mine) / sum(c["images"] for c in mine), 4)


def _process_cores(procs: list[dict], name: str) -> float | None:
    """Cores the experiment's processes (loop and workers) kept busy over its steady state,
    traced or not: from the CPU times recorded at its start and end; None without them."""
    mine = sorted((p for p in procs if p["experiment"] == name), key=lambda p: p["t_ns"])
    if len(mine) < 2 or mine[-1]["t_ns"] <= mine[0]["t_ns"]:
        return None
    cpu = mine[-1]["cpu_s"] - mine[0]["cpu_s"]
    return round(max(cpu, 0.0) / ((mine[-1]["t_ns"] - mine[0]["t_ns"]) / 1e9), 3)


def _other_load(exp: dict, experiments: list[dict], active: dict, windows: dict, cores: int):
    """Cores busy with work that is none of the experiments' (other programs of normal
    priority), from the CPU samples over ``exp``'s window less what the experiments'
    processes used while active in it (or, without their CPU times, their traced stages)."""
    start, end = windows[exp["name"]]
    ours = 0.0
    for other in experiments:
        inside = overlap.shared(active[other["name"]], [(start, end)])
        used = other["process_cores"] or other["cpu_cores_used"]
        ours += used * inside / max(end - start, 1)
    # niced programs yield to ours: their load is no load on this run
    taken = max(0.0, exp["cpu_utilization"] - exp.get("niced_utilization", 0.0))
    return round(max(0.0, taken * cores - ours), 3)


def _figures(name, spans, info, workers, start, end, measured_from) -> dict:
    """Rates and stall are measured in the steady state: from the moment the first batch
    reaches the loop (worker start-up is reported apart as ``startup_s``), or, after a
    warm-up, from the first batch made after the mark (those made while waiting for the
    other experiments came at once)."""
    cpu, wall, runq = defaultdict(float), defaultdict(float), defaultdict(float)
    runq_unknown = set()
    made_from: dict[tuple, int] = {}
    for s in spans:
        cpu[s["stage"]] += s["cpu_ns"] / 1e9
        wall[s["stage"]] += (s["end_ns"] - s["start_ns"]) / 1e9
        if "runq_ns" in s:
            runq[s["stage"]] += s["runq_ns"] / 1e9
        else:
            runq_unknown.add(s["stage"])
        if s["worker"] != CONSUMER_LANE or s["stage"] not in CONSUMER_STAGES:
            key = (s["epoch"], s["batch"])
            made_from[key] = min(made_from.get(key, s["start_ns"]), s["start_ns"])
    waits = sorted(
        (s for s in spans if s["worker"] == CONSUMER_LANE and s["stage"] == "wait"),
        key=lambda s: s["start_ns"],
    )
    images = [s.get("images", info.get("batch_size") or 0) for s in waits]
    first = 0
    if measured_from is not None:
        first = next(
            (
                i
                for i, w in enumerate(waits)
                if made_from.get((w["epoch"], w["batch"]), 0) >= measured_from
            ),
            0,
        )
    if len(waits) > first + 1:
        steady_from, counted = waits[first]["end_ns"], sum(images[first + 1 :])
        stalled = sum(s["end_ns"] - s["start_ns"] for s in waits[first + 1 :]) / 1e9
        steady_batches = len(waits) - first - 1
    else:
        steady_from, counted, steady_batches = start, sum(images), len(waits)
        stalled = sum(s["end_ns"] - s["start_ns"] for s in waits) / 1e9
    steady_s = (end - steady_from) / 1e9
    return {
        "name": name,
        "backend": info.get("backend", spans[0]["backend"]),
        "workers": workers,
        "batch_size": info.get("batch_size"),
        "batches": len(waits),
        "images": sum(images),
        "wall_s": round((end - start) / 1e9, 4),
        "startup_s": _startup(waits, measured_from),
        "images_per_s": round(counted / steady_s, 2) if steady_s > 0 else 0.0,
        "stage_cpu_s": {k: round(cpu[k], 4) for k in STAGES if k in cpu},
        "stage_wall_s": {k: round(wall[k], 4) for k in STAGES if k in wall},
        # time the stage's threads waited for a core (where the kernel told)
        "stage_runq_s": {
            k: round(runq[k], 4) for k in STAGES if k in wall and k not in runq_unknown
        },
        "stall_fraction": round(min(stalled / steady_s, 1.0), 4) if steady_s > 0 else 0.0,
        "measured_s": round(max(steady_s, 0.0), 3),
        "measured_batches": steady_batches,
        "steady_from_ns": steady_from,
        "too_short": _too_short(steady_batches, steady_s, len(waits), (end - start) / 1e9),
        "batches_to_judge": _batches_to_judge(len(waits), (end - start) / 1e9),
        "start_ns": start,
        "end_ns": end,
    }


def _cores_used(spans: list[dict], start: int, end: int) -> float:
    """Cores the traced work kept busy over ``start..end``: the worker stages, the step and
    the transfer, each span's CPU prorated to its part inside (a serial loop's ``wait`` is
    its worker stages, so it is not counted again)."""
    if end <= start:
        return 0.0
    used = 0.0
    for s in spans:
        if s["stage"] == "wait" or s["end_ns"] <= start or s["start_ns"] >= end:
            continue
        length = s["end_ns"] - s["start_ns"]
        inside = min(end, s["end_ns"]) - max(start, s["start_ns"])
        used += s["cpu_ns"] * (inside / length if length > 0 else 1.0)
    return round(used / (end - start), 3)


def _startup(waits: list[dict], measured_from: int | None) -> float:
    if not waits or measured_from is not None:  # warmed up before the mark: no start-up here
        return 0.0
    return round((waits[0]["end_ns"] - waits[0]["start_ns"]) / 1e9, 4)


def _batches_to_judge(batches: int, wall_s: float) -> int:
    """Batches that would run about JUDGE_FOR_S at this run's pace."""
    per_batch = wall_s / max(batches, 1)
    return max(MIN_BATCHES + 1, math.ceil(JUDGE_FOR_S / per_batch) if per_batch > 0 else 0)


def _too_short(steady_batches: int, steady_s: float, batches: int, wall_s: float) -> str | None:
    """Why a run is too short to judge, or None."""
    if steady_batches >= MIN_BATCHES and steady_s >= MIN_STEADY_S:
        return None
    needed = _batches_to_judge(batches, wall_s)
    return (
        f"too short to judge: {batches} batches in {wall_s:.2f} s; run at least {needed} "
        f"batches (about {JUDGE_FOR_S:.0f} s at this pace)"
    )


def _utilization(samples: list[dict], start: int, end: int, key: str = "cpu") -> float:
    """The cores' mean load over ``start..end``: each sample covers ``since_ns..t_ns``
    (older traces: the period before ``t_ns``), weighted by its overlap with the run.
    ``key`` "nice": the part of it in niced processes (0 where samples do not say)."""
    total = weight = 0.0
    for s in samples:
        if not s["cpu"]:
            continue
        since = s.get("since_ns", s["t_ns"] - SAMPLE_PERIOD_NS)
        overlap = min(end, s["t_ns"]) - max(start, since)
        if overlap <= 0:
            continue
        values = s.get(key) or [0.0]
        total += overlap * sum(values) / len(values)
        weight += overlap
    return round(total / weight / 100.0, 4) if weight else 0.0


def markdown(summary: dict) -> str:
    m = summary["machine"]
    lines = [
        f"{m['cores']} cores, up to {m['concurrent_workers']:g} workers busy at once.",
        "",
        "| experiment | backend | workers | measured | images/s | stall | CPU | bottleneck "
        "| recommended |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for e in summary["experiments"]:
        lines.append(
            f"| {e['name']} | {e['backend']} | {e['workers']} | {_window(e)} | "
            f"{e['images_per_s']:.0f} | "
            f"{e['stall_fraction']:.0%} | {e['cpu_utilization']:.0%} | {e['bottleneck']} | "
            f"{headline(e)} |"
        )
    lines.append("")
    for e in summary["experiments"]:
        lines.append(f"- **{e['name']}**: {e['advice']}")
        if e.get("recommendation"):
            lines.append(f"  Recommended: {headline(e)}. {e['recommendation']['why']}")
    lines += [line for line in map(nodes_markdown, summary["experiments"]) if line]
    return "\n".join(lines) + "\n"


def _window(exp: dict) -> str:
    """The steady state the figures describe: "3.0 s, 45 batches"."""
    if "measured_s" not in exp:  # a summary written before windows were reported
        return "-"
    return f"{exp['measured_s']:.1f} s, {exp['measured_batches']} batches"


def write_report(trace_dir: str | Path, out_dir: str | Path) -> dict:
    """summary.json, summary.md, trace.json, timeline.png and throughput.png in ``out_dir``."""
    from augment.profiler.report import plots

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
