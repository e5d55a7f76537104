"""augment: image augmentation for PyTorch training whose CPU cost can be seen and compared."""

from augment import functional, geometry, kernels
from augment.data import BadImageError, ImageFolder
from augment.loader import Loader
from augment.trace import Tracer
from augment.transforms import (CenterCrop, Compose, GeometricTransform, RandomCrop, RandomFlip,
                                RandomRotate, RandomRotate90, RandomScale, Transform,
                                kaggle_pipeline)

__version__ = "0.1.0"

__all__ = ["Loader", "Tracer", "ImageFolder", "BadImageError", "functional", "geometry", "kernels", "Compose", "Transform", "GeometricTransform",
           "RandomFlip", "RandomRotate90", "RandomRotate", "RandomScale", "RandomCrop",
           "CenterCrop", "kaggle_pipeline"]
