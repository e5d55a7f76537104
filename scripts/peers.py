"""augment against its peers on the same photographs (``make peers``, in ``.venv-peers``).

Every pipeline turns the same photograph-like JPEGs (``augment.sources.photographs.write_photos``:
400-640 x 300-480, quality 90, in the page cache) into uint8 batches of 64 x 3 x 224 x 224
with RandomResizedCrop(224) (scale 0.08-1, ratio 3/4-4/3) and a horizontal flip, on 2
workers (processes or threads, as each peer runs them), one native thread each. Each round
runs every pipeline for one epoch, in alternating order; images/s is the median over
rounds, "augment is" the median over rounds of the pipeline's time over augment's (process
backend) in the same round, and CPU the cores' time per image (this process and its
children, user + system), median over rounds.

Peers that cannot be imported are listed with the reason. torchvision needs torch 2.14.1
(a CUDA build that runs on the CPU), so this runs in its own environment (``make peers``);
DALI comes from PyPI (nvidia-dali-cuda120, its CPU operators), FFCV only as a source build.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402
import psutil  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
from realistic import one_thread, photo_folder, torchvision_box  # noqa: E402

BATCH, SIZE, WORKERS = 64, 224, 2
SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)
DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "## Peers"
NOTE = (
    'img/s is the median over rounds; "augment (process) is" the median over rounds of the '
    "pipeline's time over augment's in the same round (above 1: augment is faster), so the "
    "two columns can disagree when the machine's speed drifts within a run; CPU is the cores' "
    "time per image (the process and its workers), the steadiest of the three on a shared "
    "machine. Every pipeline draws RandomResizedCrop(224) with torchvision's rule (scale "
    "0.08-1, ratio 3/4-4/3) and flips half the images; augment, DALI (with antialiasing) and "
    "torchvision/PIL v2 antialias the shrink, SPDL's stage uses OpenCV's area resize, "
    "albumentations its bilinear resize."
)


def cpu_seconds() -> float:
    """User + system time of this process and its live children (workers)."""
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


# --------------------------------------------------------------------------- the pipelines
# Each is a zero-argument callable running one epoch and returning the images it produced;
# ``close`` (where present) stops its workers.


class AugmentEpoch:
    def __init__(self, folder: Path, backend: str, partial: bool = True):
        import augment

        dataset = augment.ImageFolder(folder, partial_decode=partial)
        t = augment.Compose([augment.RandomResizedCrop(SIZE), augment.RandomFlip(0.5)])
        self.loader = augment.Loader(
            dataset, t, batch_size=BATCH, backend=backend, workers=WORKERS, seed=0
        )

    def __call__(self) -> int:
        return sum(len(images) for images, _ in self.loader)

    def close(self) -> None:
        self.loader.close()


class DataLoaderEpoch:
    def __init__(self, dataset):
        import torch

        self.loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=BATCH,
            shuffle=True,
            num_workers=WORKERS,
            persistent_workers=True,
            multiprocessing_context="spawn",
            worker_init_fn=one_thread,
        )

    def __call__(self) -> int:
        return sum(len(images) for images, _ in self.loader)


class TorchvisionDecode:
    """``torchvision.io.decode_jpeg`` then transforms v2 on the uint8 tensor."""

    def __init__(self, paths):
        self.paths, self.t = paths, None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        import torch
        import torchvision
        from torchvision.transforms import v2

        if self.t is None:
            self.t = v2.Compose(
                [v2.RandomResizedCrop(SIZE, antialias=True), v2.RandomHorizontalFlip()]
            )
        data = torchvision.io.read_file(str(self.paths[i]))
        return self.t(torchvision.io.decode_jpeg(data)), torch.tensor(0)


class PillowV2:
    """torchvision's default loader (PIL) then transforms v2, PILToTensor last."""

    def __init__(self, paths):
        self.paths, self.t = paths, None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        from PIL import Image
        from torchvision.transforms import v2

        if self.t is None:
            self.t = v2.Compose(
                [
                    v2.RandomResizedCrop(SIZE, antialias=True),
                    v2.RandomHorizontalFlip(),
                    v2.PILToTensor(),
                ]
            )
        with open(self.paths[i], "rb") as f:
            img = Image.open(f).convert("RGB")
        return self.t(img), 0


def _albumentations():
    import albumentations as A

    return A.Compose([A.RandomResizedCrop((SIZE, SIZE)), A.HorizontalFlip()])


class TorchdataNodes:
    """torchdata.nodes: ParallelMapper on threads, PIL decode + albumentations, Batcher."""

    def __init__(self, paths):
        import torch
        from torchdata import nodes

        t = _albumentations()

        def load(path):
            from PIL import Image

            with Image.open(path) as im:
                img = np.asarray(im.convert("RGB"))
            return torch.from_numpy(t(image=img)["image"]).permute(2, 0, 1)

        node = nodes.IterableWrapper(list(paths))
        node = nodes.ParallelMapper(
            node, load, num_workers=WORKERS, method="thread", in_order=False
        )
        node = nodes.Batcher(node, batch_size=BATCH)
        node = nodes.Mapper(node, torch.stack)
        self.loader = nodes.Loader(node)

    def __call__(self) -> int:
        return sum(len(b) for b in self.loader)


def _simplejpeg_crop(path) -> np.ndarray:
    """simplejpeg decode, torchvision's box, OpenCV resize (area: antialiased) and flip."""
    import cv2
    import simplejpeg

    img = simplejpeg.decode_jpeg(Path(path).read_bytes(), colorspace="RGB")
    top, left, h, w = torchvision_box(*img.shape[:2], SCALE, RATIO)
    out = cv2.resize(
        img[top : top + h, left : left + w], (SIZE, SIZE), interpolation=cv2.INTER_AREA
    )
    if random.random() < 0.5:
        out = cv2.flip(out, 1)
    return out


class SpdlEpoch:
    """SPDL's pipeline: a stage of 2 concurrent tasks (simplejpeg + OpenCV), batches of 64."""

    def __init__(self, paths):
        self.paths = list(paths)

    def __call__(self) -> int:
        import torch
        from spdl.pipeline import PipelineBuilder

        def collate(items):
            return torch.from_numpy(np.stack(items)).permute(0, 3, 1, 2)

        order = random.sample(self.paths, len(self.paths))
        pipeline = (
            PipelineBuilder()
            .add_source(order)
            .pipe(_simplejpeg_crop, concurrency=WORKERS)
            .aggregate(BATCH)
            .pipe(collate)
            .add_sink(3)
            .build(num_threads=WORKERS)
        )
        with pipeline.auto_stop():
            return sum(len(b) for b in pipeline.get_iterator())


class DaliEpoch:
    """DALI on the CPU: ``decoders.image_random_crop`` (decodes only the crop's region),
    resize, flip, CHW; 2 threads."""

    def __init__(self, paths, antialias: bool):
        from nvidia.dali import fn, pipeline_def, types

        files = [str(p) for p in paths]

        @pipeline_def(batch_size=BATCH, num_threads=WORKERS, device_id=None, seed=1)
        def pipe():
            jpegs, labels = fn.readers.file(files=files, random_shuffle=True, name="reader")
            images = fn.decoders.image_random_crop(
                jpegs,
                device="cpu",
                output_type=types.RGB,
                random_area=list(SCALE),
                random_aspect_ratio=list(RATIO),
            )
            images = fn.resize(images, resize_x=SIZE, resize_y=SIZE, antialias=antialias)
            images = fn.flip(images, horizontal=fn.random.coin_flip())
            return fn.transpose(images, perm=[2, 0, 1]), labels

        self.pipe = pipe()
        self.pipe.build()
        self.batches = math.ceil(len(files) / BATCH)

    def __call__(self) -> int:
        import torch

        n = 0
        for _ in range(self.batches):  # the reader streams on across epochs
            images, _ = self.pipe.run()
            n += len(torch.from_numpy(images.as_array()))
        return n


class BareDecode:
    """simplejpeg decoding of every file, whole, on 2 threads, nothing else."""

    def __init__(self, paths):
        self.paths = list(paths)
        self.pool = concurrent.futures.ThreadPoolExecutor(WORKERS)

    def __call__(self) -> int:
        import simplejpeg

        def decode(p):
            return simplejpeg.decode_jpeg(Path(p).read_bytes(), colorspace="RGB").shape[0]

        return sum(1 for _ in self.pool.map(decode, self.paths, chunksize=16))

    def close(self) -> None:
        self.pool.shutdown()


def contenders(folder: Path, paths: list[Path]):
    """(name, factory) of every pipeline, and (name, reason) of those that cannot run."""
    runs, missing = [], []

    def need(name: str, module: str, factory, why: str = "") -> None:
        try:
            __import__(module)
        except Exception as exc:  # noqa: BLE001 - any import failure means "not installed"
            missing.append((name, why or f"`import {module}` fails: {exc}"))
            return
        runs.append((name, factory))

    runs.append(("augment, process backend", lambda: AugmentEpoch(folder, "process")))
    runs.append(("augment, thread backend", lambda: AugmentEpoch(folder, "thread")))
    runs.append(
        ("augment, process backend, whole-image decode (before partial decoding)",
         lambda: AugmentEpoch(folder, "process", partial=False))
    )  # fmt: skip
    need("DALI on the CPU, `decoders.image_random_crop` (ROI decode) + resize + flip",
         "nvidia.dali", lambda: DaliEpoch(paths, True))  # fmt: skip
    need("the same without antialiasing", "nvidia.dali", lambda: DaliEpoch(paths, False))
    need("FFCV, `RandomResizedCropRGBImageDecoder` + flip", "ffcv", None,
         "`pip install ffcv` (1.0.2, a source build) needs the system's OpenCV 4 "
         "(pkg-config opencv4) and libturbojpeg development files; no wheel on PyPI")  # fmt: skip
    need("SPDL, simplejpeg decode + OpenCV crop, resize and flip stage", "spdl.pipeline",
         lambda: SpdlEpoch(paths))  # fmt: skip
    need("DataLoader + `torchvision.io.decode_jpeg` + transforms v2", "torchvision",
         lambda: DataLoaderEpoch(TorchvisionDecode(paths)))  # fmt: skip
    need("DataLoader + PIL + transforms v2", "torchvision",
         lambda: DataLoaderEpoch(PillowV2(paths)))  # fmt: skip
    need("torchdata.nodes ParallelMapper (threads), PIL + albumentations", "torchdata.nodes",
         lambda: TorchdataNodes(paths))  # fmt: skip
    need("simplejpeg full decode of every file, 2 threads, nothing else", "simplejpeg",
         lambda: BareDecode(paths))  # fmt: skip
    return runs, missing


def run(args) -> str:
    import torch

    torch.set_num_threads(1)
    one_thread()
    random.seed(0)
    folder = photo_folder(args.images)
    paths = sorted(p for p in folder.rglob("*.jpg"))
    runs, missing = contenders(folder, paths)
    made = {}
    for name, factory in runs:
        try:
            made[name] = factory()
        except Exception as exc:  # noqa: BLE001 - a peer that installs but will not start
            missing.append((name, f"installed but failed to start: {type(exc).__name__}: {exc}"))
    names = list(made)
    load_before = os.getloadavg()[0]
    times = {n: [] for n in names}
    cpu = {n: [] for n in names}
    counts = {n: [] for n in names}
    try:
        for name in names:  # warm-up: workers, imports, page cache
            made[name]()
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else reversed(names):
                c0, t0 = cpu_seconds(), time.perf_counter()
                n = made[name]()
                dt, dc = time.perf_counter() - t0, cpu_seconds() - c0
                times[name].append(dt / n)
                cpu[name].append(dc / n)
                counts[name].append(n)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        for pipeline in made.values():
            if hasattr(pipeline, "close"):
                pipeline.close()
    ours = names[0]
    lines = ["| pipeline | img/s | augment (process) is | CPU ms / image |", "|---|---:|---:|---:|"]
    for name in names:
        rate = 1 / statistics.median(times[name])
        ratio = statistics.median(o / a for o, a in zip(times[name], times[ours]))
        shown = "-" if name == ours else f"{ratio:.2f}x"
        lines.append(
            f"| {name} | {rate:,.0f} | {shown} | {1e3 * statistics.median(cpu[name]):.2f} |"
        )
    for name, why in missing:
        lines.append(f"| {name} | not run: {why} | | |")
    sizes = [p.stat().st_size for p in paths]
    head = (
        f"{len(paths)} photographs ({sum(sizes) / len(sizes) / 1e3:.0f} kB on average), "
        f"batches of {BATCH} at {SIZE}x{SIZE}, {WORKERS} workers, median of {args.rounds} "
        f"alternated rounds, {os.cpu_count()} cores shared with other work (load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after)."
    )
    return head + "\n\n" + "\n".join(lines)


def write_docs(table: str, command: str) -> None:
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    section = (
        f"{SECTION}\n\nThe pipelines of issue 24 side by side (`scripts/peers.py`), made by\n\n"
        f"    {command}\n\n{table}\n\n{NOTE}\n"
    )
    if SECTION in text:
        start = text.index(SECTION)
        nxt = text.find("\n## ", start + len(SECTION))
        text = text[:start] + section + (text[nxt + 1 :] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOCS.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=640, help="photographs (default 640)")
    parser.add_argument("--rounds", type=int, default=7, help="alternated rounds (default 7)")
    parser.add_argument("--write-docs", action="store_true", help="write docs/benchmarks.md")
    args = parser.parse_args()
    table = run(args)
    print(table)
    if args.write_docs:
        command = "make peers  # .venv-peers/bin/python scripts/peers.py " + " ".join(
            a for a in sys.argv[1:]
        )
        write_docs(table, command)


if __name__ == "__main__":
    main()
