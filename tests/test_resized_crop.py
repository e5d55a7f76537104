"""RandomResizedCrop and Resize, antialiasing, and decoding JPEGs no larger than the warp
needs: the boxes' distribution, the fallback, the pixels against the functional ops, the
block mean, planned warps against plain calls, reduced decoding (same pixels from every
decoder, errors, how far from full decoding) and identical batches on every backend."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support import hang_guard, random_image, smooth_image

import augment
import augment.sources.data as data
from augment.loading.rng import sample_rng
from augment.ops import functional as F
from augment.ops import geometry, kernels
from augment.ops.compose import Compose
from augment.ops.transforms import (
    RandomFlip,
    RandomResizedCrop,
    RandomRotate,
    RandomRowJitter,
    RandomScale,
    Resize,
)
from augment.ops.warp_plan import SamplePlan
from augment.sources.photographs import photo, write_photos

KERNELS = kernels.available()


def rng(seed):
    return np.random.default_rng(seed)


def boxes(t: RandomResizedCrop, shape, n: int, seed: int = 0) -> np.ndarray:
    """(n, 4) top, left, height, width drawn by ``t`` for an image of ``shape``."""
    g = rng(seed)
    out = []
    for _ in range(n):
        p = t.make_params(shape, g)
        out.append((p["top"], p["left"], p["height"], p["width"]))
    return np.array(out)


def ks_uniform(values: np.ndarray, lo: float, hi: float) -> float:
    """Kolmogorov-Smirnov distance of ``values`` from the uniform law on [lo, hi]."""
    u = np.sort((values - lo) / (hi - lo))
    n = len(u)
    return float(max(np.max(np.arange(1, n + 1) / n - u), np.max(u - np.arange(n) / n)))


# --------------------------------------------------------------------------- the boxes

N_BOXES = 4000
KS_LIMIT = 1.63 / math.sqrt(N_BOXES)  # the 1% critical value: a fixed seed, far from it


def test_boxes_are_uniform_in_area_and_log_uniform_in_ratio_when_every_attempt_fits():
    # On a 1000x1000 image every box of at most half the area and ratio in [3/4, 4/3] fits,
    # so the first attempt is kept: its area fraction and log ratio are the drawn ones,
    # up to rounding the sides to whole pixels.
    t = RandomResizedCrop(64, scale=(0.08, 0.5))
    b = boxes(t, (1000, 1000), N_BOXES)
    area = b[:, 2] * b[:, 3] / 1e6
    log_ratio = np.log(b[:, 3] / b[:, 2])
    assert area.min() >= 0.08 * 0.99 and area.max() <= 0.5 * 1.01
    assert np.abs(log_ratio).max() <= math.log(4 / 3) + 0.01
    assert ks_uniform(area, 0.08, 0.5) < KS_LIMIT
    assert ks_uniform(log_ratio, math.log(3 / 4), math.log(4 / 3)) < KS_LIMIT
    # the position is uniform over where the box fits
    spare_h, spare_w = 1000 - b[:, 2], 1000 - b[:, 3]
    assert (b[:, 0] >= 0).all() and (b[:, 0] <= spare_h).all()
    assert (b[:, 1] >= 0).all() and (b[:, 1] <= spare_w).all()
    assert ks_uniform((b[:, 0] + 0.5) / (spare_h + 1), 0, 1) < KS_LIMIT + 0.01
    assert ks_uniform((b[:, 1] + 0.5) / (spare_w + 1), 0, 1) < KS_LIMIT + 0.01


def test_default_boxes_stay_in_the_ranges_and_the_image():
    t = RandomResizedCrop(224)
    h, w = 375, 500
    b = boxes(t, (h, w), N_BOXES, seed=3)
    assert (b[:, 0] >= 0).all() and (b[:, 0] + b[:, 2] <= h).all()
    assert (b[:, 1] >= 0).all() and (b[:, 1] + b[:, 3] <= w).all()
    area = b[:, 2] * b[:, 3] / (h * w)
    log_ratio = np.log(b[:, 3] / b[:, 2])
    assert area.min() >= 0.08 * 0.98 and area.max() <= 1.0
    assert np.abs(log_ratio).max() <= math.log(4 / 3) + 0.02
    # Large areas often fail to fit and are drawn again, so the kept areas lean small; but
    # the whole range is reached.
    assert area.min() < 0.1 and area.max() > 0.9
    assert 0.35 < np.median(area) < 0.55


@pytest.mark.parametrize(
    "shape, expected",
    [
        ((10, 1000), (0, 493, 10, 13)),  # too wide: full height, widest ratio (4/3), centred
        ((1000, 10), (493, 0, 13, 10)),  # too tall: full width, tallest ratio (3/4)
    ],
)
def test_fallback_when_no_box_fits_is_the_central_crop_clamped_to_the_ratio(shape, expected):
    t = RandomResizedCrop(32)
    for seed in range(20):  # no attempt can fit: every seed falls back to the same box
        p = t.make_params(shape, rng(seed))
        assert (p["top"], p["left"], p["height"], p["width"]) == expected


def test_fallback_is_the_whole_image_when_its_ratio_is_in_range():
    t = RandomResizedCrop(16, scale=(1.5, 2.0))  # larger than the image: no attempt fits
    p = t.make_params((30, 36), rng(0))
    assert p == {"top": 0, "left": 0, "height": 30, "width": 36}


def test_the_first_attempt_that_fits_is_kept():
    # On a 300x900 image (ratio 3) most attempts of a third to a half of the area are too
    # tall for any ratio up to 4/3: later attempts, or the fallback, decide.
    t = RandomResizedCrop(32, scale=(0.3, 0.6))
    h, w = 300, 900
    later = fallback = 0
    for seed in range(300):
        u = rng(seed).random(22)  # the draw make_params makes: 10 attempts, then position
        p = t.make_params((h, w), rng(seed))
        for k in range(10):
            area = h * w * (0.3 + 0.3 * u[2 * k])
            aspect = math.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * u[2 * k + 1])
            cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if cw <= w and ch <= h:
                assert (p["height"], p["width"]) == (ch, cw)
                assert p["top"] == int(u[20] * (h - ch + 1))
                assert p["left"] == int(u[21] * (w - cw + 1))
                later += k > 0
                break
        else:
            assert p == {"top": 0, "left": 250, "height": 300, "width": 400}
            fallback += 1
    assert later > 50 and 0 < fallback < 150


@pytest.mark.parametrize("name", KERNELS)
def test_random_resized_crop_pixels_are_the_functional_resized_crop(name):
    img = smooth_image(90, 120)
    t = RandomResizedCrop((40, 56))
    for seed in range(8):
        p = t.make_params(img.shape[:2], rng(seed))
        got = Compose([t], kernel=name)(img, rng(seed))
        want = F.resized_crop(
            img, p["top"], p["left"], p["height"], p["width"], (40, 56), kernel=name
        )
        assert got.shape == (40, 56, 3) and np.array_equal(got, want)


@pytest.mark.parametrize(
    "size, shape, out",
    [
        (64, (120, 160), (64, 85)),  # landscape: the shorter side (height) to 64
        (64, (160, 120), (85, 64)),  # portrait
        (64, (100, 100), (64, 64)),
        (256, (375, 500), (256, 341)),  # int(256 * 500 / 375) = 341, as torchvision
        ((30, 50), (120, 160), (30, 50)),  # exact
    ],
)
def test_resize_output_shape(size, shape, out):
    img = smooth_image(*shape)
    got = Resize(size)(img, rng(0))
    assert got.shape == (*out, 3)
    assert np.array_equal(got, F.resize(img, *out))


def test_resize_draws_nothing_and_is_the_same_for_every_seed():
    img = random_image(0, (40, 50, 3))
    g = rng(5)
    state = g.bit_generator.state
    Resize(20)(img, g)
    assert g.bit_generator.state == state
    assert np.array_equal(Resize(20)(img, rng(1)), Resize(20)(img, rng(2)))


@pytest.mark.parametrize(
    "make, pattern",
    [
        (lambda: RandomResizedCrop(0), "size"),
        (lambda: RandomResizedCrop(8, scale=(0.5, 0.2)), "scale"),
        (lambda: RandomResizedCrop(8, scale=(0, 1)), "scale"),
        (lambda: RandomResizedCrop(8, scale=0.5), "scale"),
        (lambda: RandomResizedCrop(8, ratio=(2, 1)), "ratio"),
        (lambda: RandomResizedCrop(8, ratio=(float("nan"), 1)), "ratio"),
        (lambda: Resize(0), "size"),
        (lambda: Resize((4, 0)), "size"),
        (lambda: Resize(2.5), "size"),
    ],
)
def test_invalid_arguments(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


def test_ops_of_experiment_configs_include_the_new_transforms():
    from augment.profiler.experiment import OPS

    assert OPS["RandomResizedCrop"] is RandomResizedCrop and OPS["Resize"] is Resize
    # TOML gives lists: the transform still prints and compares as built from tuples
    t = OPS["RandomResizedCrop"](size=32, scale=[0.2, 1.0], ratio=[0.5, 2.0])
    assert t == RandomResizedCrop(32, (0.2, 1.0), (0.5, 2.0))
    assert "scale=(0.2, 1.0)" in repr(t)


# --------------------------------------------------------------------------- antialias


def zone_plate(n: int) -> np.ndarray:
    y, x = np.mgrid[0:n, 0:n].astype(np.float64) - (n - 1) / 2
    return np.rint(127.5 + 127.5 * np.cos(np.pi * (x * x + y * y) / n)).astype(np.uint8)


@pytest.mark.parametrize("name", KERNELS)
def test_antialias_removes_most_of_the_aliasing_of_a_4x_shrink(name):
    img = np.repeat(zone_plate(256)[:, :, None], 3, axis=2)
    reference = np.asarray(Image.fromarray(img).resize((64, 64), Image.LANCZOS)).astype(float)
    plain = F.scale(img, 0.25, kernel=name, antialias=False).astype(float)
    smooth = F.scale(img, 0.25, kernel=name).astype(float)
    # without: false rings of full contrast; with: the fine rings average out to grey
    assert np.abs(plain - reference).mean() > 20
    assert np.abs(smooth - reference).mean() < 10


def test_antialias_only_where_the_warp_shrinks_by_more_than_2x():
    img = random_image(3, (64, 64, 3))
    for factor in (1.5, 0.75, 0.5):  # 0.5: exactly 2x, bilinear already averages 2x2
        assert np.array_equal(F.scale(img, factor), F.scale(img, factor, antialias=False))
    assert not np.array_equal(F.scale(img, 0.3), F.scale(img, 0.3, antialias=False))
    assert F.antialias_factors(geometry.resize((64, 64), (16, 16)), (64, 64)) == (4, 4)
    assert F.antialias_factors(geometry.resize((64, 90), (20, 30)), (64, 90)) == (2, 2)
    assert F.antialias_factors(geometry.resize((640, 900), (20, 30)), (640, 900)) == (16, 32)
    # a rotation does not change how much an axis shrinks
    m = geometry.then(geometry.rotation((64, 64), 37), geometry.resize((64, 64), (15, 15)))
    assert F.antialias_factors(m, (64, 64)) == (4, 4)
    # one axis only; never more than the image
    assert F.antialias_factors(geometry.resize((64, 64), (64, 10)), (64, 64)) == (4, 1)
    assert F.antialias_factors(geometry.resize((3, 64), (1, 64)), (3, 64)) == (1, 2)


def test_box_reduce_is_the_block_mean():
    g = rng(0)
    for shape, kx, ky in [((12, 18, 3), 2, 2), ((12, 18, 3), 3, 2), ((9, 16, 1), 4, 3)]:
        img = g.integers(0, 256, shape, dtype=np.uint8)
        h, w, c = shape
        want = img.reshape(h // ky, ky, w // kx, kx, c).astype(float).mean(axis=(1, 3))
        got = F.box_reduce(img, kx, ky)
        assert np.array_equal(got, np.floor(want + 0.5).astype(np.uint8))
        f = img.astype(np.float32) / 255
        assert np.allclose(F.box_reduce(f, kx, ky), want / 255, atol=1e-6)


def test_box_reduce_partial_blocks_repeat_the_edge_pixel():
    img = np.arange(5, dtype=np.uint8)[None, :].repeat(2, axis=0) * 10  # 0 10 20 30 40
    got = F.box_reduce(img, 2, 1)
    assert got.shape == (2, 3) and got[0].tolist() == [5, 25, 40]


def test_box_reduce_opencv_fast_path_is_bit_identical_to_numpy(monkeypatch):
    if F._cv2 is None:
        pytest.skip("OpenCV is not installed")
    for c, shape in [(1, (37, 51)), (3, (37, 51)), (4, (37, 51)), (3, (240, 321))]:
        img = random_image(c, (*shape, c))
        for kx, ky in [(2, 2), (2, 1), (4, 1), (4, 2), (8, 8), (16, 16), (1, 4), (3, 5)]:
            fast = F.box_reduce(img, kx, ky)
            monkeypatch.setattr(F, "_cv2", None)
            assert np.array_equal(fast, F.box_reduce(img, kx, ky)), (c, kx, ky)
            monkeypatch.undo()


@pytest.mark.parametrize("name", [k for k in KERNELS if k != "numpy"])
def test_kernels_agree_with_numpy_when_antialiasing(name):
    pipeline = [RandomRotate(30), RandomScale(0.2, 0.45), RandomResizedCrop(24)]
    reference, other = Compose(pipeline, kernel="numpy"), Compose(pipeline, kernel=name)
    for seed in range(10):
        img = random_image(seed, (160, 200, 3))
        a, b = reference(img, rng(seed)), other(img, rng(seed))
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_antialias_reduces_only_the_part_the_output_samples():
    # A small crop of a large image, 3x smaller: the same as antialiasing the crop alone.
    img = smooth_image(300, 400)
    t = Compose([RandomResizedCrop(20, scale=(0.02, 0.05))])
    for seed in range(5):
        p = t.transforms[0].make_params(img.shape[:2], rng(seed))
        whole = t(img, rng(seed))
        shrink = max(p["height"], p["width"]) / 20
        assert shrink > 2
        top, left = p["top"] // 60 * 60, p["left"] // 60 * 60  # on every block grid
        part = img[top:, left:]
        moved = F.resized_crop(
            part, p["top"] - top, p["left"] - left, p["height"], p["width"], (20, 20)
        )
        assert np.abs(whole.astype(int) - moved.astype(int)).max() <= 1


# --------------------------------------------------------------------------- plans


def test_plan_then_finish_is_calling_the_compose():
    img = smooth_image(150, 200)
    t = Compose([RandomResizedCrop(48), RandomFlip(), RandomRowJitter(0.1), RandomFlip(0, 1)])
    for seed in range(5):
        g = rng(seed)
        planned = t.finish(img, t.plan(img.shape[:2], g), g)
        assert np.array_equal(planned, t(img, rng(seed)))


def test_plan_reduction_is_what_the_warp_allows():
    shape = (400, 600)
    assert Compose([Resize((200, 300))]).plan(shape, rng(0)).reduction == 2
    assert Compose([Resize((100, 150))]).plan(shape, rng(0)).reduction == 4
    assert Compose([Resize((99, 149))]).plan(shape, rng(0)).reduction == 4
    assert Compose([Resize((40, 60))]).plan(shape, rng(0)).reduction == 8
    assert Compose([Resize((201, 301))]).plan(shape, rng(0)).reduction == 1
    # the smaller shrink decides: 4x across, 1.5x down
    assert Compose([Resize((266, 150))]).plan(shape, rng(0)).reduction == 1
    # a step before the warp needs the full pixels; nearest sampling is never box-filtered
    assert Compose([RandomRowJitter(), Resize(50)]).plan(shape, rng(0)).reduction == 1
    nearest = Compose([RandomScale(0.1, 0.1, interpolation="nearest")])
    assert nearest.plan(shape, rng(0)).reduction == 1


def test_finish_refuses_an_image_of_another_size():
    t = Compose([Resize((50, 75))])
    plan = t.plan((400, 600), rng(0))
    assert plan.reduction == 8
    t.finish(np.zeros((50, 75, 3), np.uint8), plan, rng(0))  # decoded at 1/8
    with pytest.raises(ValueError, match="planned for 400x600"):
        t.finish(np.zeros((100, 150, 3), np.uint8), plan, rng(0))


def test_a_bare_geometric_transform_plans_too():
    img = smooth_image(120, 160)
    t = RandomResizedCrop(32)
    for seed in range(4):
        g = rng(seed)
        assert np.array_equal(t.finish(img, t.plan(img.shape[:2], g), g), t(img, rng(seed)))


# --------------------------------------------------------------------------- reduced decode


def jpeg(img: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.mark.parametrize("fast", ["simplejpeg", "opencv", "pillow only"])
def test_reduced_decode_gives_the_same_pixels_with_every_decoder(monkeypatch, fast):
    blobs = [jpeg(photo(rng(i), h, w)) for i, (h, w) in enumerate([(75, 100), (101, 67)])]
    expected = {}
    for i, blob in enumerate(blobs):
        for k in (1, 2, 4, 8):
            im = Image.open(io.BytesIO(blob))
            im.draft("RGB", (im.width // k, im.height // k))
            expected[i, k] = np.asarray(im.convert("RGB"))
    if fast != "simplejpeg":
        monkeypatch.setattr(data, "_simplejpeg", None)
    if fast == "pillow only":
        monkeypatch.setattr(data, "_cv2", None)
    if fast == "simplejpeg" and data._simplejpeg is None:
        pytest.skip("simplejpeg is not installed")
    for i, blob in enumerate(blobs):
        for k in (1, 2, 4, 8):
            seen = []
            got = data.decode_image(
                blob, "x.jpg", lambda h, w, k=k, seen=seen: seen.append((h, w)) or k
            )
            h, w = Image.open(io.BytesIO(blob)).size[::-1]
            assert seen == [(h, w)]
            assert got.shape == (-(-h // k), -(-w // k), 3)
            assert np.array_equal(got, expected[i, k]), (fast, i, k)


def test_reduce_is_asked_only_for_plain_jpegs(tmp_path):
    img = photo(rng(0), 60, 80)
    png = io.BytesIO()
    Image.fromarray(img).save(png, "PNG")
    grey = io.BytesIO()
    Image.fromarray(img[:, :, 0]).save(grey, "JPEG")

    def never(h, w):
        raise AssertionError("called")

    for blob in (png.getvalue(), grey.getvalue()):
        assert data.decode_image(blob, "x", never).shape == (60, 80, 3)


def test_errors_of_reduce_are_the_transforms_not_the_files():
    blob = jpeg(photo(rng(0), 60, 80))

    class Mine(Exception):
        pass

    def broken(h, w):
        raise Mine("planning failed")

    with pytest.raises(Mine, match="planning failed"):
        data.decode_image(blob, "x.jpg", broken)
    with pytest.raises(ValueError, match="one of") as info:
        data.decode_image(blob, "x.jpg", lambda h, w: 3)
    assert not isinstance(info.value, augment.BadImageError)
    # a transform that cannot handle the image raises its own error through the decoder
    plan = SamplePlan(Compose([augment.RandomCrop(100)]), rng(0))
    with pytest.raises(ValueError, match="larger than the 60x80 image"):
        data.decode_image(blob, "x.jpg", plan)


def test_image_folder_reduced_decode_switch(tmp_path):
    write_photos(tmp_path, n=2, seed=1, classes=1)
    on, off = augment.ImageFolder(tmp_path), augment.ImageFolder(tmp_path, reduced_decode=False)
    assert on.reduced_decode and not off.reduced_decode and "reduced_decode=False" in repr(off)
    blob = on.read(0)
    full = off.decode(blob, 0)
    assert np.array_equal(off.decode(blob, 0, lambda h, w: 4), full)
    assert on.decode(blob, 0, lambda h, w: 4).shape == (
        -(-full.shape[0] // 4),
        -(-full.shape[1] // 4),
        3,
    )


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return 10 * math.log10(255**2 / mse)


def test_reduced_decode_is_close_to_full_decode_then_warp():
    """Photograph-like JPEGs through RandomResizedCrop(64) + flip: decoded smaller where the
    warp shrinks 2x or more, against full decoding then the same warp (antialiased)."""
    t = Compose([RandomResizedCrop(64), RandomFlip()])
    scores, reduced = [], 0
    for i in range(12):
        blob = jpeg(photo(rng(100 + i), 300, 400))
        full = t(data.decode_image(blob), sample_rng(0, 0, i))
        plan = SamplePlan(t, sample_rng(0, 0, i))
        small = plan.finish(data.decode_image(blob, reduce=plan))
        reduced += plan.plan.reduction > 1
        scores.append(psnr(small, full) if not np.array_equal(small, full) else 99.0)
    assert reduced >= 6  # most of these draws shrink 300x400 to 64x64 by 2x or more
    # (a half-pixel error in where the reduced pixels lie gives 31 and 33 dB here)
    assert min(scores) > 38 and np.median(scores) > 42


# --------------------------------------------------------------------------- the loader


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    write_photos(root, n=12, seed=2, classes=3)
    return root


def pipeline():
    return Compose([RandomResizedCrop(40), RandomFlip()])


def epoch(dataset, backend: str, workers: int) -> list[torch.Tensor]:
    with (
        hang_guard(),
        augment.Loader(
            dataset, pipeline(), batch_size=4, backend=backend, workers=workers, seed=3
        ) as loader,
    ):
        return [images for images, _ in loader]


@pytest.mark.slow
def test_reduced_decode_batches_are_identical_on_every_backend(photos):
    dataset = augment.ImageFolder(photos)
    serial = epoch(dataset, "serial", 1)
    full = epoch(augment.ImageFolder(photos, reduced_decode=False), "serial", 1)
    assert len(serial) == 3 and all(x.shape == (4, 3, 40, 40) for x in serial)
    # reduced decoding happened: some images differ a little from full decoding
    differ = [not torch.equal(a, b) for a, b in zip(serial, full)]
    assert any(differ)
    for backend, workers in (("thread", 2), ("process", 2), ("torch", 2)):
        got = epoch(dataset, backend, workers)
        assert all(torch.equal(a, b) for a, b in zip(got, serial)), backend


# --------------------------------------------------------------------------- photographs


@pytest.mark.slow
def test_imagenet_like_preset_writes_photograph_sized_jpegs(tmp_path):
    import subprocess
    import sys

    script = Path(__file__).parent.parent / "scripts" / "make_dataset.py"
    for out in ("a", "b"):
        subprocess.run(
            [sys.executable, str(script), "--out", str(tmp_path / out), "--preset",
             "imagenet-like", "--n", "6", "--classes", "2", "--seed", "4"],
            check=True, capture_output=True,
        )  # fmt: skip
    files = sorted((tmp_path / "a").rglob("*.jpg"))
    assert len(files) == 6 and {p.parent.name for p in files} == {"class_0", "class_1"}
    for p in files:  # same arguments, same bytes
        assert p.read_bytes() == (tmp_path / "b" / p.relative_to(tmp_path / "a")).read_bytes()
        with Image.open(p) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            assert im.size in augment.sources.photographs.PHOTO_SIZES
    dataset = augment.ImageFolder(tmp_path / "a")
    assert dataset.classes == ["class_0", "class_1"]


def spectrum_slope(grey: np.ndarray) -> float:
    """Slope of log power against log frequency, radially averaged (natural images: ~ -2)."""
    h, w = grey.shape
    power = np.abs(np.fft.fft2(grey - grey.mean())) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij")
    f = np.sqrt(fx**2 + fy**2).ravel()
    keep = (f > 0.01) & (f < 0.25)
    bins = np.logspace(np.log10(0.01), np.log10(0.25), 12)
    idx = np.digitize(f[keep], bins)
    p = power.ravel()[keep]
    centres = [np.log(f[keep][idx == i].mean()) for i in range(1, len(bins)) if (idx == i).any()]
    levels = [np.log(p[idx == i].mean()) for i in range(1, len(bins)) if (idx == i).any()]
    return float(np.polyfit(centres, levels, 1)[0])


def test_photographs_have_the_spectrum_of_natural_images():
    slopes = [spectrum_slope(photo(rng(i), 240, 320).mean(axis=2)) for i in range(4)]
    assert all(-3.0 < s < -1.5 for s in slopes), slopes
    flat = rng(0).integers(0, 256, (240, 320)).astype(float)
    assert abs(spectrum_slope(flat)) < 0.5  # the check tells white noise apart


def test_realistic_benchmark_datasets_give_the_batches_ours_gives(tmp_path):

    import realistic

    write_photos(tmp_path, n=2, seed=0, classes=1)
    dataset = augment.ImageFolder(tmp_path)
    paths = [realistic.PillowPath(dataset.paths, dataset.labels)]
    try:
        import albumentations  # noqa: F401

        paths.append(realistic.AlbumentationsPath(dataset.paths, dataset.labels))
    except ImportError:
        pass
    for ds in paths:
        pixels, label = ds[0]
        assert pixels.shape == (3, 224, 224) and pixels.dtype == torch.uint8 and label == 0
    # the box rule of the Pillow path is RandomResizedCrop's
    import random

    random.seed(0)
    areas = [np.prod(realistic.torchvision_box(375, 500)[2:]) / (375 * 500) for _ in range(2000)]
    ours = boxes(RandomResizedCrop(224), (375, 500), 2000, seed=5)
    assert abs(np.median(areas) - np.median(ours[:, 2] * ours[:, 3] / (375 * 500))) < 0.04
