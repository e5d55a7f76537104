"""python -m augment.trace [--out DIR] [--experiment NAME] script.py [args...]

Runs an unchanged training script, as ``python -m cProfile`` does, and traces every
``torch.utils.data.DataLoader`` it iterates and every ``augment.Loader``; then writes the
report (timeline, per-core CPU, bottleneck) into the trace folder.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from datetime import datetime
from pathlib import Path


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m augment.trace",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, help="trace folder (default: runs/trace-<timestamp>)")
    parser.add_argument("--experiment", help="experiment name (default: the script's name)")
    parser.add_argument("--no-report", action="store_true", help="trace only; no report")
    parser.add_argument("script", help="the Python script to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    script = Path(args.script)
    if not script.is_file():
        print(f"python -m augment.trace: no script {str(script)!r}", file=sys.stderr)
        return 2
    out = args.out or Path("runs") / f"trace-{datetime.now():%Y%m%d-%H%M%S}"
    experiment = args.experiment or script.stem
    # the script's augment.Loaders, and its worker processes, trace through the environment
    os.environ["AUGMENT_TRACE_DIR"] = str(out.resolve())
    os.environ["AUGMENT_EXPERIMENT"] = experiment
    from augment.trace.dataloader import trace_all

    trace_all(out, experiment)
    sys.argv = [str(script), *args.args]
    sys.path[0] = str(script.resolve().parent)
    code = 0
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        code = 130
    finally:
        if not args.no_report:
            report(out)
    return code


def report(out: Path) -> None:
    from augment.profiler.report import write_report
    from augment.profiler.report.summary import markdown

    try:
        summary = write_report(out, out)
    except ValueError as exc:
        print(f"augment.trace: no report: {exc}", file=sys.stderr)
        return
    print(markdown(summary), file=sys.stderr)
    print(f"augment.trace: {out}/timeline.png, summary.md, trace.json", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
