"""The Python overhead per image of the Kaggle pipeline, before and after
(``python scripts/benchmark.py overhead --base REV``).

What is timed: the whole per-sample path of a worker (``augment.loading.batch.make_batch``: the
sample's generator, reading and decoding, planning the warp, the warp, copying into the
batch buffer, the stage clock) over batches of 1x1 images through ``kaggle_pipeline(crop=1)``
(flips, quarter turns, rotation, scale jitter, crop), so the pixel work is next to nothing
and what is left is the Python around it. The dataset is staged and in memory: ``read``
returns the same few bytes, ``decode`` asks the transform's plan how much smaller it may
decode (as ``ImageFolder`` does for a JPEG) and returns a 1x1 RGB pixel. One thread, the
default kernel, native libraries on one thread.

Before and after: the current tree, and ``--base REV`` checked out with ``git worktree add``
into a temporary folder; each measurement runs in a fresh interpreter that imports
``augment`` from one of the two (this file, run with ``--one ROOT``). Rounds alternate which
goes first; each round's value is the median over ``--reps`` passes of that interpreter,
and the result is the median over rounds, with the median of the paired (same round)
ratios. The per-stage times are the batches' own spans, summed per stage, per image.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OPENCV_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# The commit before this script's first change to the library (issue 14, "less Python per
# image"): the default --base.
DEFAULT_BASE = "185152f"


class OnePixels:
    """A staged dataset of ``n`` 1x1 RGB images held in memory (see the module docstring)."""

    def __init__(self, n: int):
        import numpy as np

        self.n = n
        self.pixel = np.full((1, 1, 3), 128, dtype=np.uint8)

    def __len__(self) -> int:
        return self.n

    def read(self, index: int) -> bytes:
        return b"\xff\xd8 one pixel"

    def decode(self, data: bytes, index: int, reduce=None):
        if reduce is not None:
            reduce(1, 1)  # the header's size: the plan is drawn here, as for a JPEG
        return self.pixel.copy()

    def label(self, index: int) -> int:
        return index % 10

    def source(self, index: int) -> str:
        return f"pixel-{index}"


def measure(images: int, batch_size: int, reps: int, warmup: int = 1) -> dict:
    """In this interpreter: ``reps`` timed passes over ``images`` samples (after ``warmup``
    passes), each pass every batch of one epoch through ``make_batch``; µs per image per
    pass, and per stage (from the spans) for the median pass."""
    import augment
    from augment.loading.batch import BatchPlan, BatchTask, make_batch
    from augment.ops.compose import kaggle_pipeline
    from augment.sources.samples import source_for

    dataset = OnePixels(images)
    task = BatchTask(source_for(dataset), kaggle_pipeline(crop=1), seed=0)
    plans = [
        BatchPlan(0, k, tuple(range(start, min(start + batch_size, images))))
        for k, start in enumerate(range(0, images, batch_size))
    ]
    passes, stages = [], []
    for rep in range(warmup + reps):
        per_stage: dict[str, int] = {}
        t0 = time.perf_counter_ns()
        for plan in plans:
            result = make_batch(task, plan)
            for span in result.spans:
                per_stage[span.stage] = per_stage.get(span.stage, 0) + span.end_ns - span.start_ns
        elapsed = time.perf_counter_ns() - t0
        if rep >= warmup:
            passes.append(elapsed / images / 1e3)
            stages.append({k: v / images / 1e3 for k, v in per_stage.items()})
    middle = sorted(range(reps), key=passes.__getitem__)[reps // 2]
    return {
        "augment": str(Path(augment.__file__).resolve().parent),
        "kernel": task.transform.kernel,
        "us_per_image": passes,
        "stages": stages[middle],
    }


def _run_one(root: Path, args) -> dict:
    """``measure`` in a fresh interpreter importing ``augment`` from ``root``."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--one",
        str(root),
        "--images",
        str(args.images),
        "--batch-size",
        str(args.batch_size),
        "--reps",
        str(args.reps),
    ]
    env = dict(os.environ, PYTHONPATH=str(root))
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=str(root))
    if done.returncode != 0:
        raise SystemExit(f"the measurement with augment from {root} failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if Path(result["augment"]) != (root / "augment").resolve():
        raise SystemExit(f"imported augment from {result['augment']}, not from {root}")
    return result


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()


def bench_overhead(args) -> str:
    """Before (``--base``) and after (this tree), alternated; the markdown table."""
    base = _git("rev-parse", "--short", args.base)
    head = _git("rev-parse", "--short", "HEAD")
    dirty = " (with uncommitted changes)" if _git("status", "--porcelain", "--", "augment") else ""
    print(f"base: {args.base} = {base} ({_git('log', '-1', '--format=%s', base)[:70]})")
    print(f"after: this tree, HEAD {head}{dirty}")
    with tempfile.TemporaryDirectory(prefix="overhead-base-") as tmp:
        worktree = Path(tmp) / "base"
        _git("worktree", "add", "--detach", str(worktree), base)
        try:
            runs: dict[str, list[dict]] = {"before": [], "after": []}
            roots = {"before": worktree, "after": ROOT}
            for r in range(args.rounds):
                order = ("before", "after") if r % 2 == 0 else ("after", "before")
                for which in order:
                    runs[which].append(_run_one(roots[which], args))
                b, a = (statistics.median(runs[w][-1]["us_per_image"]) for w in roots)
                print(f"round {r + 1}/{args.rounds}: before {b:.1f} us, after {a:.1f} us")
        finally:
            _git("worktree", "remove", "--force", str(worktree))
    table = _table(runs, args, base, head + dirty.replace(" (with", " (plus"))
    print(table)
    return table


def _table(runs: dict[str, list[dict]], args, base: str, head: str) -> str:
    per_round = {w: [statistics.median(r["us_per_image"]) for r in rs] for w, rs in runs.items()}
    before, after = (statistics.median(per_round[w]) for w in ("before", "after"))
    paired = statistics.median(a / b for a, b in zip(per_round["after"], per_round["before"]))
    stages = list(runs["after"][0]["stages"])
    for stage in runs["before"][0]["stages"]:
        if stage not in stages:
            stages.append(stage)

    def stage_median(which: str, stage: str) -> str:
        values = [r["stages"].get(stage) for r in runs[which]]
        values = [v for v in values if v is not None]
        return f"{statistics.median(values):.1f}" if values else "-"

    kernel = runs["after"][0]["kernel"]
    lines = [
        f"| per image, µs | before ({base}) | after ({head}) | after / before |",
        "|---|---|---|---|",
        f"| whole path (make_batch) | {before:.1f} | {after:.1f} | {after / before:.2f}x "
        f"(paired: {paired:.2f}x) |",
    ]
    for stage in stages:
        b, a = stage_median("before", stage), stage_median("after", stage)
        ratio = f"{float(a) / float(b):.2f}x" if "-" not in (a, b) and float(b) else "-"
        lines.append(f"| stage `{stage}` | {b} | {a} | {ratio} |")
    lines.append(
        f"\nKaggle pipeline (`kaggle_pipeline(crop=1)`, kernel {kernel}) on 1x1 images, "
        f"{args.images} per pass in batches of {args.batch_size}, one thread; median over "
        f"{args.rounds} alternated rounds of the median of {args.reps} passes each."
    )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``benchmark.py overhead``."""
    parser.add_argument(
        "--base",
        default=DEFAULT_BASE,
        help=f"the git revision to compare with (default {DEFAULT_BASE}: the commit before "
        "issue 14's less-Python-per-image changes)",
    )
    parser.add_argument("--images", type=int, default=2048, help="1x1 images per pass")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5, help="timed passes per interpreter")
    parser.add_argument("--rounds", type=int, default=9, help="alternated rounds")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    parser.add_argument("--one", metavar="ROOT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        sys.path.insert(0, args.one)
        print(json.dumps(measure(args.images, args.batch_size, args.reps)))
        return
    bench_overhead(args)


if __name__ == "__main__":
    main()
