"""2x3 affine matrices in pixel coordinates, and the shapes they produce.

Convention: ``x`` is the column, ``y`` the row, pixel centres sit on integers. A matrix maps
*input* coordinates to *output* coordinates; kernels sample with its inverse. Chaining
transforms is a matrix product, which is how ``Compose`` resamples once for many steps.

The arithmetic is plain Python on six floats: for 2x3 matrices it is several times faster
than numpy's small-array calls, and it runs once per transform per image. The public
functions take and return 2x3 arrays; the per-image path (``Compose``, ``F.affine``) keeps a
matrix as its six entries ``(a, b, c, d, e, f)`` (``Entries``: ``entries``, ``compose``,
``inverse``, ``as_matrix``) and makes an array only for the kernel.
"""

from __future__ import annotations

import math

import numpy as np

Shape = tuple[int, int]
Entries = tuple[float, float, float, float, float, float]

_SNAP_TOL = 1e-9
IDENTITY: Entries = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def entries(matrix) -> Entries:
    """The six entries of a 2x3 matrix (an array, nested lists or already six floats)."""
    if type(matrix) is tuple and len(matrix) == 6:
        return matrix
    if type(matrix) is np.ndarray and matrix.dtype == np.float64 and matrix.shape == (2, 3):
        (a, b, c), (d, e, f) = matrix.tolist()
    else:
        (a, b, c), (d, e, f) = np.asarray(matrix, dtype=np.float64).tolist()
    return a, b, c, d, e, f


_entries = entries


def as_matrix(m: Entries) -> np.ndarray:
    """Six entries as a 2x3 float64 array."""
    return np.array(m, dtype=np.float64).reshape(2, 3)


def inverse(m: Entries) -> Entries:
    """``invert`` on six entries."""
    a, b, c, d, e, f = m
    det = a * e - b * d
    if not math.isfinite(det) or abs(det) < 1e-12:
        raise ValueError(
            f"affine matrix is singular or not finite (determinant {det!r}): "
            f"{[[a, b, c], [d, e, f]]}"
        )
    ia, ib, id_, ie = e / det, -b / det, -d / det, a / det
    return ia, ib, -(ia * c + ib * f), id_, ie, -(id_ * c + ie * f)


def compose(first: Entries, second: Entries) -> Entries:
    """``then`` on six entries."""
    a, b, c, d, e, f = first
    p, q, r, s, t, u = second
    return (
        p * a + q * d,
        p * b + q * e,
        p * c + q * f + r,
        s * a + t * d,
        s * b + t * e,
        s * c + t * f + u,
    )


def invert(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix, as 2x3. Raises ValueError if it is singular."""
    return as_matrix(inverse(entries(matrix)))


def then(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The 2x3 matrix that applies ``first`` and then ``second``."""
    return as_matrix(compose(entries(first), entries(second)))


def translation(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty]])


def hflip(shape: Shape) -> np.ndarray:
    _, w = shape
    return np.array([[-1.0, 0.0, w - 1.0], [0.0, 1.0, 0.0]])


def vflip(shape: Shape) -> np.ndarray:
    h, _ = shape
    return np.array([[1.0, 0.0, 0.0], [0.0, -1.0, h - 1.0]])


def rot90(shape: Shape, k: int) -> tuple[np.ndarray, Shape]:
    """Counter-clockwise quarter turns, as ``np.rot90``: the matrix and the output shape."""
    h, w = shape
    k %= 4
    if k == 0:
        return np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), (h, w)
    if k == 1:  # out[i, j] = in[j, w-1-i]
        return np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, w - 1.0]]), (w, h)
    if k == 2:
        return np.array([[-1.0, 0.0, w - 1.0], [0.0, -1.0, h - 1.0]]), (h, w)
    return np.array([[0.0, -1.0, h - 1.0], [1.0, 0.0, 0.0]]), (w, h)


def rotation(shape: Shape, angle: float) -> np.ndarray:
    """Rotate by ``angle`` degrees counter-clockwise (as displayed) about the image centre."""
    h, w = shape
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    rad = math.radians(angle)
    c, s = math.cos(rad), math.sin(rad)
    # y grows downwards, so a counter-clockwise turn on screen has +sin in the x row.
    return np.array([[c, s, cx - c * cx - s * cy], [-s, c, cy + s * cx - c * cy]])


def scaled_shape(shape: Shape, factor: float) -> Shape:
    h, w = shape
    return int(round(h * factor)), int(round(w * factor))


def resize(shape: Shape, out_shape: Shape) -> np.ndarray:
    """Stretch ``shape`` onto ``out_shape`` with half-pixel centres (as Pillow and OpenCV)."""
    (h, w), (ho, wo) = shape, out_shape
    sx, sy = wo / w, ho / h
    return np.array([[sx, 0.0, 0.5 * (sx - 1.0)], [0.0, sy, 0.5 * (sy - 1.0)]])


def crop(top: int, left: int) -> np.ndarray:
    return translation(-left, -top)


def snapped(m: Entries) -> Entries:
    """``snap`` on six entries."""
    return tuple(float(round(v)) if abs(v - round(v)) < _SNAP_TOL else v for v in m)


def snap(matrix: np.ndarray) -> np.ndarray:
    """Round entries within 1e-9 of an integer, so cos(90 deg) is 0 and a quarter turn is exact."""
    return as_matrix(snapped(entries(matrix)))


def is_pixel_permutation(matrix: np.ndarray) -> bool:
    """True when the map only moves whole pixels: flips, quarter turns, integer shifts."""
    return moves_whole_pixels(snapped(entries(matrix)))


def moves_whole_pixels(m: Entries) -> bool:
    """``is_pixel_permutation`` on six entries already snapped."""
    a, b, c, d, e, f = m
    whole = float(a).is_integer() and float(b).is_integer() and float(d).is_integer()
    if not (whole and float(e).is_integer() and float(c).is_integer() and float(f).is_integer()):
        return False
    return (
        abs(a) + abs(b) == 1
        and abs(d) + abs(e) == 1
        and abs(a) + abs(d) == 1
        and abs(b) + abs(e) == 1
    )


def outside_reach(matrix: np.ndarray, in_shape: Shape, out_shape: Shape) -> float:
    """How many pixels beyond the input's edge the output's corners sample (0 if inside)."""
    a, b, c, d, e, f = inverse(entries(matrix))
    (h, w), (ho, wo) = in_shape, out_shape
    # the corners (0, 0), (wo - 1, 0), (0, ho - 1), (wo - 1, ho - 1): a * x + b * y + c
    ax, by, dx, ey = a * (wo - 1), b * (ho - 1), d * (wo - 1), e * (ho - 1)
    xs = (c, ax + c, by + c, ax + by + c)
    ys = (f, dx + f, ey + f, dx + ey + f)
    return max(-min(xs), max(xs) - (w - 1), -min(ys), max(ys) - (h - 1), 0.0)


def shrink(matrix: np.ndarray) -> tuple[float, float]:
    """How many input pixels one output pixel spans along the input's x and y axes: the
    inverse lengths of the images of the input's unit steps (2.0 for a 2x reduction,
    whatever the rotation)."""
    a, b, _, d, e, _ = _entries(matrix)
    nx, ny = math.hypot(a, d), math.hypot(b, e)
    return (1.0 / nx if nx else math.inf), (1.0 / ny if ny else math.inf)


def from_reduced(kx: int, ky: int | None = None) -> np.ndarray:
    """Coordinates in an image reduced ``kx`` by ``ky`` times by block averaging (pixel ``j``
    covers pixels ``k*j .. k*j + k - 1``, as a JPEG decoded at scale 1/k) to those of the
    full image: the centre of block ``j`` is at ``k*j + (k - 1) / 2``."""
    ky = kx if ky is None else ky
    return np.array([[float(kx), 0.0, (kx - 1) / 2.0], [0.0, float(ky), (ky - 1) / 2.0]])


def reduced_shape(shape: Shape, k: int) -> Shape:
    """The shape of ``shape`` reduced ``k`` times, partial blocks included (as libjpeg)."""
    h, w = shape
    return -(-h // k), -(-w // k)
