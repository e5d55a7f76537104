#!/usr/bin/env python
"""Benchmarks, measured as ratios in one run: alternated rounds, the median per contender.

    python scripts/benchmark.py ops        # per-image time of the Kaggle pipeline, per kernel
    python scripts/benchmark.py pipeline   # end-to-end images/s, every backend vs DataLoader
    python scripts/benchmark.py decoders   # JPEG decoders: same pixels? how fast?
    python scripts/benchmark.py tracing    # the cost of tracing every stage of every batch
    python scripts/benchmark.py dataloader # a plain DataLoader: tracing it, moving it to augment
    python scripts/benchmark.py soak       # RSS and /dev/shm over 10,000 batches per backend
    python scripts/benchmark.py realistic  # photographs, RandomResizedCrop(224): vs DataLoader
    python scripts/benchmark.py overhead   # Python per image (1x1 images), before and after
    python scripts/benchmark.py advice     # tune: does following the recommendation pay?
    python scripts/benchmark.py cluster    # shards over HTTP; a Ray cluster losing a node
    python scripts/benchmark.py epochs     # epochs of 3 batches vs one long epoch, images/s
    python scripts/benchmark.py all --write-docs  # all but soak, realistic, advice, overhead

Thread counts are pinned to one so numbers compare like for like on a shared machine.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import io  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

import augment  # noqa: E402
from augment.ops import kernels  # noqa: E402

BENCHMARKS = ROOT / "docs" / "benchmarks.md"
SAMPLE = ROOT / "data" / "sample"


def load_images(n: int, size: int = 256) -> list[np.ndarray]:
    """The first ``n`` sample tiles, or textured noise when the sample set is missing."""
    files = sorted(SAMPLE.glob("*.jpg"))[:n]
    if files:
        return [np.asarray(Image.open(f).convert("RGB")) for f in files]
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def race(
    contenders: dict[str, Callable[[], None]], rounds: int, times: dict | None = None
) -> dict[str, float]:
    """Run each contender once per round, in alternating order; median seconds per call.
    ``times``, where given, receives every round's seconds per contender."""
    times = {} if times is None else times
    times.update({name: [] for name in contenders})
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
    return A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.RandomRotate90(p=0.5),
            A.Rotate(
                limit=30, p=1.0, interpolation=cv2.INTER_LINEAR, border_mode=cv2.BORDER_REFLECT_101
            ),
            A.RandomScale(scale_limit=0.1, p=1.0, interpolation=cv2.INTER_LINEAR),
            A.RandomCrop(crop, crop),
        ]
    )


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
        print(
            "albumentations is not installed (pip install -e '.[bench]'): no reference",
            file=sys.stderr,
        )
    floor = None
    try:  # the floor: the pixels of one rotating warp, nothing drawn, nothing planned
        import cv2

        turn = cv2.getRotationMatrix2D((127.5, 127.5), 17.0, 1.05)
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        size, reflect = (args.crop, args.crop), cv2.BORDER_REFLECT_101
        plain = f"the one warp alone, OpenCV's 3-channel warpAffine to {args.crop}x{args.crop}"
        contenders[plain] = lambda: [
            cv2.warpAffine(img, turn, size, flags=flags, borderMode=reflect) for img in images
        ]
        if "opencv" in kernels.available():  # the same warp as the OpenCV kernel does it
            warp, shape = kernels.get("opencv"), (args.crop, args.crop)
            floor = "the one warp alone, as the OpenCV kernel does it (RGBA of the part read)"
            contenders[floor] = lambda: [
                warp(img, turn, shape, "bilinear", "reflect", 0) for img in images
            ]
    except ImportError:
        pass
    medians = race(contenders, args.rounds)
    per_image = {name: t / len(images) * 1e3 for name, t in medians.items()}
    lines = ["| pipeline | ms per image | vs albumentations |", "|---|---:|---:|"]
    for name, ms in per_image.items():
        ratio = f"{ms / per_image[reference]:.2f}x" if reference else "n/a"
        lines.append(f"| {name} | {ms:.3f} | {ratio} |")
    if reference:
        ours = per_image[f"augment, default kernel ({default})"] / per_image[reference]
        lines += ["", f"- default kernel / albumentations: {ours:.2f}x (target <= 0.5x)"]
        if floor:
            alone = per_image[floor] / per_image[reference]
            spent = per_image[f"augment, default kernel ({default})"] - per_image[floor]
            lines += [
                f"- the kernel's warp alone / albumentations: {alone:.2f}x; the rest of ours "
                f"(drawing, folding, the call) {spent * 1e3:.0f} µs per image"
            ]
    table = "\n".join(lines)
    print(
        f"Kaggle pipeline on {len(images)} 256x256 tiles, crop {args.crop}, one thread, "
        f"median of {args.rounds} alternated rounds:\n{table}"
    )
    return table


BENCH_DATA = ROOT / "runs" / "bench_data"


def bench_dataset(n: int) -> Path:
    """A set of ``n`` sample-like tiles outside git, made once (augment.sources.sample_data)."""
    from augment.sources.sample_data import write_dataset

    folder = BENCH_DATA / f"n{n}"
    if not (folder / "labels.csv").exists():
        write_dataset(folder, n=n, size=256, seed=1)
    return folder


class AlbumentationsFiles:
    """What a user would write instead: a torch Dataset, Pillow decode, albumentations ops."""

    def __init__(self, dataset, crop: int):
        self.dataset, self.crop, self.pipeline = dataset, crop, None

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        if self.pipeline is None:
            from albumentations.pytorch import ToTensorV2

            self.pipeline = albumentations_pipeline(self.crop)
            self.pipeline.transforms.append(ToTensorV2())
            self.pipeline = type(self.pipeline)(self.pipeline.transforms)
        img = np.asarray(Image.open(self.dataset.paths[i]).convert("RGB"))
        return self.pipeline(image=img)["image"], self.dataset.label(i)


def bench_pipeline(args) -> str:
    import torch

    torch.set_num_threads(1)
    _one_thread(0)  # serial and thread backends run OpenCV in this process: one thread each
    folder = bench_dataset(args.images)
    dataset = augment.ImageFolder(folder, folder / "labels.csv")
    transform = augment.kaggle_pipeline(crop=args.crop)
    batch = 64
    loaders: dict[str, object] = {}
    for backend in augment.backends.names():
        # Ray runs at 2 workers only: two Ray loaders at once would need 3 of the 2 CPUs.
        for workers in (2,) if backend == "ray" else (1, 2):
            loaders[f"augment {backend}, {workers} worker{'s' * (workers > 1)}"] = augment.Loader(
                dataset, transform, batch_size=batch, backend=backend, workers=workers
            )
    try:
        import albumentations  # noqa: F401

        loaders["DataLoader(2 workers) + albumentations"] = torch.utils.data.DataLoader(
            AlbumentationsFiles(dataset, args.crop),
            batch_size=batch,
            shuffle=True,
            num_workers=2,
            persistent_workers=True,
            multiprocessing_context="spawn",
            worker_init_fn=_one_thread,
        )
    except ImportError:
        print("albumentations is not installed (pip install -e '.[bench]')", file=sys.stderr)
    for backend in ("thread", "process"):
        # the floor: decode and the output's crop, nothing resampled (an exact copy)
        loaders[f"decode and crop only ({backend}, 2 workers)"] = augment.Loader(
            dataset, augment.CenterCrop(args.crop), batch_size=batch, backend=backend, workers=2
        )

    def epoch(loader):
        return lambda: sum(len(images) for images, _ in loader)

    times: dict[str, list[float]] = {}
    try:
        medians = race(
            {name: epoch(loader) for name, loader in loaders.items()}, args.rounds, times
        )
    finally:
        for loader in loaders.values():
            if hasattr(loader, "close"):
                loader.close()
    rate = {name: len(dataset) / t for name, t in medians.items()}
    warp_ms = _warp_alone_ms(dataset, args.crop)
    ours = {n: r for n, r in rate.items() if n.startswith("augment")}
    best = max(ours, key=ours.get)
    floor = max((n for n in rate if n.startswith("decode and crop only")), key=rate.get)
    two_workers = max((n for n in ours if n.endswith("2 workers")), key=ours.get)

    def faster(a: str, b: str) -> float:  # a's speed over b's: the median of the rounds' ratios
        if a not in times or b not in times:
            return float("nan")
        return statistics.median(tb / ta for ta, tb in zip(times[a], times[b]))

    lines = ["| pipeline | images/s |", "|---|---:|"]
    lines += [f"| {name} | {r:.0f} |" for name, r in rate.items()]
    checks = [
        f"best of ours: {best}",
        f"best / DataLoader + albumentations: "
        f"{faster(best, 'DataLoader(2 workers) + albumentations'):.2f}x (target >= 1.4x)",
        f"2 workers / serial: {faster(two_workers, 'augment serial, 1 worker'):.2f}x"
        " (target >= 1.9x)",
        f"best / decode-and-crop-only floor: {faster(best, floor):.0%} (target >= 70%): per "
        f"image, decode and crop take {2e3 / rate[floor]:.2f} ms of the 2 cores, ours "
        f"{2e3 / ours[best]:.2f} ms; 70% allows {2e3 / rate[floor] * (1 / 0.7 - 1):.2f} ms "
        f"more than decode and crop, and the rotating warp alone takes {warp_ms:.2f} ms (one "
        "core, this run)",
    ]
    if "augment ray, 2 workers" in ours:
        checks.append(
            "ray / process at 2 workers: "
            f"{faster('augment ray, 2 workers', 'augment process, 2 workers'):.2f}x"
            " (target >= 0.7x)"
        )
    checks.append("ratios: the median over rounds of each round's ratio (alternated order)")
    table = "\n".join(lines) + "\n\n" + "\n".join(f"- {c}" for c in checks)
    print(
        f"{len(dataset)} JPEG tiles 256x256 in the page cache -> uint8 NCHW batches of {batch}, "
        f"Kaggle pipeline, crop {args.crop}; median of {args.rounds} alternated epochs:\n{table}"
    )
    return table


def _warp_alone_ms(dataset, crop: int, n: int = 64, rounds: int = 7) -> float:
    """Milliseconds per image of the default kernel's warp alone (a 17 degree rotation to
    crop x crop, as in ``ops``) on ``n`` decoded images of ``dataset``, one core, median of
    ``rounds``: what the pipeline cannot avoid beyond decoding."""
    warp = kernels.get()
    images = [dataset.decode(dataset.read(i), i) for i in range(min(n, len(dataset)))]
    h, w = images[0].shape[:2]
    a, b = 1.05 * np.cos(np.radians(17.0)), 1.05 * np.sin(np.radians(17.0))
    cx, cy = (w - 1) / 2, (h - 1) / 2  # OpenCV's getRotationMatrix2D, as ops uses
    turn = np.array([[a, b, (1 - a) * cx - b * cy], [-b, a, b * cx + (1 - a) * cy]])
    out = np.empty((crop, crop, images[0].shape[2]), np.uint8)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for img in images:
            warp(img, turn, (crop, crop), "bilinear", "reflect", 0, out=out)
        times.append((time.perf_counter() - start) / len(images))
    return statistics.median(times) * 1e3


def _one_thread(_worker_id: int) -> None:
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def bench_tracing(args) -> str:
    """The same loader with and without a Tracer, alternated: what tracing costs."""
    import tempfile

    import torch

    torch.set_num_threads(1)
    _one_thread(0)
    folder = bench_dataset(args.images)
    dataset = augment.ImageFolder(folder, folder / "labels.csv")
    rows = []
    with tempfile.TemporaryDirectory() as trace_dir:
        for backend in ("thread", "process"):
            tracer = augment.Tracer(trace_dir, experiment=f"bench_{backend}")
            loaders = {
                "off": augment.Loader(
                    dataset, augment.kaggle_pipeline(), batch_size=64, backend=backend, workers=2
                ),
                "on": augment.Loader(
                    dataset,
                    augment.kaggle_pipeline(),
                    batch_size=64,
                    backend=backend,
                    workers=2,
                    tracer=tracer,
                ),
            }
            times: dict[str, list[float]] = {}
            try:
                medians = race(
                    {k: (lambda ld=ld: sum(len(x) for x, _ in ld)) for k, ld in loaders.items()},
                    args.rounds,
                    times,
                )
            finally:
                for loader in loaders.values():
                    loader.close()
                tracer.close()
            # paired: each round's off time over its on time, so a slow moment of the
            # shared machine weighs on both sides of one ratio
            paired = statistics.median(o / n for o, n in zip(times["off"], times["on"]))
            n = len(dataset)
            rows.append((backend, n / medians["off"], n / medians["on"], paired))
    lines = [
        "| backend, 2 workers | tracing off, images/s | tracing on | on / off, paired |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {b} | {off:.0f} | {on:.0f} | {ratio:.3f} |" for b, off, on, ratio in rows]
    table = "\n".join(lines) + "\n\n- target: on / off >= 0.99"
    print(f"{len(dataset)} tiles per epoch, median of {args.rounds} alternated epochs:\n{table}")
    return table


def bench_dataloader(args) -> str:
    """The plain DataLoader + albumentations of scripts/dataloader_example.py (its Dataset and
    pipeline as they are), untraced and traced by augment.trace.instrument, and the same
    Dataset on augment.Loader with augment's fused pipeline. Every round runs each contender
    once, in alternating order; a ratio is the median of the rounds' ratios, so that a burst
    of load from elsewhere on the machine hits both sides of a ratio alike."""
    import tempfile

    import torch

    from augment.trace import instrument

    torch.set_num_threads(1)
    _one_thread(0)
    try:
        from dataloader_example import Tiles, pipeline
    except ImportError as exc:  # albumentations
        raise SystemExit(f"dataloader: {exc} (pip install -e '.[bench]')") from exc
    folder = bench_dataset(args.images)
    batch, workers = 64, 2
    per_run = args.epochs * len(Tiles(folder))

    def dataloader():
        return torch.utils.data.DataLoader(
            Tiles(folder, pipeline),
            batch_size=batch,
            shuffle=True,
            num_workers=workers,
            persistent_workers=True,  # started once, in the warm-up, never timed
            multiprocessing_context="spawn",
            worker_init_fn=_one_thread,
        )

    baseline = f"DataLoader({workers} workers) + albumentations"
    traced = f"{baseline}, traced by augment.trace.instrument"
    with tempfile.TemporaryDirectory() as trace_dir:
        tracer = augment.Tracer(trace_dir, experiment="bench_dataloader")
        loaders = {baseline: dataloader(), traced: instrument(dataloader(), tracer)}
        for backend in ("thread", "process"):
            loaders[f"augment.Loader({backend}, {workers} workers) + kaggle_pipeline"] = (
                augment.Loader(
                    Tiles(folder),
                    augment.kaggle_pipeline(crop=224),
                    batch_size=batch,
                    backend=backend,
                    workers=workers,
                )
            )
        # the gain from the Loader alone: the albumentations pipeline as it is (wrapped by
        # augment.adapters.albumentations), decoded and augmented in the same threads
        loaders[f"augment.Loader(thread, {workers} workers) + the albumentations pipeline"] = (
            augment.Loader(
                Tiles(folder), pipeline, batch_size=batch, backend="thread", workers=workers
            )
        )

        def run(loader):
            return lambda: sum(len(images) for _ in range(args.epochs) for images, _ in loader)

        try:
            wall, cpu = _race_rounds({n: run(ld) for n, ld in loaders.items()}, args.rounds)
        finally:
            for loader in loaders.values():
                if hasattr(loader, "close"):
                    loader.close()
            del loaders  # the DataLoaders' persistent workers end with them
            tracer.close()

    overhead_s = _tracing_overhead_per_batch(batch, args.rounds)
    cpu_per_batch = statistics.median(cpu[baseline]) / per_run * batch

    def paired(times, name):  # the median over rounds of baseline time / this time
        return statistics.median(b / t for b, t in zip(times[baseline], times[name]))

    rate = {name: per_run / statistics.median(t) for name, t in wall.items()}
    speed = {name: paired(wall, name) for name in wall}
    ours = {n: r for n, r in speed.items() if n.endswith("kaggle_pipeline")}
    best = max(ours, key=ours.get)
    lines = [f"| {workers} workers, batches of {batch} at 224 | images/s | vs DataLoader |"]
    lines.append("|---|---:|---:|")
    lines += [f"| {n} | {rate[n]:.0f} | {speed[n]:.2f}x |" for n in wall]
    ratios = [b / t for b, t in zip(wall[baseline], wall[traced])]
    checks = [
        f"tracing cost, traced / untraced images/s: {speed[traced]:.3f} (target >= 0.98); "
        f"CPU time per image, untraced / traced: {paired(cpu, traced):.3f}",
        f"tracing's own cost, on a loader whose dataset does nothing: "
        f"{overhead_s * 1e6:.0f} us per batch of {batch}, "
        f"{overhead_s / cpu_per_batch:.2%} of the CPU time a batch of this pipeline takes",
        f"the same pipeline on augment.Loader ({best.split('(')[1].split(',')[0]}) / "
        f"DataLoader + albumentations: {ours[best]:.2f}x",
    ]
    table = "\n".join(lines) + "\n\n" + "\n".join(f"- {c}" for c in checks)
    print(
        f"{len(Tiles(folder))} JPEG tiles 256x256 in the page cache, {args.epochs} epoch(s) "
        f"per timed run, {args.rounds} alternated rounds; ratios are medians of the rounds' "
        f"ratios, CPU time is the whole process tree's:\n{table}\n"
        f"traced / untraced images/s, per round: {' '.join(f'{r:.3f}' for r in ratios)}"
    )
    return table


class _Nothing:
    """A dataset whose samples cost nothing: what is left to time is the loader's own work."""

    def __len__(self):
        return 64 * 40

    def __getitem__(self, i):
        return i


def _tracing_overhead_per_batch(batch: int, rounds: int) -> float:
    """Seconds that tracing adds to one batch (worker and loop spans, written and flushed),
    in one process: a DataLoader without workers over ``_Nothing``, traced and not."""
    import tempfile

    import torch

    from augment.trace import instrument

    def loader():
        return torch.utils.data.DataLoader(_Nothing(), batch_size=batch)

    with tempfile.TemporaryDirectory() as trace_dir:
        tracer = augment.Tracer(trace_dir, experiment="bench_overhead")
        loaders = {"off": loader(), "on": instrument(loader(), tracer)}
        medians = race({k: (lambda ld=ld: sum(1 for _ in ld)) for k, ld in loaders.items()}, rounds)
        tracer.close()
    return max(0.0, medians["on"] - medians["off"]) / len(loaders["off"])


def _race_rounds(
    contenders: dict[str, Callable[[], None]], rounds: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """``race``, keeping every round's wall seconds and the CPU seconds of this process and
    all its children (workers), for ratios paired within a round."""
    import psutil

    def tree_cpu() -> float:
        total = 0.0
        for proc in [psutil.Process(), *psutil.Process().children(recursive=True)]:
            try:
                t = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system
        return total

    wall: dict[str, list[float]] = {name: [] for name in contenders}
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for fn in contenders.values():  # warm-up: worker start-up, page cache
        fn()
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            c = tree_cpu()
            start = time.perf_counter()
            contenders[name]()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(tree_cpu() - c)
    return wall, cpu


def bench_decoders(args) -> str:
    """Every JPEG decoder that is installed, on the sample tiles: identical pixels? speed?"""
    blobs = [f.read_bytes() for f in sorted(SAMPLE.glob("*.jpg"))[: args.images]]
    decoders = {"Pillow": lambda b: np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))}
    try:
        import cv2

        cv2.setNumThreads(1)
        decoders["OpenCV"] = lambda b: cv2.imdecode(
            np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR_RGB
        )
    except ImportError:
        pass
    try:
        import simplejpeg

        decoders["simplejpeg"] = lambda b: simplejpeg.decode_jpeg(b, colorspace="RGB")
    except ImportError:
        pass
    reference = [decoders["Pillow"](b) for b in blobs]
    same = {
        name: all(np.array_equal(fn(b), r) for b, r in zip(blobs, reference))
        for name, fn in decoders.items()
    }
    medians = race(
        {name: (lambda fn=fn: [fn(b) for b in blobs]) for name, fn in decoders.items()}, args.rounds
    )
    lines = ["| decoder | ms per tile | same pixels as Pillow |", "|---|---:|---|"]
    lines += [
        f"| {n} | {t / len(blobs) * 1e3:.3f} | {'yes' if same[n] else 'no'} |"
        for n, t in medians.items()
    ]
    table = "\n".join(lines)
    print(f"{len(blobs)} sample JPEG tiles, one thread, median of {args.rounds} rounds:\n{table}")
    return table


def bench_soak(args) -> str:
    """10,000 batches per backend, RSS and /dev/shm sampled: the code is in scripts/soak.py."""
    import soak

    return soak.bench_soak(args)


def bench_realistic(args) -> str:
    """ImageNet-like photographs, RandomResizedCrop(224) + flip, ours vs DataLoader with the
    torchvision Pillow path and with albumentations: the code is in scripts/realistic.py."""
    import realistic

    return realistic.bench_realistic(args)


def bench_overhead(args) -> str:
    """The Python overhead per image of the Kaggle pipeline, this tree against ``--base``:
    the code is in scripts/overhead.py."""
    import overhead

    return overhead.bench_overhead(args)


def bench_advice(args) -> str:
    """augment-profile tune on misconfigured, step-bound, concurrent and shipped configs:
    the code is in scripts/advice_bench.py."""
    import advice_bench

    return advice_bench.bench_advice(args)


def bench_cluster(args) -> str:
    """Shards over HTTP vs HTTPImages, and a simulated Ray cluster that loses a node: the
    code is in scripts/cluster_bench.py. With ``--trace DIR`` and ``--write-docs``, the
    traced loss's timeline becomes docs/cluster_timeline.png, shown under the table."""
    import cluster_bench

    table = cluster_bench.run(args)
    if args.trace is not None and getattr(args, "write_docs", False):
        table += "\n\n" + cluster_bench.copy_figure(args.trace)
    return table


def bench_targets(args) -> str:
    """Masks and boxes per sample, against the image alone and albumentations: the code is
    in scripts/targets_bench.py."""
    import targets_bench

    return targets_bench.bench_targets(args)


def bench_epochs(args) -> str:
    """Epochs of 3 batches against one long epoch of the same photographs: the code is in
    scripts/epochs_bench.py."""
    import epochs_bench

    return epochs_bench.bench_epochs(args)


def write_docs(section: str, table: str, command: str) -> None:
    """Replace the block between <!-- bench:NAME --> markers in docs/benchmarks.md."""
    text = BENCHMARKS.read_text()
    block = f"<!-- bench:{section} -->\n{table}\n\nMade by `{command}`.\n<!-- /bench:{section} -->"
    pattern = re.compile(rf"<!-- bench:{section} -->.*?<!-- /bench:{section} -->", re.S)
    if not pattern.search(text):
        raise SystemExit(f"docs/benchmarks.md has no <!-- bench:{section} --> block to fill")
    BENCHMARKS.write_text(pattern.sub(lambda _: block, text))
    print(f"wrote the {section} table into {BENCHMARKS.relative_to(ROOT)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="what", required=True)
    ops = sub.add_parser("ops", help="per-image time of the Kaggle pipeline, per kernel")
    ops.add_argument("--images", type=int, default=32, help="tiles per round (default 32)")
    ops.add_argument("--rounds", type=int, default=15, help="alternated rounds (default 15)")
    ops.add_argument("--crop", type=int, default=224)
    ops.add_argument(
        "--write-docs", action="store_true", help="put the table in docs/benchmarks.md"
    )
    pipe = sub.add_parser("pipeline", help="end-to-end images/s per backend vs DataLoader")
    pipe.add_argument("--images", type=int, default=512, help="tiles per epoch (default 512)")
    pipe.add_argument("--rounds", type=int, default=5)
    pipe.add_argument("--crop", type=int, default=224)
    pipe.add_argument("--write-docs", action="store_true")
    dec = sub.add_parser("decoders", help="JPEG decoders: identical pixels and speed")
    dec.add_argument("--images", type=int, default=64)
    dec.add_argument("--rounds", type=int, default=9)
    dec.add_argument("--write-docs", action="store_true")
    tracing = sub.add_parser("tracing", help="throughput with tracing on vs off")
    tracing.add_argument("--images", type=int, default=512)
    tracing.add_argument("--rounds", type=int, default=9)
    tracing.add_argument("--write-docs", action="store_true")
    dl = sub.add_parser("dataloader", help="a plain DataLoader: tracing cost, vs augment.Loader")
    dl.add_argument("--images", type=int, default=512, help="tiles per epoch (default 512)")
    dl.add_argument("--epochs", type=int, default=2, help="epochs per timed run (default 2)")
    dl.add_argument("--rounds", type=int, default=19)
    dl.add_argument("--write-docs", action="store_true")
    soak_parser = sub.add_parser("soak", help="RSS and /dev/shm over 10,000 batches per backend")
    import soak

    soak.add_arguments(soak_parser)
    soak_parser.add_argument("--write-docs", action="store_true")
    import realistic

    real = sub.add_parser("realistic", help="photographs, RandomResizedCrop(224), vs DataLoader")
    realistic.add_arguments(real)
    real.add_argument("--write-docs", action="store_true")
    import advice_bench
    import overhead

    over = sub.add_parser("overhead", help="Python per image (1x1 images): --base REV vs now")
    overhead.add_arguments(over)
    over.add_argument("--write-docs", action="store_true")
    advice = sub.add_parser("advice", help="tune: the recommendation, predicted vs measured")
    advice_bench.add_arguments(advice)
    advice.add_argument("--write-docs", action="store_true")
    import targets_bench

    tgt = sub.add_parser("targets", help="masks and boxes per sample, vs albumentations")
    targets_bench.add_arguments(tgt)
    tgt.add_argument("--write-docs", action="store_true")
    import cluster_bench

    cluster = sub.add_parser("cluster", help="shards over HTTP; a Ray cluster losing a node")
    cluster_bench.add_arguments(cluster)
    cluster.add_argument("--write-docs", action="store_true")
    import epochs_bench

    epochs = sub.add_parser("epochs", help="epochs of 3 batches vs one long epoch, images/s")
    epochs_bench.add_arguments(epochs)
    epochs.add_argument("--write-docs", action="store_true")
    every = sub.add_parser("all", help="every benchmark but the long runs, with defaults")
    every.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    runs = {
        "ops": bench_ops,
        "decoders": bench_decoders,
        "pipeline": bench_pipeline,
        "tracing": bench_tracing,
        "dataloader": bench_dataloader,
        "soak": bench_soak,
        "realistic": bench_realistic,
        "advice": bench_advice,
        "overhead": bench_overhead,
        "targets": bench_targets,
        "cluster": bench_cluster,
        "epochs": bench_epochs,
    }
    long_runs = ("soak", "realistic", "advice", "overhead", "cluster", "epochs")
    chosen = [n for n in runs if n not in long_runs] if args.what == "all" else [args.what]
    for what in chosen:
        sub_args = args if args.what != "all" else parser.parse_args([what])
        table = runs[what](sub_args)
        if args.write_docs:
            write_docs(what, table, _command(what, argv))


def _command(what: str, argv: list[str] | None) -> str:
    """The command line that made a table, with the options it was given."""
    given = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--write-docs"]
    options = given[1:] if given and given[0] == what else []
    return " ".join(["python scripts/benchmark.py", what, *options])


if __name__ == "__main__":
    main()
