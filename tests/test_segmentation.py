"""Segmentation folders (images/ and masks/), the sample segmentation dataset, and the
profiler on a segmentation pipeline (configs/segmentation.toml, --task segment)."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
from PIL import Image
from support import SAMPLE, run_profiler

import augment
from augment.profiler.experiment import Experiment, config_path, load_config, prepare
from augment.sources import sample_data, sample_masks
from augment.sources.sample_masks import CLASSES, class_map, write_segmentation
from augment.sources.segmentation import SegmentationFolder, read_mask

TILES = 12


@pytest.fixture(scope="module")
def seg_dir(tmp_path_factory):
    """The first tiles of data/sample with their class maps, laid out as images/ and masks/."""
    tiles = tmp_path_factory.mktemp("tiles")
    for i in range(TILES):
        shutil.copy(SAMPLE / f"train_{i}.jpg", tiles)
    out = tmp_path_factory.mktemp("seg")
    write_segmentation(out, tiles)
    return out


def pipeline(**options):
    return augment.Compose(
        [
            augment.RandomResizedCrop(96, scale=(0.3, 1.0)),
            augment.RandomFlip(0.5, 0.5),
            augment.RandomRotate(25, border="constant"),
        ],
        **options,
    )


# --------------------------------------------------------------------------- the folder


def test_folder_pairs_each_image_with_its_mask(seg_dir):
    data = SegmentationFolder(seg_dir)
    assert len(data) == TILES
    assert data.classes == list(CLASSES)  # from classes.txt
    sample = data[3]
    assert sample["name"] == data.names[3]
    expected = np.asarray(Image.open(seg_dir / "images" / f"{sample['name']}.jpg").convert("RGB"))
    np.testing.assert_array_equal(sample["image"], expected)
    assert sample["mask"].dtype == np.uint8 and sample["mask"].shape == expected.shape[:2]
    np.testing.assert_array_equal(sample["mask"], class_map(expected))


def test_mask_modes_are_read_as_class_values(tmp_path):
    values = np.array([[0, 1, 2], [3, 250, 7]], dtype=np.uint8)
    Image.fromarray(values, mode="L").save(tmp_path / "grey.png")
    palette = Image.fromarray(values, mode="P")
    palette.putpalette([255 - i % 256 for i in range(768)])  # colours unlike the indices
    palette.save(tmp_path / "palette.png")
    Image.fromarray(values > 1).save(tmp_path / "bits.png")
    Image.fromarray(values.astype(np.uint16) * 200).save(tmp_path / "deep.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "grey.png"), values)
    np.testing.assert_array_equal(read_mask(tmp_path / "palette.png"), values)
    bits = read_mask(tmp_path / "bits.png")
    assert bits.dtype == np.uint8
    np.testing.assert_array_equal(bits, (values > 1).astype(np.uint8))
    deep = read_mask(tmp_path / "deep.png")
    assert deep.dtype == np.int32
    np.testing.assert_array_equal(deep, values.astype(np.int32) * 200)


def test_gif_masks_as_carvana_gives_them(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.new("RGB", (6, 4), (9, 9, 9)).save(tmp_path / "images" / "car_01.jpg")
    mask = np.zeros((4, 6), np.uint8)
    mask[1:3, 2:5] = 1
    Image.fromarray(mask, mode="L").convert("P").save(tmp_path / "masks" / "car_01_mask.gif")
    with pytest.raises(ValueError, match=r"car_01\.jpg"):  # another name: no pair
        SegmentationFolder(tmp_path)
    (tmp_path / "masks" / "car_01_mask.gif").rename(tmp_path / "masks" / "car_01.gif")
    sample = SegmentationFolder(tmp_path)[0]
    np.testing.assert_array_equal(sample["mask"], mask)


def test_colour_and_unreadable_masks_are_named(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "colour.png")
    with pytest.raises(ValueError, match=r"colour\.png.*RGB image; accepted: a class map"):
        read_mask(tmp_path / "colour.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"broken\.png.*cannot be read"):
        read_mask(tmp_path / "broken.png")


def make_pairs(root, names, masks=None):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for name in names:
        Image.new("RGB", (8, 6), (10, 20, 30)).save(root / "images" / f"{name}.jpg")
    for name in names if masks is None else masks:
        Image.fromarray(np.full((6, 8), 2, np.uint8)).save(root / "masks" / f"{name}.png")


def test_an_image_without_a_mask_is_named(tmp_path):
    make_pairs(tmp_path, ["a", "b", "c"], masks=["a", "c"])
    with pytest.raises(ValueError, match=r"1 image\(s\) have no mask .*b\.jpg"):
        SegmentationFolder(tmp_path)


def test_masks_without_an_image_are_left_out_with_a_warning(tmp_path, caplog):
    make_pairs(tmp_path, ["a"], masks=["a", "z"])
    with caplog.at_level(logging.WARNING, logger="augment"):
        data = SegmentationFolder(tmp_path)
    assert data.names == ["a"]
    assert "1 masks have no image" in caplog.text


def test_bad_layouts_are_refused_with_what_is_accepted(tmp_path):
    with pytest.raises(ValueError, match=r"images'? is not a folder; accepted: a root"):
        SegmentationFolder(tmp_path)
    make_pairs(tmp_path / "dup", ["a"])
    Image.new("RGB", (8, 6)).save(tmp_path / "dup" / "images" / "a.png")
    with pytest.raises(ValueError, match=r"a\.jpg.*a\.png.*share a name"):
        SegmentationFolder(tmp_path / "dup")
    make_pairs(tmp_path / "empty", [])
    with pytest.raises(ValueError, match="no images in"):
        SegmentationFolder(tmp_path / "empty")
    make_pairs(tmp_path / "ok", ["a"])
    for bad in (0, "three", [1, 2], True):
        with pytest.raises(ValueError, match="classes must be a count"):
            SegmentationFolder(tmp_path / "ok", classes=bad)


def test_classes_given_or_read_from_the_masks(tmp_path):
    make_pairs(tmp_path, ["a", "b"])  # masks hold the value 2: classes 0, 1, 2
    assert SegmentationFolder(tmp_path).classes == ["class_0", "class_1", "class_2"]
    assert SegmentationFolder(tmp_path, classes=5).classes == [f"class_{v}" for v in range(5)]
    assert SegmentationFolder(tmp_path, classes=["sea", "land"]).classes == ["sea", "land"]


# --------------------------------------------------------------------------- the sample


def test_sample_segmentation_is_made_once_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUGMENT_CACHE", str(tmp_path))
    shutil.copytree(SAMPLE, tmp_path / sample_data.SAMPLE_NAME)  # the tiles, as made before
    folder = sample_masks.sample_segmentation()
    assert folder == tmp_path / sample_masks.SEGMENTATION_NAME
    data = SegmentationFolder(folder)
    assert len(data) == len(list(SAMPLE.glob("*.jpg")))
    assert data.classes == list(CLASSES)
    seen = np.zeros(len(CLASSES), bool)
    for i in range(0, len(data), 9):
        mask = data[i]["mask"]
        assert mask.max() < len(CLASSES)
        seen[np.unique(mask)] = True
    assert seen.all()  # every class shows up somewhere
    stamp = (folder / "masks" / "train_0.png").stat().st_mtime_ns
    assert sample_masks.sample_segmentation() == folder
    assert (folder / "masks" / "train_0.png").stat().st_mtime_ns == stamp  # not made again
    assert not list(tmp_path.glob(".*.tmp"))


# --------------------------------------------------------------------------- through the loader


def batches(seg_dir, backend, workers):
    with augment.Loader(
        SegmentationFolder(seg_dir),
        pipeline(mask_fill=255),
        batch_size=5,
        backend=backend,
        workers=workers,
        seed=11,
    ) as loader:
        return list(loader)


def test_masks_move_with_their_images_the_same_on_every_backend(seg_dir):
    serial = batches(seg_dir, "serial", 0)
    assert [len(b["image"]) for b in serial] == [5, 5, 2]
    for backend in ("thread", "process"):
        other = batches(seg_dir, backend, 2)
        for a, b in zip(serial, other, strict=True):
            assert a["name"] == b["name"]
            assert np.array_equal(a["image"].numpy(), b["image"].numpy()), backend
            assert np.array_equal(a["mask"].numpy(), b["mask"].numpy()), backend
    images = np.concatenate([b["image"].numpy() for b in serial]).astype(np.float64)
    masks = np.concatenate([b["mask"].numpy() for b in serial])
    assert masks.shape == (TILES, 96, 96) and masks.dtype == np.uint8
    assert set(np.unique(masks)) <= {*range(len(CLASSES)), 255}  # no new class value
    assert (masks == 255).any()  # the rotations' corners: no image, no class
    # the labels still lie on what they label: open ground is redder than forest
    red, green = images[:, 0], images[:, 1]
    forest, open_ground = masks == 0, masks == 1
    assert open_ground.sum() > 100
    ratio = lambda where: red[where].sum() / green[where].sum()  # noqa: E731
    assert ratio(open_ground) > ratio(forest) + 0.1


class AsMapStyle:
    """The same samples through ``__getitem__`` alone: whole-image decoding, one stage."""

    def __init__(self, data):
        self.data = data

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        return self.data[index]


def test_partial_decoding_leaves_the_masks_as_a_whole_decode_moves_them(seg_dir, monkeypatch):
    from augment.sources import jpeg_region

    regions = []
    decode = jpeg_region.decode
    monkeypatch.setattr(
        jpeg_region, "decode", lambda data, k, box: regions.append(box) or decode(data, k, box)
    )
    transform = augment.Compose(
        [augment.RandomResizedCrop(64, scale=(0.05, 0.3)), augment.RandomFlip(0.5, 0.5)]
    )
    made, cut = {}, {}
    for name, data in (
        ("staged", SegmentationFolder(seg_dir)),
        ("map-style", AsMapStyle(SegmentationFolder(seg_dir))),
        ("whole decode", SegmentationFolder(seg_dir, partial_decode=False)),
    ):
        regions.clear()
        with augment.Loader(data, transform, batch_size=TILES, seed=3) as loader:
            (made[name],) = list(loader)
        cut[name] = len(regions)
    assert cut == {"staged": TILES, "map-style": 0, "whole decode": 0}  # small crops: all cut
    for name in ("map-style", "whole decode"):
        assert made[name]["name"] == made["staged"]["name"]
        assert np.array_equal(made[name]["mask"].numpy(), made["staged"]["mask"].numpy()), name
        # RandomResizedCrop and flips: a region decode gives the whole decode's pixels
        assert np.array_equal(made[name]["image"].numpy(), made["staged"]["image"].numpy()), name


def test_a_bad_mask_is_named_and_skipped_on_request(seg_dir, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(seg_dir, root)
    name = sorted(p.stem for p in (root / "masks").iterdir())[2]
    Image.new("RGB", (256, 256)).save(root / "masks" / f"{name}.png")  # a colour mask
    data = SegmentationFolder(root)
    with augment.Loader(data, pipeline(), batch_size=4, backend="process", workers=2) as loader:
        with pytest.raises(augment.BadTargetError, match=rf"{name}\.jpg.*RGB image"):
            list(loader)
    with augment.Loader(
        data, pipeline(), batch_size=4, backend="thread", workers=2, on_error="skip"
    ) as loader:
        kept = [n for batch in loader for n in batch["name"]]
    assert sorted(kept) == sorted(set(data.names) - {name})
    assert [source for source, _ in loader.skipped] == [str(root / "images" / f"{name}.jpg")]


# --------------------------------------------------------------------------- the profiler


def test_config_keys_for_segmentation_are_checked(tmp_path):
    with pytest.raises(ValueError, match=r"task must be one of classify, segment, got 'detect'"):
        Experiment("e", task="detect")
    with pytest.raises(ValueError, match=r"reads a local folder holding images/ and masks/"):
        Experiment("e", task="segment", data="http://127.0.0.1:1/", names_from=".")
    with pytest.raises(ValueError, match=r"mask_fill"):
        Experiment("e", task="segment", mask_fill=float("nan"))
    config = tmp_path / "c.toml"
    config.write_text(f'task = "segment"\ndata = "{SAMPLE}"\n[[experiment]]\nname = "e"\n')
    with pytest.raises(ValueError, match=r"experiment 'e': data: .*images'? is not a folder"):
        prepare(load_config(config), "config 'c'")


def test_segmentation_config_profiles_masks_and_their_cost(seg_dir, tmp_path):
    shipped = load_config(config_path("segmentation")).experiments
    assert [e.task for e in shipped] == ["segment", "segment", "classify"]
    assert {e.backend for e in shipped} == {"thread", "process"}
    text = (
        config_path("segmentation")
        .read_text()
        .replace(
            "batch_size = 32", f'batch_size = 4\ndata = "{seg_dir}"\nlabels = "{SAMPLE}/labels.csv"'
        )
    )
    # the images-only experiment: the same tiles without their masks
    text = text.replace('task = "classify"', f'task = "classify"\ndata = "{SAMPLE}"')
    config = tmp_path / "segmentation.toml"
    config.write_text(text)
    assert [e.data for e in load_config(config).experiments] == [str(seg_dir)] * 2 + [str(SAMPLE)]
    out = tmp_path / "out"
    done = run_profiler("--config", config, "--out", out, "--seconds", "0.5", "--quiet")
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    by_name = {e["name"]: e for e in summary["experiments"]}
    assert set(by_name) == {"segment_thread", "segment_process", "images_only_process"}
    for name, e in by_name.items():
        assert e["images"] > 0, name
        assert e["bottleneck"] != "too short to judge" and e["recommendation"], name
    # staged, as an image folder: reading the image timed apart from decoding it and its mask
    for e in by_name.values():
        assert {"read", "decode", "augment"} <= set(e["stage_cpu_s"]), e["name"]


def test_segment_flag_trains_a_small_segmentation_net(seg_dir, tmp_path):
    out = tmp_path / "out"
    done = run_profiler(
        "--task", "segment", "--data", seg_dir, "--backends", "serial", "--step", "model",
        "--batch-size", "4", "--batches", "4", "--out", out, "--quiet",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (e,) = json.loads((out / "summary.json").read_text())["experiments"]
    assert e["images"] == 16 and e["stage_wall_s"]["step"] > 0
    bad = run_profiler("--task", "segment", "--data", SAMPLE, "--batches", "2", "--quiet")
    assert bad.returncode != 0
    assert "images' is not a folder; accepted: a root holding images/ and masks/" in bad.stderr


def test_segmentation_step_learns_from_masks_whose_values_are_not_class_indices():
    import torch

    from augment.profiler.training_step import MAX_SEGMENT_CLASSES, TrainingStep

    step = TrainingStep("model", 65536, "segment")  # a binary mask stored as 0 and 65535
    assert step.model[-1].out_channels == MAX_SEGMENT_CLASSES
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (2, 3, 48, 48), dtype=np.uint8))
    masks = torch.from_numpy(rng.choice([0, 3, 65535], (2, 48, 48)).astype(np.int32))
    before = [p.detach().clone() for p in step.model.parameters()]
    step(images, masks)
    assert any(not torch.equal(a, b) for a, b in zip(before, step.model.parameters()))
