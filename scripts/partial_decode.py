"""Partial JPEG decoding on and off, side by side (docs/decoding.md, docs/benchmarks.md).

Two datasets, each through augment's Loader (process backend, 2 workers, batches of 64):

- photographs (``scripts/realistic.py``'s, 400-640 x 300-480, quality 90) through
  RandomResizedCrop(224) + flip, where partial decoding applies to nearly every sample;
- the Kaggle-like 256 x 256 tiles (``scripts/benchmark.py``'s) through ``kaggle_pipeline``,
  where the warp reads (nearly) the whole tile and no region is cut: no slower is the aim.

``ImageFolder(partial_decode=True)`` against ``partial_decode=False`` (whole images, as
before), alternated rounds, medians; CPU is this process's and its workers' user + system
time per image. A third line, simplejpeg decoding every photograph whole on 2 threads,
is the ceiling the issue measures against.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent

from benchmark import bench_dataset  # noqa: E402
from peers import BareDecode, cpu_seconds  # noqa: E402
from realistic import one_thread, photo_folder  # noqa: E402

import augment  # noqa: E402


def region_costs(paths, rounds: int = 5) -> str:
    """One thread: TurboJPEG decoding parts of each file, in process time, against decoding
    the whole file the same way (the median of ``rounds``)."""
    import simplejpeg

    from augment.sources import jpeg_region

    if not jpeg_region.available():
        return "- region costs: no TurboJPEG 3 library"
    blobs = [p.read_bytes() for p in paths]
    shapes = [simplejpeg.decode_jpeg_header(b)[:2] for b in blobs]
    parts = {
        "whole": lambda h, w: (0, h, 0, w),
        "top half": lambda h, w: (0, h // 2, 0, w),
        "bottom half": lambda h, w: (h // 2, h, 0, w),
        "left half": lambda h, w: (0, h, 0, w // 2),
        "centre quarter": lambda h, w: (h // 4, 3 * h // 4, w // 4, 3 * w // 4),
    }
    cost = {}
    for name, box in parts.items():
        runs = []
        for _ in range(rounds):
            t0 = time.process_time()
            for b, (h, w) in zip(blobs, shapes):
                jpeg_region.decode(b, 1, box(h, w))
            runs.append(time.process_time() - t0)
        cost[name] = statistics.median(runs)
    return (
        f"- decoding a part of each of {len(blobs)} files (one thread), of the whole: "
        + ", ".join(
            f"{name} {cost[name] / cost['whole']:.2f}x" for name in parts if name != "whole"
        )
    )


def sample_costs(paths, transform, rounds: int = 8) -> tuple[float, float]:
    """One thread, process time: decoding and augmenting each file with partial decoding
    against without (the order alternated by round, an even number of rounds); the
    geometric mean of the rounds' ratios, and the share of samples decoded partly."""
    from augment.loading.rng import sample_rng
    from augment.ops.warp_plan import SamplePlan
    from augment.sources import data

    blobs = [p.read_bytes() for p in paths]

    def run(partial: bool, epoch: int) -> tuple[float, int]:
        t0, cut = time.process_time(), 0
        for i, blob in enumerate(blobs):
            plan = SamplePlan(transform, sample_rng(0, epoch, i))
            plan.finish(data.decode_image(blob, reduce=plan if partial else plan.__call__))
            cut += plan.plan is not None and plan.plan.box is not None
        return time.process_time() - t0, cut

    ratios, cut = [], 0
    for r in range(rounds):
        order = (True, False) if r % 2 == 0 else (False, True)
        spent = {}
        for partial in order:
            spent[partial], n = run(partial, r)
            cut = n if partial else cut
        ratios.append(spent[True] / spent[False])
    return math.exp(statistics.fmean(math.log(r) for r in ratios)), cut / len(blobs)


def loader(dataset, transform):
    return augment.Loader(dataset, transform, batch_size=64, backend="process", workers=2, seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=640, help="photographs and tiles")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    one_thread()
    photos, tiles = photo_folder(args.images), bench_dataset(args.images)
    crop = augment.Compose([augment.RandomResizedCrop(224), augment.RandomFlip()])
    kaggle = augment.kaggle_pipeline(224)
    runs = {
        "photographs, partial decode": loader(augment.ImageFolder(photos), crop),
        "photographs, whole-image decode": loader(
            augment.ImageFolder(photos, partial_decode=False), crop
        ),
        "Kaggle tiles, partial decode": loader(
            augment.ImageFolder(tiles, tiles / "labels.csv"), kaggle
        ),
        "Kaggle tiles, whole-image decode": loader(
            augment.ImageFolder(tiles, tiles / "labels.csv", partial_decode=False), kaggle
        ),
    }
    bare = BareDecode(sorted(photos.rglob("*.jpg")))
    calls = {name: (lambda ld=ld: sum(len(x) for x, _ in ld)) for name, ld in runs.items()}
    calls["simplejpeg full decode of every photograph, 2 threads"] = bare
    times = {n: [] for n in calls}
    cpu = {n: [] for n in calls}
    names = list(calls)
    try:
        for fn in calls.values():
            fn()
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else reversed(names):
                c0, t0 = cpu_seconds(), time.perf_counter()
                n = calls[name]()
                times[name].append((time.perf_counter() - t0) / n)
                cpu[name].append((cpu_seconds() - c0) / n)
    finally:
        for ld in runs.values():
            ld.close()
        bare.close()

    def ratio(a: str, b: str) -> float:  # a's speed over b's, median of the rounds' ratios
        return statistics.median(tb / ta for ta, tb in zip(times[a], times[b]))

    lines = ["| run | img/s | CPU ms / image |", "|---|---:|---:|"]
    for name in names:
        rate = 1 / statistics.median(times[name])
        lines.append(f"| {name} | {rate:,.0f} | {1e3 * statistics.median(cpu[name]):.2f} |")
    p, w = "photographs, partial decode", "photographs, whole-image decode"
    kp, kw = "Kaggle tiles, partial decode", "Kaggle tiles, whole-image decode"
    ceiling = "simplejpeg full decode of every photograph, 2 threads"
    cpu_ratio = statistics.median(a / b for a, b in zip(cpu[p], cpu[w]))
    lines += [
        "",
        f"- photographs: partial / whole-image decode: {ratio(p, w):.2f}x images/s, "
        f"{cpu_ratio:.2f}x CPU per image",
        f"- photographs, partial decode / bare full decode on 2 threads: {ratio(p, ceiling):.2f}x",
        f"- Kaggle tiles: partial / whole-image decode: {ratio(kp, kw):.2f}x images/s",
    ]
    for label, folder, t in (("photographs", photos, crop), ("Kaggle tiles", tiles, kaggle)):
        ratio_cpu, share = sample_costs(sorted(folder.rglob("*.jpg"))[:200], t)
        lines.append(
            f"- {label}, one thread, decode + augment per sample: partial / whole-image decode "
            f"{ratio_cpu:.2f}x CPU ({share:.0%} of the samples decoded partly)"
        )
    lines.append(region_costs(sorted(photos.rglob("*.jpg"))[:100]))
    print(
        f"{args.images} photographs and {args.images} tiles, median of {args.rounds} rounds, "
        f"load average {os.getloadavg()[0]:.1f}\n\n" + "\n".join(lines)
    )


if __name__ == "__main__":
    main()
