#!/usr/bin/env python
"""Benchmarks, measured as ratios in one run: alternated rounds, the median per contender.

    python scripts/benchmark.py ops        # per-image time of the Kaggle pipeline, per kernel
    python scripts/benchmark.py ops --write-readme

Thread counts are pinned to one so numbers compare like for like on a shared machine.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import augment  # noqa: E402
from augment import kernels  # noqa: E402

README = ROOT / "README.md"
SAMPLE = ROOT / "data" / "sample"


def load_images(n: int, size: int = 256) -> list[np.ndarray]:
    """The first ``n`` sample tiles, or textured noise when the sample set is missing."""
    files = sorted(SAMPLE.glob("*.jpg"))[:n]
    if files:
        return [np.asarray(Image.open(f).convert("RGB")) for f in files]
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def race(contenders: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Run each contender once per round, in alternating order; median seconds per call."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for fn in contenders.values():  # warm-up: imports, caches, scratch buffers
        fn()
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            start = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def albumentations_pipeline(crop: int):
    import albumentations as A
    import cv2

    cv2.setNumThreads(1)
    return A.Compose([
        A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.RandomRotate90(p=0.5),
        A.Rotate(limit=30, p=1.0, interpolation=cv2.INTER_LINEAR,
                 border_mode=cv2.BORDER_REFLECT_101),
        A.RandomScale(scale_limit=0.1, p=1.0, interpolation=cv2.INTER_LINEAR),
        A.RandomCrop(crop, crop),
    ])


def bench_ops(args) -> str:
    try:
        import cv2
        cv2.setNumThreads(1)
    except ImportError:
        pass
    images = load_images(args.images)
    rng = np.random.default_rng(0)

    def run_ours(kernel: str) -> Callable[[], None]:
        pipeline = augment.kaggle_pipeline(crop=args.crop, kernel=kernel)
        return lambda: [pipeline(img, rng) for img in images]

    default = kernels.default_name()
    contenders = {f"augment, default kernel ({default})": run_ours(default)}
    for name in kernels.available():
        if name != default:
            contenders[f"augment, {name} kernel"] = run_ours(name)
    reference = None
    try:
        alb = albumentations_pipeline(args.crop)
        reference = "albumentations (same ops)"
        contenders[reference] = lambda: [alb(image=img) for img in images]
    except ImportError:
        print("albumentations is not installed (pip install -e '.[bench]'): no reference",
              file=sys.stderr)
    medians = race(contenders, args.rounds)
    per_image = {name: t / len(images) * 1e3 for name, t in medians.items()}
    lines = ["| pipeline | ms per image | vs albumentations |", "|---|---:|---:|"]
    for name, ms in per_image.items():
        ratio = f"{ms / per_image[reference]:.2f}x" if reference else "n/a"
        lines.append(f"| {name} | {ms:.3f} | {ratio} |")
    table = "\n".join(lines)
    print(f"Kaggle pipeline on {len(images)} 256x256 tiles, crop {args.crop}, one thread, "
          f"median of {args.rounds} alternated rounds:\n{table}")
    return table


def write_readme(section: str, table: str, command: str) -> None:
    """Replace the block between <!-- bench:NAME --> markers in README.md."""
    text = README.read_text()
    block = f"<!-- bench:{section} -->\n{table}\n\nMade by `{command}`.\n<!-- /bench:{section} -->"
    pattern = re.compile(rf"<!-- bench:{section} -->.*?<!-- /bench:{section} -->", re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no <!-- bench:{section} --> block to fill")
    README.write_text(pattern.sub(lambda _: block, text))
    print(f"wrote the {section} table into {README.name}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    ops = sub.add_parser("ops", help="per-image time of the Kaggle pipeline, per kernel")
    ops.add_argument("--images", type=int, default=32, help="tiles per round (default 32)")
    ops.add_argument("--rounds", type=int, default=15, help="alternated rounds (default 15)")
    ops.add_argument("--crop", type=int, default=224)
    ops.add_argument("--write-readme", action="store_true", help="put the table in README.md")
    args = parser.parse_args(argv)
    if args.what == "ops":
        table = bench_ops(args)
        if args.write_readme:
            write_readme("ops", table, "python scripts/benchmark.py ops --write-readme")


if __name__ == "__main__":
    main()
