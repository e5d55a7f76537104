#!/usr/bin/env python
"""A plain PyTorch training script: a Dataset of JPEG tiles, albumentations, a DataLoader.

    python scripts/dataloader_example.py                        # as it is
    python -m augment.trace scripts/dataloader_example.py       # traced, unchanged
    python scripts/dataloader_example.py --augment              # the same on augment.Loader

--augment takes the branch marked "augment:": the three lines a user would change.
"""

import argparse
import csv
import time
from pathlib import Path

import albumentations as A
import cv2
import torch
from albumentations.pytorch import ToTensorV2

cv2.setNumThreads(1)  # one OpenCV thread per DataLoader worker
torch.set_num_threads(1)
DATA = Path(__file__).resolve().parent.parent / "data" / "sample"


class Tiles(torch.utils.data.Dataset):
    """The JPEG tiles of a Kaggle-style folder, multi-hot labels from its labels.csv."""

    def __init__(self, folder=DATA, transform=None):
        rows = list(csv.DictReader(open(Path(folder) / "labels.csv")))
        self.tags = sorted({tag for row in rows for tag in row["tags"].split()})
        self.paths = [Path(folder) / f"{row['image_name']}.jpg" for row in rows]
        self.labels = [[t in row["tags"].split() for t in self.tags] for row in rows]
        self.transform = transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        img = cv2.cvtColor(cv2.imread(str(self.paths[i])), cv2.COLOR_BGR2RGB)
        if self.transform is not None:
            img = self.transform(image=img)["image"]
        return img, torch.tensor(self.labels[i], dtype=torch.float32)


pipeline = A.Compose([
    A.HorizontalFlip(), A.VerticalFlip(), A.RandomRotate90(),
    A.Rotate(limit=30, border_mode=cv2.BORDER_REFLECT_101, p=1),
    A.RandomScale(scale_limit=0.1, p=1), A.RandomCrop(224, 224), ToTensorV2(),
])  # fmt: skip


def train_step(images, labels):
    """Stand-in for the model's forward, loss and backward on the GPU: 20 ms."""
    x = images.float().div_(255)  # noqa: F841 - what the model would take
    time.sleep(0.02)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--augment", action="store_true", help="use augment.Loader")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    if not args.augment:
        loader = torch.utils.data.DataLoader(
            Tiles(DATA, pipeline), batch_size=32, shuffle=True, num_workers=2
        )
    else:  # augment: the same Dataset, without its transform, on augment.Loader
        import augment

        loader = augment.Loader(Tiles(DATA), augment.kaggle_pipeline(crop=224), batch_size=32,
                                backend="thread", workers=2)  # fmt: skip
    start, seen = time.perf_counter(), 0
    for epoch in range(args.epochs):
        for images, labels in loader:  # uint8 N x 3 x 224 x 224, multi-hot labels
            train_step(images, labels)
            seen += len(images)
        print(f"epoch {epoch}: {seen / (time.perf_counter() - start):.0f} images/s")
