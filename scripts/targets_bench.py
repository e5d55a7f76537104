"""What targets cost per sample (``python scripts/benchmark.py targets``).

One pipeline, RandomResizedCrop(224) + horizontal flip + rotation (constant border), on the
256x256 sample tiles, one thread, the default kernel. Timed per sample as the thread's CPU
time (``time.thread_time``: what other processes on a shared machine do is not counted), in
one run, alternated rounds, the medians and the median of each round's paired ratio:

- the image alone (``pipeline(img, rng)``), the baseline;
- the image and an integer class map (uint8, one channel): target <= +30%;
- the image and 50 boxes with their labels: target < +5%;
- the image, the mask and the 50 boxes, against albumentations doing the same (its
  ``A.Compose`` with ``bbox_params``): target <= 0.5x its time;

and what bounds them: the image with no boxes (``boxes`` of zero rows: the cost of a sample
with targets, before any target moves), the mask's warp alone (``targets.warp_mask`` with
the sample's drawn map, nothing else) and the image's warp alone (``warp_plan.warp``, the
same map: the call without drawing or checking anything). Each is timed both as one call
of the pipeline per sample and with the samples made into one batch as a Loader's worker
makes it (``augment.loading.batch.make_batch``: load, transform into the batch buffer,
collate the targets).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OPENCV_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

import augment  # noqa: E402

N_BOXES = 50


def add_arguments(parser) -> None:
    parser.add_argument("--images", type=int, default=32, help="tiles per round (default 32)")
    parser.add_argument("--rounds", type=int, default=15, help="alternated rounds (default 15)")
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument(
        "--paired",
        choices=("batch", "call"),
        help="only the image alone, with 0 boxes, with a mask and with 50 boxes, in a batch or "
        "one call per sample: fewer contenders between the paired ones, for comparing two "
        "checkouts (run it in each alternately, the checkout on PYTHONPATH)",
    )
    parser.add_argument(
        "--size",
        type=int,
        default=256,
        help="the tiles resized to this many pixels a side first (default 256: as they are)",
    )


def samples(images: list[np.ndarray]) -> list[dict]:
    """Each tile with a class map made from its pixels and 50 boxes with labels (8 to 40
    pixels a side on a 256-pixel tile, in proportion on others)."""
    out = []
    for i, img in enumerate(images):
        rng = np.random.default_rng(i)
        h, w = img.shape[:2]
        k = min(h, w) / 256
        xy = rng.uniform(0, min(h, w) - 40 * k, (N_BOXES, 2))
        wh = rng.uniform(8 * k, 40 * k, (N_BOXES, 2))
        boxes = np.column_stack((xy, xy + wh)).astype(np.float32)
        mask = (img[:, :, 1] // 64).astype(np.uint8)
        out.append({"image": img, "mask": mask, "boxes": boxes, "labels": np.arange(N_BOXES)})
    return out


def ours(crop: int):
    return augment.Compose(
        [
            augment.RandomResizedCrop(crop),
            augment.RandomFlip(0.5),
            augment.RandomRotate(20, border="constant"),
        ]
    )


def theirs(crop: int):
    import albumentations as A
    import cv2

    cv2.setNumThreads(1)
    return A.Compose(
        [
            A.RandomResizedCrop((crop, crop)),
            A.HorizontalFlip(p=0.5),
            A.Rotate(limit=20, border_mode=cv2.BORDER_CONSTANT, p=1.0),
        ],
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"]),
        seed=0,
    )


def batch_of(dataset, pipeline):
    """A function making one batch of every sample of ``dataset`` (map-style) in this thread,
    as a Loader's worker does (``augment.loading.batch.make_batch``: load, transform into the batch
    buffer, collate the targets)."""
    from augment.loading.batch import BatchPlan, BatchTask, make_batch, target_transform
    from augment.sources.samples import MapStyle

    task = BatchTask(MapStyle(dataset), pipeline, 0, "raise", None, *target_transform(pipeline))
    plan = BatchPlan(0, 0, tuple(range(len(dataset))))
    return lambda: make_batch(task, plan)


def tiles(args) -> list[dict]:
    """The samples of ``samples`` made from ``--images`` tiles of ``--size`` pixels."""
    from benchmark import load_images

    images = load_images(args.images)
    if args.size != 256:
        from PIL import Image

        size = (args.size, args.size)
        images = [np.asarray(Image.fromarray(i).resize(size, Image.BICUBIC)) for i in images]
    return samples(images)


def paired_ratios(times: dict, base: str) -> dict:
    """Each contender's median over the rounds of its time over ``base``'s that round."""
    return {
        name: statistics.median(a / b for a, b in zip(t, times[base])) for name, t in times.items()
    }


def bench_paired(args) -> str:
    """``--paired``: four contenders, paired with the image alone in each round."""
    from augment.loading.rng import KeyedRng

    data = tiles(args)
    pipeline = ours(args.crop)
    keyed = KeyedRng(0)
    kinds = {
        "image alone": [s["image"] for s in data],
        "image + 0 boxes": [{"image": s["image"], "boxes": s["boxes"][:0]} for s in data],
        "image + integer mask": [{"image": s["image"], "mask": s["mask"]} for s in data],
        f"image + {N_BOXES} boxes": [
            {"image": s["image"], "boxes": s["boxes"], "labels": s["labels"]} for s in data
        ],
    }
    if args.paired == "batch":
        contenders = {name: batch_of(items, pipeline) for name, items in kinds.items()}
    else:
        contenders = {
            name: lambda items=items: [pipeline(s, keyed.at(0, i)) for i, s in enumerate(items)]
            for name, items in kinds.items()
        }
    times = {name: [] for name in contenders}
    for fn in contenders.values():  # warm-up
        fn()
    for r in range(args.rounds):
        for name in contenders if r % 2 == 0 else reversed(list(contenders)):
            start = time.thread_time()
            contenders[name]()
            times[name].append(time.thread_time() - start)
    ratios = paired_ratios(times, "image alone")
    line = ", ".join(f"{name} {ratios[name]:.3f}x" for name in contenders)
    way = "in a batch" if args.paired == "batch" else "one call per sample"
    print(f"{way}, vs the image alone (median of {args.rounds} paired rounds): {line}")
    return line


def bench_targets(args) -> str:
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass
    if args.paired:
        if getattr(args, "write_docs", False):
            raise SystemExit("--paired compares two checkouts: its line is not for docs/")
        return bench_paired(args)
    from augment.loading.rng import KeyedRng
    from augment.ops.targets import warp_mask
    from augment.ops.warp_plan import warp

    data = tiles(args)
    pipeline = ours(args.crop)
    keyed = KeyedRng(0)  # sample i draws the same parameters for every contender of ours
    image_mask = [{"image": s["image"], "mask": s["mask"]} for s in data]
    image_boxes = [{"image": s["image"], "boxes": s["boxes"], "labels": s["labels"]} for s in data]
    full = f"image + mask + {N_BOXES} boxes"
    no_boxes = np.zeros((0, 4), dtype=np.float32)
    kinds = {
        "image alone": [s["image"] for s in data],
        "image + 0 boxes": [{"image": s["image"], "boxes": no_boxes} for s in data],
        "image + integer mask": image_mask,
        f"image + {N_BOXES} boxes": image_boxes,
        full: data,
    }
    contenders = {}
    for name, items in kinds.items():
        contenders[name] = lambda items=items: [
            pipeline(s, keyed.at(0, i)) for i, s in enumerate(items)
        ]
        contenders[f"{name}, batch"] = batch_of(items, pipeline)
    warps = [pipeline.plan(s["image"].shape[:2], keyed.at(0, i)).warp for i, s in enumerate(data)]
    mask_warp, image_warp = "the mask's warp alone", "the image's warp alone"
    contenders[mask_warp] = lambda: [
        warp_mask(s["mask"], w, pipeline.kernel, pipeline.antialias) for s, w in zip(data, warps)
    ]
    contenders[image_warp] = lambda: [
        warp(s["image"], w, 1, pipeline.kernel, pipeline.antialias) for s, w in zip(data, warps)
    ]
    reference = None
    try:
        alb = theirs(args.crop)
        reference = f"albumentations, image + mask + {N_BOXES} boxes"
        contenders[reference] = lambda: [alb(**s) for s in data]
    except ImportError:
        print("albumentations is not installed: no reference", file=sys.stderr)
    times = {name: [] for name in contenders}
    names = list(contenders)
    for fn in contenders.values():  # warm-up
        fn()
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else reversed(names):
            start = time.thread_time()
            contenders[name]()
            times[name].append(time.thread_time() - start)

    def paired(name, base):  # the median of the rounds' ratios
        return statistics.median(a / b for a, b in zip(times[name], times[base]))

    per = {name: statistics.median(t) / len(data) * 1e3 for name, t in times.items()}
    lines = [
        "| per sample | one call: ms | vs the image alone | vs albumentations | in a batch: ms "
        "| vs the image alone | vs albumentations |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in kinds:
        row = [name]
        for own, base in ((name, "image alone"), (f"{name}, batch", "image alone, batch")):
            row += [f"{per[own]:.3f}", f"{paired(own, base):.2f}x"]
            row.append(f"{paired(own, reference):.2f}x" if reference and name == full else "")
        lines.append("| " + " | ".join(row) + " |")
    mask_share = paired(mask_warp, "image alone")
    for name in (image_warp, mask_warp):
        lines.append(
            f"| {name} | {per[name]:.3f} | {paired(name, 'image alone'):.2f}x |  |  |  |  |"
        )
    if reference:
        lines.append(f"| {reference} | {per[reference]:.3f} |  |  |  |  |  |")
    lines.append("")
    for way, tail in (("one call", ""), ("in a batch", ", batch")):
        mask = paired(f"image + integer mask{tail}", f"image alone{tail}") - 1
        boxes = paired(f"image + {N_BOXES} boxes{tail}", f"image alone{tail}") - 1
        line = (
            f"- {way}: an integer mask adds {mask:+.0%} to the image's cost (target <= +30%); "
            f"{N_BOXES} boxes add {boxes:+.1%} (target < +5%)"
        )
        if reference:
            line += (
                f"; image + mask + boxes is {paired(full + tail, reference):.2f}x albumentations' "
                "time (target <= 0.5x)"
            )
        lines.append(line)
    fixed = [paired(f"image + 0 boxes{tail}", f"image alone{tail}") - 1 for tail in ("", ", batch")]
    lines.append(
        f"- what bounds them: a sample with targets but nothing to move adds {fixed[0]:+.1%} (one "
        f"call) and {fixed[1]:+.1%} (in a batch); the mask's warp alone costs {mask_share:.0%} of "
        f"the image's whole call and {paired(mask_warp, image_warp):.0%} of the image's warp alone"
    )
    table = "\n".join(lines)
    print(
        f"RandomResizedCrop({args.crop}) + flip + rotation on {len(data)} tiles "
        f"{args.size}x{args.size}, one "
        f"thread's CPU time, kernel {pipeline.kernel}, median of {args.rounds} alternated "
        f"rounds; 'in a batch': the {len(data)} samples made into one batch as a Loader's "
        f"worker makes it:\n{table}"
    )
    return table
