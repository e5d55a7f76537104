#!/usr/bin/env python
"""Train a small CNN on data/sample through augment's Loader (multi-label, BCE loss).

    python scripts/train_example.py --backend process --workers 2 --steps 300

Three lines differ from a plain PyTorch loop; they are marked "augment:" below.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

import augment
from augment.profiler.training_step import small_cnn

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", default="thread", choices=augment.backends.names())
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--data", default=str(ROOT / "data" / "sample"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)

    # augment: a dataset of files and labels, and the Loader in place of a DataLoader.
    dataset = augment.ImageFolder(args.data, Path(args.data) / "labels.csv")
    loader = augment.Loader(
        dataset,
        augment.kaggle_pipeline(crop=224),
        batch_size=args.batch_size,
        backend=args.backend,
        workers=args.workers,
        seed=args.seed,
    )

    model = small_cnn(len(dataset.classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    step, start, window = 0, time.perf_counter(), []
    with loader:
        while step < args.steps:
            for images, labels in loader:
                # augment: batches are uint8 N x C x H x W; scale to floats on your side.
                x = images.float().div_(255)
                loss = loss_fn(model(x), labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                window.append(loss.item())
                step += 1
                if step % 10 == 0 or step == args.steps:
                    loss_avg = sum(window) / len(window)
                    rate = step * args.batch_size / (time.perf_counter() - start)
                    print(
                        f"step {step:4d}  epoch {loader.epoch - 1}  loss {loss_avg:.4f}  "
                        f"{rate:.0f} img/s",
                        flush=True,
                    )
                    window.clear()
                if step >= args.steps:
                    break


if __name__ == "__main__":
    main()
