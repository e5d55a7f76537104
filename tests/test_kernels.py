"""Resampling kernels against a hand-written float64 bilinear / nearest sampler.

The reference below is deliberately naive: one output pixel at a time, the inverse map from
``np.linalg.inv``, border rules written out by their definition. Every installed kernel is
compared with it through ``functional.affine`` (which takes the FORWARD matrix), on all
pixels including the border, for fixed cases and for random maps.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import random_image

from augment.ops import functional as F
from augment.ops import kernels
from augment.ops.kernels import numpy_kernel

KERNELS = kernels.available()
TIE_MARGIN = 1e-3  # nearest: skip samples this close to an x.5 tie


# --------------------------------------------------------------------------- reference


def _ref_index(i: int, n: int, border: str) -> int | None:
    """Index into an axis of length n by the border rule; None means 'the fill value'."""
    if 0 <= i < n:
        return i
    if border == "edge":
        return min(max(i, 0), n - 1)
    if border == "constant":
        return None
    assert border == "reflect"
    if n == 1:
        return 0
    while not 0 <= i < n:  # mirror about the first / last pixel centre: dcb|abcd|cba
        i = -i if i < 0 else 2 * (n - 1) - i
    return i


def ref_warp(img, forward, out_shape, interpolation="bilinear", border="reflect", fill=0.0):
    """Float64 result, and the source x / y of every output pixel."""
    src = img.astype(np.float64)
    if src.ndim == 2:
        src = src[:, :, None]
    h, w, c = src.shape
    full = np.eye(3)
    full[:2] = np.asarray(forward, dtype=np.float64)
    inv = np.linalg.inv(full)
    ho, wo = out_shape
    out = np.empty((ho, wo, c))
    xs, ys = np.empty((ho, wo)), np.empty((ho, wo))

    def pixel(row, col):
        r, q = _ref_index(row, h, border), _ref_index(col, w, border)
        if r is None or q is None:
            return np.full(c, float(fill))
        return src[r, q]

    for y in range(ho):
        for x in range(wo):
            sx = inv[0, 0] * x + inv[0, 1] * y + inv[0, 2]
            sy = inv[1, 0] * x + inv[1, 1] * y + inv[1, 2]
            xs[y, x], ys[y, x] = sx, sy
            if interpolation == "nearest":
                out[y, x] = pixel(math.floor(sy + 0.5), math.floor(sx + 0.5))
            else:
                x0, y0 = math.floor(sx), math.floor(sy)
                fx, fy = sx - x0, sy - y0
                top = (1 - fx) * pixel(y0, x0) + fx * pixel(y0, x0 + 1)
                bottom = (1 - fx) * pixel(y0 + 1, x0) + fx * pixel(y0 + 1, x0 + 1)
                out[y, x] = (1 - fy) * top + fy * bottom
    if img.ndim == 2:
        out = out[:, :, 0]
    return out, xs, ys


def assert_close_to_reference(got, img, ref, xs, ys, interpolation, context=""):
    assert got.dtype == img.dtype, context
    assert got.shape == ref.shape, context
    assert got.flags.c_contiguous, context
    assert not np.shares_memory(got, img), context
    if interpolation == "nearest":

        def far_from_tie(v):
            return np.abs((v - np.floor(v)) - 0.5) > TIE_MARGIN

        ok = far_from_tie(xs) & far_from_tie(ys)
        if got.ndim == 3:
            ok = np.broadcast_to(ok[:, :, None], got.shape)
        expected = ref.astype(img.dtype)
        assert np.array_equal(expected.astype(np.float64), ref), "reference is not a pixel copy"
        bad = ok & (got != expected)
        assert not bad.any(), (
            f"{context}: nearest differs at {np.argwhere(bad)[:5].tolist()}: "
            f"got {got[bad][:5]}, expected {expected[bad][:5]}"
        )
    else:
        tol = 1.0 + 1e-9 if img.dtype == np.uint8 else 1e-3
        err = np.abs(got.astype(np.float64) - ref)
        assert err.max() <= tol, (
            f"{context}: bilinear max error {err.max():.4g} > {tol} at "
            f"{np.unravel_index(err.argmax(), err.shape)}"
        )


# --------------------------------------------------------------------------- helpers


def forward_matrix(in_shape, out_shape, angle, sx, sy, shear, tx, ty):
    """Input centre -> scale, shear, rotate -> output centre, then shift by (tx, ty)."""
    (h, w), (ho, wo) = in_shape, out_shape
    to_origin = np.array([[1, 0, -(w - 1) / 2], [0, 1, -(h - 1) / 2], [0, 0, 1.0]])
    scale = np.diag([sx, sy, 1.0])
    sh = np.array([[1, shear, 0], [0, 1, 0], [0, 0, 1.0]])
    r = math.radians(angle)
    rot = np.array([[math.cos(r), math.sin(r), 0], [-math.sin(r), math.cos(r), 0], [0, 0, 1]])
    back = np.array([[1, 0, (wo - 1) / 2 + tx], [0, 1, (ho - 1) / 2 + ty], [0, 0, 1.0]])
    return (back @ rot @ sh @ scale @ to_origin)[:2]


def shape_with(h, w, c):
    return (h, w) if c is None else (h, w, c)


# --------------------------------------------------------------------------- registry


def test_numpy_kernel_always_available_and_order_follows_preference():
    assert "numpy" in KERNELS
    assert KERNELS == [k for k in kernels.PREFERENCE if k in KERNELS]


def test_get_unknown_kernel_lists_accepted_names():
    with pytest.raises(ValueError, match="nope") as info:
        kernels.get("nope")
    for name in ("numpy", "pillow", "opencv"):
        assert name in str(info.value)


def test_unknown_kernel_through_functional():
    img = np.zeros((4, 4), np.uint8)
    with pytest.raises(ValueError, match="unknown kernel"):
        F.rotate(img, 10, kernel="nope")


def test_get_numpy_returns_warp():
    assert kernels.get("numpy") is numpy_kernel.warp


@pytest.mark.parametrize("name", KERNELS)
def test_env_var_overrides_default(monkeypatch, name):
    monkeypatch.setenv("AUGMENT_KERNEL", name)
    assert kernels.default_name() == name
    assert kernels.get() is kernels.get(name)


def test_env_var_unset_gives_first_available(monkeypatch):
    monkeypatch.delenv("AUGMENT_KERNEL", raising=False)
    assert kernels.default_name() == KERNELS[0]


def test_env_var_unknown_kernel_is_an_error_when_used(monkeypatch):
    monkeypatch.setenv("AUGMENT_KERNEL", "nope")
    with pytest.raises(ValueError, match="unknown kernel"):
        kernels.default_name()
    # functional ops without an explicit kernel honour the variable
    with pytest.raises(ValueError, match="unknown kernel"):
        F.rotate(np.zeros((5, 5), np.uint8), 10)


def test_env_var_changes_default_result(monkeypatch):
    """With the variable naming the numpy kernel, the default warp is bit-identical to it."""
    img = random_image(np.random.default_rng(3), (9, 11, 3), np.uint8)
    monkeypatch.setenv("AUGMENT_KERNEL", "numpy")
    assert np.array_equal(F.rotate(img, 21.5), F.rotate(img, 21.5, kernel="numpy"))


# --------------------------------------------------------------------------- direct kernel API


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_warp_signature_identity_inverse(name, dtype):
    """Called directly with an (H, W, C) image and an identity inverse: a same-size copy."""
    img = random_image(np.random.default_rng(0), (6, 7, 3), dtype)
    inverse = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    out = kernels.get(name)(img, inverse, (6, 7), "bilinear", "reflect", 0.0)
    assert out.shape == (6, 7, 3) and out.dtype == dtype
    assert np.array_equal(out, img)


# --------------------------------------------------------------------------- fixed cases

FIXED_SHAPES = [(1, 1), (1, 6), (6, 1), (2, 2), (5, 7), (8, 5)]
FIXED_MAPS = [
    # (angle, sx, sy, shear, tx, ty)
    (0.0, 1.0, 1.0, 0.0, 0.3, -0.7),  # sub-pixel shift
    (0.0, 1.0, 1.0, 0.0, 2.0, -3.0),  # whole-pixel shift, partly outside
    (33.0, 1.0, 1.0, 0.0, 0.0, 0.0),
    (-127.0, 1.3, 0.8, 0.2, 1.1, 0.4),
    (90.0, 1.0, 1.0, 0.0, 0.25, 0.0),
    (12.0, 2.7, 2.2, 0.0, 0.0, 0.0),  # upscale
    (200.0, 0.45, 0.6, -0.1, 0.0, 0.0),  # downscale
    (15.0, 1.0, 1.0, 0.0, 23.6, -17.2),  # far outside: reflect wraps around several times
]


@pytest.mark.parametrize("border", ["reflect", "edge", "constant"])
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_fixed_maps_match_reference(border, interpolation, dtype):
    rng = np.random.default_rng(1)
    fill = 77.0 if dtype == np.uint8 else 0.625
    for h, w in FIXED_SHAPES:
        for c in (None, 1, 3):
            img = random_image(rng, shape_with(h, w, c), dtype)
            before = img.copy()
            for params in FIXED_MAPS:
                out_shape = (h + 2, w + 3)
                m = forward_matrix((h, w), out_shape, *params)
                ref, xs, ys = ref_warp(img, m, out_shape, interpolation, border, fill)
                for name in KERNELS:
                    got = F.affine(
                        img, m, out_shape, interpolation, border, fill, kernel=name, antialias=False
                    )
                    ctx = f"{name} {img.shape} {img.dtype} {params} {interpolation} {border}"
                    assert_close_to_reference(got, img, ref, xs, ys, interpolation, ctx)
                assert np.array_equal(img, before)


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("border", ["reflect", "edge", "constant"])
def test_whole_pixel_shift_partly_outside_is_exact(name, border):
    """An integer shift that leaves the image is a pixel copy plus border pixels: exact."""
    img = random_image(np.random.default_rng(2), (5, 6, 3), np.uint8)
    m = np.array([[1.0, 0, 2], [0, 1.0, -3]])
    for interpolation in ("nearest", "bilinear"):
        ref, _, _ = ref_warp(img, m, (7, 9), interpolation, border, 200)
        got = F.affine(img, m, (7, 9), interpolation, border, 200, kernel=name)
        assert np.array_equal(got, ref.astype(np.uint8)), (interpolation, border)


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_constant_border_far_outside_is_all_fill(name, dtype):
    img = random_image(np.random.default_rng(4), (6, 6, 3), dtype)
    fill = 9.0 if dtype == np.uint8 else -0.5
    m = np.array([[1.0, 0, 100.5], [0, 1.0, 100.5]])
    for interpolation in ("nearest", "bilinear"):
        got = F.affine(img, m, (4, 5), interpolation, "constant", fill, kernel=name)
        assert np.array_equal(got, np.full((4, 5, 3), fill, dtype)), interpolation


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("c", [2, 5, 6, 7])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_unusual_channel_counts(name, c, dtype):
    """Every kernel handles 2 and 5..7 channels; each channel is warped as on its own."""
    rng = np.random.default_rng(c)
    img = random_image(rng, (9, 10, c), dtype)
    fill = 50.0 if dtype == np.uint8 else 0.5
    for interpolation in ("bilinear", "nearest"):
        for border in ("reflect", "constant"):
            m = forward_matrix((9, 10), (8, 11), 37.0, 1.2, 0.9, 0.1, 0.6, -0.4)
            ref, xs, ys = ref_warp(img, m, (8, 11), interpolation, border, fill)
            got = F.affine(img, m, (8, 11), interpolation, border, fill, kernel=name)
            assert got.shape == (8, 11, c)
            assert_close_to_reference(got, img, ref, xs, ys, interpolation, f"{name} c={c}")
            tol = 1 if dtype == np.uint8 else 1e-4
            for k in range(c):
                alone = F.affine(img[:, :, k], m, (8, 11), interpolation, border, fill, kernel=name)
                diff = np.abs(alone.astype(np.float64) - got[:, :, k].astype(np.float64))
                assert diff.max() <= tol, (interpolation, border, k)


# --------------------------------------------------------------------------- random maps


@st.composite
def warp_cases(draw):
    h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    ho, wo = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    c = draw(st.sampled_from([None, 1, 2, 3, 4, 5]))
    dtype = draw(st.sampled_from([np.uint8, np.float32]))
    angle = draw(st.floats(-180, 180))
    sx, sy = draw(st.floats(0.5, 2.0)), draw(st.floats(0.5, 2.0))
    shear = draw(st.floats(-0.3, 0.3))
    tx, ty = draw(st.floats(-6, 6)), draw(st.floats(-6, 6))
    interpolation = draw(st.sampled_from(["bilinear", "nearest"]))
    border = draw(st.sampled_from(["reflect", "edge", "constant"]))
    if dtype == np.uint8:
        fill = float(draw(st.integers(0, 255)))
    else:
        fill = float(np.float32(draw(st.floats(-1, 2))))
    seed = draw(st.integers(0, 2**32 - 1))
    m = forward_matrix((h, w), (ho, wo), angle, sx, sy, shear, tx, ty)
    img = random_image(np.random.default_rng(seed), shape_with(h, w, c), dtype)
    return img, m, (ho, wo), interpolation, border, fill


@settings(max_examples=40, deadline=None)
@given(warp_cases())
def test_random_maps_match_reference(case):
    img, m, out_shape, interpolation, border, fill = case
    before = img.copy()
    ref, xs, ys = ref_warp(img, m, out_shape, interpolation, border, fill)
    for name in KERNELS:
        got = F.affine(img, m, out_shape, interpolation, border, fill, kernel=name, antialias=False)
        ctx = f"{name} {img.shape} {img.dtype} {interpolation} {border} fill={fill} m={m.tolist()}"
        assert_close_to_reference(got, img, ref, xs, ys, interpolation, ctx)
    assert np.array_equal(img, before)


@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 20),
    st.integers(1, 20),
    st.integers(0, 3),
    st.integers(-8, 8),
    st.integers(-8, 8),
    st.sampled_from(["reflect", "edge", "constant"]),
    st.sampled_from(["bilinear", "nearest"]),
)
def test_random_pixel_permutations_are_exact(h, w, k, tx, ty, border, interpolation):
    """Quarter turns plus integer shifts, in or out of the image: exact copies / borders."""
    rng = np.random.default_rng(h * 100 + w)
    img = random_image(rng, (h, w, 3), np.uint8)
    turns = [
        np.array([[1, 0], [0, 1]]),
        np.array([[0, 1], [-1, 0]]),
        np.array([[-1, 0], [0, -1]]),
        np.array([[0, -1], [1, 0]]),
    ]
    m = np.hstack([turns[k], [[tx], [ty]]]).astype(np.float64)
    out_shape = (w, h) if k % 2 else (h, w)
    ref, _, _ = ref_warp(img, m, out_shape, interpolation, border, 31)
    for name in KERNELS:
        got = F.affine(img, m, out_shape, interpolation, border, 31, kernel=name)
        assert np.array_equal(got, ref.astype(np.uint8)), name


@pytest.mark.parametrize("name", KERNELS)
def test_uint8_bilinear_rounds_to_nearest_without_bias(name):
    """Over many samples the uint8 result is the reference rounded to nearest: errors average
    about zero. (Truncating instead darkens every warped image by half a grey level.)"""
    img = random_image(np.random.default_rng(5), (32, 32, 3), np.uint8)
    m = forward_matrix((32, 32), (32, 32), 17.0, 1.1, 1.1, 0.0, 0.3, -0.7)
    ref, _, _ = ref_warp(img, m, (32, 32), "bilinear", "reflect", 0)
    got = F.affine(img, m, (32, 32), "bilinear", "reflect", kernel=name)
    err = got.astype(np.float64) - ref
    assert abs(err.mean()) < 0.1, f"{name}: mean error {err.mean():+.3f} grey levels"
    assert np.abs(err).max() <= 0.5 + 1e-3, f"{name}: max error {np.abs(err).max():.3f}"


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 40),
    st.integers(1, 40),
    st.data(),
    st.sampled_from([None, 1, 2, 3, 4]),
    st.sampled_from([np.uint8, np.float32]),
    st.booleans(),
    st.booleans(),
)
def test_box_resizes_match_reference(ho, wo, data, c, dtype, flip_x, flip_y):
    """What RandomResizedCrop and Resize make: a whole-pixel box shrunk, kept or enlarged
    onto the output, maybe mirrored. The OpenCV kernel takes cv2.resize for these (and warps
    the outermost samples of an enlarged box, which fall outside it); every kernel must still
    agree with the reference everywhere, and the uint8 errors must not lean."""
    h = data.draw(st.integers(1, ho * 3 + 2))
    w = data.draw(st.integers(1, wo * 3 + 2))
    bh, bw = data.draw(st.integers(1, h)), data.draw(st.integers(1, w))
    top, left = data.draw(st.integers(0, h - bh)), data.draw(st.integers(0, w - bw))
    sx, sy = wo / bw, ho / bh  # forward: box -> output, half-pixel centres
    m = np.array([[sx, 0.0, 0.5 * sx - 0.5 - sx * left], [0.0, sy, 0.5 * sy - 0.5 - sy * top]])
    if flip_x:
        m[0] = [-m[0, 0], 0.0, wo - 1 - m[0, 2]]
    if flip_y:
        m[1] = [0.0, -m[1, 1], ho - 1 - m[1, 2]]
    img = random_image(np.random.default_rng(h * 1000 + w), shape_with(h, w, c), dtype)
    ref, xs, ys = ref_warp(img, m, (ho, wo), "bilinear", "reflect", 0)
    if "opencv" in KERNELS and min(ho, wo) >= 4 and 2 * bh >= ho and 2 * bw >= wo:
        from augment.ops.kernels import opencv_kernel as cv  # the case is one it resizes

        inverse = np.linalg.inv(np.vstack([m, [0.0, 0.0, 1.0]]))[:2]
        src = img if img.ndim == 3 else img[:, :, None]
        kwargs = dict(flags=cv.cv2.INTER_LINEAR | cv.cv2.WARP_INVERSE_MAP)

        def warp_part(part, shape):
            return cv._warp_affine(src, part, shape, "reflect", kwargs).reshape(*shape, -1)

        assert cv._resize_box(src, inverse, (ho, wo), None, warp_part) is not None
    for name in KERNELS:
        got = F.affine(img, m, (ho, wo), "bilinear", "reflect", kernel=name, antialias=False)
        ctx = f"{name} {img.shape} {dtype} box {top},{left} {bh}x{bw} -> {ho}x{wo}"
        assert_close_to_reference(got, img, ref, xs, ys, "bilinear", ctx)
        out = np.zeros_like(ref, dtype=dtype)
        into = F.affine(img, m, (ho, wo), "bilinear", "reflect", kernel=name, antialias=False,
                        out=out)  # fmt: skip
        assert into is out and np.array_equal(out, got), ctx


@pytest.mark.parametrize("name", KERNELS)
def test_box_resize_rounds_without_bias(name):
    img = random_image(np.random.default_rng(9), (300, 280, 3), np.uint8)
    top, left, bh, bw, ho, wo = 20, 30, 250, 230, 224, 224
    sx, sy = wo / bw, ho / bh
    m = np.array([[sx, 0.0, 0.5 * sx - 0.5 - sx * left], [0.0, sy, 0.5 * sy - 0.5 - sy * top]])
    ref, _, _ = ref_warp(img, m, (ho, wo), "bilinear", "reflect", 0)
    got = F.affine(img, m, (ho, wo), "bilinear", "reflect", kernel=name, antialias=False)
    err = got.astype(np.float64) - ref
    assert abs(err.mean()) < 0.05, f"{name}: mean error {err.mean():+.3f} grey levels"
    assert np.abs(err).max() <= 1.0 + 1e-9, f"{name}: max error {np.abs(err).max():.3f}"


@pytest.mark.skipif("opencv" not in KERNELS, reason="OpenCV is not installed")
@pytest.mark.parametrize("border", ["reflect", "edge", "constant"])
def test_opencv_rgb_warped_as_rgba_equals_each_channel_warped_alone(border):
    """The OpenCV kernel warps 3-channel uint8 as RGBA (its vectorised path): the values must
    be exactly those of warping each channel on its own, for maps inside and across the edge."""
    from augment.ops.kernels import opencv_kernel

    rng = np.random.default_rng(11)
    img = random_image(rng, (90, 120, 3), np.uint8)
    for angle, tx in [(17.0, 0.0), (-40.0, 30.0), (5.0, -70.0)]:
        m = forward_matrix((90, 120), (48, 64), angle, 0.7, 0.8, 0.1, tx, 5.0)
        inverse = np.linalg.inv(np.vstack([m, [0.0, 0.0, 1.0]]))[:2]
        got = opencv_kernel.warp(img, inverse, (48, 64), "bilinear", border, 9)
        alone = [
            opencv_kernel.warp(
                np.ascontiguousarray(img[:, :, i : i + 1]), inverse, (48, 64), "bilinear", border, 9
            )  # fmt: skip
            for i in range(3)
        ]
        assert np.array_equal(got, np.concatenate(alone, axis=2)), (border, angle, tx)
