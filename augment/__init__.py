"""augment: image augmentation for PyTorch training whose CPU cost can be seen and compared."""

from augment import _moved
from augment.about import info
from augment.ops import adapters, functional, geometry, kernels
from augment.ops.sample_targets import BadTargetError
from augment.ops.transforms import (
    CenterCrop,
    Compose,
    GeometricTransform,
    RandomCrop,
    RandomFlip,
    RandomResizedCrop,
    RandomRotate,
    RandomRotate90,
    RandomRowJitter,
    RandomScale,
    Resize,
    Transform,
    kaggle_pipeline,
)
from augment.sources.data import BadImageError, ImageFolder
from augment.sources.remote import HTTPImages
from augment.sources.samples import StagedDataset
from augment.trace import Tracer

_moved.install()  # old module paths (augment.loader, ...) still import, with a warning

__version__ = "0.1.0"

__all__ = [
    "Loader",
    "Tracer",
    "ImageFolder",
    "HTTPImages",
    "BadImageError",
    "BadTargetError",
    "StagedDataset",
    "adapters",
    "functional",
    "geometry",
    "kernels",
    "backends",
    "Compose",
    "Transform",
    "GeometricTransform",
    "RandomFlip",
    "RandomRotate90",
    "RandomRotate",
    "RandomRowJitter",
    "RandomScale",
    "RandomCrop",
    "CenterCrop",
    "RandomResizedCrop",
    "Resize",
    "kaggle_pipeline",
    "info",
]


def __getattr__(name: str):
    # The Loader and the backends import torch (seconds); worker processes that only unpickle
    # a dataset and a transform should not pay for it.
    if name == "Loader":
        from augment.loading.loader import Loader

        return Loader
    if name == "backends":
        import augment.loading.backends as backends

        return backends
    raise AttributeError(f"module 'augment' has no attribute {name!r}")
