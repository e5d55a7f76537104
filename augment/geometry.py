"""2x3 affine matrices in pixel coordinates, and the shapes they produce.

Convention: ``x`` is the column, ``y`` the row, pixel centres sit on integers. A matrix maps
*input* coordinates to *output* coordinates; kernels sample with its inverse. Chaining
transforms is a matrix product, which is how ``Compose`` resamples once for many steps.
"""

from __future__ import annotations

import math

import numpy as np

Shape = tuple[int, int]

_SNAP_TOL = 1e-9


def to3x3(matrix: np.ndarray) -> np.ndarray:
    """A 2x3 matrix as the 3x3 homogeneous matrix it stands for."""
    full = np.eye(3)
    full[:2] = np.asarray(matrix, dtype=np.float64)
    return full


def invert(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix, as 2x3. Raises ValueError if it is singular."""
    m = np.asarray(matrix, dtype=np.float64)
    det = m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]
    if not math.isfinite(det) or abs(det) < 1e-12:
        raise ValueError(
            f"affine matrix is singular or not finite (determinant {det!r}): {m.tolist()}"
        )
    return np.linalg.inv(to3x3(m))[:2]


def then(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The 2x3 matrix that applies ``first`` and then ``second``."""
    return (to3x3(second) @ to3x3(first))[:2]


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


def snap(matrix: np.ndarray) -> np.ndarray:
    """Round entries within 1e-9 of an integer, so cos(90 deg) is 0 and a quarter turn is exact."""
    m = np.array(matrix, dtype=np.float64)
    near = np.abs(m - np.round(m)) < _SNAP_TOL
    m[near] = np.round(m[near])
    return m


def is_pixel_permutation(matrix: np.ndarray) -> bool:
    """True when the map only moves whole pixels: flips, quarter turns, integer shifts."""
    m = snap(matrix)
    if not np.all(m == np.round(m)):
        return False
    lin = m[:, :2]
    return bool(
        np.count_nonzero(lin) == 2
        and np.all(np.abs(lin).sum(axis=0) == 1)
        and np.all(np.abs(lin).sum(axis=1) == 1)
    )


def outside_reach(matrix: np.ndarray, in_shape: Shape, out_shape: Shape) -> float:
    """How many pixels beyond the input's edge the output's corners sample (0 if inside)."""
    inverse = invert(matrix)
    (h, w), (ho, wo) = in_shape, out_shape
    corners = np.array([[0, 0, 1], [wo - 1, 0, 1], [0, ho - 1, 1], [wo - 1, ho - 1, 1]], float)
    xs, ys = (corners @ inverse.T).T
    beyond = [-xs.min(), xs.max() - (w - 1), -ys.min(), ys.max() - (h - 1), 0.0]
    return float(max(beyond))
