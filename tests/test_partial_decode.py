"""Partial JPEG decoding (``augment.sources.jpeg_region``): only the rectangle a warp reads, with
exactly the pixels a full decode gives there."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from support import hang_guard

import augment
import augment.sources.data as data
from augment.loading.rng import sample_rng
from augment.ops.compose import Compose, kaggle_pipeline
from augment.ops.transforms import (
    CenterCrop,
    RandomCrop,
    RandomFlip,
    RandomResizedCrop,
    RandomRotate,
    Resize,
)
from augment.ops.warp_plan import SamplePlan, read_box
from augment.sources import jpeg_region
from augment.sources.photographs import photo, write_photos

needs_library = pytest.mark.skipif(
    not jpeg_region.available(), reason="no TurboJPEG 3 library (pip install 'augment[fast]')"
)


def jpeg(img: np.ndarray, **options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90, **options)
    return buf.getvalue()


ENCODINGS = {
    "4:4:4": {"subsampling": 0},
    "4:2:2": {"subsampling": 1},
    "4:2:0": {"subsampling": 2},
    "progressive": {"progressive": True},
    "progressive-4:4:4": {"progressive": True, "subsampling": 0},
    "restart-blocks": {"restart_marker_blocks": 3},
    "restart-rows": {"restart_marker_rows": 1, "subsampling": 1},
}


def full_decode(blob: bytes, k: int) -> np.ndarray:
    """The whole image at scale 1/k, by the decoders that ran before partial decoding."""
    return data.decode_image(blob, reduce=lambda h, w: k)


def boxes(rng: np.random.Generator, h: int, w: int, n: int):
    """Random rectangles, the corners, single pixels and whole rows and columns."""
    yield 0, h, 0, w
    yield 0, 1, 0, 1
    yield h - 1, h, w - 1, w
    yield 0, h, w // 2, w // 2 + 1
    yield h // 3, h // 3 + 1, 0, w
    for _ in range(n):
        y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
        yield y0, int(rng.integers(y0 + 1, h + 1)), x0, int(rng.integers(x0 + 1, w + 1))


@needs_library
@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_a_region_has_the_pixels_of_the_full_decode(encoding):
    """Many rectangles at every DCT scale, against the same scale decoded whole."""
    rng = np.random.default_rng(len(encoding))
    h, w = 203, 317  # not multiples of an MCU: partial blocks at the right and bottom
    blob = jpeg(photo(rng, h, w), **ENCODINGS[encoding])
    if encoding.startswith("restart"):
        assert b"\xff\xdd" in blob and b"\xff\xd0" in blob  # a DRI and RST0 markers
    if encoding.startswith("progressive"):
        assert b"\xff\xc2" in blob  # a progressive frame
    for k in (1, 2, 4, 8):
        full = full_decode(blob, k)
        hk, wk = full.shape[:2]
        for box in boxes(rng, hk, wk, 60):
            y0, y1, x0, x1 = box
            part = jpeg_region.decode(blob, k, box)
            assert part is not None and part.shape == (y1 - y0, x1 - x0, 3), (k, box)
            assert np.array_equal(part, full[y0:y1, x0:x1]), (encoding, k, box)


@needs_library
def test_the_margin_is_what_makes_the_edges_exact():
    """Decoded without the one-MCU margin, a 4:2:0 region's edge columns differ from the full
    decode (libjpeg-turbo's smooth upsampling sees no neighbour there): the margin matters."""
    blob = jpeg(photo(np.random.default_rng(5), 200, 300), subsampling=2)
    full = full_decode(blob, 1)
    mcu = jpeg_region.scaled_mcu(2, 1)
    assert mcu == (16, 16)
    # a region starting on an MCU boundary, decoded without margin (the library's own crop)
    y0, x0 = 48, 64
    exact = jpeg_region.decode(blob, 1, (y0, y0 + 64, x0, x0 + 80))
    assert np.array_equal(exact, full[y0 : y0 + 64, x0 : x0 + 80])
    bare = jpeg_region.decode(blob, 1, (0, 200, x0 - 16, 300))[:, 16:]  # starts an MCU early
    assert np.array_equal(bare, full[:, x0:])


@needs_library
def test_a_box_outside_the_image_is_a_value_error():
    blob = jpeg(photo(np.random.default_rng(1), 64, 80))
    with pytest.raises(ValueError, match=r"outside the 64x80 image"):
        jpeg_region.decode(blob, 1, (0, 65, 0, 10))
    with pytest.raises(ValueError, match=r"outside the 32x40 image decoded at 1/2"):
        jpeg_region.decode(blob, 2, (0, 10, 30, 41))


@needs_library
def test_a_corrupt_file_falls_back_to_the_whole_image_decoders():
    """A JPEG whose entropy data is damaged: TurboJPEG warns, the region decode steps
    aside, and the sample gets what it got before partial decoding (here an error)."""
    blob = bytearray(jpeg(photo(np.random.default_rng(2), 120, 160)))
    blob[len(blob) // 2 : len(blob) // 2 + 40] = b"\xff\xd0" * 20  # stray restart markers
    blob = bytes(blob)
    t = Compose([RandomResizedCrop(32)])
    before = after = None
    try:
        before = data.decode_image(blob, reduce=lambda h, w: 1)
    except data.BadImageError as exc:
        before = str(exc)
    plan = SamplePlan(t, sample_rng(0, 0, 0))
    try:
        after = data.decode_image(blob, reduce=plan)
    except data.BadImageError as exc:
        after = str(exc)
    if isinstance(before, str):
        assert after == before
    else:
        assert isinstance(after, np.ndarray)
        if after.shape == before.shape:  # decoded whole: the same pixels
            assert np.array_equal(after, before)


PIPELINES = {
    "resized-crop": lambda: Compose([RandomResizedCrop(224), RandomFlip()]),
    "resized-crop-small": lambda: Compose([RandomResizedCrop(96), RandomFlip()]),
    "resized-crop-numpy": lambda: Compose([RandomResizedCrop(96), RandomFlip()], kernel="numpy"),
    "rotate-constant": lambda: Compose([RandomRotate(20, border="constant"), RandomCrop(160)]),
    "centre-crop": lambda: Compose([CenterCrop(128)]),
    "kaggle": lambda: kaggle_pipeline(224),
}


@needs_library
@pytest.mark.parametrize("name", list(PIPELINES))
def test_a_pipeline_gives_what_the_full_decode_gives(name):
    """The same samples with and without partial decoding: most decoded smaller, the outputs
    equal, or (where the shifted coordinates round differently in the warp) within one grey
    level on a few pixels."""
    t = PIPELINES[name]()
    partial = differ = reduced = 0
    for i in range(24):
        rng = np.random.default_rng(i)
        h, w = int(rng.integers(300, 481)), int(rng.integers(400, 641))
        blob = jpeg(photo(rng, h, w), subsampling=int(rng.integers(0, 3)))
        plan = SamplePlan(t, sample_rng(7, 0, i))
        img = data.decode_image(blob, reduce=plan)
        got = plan.finish(img)
        whole = SamplePlan(t, sample_rng(7, 0, i))
        expected = whole.finish(data.decode_image(blob, reduce=whole.__call__))  # no region
        if plan.plan.box is not None:
            y0, y1, x0, x1 = plan.plan.box
            assert img.shape[:2] == (y1 - y0, x1 - x0)
            partial += 1
            reduced += plan.plan.reduction > 1
        gap = np.abs(got.astype(int) - expected.astype(int))
        assert gap.max() <= 1, (name, i)
        assert np.count_nonzero(gap) <= gap.size // 1000, (name, i)
        differ += bool(gap.any())
    # these photographs are larger than what the crops read; a small output shrinks them, and
    # a region of an image decoded at 1/2, 1/4 or 1/8 is often too small to be worth cutting
    assert partial >= (8 if "crop-small" in name or "numpy" in name else 16)
    if name == "resized-crop-small":
        assert reduced >= 4  # regions of images decoded smaller
    if name in ("resized-crop", "resized-crop-small", "centre-crop"):
        assert differ == 0  # OpenCV's box resize and whole-pixel copies: bit for bit


def test_read_box_holds_what_the_warp_reads():
    """The box around a RandomResizedCrop's crop; the whole axis where a mirrored border
    may reach anywhere; None where the warp reads nearly everything."""
    shape = (375, 500)
    for seed in range(40):
        t = Compose([RandomResizedCrop(64)])
        plan = t.plan(shape, sample_rng(1, 0, seed))
        k = plan.reduction
        box = read_box(plan.warp, shape, k)
        if box is None:
            continue
        y0, y1, x0, x1 = box
        hk, wk = -(-shape[0] // k), -(-shape[1] // k)
        assert 0 <= y0 < y1 <= hk and 0 <= x0 < x1 <= wk
        # the crop's corners (in the decoded image's pixels) lie inside, with margin
        a, b, c, d, e, f = augment.ops.geometry.inverse(plan.warp.entries)
        for x, y in ((0, 0), (63, 0), (0, 63), (63, 63)):
            px = ((a * x + b * y + c) - (k - 1) / 2) / k
            py = ((d * x + e * y + f) - (k - 1) / 2) / k
            assert x0 + 1 <= px + (px < 1) and px < x1 - 1 + (x1 == wk)
            assert y0 + 1 <= py + (py < 1) and py < y1 - 1 + (y1 == hk)
    rotate = Compose([RandomRotate(30, border="reflect"), CenterCrop(100)])
    outside = 0
    for seed in range(20):  # a tall image: a turned centre square reads past its sides
        plan = rotate.plan((400, 100), np.random.default_rng(seed))
        y0, y1, x0, x1 = read_box(plan.warp, (400, 100), 1)
        a, b, c, _, _, _ = augment.ops.geometry.inverse(plan.warp.entries)
        xs = [a * x + b * y + c for x in (0, 99) for y in (0, 99)]
        if min(xs) < 0 or max(xs) > 99:
            assert (x0, x1) == (0, 100) and y1 - y0 < 400
            outside += 1
    assert outside >= 10
    whole = Compose([Resize(64)]).plan(shape, np.random.default_rng(0))
    assert read_box(whole.warp, shape, whole.reduction) is None


def test_a_plan_refuses_an_image_of_another_shape():
    t = Compose([RandomResizedCrop(224)])
    plans = [SamplePlan(t, sample_rng(0, 0, i)) for i in range(20)]
    for plan in plans:
        plan(375, 500)
    plan = next(p for p in plans if p.region(p.plan.reduction) is not None)
    y0, y1, x0, x1 = plan.plan.box
    assert plan.finish(np.zeros((y1 - y0, x1 - x0, 3), np.uint8)).shape == (224, 224, 3)
    with pytest.raises(ValueError, match=r"planned for 375x500.*region"):
        plan.finish(np.zeros((y1 - y0 + 1, x1 - x0, 3), np.uint8))


@needs_library
def test_without_the_library_the_whole_image_is_decoded(monkeypatch):
    """No TurboJPEG 3: the decoder returns the whole (reduced) image, the output is what the
    partial decode gave, and ``augment.info()`` says partial decoding is off."""
    blob = jpeg(photo(np.random.default_rng(3), 375, 500))
    t = Compose([RandomResizedCrop(96), RandomFlip()])
    plan = SamplePlan(t, sample_rng(2, 0, 5))
    small = data.decode_image(blob, reduce=plan)
    assert plan.plan.box is not None and small.shape[:2] != (375, 500)
    assert "TurboJPEG 3" in augment.info()["partial_decode"]
    monkeypatch.setattr(jpeg_region, "_lib", None)
    monkeypatch.setattr(jpeg_region, "_path", None)
    assert augment.info()["partial_decode"].startswith("off")
    again = SamplePlan(t, sample_rng(2, 0, 5))
    whole = data.decode_image(blob, reduce=again)
    k = again.plan.reduction
    assert whole.shape[:2] == (-(-375 // k), -(-500 // k))
    assert np.array_equal(again.finish(whole), plan.finish(small))


def test_info_names_the_decoders():
    info = augment.info()
    assert info["augment"] == augment.__version__
    assert info["kernel"] in augment.ops.kernels.available()
    assert info["partial_decode"].startswith(("TurboJPEG 3", "off"))
    assert any(name in info["jpeg_decoder"] for name in ("simplejpeg", "OpenCV", "Pillow"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    write_photos(root, n=10, seed=4, classes=2)
    return root


def epoch(dataset, backend: str, workers: int) -> list[torch.Tensor]:
    t = Compose([RandomResizedCrop(64), RandomFlip()])
    with (
        hang_guard(),
        augment.Loader(dataset, t, batch_size=4, backend=backend, workers=workers, seed=9) as ld,
    ):
        return [images for images, _ in ld]


@pytest.mark.slow
@needs_library
def test_loader_batches_with_partial_decoding_match_on_every_backend(photos):
    """Partial decoding in real workers: the same batches on every backend and worker count,
    and the batches of whole-image decoding."""
    serial = epoch(augment.ImageFolder(photos), "serial", 1)
    whole = epoch(augment.ImageFolder(photos, partial_decode=False), "serial", 1)
    assert len(serial) == 3
    for a, b in zip(serial, whole):
        assert (a.int() - b.int()).abs().max() <= 1
    for backend, workers in (("thread", 2), ("process", 2), ("process", 1)):
        got = epoch(augment.ImageFolder(photos), backend, workers)
        assert all(torch.equal(a, b) for a, b in zip(got, serial)), (backend, workers)
    assert "partial_decode=False" in repr(augment.ImageFolder(photos, partial_decode=False))


def test_the_peers_benchmark_writes_its_own_section(tmp_path, monkeypatch):
    """``make peers`` replaces its section of docs/benchmarks.md and keeps the others; a
    peer that is not installed is listed with the reason, not dropped."""

    import peers

    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\n## Other\n\nkeep me\n")
    monkeypatch.setattr(peers, "DOCS", docs)
    peers.write_docs("| a | 1 |", "make peers")
    peers.write_docs("| b | 2 |", "make peers")
    text = docs.read_text()
    assert text.count("## Peers") == 1 and "| b | 2 |" in text and "| a | 1 |" not in text
    assert "keep me" in text and "    make peers" in text
    runs, missing = peers.contenders(tmp_path, [])
    named = [name for name, _ in runs] + [name for name, _ in missing]
    assert named[0] == "augment, process backend" and len(named) == 11
    assert any(name.startswith("FFCV") for name, _ in missing)
    assert all(why for _, why in missing)


class StagedWithMasks:
    """A staged dataset whose labels are masks of the whole image; ``whole``: its ``decode``
    leaves ``reduce`` alone, so every image is decoded whole."""

    def __init__(self, whole: bool = False):
        self.whole, self.blobs, self.masks = whole, [], []
        for i in range(6):
            self.blobs.append(jpeg(photo(np.random.default_rng(40 + i), 375, 500)))
            mask = np.zeros((375, 500), np.uint8)
            mask[:, 250:] = 1
            mask[100:200, :] = 2
            self.masks.append(mask)

    def __len__(self) -> int:
        return len(self.blobs)

    def source(self, index: int) -> str:
        return f"sample-{index}"

    def read(self, index: int) -> bytes:
        return self.blobs[index]

    def decode(self, blob: bytes, index: int, reduce=None) -> np.ndarray:
        return data.decode_image(blob, self.source(index), None if self.whole else reduce)

    def label(self, index: int) -> np.ndarray:
        return self.masks[index]


@needs_library
def test_a_staged_dataset_with_masks_is_decoded_partly_and_its_masks_follow():
    """A staged dataset's image is decoded as a region of the file while its mask is the
    whole image's: the mask follows the plan the decoder drew, as with a whole decode."""
    t = Compose([RandomResizedCrop(224), RandomFlip()])

    def batches(dataset):
        with augment.Loader(
            dataset, t, batch_size=3, backend="serial", targets=("mask",), seed=5
        ) as loader:
            return list(loader)

    partly, whole = batches(StagedWithMasks()), batches(StagedWithMasks(whole=True))
    assert len(partly) == 2
    for (images, masks), (images_w, masks_w) in zip(partly, whole):
        assert images.shape == (3, 3, 224, 224) and masks.shape == (3, 224, 224)
        assert torch.equal(masks, masks_w)
        assert (images.int() - images_w.int()).abs().max() <= 1
    plan = SamplePlan(t, sample_rng(5, 0, 0))
    data.decode_image(StagedWithMasks().blobs[0], reduce=plan)
    assert plan.plan.box is not None  # these samples are decoded partly
