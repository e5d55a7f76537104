"""Experiments for the profiler: what to load, how to augment, where to run it, and a
training step that stands for the GPU. Built from TOML tables or command-line flags."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import tomllib

from augment import backends, transforms
from augment.data import ImageFolder

OPS = {
    name: getattr(transforms, name)
    for name in transforms.__all__
    if isinstance(getattr(transforms, name), type)
    and issubclass(getattr(transforms, name), transforms.Transform)
    and name not in ("Transform", "GeometricTransform", "Compose")
}

KAGGLE_TRANSFORM = [
    {"op": "RandomFlip", "horizontal": 0.5, "vertical": 0.5},
    {"op": "RandomRotate90", "p": 0.5},
    {"op": "RandomRotate", "degrees": 30},
    {"op": "RandomScale", "low": 0.9, "high": 1.1},
    {"op": "RandomCrop", "size": 224},
]


@dataclass
class Experiment:
    """One loader run: ``batches`` batches (across epochs) with a ``step`` after each:
    milliseconds of sleep standing for GPU compute, or "model" for a small CNN on the CPU."""

    name: str
    data: str = "data/sample"
    labels: str | None = None
    transform: list[dict] = field(default_factory=lambda: [dict(t) for t in KAGGLE_TRANSFORM])
    batch_size: int = 32
    backend: str = "thread"
    workers: int = 2
    batches: int = 20
    step: float | str = 0.0
    seed: int = 0
    names_from: str | None = None  # for an http:// data URL: the folder whose files it serves

    def __post_init__(self):
        where = f"experiment {self.name!r}"
        if self.backend not in backends.names():
            raise ValueError(
                f"{where}: unknown backend {self.backend!r}; accepted: "
                f"{', '.join(backends.names())}"
            )
        for name in ("batch_size", "batches"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{where}: {name} must be an integer >= 1")
        if not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"{where}: workers must be an integer >= 0")
        if self.step != "model" and not (isinstance(self.step, (int, float)) and self.step >= 0):
            raise ValueError(
                f'{where}: step must be milliseconds >= 0 or "model", got {self.step!r}'
            )
        build_transform(self.transform, where)


def build_transform(spec: list[dict], where: str = "transform") -> transforms.Compose:
    """A Compose from ``[{"op": "RandomFlip", "horizontal": 0.5}, ...]``."""
    if not isinstance(spec, list):
        raise ValueError(f"{where}: transform must be a list of tables with an 'op' key")
    steps = []
    for i, item in enumerate(spec):
        item = dict(item)
        op = item.pop("op", None)
        if op not in OPS:
            raise ValueError(
                f"{where}: transform[{i}] op {op!r} is unknown; accepted: {', '.join(sorted(OPS))}"
            )
        try:
            steps.append(OPS[op](**item))
        except TypeError as exc:
            raise ValueError(f"{where}: transform[{i}] {op}: {exc}") from None
    return transforms.Compose(steps)


@dataclass
class Server:
    """A ``[server]`` table: serve ``root`` over HTTP on loopback while the experiments run;
    experiments with ``data = "server"`` fetch their images from it."""

    root: str
    latency_ms: float = 20.0
    jitter_ms: float = 0.0
    fail_rate: float = 0.0


@dataclass
class Config:
    experiments: list[Experiment]
    concurrent: bool = False
    server: Server | None = None


def load_config(path: str | Path) -> Config:
    """Experiments of a TOML file (``[[experiment]]`` tables), whether they run at once
    (top-level ``concurrent = true``) and an optional ``[server]``. Other top-level keys are
    defaults for every experiment."""
    path = Path(path)
    try:
        config = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read config {str(path)!r}: {exc}") from None
    tables = config.pop("experiment", None)
    concurrent = bool(config.pop("concurrent", False))
    server = config.pop("server", None)
    if server is not None:
        try:
            server = Server(**server)
        except TypeError as exc:
            raise ValueError(f"config {str(path)!r}: [server]: {exc}") from None
    if not tables:
        raise ValueError(f"config {str(path)!r} has no [[experiment]] table")
    known = {f.name for f in fields(Experiment)}
    unknown = set(config) - known
    if unknown:
        raise ValueError(f"config {str(path)!r}: unknown top-level keys {sorted(unknown)}")
    experiments = []
    for i, table in enumerate(tables):
        bad = set(table) - known
        if bad:
            raise ValueError(
                f"config {str(path)!r}: experiment {i} has unknown keys {sorted(bad)}; "
                f"accepted: {', '.join(sorted(known))}"
            )
        experiments.append(Experiment(**{**config, **table}))
    names = [e.name for e in experiments]
    if len(set(names)) != len(names):
        raise ValueError(f"config {str(path)!r}: experiment names must be unique, got {names}")
    if server is None and any(e.data == "server" for e in experiments):
        raise ValueError(f'config {str(path)!r}: data = "server" needs a [server] table')
    return Config(experiments, concurrent, server)


def make_dataset(experiment: Experiment):
    """ImageFolder for a folder, HTTPImages for an http(s) URL (names from ``names_from``)."""
    from augment.remote import HTTPImages

    labels = experiment.labels
    if experiment.data.startswith(("http://", "https://")):
        if not experiment.names_from:
            raise ValueError(
                f"experiment {experiment.name!r}: an http data URL needs names_from "
                "(the folder whose files the server serves)"
            )
        names = [p.name for p in ImageFolder(experiment.names_from, labels).paths]
        return HTTPImages(experiment.data, names, labels)
    if labels is None and (Path(experiment.data) / "labels.csv").exists():
        labels = str(Path(experiment.data) / "labels.csv")
    return ImageFolder(experiment.data, labels)


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


def run(experiment: Experiment, trace_dir: str | Path, progress=None) -> int:
    """Run ``experiment`` traced into ``trace_dir``; ``progress(images)`` after each batch.
    Returns the number of images delivered."""
    from augment.loader import Loader
    from augment.trace import Tracer

    dataset = make_dataset(experiment)
    tracer = Tracer(trace_dir, experiment=experiment.name)
    step = TrainingStep(experiment.step, len(dataset.classes))
    delivered = batches = 0
    loader = Loader(
        dataset,
        build_transform(experiment.transform),
        batch_size=experiment.batch_size,
        backend=experiment.backend,
        workers=experiment.workers,
        seed=experiment.seed,
        tracer=tracer,
    )
    try:
        while batches < experiment.batches:
            for images, labels_ in loader:
                step(images, labels_)
                delivered += len(images)
                batches += 1
                if progress is not None:
                    progress(len(images))
                if batches >= experiment.batches:
                    break
    finally:
        loader.close()
        tracer.close()
    return delivered
