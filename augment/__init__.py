"""augment: image augmentation for PyTorch training whose CPU cost can be seen and compared."""

from augment import _moved
from augment.about import info
from augment.ops import adapters, functional, geometry, kernels
from augment.ops.compose import Compose, kaggle_pipeline, kaggle_steps
from augment.ops.images import BadImageError
from augment.ops.sample_targets import BadTargetError
from augment.ops.transforms import (
    CenterCrop,
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
)
from augment.sources.data import ImageFolder
from augment.sources.remote import HTTPImages
from augment.sources.samples import StagedDataset
from augment.sources.segmentation import SegmentationFolder
from augment.sources.shard_writer import write_shards
from augment.sources.shards import Shards

_moved.install()  # old module paths (augment.loading.loader, ...) still import, with a warning

__version__ = "0.1.0"

__all__ = [
    "Loader",
    "Tracer",
    "ImageFolder",
    "HTTPImages",
    "SegmentationFolder",
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
    "kaggle_steps",
    "info",
]


def __getattr__(name: str):
    # The Loader and the backends import torch (seconds), the Tracer psutil; worker processes
    # that only unpickle a dataset and a transform should not pay for them.
    if name == "Loader":
        from augment.loading.loader import Loader

        return Loader
    if name == "backends":
        import augment.loading.backends as backends

        return backends
    if name == "Tracer":  # the recorder (and psutil) stay out of worker processes
        from augment.trace.recorder import Tracer

        return Tracer
    raise AttributeError(f"module 'augment' has no attribute {name!r}")
