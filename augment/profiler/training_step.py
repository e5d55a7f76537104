"""What the profiler's training loop does with each batch, standing for the model: a sleep
of the step's milliseconds (GPU time), or a small CNN trained on the CPU (a classifier, or a
small fully convolutional net for ``task = "segment"``)."""

from __future__ import annotations

import time


def small_cnn(classes: int):
    """A small CNN for a real training step on the CPU."""
    from torch import nn

    def block(cin, cout):
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)
        )

    return nn.Sequential(
        nn.AvgPool2d(4),
        block(3, 16),
        block(16, 32),
        block(32, 64),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, classes),
    )


def small_fcn(classes: int):
    """A small fully convolutional net: a class score per pixel at a quarter of the size."""
    from torch import nn

    return nn.Sequential(
        nn.AvgPool2d(4),
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, classes, 1),
    )


MAX_SEGMENT_CLASSES = 256  # a net's outputs per pixel, whatever the masks' largest value


def images_and_targets(batch):
    """A loader's batch as (images, targets): a segmentation dataset's dict gives its masks,
    a classification batch (images, labels) its labels."""
    if isinstance(batch, dict):
        return batch["image"], batch["mask"]
    return batch[0], batch[1]


class TrainingStep:
    """What the loop does with a batch: sleep (GPU time) or a small CNN step on the CPU
    (``task = "segment"``: per-pixel cross-entropy over at most ``MAX_SEGMENT_CLASSES``
    classes, mask values past them ignored, such as a 255 fill where a rotation shows no
    image, or a binary mask stored as 0 and 65535)."""

    def __init__(self, step: float | str, classes: int, task: str = "classify"):
        if task == "segment":
            classes = min(classes, MAX_SEGMENT_CLASSES)
        self.step, self.task, self.classes = step, task, classes
        if step == "model":
            import torch

            torch.set_num_threads(1)
            segment = task == "segment"
            self.model = small_fcn(classes) if segment else small_cnn(classes)
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01)
            self.loss = torch.nn.CrossEntropyLoss() if segment else torch.nn.BCEWithLogitsLoss()

    def __call__(self, images, labels) -> None:
        if self.step == "model":
            from torch.nn.functional import interpolate, one_hot

            x = images.float().div_(255)
            if self.task == "segment":
                target = labels.long()
                target[(target < 0) | (target >= self.classes)] = self.loss.ignore_index
                scores = interpolate(self.model(x), size=target.shape[-2:], mode="bilinear")
                loss = self.loss(scores, target)
            else:
                classes = self.model[-1].out_features
                target = labels.float() if labels.ndim == 2 else one_hot(labels, classes).float()
                loss = self.loss(self.model(x), target)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        elif self.step:
            time.sleep(float(self.step) / 1000)
