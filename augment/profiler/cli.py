"""augment-profile: run experiments side by side or one after another, trace them, and
report where the CPU time goes.

    augment-profile                               # both shipped configs on the sample data
    augment-profile --config kaggle_amazon        # a shipped config, by name
    augment-profile --config my.toml              # a config file (its paths: from its folder)
    augment-profile --backends thread,process --workers 1,2 --step-ms 20 --data DIR
    augment-profile --config seed_regimes --seconds 5   # measure each for 5 s (default 3)
    augment-profile report runs/DIR               # redraw the report(s) of a run folder
    augment-profile tune kaggle_amazon [--sweep]  # run, then run the recommendation

Each experiment starts its workers, warms up, and is measured for a window sized by time
(``--seconds``, or a config's ``seconds``), on any machine long enough for the report to
judge it; ``--batches N`` measures exactly N batches instead. Experiments at once are
measured over the same window. Reports go to ./runs/<timestamp>/ in the current folder.
Without data, experiments run on the sample dataset, made on first use in $AUGMENT_CACHE
(default ~/.cache/augment).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from augment.profiler.options import build_parser, default_out, flags_given, load_jobs
from augment.profiler.runner import profile, serving


def report_main(argv: list[str]) -> int:
    from augment.profiler.report import write_report
    from augment.profiler.report.summary import markdown

    parser = argparse.ArgumentParser(
        prog="augment-profile report",
        description="Redraw the report of a profile run: a run folder (each config's report "
        "in it), one config's folder, or a folder of *.jsonl traces.",
    )
    parser.add_argument("dir", type=Path, help="a profile run folder or a folder of *.jsonl traces")
    parser.add_argument("--out", type=Path, help="where to write the report (default: DIR)")
    args = parser.parse_args(argv)
    reports = report_folders(args.dir)
    if not reports:
        raise SystemExit(
            f"augment-profile report: no traces in {str(args.dir)!r}; accepted: the folder "
            "augment-profile printed (runs/<timestamp>), one config's folder in it, or a "
            "folder of *.jsonl traces"
        )
    for folder, trace_dir in reports:
        out = args.out / folder.relative_to(args.dir) if args.out else folder
        try:
            summary = write_report(trace_dir, out)
        except ValueError as exc:
            raise SystemExit(f"augment-profile report: {exc}") from None
        if len(reports) > 1:
            print(f"## {folder.relative_to(args.dir)}\n")
        print(markdown(summary))
    return 0


def report_folders(directory: Path) -> list[tuple[Path, Path]]:
    """(report folder, its traces) under ``directory``: itself when it holds traces (or a
    ``traces`` folder), else each sub-folder that does (a run of several configs)."""

    def traces_of(folder: Path) -> Path | None:
        if (folder / "traces").is_dir():
            return folder / "traces"
        return folder if any(folder.glob("*.jsonl")) else None

    if not directory.is_dir():
        return []
    own = traces_of(directory)
    if own is not None:
        return [(directory, own)]
    found = []
    for sub in sorted(p for p in directory.iterdir() if p.is_dir()):
        traces = traces_of(sub)
        if traces is not None:
            found.append((sub, traces))
    return found


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["report"]:
        return report_main(argv[1:])
    if argv[:1] == ["tune"]:
        from augment.profiler.tune import tune_main

        return tune_main(argv[1:])
    args = build_parser("augment-profile", __doc__).parse_args(argv)
    out = args.out or default_out()
    try:
        jobs = load_jobs(args, flags_given(argv))
    except (ValueError, OSError) as exc:
        raise SystemExit(f"augment-profile: {exc}") from None
    code = 0
    for name, config in jobs:
        target = out / name if len(jobs) > 1 else out
        with serving(config) as experiments:
            code, _ = profile(experiments, config.concurrent or args.concurrent, target, args.quiet)
        if code == 130:
            break
    return code


__all__ = ["main"]
