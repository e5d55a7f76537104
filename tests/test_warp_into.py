"""Warping straight into a batch buffer (``out=``): the same pixels as the allocating path for
every geometric op and combination, every kernel, dtype and channel count, antialiasing on
and off and reduced decoding; pipelines that cannot write there (a non-geometric tail, a user
callable, a shape or dtype that does not match) leave ``out`` alone and still work."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from PIL import Image
from support import random_image

import augment.sources.data as data
from augment.loading.rng import sample_rng
from augment.ops import functional as F
from augment.ops import kernels
from augment.ops.compose import Compose
from augment.ops.transforms import (
    CenterCrop,
    RandomCrop,
    RandomFlip,
    RandomResizedCrop,
    RandomRotate,
    RandomRotate90,
    RandomRowJitter,
    RandomScale,
    Resize,
)
from augment.ops.warp_plan import SamplePlan
from augment.sources.photographs import photo

KERNELS = kernels.available()

# Each op's output for a 48x40 input is at least 24x24 (RandomScale, RandomRotate keep
# most of it), so a crop to 16 after any of them fits.
OPS = {
    "flip": lambda: RandomFlip(0.5, 0.5),
    "rot90": lambda: RandomRotate90(0.7),
    "rotate": lambda: RandomRotate(30),
    "rotate_nearest": lambda: RandomRotate(20, interpolation="nearest", border="constant"),
    "scale": lambda: RandomScale(0.6, 1.2),
    "resize": lambda: Resize(24),
    "resize_hw": lambda: Resize((20, 28)),
    "resized_crop": lambda: RandomResizedCrop(16),
    "crop": lambda: RandomCrop(16),
    "center": lambda: CenterCrop(16),
}
COMBOS = [(name,) for name in OPS] + [
    ("flip", "rot90", "rotate", "scale", "crop"),  # the Kaggle pipeline
    ("resized_crop", "flip"),
    ("resize", "center"),
    ("rotate", "resized_crop"),
    ("flip", "rot90"),
    ("resize_hw", "rotate_nearest"),
    ("scale", "resize", "crop"),
]


def _pipeline(names, kernel, antialias=True):
    return Compose([OPS[n]() for n in names], kernel=kernel, antialias=antialias)


def _both(t, img, key):
    """The allocating output and the output written into a fresh buffer, same draws."""
    expected = t(img, sample_rng(7, 1, key))
    out = np.full((3, *expected.shape), 77, dtype=expected.dtype)
    slot = out[1]  # slot 1 of a batch
    got = t(img, sample_rng(7, 1, key), out=slot)
    assert got is slot, "the warp made a new array instead of filling the slot"
    return expected, got, out


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("names", COMBOS, ids="+".join)
@pytest.mark.parametrize("antialias", [True, False], ids=["aa", "no-aa"])
def test_warp_into_the_buffer_gives_the_allocating_pixels(kernel, names, antialias):
    t = _pipeline(names, kernel, antialias)
    for key, (shape, dtype) in enumerate(
        itertools.product([(48, 40, 3), (48, 40), (40, 48, 4), (48, 40, 1)], [np.uint8, np.float32])
    ):
        img = random_image(key, shape, dtype)
        expected, got, out = _both(t, img, key)
        assert np.array_equal(out[1], expected)
        assert (out[0] == 77).all() and (out[2] == 77).all()  # nothing spilled over


@pytest.mark.parametrize("kernel", KERNELS)
def test_two_channels_and_five_also_go_into_the_buffer(kernel):
    """Channel counts OpenCV warps in groups (2 and 5 channels)."""
    t = _pipeline(("flip", "rotate", "scale", "crop"), kernel)
    for c in (2, 5):
        img = random_image(c, (40, 40, c))
        expected, got, out = _both(t, img, c)
        assert np.array_equal(out[1], expected)


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_one_pixel_output_goes_into_the_buffer(kernel):
    """The numpy kernel's packed 3-channel write has no spare byte after the last pixel."""
    t = Compose([RandomRotate(30), RandomScale(0.9, 1.1), RandomCrop(1)], kernel=kernel)
    for key in range(8):
        expected, got, out = _both(t, random_image(key, (1, 1, 3)), key)
        assert np.array_equal(out[1], expected)


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_geometric_transform_alone_and_the_functional_op_write_into_out(kernel):
    img = random_image(3, (50, 60, 3))
    t = RandomRotate(25)
    out = np.empty((50, 60, 3), np.uint8)
    assert t(img, sample_rng(0, 0, 1), out=out) is out
    assert np.array_equal(out, t(img, sample_rng(0, 0, 1)))
    matrix = np.array([[0.3, 0.1, 2.0], [-0.1, 0.3, 1.0]])  # shrinks more than 2x
    for antialias in (True, False):
        expected = F.affine(img, matrix, (15, 17), kernel=kernel, antialias=antialias)
        out = np.empty((15, 17, 3), np.uint8)
        F.affine(img, matrix, (15, 17), kernel=kernel, antialias=antialias, out=out)
        assert np.array_equal(out, expected)


def test_affine_refuses_an_out_of_the_wrong_shape_dtype_or_layout():
    img = random_image(0, (20, 20, 3))
    m = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]])
    with pytest.raises(ValueError, match=r"out must be a uint8 array of shape \(10, 10, 3\)"):
        F.affine(img, m, (10, 10), out=np.empty((10, 10, 4), np.uint8))
    with pytest.raises(ValueError, match="out must be a uint8 array"):
        F.affine(img, m, (10, 10), out=np.empty((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        F.affine(img, m, (10, 10), out=np.empty((10, 20, 3), np.uint8)[:, ::2])


def jpeg(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("antialias", [True, False], ids=["aa", "no-aa"])
def test_reduced_decode_then_warp_into_the_buffer(kernel, antialias):
    """A JPEG decoded at 1/2, 1/4 or 1/8 and warped into the slot: the pixels of the same
    reduced decode warped into a new array."""
    t = Compose([RandomResizedCrop(32), RandomFlip()], kernel=kernel, antialias=antialias)
    reduced = 0
    for i in range(10):
        blob = jpeg(photo(np.random.default_rng(i), 240, 320))
        plan = SamplePlan(t, sample_rng(3, 0, i))
        small = data.decode_image(blob, reduce=plan)
        expected = plan.finish(small)
        again = SamplePlan(t, sample_rng(3, 0, i))
        small_again = data.decode_image(blob, reduce=again)
        out = np.zeros((2, 32, 32, 3), np.uint8)
        slot = out[0]
        assert again.finish(small_again, slot) is slot
        assert np.array_equal(out[0], expected) and not out[1].any()
        reduced += plan.plan.reduction > 1
    assert reduced >= 4  # some of these draws decode smaller


def _gain(img, rng):
    """A user callable: the image alone, brighter."""
    return np.clip(img.astype(np.float32) * 1.1, 0, 255).astype(img.dtype)


@pytest.mark.parametrize(
    "steps",
    [
        [RandomFlip(), RandomRotate(20), RandomCrop(16), RandomRowJitter(0.2)],
        [RandomResizedCrop(16), _gain],
        [_gain],
        [RandomRowJitter(0.1), RandomFlip(), RandomCrop(16)],  # a warp after it: written in
        [],
    ],
    ids=["geometric+jitter", "resized_crop+callable", "callable", "jitter+geometric", "empty"],
)
def test_a_pipeline_ending_otherwise_still_works(steps):
    """A tail that is not geometric (or nothing at all) returns its own array, or copies
    into ``out``; either way the pixels are the allocating path's."""
    t = Compose(steps)
    img = random_image(5, (32, 32, 3))
    expected = t(img, sample_rng(1, 2, 3))
    out = np.full((2, *expected.shape), 9, np.uint8)
    slot = out[0]
    got = t(img, sample_rng(1, 2, 3), out=slot)
    assert np.array_equal(got, expected)
    assert got is not img
    if got is not slot:
        assert (out == 9).all()  # untouched: the loader copies ``got`` in
    # written in where the pipeline ends with a warp, or is empty (a copy)
    assert (not steps or isinstance(steps[-1], RandomCrop)) == (got is slot)


def test_an_out_that_does_not_match_is_left_alone():
    t = Compose([RandomFlip(), RandomCrop(16)])
    img = random_image(1, (32, 32, 3))
    expected = t(img, sample_rng(0, 0, 0))
    for out in (
        np.zeros((16, 16, 4), np.uint8),  # channels
        np.zeros((16, 16, 3), np.float32),  # dtype
        np.zeros((17, 16, 3), np.uint8),  # shape
        np.zeros((16, 32, 3), np.uint8)[:, ::2],  # layout
    ):
        got = t(img, sample_rng(0, 0, 0), out=out)
        assert got is not out and np.array_equal(got, expected) and not out.any()
