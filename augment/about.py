"""``augment.info()``: what this installation runs with (decoders, kernel, versions)."""

from __future__ import annotations

import importlib.metadata


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def info() -> dict[str, str]:
    """Which JPEG decoder runs for a plain JPEG, whether partial decoding runs (only the
    region a sample's warp reads, ``augment.sources.jpeg_region``) and with which library, the
    default resampling kernel, and the versions that matter. The values are strings, for a
    log line or a bug report."""
    import augment
    from augment.ops import kernels
    from augment.sources import data, jpeg_region

    if data._simplejpeg is not None:
        decoder = f"simplejpeg {_version('simplejpeg')}"
    elif data._cv2 is not None:
        decoder = f"OpenCV {data._cv2.__version__} imdecode"
    else:
        decoder = f"Pillow {_version('pillow')}"
    path = jpeg_region.library()
    partial = (
        f"TurboJPEG 3 region decode ({path})"
        if path
        else "off: no TurboJPEG 3 library (pip install 'augment[fast]'); whole images decoded"
    )
    return {
        "augment": augment.__version__,
        "jpeg_decoder": decoder,
        "partial_decode": partial,
        "kernel": kernels.default_name(),
        "numpy": _version("numpy") or "?",
        "pillow": _version("pillow") or "?",
        "opencv": _version("opencv-python-headless") or _version("opencv-python") or "none",
    }
