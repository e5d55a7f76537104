"""Resampling kernels: one job, sample an image through an inverse affine map.

Every kernel has the signature
``warp(img, inverse, out_shape, interpolation, border, fill, out=None)`` with ``img`` a
C-contiguous ``(H, W, C)`` uint8 or float32 array and ``inverse`` the 2x3 map from output to
input pixel coordinates (pixel centres on integers); it returns a new ``(H', W', C)`` array,
or writes into ``out`` (C-contiguous, that shape, ``img``'s dtype: a slot of a batch buffer)
and returns it. The numpy kernel is the
reference and is always there; the others are used only where their package is installed.

The default is fixed by a preference order, not timed at run time: a timing race could pick
different kernels in different worker processes, and kernels differ by up to one grey level,
which would break bit-identical batches across backends. The order comes from
``scripts/benchmark.py ops`` (docs/benchmarks.md); ``AUGMENT_KERNEL`` overrides it.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable

import numpy as np

WarpFn = Callable[..., np.ndarray]

PREFERENCE = ("opencv", "numpy", "pillow")
_MODULES = {
    "numpy": "augment.ops.kernels.numpy_kernel",
    "pillow": "augment.ops.kernels.pillow_kernel",
    "opencv": "augment.ops.kernels.opencv_kernel",
}
_loaded: dict[str, WarpFn | None] = {}


def _load(name: str) -> WarpFn | None:
    if name not in _loaded:
        try:
            _loaded[name] = importlib.import_module(_MODULES[name]).warp
        except ImportError:
            _loaded[name] = None
    return _loaded[name]


def module(name: str):
    """The module of kernel ``name``, loaded (for a kernel's own extra paths)."""
    found = _modules.get(name)
    if found is None:
        get(name)  # a ValueError where it is unknown or not installed
        found = _modules[name] = importlib.import_module(_MODULES[name])
    return found


_modules: dict = {}


def available() -> list[str]:
    """Names of the kernels whose packages are installed, fastest first."""
    return [name for name in PREFERENCE if _load(name) is not None]


def default_name() -> str:
    """The kernel used when none is named: ``AUGMENT_KERNEL`` or the first available."""
    wanted = os.environ.get("AUGMENT_KERNEL")
    if wanted:
        get(wanted)  # validates
        return wanted
    return available()[0]


def get(name: str | None = None) -> WarpFn:
    """The warp function of kernel ``name`` (None: the default)."""
    if name is None:
        name = default_name()
    if name not in _MODULES:
        raise ValueError(f"unknown kernel {name!r}; accepted: {', '.join(PREFERENCE)}")
    fn = _load(name)
    if fn is None:
        hint = " (pip install 'augment[fast]')" if name == "opencv" else ""
        raise ValueError(f"kernel {name!r} is not available: its package is not installed{hint}")
    return fn
