"""Draw docs/antialias.png: a zone plate shrunk 4x by the folded warp, without and with
antialiasing, beside Pillow's Lanczos resize as a reference.

    python scripts/antialias_figure.py [--out docs/antialias.png]

The zone plate's rings get finer towards its edge, up to the full image's Nyquist limit; once
4x smaller, every ring beyond a quarter of the radius is finer than the new pixels can hold.
A bilinear warp reads 2x2 pixels per output pixel and turns those rings into false, coarse
ones (moire); averaging 4x4 blocks first (``Compose(..., antialias=True)``, the default)
leaves them grey, as a real camera or a Lanczos filter would.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent

import augment  # noqa: E402


def zone_plate(n: int = 512) -> np.ndarray:
    """Concentric rings whose frequency grows linearly from 0 at the centre to 0.5 cycles per
    pixel at the edge's midpoints; grey (uint8, 3 channels)."""
    y, x = np.mgrid[0:n, 0:n].astype(np.float64) - (n - 1) / 2
    img = 127.5 + 127.5 * np.cos(np.pi * (x * x + y * y) / n)
    return np.repeat(np.rint(img).astype(np.uint8)[:, :, None], 3, axis=2)


def shrink(img: np.ndarray, out: int, antialias: bool) -> np.ndarray:
    pipeline = augment.Compose([augment.Resize((out, out))], antialias=antialias)
    return pipeline(img, np.random.default_rng(0))


def labelled(panels: list[tuple[str, np.ndarray]], side: int, gap: int = 16) -> Image.Image:
    """The panels side by side, each ``side`` pixels square (smaller ones enlarged by whole
    pixels, so nothing is resampled for display), with a title above each."""
    from PIL import ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=15)
    except TypeError:  # Pillow < 10.1: the bitmap font
        font = ImageFont.load_default()
    top = 52
    canvas = Image.new("RGB", (len(panels) * (side + gap) + gap, side + top + gap), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (title, panel) in enumerate(panels):
        k = side // panel.shape[0]
        big = np.repeat(np.repeat(panel, k, axis=0), k, axis=1)
        x = gap + i * (side + gap)
        canvas.paste(Image.fromarray(big), (x, top))
        draw.multiline_text((x, 6), title, fill="black", font=font, spacing=3)
    return canvas


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "antialias.png")
    p.add_argument("--size", type=int, default=256, help="zone plate side (default 256)")
    a = p.parse_args(argv)
    img = zone_plate(a.size)
    small = a.size // 4
    lanczos = np.asarray(Image.fromarray(img).resize((small, small), Image.LANCZOS))
    panels = [
        (f"original {a.size}x{a.size}:\nrings up to the pixel limit", img),
        (
            f"{small}x{small}, bilinear warp alone\n(antialias=False): false rings",
            shrink(img, small, False),
        ),
        (
            f"{small}x{small}, 4x4 block mean, warp\n(antialias=True, the default)",
            shrink(img, small, True),
        ),
        (f"{small}x{small}, Pillow LANCZOS\n(reference)", lanczos),
    ]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    labelled(panels, a.size).save(a.out, optimize=True)
    for title, panel in panels[1:3]:
        err = np.abs(panel.astype(float) - lanczos.astype(float)).mean()
        print(f"{' '.join(title.splitlines())}: mean |difference| from Lanczos {err:.1f} levels")
    print(f"wrote {a.out} (the small images enlarged 4x by repeating pixels)")


if __name__ == "__main__":
    main()
