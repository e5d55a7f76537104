"""augment: image augmentation for PyTorch training whose CPU cost can be seen and compared."""

from augment import adapters, functional, geometry, kernels
from augment.data import BadImageError, ImageFolder
from augment.remote import HTTPImages
from augment.sample_targets import BadTargetError
from augment.samples import StagedDataset
from augment.shard_writer import write_shards
from augment.shards import Shards
from augment.trace import Tracer
from augment.transforms import (
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

__version__ = "0.1.0"

__all__ = [
    "Loader",
    "Tracer",
    "ImageFolder",
    "HTTPImages",
    "Shards",
    "write_shards",
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
]


def __getattr__(name: str):
    # The Loader and the backends import torch (seconds); worker processes that only unpickle
    # a dataset and a transform should not pay for it.
    if name == "Loader":
        from augment.loader import Loader

        return Loader
    if name == "backends":
        import augment.backends as backends

        return backends
    raise AttributeError(f"module 'augment' has no attribute {name!r}")
