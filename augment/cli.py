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
import contextlib
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from augment.experiment import (
    DEFAULT_SECONDS,
    MIN_SECONDS,
    Config,
    Experiment,
    check_folder,
    config_path,
    load_config,
    prepare,
    uses_sample,
)
from augment.sample_data import sample_path

SHIPPED = ("kaggle_amazon", "compare_backends")  # what runs without arguments
STOP_GRACE_S = 4.0


def _experiment_main(experiment: Experiment, trace_dir: str, progress, together) -> None:
    """Body of one experiment process."""
    from augment.measure import run

    try:
        run(
            experiment,
            trace_dir,
            progress=lambda event, value: progress.put((experiment.name, event, value)),
            together=together,
        )
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        progress.put((experiment.name, "end", None))


class Runner:
    """Runs experiments as separate OS processes (all at once, or one after another), with
    their progress on the console; Ctrl-C stops them all within a few seconds, keeping what
    was traced."""

    def __init__(self, experiments: list[Experiment], trace_dir: Path, quiet: bool):
        self.experiments, self.trace_dir, self.quiet = experiments, trace_dir, quiet
        self.ctx = mp.get_context("spawn")
        self.progress = self.ctx.Queue()
        self.running: list = []
        self.together = None

    def run(self, concurrent: bool) -> bool:
        """True when every experiment finished; False when interrupted."""
        from augment.measure import Together
        from augment.progress import Console

        windows = {e.name: e.measured_seconds or e.batches for e in self.experiments}
        console = None if self.quiet else Console(windows)
        listener = threading.Thread(target=self._listen, args=(console,), daemon=True)
        listener.start()
        try:
            groups = [self.experiments] if concurrent else [[e] for e in self.experiments]
            for group in groups:
                # experiments at once warm up, then measure over the same window
                self.together = Together(self.ctx, len(group)) if len(group) > 1 else None
                self.running = [
                    self.ctx.Process(
                        target=_experiment_main,
                        name=e.name,
                        args=(e, str(self.trace_dir), self.progress, self.together),
                    )
                    for e in group
                ]
                for p in self.running:
                    p.start()
                self._join()
                failed = [p.name for p in self.running if p.exitcode != 0]
                if failed:
                    raise RuntimeError(f"experiment(s) {', '.join(failed)} failed (see above)")
            return True
        except KeyboardInterrupt:
            self.stop()
            return False
        finally:
            self.progress.put(None)
            listener.join(2)
            if console is not None:
                console.close()

    def _join(self) -> None:
        """Wait for the group; one that fails releases the others (barrier, window)."""
        while any(p.is_alive() for p in self.running):
            for p in self.running:
                p.join(0.2)
                if self.together is not None and p.exitcode not in (None, 0):
                    self.together.abort()

    def stop(self) -> None:
        """Ctrl-C to every experiment (each closes its loader), then kill what lingers."""
        for p in self.running:
            if p.is_alive():
                try:
                    os.kill(p.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + STOP_GRACE_S
        for p in self.running:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in self.running:
            if p.is_alive():
                p.kill()
                p.join(1)

    def _listen(self, console) -> None:
        while True:
            try:
                message = self.progress.get(timeout=0.5)
            except queue.Empty:
                continue
            except (EOFError, OSError):
                return
            if message is None:
                return
            if console is not None:
                console(*message)


def experiments_from_flags(args) -> list[Experiment]:
    backends = [b for b in args.backends.split(",") if b]
    workers = [_int(w, "--workers") for w in args.workers.split(",") if w]
    step: float | str = "model" if args.step == "model" else float(args.step_ms)
    experiments = []
    for copy in range(args.experiments):
        suffix = f"_{copy}" if args.experiments > 1 else ""
        for backend in backends:
            # a serial loader has no workers: one experiment, named for what it runs
            counts = [0] if backend == "serial" else workers
            for n in counts:
                name = backend if backend == "serial" else f"{backend}_{n}w"
                experiments.append(
                    Experiment(
                        name=name + suffix,
                        data=args.data,
                        labels=args.labels,
                        batch_size=args.batch_size,
                        backend=backend,
                        workers=n,
                        batches=args.batches,
                        seconds=args.seconds,
                        step=step,
                    )
                )
    return experiments


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= MIN_SECONDS:
        raise argparse.ArgumentTypeError(f"takes seconds >= {MIN_SECONDS:g}, got {text!r}")
    return value


def _batches(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"takes a whole number >= 1, got {text!r}")
    return value


def _int(text: str, flag: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise SystemExit(f"{flag} takes whole numbers separated by commas, got {text!r}") from None


def profile(
    experiments: list[Experiment], concurrent: bool, out: Path, quiet: bool
) -> tuple[int, dict | None]:
    """Run, trace and report ``experiments`` into ``out``: (exit code, summary or None)."""
    from augment.report import write_report
    from augment.report.summary import markdown

    trace_dir = out / "traces"
    trace_dir.mkdir(parents=True, exist_ok=True)
    mode = "at once" if concurrent else "one after another"
    if not quiet:
        print(f"{len(experiments)} experiment(s), {mode}, tracing into {trace_dir}")
    finished = Runner(experiments, trace_dir, quiet).run(concurrent)
    if not finished:
        print("interrupted: reporting what was traced so far", file=sys.stderr)
    try:
        summary = write_report(trace_dir, out)
    except ValueError as exc:
        print(f"no report: {exc}", file=sys.stderr)
        return (130 if not finished else 1), None
    print(markdown(summary))
    print(f"report: {out}/timeline.png, throughput.png, summary.md, summary.json, trace.json")
    return (0 if finished else 130), summary


def report_main(argv: list[str]) -> int:
    from augment.report import write_report
    from augment.report.summary import markdown

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


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The options that say what to run, shared by ``augment-profile`` and ``tune``."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config",
        action="append",
        help="TOML file of [[experiment]] tables, or the name of a shipped one: "
        f"{', '.join(SHIPPED)}, seed_regimes (repeatable)",
    )
    parser.add_argument("--data", help="a folder of images (default: the sample dataset)")
    parser.add_argument("--labels", default=None, help="labels CSV (default: DATA/labels.csv)")
    parser.add_argument("--backends", default="thread,process")
    parser.add_argument("--workers", default="2", help="comma-separated counts, e.g. 1,2")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--experiments", type=int, default=1, help="copies of each experiment")
    parser.add_argument("--concurrent", action="store_true", help="start all at once")
    window = parser.add_mutually_exclusive_group()
    window.add_argument(
        "--seconds",
        type=_seconds,
        help="measure each experiment for this long after its warm-up (default: "
        f"{DEFAULT_SECONDS:g}, or the config's)",
    )
    window.add_argument(
        "--batches", type=_batches, help="instead, measure exactly this many batches per experiment"
    )
    parser.add_argument("--step-ms", type=float, default=0.0, help="training step: sleep X ms")
    parser.add_argument("--step", choices=["model"], help="training step: a small CNN on the CPU")
    parser.add_argument("--out", type=Path, help="default: runs/<timestamp>/")
    parser.add_argument("--quiet", action="store_true")
    return parser


# options that say how to run or where to write, not what: alone, they leave the configs
WINDOW_AND_OUTPUT = ("--out", "--quiet", "--sweep", "--seconds", "--batches")


def flags_given(argv: list[str]) -> bool:
    """Whether ``argv`` says what to run (else: the shipped configs)."""
    return any(a.startswith("--") and a.split("=", 1)[0] not in WINDOW_AND_OUTPUT for a in argv)


def default_out() -> Path:
    return Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["report"]:
        return report_main(argv[1:])
    if argv[:1] == ["tune"]:
        from augment.tune import tune_main

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


def load_jobs(args, flags_given: bool) -> list[tuple[str, Config]]:
    """(name, config) to run, every path checked and the sample dataset made if one needs it:
    a wrong argument fails here, before any experiment starts."""
    if flags_given and not args.config:
        if args.data is not None:
            check_folder(args.data, "--data")
        configs = [("flags", Config(experiments_from_flags(args), args.concurrent), "flags")]
    else:  # the configs named, or with no arguments the shipped ones
        paths = [(text, config_path(text)) for text in args.config or SHIPPED]
        configs = [(p.stem, load_config(p), f"config {text!r}") for text, p in paths]
    if not args.quiet and any(uses_sample(c) for _, c, _ in configs) and not sample_path().is_dir():
        print(f"making the sample dataset in {sample_path()} (once)")
    return [(name, with_window(prepare(config, where), args)) for name, config, where in configs]


def with_window(config: Config, args) -> Config:
    """``config`` with every experiment measured for ``--seconds`` or ``--batches`` if given."""
    if args.seconds is None and args.batches is None:
        return config
    window = {"seconds": args.seconds, "batches": args.batches}
    return replace(config, experiments=[replace(e, **window) for e in config.experiments])


@contextlib.contextmanager
def serving(config: Config):
    """Start the config's image server (if any) and point ``data = "server"`` at it."""
    if config.server is None:
        yield config.experiments
        return
    from augment.serve import Served

    server = config.server
    with Served(
        server.root,
        latency_ms=server.latency_ms,
        jitter_ms=server.jitter_ms,
        fail_rate=server.fail_rate,
    ) as served:
        print(f"serving {server.root} at {served.url} ({server.latency_ms:g} ms per request)")
        yield [
            replace(e, data=served.url, names_from=server.root) if e.data == "server" else e
            for e in config.experiments
        ]


__all__ = ["main"]
