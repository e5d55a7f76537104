"""What to run: the profiler's command-line options, and the experiments they (or the
configs they name) stand for, every path checked before anything starts."""

from __future__ import annotations

import argparse
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from augment.profiler.experiment import (
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
from augment.sources.sample_data import sample_path

SHIPPED = ("kaggle_amazon", "compare_backends")  # what runs without arguments


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
                        task=args.task,
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


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The options that say what to run, shared by ``augment-profile`` and ``tune``."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config",
        action="append",
        help="TOML file of [[experiment]] tables, or the name of a shipped one: "
        f"{', '.join(SHIPPED)}, seed_regimes, segmentation (repeatable)",
    )
    parser.add_argument("--data", help="a folder of images (default: the sample dataset)")
    parser.add_argument(
        "--task",
        choices=("classify", "segment"),
        default="classify",
        help="segment: DATA holds images/ and masks/ (default: the sample tiles with class maps)",
    )
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
