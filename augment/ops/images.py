"""What an image may be (a numpy array, a PIL image, a torch tensor C x H x W) and how it
becomes the numpy array the ops take; the error an image that cannot be loaded raises."""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np

DTYPES = (np.dtype(np.uint8), np.dtype(np.float32))


class BadImageError(ValueError):
    """An image that cannot be read or decoded. ``source`` names the file or URL."""

    def __init__(self, source: str, cause: str):
        super().__init__(f"cannot load image {source}: {cause}")
        self.source, self.cause = source, cause

    def __reduce__(self):  # keep source and cause across process boundaries
        return BadImageError, (self.source, self.cause)


def as_image(img, describe: Callable[[], str]) -> np.ndarray:
    """``img`` (numpy, PIL or a torch tensor C x H x W) as a numpy array (H, W) or (H, W, C),
    uint8 or float32, without copying where it can. ``describe()`` names the image in an
    error (called only then: this runs for every sample)."""
    if not isinstance(img, np.ndarray):
        img = _from_pil(img, describe) if _is_pil(img) else _from_tensor(img, describe)
    if img.dtype in DTYPES and img.ndim in (2, 3) and img.size:
        return img
    where = describe()
    if img.ndim not in (2, 3) or img.size == 0:
        raise ValueError(
            f"{where}: an image must be (H, W) or (H, W, C), got shape {tuple(img.shape)}"
        )
    if img.dtype not in DTYPES:
        raise ValueError(
            f"{where}: image dtype {img.dtype} is not batched; accepted: uint8 or float32 "
            "(convert with .astype(np.float32))"
        )
    return img


def _is_pil(img) -> bool:
    image_module = sys.modules.get("PIL.Image")
    return image_module is not None and isinstance(img, image_module.Image)


def _from_pil(img, describe: Callable[[], str]) -> np.ndarray:
    if img.mode == "1":
        img = img.convert("L")
    elif img.mode in ("P", "PA"):
        img = img.convert("RGBA" if img.mode == "PA" or "transparency" in img.info else "RGB")
    if img.mode not in ("L", "LA", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "F"):
        raise ValueError(
            f"{describe()}: PIL image mode {img.mode!r} is not batched; convert it to 'RGB', 'L' "
            "or 'F' first"
        )
    return np.asarray(img)


def _from_tensor(img, describe: Callable[[], str]) -> np.ndarray:
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(img, torch.Tensor):
        raise ValueError(
            f"{describe()}: expected an image as a numpy array, a PIL image or a torch tensor "
            f"C x H x W; got {type(img).__name__}"
        )
    if img.device.type != "cpu":
        raise ValueError(f"{describe()}: the image tensor is on {img.device}; give a CPU tensor")
    array = img.detach().numpy()
    return array.transpose(1, 2, 0) if array.ndim == 3 else array
