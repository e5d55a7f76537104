"""Targets move with the image: masks against a hand-written nearest warp by the image's own
matrix, boxes and keypoints against masks drawn from them, every box format, bad targets
named with their sample, batches bit-identical on every backend."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from support import SAMPLE

import augment
from augment.ops import geometry
from augment.ops import targets as T
from augment.ops.sample_targets import BadTargetError

FILES = sorted(SAMPLE.glob("*.jpg"))[:24]
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def RNG():
    return np.random.default_rng(0)


def planned(compose, shape, seed):
    """The folded warp ``compose`` draws for ``shape`` from ``seed`` (a pipeline of geometric
    steps only: one warp)."""
    return compose.plan(shape, np.random.default_rng(seed)).warp


def reference_nearest(mask, pending, fill=0):
    """Nearest-neighbour by hand: each output pixel's centre mapped back by the inverse of the
    image's matrix, rounded half up, the border rule applied; and which samples sit within
    1e-3 of a tie (kernels may round those either way)."""
    a, b, c, d, e, f = geometry.inverse(pending.entries)
    ho, wo = pending.shape
    h, w = mask.shape[:2]
    ys, xs = np.mgrid[0:ho, 0:wo].astype(np.float64)
    sx, sy = a * xs + b * ys + c, d * xs + e * ys + f
    ix, iy = np.floor(sx + 0.5).astype(np.int64), np.floor(sy + 0.5).astype(np.int64)
    tie = (np.abs((sx + 0.5) - np.round(sx + 0.5)) < 1e-3) | (
        np.abs((sy + 0.5) - np.round(sy + 0.5)) < 1e-3
    )
    outside = (ix < 0) | (ix >= w) | (iy < 0) | (iy >= h)
    if pending.border == "reflect":  # reflect-101: -1 -> 1, w -> w - 2
        ix = np.abs(ix) % (2 * w - 2) if w > 1 else ix * 0
        ix = np.where(ix >= w, 2 * w - 2 - ix, ix)
        iy = np.abs(iy) % (2 * h - 2) if h > 1 else iy * 0
        iy = np.where(iy >= h, 2 * h - 2 - iy, iy)
    ix, iy = np.clip(ix, 0, w - 1), np.clip(iy, 0, h - 1)
    out = mask[iy, ix]
    if pending.border == "constant":
        out[outside] = fill
    return out, tie


def class_map(shape, classes=6, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, classes, (max(shape[0] // 4, 1), max(shape[1] // 4, 1)))
    big = np.kron(small, np.ones((4, 4), dtype=np.int64))[: shape[0], : shape[1]]
    out = np.zeros(shape, dtype=np.int64)
    out[: big.shape[0], : big.shape[1]] = big
    return out.astype(dtype)


PIPELINES = {
    "rotate constant": lambda: augment.Compose(
        [augment.RandomRotate(40, border="constant"), augment.RandomCrop(30)], mask_fill=9
    ),
    "rotate reflect + scale": lambda: augment.Compose(
        [augment.RandomFlip(0.5, 0.5), augment.RandomRotate(25), augment.RandomScale(0.6, 1.4)]
    ),
    "resized crop": lambda: augment.Compose([augment.RandomResizedCrop((28, 36))]),
    "kaggle": lambda: augment.kaggle_pipeline(24),
}


@pytest.mark.parametrize("name", list(PIPELINES))
@pytest.mark.parametrize("kernel", augment.ops.kernels.available())
def test_masks_match_a_hand_warp_by_the_images_matrix(name, kernel):
    compose = PIPELINES[name]()
    compose.kernel = kernel
    img = np.zeros((40, 52, 3), dtype=np.uint8)
    mask = class_map((40, 52), seed=1)
    checked = 0
    for seed in range(12):
        pending = planned(compose, img.shape[:2], seed)
        out = compose({"image": img, "mask": mask}, np.random.default_rng(seed))
        expected, tie = reference_nearest(mask, pending, fill=compose.mask_fill)
        assert out["mask"].shape == expected.shape == out["image"].shape[:2]
        differ = (out["mask"] != expected) & ~tie
        assert not differ.any(), f"seed {seed}: {np.argwhere(differ)[:5].tolist()}"
        checked += int((~tie).sum())
    assert checked > 12 * 500


@pytest.mark.parametrize(
    "steps,expected",
    [
        ([augment.RandomFlip(1.0, 0.0)], lambda m: m[:, ::-1]),
        ([augment.RandomFlip(1.0, 1.0)], lambda m: m[::-1, ::-1]),
        ([augment.CenterCrop((20, 31))], lambda m: m[10:30, 10:41]),
        ([augment.RandomFlip(0.0, 1.0), augment.CenterCrop((40, 30))], lambda m: m[::-1, 11:41]),
    ],
)
def test_flips_and_crops_are_exact(steps, expected):
    mask = class_map((40, 52), classes=200, seed=2, dtype=np.int32)
    out = augment.Compose(steps)({"image": mask.astype(np.uint8), "mask": mask}, RNG())
    np.testing.assert_array_equal(out["mask"], expected(mask))
    assert out["mask"].dtype == np.int32


def test_quarter_turns_are_exact_and_match_the_image():
    mask = class_map((40, 52), classes=250, seed=3)
    compose = augment.Compose([augment.RandomRotate90(1.0), augment.RandomFlip()])
    turns = set()
    for seed in range(20):
        out = compose({"image": mask, "mask": mask}, np.random.default_rng(seed))
        np.testing.assert_array_equal(out["mask"], out["image"])  # same pixels moved
        k = next(k for k in (1, 2, 3) for m in (mask, mask[:, ::-1]) if _is_rot(out, m, k))
        turns.add(k)
    assert turns == {1, 2, 3}


def _is_rot(out, m, k):
    r = np.rot90(m, k)
    return r.shape == out["mask"].shape and np.array_equal(out["mask"], r)


def test_a_nearest_image_warp_and_its_mask_take_the_same_pixels():
    # the mask is the image's own channel: a nearest rotation must move both alike
    img = class_map((48, 48), classes=250, seed=4)
    compose = augment.Compose(
        [augment.RandomRotate(35, interpolation="nearest", border="constant")], mask_fill=0
    )
    for seed in range(10):
        out = compose({"image": img, "mask": img.copy()}, np.random.default_rng(seed))
        np.testing.assert_array_equal(out["mask"], out["image"])


def test_a_float_mask_is_warped_as_a_float_image():
    rng = np.random.default_rng(5)
    soft = rng.random((40, 40), dtype=np.float32)
    compose = augment.Compose([augment.RandomRotate(30), augment.RandomScale(0.3, 0.5)])
    out = compose({"image": soft[:, :, None], "mask": soft}, np.random.default_rng(1))
    assert out["mask"].dtype == np.float32
    np.testing.assert_array_equal(out["mask"], out["image"][:, :, 0])
    assert len(np.unique(out["mask"])) > 50  # linear: new values, as for the image


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from([np.uint8, np.int8, np.uint16, np.int32, np.int64, np.bool_]),
    degrees=st.floats(0, 180),
    low=st.floats(0.2, 1.0),
    span=st.floats(0, 1.5),
    border=st.sampled_from(["reflect", "edge", "constant"]),
    channels=st.sampled_from([None, 1, 3]),
)
def test_no_new_class_values_under_rotation_and_scale(
    seed, dtype, degrees, low, span, border, channels
):
    classes = 2 if dtype is np.bool_ else 7
    values = np.array([0, 3, 5, 100, -2, 77, 1][:classes])
    if dtype in (np.uint8, np.uint16):
        values = np.abs(values)
    if dtype is np.int32 or dtype is np.int64:
        values = values * 100_003  # bytes that differ from one another
    mask = values[class_map((33, 45), classes=classes, seed=seed % 1000)].astype(dtype)
    if channels is not None:
        mask = np.repeat(mask[:, :, None], channels, axis=2)
    fill = 0 if dtype is np.bool_ else (255 if dtype is np.uint8 else 7)
    compose = augment.Compose(
        [augment.RandomRotate(degrees, border=border), augment.RandomScale(low, low + span)],
        mask_fill=fill,
    )
    img = np.zeros((33, 45), dtype=np.uint8)
    out = compose({"image": img, "mask": mask}, np.random.default_rng(seed))["mask"]
    assert out.dtype == mask.dtype and out.shape[:2] == out.shape[:2]
    allowed = set(np.unique(mask).tolist()) | {fill}
    assert set(np.unique(out).tolist()) <= allowed


def _rect_sample(shape, rect):
    (h, w), (x0, y0, x1, y1) = shape, rect  # pixel columns x0..x1-1, rows y0..y1-1
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[y0:y1, x0:x1] = 1
    corners = [[x0 + 0.5, y0 + 0.5], [x1 - 0.5, y0 + 0.5], [x0 + 0.5, y1 - 0.5]]
    return {
        "image": np.zeros((h, w, 3), dtype=np.uint8),
        "mask": mask,
        "boxes": np.array([rect], dtype=np.float32),
        "labels": np.array([7]),
        "keypoints": np.array(corners),
    }


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    shape=st.tuples(st.integers(24, 64), st.integers(24, 64)),
    corners=st.tuples(*[st.floats(0, 1)] * 4),
    degrees=st.one_of(st.just(0.0), st.floats(0, 180)),
    scale=st.tuples(st.floats(0.5, 1.5), st.floats(0, 0.5)),
    crop=st.booleans(),
)
def test_the_mapped_box_encloses_the_warped_mask_within_a_pixel(
    seed, shape, corners, degrees, scale, crop
):
    h, w = shape
    xa, xb = sorted((int(corners[0] * (w - 1)), int(corners[1] * (w - 1))))
    ya, yb = sorted((int(corners[2] * (h - 1)), int(corners[3] * (h - 1))))
    sample = _rect_sample(shape, (xa, ya, xb + 1, yb + 1))
    steps = [
        augment.RandomFlip(0.5, 0.5),
        augment.RandomRotate90(0.5),
        augment.RandomRotate(degrees, border="constant"),
        augment.RandomScale(scale[0], scale[0] + scale[1]),
    ]
    if crop:
        steps.append(augment.RandomResizedCrop((20, 28), scale=(0.3, 1.0)))
    out = augment.Compose(steps, box_format="xyxy")(sample, np.random.default_rng(seed))
    ys, xs = np.nonzero(out["mask"])
    if len(xs) == 0:  # too thin to keep a pixel centre, or out of view
        return
    assert len(out["boxes"]) == 1 and out["labels"].tolist() == [7]
    bx0, by0, bx1, by1 = out["boxes"][0].tolist()
    # the mask's pixels, as continuous extents, inside the box give or take one pixel
    assert bx0 - 1 <= xs.min() and xs.max() + 1 <= bx1 + 1
    assert by0 - 1 <= ys.min() and ys.max() + 1 <= by1 + 1
    if degrees == 0:  # axis-aligned: the box is the mask's extent, give or take a pixel
        assert xs.min() <= bx0 + 1 and bx1 - 1 <= xs.max() + 1
        assert ys.min() <= by0 + 1 and by1 - 1 <= ys.max() + 1
    oh, ow = out["mask"].shape
    for x, y, visible in out["keypoints"].tolist():  # pixel centres of the rectangle
        inside = 0 <= x < ow and 0 <= y < oh
        assert visible == float(inside)
        if inside and not crop and min(xb - xa, yb - ya) * scale[0] >= 3:  # not too thin
            i, j = int(y), int(x)
            near = out["mask"][max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2]
            assert near.any(), (x, y)


def test_boxes_leaving_the_view_drop_with_their_labels_and_fields():
    h, w = 60, 80
    boxes = np.array(
        [[0, 0, 10, 10], [15, 15, 25, 35], [35, 5, 45, 15], [40, 50, 50, 60], [5, 20, 30, 30]],
        dtype=np.float32,
    )
    labels = torch.tensor([10, 11, 12, 13, 14])
    scores = [0.1, 0.2, 0.3, 0.4, 0.5]
    sample = {
        "image": np.zeros((h, w, 3), np.uint8),
        "boxes": boxes,
        "labels": labels,
        "scores": scores,
        "id": "a",
    }
    compose = augment.Compose(
        [augment.CenterCrop((40, 40))], min_visibility=0.5, box_fields=("labels", "scores")
    )
    out = compose(sample, RNG())  # the window is x 20..60, y 10..50
    # visible fractions: 0, 5/10, 1, 0, 10/25
    assert out["labels"].tolist() == [11, 12]
    assert out["scores"] == [0.2, 0.3]
    np.testing.assert_array_equal(out["boxes"], [[0, 5, 5, 25], [15, 0, 25, 5]])
    assert out["id"] == "a"
    small = augment.Compose([augment.CenterCrop((40, 40))], min_size=6)(sample, RNG())
    assert small["labels"].tolist() == [14]  # 10x10 kept; 5x20 and 10x5 are under 6 px


@pytest.mark.parametrize("mode", ["mark", "drop"])
def test_keypoints_out_of_the_frame_are_marked_or_dropped(mode):
    points = np.array([[1.0, 1.0, 1.0], [30.0, 30.0, 1.0], [35.0, 25.0, 0.0], [70.0, 1.0, 1.0]])
    sample = {"image": np.zeros((60, 80), np.uint8), "keypoints": points, "names": list("abcd")}
    compose = augment.Compose(
        [augment.CenterCrop((40, 40))], keypoints=mode, keypoint_fields=("names",)
    )
    out = compose(sample, RNG())
    if mode == "mark":
        np.testing.assert_array_equal(out["keypoints"][:, 2], [0, 1, 0, 0])
        np.testing.assert_array_equal(out["keypoints"][:, :2], points[:, :2] - [20, 10])
    else:
        np.testing.assert_array_equal(out["keypoints"], [[10, 20, 1], [15, 15, 0]])
        assert out["names"] == ["b", "c"]


@pytest.mark.parametrize("box_format", T.BOX_FORMATS)
def test_every_box_format_round_trips(box_format):
    shape = (30, 70)  # not square: normalised formats divide x by 70, y by 30
    xyxy = np.array([[3.0, 4.0, 20.0, 29.0], [0.0, 0.0, 70.0, 30.0], [10.5, 7.25, 11.0, 9.0]])
    given_boxes = T.from_xyxy(xyxy, box_format, shape)
    np.testing.assert_allclose(T.to_xyxy(given_boxes, box_format, shape), xyxy, atol=1e-4)
    sample = {"image": np.zeros(shape, np.uint8), "boxes": given_boxes}
    twice = augment.Compose(  # two flips and two half turns: back where it was
        [augment.RandomFlip(1.0, 1.0), augment.RandomRotate90(1.0), augment.RandomFlip(1.0, 1.0)],
        box_format=box_format,
    )
    rng = np.random.default_rng(0)
    k = twice.plan(shape, np.random.default_rng(0)).warp.shape
    out = twice(sample, rng)
    back = T.to_xyxy(out["boxes"], box_format, k)
    turned = T.clip_boxes(T.map_boxes(xyxy, planned(twice, shape, 0).entries, k), k)
    np.testing.assert_allclose(back, turned, atol=1e-4)


def test_yolo_boxes_on_a_non_square_image_follow_flips_and_quarter_turns():
    shape = (40, 100)
    yolo = np.array([[0.2, 0.25, 0.1, 0.3]])  # centre x 20, y 10; 10 wide, 12 high
    sample = {"image": np.zeros(shape, np.uint8), "boxes": yolo}
    flip = augment.Compose([augment.RandomFlip(1.0)], box_format="yolo")(sample, RNG())
    np.testing.assert_allclose(flip["boxes"], [[0.8, 0.25, 0.1, 0.3]], atol=1e-6)
    turn = augment.Compose([augment.RandomRotate90(1.0)], box_format="yolo")
    for seed in range(6):
        k = turn.transforms[0].make_params(shape, np.random.default_rng(seed))["k"]
        got = turn(sample, np.random.default_rng(seed))["boxes"][0]
        # np.rot90 by k: the centre (x, y) in pixels, then normalised by the new shape
        x, y, bw, bh = 20.0, 10.0, 10.0, 12.0
        for _ in range(k):  # one counter-clockwise turn of a w x h image: (x, y) -> (y, w - x)
            x, y, bw, bh = y, 100.0 - x if _ % 2 == 0 else 40.0 - x, bh, bw
        out_w, out_h = (100, 40) if k % 2 == 0 else (40, 100)
        np.testing.assert_allclose(got, [x / out_w, y / out_h, bw / out_w, bh / out_h], atol=1e-6)


def test_instance_masks_named_as_box_fields_drop_with_their_boxes():
    h, w = 40, 60
    boxes = np.array([[0, 0, 10, 10], [25, 15, 35, 25], [50, 30, 60, 40]], dtype=np.float32)
    masks = np.zeros((3, h, w), np.uint8)
    for k, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
        masks[k, y0:y1, x0:x1] = 1
    compose = augment.Compose([augment.CenterCrop((20, 30))], box_fields=("labels", "masks"))
    sample = {"image": np.zeros((h, w), np.uint8), "boxes": boxes, "masks": masks}
    out = compose({**sample, "labels": [1, 2, 3]}, RNG())  # the window: x 15..45, y 10..30
    assert out["labels"] == [2] and out["masks"].shape == (1, 20, 30)
    np.testing.assert_array_equal(out["masks"][0], masks[1, 10:30, 15:45])


@SETTINGS
@given(
    box_format=st.sampled_from(T.BOX_FORMATS),
    shape=st.tuples(st.integers(1, 4000), st.integers(1, 4000)),
    corners=st.lists(st.tuples(*[st.floats(0, 1)] * 4), min_size=0, max_size=20),
)
def test_box_formats_convert_both_ways(box_format, shape, corners):
    h, w = shape
    xyxy = np.array(
        [[min(a, b) * w, min(c, d) * h, max(a, b) * w, max(c, d) * h] for a, b, c, d in corners]
    ).reshape(-1, 4)
    there = T.from_xyxy(xyxy, box_format, shape)
    np.testing.assert_allclose(T.to_xyxy(there, box_format, shape), xyxy, atol=4000 * 2e-7)


def test_instance_masks_move_as_the_mask_does():
    mask = class_map((30, 40), classes=4, seed=6)
    masks = [(mask == c).astype(np.uint8) for c in range(4)]
    compose = augment.Compose([augment.RandomRotate(30), augment.RandomCrop(20)])
    out = compose({"image": mask, "mask": mask, "masks": masks}, np.random.default_rng(2))
    assert out["masks"].shape == (4, 20, 20)
    for c in range(4):
        np.testing.assert_array_equal(out["masks"][c], out["mask"] == c)


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(mask=np.zeros((10, 12), np.uint8)), "the mask is 10x12 but the image is 32x40"),
        (dict(boxes=np.array([[5.0, 1, 2, 8]])), r"boxes\[0\] .* \(x1 < x0"),
        (
            dict(boxes=np.array([[1.0, 1, 2, 8], [0, np.nan, 3, 4]]), labels=[1, 2]),
            r"boxes\[1\] is not finite",
        ),
        (dict(boxes=np.zeros((2, 3))), "boxes must be N x 4"),
        (dict(mask=np.zeros((32, 40), np.float64)), "mask dtype float64 is not accepted"),
        (dict(labels=[1, 2, 3]), "'labels' has 3 entries but there are 1 boxes"),
        (dict(keypoints=[[1.0, float("inf")]]), r"keypoints\[0\] is not finite"),
    ],
)
def test_a_bad_target_is_a_value_error_naming_the_sample(change, message):
    sample = {
        "image": np.zeros((32, 40, 3), np.uint8),
        "boxes": np.array([[1.0, 1, 4, 4]]),
        "labels": [1],
        **change,
    }
    with pytest.raises(ValueError, match=message) as info:
        augment.Compose([augment.RandomFlip()])(sample, np.random.default_rng(0))
    assert isinstance(info.value, BadTargetError) and "the sample" in str(info.value)


def test_bad_arguments_and_unsupported_steps_fail_when_built():
    with pytest.raises(ValueError, match="box_format must be one of xyxy, xywh"):
        augment.Compose([], box_format="pascal")
    with pytest.raises(ValueError, match="min_visibility must be in"):
        augment.Compose([], min_visibility=2)
    with pytest.raises(ValueError, match="keypoints must be one of mark, drop"):
        augment.Compose([], keypoints="hide")

    def blur(img, rng):
        return img

    with pytest.raises(ValueError, match=r"transforms\[1\] .* does not support mask targets"):
        augment.Compose([augment.RandomFlip(), blur], targets=("mask",))
    augment.Compose([augment.RandomFlip(), blur], targets=("labels",))  # nothing to move
    blur.supported_targets = frozenset(T.KINDS)  # it says it leaves targets alone
    augment.Compose([augment.RandomFlip(), blur, augment.RandomRowJitter()], targets=("mask",))
    nested = augment.Compose([augment.Compose([augment.RandomFlip()])])
    with pytest.raises(ValueError, match=r"transforms\[0\] Compose"):
        nested({"image": np.zeros((4, 4), np.uint8), "mask": np.zeros((4, 4), np.uint8)}, RNG())
    with pytest.raises(ValueError, match=r"got a tuple: .* Compose\(targets=\('mask',\)\)"):
        augment.Compose([])((np.zeros((4, 4), np.uint8), np.zeros((4, 4))), RNG())


def test_torch_and_pil_masks_are_read_as_arrays():
    img = np.zeros((6, 8, 3), np.uint8)
    chw = torch.arange(2 * 6 * 8).reshape(2, 6, 8)  # C x H x W, as torch keeps images
    out = augment.Compose([augment.RandomFlip(1.0)])({"image": img, "mask": chw}, RNG())
    np.testing.assert_array_equal(out["mask"], chw.permute(1, 2, 0).numpy()[:, ::-1])
    palette = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(6, 8), mode="P")
    out = augment.Compose([augment.RandomFlip(1.0)])({"image": img, "mask": palette}, RNG())
    np.testing.assert_array_equal(out["mask"], np.arange(48).reshape(6, 8)[:, ::-1])


def test_without_a_transform_targets_are_checked_and_batched_as_they_are():
    with augment.Loader(Segmentation(), batch_size=4, shuffle=False) as loader:
        batch = next(iter(loader))
    first = Segmentation()[0]
    assert batch["mask"].shape == (4, 256, 256)
    np.testing.assert_array_equal(batch["mask"][0].numpy(), first["mask"])
    np.testing.assert_allclose(batch["boxes"][0].numpy(), first["boxes"], rtol=1e-6)


def test_a_tuple_sample_is_read_as_its_targets_say():
    img, mask = np.arange(12, dtype=np.uint8).reshape(3, 4), np.arange(12).reshape(3, 4)
    out = augment.Compose([augment.RandomFlip(1.0)], targets=("mask",))((img, mask, "x"), RNG())
    assert isinstance(out, tuple) and len(out) == 3 and out[2] == "x"
    np.testing.assert_array_equal(out[1], mask[:, ::-1])


# ---- through the Loader ----------------------------------------------------------------


class Segmentation:
    """Sample JPEGs with a class map made from their pixels, boxes and labels drawn from the
    index, a pass-through id; one sample (``bad``) with a mask of the wrong size."""

    def __init__(self, bad: int | None = None, as_tuple: bool = False):
        self.bad, self.as_tuple = bad, as_tuple

    def __len__(self):
        return len(FILES)

    def __getitem__(self, i):
        img = np.asarray(Image.open(FILES[i]).convert("RGB"))
        mask = (img[:, :, 1] // 64).astype(np.int64)
        if i == self.bad:
            mask = mask[:-1]
        if self.as_tuple:
            return img, mask, i
        rng = np.random.default_rng(i)
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 200, (n, 2))
        boxes = np.column_stack((xy, xy + rng.uniform(4, 60, (n, 2))))
        return {"image": img, "mask": mask, "boxes": boxes, "labels": np.arange(n) + i, "id": i}


def seg_pipeline():
    return augment.Compose(
        [
            augment.RandomResizedCrop(96, scale=(0.3, 1.0)),
            augment.RandomFlip(),
            augment.RandomRotate(20, border="constant"),
        ],
        min_visibility=0.25,
        mask_fill=255,
    )


def _epoch(dataset, transform, backend, workers, **kw):
    with augment.Loader(
        dataset, transform, batch_size=8, backend=backend, workers=workers, seed=11, **kw
    ) as loader:
        return list(loader)


def _assert_same(a, b, where):
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.slow
def test_batches_with_targets_are_bit_identical_on_every_backend():
    runs = {
        (backend, workers): _epoch(Segmentation(), seg_pipeline(), backend, workers)
        for backend, workers in [("serial", 0), ("thread", 2), ("process", 2), ("torch", 2)]
    }
    reference = runs["serial", 0]
    first = reference[0]
    assert first["image"].shape == (8, 3, 96, 96) and first["mask"].shape == (8, 96, 96)
    assert first["mask"].dtype == torch.int64
    assert set(torch.unique(first["mask"]).tolist()) <= {0, 1, 2, 3, 255}
    assert isinstance(first["boxes"], list) and len(first["boxes"]) == 8
    assert all(b.shape[1:] == (4,) and b.dtype == torch.float32 for b in first["boxes"])
    assert [len(x) for x in first["labels"]] == [len(b) for b in first["boxes"]]
    assert sum(len(b) for batch in reference for b in batch["boxes"]) > 10
    for key, batches in runs.items():
        _assert_same(reference, batches, str(key))


@pytest.mark.parametrize("dtype", [np.uint8, np.int32])
def test_a_batchs_masks_are_each_samples_own_with_a_sample_skipped(dtype):
    # uint8 class maps are warped straight into the batch's mask array (where the source is
    # at most twice the output's area: 256 x 256 onto 192 x 192), others copied there; either
    # way each row is what the pipeline gives that sample alone, rows after a skipped one too
    from augment.loading.batch import BatchPlan, BatchTask, make_batch, target_transform
    from augment.loading.rng import KeyedRng
    from augment.sources.samples import MapStyle

    data = []
    for i, item in enumerate(Segmentation(bad=3)):
        if i == 8:
            break
        data.append({**item, "mask": item["mask"].astype(dtype)})
    steps = seg_pipeline().transforms
    pipeline = augment.Compose([augment.RandomResizedCrop(192), *steps[1:]], mask_fill=255)
    task = BatchTask(MapStyle(data), pipeline, 5, "skip", None, *target_transform(pipeline))
    result = make_batch(task, BatchPlan(0, 0, tuple(range(8))))
    assert [source for source, _ in result.skipped] == ["list[3]"]
    masks = result.targets.fields["mask"]
    assert masks.shape == (7, 192, 192) and masks.dtype == dtype
    for row, i in enumerate([0, 1, 2, 4, 5, 6, 7]):
        alone = pipeline(data[i], KeyedRng(5).at(0, i))
        assert np.array_equal(masks[row], alone["mask"]), (row, i)
        assert np.array_equal(result.images[row], alone["image"]), (row, i)


class Detection:
    """Random images with boxes in ``box_format`` and labels; sample 2 has no boxes, the
    samples in ``bad_boxes`` a NaN box or one that runs backwards, ``bad_image`` raises a
    ``BadImageError``."""

    def __init__(self, box_format="xyxy", bad_boxes=(), bad_image=None, n=10):
        self.box_format, self.bad_boxes, self.bad_image, self.n = (
            box_format,
            bad_boxes,
            bad_image,
            n,
        )

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i == self.bad_image:
            raise augment.BadImageError(f"detection[{i}]", "unreadable")
        rng = np.random.default_rng(i)
        shape = (64, 80)
        img = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        n = 0 if i == 2 else int(rng.integers(1, 30))
        xy = rng.uniform(0, 60, (n, 2))
        xyxy = np.column_stack((xy, xy + rng.uniform(1, 30, (n, 2))))
        boxes = T.from_xyxy(xyxy, self.box_format, shape).astype(
            np.float64 if i % 3 else np.float32
        )
        if i % 4 == 3:  # a view of a wider table, as a label file's columns give
            boxes = np.column_stack((np.zeros(n), boxes))[:, 1:]
        if i in self.bad_boxes:
            backwards = T.from_xyxy(np.array([[9.0, 9, 1, 1]]), self.box_format, shape)[0]
            boxes[-1] = [np.nan, 1, 2, 3] if i % 2 else backwards
        return {"image": img, "boxes": boxes, "labels": np.arange(n) + 100 * i}


def _detection_batch(dataset, pipeline, on_error):
    from augment.loading.batch import BatchPlan, BatchTask, make_batch, target_transform
    from augment.sources.samples import MapStyle

    task = BatchTask(MapStyle(dataset), pipeline, 3, on_error, None, *target_transform(pipeline))
    return make_batch(task, BatchPlan(0, 0, tuple(range(len(dataset)))))


@pytest.mark.parametrize(
    "box_format,min_visibility,min_size", [("xyxy", 0.0, 0.0), ("yolo", 0.4, 2.0)]
)
def test_a_batchs_boxes_are_each_samples_own_and_bad_ones_leave_the_batch(
    box_format, min_visibility, min_size
):
    # a batch's boxes are moved together once every sample is made: each sample's must be
    # what the pipeline gives it alone, bit for bit, with the samples whose boxes turn out
    # bad left out (skip: in order, the rows after them moved up) or the batch's error
    from augment.loading.rng import KeyedRng

    data = Detection(box_format, bad_boxes=(4, 7))
    steps = [augment.RandomResizedCrop(48), augment.RandomFlip(), augment.RandomRotate(30)]
    pipeline = augment.Compose(
        steps, box_format=box_format, min_visibility=min_visibility, min_size=min_size
    )
    result = _detection_batch(data, pipeline, "skip")
    assert [source for source, _ in result.skipped] == ["Detection[4]", "Detection[7]"]
    assert "not finite" in result.skipped[1][1] and "far edge" in result.skipped[0][1]
    kept = [0, 1, 2, 3, 5, 6, 8, 9]
    fields = result.targets.fields
    assert len(result.images) == len(fields["boxes"]) == len(kept)
    dropped = 0
    for row, i in enumerate(kept):
        alone = pipeline(data[i], KeyedRng(3).at(0, i))
        assert np.array_equal(result.images[row], alone["image"]), (row, i)
        assert fields["boxes"][row].dtype == np.float32
        assert np.array_equal(fields["boxes"][row], alone["boxes"]), (row, i)
        assert np.array_equal(fields["labels"][row], alone["labels"]), (row, i)
        dropped += len(data[i]["boxes"]) - len(alone["boxes"])
    assert len(fields["boxes"][kept.index(2)]) == 0 and dropped > 0
    with pytest.raises(BadTargetError, match=r"the sample: boxes\[\d+\] = "):
        pipeline(data[4], np.random.default_rng(0))
    assert _detection_batch(data, pipeline, "raise").error.source == "Detection[4]"


def test_a_batchs_box_fields_of_any_kind_drop_with_their_boxes():
    # labels as arrays of two dtypes, as lists, and a field of strings: each sample's rows
    # in the batch are the ones its boxes kept alone
    from augment.loading.rng import KeyedRng

    class Fields(Detection):
        def __getitem__(self, i):
            sample = super().__getitem__(i)
            n = len(sample["boxes"])
            if i % 3 == 0:
                sample["labels"] = sample["labels"].tolist()
            elif i % 3 == 1:
                sample["labels"] = sample["labels"].astype(np.int32)
            sample["names"] = [f"box{i}.{k}" for k in range(n)]
            return sample

    data = Fields()
    steps = [augment.RandomResizedCrop(40, scale=(0.1, 0.4)), augment.RandomRotate(30)]
    pipeline = augment.Compose(steps, box_fields=("labels", "names"))
    fields = _detection_batch(data, pipeline, "raise").targets.fields
    dropped = 0
    for i in range(len(data)):
        alone = pipeline(data[i], KeyedRng(3).at(0, i))
        assert np.array_equal(np.asarray(fields["labels"][i]), np.asarray(alone["labels"]))
        assert list(fields["names"][i]) == list(alone["names"])
        assert len(fields["names"][i]) == len(fields["boxes"][i])
        dropped += len(data[i]["boxes"]) - len(alone["boxes"])
    assert dropped > 0


def test_a_bad_box_before_a_bad_image_is_the_batchs_error():
    # the boxes are checked when the batch is made, after the bad image stopped it: the
    # error is still the first bad sample's
    pipeline = augment.Compose([augment.RandomFlip()])
    result = _detection_batch(Detection(bad_boxes=(3,), bad_image=6), pipeline, "raise")
    assert isinstance(result.error, BadTargetError) and result.error.source == "Detection[3]"
    result = _detection_batch(Detection(bad_boxes=(3, 8), bad_image=6), pipeline, "skip")
    assert [s for s, _ in result.skipped] == ["Detection[3]", "detection[6]", "Detection[8]"]
    assert len(result.images) == 7


def test_padded_targets_hold_counts():
    plain = _epoch(Segmentation(), seg_pipeline(), "serial", 0)[0]
    padded = _epoch(Segmentation(), seg_pipeline(), "serial", 0, pad_targets=True)[0]
    counts = [len(b) for b in plain["boxes"]]
    assert padded["num_boxes"].tolist() == counts
    assert padded["boxes"].shape == (8, max(counts), 4)
    for i, n in enumerate(counts):
        assert torch.equal(padded["boxes"][i, :n], plain["boxes"][i])
        assert torch.equal(padded["labels"][i, :n], plain["labels"][i])
        assert (padded["labels"][i, n:] == -1).all()
    with pytest.raises(ValueError, match="more than pad_targets=1"):
        _epoch(Segmentation(), seg_pipeline(), "serial", 0, pad_targets=1)
    with pytest.raises(ValueError, match="pad_targets must be False"):
        augment.Loader(Segmentation(), pad_targets=-1)


def test_a_bad_mask_names_its_sample_and_on_error_skips_it():
    with pytest.raises(ValueError, match=r"Segmentation\[5\].*the mask is 255x256"):
        _epoch(Segmentation(bad=5), seg_pipeline(), "serial", 0, shuffle=False)
    with augment.Loader(
        Segmentation(bad=5), seg_pipeline(), batch_size=8, on_error="skip", shuffle=False
    ) as loader:
        batches = list(loader)
    assert [len(b["id"]) for b in batches] == [7, 8, 8]
    assert 5 not in batches[0]["id"].tolist()
    assert [s for s, _ in loader.skipped] == ["Segmentation[5]"]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["thread", "process"])
def test_a_sample_with_bad_boxes_leaves_its_batch_on_every_backend(backend):
    # a batch's boxes are checked when they move, in the worker, after the images are in
    # the batch buffer (shared memory on processes): the rows after the bad sample move up
    data = Detection(bad_boxes=(4,), n=16)
    pipeline = augment.Compose([augment.RandomResizedCrop(48), augment.RandomRotate(30)])
    runs = {}
    for name, workers in (("serial", 0), (backend, 2)):
        with augment.Loader(
            data, pipeline, batch_size=8, backend=name, workers=workers, on_error="skip", seed=2
        ) as loader:
            runs[name] = list(loader)
            assert [s for s, _ in loader.skipped] == ["Detection[4]"]
    assert sorted(len(b["image"]) for b in runs["serial"]) == [7, 8]
    labels = torch.cat([lab for b in runs["serial"] for lab in b["labels"]])
    assert not ((labels >= 400) & (labels < 500)).any()  # sample 4's: 400, 401, ...
    for b in runs["serial"]:
        assert [len(x) for x in b["boxes"]] == [len(x) for x in b["labels"]]
    _assert_same(runs["serial"], runs[backend], backend)


def test_tuple_samples_move_their_mask_only_when_told():
    told = _epoch(Segmentation(as_tuple=True), seg_pipeline(), "serial", 0, targets=("mask",))
    images, masks, ids = told[0]
    assert masks.shape == (8, 96, 96) and ids.shape == (8,)
    with pytest.raises(ValueError, match="does not support mask targets"):

        def plain(img):
            return img

        augment.Loader(Segmentation(as_tuple=True), plain, targets=("mask",))


@pytest.mark.slow
def test_the_albumentations_adapter_moves_masks_and_boxes_bit_identically_everywhere():
    A = pytest.importorskip("albumentations", reason="the albumentations extra is not installed")

    pipeline = A.Compose(
        [
            A.RandomResizedCrop((96, 96), scale=(0.3, 1.0)),
            A.HorizontalFlip(),
            A.Rotate(limit=20, border_mode=0),
        ],
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"]),
    )
    transform = augment.adapters.albumentations(pipeline)
    runs = {
        (backend, workers): _epoch(Segmentation(), transform, backend, workers)
        for backend, workers in [("serial", 0), ("thread", 2), ("process", 2), ("torch", 2)]
    }
    reference = runs["serial", 0]
    first = reference[0]
    assert first["mask"].shape == (8, 96, 96)
    assert [len(x) for x in first["labels"]] == [len(b) for b in first["boxes"]]
    assert first["labels"][0].dtype == torch.int64  # albumentations' floats made ints again
    assert sum(len(b) for batch in reference for b in batch["boxes"]) > 10
    for key, batches in runs.items():
        _assert_same(reference, batches, str(key))
    with pytest.raises(ValueError, match="has no keypoint_params"):
        augment.Loader(Segmentation(), transform, targets=("keypoints",))


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    ray.init(
        address="local",  # a cluster of its own, never one another process started
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    # Ray's workers cannot import this test module: send its dataset class by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    ray.shutdown()


@pytest.mark.slow
def test_ray_batches_with_targets_equal_serial(ray_cluster):
    serial = _epoch(Segmentation(), seg_pipeline(), "serial", 0)
    ray = _epoch(Segmentation(), seg_pipeline(), "ray", 2)
    assert len(ray) == 3 and sum(len(b) for b in ray[0]["boxes"]) > 0
    _assert_same(serial, ray, "ray")


def test_the_examples_in_docs_targets_run(monkeypatch):
    doc = (SAMPLE.parent.parent / "docs" / "targets.md").read_text()
    blocks = [b.split("```", 1)[0] for b in doc.split("```python\n")[1:]]
    assert len(blocks) == 3
    monkeypatch.chdir(SAMPLE.parent.parent)  # the examples read data/sample
    ran = []
    for block in blocks:
        namespace: dict = {"__name__": "docs_example"}
        exec(compile(block, "docs/targets.md", "exec"), namespace)
        ran.append(namespace)
    masks = ran[0]["masks"]
    assert masks.shape == (16, 192, 192) and masks.dtype == torch.int64
    assert set(torch.unique(masks).tolist()) <= {0, 1, 2, 3, 255}
    assert len(ran[1]["batch"]["boxes"]) == 8 and ran[1]["padded"]["boxes"].ndim == 3
    assert ran[2]["brightness"].supported_targets == frozenset(T.KINDS)


@pytest.mark.slow
def test_the_targets_benchmark_runs_and_prints_its_table():
    root = SAMPLE.parent.parent
    out = subprocess.run(
        [sys.executable, "scripts/benchmark.py", "targets", "--images", "2", "--rounds", "1"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    for row in ("| image alone |", "| image + integer mask |", "| image + 50 boxes |"):
        assert row in out.stdout
    assert "target <= +30%" in out.stdout
    out = subprocess.run(
        [sys.executable, "scripts/benchmark.py", "targets", "--paired", "batch", "--images", "2"]
        + ["--rounds", "1", "--size", "128", "--crop", "96"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    ratios = dict(re.findall(r"(image[^,:]*?) (\d+\.\d+)x", out.stdout.split(": ", 1)[1]))
    assert list(ratios) == [
        "image alone",
        "image + 0 boxes",
        "image + integer mask",
        "image + 50 boxes",
    ]
    assert float(ratios["image alone"]) == 1.0


def test_the_albumentations_adapter_moves_keypoints_from_the_samples_rng():
    A = pytest.importorskip("albumentations", reason="the albumentations extra is not installed")
    pipeline = A.Compose(
        [A.HorizontalFlip(p=1.0), A.Affine(rotate=(-30, 30), p=1.0)],
        keypoint_params=A.KeypointParams(format="xy", label_fields=["names"]),
    )
    adapter = augment.adapters.albumentations(pipeline)
    sample = {
        "image": np.zeros((40, 60, 3), np.uint8),
        "keypoints": np.array([[10.0, 20.0], [50.0, 5.0]]),
        "names": np.array([3, 4]),
        "id": "x",
    }
    a = adapter(dict(sample), np.random.default_rng(7))
    b = adapter(dict(sample), np.random.default_rng(7))
    other = adapter(dict(sample), np.random.default_rng(8))
    assert a["id"] == "x" and a["names"].dtype == sample["names"].dtype
    np.testing.assert_array_equal(a["keypoints"], b["keypoints"])
    assert not np.array_equal(a["keypoints"], other["keypoints"])  # the rng decides
    assert a["keypoints"].dtype == np.float32 and len(a["keypoints"]) == len(a["names"])
