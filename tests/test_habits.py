"""Habits users bring: transforms of every promised shape wherever a transform stands
(checked when built), a Hugging Face dataset with its own column names, and DataLoader's
keywords (taken with DataLoader's meaning, or refused naming what to write).

Real JPEG files, a real Hugging Face ``datasets.Dataset``, real worker processes and a real
torch DataLoader to compare with."""

from __future__ import annotations

import functools
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from support import write_jpegs
from torch.utils.data import DataLoader, Dataset

import augment
from augment import Loader

N = 10


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    return write_jpegs(tmp_path_factory.mktemp("habit_jpegs"), N, 40, 48)


class Photos(Dataset):
    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return np.asarray(Image.open(self.paths[i]).convert("RGB")), i


def images_of(loader: Loader) -> torch.Tensor:
    return torch.cat([batch[0] for batch in loader])


# --------------------------------------------------------------------------- transform shapes


@pytest.mark.slow
def test_image_only_callables_work_inside_compose_on_every_backend(jpegs):
    """The issue's pipeline: a lambda of one argument after augment's own transform."""
    pipeline = augment.Compose([augment.RandomFlip(1.0, 0.0), lambda img: img[::-1].copy()])
    got = {}
    for backend in ("serial", "thread", "process", "torch"):
        with Loader(Photos(jpegs), pipeline, batch_size=4, backend=backend, shuffle=False) as ld:
            got[backend] = images_of(ld)
    with Loader(Photos(jpegs), batch_size=4, shuffle=False) as plain:
        expected = images_of(plain).flip(2).flip(3)  # rows reversed, then columns
    for backend, images in got.items():
        assert torch.equal(images, expected), backend


def test_every_shape_works_alone_in_compose_and_nested(jpegs):
    rng = np.random.default_rng(0)
    img = np.asarray(Image.open(jpegs[0]).convert("RGB"))

    class Module(torch.nn.Module):  # forward(img): the image alone
        def forward(self, img):
            return img[:, ::-1].copy()

    def draws(img, rng=None):  # a second parameter named rng: handed the generator
        assert isinstance(rng, np.random.Generator)
        return img

    shapes = [
        (lambda img: img[::-1], img[::-1]),
        (lambda img, rng: img[::-1], img[::-1]),
        (np.flipud, img[::-1]),
        (np.rot90, np.rot90(img)),  # rot90(m, k=1, axes=...): k must not get the rng
        (functools.partial(np.rot90, k=2), np.rot90(img, 2)),
        (Module(), img[:, ::-1]),
        (draws, img),
        (augment.Compose([lambda img: img[::-1]]), img[::-1]),
    ]
    for fn, expected in shapes:
        alone = augment.ops.callables.as_sample_transform(fn)
        np.testing.assert_array_equal(alone(img, rng), expected, err_msg=repr(fn))
        inside = augment.Compose([fn, augment.CenterCrop(16)])
        top, left = (expected.shape[0] - 16) // 2, (expected.shape[1] - 16) // 2
        np.testing.assert_array_equal(
            inside(img, rng), expected[top : top + 16, left : left + 16], err_msg=repr(fn)
        )
    with Loader(Photos(jpegs), np.rot90, batch_size=N, shuffle=False) as loader:
        turned = images_of(loader)
    assert turned.shape[2:] == (48, 40)  # H and W swapped by the quarter turn


def test_a_step_may_return_a_pil_image_or_a_tensor(jpegs):
    img = np.asarray(Image.open(jpegs[0]).convert("RGB"))
    to_pil = augment.Compose([Image.fromarray, augment.CenterCrop(16)])
    to_tensor = augment.Compose(
        [lambda img: torch.from_numpy(img).permute(2, 0, 1), augment.CenterCrop(16)]
    )
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(to_pil(img, rng), img[12:28, 16:32])
    np.testing.assert_array_equal(to_tensor(img, rng), img[12:28, 16:32])


@pytest.mark.slow
def test_an_albumentations_step_inside_compose_draws_from_the_sample_rng(jpegs):
    A = pytest.importorskip("albumentations")
    pipeline = augment.Compose([A.HorizontalFlip(p=0.5), augment.CenterCrop(16)])
    assert isinstance(pipeline.transforms[0], augment.ops.adapters.Albumentations)
    with Loader(Photos(jpegs), pipeline, batch_size=4, backend="serial", shuffle=False) as a:
        serial = images_of(a)
    with Loader(Photos(jpegs), pipeline, batch_size=4, backend="process", shuffle=False) as b:
        process = images_of(b)
    assert torch.equal(serial, process)


@pytest.mark.parametrize(
    "bad,message",
    [
        (lambda a, b, c: a, r"transforms\[1\].*3 positional arguments"),
        (augment.RandomFlip, r"transforms\[1\] is the class RandomFlip.*RandomFlip\(\.\.\.\)"),
        (3, r"transforms\[1\] must be a callable \(img, rng\) -> img or \(img\) -> img"),
        (lambda img, *, scale: img, r"transforms\[1\].*keyword argument\(s\) scale"),
        (lambda: 0, r"transforms\[1\].*no positional argument"),
    ],
)
def test_a_step_of_neither_shape_is_refused_when_compose_is_built(bad, message):
    with pytest.raises(ValueError, match=message):
        augment.Compose([augment.RandomFlip(), bad])


def test_a_transform_of_neither_shape_is_refused_when_the_loader_is_built(jpegs):
    with pytest.raises(ValueError, match=r"transform .*2 positional|no positional"):
        Loader(Photos(jpegs), lambda: 0)
    with pytest.raises(ValueError, match="Compose takes a list"):
        augment.Compose(augment.RandomFlip())


def test_a_config_pipeline_is_a_compose_and_checked_as_one():
    from augment.profiler.experiment import build_transform

    pipeline = build_transform([{"op": "RandomFlip"}, {"op": "RandomCrop", "size": 8}])
    assert isinstance(pipeline, augment.Compose)
    assert pipeline(np.zeros((16, 16, 3), np.uint8), np.random.default_rng(0)).shape == (8, 8, 3)


# --------------------------------------------------------------------------- Hugging Face


@pytest.fixture(scope="module")
def hub_like(jpegs):
    """A Hugging Face dataset as the Hub has them: an Image column named "img", labels."""
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"img": datasets.Image(), "label": datasets.Value("int64")})
    return datasets.Dataset.from_dict(
        {"img": [str(p) for p in jpegs], "label": list(range(N))}, features=features
    )


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["serial", "process"])
def test_a_hugging_face_dataset_with_its_own_image_column(jpegs, hub_like, backend):
    with Loader(Photos(jpegs), batch_size=4, shuffle=False) as plain:
        expected = images_of(plain)
    with Loader(hub_like, batch_size=4, backend=backend, shuffle=False, image_key="img") as ld:
        batches = list(ld)
    assert set(batches[0]) == {"img", "label"}  # the dataset's own keys
    assert torch.equal(torch.cat([b["img"] for b in batches]), expected)
    assert torch.cat([b["label"] for b in batches]).tolist() == list(range(N))
    with Loader(hub_like, batch_size=4, shuffle=False, image_key="img", target_key="label") as ld:
        images, labels = next(iter(ld))  # the habit: for images, labels in loader
    assert torch.equal(images, expected[:4]) and labels.tolist() == [0, 1, 2, 3]


def test_pixel_values_as_torch_tensors(jpegs, hub_like):
    """``with_format("torch")`` gives C x H x W tensors; the column renamed as processors
    name it."""
    tensors = hub_like.rename_column("img", "pixel_values").with_format("torch")
    with Loader(Photos(jpegs), batch_size=5, shuffle=False) as plain:
        expected = images_of(plain)
    with Loader(
        tensors, batch_size=5, shuffle=False, image_key="pixel_values", target_key=("label",)
    ) as loader:
        got = [images for images, _ in loader]
    assert torch.equal(torch.cat(got), expected)


def test_a_missing_column_is_named_when_the_loader_is_built(hub_like):
    with pytest.raises(
        ValueError,
        match=r"no column\(s\) 'image' \(columns: img, label\).*"
        r"image_key='img'",
    ):
        Loader(hub_like)
    with pytest.raises(ValueError, match=r"no column\(s\) 'labels'"):
        Loader(hub_like, image_key="img", target_key="labels")


def test_a_dict_sample_without_the_key_names_the_key_to_give(jpegs):
    class Dicts(Photos):
        def __getitem__(self, i):
            img, i = super().__getitem__(i)
            return {"pixel_values": img, "label": i}

    with Loader(Dicts(jpegs), batch_size=4) as loader:
        with pytest.raises(
            ValueError,
            match=r"without the key\(s\) 'image'.*"
            r"Loader\(image_key='pixel_values'\)",
        ):
            next(iter(loader))
    with Loader(Dicts(jpegs), batch_size=4, image_key="pixel_values", target_key="label") as ld:
        images, labels = next(iter(ld))
    assert images.shape == (4, 3, 40, 48) and labels.shape == (4,)


def test_image_key_is_for_dict_samples(jpegs, tmp_path):
    write_jpegs(tmp_path, 2, name=lambda i: f"class0/{i}.jpg")
    folder = augment.ImageFolder(tmp_path)
    with pytest.raises(ValueError, match="staged dataset"):
        Loader(folder, image_key="img")
    with pytest.raises(ValueError, match="target_key must be None, a key or a tuple"):
        Loader(Photos(jpegs), target_key=3)


# --------------------------------------------------------------------------- DataLoader keywords


@pytest.mark.parametrize(
    "keyword,message",
    [
        ({"num_workers": 2}, r"num_workers=.*backend='process', workers=2"),
        ({"num_workers": 0}, r"num_workers=0 .* is backend='serial'"),
        ({"prefetch_factor": 4}, r"prefetch_factor=.*write prefetch=4"),
        ({"generator": torch.Generator()}, r"generator=.*seed="),
        ({"multiprocessing_context": "spawn"}, r"backend_options=\{'start_method': 'spawn'\}"),
        ({"sampler": None}, r"sampler=.*shuffle=, seed=.*rank=, world_size="),
        ({"batch_sampler": None}, r"batch_sampler=.*batch_size="),
        ({"collate_fn": None}, r"collate_fn=.*default_collate"),
        ({"worker_init_fn": None}, r"worker_init_fn=.*lazily"),
        ({"pin_memory_device": "cuda"}, r"pin_memory_device=.*pin_memory=True"),
        ({"batchsize": 4}, r"unexpected keyword argument 'batchsize'; did you mean batch_size=\?"),
    ],
)
def test_dataloader_keywords_without_a_meaning_here_are_refused_naming_ours(
    jpegs, keyword, message
):
    with pytest.raises(TypeError, match=message):
        Loader(Photos(jpegs), **keyword)


def test_keywords_describing_what_the_loader_always_does(jpegs):
    with Loader(Photos(jpegs), persistent_workers=True, in_order=True, timeout=0) as loader:
        assert loader.timeout is None  # DataLoader's timeout=0: none
    with pytest.raises(ValueError, match="workers always persist"):
        Loader(Photos(jpegs), persistent_workers=False)
    with pytest.raises(ValueError, match="always yields batches in order"):
        Loader(Photos(jpegs), in_order=False)


def test_shuffle_false_and_drop_last_batch_as_dataloader_does(jpegs):
    dataset = Photos(jpegs)
    reference = DataLoader(dataset, batch_size=3, shuffle=False, drop_last=True)
    with Loader(dataset, batch_size=3, shuffle=False, drop_last=True) as loader:
        ours = list(loader)
    theirs = list(reference)
    assert [b[1].tolist() for b in ours] == [b[1].tolist() for b in theirs]  # 3 of 3, no 1
    for (images, _), (their_images, _) in zip(ours, theirs):
        assert torch.equal(images, their_images.permute(0, 3, 1, 2))  # theirs: N x H x W x C


def test_pin_memory_without_an_accelerator_warns_once_as_dataloader_does(jpegs, caplog):
    with caplog.at_level(logging.WARNING, logger="augment"):
        with Loader(Photos(jpegs), batch_size=5, pin_memory=True, shuffle=False) as loader:
            pinned = images_of(loader)
    assert [r.getMessage() for r in caplog.records].count(
        "Loader(pin_memory=True) but no accelerator is found: batches are not pinned (as "
        "DataLoader does)"
    ) == (0 if torch.accelerator.is_available() else 1)
    with Loader(Photos(jpegs), batch_size=5, shuffle=False) as plain:
        assert torch.equal(pinned, images_of(plain))


def test_pin_memory_pins_every_batch_where_an_accelerator_is(jpegs, monkeypatch):
    """Where an accelerator is present each batch goes through torch's own pin_memory (this
    machine has none: the pinning itself is DataLoader's function, stood in for here)."""
    import augment.loading.loader as loader_module

    pinned = []
    monkeypatch.setattr(loader_module, "can_pin", lambda: True)
    monkeypatch.setattr(loader_module, "pin", lambda batch: pinned.append(batch) or batch)
    with Loader(Photos(jpegs), batch_size=4, pin_memory=True, backend="thread") as loader:
        batches = list(loader)
    assert len(pinned) == len(batches) == 3
    assert all(p is b for p, b in zip(pinned, batches))
