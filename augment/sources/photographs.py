"""Photograph-like JPEGs for benchmarks and tests: sky-to-ground scenes with the 1/f^2
power spectrum of natural images, at the sizes ImageNet's photographs have, in class
folders (``scripts/make_dataset.py --preset imagenet-like``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# (width, height) of the photographs, drawn with these weights: mostly 500 x 375 landscape,
# as ImageNet's typical 4:3 image, some portrait, square and other aspects around it.
PHOTO_SIZES = {
    (500, 375): 0.40, (375, 500): 0.15, (500, 333): 0.12, (333, 500): 0.05, (500, 500): 0.06,
    (400, 300): 0.06, (640, 480): 0.06, (500, 400): 0.05, (450, 338): 0.05,
}  # fmt: skip
# Scene colours (sky, ground) in 0..1 RGB: daylight, dusk, indoor, foliage, snow, sand.
PALETTES = [
    ((0.55, 0.70, 0.90), (0.35, 0.42, 0.25)),
    ((0.85, 0.55, 0.40), (0.25, 0.20, 0.22)),
    ((0.75, 0.70, 0.62), (0.45, 0.35, 0.28)),
    ((0.50, 0.62, 0.40), (0.18, 0.30, 0.12)),
    ((0.80, 0.84, 0.90), (0.88, 0.88, 0.90)),
    ((0.70, 0.80, 0.92), (0.78, 0.68, 0.50)),
]


def pink_noise(rng: np.random.Generator, h: int, w: int, beta: float = 2.0) -> np.ndarray:
    """Gaussian noise whose power spectrum falls as ``1 / f**beta`` (natural images: about 2),
    zero mean and unit deviation, float32 (h, w)."""
    spectrum = np.fft.rfft2(rng.standard_normal((h, w)).astype(np.float32))
    fy = np.fft.fftfreq(h).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(w).astype(np.float32)[None, :]
    f = np.maximum(np.sqrt(fx * fx + fy * fy), np.float32(1.0 / max(h, w)))
    spectrum *= f ** np.float32(-beta / 2)
    out = np.fft.irfft2(spectrum, s=(h, w)).astype(np.float32)
    out -= out.mean()
    out /= max(float(out.std()), 1e-6)
    return out


def photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A photograph-like RGB uint8 (h, w, 3) image: a sky-to-ground scene with 1/f^2 texture
    (the spectrum of natural images), and a few objects (ellipses, polygons) with sharp
    edges, their own colours, texture and shading, plus a little sensor noise. Decoding and
    resampling it cost about what a real photograph of its size costs."""
    sky, ground = (np.asarray(c, np.float32) for c in PALETTES[rng.integers(len(PALETTES))])
    horizon = rng.uniform(0.25, 0.7) * h
    rows = np.arange(h, dtype=np.float32)[:, None, None]
    blend = 1 / (1 + np.exp(-(rows - horizon) / (0.02 * h + 1)))
    img = (1 - blend) * sky + blend * ground + np.zeros((1, w, 1), np.float32)
    texture = pink_noise(rng, h, w)[..., None]
    tint = rng.normal(0, 0.04, 3).astype(np.float32)
    img *= 1 + (0.12 + 0.16 * blend) * texture
    img += 0.08 * texture * tint
    for _ in range(int(rng.integers(3, 9))):
        mask = Image.new("L", (w, h))
        draw = ImageDraw.Draw(mask)
        cx, cy = rng.uniform(0, w), rng.uniform(horizon * 0.6, h)
        rx, ry = rng.uniform(0.04, 0.3) * w, rng.uniform(0.04, 0.3) * h
        if rng.random() < 0.5:
            draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
        else:
            k = int(rng.integers(3, 8))
            angles = np.sort(rng.uniform(0, 2 * np.pi, k))
            radius = rng.uniform(0.5, 1.0, k)
            xs, ys = cx + rx * radius * np.cos(angles), cy + ry * radius * np.sin(angles)
            draw.polygon([(float(x), float(y)) for x, y in zip(xs, ys)], fill=255)
        box = mask.getbbox()
        if box is None:
            continue
        x0, y0, x1, y1 = box
        m = np.asarray(mask.crop(box), np.float32)[..., None] / 255
        colour = rng.uniform(0.05, 0.95, 3).astype(np.float32)
        shade = 1 + 0.3 * (rows[y0:y1] - cy) / max(ry, 1) * rng.uniform(-1, 1)
        shift = int(rng.integers(h))
        grain = 1 + rng.uniform(0.1, 0.4) * np.roll(texture, shift, axis=0)[y0:y1, x0:x1]
        part = img[y0:y1, x0:x1]
        part += m * (colour * np.clip(shade, 0.4, 1.6) * grain - part)
    img += rng.normal(0, 0.008, img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def write_photos(
    out: str | Path, n: int = 64, seed: int = 0, quality: int = 90, classes: int = 10
) -> int:
    """Write ``n`` photograph-like JPEGs (``PHOTO_SIZES``, JPEG ``quality``, 4:2:0) into
    ``classes`` sub-folders of ``out`` (``class_<k>/img_<i>.jpg``, labels by folder as
    ImageNet's); returns the bytes written. Same arguments, byte-identical files."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n (number of images) must be an integer >= 1, got {n!r}")
    if not isinstance(quality, int) or not 1 <= quality <= 95:
        raise ValueError(f"quality (JPEG) must be an integer in 1..95, got {quality!r}")
    if not isinstance(classes, int) or classes < 1:
        raise ValueError(f"classes must be an integer >= 1, got {classes!r}")
    out = Path(out)
    rng = np.random.default_rng(seed)
    sizes, weights = list(PHOTO_SIZES), np.array(list(PHOTO_SIZES.values()))
    total = 0
    for i in range(n):
        w, h = sizes[rng.choice(len(sizes), p=weights / weights.sum())]
        folder = out / f"class_{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img_{i:06d}.jpg"
        Image.fromarray(photo(rng, h, w)).save(
            path, "JPEG", quality=quality, optimize=False, subsampling="4:2:0"
        )
        total += path.stat().st_size
    return total
