"""What the profiler's training loop does with each batch, standing for the model: a sleep
of the step's milliseconds (GPU time), or a small CNN trained on the CPU."""

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


class TrainingStep:
    """What the loop does with a batch: sleep (GPU time) or a small CNN step on the CPU."""

    def __init__(self, step: float | str, classes: int):
        self.step = step
        if step == "model":
            import torch

            torch.set_num_threads(1)
            self.model = small_cnn(classes)
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01)
            self.loss = torch.nn.BCEWithLogitsLoss()

    def __call__(self, images, labels) -> None:
        if self.step == "model":
            from torch.nn.functional import one_hot

            x = images.float().div_(255)
            classes = self.model[-1].out_features
            target = labels.float() if labels.ndim == 2 else one_hot(labels, classes).float()
            loss = self.loss(self.model(x), target)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        elif self.step:
            time.sleep(float(self.step) / 1000)
