"""The realistic benchmark (``python scripts/benchmark.py realistic``): photographs, not tiles.

ImageNet-like JPEGs (``scripts/make_dataset.py --preset imagenet-like``: mostly 500 x 375,
quality 90), in the page cache, to uint8 batches of 64 at 224 x 224 (N x 3 x 224 x 224), at
2 workers, with ``RandomResizedCrop(224)`` and a horizontal flip:

- **augment**, each backend given (thread and process by default), ``ImageFolder`` with
  reduced decoding (its default) and ``Compose([RandomResizedCrop(224), RandomFlip()])``;
- **DataLoader + the torchvision Pillow path**: what torchvision's ``RandomResizedCrop`` and
  ``RandomHorizontalFlip`` do to a PIL image, written with Pillow directly, because
  torchvision cannot be installed here (its wheel needs the CUDA build of torch): torchvision's
  ``default_loader`` (``Image.open(f).convert("RGB")``), the box drawn by torchvision's
  documented rule, ``img.crop(box)`` then ``img.resize((224, 224), Image.BILINEAR)``
  (Pillow's bilinear filter widens with the shrink: antialiased), a left-right
  ``transpose`` half the time, and ``PILToTensor`` (``torch.as_tensor(np.array(img))``
  permuted to C x H x W, uint8), collated by the DataLoader;
- **DataLoader + albumentations**: OpenCV decode (``cv2.imread(..., IMREAD_COLOR_RGB)``),
  ``A.RandomResizedCrop((224, 224))``, ``A.HorizontalFlip()``, ``ToTensorV2()``;
- **decode only**: augment's Loader with ``CenterCrop(224)``: the full decode and a copy of
  its centre, no resampling (the floor for any pipeline that decodes every pixel).

Every round runs each contender for one epoch, in alternating order; rates are medians over
rounds, ratios the medians of the rounds' ratios (a burst of load elsewhere on the machine
hits both sides of a ratio alike). DataLoader workers are persistent and spawned, so their
start-up is in the warm-up, never timed; every worker runs one native thread.
Targets: ours >= 1.5x the DataLoader + Pillow path, >= 1.2x DataLoader + albumentations.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BATCH = 64
SIZE = 224
WORKERS = 2
OURS_BACKENDS = ("thread", "process", "torch", "serial")
TARGETS = {"Pillow path": 1.5, "albumentations": 1.2}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``benchmark.py realistic``."""
    parser.add_argument("--images", type=int, default=1024, help="photographs (default 1024)")
    parser.add_argument("--rounds", type=int, default=5, help="alternated epochs (default 5)")
    parser.add_argument(
        "--backends",
        nargs="+",
        default=["thread", "process"],
        choices=OURS_BACKENDS,
        help="augment's backends to run (default: thread process)",
    )
    parser.add_argument(
        "--no-baselines",
        action="store_true",
        help="augment and decode-only alone (no DataLoader contenders)",
    )


def photo_folder(n: int) -> Path:
    """``n`` ImageNet-like photographs outside git, made once (seed 1)."""
    from augment.sources.photographs import write_photos

    folder = ROOT / "runs" / "bench_data" / f"photos_n{n}"
    done = folder / ".complete"
    if not done.exists():
        print(f"making {n} photographs in {folder} (once)", file=sys.stderr)
        write_photos(folder, n=n, seed=1)
        done.write_text("")
    return folder


def one_thread(_worker_id: int = 0) -> None:
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def torchvision_box(h: int, w: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """(top, left, height, width) by the rule torchvision documents for
    ``RandomResizedCrop.get_params``, drawing from Python's ``random`` as it draws from
    torch's generator: 10 attempts, then the centre crop clamped to the ratio range."""
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * random.uniform(*scale)
        aspect = math.exp(random.uniform(*log_ratio))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return random.randint(0, h - ch), random.randint(0, w - cw), ch, cw
    in_ratio = w / h
    if in_ratio < min(ratio):
        cw, ch = w, int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        ch, cw = h, int(round(h * max(ratio)))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


class PillowPath:
    """A torch Dataset doing what torchvision's RandomResizedCrop(224) and
    RandomHorizontalFlip() do on PIL images, with Pillow calls written out."""

    def __init__(self, paths: list[Path], labels: np.ndarray):
        self.paths, self.labels = paths, labels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        import torch
        from PIL import Image

        with open(self.paths[i], "rb") as f:  # torchvision.datasets.folder.pil_loader
            img = Image.open(f).convert("RGB")
        top, left, h, w = torchvision_box(img.height, img.width)
        img = img.crop((left, top, left + w, top + h))  # F.resized_crop on PIL: crop ...
        img = img.resize((SIZE, SIZE), Image.BILINEAR)  # ... then resize (antialiased)
        if random.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        pixels = torch.as_tensor(np.array(img, copy=True)).permute(2, 0, 1)  # PILToTensor
        return pixels, int(self.labels[i])


class AlbumentationsPath:
    """A torch Dataset with OpenCV decode and albumentations' RandomResizedCrop + flip."""

    def __init__(self, paths: list[Path], labels: np.ndarray):
        self.paths, self.labels, self.pipeline = paths, labels, None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        import cv2

        if self.pipeline is None:
            import albumentations as A
            from albumentations.pytorch import ToTensorV2

            self.pipeline = A.Compose(
                [A.RandomResizedCrop((SIZE, SIZE)), A.HorizontalFlip(), ToTensorV2()]
            )
        img = cv2.imread(str(self.paths[i]), cv2.IMREAD_COLOR_RGB)
        return self.pipeline(image=img)["image"], int(self.labels[i])


def reduced_share(dataset, transform, n: int = 256) -> float:
    """The share of the first ``n`` samples of epoch 0 that are decoded smaller."""
    from augment.loading.rng import sample_rng
    from augment.ops.warp_plan import SamplePlan

    count = 0
    for i in range(min(n, len(dataset))):
        plan = SamplePlan(transform, sample_rng(0, 0, i))
        dataset.decode(dataset.read(i), i, plan)
        count += plan.plan is not None and plan.plan.reduction > 1
    return count / min(n, len(dataset))


def scaled_decode_cost(paths: list[Path], rounds: int = 7) -> dict[float, float]:
    """simplejpeg's time to decode ``paths`` at 7/8, 3/4, 1/2 and 1/4 scale, each as a
    fraction of a full decode's (alternated rounds, medians): what a reduced decode could
    save on these files. Empty when simplejpeg is not installed."""
    try:
        import simplejpeg
    except ImportError:
        return {}
    files = [p.read_bytes() for p in paths]
    heights = [simplejpeg.decode_jpeg_header(data)[0] for data in files]
    scales = [1.0, 7 / 8, 3 / 4, 1 / 2, 1 / 4]

    def decode_all(scale: float) -> float:
        start = time.perf_counter()
        for data, h in zip(files, heights):
            size = {} if scale == 1 else {"min_height": int(h * scale), "min_width": 1}
            simplejpeg.decode_jpeg(data, colorspace="RGB", **size)
        return time.perf_counter() - start

    times: dict[float, list[float]] = {scale: [] for scale in scales}
    for r in range(rounds):
        for scale in scales if r % 2 == 0 else scales[::-1]:
            times[scale].append(decode_all(scale))
    full = statistics.median(times[1.0])
    return {scale: statistics.median(times[scale]) / full for scale in scales[1:]}


def bench_realistic(args) -> str:
    import torch

    import augment

    torch.set_num_threads(1)
    one_thread()
    folder = photo_folder(args.images)
    dataset = augment.ImageFolder(folder)
    pipeline = augment.Compose([augment.RandomResizedCrop(SIZE), augment.RandomFlip(0.5)])
    contenders: dict[str, object] = {}
    for backend in args.backends:
        workers = 1 if backend == "serial" else WORKERS
        contenders[f"augment {backend}, {workers} worker{'s' * (workers > 1)}"] = augment.Loader(
            dataset, pipeline, batch_size=BATCH, backend=backend, workers=workers
        )
    baselines = {}
    if not args.no_baselines:
        loaders = {"Pillow path": PillowPath}
        try:
            import albumentations  # noqa: F401

            loaders["albumentations"] = AlbumentationsPath
        except ImportError:
            print("albumentations is not installed (pip install -e '.[bench]')", file=sys.stderr)
        for short, cls in loaders.items():
            name = f"DataLoader({WORKERS} workers) + " + (
                "torchvision's Pillow path (reproduced)" if short == "Pillow path" else short
            )
            baselines[short] = name
            contenders[name] = torch.utils.data.DataLoader(
                cls(dataset.paths, dataset.labels),
                batch_size=BATCH,
                shuffle=True,
                num_workers=WORKERS,
                persistent_workers=True,
                multiprocessing_context="spawn",
                worker_init_fn=one_thread,
            )
    floors = []
    for backend in ("thread", "process"):
        name = f"decode only ({backend}, {WORKERS} workers)"
        floors.append(name)
        contenders[name] = augment.Loader(
            dataset, augment.CenterCrop(SIZE), batch_size=BATCH, backend=backend, workers=WORKERS
        )

    def epoch(loader) -> float:
        start = time.perf_counter()
        n = sum(len(images) for images, _ in loader)
        assert n == len(dataset), (n, len(dataset))
        return time.perf_counter() - start

    times: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    try:
        for loader in contenders.values():  # warm-up: workers, imports, page cache
            epoch(loader)
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else reversed(names):
                times[name].append(epoch(contenders[name]))
    finally:
        for loader in contenders.values():
            if hasattr(loader, "close"):
                loader.close()
    rate = {name: len(dataset) / statistics.median(t) for name, t in times.items()}
    ours = [n for n in names if n.startswith("augment")]
    best = max(ours, key=rate.get)
    floor = max(floors, key=rate.get)

    def paired(other: str) -> float:  # the median over rounds of other's time / best's time
        return statistics.median(o / b for o, b in zip(times[other], times[best]))

    lines = ["| pipeline | images/s |", "|---|---:|"]
    lines += [f"| {name} | {rate[name]:.0f} |" for name in names]
    checks = [f"best of ours: {best}"]
    for short, name in baselines.items():
        checks.append(
            f"best / DataLoader + {short}: {paired(name):.2f}x (target >= {TARGETS[short]}x)"
        )
    checks.append(f"best / decode-only floor: {paired(floor):.0%}")  # time ratio = speed ratio
    if "albumentations" in baselines:  # the ceiling for any pipeline that decodes every pixel
        ceiling = statistics.median(
            o / f for o, f in zip(times[baselines["albumentations"]], times[floor])
        )
        checks.append(f"decode-only floor / DataLoader + albumentations: {ceiling:.2f}x")
    checks.append(
        f"samples decoded smaller (warp shrinks 2x or more): {reduced_share(dataset, pipeline):.0%}"
    )
    scaled = scaled_decode_cost(dataset.paths[:200])
    if scaled:
        names = {7 / 8: "7/8", 3 / 4: "3/4", 1 / 2: "1/2", 1 / 4: "1/4"}
        checks.append(
            "simplejpeg decoding at "
            + ", ".join(f"{names[k]}: {v:.2f}x" for k, v in scaled.items())
            + " the time of a full decode (200 of the files, one thread)"
        )
    table = "\n".join(lines) + "\n\n" + "\n".join(f"- {c}" for c in checks)
    sizes = [p.stat().st_size for p in dataset.paths]
    print(
        f"{len(dataset)} photograph-like JPEGs (mostly 500x375, quality 90, "
        f"{sum(sizes) / len(sizes) / 1e3:.0f} kB on average) in the page cache -> uint8 "
        f"batches of {BATCH} at {SIZE}x{SIZE}, RandomResizedCrop({SIZE}) + horizontal flip; "
        f"median of {args.rounds} alternated epochs. torchvision cannot be installed here: its "
        "Pillow path is reproduced with Pillow calls (see scripts/realistic.py).\n" + table
    )
    return table
