"""augment-profile: run experiments side by side or one after another, trace them, and
report where the CPU time goes.

    augment-profile                               # both shipped configs on the sample data
    augment-profile --config kaggle_amazon        # a shipped config, by name
    augment-profile --config my.toml              # a config file (its paths: from its folder)
    augment-profile --backends thread,process --workers 1,2 --step-ms 20 --data DIR
    augment-profile report runs/DIR               # redraw the report from a trace folder
    augment-profile tune kaggle_amazon [--sweep]  # run, then run the recommendation

Reports go to ./runs/<timestamp>/ in the current folder. Without data, experiments run on
the sample dataset, made on first use in $AUGMENT_CACHE (default ~/.cache/augment).
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


def _experiment_main(experiment: Experiment, trace_dir: str, progress, barrier) -> None:
    """Body of one experiment process."""
    from augment.experiment import run

    try:
        run(
            experiment,
            trace_dir,
            progress=lambda n: progress.put((experiment.name, n)),
            barrier=barrier,
        )
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        progress.put((experiment.name, None))


class Runner:
    """Runs experiments as separate OS processes (all at once, or one after another), with a
    tqdm bar each; Ctrl-C stops them all within a few seconds, keeping what was traced."""

    def __init__(self, experiments: list[Experiment], trace_dir: Path, quiet: bool):
        self.experiments, self.trace_dir, self.quiet = experiments, trace_dir, quiet
        self.ctx = mp.get_context("spawn")
        self.progress = self.ctx.Queue()
        self.running: list = []

    def run(self, concurrent: bool) -> bool:
        """True when every experiment finished; False when interrupted."""
        from tqdm import tqdm

        bars = {
            e.name: tqdm(
                total=e.batches * e.batch_size,
                desc=e.name,
                unit="img",
                position=i,
                leave=True,
                disable=self.quiet,
            )
            for i, e in enumerate(self.experiments)
        }
        listener = threading.Thread(target=self._listen, args=(bars,), daemon=True)
        listener.start()
        try:
            groups = [self.experiments] if concurrent else [[e] for e in self.experiments]
            for group in groups:
                # experiments at once warm up, then start their measured part together
                barrier = self.ctx.Barrier(len(group)) if len(group) > 1 else None
                self.running = [
                    self.ctx.Process(
                        target=_experiment_main,
                        name=e.name,
                        args=(e, str(self.trace_dir), self.progress, barrier),
                    )
                    for e in group
                ]
                for p in self.running:
                    p.start()
                self._join(barrier)
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
            for bar in bars.values():
                bar.close()

    def _join(self, barrier) -> None:
        """Wait for the group; one that fails breaks the barrier so the others go on."""
        while any(p.is_alive() for p in self.running):
            for p in self.running:
                p.join(0.2)
                if barrier is not None and p.exitcode not in (None, 0):
                    barrier.abort()

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

    def _listen(self, bars) -> None:
        while True:
            try:
                message = self.progress.get(timeout=0.5)
            except queue.Empty:
                continue
            except (EOFError, OSError):
                return
            if message is None:
                return
            name, n = message
            if name in bars:
                if n is None:
                    bars[name].close()  # the rate shown stays this experiment's own
                else:
                    bars[name].update(n)


def experiments_from_flags(args) -> list[Experiment]:
    backends = [b for b in args.backends.split(",") if b]
    workers = [_int(w, "--workers") for w in args.workers.split(",") if w]
    step: float | str = "model" if args.step == "model" else float(args.step_ms)
    experiments = []
    for copy in range(args.experiments):
        for backend in backends:
            for n in workers:
                suffix = f"_{copy}" if args.experiments > 1 else ""
                experiments.append(
                    Experiment(
                        name=f"{backend}_{n}w{suffix}",
                        data=args.data,
                        labels=args.labels,
                        batch_size=args.batch_size,
                        backend=backend,
                        workers=n,
                        batches=args.batches,
                        step=step,
                    )
                )
    return experiments


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
        prog="augment-profile report", description="Redraw the report from a trace folder."
    )
    parser.add_argument("dir", type=Path, help="a profile run folder or a folder of *.jsonl traces")
    parser.add_argument("--out", type=Path, help="where to write the report (default: DIR)")
    args = parser.parse_args(argv)
    trace_dir = args.dir / "traces" if (args.dir / "traces").is_dir() else args.dir
    try:
        summary = write_report(trace_dir, args.out or args.dir)
    except ValueError as exc:
        raise SystemExit(f"augment-profile report: {exc}") from None
    print(markdown(summary))
    return 0


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
    parser.add_argument("--batches", type=int, default=20, help="batches per experiment")
    parser.add_argument("--step-ms", type=float, default=0.0, help="training step: sleep X ms")
    parser.add_argument("--step", choices=["model"], help="training step: a small CNN on the CPU")
    parser.add_argument("--out", type=Path, help="default: runs/<timestamp>/")
    parser.add_argument("--quiet", action="store_true")
    return parser


def flags_given(argv: list[str]) -> bool:
    """Whether ``argv`` says what to run (else: the shipped configs)."""
    return any(
        a.startswith("--") and a not in ("--out", "--quiet", "--sweep")
        for a in argv
        if not a.startswith("--out=")
    )


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
    return [(name, prepare(config, where)) for name, config, where in configs]


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
