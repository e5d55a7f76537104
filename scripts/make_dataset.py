"""Write a small synthetic dataset: Kaggle-like satellite tiles, or ImageNet-like photographs.

``--preset kaggle`` (the default), shaped like Kaggle's "Understanding the Amazon from Space":
DIR/train_<i>.jpg (RGB, S x S) and DIR/labels.csv (image_name,tags). The generator is
augment.sources.sample_data.write_dataset; data/sample is `--out data/sample --n 128 --seed 0`.

``--preset imagenet-like``: photograph-sized JPEGs, DIR/class_<k>/img_<i>.jpg (labels by
folder), mostly 500 x 375 and other sizes around it (portrait, square, 640 x 480), quality 90,
with the 1/f^2 spectrum of natural images, sharp-edged objects and sensor noise
(augment.sources.photographs.write_photos). For RandomResizedCrop(224) and
``scripts/benchmark.py realistic``.

Same arguments give byte-identical files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from augment.sources.photographs import write_photos
from augment.sources.sample_data import write_dataset

PRESETS = ("kaggle", "imagenet-like")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument(
        "--preset",
        choices=PRESETS,
        default="kaggle",
        help="kaggle: 256x256 satellite tiles + labels.csv (default); "
        "imagenet-like: photographs around 500x375 in class folders",
    )
    p.add_argument("--n", type=int, default=64, help="number of images (>= 1)")
    p.add_argument("--size", type=int, default=256, help="tile side in pixels (>= 8; kaggle)")
    p.add_argument("--classes", type=int, default=10, help="class folders (>= 1; imagenet-like)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality, 1..95")
    a = p.parse_args(argv)
    if a.n < 1:
        p.error(f"--n must be >= 1, got {a.n}")
    if a.size < 8:
        p.error(f"--size must be >= 8, got {a.size}")
    if a.classes < 1:
        p.error(f"--classes must be >= 1, got {a.classes}")
    if not 1 <= a.quality <= 95:
        p.error(f"--quality must be in 1..95, got {a.quality}")
    return a


def main(argv=None) -> None:
    a = parse_args(argv)
    if a.preset == "imagenet-like":
        total = write_photos(a.out, n=a.n, seed=a.seed, quality=a.quality, classes=a.classes)
        what = f"{a.n} photographs in {min(a.classes, a.n)} class folders"
    else:
        total = write_dataset(a.out, n=a.n, size=a.size, seed=a.seed, quality=a.quality)
        what = f"{a.n} images + labels.csv"
    print(f"wrote {what} to {a.out}: {total} bytes ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
