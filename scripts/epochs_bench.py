"""The epochs benchmark (``python scripts/benchmark.py epochs``): does a dataset of a few
batches per epoch run as fast as a long one?

The same photographs (``scripts/realistic.py``'s, 400-640 x 300-480, quality 90), to uint8
batches of 64 at 224 x 224 with ``RandomResizedCrop(224)`` and a flip, at 2 workers, per
backend (thread and process by default):

- **short epochs**: 160 photographs, so each epoch is 3 batches (64, 64 and a 32-image tail),
  10 epochs per timed run (1,600 images), the next epoch's first batches submitted while one
  ends (``augment.loading.ahead``: the Loader's behaviour);
- **short epochs, nothing ahead**: the same, with the next epoch submitted only when the loop
  asks for it (how the Loader ran before: the backend's ``crosses_epochs`` turned off);
- **one long epoch**: the same 160 files, each linked 10 times, as one 1,600-image epoch
  (25 batches).

Every round runs each contender once, in alternating order; rates are medians over rounds,
ratios the medians of the rounds' ratios. A timed run of short epochs ends when its last
batch is consumed: what it submitted ahead of the next is cancelled after the clock stops
(wasted, never credited to the next round). Workers start in the warm-up, never timed; every
worker runs one native thread. Target: short epochs within 5% of the long epoch's images/s.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

BATCH = 64
WORKERS = 2
SHORT = 160  # photographs: batches of 64, 64, 32
REPEAT = 10  # short epochs per timed run, and copies of each file in the long epoch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``benchmark.py epochs``."""
    parser.add_argument("--rounds", type=int, default=7, help="alternated rounds (default 7)")
    parser.add_argument(
        "--backends",
        nargs="+",
        default=["thread", "process"],
        choices=("thread", "process", "torch", "ray"),
        help="augment's backends to run (default: thread process)",
    )


def long_folder(short: Path) -> Path:
    """``short``'s files, each linked ``REPEAT`` times, in the same class folders."""
    folder = short.parent / f"{short.name}_x{REPEAT}"
    done = folder / ".complete"
    if not done.exists():
        for path in sorted(short.glob("*/*.jpg")):
            (folder / path.parent.name).mkdir(parents=True, exist_ok=True)
            for copy in range(REPEAT):
                link = folder / path.parent.name / f"{path.stem}_{copy}.jpg"
                if not link.exists():
                    link.symlink_to(path)
        done.write_text("")
    return folder


def bench_epochs(args) -> str:
    import torch
    from realistic import SIZE, one_thread, photo_folder

    import augment

    torch.set_num_threads(1)
    one_thread()
    short = photo_folder(SHORT)
    datasets = {
        "short": augment.ImageFolder(short),
        "long": augment.ImageFolder(long_folder(short)),
    }
    assert len(datasets["long"]) == REPEAT * len(datasets["short"])
    pipeline = augment.Compose([augment.RandomResizedCrop(SIZE), augment.RandomFlip(0.5)])
    contenders: dict[str, tuple] = {}  # name: (loader, epochs per run, backend, kind)
    for backend in args.backends:
        for kind, data, epochs in (
            ("3-batch epochs", "short", REPEAT),
            ("3-batch epochs, nothing ahead", "short", REPEAT),
            ("one long epoch", "long", 1),
        ):
            loader = augment.Loader(
                datasets[data], pipeline, batch_size=BATCH, backend=backend, workers=WORKERS
            )
            if kind.endswith("nothing ahead"):
                loader._backend.crosses_epochs = False  # the Loader as it was
            contenders[f"{backend}: {kind}"] = (loader, epochs, backend, kind)

    def run(loader, epochs: int) -> float:
        start = time.perf_counter()
        n = 0
        for _ in range(epochs):
            n += sum(len(images) for images, _ in loader)
        elapsed = time.perf_counter() - start
        assert n == SHORT * REPEAT, n
        loader.set_epoch(loader.epoch + 1)  # cancels what was submitted ahead, off the clock
        return elapsed

    times: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    try:
        for loader, epochs, *_ in contenders.values():  # warm-up: workers, imports, page cache
            run(loader, epochs)
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else reversed(names):
                times[name].append(run(*contenders[name][:2]))
    finally:
        for loader, *_ in contenders.values():
            loader.close()

    images = SHORT * REPEAT
    lines = [
        f"| backend | run ({images:,} images) | images/s | vs one long epoch |",
        "|---|---|---:|---:|",
    ]
    for name, (_, _, backend, kind) in contenders.items():
        long_times = times[f"{backend}: one long epoch"]
        ratio = statistics.median(lg / t for lg, t in zip(long_times, times[name]))
        rate = images / statistics.median(times[name])
        lines.append(f"| {backend} | {kind} | {rate:,.0f} | {ratio:.3f}x |")
    table = "\n".join(lines)
    print(
        f"{SHORT} photographs, batches of {BATCH}, RandomResizedCrop({SIZE}) + flip, "
        f"{WORKERS} workers, {args.rounds} alternated rounds, medians:\n{table}"
    )
    return table
