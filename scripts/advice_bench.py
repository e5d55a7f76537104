"""Does the advice pay? ``augment-profile tune`` on misconfigured runs (scripts/advice/*.toml),
a step-bound one, three experiments at once, and the shipped configs: predicted against
measured, before and after following the recommendation.

    python scripts/benchmark.py advice --repeat 3 [--sweep] [--write-docs]

Each scenario is tuned ``--repeat`` times; its row is the repeat with the median gain, and
the range of gains over the repeats is shown beside it. ``--sweep`` also runs every backend
at 1..2 x cores workers on the serial scenario and says how far the recommendation was
from the best found. Targets are checked at the end: on misconfigured runs a gain of 1.3x or
more, every prediction within 25% of what following it measured and the median within 15%.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from augment.profiler.experiment import config_path, load_config, prepare
from augment.profiler.tune import sweep_lines, tune

ADVICE = Path(__file__).resolve().parent / "advice"
# (name, what it is); a name without a folder is a shipped config
SCENARIOS = [
    ("serial_with_step", "misconfigured"),
    ("gil_threads", "misconfigured"),
    ("http_one_process", "misconfigured"),
    ("step_bound", "step-bound"),
    ("three_at_once", "concurrent"),
    ("kaggle_amazon", "shipped"),
    ("compare_backends", "shipped"),
    ("seed_regimes", "shipped"),
]
GAIN_TARGET, ERROR_TARGET, MEDIAN_ERROR_TARGET, STEP_LOSS = 1.3, 0.25, 0.15, 0.10


def add_arguments(parser) -> None:
    parser.add_argument("--repeat", type=int, default=3, help="tune runs per scenario")
    parser.add_argument("--scenarios", help="comma-separated names (default: all)")
    parser.add_argument("--sweep", action="store_true", help="also sweep serial_with_step")


def scenario_path(name: str) -> Path:
    local = ADVICE / f"{name}.toml"
    return local if local.exists() else config_path(name)


def bench_advice(args) -> str:
    names = args.scenarios.split(",") if args.scenarios else [n for n, _ in SCENARIOS]
    kinds = dict(SCENARIOS)
    rows, checks, extra, misconfigured = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="advice-") as tmp:
        for name in names:
            path = scenario_path(name)
            config = prepare(load_config(path), f"config {str(path)!r}")
            runs = []
            for i in range(args.repeat):
                print(f"== {name}, run {i + 1} of {args.repeat}", flush=True)
                result = tune(config, Path(tmp) / f"{name}-{i}", quiet=True, sweep=False)
                if result is None:
                    raise SystemExit(f"tune failed on {name}")
                runs.append(result)
            rows += _scenario_rows(name, kinds.get(name, "shipped"), runs)
            checks += _checks(name, kinds.get(name, "shipped"), runs)
            if kinds.get(name) == "misconfigured":
                misconfigured += [
                    _error(x["recommended_measured"], x["recommended_expected"])
                    for r in runs
                    for x in r["rows"]
                ]
        if args.sweep:
            path = scenario_path("serial_with_step")
            config = prepare(load_config(path), "serial_with_step")
            result = tune(config, Path(tmp) / "sweep", quiet=True, sweep=True)
            extra = ["", "`serial_with_step` with `--sweep`:", "", *sweep_lines(result)]
    if misconfigured:
        worst, middle = max(misconfigured), statistics.median(misconfigured)
        ok = worst <= ERROR_TARGET and middle <= MEDIAN_ERROR_TARGET
        checks.append(
            f"every misconfigured run: off by at most {worst:.0%} (<= {ERROR_TARGET:.0%}), "
            f"median {middle:.0%} (<= {MEDIAN_ERROR_TARGET:.0%}): {'met' if ok else 'NOT met'}"
        )
    table = "\n".join(_table(rows) + extra)
    table += "\n\n" + "\n".join(f"- {c}" for c in checks)
    print(table)
    return table


def _gain(row: dict) -> float:
    return row["recommended_measured"] / row["now_measured"] if row["now_measured"] else 0.0


def _error(measured: float, expected: float) -> float:
    return abs(measured - expected) / expected if expected else float("inf")


def _scenario_rows(name: str, kind: str, runs: list[dict]) -> list[dict]:
    """Per experiment: the repeat with the median gain, and the range of gains."""
    out = []
    for name in [row["experiment"] for row in runs[0]["rows"]]:
        # the same experiment in every run (rows come in the order the experiments started)
        per_run = sorted(
            (row for r in runs for row in r["rows"] if row["experiment"] == name), key=_gain
        )
        chosen = per_run[len(per_run) // 2]
        gains = [_gain(r) for r in per_run]
        out.append({**chosen, "scenario": name, "kind": kind, "gains": gains})
    return out


def _table(rows: list[dict]) -> list[str]:
    lines = [
        "| scenario | experiment | now | expected | measured | recommended | expected | "
        "measured | off by | gain (range) |",
        "|---|---|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        off = _error(r["recommended_measured"], r["recommended_expected"])
        lines.append(
            f"| {r['scenario']} ({r['kind']}) | {r['experiment']} | {r['now']} | "
            f"{r['now_expected']:,.0f} | {r['now_measured']:,.0f} | {r['recommended']} | "
            f"{r['recommended_expected']:,.0f} | {r['recommended_measured']:,.0f} | {off:.0%} | "
            f"{_gain(r):.2f}x ({min(r['gains']):.2f}-{max(r['gains']):.2f}) |"
        )
    return lines


def _checks(name: str, kind: str, runs: list[dict]) -> list[str]:
    """The issue's targets for this scenario, on the median over repeats."""

    def median(f):
        return statistics.median(f(r) for r in runs)

    def errors(r):
        return max(_error(x["recommended_measured"], x["recommended_expected"]) for x in r["rows"])

    if kind == "misconfigured":
        gain = median(lambda r: _gain(r["rows"][0]))
        err = median(errors)
        ok = gain >= GAIN_TARGET and err <= ERROR_TARGET
        return [
            f"{name}: gain {gain:.2f}x (>= {GAIN_TARGET}), off by {err:.0%} "
            f"(<= {ERROR_TARGET:.0%}): {'met' if ok else 'NOT met'}"
        ]
    if kind == "step-bound":

        def workers(label):
            return 0 if label == "serial" else int(label.split(" x")[1])

        fewer = all(
            workers(r["rows"][0]["recommended"]) <= workers(r["rows"][0]["now"]) for r in runs
        )
        loss = 1 - median(lambda r: _gain(r["rows"][0]))
        ok = fewer and loss <= STEP_LOSS
        return [
            f"{name}: no more workers: {fewer}, loss {loss:.0%} (<= {STEP_LOSS:.0%}): "
            f"{'met' if ok else 'NOT met'}"
        ]
    if kind == "concurrent":
        err = median(errors)
        before = median(lambda r: sum(x["now_measured"] for x in r["rows"]))
        after = median(lambda r: sum(x["recommended_measured"] for x in r["rows"]))
        ok = err <= ERROR_TARGET and after >= before
        return [
            f"{name}: each off by at most {err:.0%} (<= {ERROR_TARGET:.0%}), sum "
            f"{before:,.0f} -> {after:,.0f} img/s: {'met' if ok else 'NOT met'}"
        ]
    return []
