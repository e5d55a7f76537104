"""Partial JPEG decoding: only the rectangle a sample's warp reads, through TurboJPEG 3.

libjpeg-turbo decodes a region of a JPEG (``tj3SetCroppingRegion``: ``jpeg_skip_scanlines``
above it, ``jpeg_crop_scanline`` to its MCU columns, and it stops below it), combined with
the DCT scaling (1/2, 1/4, 1/8) that reduced decoding already picks. The rows above still
pass through the entropy decoder; everything else outside the region (inverse DCT, chroma
upsampling, colour conversion, and the entropy decoding of the rows below) is skipped.

At the region's edges libjpeg-turbo's fancy (smooth) chroma upsampling sees no neighbour
and differs from a full decode, so one MCU of margin is decoded around the rectangle
(where the image goes on) and cut off again: the pixels returned are exactly those of a
full decode at the same scale (tested against simplejpeg on 4:4:4, 4:2:2, 4:2:0, 4:4:0,
progressive and restart-marker files).

The library is loaded with ctypes, from the first of: ``AUGMENT_TURBOJPEG`` (a path), the
``libturbojpeg`` that the ``turbojpeg`` wheel bundles (``augment[fast]`` installs it), the
system's ``libturbojpeg``; one that lacks the TurboJPEG 3 functions is passed over. Without
any, ``decode`` returns None and the caller decodes the whole image (``library()`` says
which ran, ``augment.info()`` too).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import importlib.util
import logging
import os
import threading

import numpy as np

log = logging.getLogger("augment")

# turbojpeg.h (TurboJPEG 3): the enum values used here
_INIT_DECOMPRESS = 1
_PARAM_SUBSAMP, _PARAM_WIDTH, _PARAM_HEIGHT = 4, 5, 6
_PF_RGB = 0
# MCU size (width, height) in pixels for each TJSAMP (444, 422, 420, gray, 440, 411, 441)
_MCU = {0: (8, 8), 1: (16, 8), 2: (16, 16), 3: (8, 8), 4: (8, 16), 5: (32, 8), 6: (8, 32)}
_GRAY = 3
Box = tuple[int, int, int, int]  # (y0, y1, x0, x1), end-exclusive


class _Region(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int), ("w", ctypes.c_int), ("h", ctypes.c_int)]


class _Scale(ctypes.Structure):
    _fields_ = [("num", ctypes.c_int), ("denom", ctypes.c_int)]


_NEEDED = (
    "tj3Init",
    "tj3Destroy",
    "tj3Get",
    "tj3DecompressHeader",
    "tj3SetScalingFactor",
    "tj3SetCroppingRegion",
    "tj3Decompress8",
    "tj3GetErrorStr",
)


def _candidates() -> list[str]:
    found = []
    if os.environ.get("AUGMENT_TURBOJPEG"):
        found.append(os.environ["AUGMENT_TURBOJPEG"])
    # the turbojpeg wheel's library, beside its module (which is never imported)
    spec = importlib.util.find_spec("turbojpeg")
    if spec is not None and spec.origin:
        site = os.path.dirname(spec.origin)
        found += sorted(glob.glob(os.path.join(site, "turbojpeg.libs", "libturbojpeg*")))
    system = ctypes.util.find_library("turbojpeg")
    if system:
        found.append(system)
    return found


def _load():
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            log.debug("cannot load %s: %s", path, exc)
            continue
        if all(hasattr(lib, name) for name in _NEEDED):
            return _bind(lib), os.path.realpath(path)
        log.debug("%s lacks the TurboJPEG 3 functions", path)
    return None, None


def _bind(lib):
    vp, c_int, c_size = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
    lib.tj3Init.restype, lib.tj3Init.argtypes = vp, [c_int]
    lib.tj3Destroy.restype, lib.tj3Destroy.argtypes = None, [vp]
    lib.tj3Get.restype, lib.tj3Get.argtypes = c_int, [vp, c_int]
    lib.tj3DecompressHeader.restype = c_int
    lib.tj3DecompressHeader.argtypes = [vp, ctypes.c_char_p, c_size]
    lib.tj3SetScalingFactor.restype, lib.tj3SetScalingFactor.argtypes = c_int, [vp, _Scale]
    lib.tj3SetCroppingRegion.restype, lib.tj3SetCroppingRegion.argtypes = c_int, [vp, _Region]
    lib.tj3Decompress8.restype = c_int
    lib.tj3Decompress8.argtypes = [vp, ctypes.c_char_p, c_size, vp, c_int, c_int]
    lib.tj3GetErrorStr.restype, lib.tj3GetErrorStr.argtypes = ctypes.c_char_p, [vp]
    return lib


_lib, _path = _load()
_local = threading.local()


class _Handle:
    """One decompressor per thread (a TurboJPEG handle is not thread-safe)."""

    def __init__(self):
        self.ptr = _lib.tj3Init(_INIT_DECOMPRESS)
        if not self.ptr:
            raise MemoryError("tj3Init failed")

    def __del__(self):
        if self.ptr and _lib is not None:
            _lib.tj3Destroy(self.ptr)
            self.ptr = None


def _handle() -> int:
    h = getattr(_local, "handle", None)
    if h is None:
        h = _local.handle = _Handle()
    return h.ptr


def available() -> bool:
    """Whether partial decoding can run (a TurboJPEG 3 library was found)."""
    return _lib is not None


def library() -> str | None:
    """The path of the TurboJPEG library partial decoding uses, or None without one."""
    return _path


def scaled_mcu(subsampling: int, k: int) -> tuple[int, int]:
    """The MCU's (width, height) in pixels of the image decoded at scale 1/k."""
    w, h = _MCU[subsampling]
    return -(-w // k), -(-h // k)


def decode(data: bytes, k: int, box: Box) -> np.ndarray | None:
    """Pixels ``box`` (``(y0, y1, x0, x1)`` in the image decoded at scale 1/k) of an RGB
    JPEG, exactly as a full decode at that scale gives them, or None where partial decoding
    cannot be had (no library, a file TurboJPEG refuses or warns about)."""
    if _lib is None:
        return None
    handle = _handle()
    size = len(data)
    if _lib.tj3DecompressHeader(handle, data, size) != 0:
        return None
    subsampling = _lib.tj3Get(handle, _PARAM_SUBSAMP)
    if subsampling not in _MCU or subsampling == _GRAY:
        return None
    width, height = _lib.tj3Get(handle, _PARAM_WIDTH), _lib.tj3Get(handle, _PARAM_HEIGHT)
    wk, hk = -(-width // k), -(-height // k)
    y0, y1, x0, x1 = box
    if not (0 <= y0 < y1 <= hk and 0 <= x0 < x1 <= wk):
        raise ValueError(f"box {box} is outside the {hk}x{wk} image decoded at 1/{k}")
    mw, mh = scaled_mcu(subsampling, k)
    # one MCU of margin where the image goes on, x aligned on an MCU as TurboJPEG requires
    cx0 = max(x0 - mw, 0) // mw * mw
    cx1 = min(x1 + mw, wk)
    cy0 = max(y0 - mh, 0) // mh * mh
    cy1 = min(y1 + mh, hk)
    if _lib.tj3SetScalingFactor(handle, _Scale(1, k)) != 0:
        return None
    if _lib.tj3SetCroppingRegion(handle, _Region(cx0, cy0, cx1 - cx0, cy1 - cy0)) != 0:
        return None
    out = np.empty((cy1 - cy0, cx1 - cx0, 3), np.uint8)
    if _lib.tj3Decompress8(handle, data, size, out.ctypes.data, 0, _PF_RGB) != 0:
        log.debug("partial decode refused: %s", _lib.tj3GetErrorStr(handle))
        return None
    return out[y0 - cy0 : y1 - cy0, x0 - cx0 : x1 - cx0]
