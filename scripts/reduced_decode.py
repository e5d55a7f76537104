"""How far reduced decoding is from full decoding: PSNR and mean |difference|, no timings.

    python scripts/reduced_decode.py [--samples 24]

For each case, every sample is transformed twice with the same draws: from the JPEG decoded
in full, and from the JPEG decoded at 1/2, 1/4 or 1/8 where the planned warp shrinks the
image 2x or more (what ``ImageFolder`` does by default). Only the samples decoded smaller
count. For scale, the last columns compare the full-decode output without antialiasing to
the one with it: what the choice of filter alone changes.
"""

from __future__ import annotations

import argparse
import io
import math
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent

import augment  # noqa: E402
from augment.loading.rng import sample_rng  # noqa: E402
from augment.ops.warp_plan import SamplePlan  # noqa: E402
from augment.sources import data  # noqa: E402
from augment.sources.photographs import photo  # noqa: E402


def jpeg(img: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def real_photographs() -> list[tuple[str, bytes]]:
    """Photographs shipped with installed packages (matplotlib's sample data), if any."""
    try:
        from matplotlib import cbook

        path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
        return [("grace_hopper.jpg (matplotlib)", Path(path).read_bytes())]
    except Exception:  # noqa: BLE001 - matplotlib missing or without its sample data
        return []


def measure(blobs: list[bytes], transform, samples: int) -> dict:
    plain = augment.Compose(transform.transforms, antialias=False)
    scores, diffs, filter_scores, reduced = [], [], [], 0
    for s in range(samples):
        blob = blobs[s % len(blobs)]
        full_pixels = data.decode_image(blob)
        full = transform(full_pixels, sample_rng(0, 0, s))
        plan = SamplePlan(transform, sample_rng(0, 0, s))
        small = plan.finish(data.decode_image(blob, reduce=plan))
        if plan.plan.reduction == 1:
            continue
        reduced += 1
        scores.append(psnr(small, full))
        diffs.append(float(np.abs(small.astype(int) - full.astype(int)).mean()))
        filter_scores.append(psnr(plain(full_pixels, sample_rng(0, 0, s)), full))
    return {
        "reduced": reduced / samples,
        "psnr": (float(np.median(scores)), float(min(scores))) if scores else None,
        "mad": float(np.mean(diffs)) if diffs else None,
        "filter": float(np.median(filter_scores)) if filter_scores else None,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=24, help="draws per case (default 24)")
    a = p.parse_args(argv)
    rng = np.random.default_rng(0)
    photos = [jpeg(photo(rng, 375, 500)) for _ in range(6)]
    large = [jpeg(photo(rng, 1200, 1600)) for _ in range(3)]
    rrc = augment.RandomResizedCrop
    cases = [
        ("photo-like 500x375", "RandomResizedCrop(224)", photos, rrc(224)),
        ("photo-like 500x375", "RandomResizedCrop(112)", photos, rrc(112)),
        ("photo-like 500x375", "RandomResizedCrop(64)", photos, rrc(64)),
        ("photo-like 1600x1200", "RandomResizedCrop(224)", large, rrc(224)),
        ("photo-like 1600x1200", "Resize(256)", large, augment.Resize(256)),
    ]
    for name, blob in real_photographs():
        cases.append((name, "RandomResizedCrop(112)", [blob], rrc(112)))
        cases.append((name, "Resize(128)", [blob], augment.Resize(128)))
    lines = [
        "| images | transform (+ flip) | decoded smaller | PSNR reduced vs full, median (min) "
        "| mean abs. difference | PSNR antialias off vs on |",
        "|---|---|---:|---|---:|---:|",
    ]
    for images, what, blobs, t in cases:
        r = measure(blobs, augment.Compose([t, augment.RandomFlip()]), a.samples)
        if r["psnr"] is None:
            lines.append(f"| {images} | {what} | {r['reduced']:.0%} | - | - | - |")
            continue
        median, low = r["psnr"]
        lines.append(
            f"| {images} | {what} | {r['reduced']:.0%} | {median:.1f} dB ({low:.1f}) "
            f"| {r['mad']:.2f} levels | {r['filter']:.1f} dB |"
        )
    print(
        f"{a.samples} draws per case, JPEG quality 90, uint8 output; 'decoded smaller' is the "
        "share of draws whose warp shrinks both axes 2x or more:\n" + "\n".join(lines)
    )


if __name__ == "__main__":
    main()
