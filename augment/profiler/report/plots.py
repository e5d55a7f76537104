"""timeline.png (who waits for whom, each core's load beneath) and throughput.png."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from augment.profiler.report.recommend import label  # noqa: E402
from augment.trace.chrome import lane_name  # noqa: E402
from augment.trace.reader import Trace  # noqa: E402
from augment.trace.schema import CONSUMER_LANE, WORKER_STAGES  # noqa: E402

COLORS = {
    "load": "#636363",
    "read": "#8c6d31",
    "decode": "#e6550d",
    "augment": "#3182bd",
    "collate": "#31a354",
    "transfer": "#756bb1",
    "wait": "#d62728",
    "step": "#bdbdbd",
}
BARRIER_COLOR = "#fdd0a2"  # a loop waiting for the experiments that run with it
MEASURED_COLOR = "#2ca02c"
HEATMAP_CORES = 9  # from this many cores, their load is a heat map rather than a line each


def _lanes(trace: Trace, summary: dict) -> list[tuple[str, tuple, list[tuple]]]:
    """(label, lane, span keys) per row: experiments in start order, each its loop then its
    workers. A worker index served by several processes one after another (DataLoader
    workers that are not persistent: new ones every epoch) is one row."""
    order = [e["name"] for e in summary["experiments"]]
    keys = {_key(s): s for s in trace.spans}
    rows: dict[tuple, list[tuple]] = defaultdict(list)
    for key in sorted(keys, key=lambda k: k[2]):
        rows[(key[0], key[1], key[3])].append(key)
    lanes = []
    for name in order:
        mine = sorted((r for r in rows if r[0] == name), key=lambda r: (r[2] != CONSUMER_LANE, r))
        for lane in mine:
            label = lane_name(keys[rows[lane][0]]).split(" (")[0]
            if len(rows[lane]) > 1:
                label += f" ({len(rows[lane])} processes)"
            lanes.append((f"{name}: {label}{_on_node(keys[rows[lane][0]])}", lane, rows[lane]))
    return lanes


def _key(s: dict) -> tuple:
    """A span's lane: (experiment, where, pid, worker), where is its cluster node if it names
    one (the Ray backend's workers: lanes are grouped by node), else its host."""
    return (s["experiment"], s.get("node") or s["host"], s["pid"], s["worker"])


def _on_node(s: dict) -> str:
    return f" on node {s['node']}" if s.get("node") else ""


def _mark_remade(ax, trace: Trace, row: dict, clock) -> bool:
    """A cross at the end of each wait for a batch made again after its node was lost (the
    gap is the wait itself), and one label per loop and node lost naming the batches; True
    if there was any."""
    remade = [s for s in trace.spans if s["stage"] == "wait" and s.get("lost_on")]
    labels: dict[tuple, list[dict]] = defaultdict(list)
    for s in remade:
        ax.plot(clock(s["end_ns"]), row[_key(s)], marker="X", color="#000000", ms=7, zorder=4)
        labels[(row[_key(s)], s["lost_on"][-1])].append(s)
    for (y, node), spans in labels.items():
        numbers = ", ".join(str(s["batch"]) for s in spans)
        ax.annotate(
            f"batch{'es' if len(spans) > 1 else ''} {numbers} made again (lost on node {node})",
            (clock(spans[0]["end_ns"]), y),
            xytext=(6, -10),
            textcoords="offset points",
            fontsize=7,
        )
    return bool(remade)


def _barrier_bars(trace: Trace, lanes, clock) -> list[tuple[int, tuple[float, float]]]:
    """(row, (start, width)) of each loop's wait for the experiments run with it."""
    loops = {key[0]: i for i, (_, key, _) in enumerate(lanes) if key[2] == CONSUMER_LANE}
    out = []
    for mark in trace.marks:
        row = loops.get(mark["experiment"])
        if row is not None and "waited_from_ns" in mark:
            start = clock(mark["waited_from_ns"])
            out.append((row, (start, max(clock(mark["measured_from_ns"]) - start, 1e-9))))
    return out


class _Clock:
    """Seconds on the plot: time since the first span, with the idle gaps between
    experiments run one after another cut down to ``GAP_S`` (marked by dashed lines)."""

    GAP_S = 0.3

    def __init__(self, spans: list[dict], origin: int):
        first: dict[str, int] = {}
        last: dict[str, int] = {}
        for s in spans:  # every span, warm-up included: the whole of each experiment
            name = s["experiment"]
            first[name] = min(first.get(name, s["start_ns"]), s["start_ns"])
            last[name] = max(last.get(name, s["end_ns"]), s["end_ns"])
        busy = sorted((first[name], last[name]) for name in first)
        merged: list[list[int]] = []
        for start, end in busy:
            if merged and start <= merged[-1][1] + self.GAP_S * 1e9:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        self.cuts = []  # (where the gap starts, ns removed from everything after it)
        removed = 0
        for (_, end), (start, _) in zip(merged, merged[1:]):
            removed += start - end - int(self.GAP_S * 1e9)
            self.cuts.append((end, removed))
        self.origin = origin

    def __call__(self, t_ns: int) -> float:
        removed = 0
        for gap_start, total in self.cuts:
            if t_ns > gap_start:
                removed = total
        return (t_ns - self.origin - removed) / 1e9

    def breaks(self) -> list[float]:
        return [self(gap_start) + self.GAP_S / 2 for gap_start, _ in self.cuts]


def timeline(trace: Trace, summary: dict, path: Path) -> None:
    lanes = _lanes(trace, summary)
    clock = _Clock(trace.spans, min(s["start_ns"] for s in trace.spans))
    row = {key: i for i, (_, _, members) in enumerate(lanes) for key in members}
    bars: dict[tuple, list] = defaultdict(list)
    for s in trace.spans:
        key = _key(s)
        start = clock(s["start_ns"])
        bars[(row[key], s["stage"])].append((start, max(clock(s["end_ns"]) - start, 1e-9)))
    height = max(3.0, 0.35 * len(lanes) + 1.5)
    fig, (ax, cpu_ax) = plt.subplots(
        2, 1, sharex=True, figsize=(13, height + 2.2), gridspec_kw={"height_ratios": [height, 2.0]}
    )
    for (y, stage), spans in bars.items():
        # the loop's step sits behind, its wait in front; transfer is drawn thinner inside wait
        thin = stage == "transfer"
        ax.broken_barh(
            spans,
            (y - (0.2 if thin else 0.4), 0.4 if thin else 0.8),
            facecolors=COLORS.get(stage, "#000000"),
            linewidth=0,
            zorder=3 if thin else 2,
        )
    drawn = {stage for _, stage in bars}
    remade = _mark_remade(ax, trace, row, clock)
    barrier = _barrier_bars(trace, lanes, clock)
    for y, span in barrier:  # over the step that holds it: that time was no training step
        ax.broken_barh([span], (y - 0.4, 0.8), facecolors=BARRIER_COLOR, linewidth=0, zorder=2.5)
    ax.set_yticks(range(len(lanes)), [label for label, _, _ in lanes], fontsize=8)
    ax.set_ylim(len(lanes) - 0.5, -0.5)
    previous = None
    for i, (_, key, _) in enumerate(lanes):
        if previous is not None and key[0] != previous:
            ax.axhline(i - 0.5, color="#444444", linewidth=0.8)
        previous = key[0]
    ax.grid(axis="x", color="#dddddd", zorder=0)
    ax.set_title("Every stage of every batch, per worker and per training loop", fontsize=11)
    _cpu_panel(cpu_ax, trace, clock)
    first = clock(min(s["start_ns"] for s in trace.spans))
    last = clock(max(s["end_ns"] for s in trace.spans))
    pad = 0.02 * max(last - first, 1e-3)
    ax.set_xlim(first - pad, last + pad)  # CPU samples outside the spans are not the run's
    measured = _measured_lines(ax, cpu_ax, trace, lanes, clock)
    ax.legend(
        handles=[Patch(color=c, label=s) for s, c in COLORS.items() if s in drawn]
        + ([Patch(color=BARRIER_COLOR, label="waiting for the others")] if barrier else [])
        + measured
        + (
            [Line2D([], [], marker="X", color="#000000", ls="", label="made again")]
            if remade
            else []
        ),
        ncol=9,
        fontsize=8,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.02),
        frameon=False,
    )
    for x in clock.breaks():
        for axis in (ax, cpu_ax):
            axis.axvline(x, color="#888888", linestyle="--", linewidth=0.8)
    if clock.cuts:
        cpu_ax.set_xlabel("seconds (idle time between experiments cut at the dashed lines)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _measured_lines(ax, cpu_ax, trace: Trace, lanes, clock) -> list:
    """Where each experiment's measured window opens (after its warm-up): a dotted line
    across its own lanes (and the CPU panel); the legend's entry for it, if any."""
    rows = defaultdict(list)
    for i, (_, key, _) in enumerate(lanes):
        rows[key[0]].append(i)
    drawn = False
    for mark in trace.marks:
        mine = rows.get(mark["experiment"])
        if not mine:
            continue
        x = clock(mark["measured_from_ns"])
        ax.vlines(x, min(mine) - 0.5, max(mine) + 0.5, color=MEASURED_COLOR, linestyle=":")
        cpu_ax.axvline(x, color=MEASURED_COLOR, linestyle=":", linewidth=1)
        drawn = True
    if not drawn:
        return []
    return [Line2D([], [], color=MEASURED_COLOR, linestyle=":", label="measured from here")]


def _drawable(samples: list[dict]) -> list[dict]:
    """The samples worth a point: not those much shorter than the sampling period (the last
    one of each epoch, a few ms, reads a core as 0% or 100% at the kernel's 10 ms tick)."""
    lengths = sorted(s["t_ns"] - s["since_ns"] for s in samples if "since_ns" in s)
    if not lengths:
        return samples
    typical = lengths[len(lengths) // 2]
    kept = [s for s in samples if s["t_ns"] - s.get("since_ns", 0) >= typical / 2]
    return kept or samples


def _cpu_panel(ax, trace: Trace, clock: _Clock) -> None:
    if not trace.cpu:
        ax.text(
            0.5,
            0.5,
            "no CPU samples in this trace",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        return
    cores = len(trace.cpu[0]["cpu"])
    t, values = [], []
    samples = _drawable(trace.cpu)
    for previous, sample in zip([None] + samples[:-1], samples):
        if previous is not None and sample["t_ns"] - previous["t_ns"] > 0.5e9:
            t.append(clock(previous["t_ns"]) + 0.1)  # no samples here: break the line
            values.append([float("nan")] * cores)
        t.append(clock(sample["t_ns"]))
        values.append([sample["cpu"][i] if i < len(sample["cpu"]) else 0.0 for i in range(cores)])
    if cores >= HEATMAP_CORES:
        _cpu_heatmap(ax, t, values, cores)
        return
    for i in range(cores):
        ax.plot(t, [v[i] for v in values], linewidth=1, label=f"core {i}", drawstyle="steps-post")
    ax.set_ylim(0, 105)
    ax.set_ylabel("CPU %")
    ax.set_xlabel("seconds")
    ax.legend(fontsize=8, ncol=min(cores, 8), loc="lower right")
    ax.grid(color="#dddddd")


def _cpu_heatmap(ax, t: list[float], values: list[list[float]], cores: int) -> None:
    """Many cores: one row per core, its load in colour (gaps without samples left blank)."""
    import numpy as np

    grid = np.array(values, dtype=float).T  # cores x samples
    # each sample covers the time since the one before: its column ends at its own time
    first = t[0] - (t[1] - t[0] if len(t) > 1 else 0.1)
    mesh = ax.pcolormesh(
        np.array([first, *t]), np.arange(cores + 1), grid, cmap="magma", vmin=0, vmax=100
    )
    ax.set_ylim(cores, 0)
    ax.set_ylabel("core")
    ax.set_xlabel("seconds")
    # the colour bar beside the panel, not taken out of it: the time axes stay aligned
    ax.figure.colorbar(mesh, cax=ax.inset_axes([1.005, 0.0, 0.012, 1.0]), label="CPU %")


def throughput(summary: dict, path: Path) -> None:
    exps = summary["experiments"]
    labels = [f"{e['name']}\n{label(e['backend'], e['workers'])}" for e in exps]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, max(3.4, 0.6 * len(exps) + 2.0)))
    y = range(len(exps))
    left.barh(y, [e["images_per_s"] for e in exps], color="#3182bd")
    for i, e in enumerate(exps):
        left.text(e["images_per_s"], i, f" {e['images_per_s']:.0f}", va="center", fontsize=8)
        rec = e.get("recommendation")
        if rec:  # what the recommendation expects, as a marker on the same axis
            left.plot(rec["expected_images_per_s"], i + 0.3, marker="v", color="#d62728")
            left.text(
                rec["expected_images_per_s"],
                i + 0.3,
                f"  recommended: {label(rec['backend'], rec['workers'])}, "
                f"about {rec['expected_images_per_s']:.0f}",
                va="center",
                fontsize=7,
                color="#d62728",
            )
    left.set_yticks(y, labels, fontsize=8)
    left.invert_yaxis()
    left.set_xlabel("images/s")
    left.set_title("Throughput per experiment", fontsize=11)
    left.margins(x=0.15)
    starts = [0.0] * len(exps)
    for stage in WORKER_STAGES + ("transfer",):
        total = [
            sum(e["stage_cpu_s"].get(s, 0.0) for s in WORKER_STAGES + ("transfer",)) or 1.0
            for e in exps
        ]
        share = [e["stage_cpu_s"].get(stage, 0.0) / t for e, t in zip(exps, total)]
        right.barh(y, share, left=starts, color=COLORS[stage], label=stage)
        starts = [a + b for a, b in zip(starts, share)]
    right.set_yticks(y, [""] * len(exps))
    right.invert_yaxis()
    right.set_xlim(0, 1)
    right.set_xlabel("share of worker CPU time")
    right.set_title("Where the workers' CPU goes", fontsize=11)
    fig.legend(
        *right.get_legend_handles_labels(),
        fontsize=8,
        ncol=5,
        loc="lower right",
        bbox_to_anchor=(0.98, 0.0),
        frameon=False,
    )
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
