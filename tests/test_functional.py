"""augment.ops.functional: exact ops against numpy slicing, rotate / scale against Pillow, and the
error paths. Kernel-by-kernel resampling accuracy lives in test_kernels.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from support import random_image, smooth_image

from augment.ops import functional as F
from augment.ops import kernels

KERNELS = kernels.available()
SHAPES_HW = [(1, 1), (1, 7), (7, 1), (5, 8), (8, 5), (6, 6)]
CHANNELS = [None, 1, 2, 3, 4, 5]
DTYPES = [np.uint8, np.float32]


def images(h, w, dtype, seed=0):
    """One random image per channel count: (H, W) and (H, W, C) for C in 1..5."""
    rng = np.random.default_rng(seed)
    for c in CHANNELS:
        yield random_image(rng, (h, w) if c is None else (h, w, c), dtype)


def check_new_array(out, img, before):
    """The functional contract: C-contiguous, same dtype, new memory, input untouched."""
    assert out.flags.c_contiguous
    assert out.dtype == img.dtype
    assert not np.shares_memory(out, img)
    assert np.array_equal(img, before)


# --------------------------------------------------------------------------- exact ops


@pytest.mark.parametrize("hw", SHAPES_HW)
@pytest.mark.parametrize("dtype", DTYPES)
def test_flips_match_numpy(hw, dtype):
    for img in images(*hw, dtype):
        before = img.copy()
        for op, expected in ((F.hflip, img[:, ::-1]), (F.vflip, img[::-1])):
            out = op(img)
            assert out.shape == img.shape
            assert np.array_equal(out, expected)
            check_new_array(out, img, before)


@pytest.mark.parametrize("hw", SHAPES_HW)
@pytest.mark.parametrize("dtype", DTYPES)
def test_rot90_matches_numpy_for_all_k(hw, dtype):
    for img in images(*hw, dtype):
        before = img.copy()
        for k in range(-9, 10):
            out = F.rot90(img, k)
            expected = np.rot90(img, k)
            assert out.shape == expected.shape, k
            assert np.array_equal(out, expected), k
            check_new_array(out, img, before)
        assert np.array_equal(F.rot90(img), np.rot90(img))  # default k=1
        assert np.array_equal(F.rot90(img, np.int64(3)), np.rot90(img, 3))


@pytest.mark.parametrize("hw", SHAPES_HW)
@pytest.mark.parametrize("dtype", DTYPES)
def test_crop_matches_slicing(hw, dtype):
    h, w = hw
    rng = np.random.default_rng(1)
    for img in images(h, w, dtype):
        before = img.copy()
        windows = [(0, 0, h, w), (h - 1, w - 1, 1, 1), (0, w - 1, h, 1), (h - 1, 0, 1, w)]
        for _ in range(10):
            ch, cw = int(rng.integers(1, h + 1)), int(rng.integers(1, w + 1))
            windows.append(
                (int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw)
            )
        for top, left, ch, cw in windows:
            out = F.crop(img, top, left, ch, cw)
            assert np.array_equal(out, img[top : top + ch, left : left + cw])
            check_new_array(out, img, before)


@pytest.mark.parametrize("hw", SHAPES_HW)
@pytest.mark.parametrize("dtype", DTYPES)
def test_center_crop_is_centred_window(hw, dtype):
    h, w = hw
    for img in images(h, w, dtype, seed=2):
        before = img.copy()
        for ch in range(1, h + 1):
            for cw in range(1, w + 1):
                out = F.center_crop(img, ch, cw)
                assert out.shape[:2] == (ch, cw)
                # where is it? the margins may differ by one, the extra pixel bottom-right
                top, left = (h - ch) // 2, (w - cw) // 2
                bottom, right = h - ch - top, w - cw - left
                assert top <= bottom <= top + 1 and left <= right <= left + 1
                assert np.array_equal(out, img[top : top + ch, left : left + cw])
                check_new_array(out, img, before)
        assert np.array_equal(F.center_crop(img, h, w), img)


def test_center_crop_odd_margin_rounds_up_left():
    img = np.arange(5 * 6, dtype=np.uint8).reshape(5, 6)
    # 5 -> 2 rows: margin 3 = 1 above + 2 below; 6 -> 3 cols: margin 3 = 1 left + 2 right
    assert np.array_equal(F.center_crop(img, 2, 3), img[1:3, 1:4])


@pytest.mark.parametrize("dtype", DTYPES)
def test_exact_ops_accept_non_contiguous_views(dtype):
    base = random_image(np.random.default_rng(3), (9, 12, 4), dtype)
    for view in (base[::2, ::3], base[:, :, 1:3], base.transpose(1, 0, 2), np.asfortranarray(base)):
        before = view.copy()
        assert np.array_equal(F.hflip(view), view[:, ::-1])
        assert np.array_equal(F.vflip(view), view[::-1])
        for k in range(4):
            out = F.rot90(view, k)
            assert out.flags.c_contiguous and np.array_equal(out, np.rot90(view, k))
        assert np.array_equal(F.crop(view, 1, 1, 2, 2), view[1:3, 1:3])
        assert np.array_equal(view, before)


# --------------------------------------------------------------------------- rotate


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("hw", SHAPES_HW)
@pytest.mark.parametrize("dtype", DTYPES)
def test_rotate_zero_and_full_turn_are_identity(name, hw, dtype):
    for img in images(*hw, dtype, seed=4):
        before = img.copy()
        for angle in (0, 0.0, 360, -360, 720):
            out = F.rotate(img, angle, kernel=name)
            assert np.array_equal(out, img), angle
            check_new_array(out, img, before)


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("n", [1, 2, 5, 6])
@pytest.mark.parametrize("dtype", DTYPES)
def test_rotate_quarter_turns_square_equal_rot90(name, n, dtype):
    for img in images(n, n, dtype, seed=5):
        before = img.copy()
        for angle, k in ((90, 1), (180, 2), (270, 3), (-90, 3), (-180, 2), (450, 1)):
            for interpolation in ("bilinear", "nearest"):
                out = F.rotate(img, angle, interpolation, kernel=name)
                assert np.array_equal(out, np.rot90(img, k)), (angle, interpolation)
                check_new_array(out, img, before)


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("hw", SHAPES_HW)
def test_rotate_180_any_shape_equals_rot90_twice(name, hw):
    for img in images(*hw, np.uint8, seed=6):
        assert np.array_equal(F.rotate(img, 180, kernel=name), np.rot90(img, 2))


@pytest.mark.parametrize("name", KERNELS)
def test_rotate_is_counter_clockwise_about_centre(name):
    """A dot 3 px right of the centre of a 9x9 image goes up by 30 degrees."""
    img = np.zeros((9, 9), np.float32)
    img[4, 7] = 1.0
    out = F.rotate(img, 30, border="constant", kernel=name)
    assert out.shape == (9, 9)
    ys, xs = np.mgrid[0:9, 0:9]
    total = out.sum()
    cx, cy = (xs * out).sum() / total, (ys * out).sum() / total
    assert cx == pytest.approx(4 + 3 * math.cos(math.radians(30)), abs=0.15)
    assert cy == pytest.approx(4 - 3 * math.sin(math.radians(30)), abs=0.15)


def _interior_after_rotation(h, w, angle, margin):
    """Output pixels whose source (CCW rotation about the centre) lies `margin` px inside."""
    cx, cy = (w - 1) / 2, (h - 1) / 2
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    t = math.radians(angle)
    sx = cx + math.cos(t) * (xs - cx) - math.sin(t) * (ys - cy)
    sy = cy + math.sin(t) * (xs - cx) + math.cos(t) * (ys - cy)
    return (sx >= margin) & (sx <= w - 1 - margin) & (sy >= margin) & (sy <= h - 1 - margin)


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("angle", [7.0, 23.5, -41.0, 133.0, -170.0])
@pytest.mark.parametrize("hw", [(32, 32), (27, 40)])
def test_rotate_matches_pillow_on_interior(name, angle, hw):
    h, w = hw
    img = smooth_image(h, w)
    ours = F.rotate(img, angle, kernel=name)
    assert ours.shape == img.shape and ours.dtype == np.uint8
    theirs = np.asarray(Image.fromarray(img).rotate(angle, resample=Image.Resampling.BILINEAR))
    mask = _interior_after_rotation(h, w, angle, margin=2)
    assert mask.sum() > 0.3 * h * w
    diff = np.abs(ours.astype(int) - theirs.astype(int))[mask]
    assert diff.max() <= 2, f"max diff {diff.max()} on the interior"


@pytest.mark.parametrize("name", KERNELS)
def test_rotate_float32_matches_uint8(name):
    """The same smooth image as float32 in 0..1 rotates to the same values (scaled)."""
    img8 = smooth_image(20, 24)
    imgf = img8.astype(np.float32) / 255
    out8 = F.rotate(img8, 37, kernel=name).astype(np.float64)
    outf = F.rotate(imgf, 37, kernel=name).astype(np.float64) * 255
    assert np.abs(out8 - outf).max() <= 1.0 + 1e-3


@pytest.mark.parametrize("name", KERNELS)
def test_rotate_accepts_read_only_and_non_contiguous_input(name):
    base = smooth_image(20, 22, 4)
    ro = base.copy()
    ro.flags.writeable = False
    expected = F.rotate(base, 25, kernel=name)
    assert np.array_equal(F.rotate(ro, 25, kernel=name), expected)
    view = base[:, :, 1:4]
    assert np.array_equal(
        F.rotate(view, 25, kernel=name), F.rotate(np.ascontiguousarray(view), 25, kernel=name)
    )


# --------------------------------------------------------------------------- scale


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.floats(0.05, 5.0))
def test_scale_output_shape(h, w, factor):
    ho, wo = round(h * factor), round(w * factor)
    img = np.zeros((h, w, 2), np.uint8)
    if min(ho, wo) < 1:
        with pytest.raises(ValueError, match="shrinks"):
            F.scale(img, factor)
        return
    out = F.scale(img, factor)
    assert out.shape == (ho, wo, 2)


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("hw", SHAPES_HW)
@pytest.mark.parametrize("dtype", DTYPES)
def test_scale_by_one_is_identity(name, hw, dtype):
    for img in images(*hw, dtype, seed=7):
        before = img.copy()
        out = F.scale(img, 1.0, kernel=name)
        assert np.array_equal(out, img)
        check_new_array(out, img, before)


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("factor", [1.01, 1.5, 2.0, 2.3, 3.0])
@pytest.mark.parametrize("hw", [(16, 16), (13, 21)])
def test_scale_up_matches_pillow_resize_on_interior(name, factor, hw):
    h, w = hw
    img = np.random.default_rng(8).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ours = F.scale(img, factor, kernel=name)
    ho, wo = round(h * factor), round(w * factor)
    assert ours.shape == (ho, wo, 3)
    theirs = np.asarray(Image.fromarray(img).resize((wo, ho), Image.Resampling.BILINEAR))
    m = int(math.ceil(factor)) + 1  # drop a band at least one source pixel wide
    diff = np.abs(ours.astype(int) - theirs.astype(int))[m:-m, m:-m]
    assert diff.size and diff.max() <= 1, f"max diff {diff.max()}"


@pytest.mark.parametrize("name", KERNELS)
def test_scale_single_pixel_is_constant(name):
    img = np.array([[[10, 200, 33]]], np.uint8)
    out = F.scale(img, 3, kernel=name)
    assert out.shape == (3, 3, 3)
    assert np.array_equal(out, np.broadcast_to(img, (3, 3, 3)))


@pytest.mark.parametrize("name", KERNELS)
def test_scale_down_of_constant_image_is_constant(name):
    img = np.full((10, 12, 3), 123, np.uint8)
    assert np.array_equal(F.scale(img, 0.5, kernel=name), np.full((5, 6, 3), 123, np.uint8))


# --------------------------------------------------------------------------- errors

OPS = {
    "hflip": F.hflip,
    "vflip": F.vflip,
    "rot90": lambda img: F.rot90(img, 1),
    "crop": lambda img: F.crop(img, 0, 0, 1, 1),
    "center_crop": lambda img: F.center_crop(img, 1, 1),
    "rotate": lambda img: F.rotate(img, 10),
    "scale": lambda img: F.scale(img, 1.5),
    "affine": lambda img: F.affine(img, np.eye(2, 3), (2, 2)),
}


@pytest.mark.parametrize("op", OPS.values(), ids=OPS.keys())
def test_bad_images_are_rejected(op):
    cases = [
        ([[1, 2], [3, 4]], "numpy array"),
        ("img", "numpy array"),
        (None, "numpy array"),
        (np.zeros(5, np.uint8), r"\(H, W\)"),
        (np.zeros((2, 2, 2, 2), np.uint8), r"\(H, W\)"),
        (np.zeros((), np.uint8), r"\(H, W\)"),
        (np.zeros((3, 3), np.float64), "float64"),
        (np.zeros((3, 3), np.int16), "int16"),
        (np.zeros((3, 3), bool), "bool"),
        (np.zeros((0, 4), np.uint8), "empty"),
        (np.zeros((4, 0, 3), np.uint8), "empty"),
        (np.zeros((4, 4, 0), np.float32), "empty"),
    ]
    for img, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            op(img)


def test_dtype_error_says_what_is_accepted():
    with pytest.raises(ValueError, match="uint8 or float32"):
        F.hflip(np.zeros((3, 3), np.float64))


IMG = np.zeros((6, 8, 3), np.uint8)


@pytest.mark.parametrize(
    "call, pattern",
    [
        (lambda: F.crop(IMG, 0, 0, 7, 1), "outside"),
        (lambda: F.crop(IMG, 0, 0, 1, 9), "outside"),
        (lambda: F.crop(IMG, -1, 0, 2, 2), "outside"),
        (lambda: F.crop(IMG, 0, -1, 2, 2), "outside"),
        (lambda: F.crop(IMG, 5, 0, 2, 2), "outside"),
        (lambda: F.crop(IMG, 0, 7, 2, 2), "outside"),
        (lambda: F.crop(IMG, 0, 0, 0, 2), "height"),
        (lambda: F.crop(IMG, 0, 0, 2, -1), "width"),
        (lambda: F.crop(IMG, 0.5, 0, 2, 2), "top"),
        (lambda: F.crop(IMG, 0, "1", 2, 2), "left"),
        (lambda: F.crop(IMG, 0, 0, 2.0, 2), "height"),
        (lambda: F.center_crop(IMG, 7, 8), "larger"),
        (lambda: F.center_crop(IMG, 6, 9), "larger"),
        (lambda: F.center_crop(IMG, 0, 3), "height"),
        (lambda: F.rot90(IMG, 1.5), "k must be"),
        (lambda: F.rot90(IMG, True), "k must be"),
        (lambda: F.rotate(IMG, float("nan")), "finite"),
        (lambda: F.rotate(IMG, float("inf")), "finite"),
        (lambda: F.rotate(IMG, -float("inf")), "finite"),
        (lambda: F.rotate(IMG, "ten"), "angle"),
        (lambda: F.scale(IMG, float("nan")), "finite"),
        (lambda: F.scale(IMG, float("inf")), "finite"),
        (lambda: F.scale(IMG, 0), "> 0"),
        (lambda: F.scale(IMG, -1.5), "> 0"),
        (lambda: F.scale(IMG, 0.01), "shrinks"),
        (lambda: F.scale(np.zeros((1, 1), np.uint8), 0.4), "shrinks"),
        (lambda: F.scale(IMG, 2, interpolation="cubic"), "interpolation"),
        (lambda: F.rotate(IMG, 10, interpolation="bicubic"), "interpolation"),
        (lambda: F.rotate(IMG, 10, border="wrap"), "border"),
        (lambda: F.rotate(IMG, 10, border="constant", fill=256), "fill"),
        (lambda: F.rotate(IMG, 10, border="constant", fill=-1), "fill"),
        (lambda: F.rotate(IMG, 10, border="constant", fill=float("nan")), "fill"),
        (lambda: F.rotate(IMG, 10, kernel="nope"), "nope"),
        (lambda: F.scale(IMG, 2, kernel="nope"), "nope"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_bad_arguments_are_rejected(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


def test_interpolation_and_border_errors_list_accepted_values():
    with pytest.raises(ValueError, match="nearest, bilinear"):
        F.rotate(IMG, 10, interpolation="cubic")
    with pytest.raises(ValueError, match="reflect, edge, constant"):
        F.rotate(IMG, 10, border="wrap")


def test_fill_outside_uint8_range_is_fine_for_float32():
    img = np.zeros((6, 8), np.float32)
    out = F.rotate(img, 45, border="constant", fill=300.0)
    assert out.max() == pytest.approx(300.0)


@pytest.mark.parametrize(
    "matrix, pattern",
    [
        (np.eye(3), "2x3"),
        (np.eye(2), "2x3"),
        ([1.0, 0, 0, 0, 1, 0], "2x3"),
        (np.eye(2, 3)[None], "2x3"),
        (None, "2x3"),
        ([[1.0, 0, float("nan")], [0, 1, 0]], "finite"),
        ([[1.0, 0, 0], [0, float("inf"), 0]], "finite"),
        (np.zeros((2, 3)), "singular"),
        ([[1.0, 2, 0], [2, 4, 0]], "singular"),
        ([[1e-8, 0, 0], [0, 1e-8, 0]], "singular"),
    ],
)
def test_bad_matrices_are_rejected(matrix, pattern):
    with pytest.raises(ValueError, match=pattern):
        F.affine(IMG, matrix, (4, 4))


def test_ragged_matrix_error_names_the_matrix():
    with pytest.raises(ValueError, match="2x3"):
        F.affine(IMG, [[1.0, 0, 0], [0, 1.0]], (4, 4))


@pytest.mark.parametrize("out_shape", [(0, 4), (4, 0), (-1, 4), (4, -3), (2.5, 4), (4, None)])
def test_bad_out_shape_values_are_rejected(out_shape):
    with pytest.raises(ValueError, match="out_shape"):
        F.affine(IMG, np.eye(2, 3), out_shape)


@pytest.mark.parametrize("out_shape", [5, (4,), (4, 4, 3), None])
def test_bad_out_shape_types_are_rejected(out_shape):
    with pytest.raises(ValueError, match="out_shape"):
        F.affine(IMG, np.eye(2, 3), out_shape)
