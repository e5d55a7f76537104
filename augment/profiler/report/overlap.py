"""When experiments ran at once: by the time each was active, not by its first and last span.

Two loaders of one script that take turns (a training loader, then a validation loader, and
again) each span most of the run, but never load batches at the same time; counting them
as concurrent would double the workers busy and advise one to shrink for the other. An
experiment is active while its loop waits for a batch or steps on one; gaps between loop
spans shorter than a few of its own batch periods (the loop's own Python between batches)
count as active, longer ones (the other loader's turn) do not."""

from __future__ import annotations

import statistics

from augment.trace.schema import CONSUMER_LANE

GAP_PERIODS = 3.0  # a pause longer than this many of its batch periods: the loader was idle


def active_intervals(spans: list[dict], start: int, end: int) -> list[tuple[int, int]]:
    """The loop's active time of one experiment within ``start..end``, merged (ns)."""
    loop = sorted(
        (s["start_ns"], s["end_ns"])
        for s in spans
        if s["worker"] == CONSUMER_LANE and s["stage"] in ("wait", "step")
    )
    if not loop:  # no loop lane traced: its workers' spans tell when it ran
        loop = sorted((s["start_ns"], s["end_ns"]) for s in spans)
    periods = _batch_periods(spans)
    tolerance = GAP_PERIODS * statistics.median(periods) if periods else 0
    merged: list[list[int]] = []
    for s0, s1 in loop:
        s0, s1 = max(s0, start), min(s1, end)
        if s1 <= s0:
            continue
        if merged and s0 - merged[-1][1] <= tolerance:
            merged[-1][1] = max(merged[-1][1], s1)
        else:
            merged.append([s0, s1])
    return [(a, b) for a, b in merged]


def _batch_periods(spans: list[dict]) -> list[int]:
    """Time from one batch's hand-over to the next's, within runs of consecutive batches."""
    handed = sorted(
        s["end_ns"] for s in spans if s["worker"] == CONSUMER_LANE and s["stage"] == "wait"
    )
    return [b - a for a, b in zip(handed, handed[1:]) if b > a]


def length(intervals: list[tuple[int, int]]) -> int:
    return sum(b - a for a, b in intervals)


def shared(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> int:
    """Time (ns) both sets of merged intervals cover."""
    total, i, j = 0, 0, 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        total += max(0, hi - lo)
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def fractions(active: dict[str, list[tuple[int, int]]]) -> dict[tuple[str, str], float]:
    """``(a, b) -> the share of a's active time during which b was active too``."""
    out = {}
    for a, ia in active.items():
        for b, ib in active.items():
            own = length(ia)
            out[(a, b)] = 1.0 if a == b else (shared(ia, ib) / own if own else 0.0)
    return out
