"""The reference kernel: plain numpy, always available.

How it stays fast without C: the part of the source the output samples is padded once by the
border rule, so every neighbour index is in range and the four bilinear neighbours of a
sample are ``base``, ``base + 1``, ``base + row`` and ``base + row + 1``; pixels of two to four
uint8 channels are packed into one uint32, so a gather moves a whole pixel. Coordinates and
blending are float32 (errors of about 1e-5 pixel), uint8 results are rounded to nearest.
"""

from __future__ import annotations

import math
import threading

import numpy as np

_NP_PAD = {"reflect": "reflect", "edge": "edge", "constant": "constant"}
_MAX_PAD_FACTOR = 4  # a padded source larger than this many images: map indices instead
_scratch = threading.local()


def _buffer(name: str, shape: tuple, dtype) -> np.ndarray:
    """A per-thread scratch array, kept between calls. Fresh temporaries of this size come
    from mmap and page-fault on every call, which cost more than the arithmetic itself."""
    bufs = _scratch.__dict__.setdefault("bufs", {})
    buf = bufs.get(name)
    if buf is None or buf.shape != shape or buf.dtype != dtype:
        buf = bufs[name] = np.empty(shape, dtype=dtype)
    return buf


def _pixels(img: np.ndarray) -> np.ndarray:
    """(H, W) array of one element per pixel: uint32 for 2-4 uint8 channels (spare bytes
    hold garbage that is never returned), else the image as it is."""
    h, w, c = img.shape
    if img.dtype != np.uint8 or c == 1 or c > 4:
        return img[:, :, 0] if c == 1 else img
    if c == 4:
        return np.ascontiguousarray(img).view(np.uint32).reshape(h, w)
    if c == 3:  # read 4 bytes every 3: one copy instead of a channel-by-channel shuffle
        n = img.size
        buf = np.empty(n + 1, dtype=np.uint8)
        buf[:n] = img.reshape(-1)
        buf[n] = 0
        return np.ndarray((h * w,), dtype="<u4", buffer=buf, strides=(3,)).reshape(h, w).copy()
    packed = np.zeros((h, w, 4), dtype=np.uint8)
    packed[:, :, :c] = img
    return packed.view(np.uint32).reshape(h, w)


def _fill_value(pixels: np.ndarray, fill: float):
    return int(fill) * 0x01010101 if pixels.dtype == np.uint32 else fill


def _index_range(inverse: np.ndarray, out_shape, row: int, n: int) -> tuple[int, int]:
    """Smallest and largest source index any sample (and its +1 neighbour) touches, with a
    pixel of slack for float32 rounding."""
    ho, wo = out_shape
    a, b, t = inverse[row]
    values = [a * x + b * y + t for x in (0, wo - 1) for y in (0, ho - 1)]
    return math.floor(min(values)) - 1, math.floor(max(values)) + 2


def _map_index(idx: np.ndarray, n: int, border: str) -> np.ndarray:
    """Out-of-range indices into the image by the border rule (the rare unpadded path)."""
    if border == "constant":  # the source then has one ring of fill: -1 and n land on it
        return np.clip(idx, -1, n) + 1
    if border == "edge":
        return np.clip(idx, 0, n - 1)
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * n - 2  # reflect, mirror without repeating the edge pixel: dcb|abcd|cba
    idx = np.mod(idx, period)
    return np.minimum(idx, period - idx)


def _padded_source(pixels, border, fill, xr, yr):
    """The source padded to cover index ranges ``xr`` and ``yr``, and where pixel (0, 0) of
    the image lies in it; None when that copy would be unreasonably large."""
    h, w = pixels.shape[:2]
    top, bottom = max(-yr[0], 0), max(yr[1] - (h - 1), 0)
    left, right = max(-xr[0], 0), max(xr[1] - (w - 1), 0)
    if not (top or bottom or left or right):
        return pixels, 0, 0
    if (h + top + bottom) * (w + left + right) > _MAX_PAD_FACTOR * (h + 2) * (w + 2):
        return None
    pads = [(top, bottom), (left, right)] + [(0, 0)] * (pixels.ndim - 2)
    if border == "constant":
        padded = np.pad(pixels, pads, mode="constant", constant_values=_fill_value(pixels, fill))
    else:
        padded = np.pad(pixels, pads, mode=_NP_PAD[border])
    return padded, top, left


def _coordinates(inverse, out_shape, dx: float, dy: float, repeat: int = 1):
    """Source x and y of every output pixel, float32, shifted by (dx, dy); each value
    ``repeat`` times over, so weights line up with (N, repeat) pixel rows without the very
    slow (N, k) * (N, 1) broadcast."""
    ho, wo = out_shape
    cols = np.arange(wo, dtype=np.float32)
    if repeat > 1:
        cols = np.repeat(cols, repeat)
    rows = np.arange(ho, dtype=np.float32)[:, None]
    (a, b, tx), (c, d, ty) = inverse
    xs = (np.float32(a) * cols + np.float32(tx + dx)) + np.float32(b) * rows
    ys = (np.float32(c) * cols + np.float32(ty + dy)) + np.float32(d) * rows
    return xs, ys


def _unpack(picked: np.ndarray, c: int) -> np.ndarray:
    if picked.dtype == np.uint32:
        return picked.view(np.uint8).reshape(-1, 4)
    return picked.reshape(-1, c)


def _finish(values: np.ndarray, dtype, c: int, out_shape, out=None) -> np.ndarray:
    """(N, width) samples (maybe a scratch buffer) to an (H, W, C) image of ``dtype``: a new
    one, or ``out`` (C-contiguous) filled."""
    n = values.shape[0]
    if values.shape[1] == c and values.dtype == dtype:
        if out is None:
            return values.reshape(*out_shape, c).copy()
        np.copyto(out.reshape(n, c), values)
        return out
    if values.shape[1] == 4 and c == 3 and dtype == np.uint8:
        # Write each packed pixel as 4 bytes every 3, in order: the next pixel overwrites
        # the spare byte. Ten times faster than a strided (N, 4) -> (N, 3) copy. In ``out``,
        # which has no spare byte after the last pixel, that pixel is copied on its own.
        packed = np.ascontiguousarray(values, dtype=np.uint8).view(np.uint32).reshape(-1)
        if out is None:
            buf = np.empty(n * 3 + 1, dtype=np.uint8)
            np.ndarray((n,), dtype="<u4", buffer=buf, strides=(3,))[...] = packed
            return buf[:-1].reshape(*out_shape, c)
        flat = out.reshape(-1)
        np.ndarray((n - 1,), dtype="<u4", buffer=flat, strides=(3,))[...] = packed[:-1]
        flat[-3:] = values[-1, :3]
        return out
    if out is None:
        out = np.empty((*out_shape, c), dtype=dtype)
    np.copyto(out.reshape(n, c), values[:, :c], casting="unsafe")
    return out


def warp(img, inverse, out_shape, interpolation, border, fill, out=None):
    h, w, c = img.shape
    inverse = np.asarray(inverse, dtype=np.float64)
    pixels = _pixels(img)
    xr, yr = _index_range(inverse, out_shape, 0, w), _index_range(inverse, out_shape, 1, h)
    padded = _padded_source(pixels, border, fill, xr, yr)
    if padded is None:
        return _warp_mapped(
            pixels, img.dtype, c, inverse, out_shape, interpolation, border, fill, out
        )
    src, top, left = padded
    row = src.shape[1]
    flat = src.reshape(-1) if src.ndim == 2 else src.reshape(-1, c)
    if interpolation == "nearest":
        xs, ys = _coordinates(inverse, out_shape, left, top)
        base = np.floor(ys + np.float32(0.5)).astype(np.intp) * row
        base += np.floor(xs + np.float32(0.5)).astype(np.intp)
        picked = _unpack(np.take(flat, base.reshape(-1), axis=0), c)
        return _finish(picked, img.dtype, c, out_shape, out)

    width = 4 if src.dtype == np.uint32 else c
    return _bilinear_padded(flat, row, inverse, out_shape, left, top, width, img.dtype, c, out)


def _bilinear_padded(flat, row, inverse, out_shape, dx, dy, width, dtype, c, out=None):
    """Bilinear sampling where every neighbour index is in range, in per-thread scratch
    buffers: coordinates -> weights and base index -> four gathers -> in-place blend."""
    ho, wo = out_shape
    n = ho * wo
    (a, b, tx), (cy, d, ty) = inverse
    cols = np.repeat(np.arange(wo, dtype=np.float32), width)
    rows = np.arange(ho, dtype=np.float32)[:, None]
    weights, index = [], []
    for name, coef_x, coef_y, shift in (("x", a, b, tx + dx), ("y", cy, d, ty + dy)):
        coord = _buffer("coord" + name, (ho, wo * width), np.float32)
        floor = _buffer("floor" + name, (ho, wo * width), np.float32)
        np.add(np.float32(coef_x) * cols + np.float32(shift), np.float32(coef_y) * rows, out=coord)
        np.floor(coord, out=floor)
        np.subtract(coord, floor, out=coord)  # the fractional part: this axis's weight
        whole = _buffer("index" + name, (ho, wo), np.intp)
        np.copyto(whole, floor[:, ::width], casting="unsafe")
        weights.append(coord.reshape(n, width))
        index.append(whole.reshape(n))
    base = index[1]
    base *= row
    base += index[0]
    pixels = []
    for k, offset in enumerate((0, 1, row, row + 1)):
        idx = base if offset == 0 else np.add(base, offset, out=_buffer(f"idx{k}", (n,), np.intp))
        picked = np.take(
            flat,
            idx,
            axis=0,
            mode="clip",
            out=_buffer(f"pick{k}", (n,) + flat.shape[1:], flat.dtype),
        )
        value = _buffer(f"val{k}", (n, width), np.float32)
        np.copyto(value, _unpack(picked, c))
        pixels.append(value)
    return _blend(*pixels, weights[0], weights[1], dtype, c, out_shape, out)


def _blend(p00, p01, p10, p11, fx, fy, dtype, c, out_shape, out=None):
    """Bilinear mix in place: top = p00 + (p01 - p00) fx, bottom likewise,
    out = top + (bottom - top) fy."""
    p01 -= p00
    p01 *= fx
    p01 += p00
    p11 -= p10
    p11 *= fx
    p11 += p10
    p11 -= p01
    p11 *= fy
    p11 += p01
    if dtype == np.uint8:  # convex mixes of 0..255: rounding needs no clip
        np.rint(p11, out=p11)
    return _finish(p11, dtype, c, out_shape, out)


def _warp_mapped(pixels, dtype, c, inverse, out_shape, interpolation, border, fill, out=None):
    """The same sampling for maps that reach far outside the image: map each index by the
    border rule instead of padding."""
    h, w = pixels.shape[:2]
    if border == "constant":
        pixels = np.pad(
            pixels,
            [(1, 1), (1, 1)] + [(0, 0)] * (pixels.ndim - 2),
            mode="constant",
            constant_values=_fill_value(pixels, fill),
        )
    row = pixels.shape[1]
    flat = pixels.reshape(-1) if pixels.ndim == 2 else pixels.reshape(-1, c)
    if interpolation == "nearest":
        xs, ys = _coordinates(inverse, out_shape, 0.0, 0.0)
        xi = _map_index(np.floor(xs + np.float32(0.5)).astype(np.intp), w, border)
        yi = _map_index(np.floor(ys + np.float32(0.5)).astype(np.intp), h, border)
        index = (yi * row + xi).reshape(-1)
        return _finish(_unpack(np.take(flat, index, axis=0), c), dtype, c, out_shape, out)
    width = 4 if pixels.dtype == np.uint32 else c
    xs, ys = _coordinates(inverse, out_shape, 0.0, 0.0, width)
    x0, y0 = np.floor(xs), np.floor(ys)
    fx = (xs - x0).reshape(-1, width)
    fy = (ys - y0).reshape(-1, width)
    x0, y0 = x0[:, ::width].astype(np.intp), y0[:, ::width].astype(np.intp)
    xa, xb = _map_index(x0, w, border), _map_index(x0 + 1, w, border)
    ya, yb = _map_index(y0, h, border) * row, _map_index(y0 + 1, h, border) * row
    pixels = [
        _unpack(np.take(flat, (yy + xx).reshape(-1), axis=0), c).astype(np.float32)
        for yy, xx in ((ya, xa), (ya, xb), (yb, xa), (yb, xb))
    ]
    return _blend(*pixels, fx, fy, dtype, c, out_shape, out)
