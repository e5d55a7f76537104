"""Write a small synthetic dataset shaped like Kaggle's "Understanding the Amazon from Space".

Output: DIR/train_<i>.jpg (RGB, S x S) and DIR/labels.csv (image_name,tags). Same arguments
give byte-identical files. The generator is augment.sample_data.write_dataset; data/sample is
`--out data/sample --n 128 --seed 0`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from augment.sample_data import write_dataset


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--n", type=int, default=64, help="number of images (>= 1)")
    p.add_argument("--size", type=int, default=256, help="tile side in pixels (>= 8)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality, 1..95")
    a = p.parse_args(argv)
    if a.n < 1:
        p.error(f"--n must be >= 1, got {a.n}")
    if a.size < 8:
        p.error(f"--size must be >= 8, got {a.size}")
    if not 1 <= a.quality <= 95:
        p.error(f"--quality must be in 1..95, got {a.quality}")
    return a


def main(argv=None) -> None:
    a = parse_args(argv)
    total = write_dataset(a.out, n=a.n, size=a.size, seed=a.seed, quality=a.quality)
    print(f"wrote {a.n} images + labels.csv to {a.out}: {total} bytes ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
