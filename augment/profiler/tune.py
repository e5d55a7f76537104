"""augment-profile tune: run experiments, run what the report recommends, and show how far
the predictions were from what was measured.

    augment-profile tune kaggle_amazon             # a shipped config, or a TOML path
    augment-profile tune --backends serial --step-ms 30 --seconds 5
    augment-profile tune compare_backends --sweep  # also each backend at 1, 2, 4.. 2 x cores

Runs are sized as the profiler sizes them: a warm-up, then a window of ``--seconds`` (or a
config's ``seconds``); ``--batches N`` measures exactly N batches, and a run too short to
judge is then run once more with the batches the report asks for.

Writes ``tune.json`` and ``tune.md`` in the output folder, with each run's report in a
sub-folder (``now``, ``recommended``, ``sweep/<backend>_<workers>``).
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import psutil

from augment.loading import backends
from augment.profiler.experiment import Config, Experiment
from augment.profiler.options import build_parser, default_out, flags_given, load_jobs
from augment.profiler.report.model import CANDIDATE_BACKENDS
from augment.profiler.report.recommend import label
from augment.profiler.runner import profile, serving


def tune_main(argv: list[str]) -> int:
    parser = build_parser("augment-profile tune", __doc__)
    parser.add_argument("config_or_path", nargs="?", help="a shipped config or a TOML file")
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="also run each backend at 1, 2, 4, ... up to 2 x cores workers",
    )
    args = parser.parse_args(argv)
    if args.config_or_path:
        args.config = [*(args.config or []), args.config_or_path]
    out = args.out or default_out()
    try:
        jobs = load_jobs(args, flags_given(argv) or bool(args.config))
    except (ValueError, OSError) as exc:
        raise SystemExit(f"augment-profile tune: {exc}") from None
    results = {}
    for name, config in jobs:
        target = out / name if len(jobs) > 1 else out
        result = tune(config, target, args.quiet or False, args.sweep, args.concurrent)
        if result is None:
            return 1
        results[name] = result
        print(markdown(name, result))
    (out / "tune.json").write_text(json.dumps(results, indent=2))
    (out / "tune.md").write_text("\n".join(markdown(n, r) for n, r in results.items()))
    print(f"tune: {out}/tune.md, tune.json")
    return 0


def tune(config: Config, out: Path, quiet: bool, sweep: bool, concurrent: bool = False):
    """Run ``config`` as it is, then as recommended (and with ``sweep``, each backend at
    ``sweep_counts`` workers); the rows of predicted against measured, or None on failure."""
    concurrent = config.concurrent or concurrent
    if not quiet:
        print("== the configuration as it is")
    now = _run(config, config.experiments, concurrent, out / "now", quiet)
    if now is None:
        return None
    too_short = [e for e in now["experiments"] if e["recommendation"] is None]
    if too_short:  # once more, as long as the report asks for: the runs are the point here
        longer = max(e["batches_to_judge"] for e in too_short)
        for e in too_short:
            print(f"tune: {e['name']}: {e['too_short'] or 'no recommendation'}", file=sys.stderr)
        print(f"tune: running it again with {longer} batches per experiment", file=sys.stderr)
        config = replace(
            config,
            experiments=[
                replace(e, batches=max(e.batches or 0, longer), seconds=None)
                for e in config.experiments
            ],
        )
        now = _run(config, config.experiments, concurrent, out / "now-longer", quiet)
        if now is None:
            return None
        too_short = [e for e in now["experiments"] if e["recommendation"] is None]
    if too_short:
        for e in too_short:
            print(f"{e['name']}: {e['advice']}", file=sys.stderr)
        print("tune: no recommendation to run; run longer (--seconds)", file=sys.stderr)
        return None
    recs = {e["name"]: e["recommendation"] for e in now["experiments"]}
    recommended = [
        replace(e, backend=recs[e.name]["backend"], workers=recs[e.name]["workers"])
        for e in config.experiments
    ]
    if not quiet:
        print("== the recommendation")
    after = _run(config, recommended, concurrent, out / "recommended", quiet)
    if after is None:
        return None
    measured_after = {e["name"]: e["images_per_s"] for e in after["experiments"]}
    rows = []
    for e in now["experiments"]:
        rec = e["recommendation"]
        rows.append(
            {
                "experiment": e["name"],
                "now": label(e["backend"], e["workers"]),
                "now_expected": e["expected_images_per_s"],
                "now_measured": e["images_per_s"],
                "recommended": label(rec["backend"], rec["workers"]),
                "recommended_expected": rec["expected_images_per_s"],
                "recommended_measured": measured_after.get(e["name"], 0.0),
                "why": rec["why"],
            }
        )
    result = {"rows": rows, "concurrent": concurrent}
    if sweep:
        result["sweep"] = _sweep(config, concurrent, out / "sweep", quiet)
    return result


def _run(config: Config, experiments: list[Experiment], concurrent: bool, out: Path, quiet):
    with serving(replace(config, experiments=experiments)) as served:
        code, summary = profile(served, concurrent, out, quiet)
    return summary if code == 0 else None


def sweep_counts(cores: int) -> list[int]:
    """Worker counts a sweep tries: 1, 2, 4, ... up to 2 x cores, and the core count itself
    (a few runs on any machine, not one per count)."""
    counts, n = {cores, 2 * cores}, 1
    while n < 2 * cores:
        counts.add(n)
        n *= 2
    return sorted(counts)


def _sweep(config: Config, concurrent: bool, out: Path, quiet: bool) -> list[dict]:
    """Every experiment on one backend and worker count, for each backend at
    ``sweep_counts`` workers: the summed images/s of each."""
    counts = sweep_counts(psutil.cpu_count())
    options = [("serial", 0)] + [
        (b, n) for b in CANDIDATE_BACKENDS[1:] if b in backends.names() for n in counts
    ]
    found = []
    for backend, workers in options:
        experiments = [replace(e, backend=backend, workers=workers) for e in config.experiments]
        if not quiet:
            print(f"== sweep: {label(backend, workers)}")
        summary = _run(config, experiments, concurrent, out / f"{backend}_{workers}", quiet)
        if summary is not None:
            found.append(
                {
                    "config": label(backend, workers),
                    "images_per_s": {e["name"]: e["images_per_s"] for e in summary["experiments"]},
                }
            )
    return found


def markdown(name: str, result: dict) -> str:
    lines = [
        f"### {name}",
        "",
        "| experiment | now | expected | measured | recommended | expected | measured | gain |",
        "|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in result["rows"]:
        gain = r["recommended_measured"] / r["now_measured"] if r["now_measured"] else 0.0
        lines.append(
            f"| {r['experiment']} | {r['now']} | {r['now_expected']:,.0f} | "
            f"{r['now_measured']:,.0f} | {r['recommended']} | {r['recommended_expected']:,.0f} | "
            f"{r['recommended_measured']:,.0f} | {gain:.2f}x |"
        )
    lines.append("")
    if "sweep" in result:
        lines += sweep_lines(result)
    return "\n".join(lines) + "\n"


def sweep_lines(result: dict) -> list[str]:
    """Sum over the experiments: the recommendation's against the best the sweep found."""
    if not result["sweep"]:
        return ["The sweep ran nothing.", ""]
    total = {s["config"]: sum(s["images_per_s"].values()) for s in result["sweep"]}
    best = max(total, key=total.get)
    reached = sum(r["recommended_measured"] for r in result["rows"])
    lines = ["| sweep (every experiment on it) | images/s, summed |", "|---|---:|"]
    lines += [f"| {config} | {rate:,.0f} |" for config, rate in total.items()]
    lines += [
        "",
        f"Best found: {best}, {total[best]:,.0f} img/s; the recommendation measured "
        f"{reached:,.0f} img/s, {reached / total[best]:.0%} of it.",
        "",
    ]
    return lines
