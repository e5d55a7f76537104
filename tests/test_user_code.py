"""The user's own code on every backend: a torch Dataset returning PIL images, numpy arrays
or tensors (uint8 and float32), transforms of any shape, bad datasets, errors from
``__getitem__``, the epoch protocol, state_dict resume and sharding.

Real JPEG files, real worker processes and a real torch DataLoader.
"""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest
import torch
from PIL import Image
from support import SAMPLE, hang_guard, write_jpegs
from torch.utils.data import Dataset

import augment
from augment import Loader

N = 10
BACKENDS = [("serial", 0), ("thread", 2), ("process", 2), ("torch", 2)]


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    paths = write_jpegs(tmp_path_factory.mktemp("user_jpegs"), N, 48, 64)
    return paths


class PilDataset(Dataset):
    """What a torchvision-style user writes: a PIL image and an int label."""

    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return Image.open(self.paths[i]).convert("RGB"), i % 3


class ArrayDataset(Dataset):
    """Images as numpy arrays or tensors, in either dtype, with two targets."""

    def __init__(self, paths, kind: str, dtype):
        self.paths, self.kind, self.dtype = paths, kind, dtype

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        img = np.asarray(Image.open(self.paths[i]).convert("RGB"))
        if self.dtype == np.float32:
            img = img.astype(np.float32) / 255
        if self.kind == "tensor":
            img = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        return img, i, np.float32(i) / 2


class ImageOnly(Dataset):
    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return np.asarray(Image.open(self.paths[i]).convert("L"))


class DictDataset(ImageOnly):
    def __getitem__(self, i):
        return {"image": super().__getitem__(i), "index": i, "name": f"img{i}"}


class Broken(ImageOnly):
    def __getitem__(self, i):
        if i == 3:
            raise KeyError(f"no metadata for sample {i}")
        return super().__getitem__(i)


def normalise(img, rng):
    """A pipeline that ends in normalisation: float32 out of uint8 in."""
    return (img.astype(np.float32) - 127.5) / 127.5


def epoch(loader):
    with hang_guard(120):
        return list(loader)


def crop_pipeline():
    return augment.Compose([augment.RandomFlip(0.5, 0.5), augment.RandomCrop(32)])


# --------------------------------------------------------------------------- datasets


@pytest.fixture(scope="module")
def pil_runs(jpegs):
    """The PIL dataset's first epoch on every backend."""
    runs = {}
    for backend, workers in BACKENDS:
        with Loader(
            PilDataset(jpegs), crop_pipeline(), batch_size=4, backend=backend, workers=workers
        ) as loader:
            runs[backend] = epoch(loader)
    return runs


def test_a_pil_dataset_batches_as_uint8_nchw_with_int_labels(pil_runs, jpegs):
    batches = pil_runs["serial"]
    assert [len(images) for images, _ in batches] == [4, 4, 2]
    images, labels = batches[0]
    assert images.dtype == torch.uint8 and tuple(images.shape) == (4, 3, 32, 32)
    assert labels.dtype == torch.int64
    seen = torch.cat([labels for _, labels in batches]).tolist()
    assert sorted(seen) == sorted(i % 3 for i in range(N))


@pytest.mark.parametrize("backend", [b for b, _ in BACKENDS[1:]])
def test_a_pil_dataset_gives_the_same_batches_on_every_backend(pil_runs, backend):
    reference, other = pil_runs["serial"], pil_runs[backend]
    assert len(other) == len(reference)
    for (a, la), (b, lb) in zip(reference, other):
        assert torch.equal(a, b) and torch.equal(la, lb)


@pytest.mark.parametrize("backend,workers", [("serial", 0), ("process", 1)])
@pytest.mark.parametrize("kind", ["array", "tensor"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_arrays_and_tensors_keep_their_dtype(jpegs, kind, dtype, backend, workers):
    data = ArrayDataset(jpegs, kind, dtype)
    with Loader(
        data, crop_pipeline(), batch_size=4, backend=backend, workers=workers, shuffle=False
    ) as loader:
        batches = epoch(loader)
    images, index, half = batches[0]
    assert images.dtype == (torch.uint8 if dtype == np.uint8 else torch.float32)
    assert tuple(images.shape) == (4, 3, 32, 32)
    assert index.tolist() == [0, 1, 2, 3] and index.dtype == torch.int64
    assert half.dtype == torch.float32 and half.tolist() == [0.0, 0.5, 1.0, 1.5]
    # the pixels are the dataset's, cropped: every value of the batch is in the source image
    source = np.asarray(Image.open(jpegs[0]).convert("RGB"))
    source = source if dtype == np.uint8 else source.astype(np.float32) / 255
    assert set(np.unique(images[0].numpy())) <= set(np.unique(source))


def test_a_float32_pipeline_gives_float32_batches_identical_across_backends(jpegs):
    out = {}
    for backend, workers in [("serial", 0), ("process", 2)]:
        with Loader(
            PilDataset(jpegs),
            augment.Compose([augment.RandomCrop(32), normalise]),
            batch_size=4,
            backend=backend,
            workers=workers,
        ) as loader:
            out[backend] = epoch(loader)
    for (a, _), (b, _) in zip(out["serial"], out["process"]):
        assert a.dtype == torch.float32 and torch.equal(a, b)
    assert float(out["serial"][0][0].min()) >= -1.0 and float(out["serial"][0][0].max()) <= 1.0


def test_an_image_only_dataset_yields_image_tensors(jpegs):
    with Loader(ImageOnly(jpegs), None, batch_size=4, shuffle=False) as loader:
        batches = epoch(loader)
    assert all(isinstance(b, torch.Tensor) for b in batches)
    assert tuple(batches[0].shape) == (4, 1, 48, 64)  # (H, W) images get one channel
    expected = np.asarray(Image.open(jpegs[1]).convert("L"))
    assert np.array_equal(batches[0][1, 0].numpy(), expected)  # transform None: untouched


def test_a_dict_dataset_yields_a_dict(jpegs):
    with Loader(DictDataset(jpegs), batch_size=4, shuffle=False, backend="thread") as loader:
        batch = epoch(loader)[0]
    assert set(batch) == {"image", "index", "name"}
    assert batch["index"].tolist() == [0, 1, 2, 3]
    assert batch["name"] == ["img0", "img1", "img2", "img3"]


def test_transforms_of_one_argument_and_lambdas(jpegs):
    flip_rows = np.flipud
    with Loader(ImageOnly(jpegs), flip_rows, batch_size=N, shuffle=False) as a:
        flipped = epoch(a)[0]
    with Loader(ImageOnly(jpegs), lambda img, rng: img[::-1], batch_size=N, shuffle=False) as b:
        also = epoch(b)[0]
    with Loader(ImageOnly(jpegs), batch_size=N, shuffle=False) as c:
        plain = epoch(c)[0]
    assert torch.equal(flipped, plain.flip(2)) and torch.equal(also, flipped)


def test_a_transform_of_three_arguments_is_refused():
    with pytest.raises(ValueError, match=r"\(img, rng\) -> img or \(img\) -> img.*3 positional"):
        Loader(ImageOnly([]), lambda a, b, c: a)


def test_a_dataset_that_is_neither_shape_is_refused_naming_what_it_lacks():
    class Half:
        def read(self, i):
            return b""

        def __len__(self):
            return 1

    with pytest.raises(ValueError, match=r"lacks __getitem__\).*lacks decode, label, source"):
        Loader(Half())


@pytest.mark.parametrize("backend,workers", [("serial", 0), ("process", 1), ("torch", 1)])
def test_an_error_in_getitem_reaches_the_loop_naming_the_sample(jpegs, backend, workers):
    loader = Loader(Broken(jpegs), batch_size=2, backend=backend, workers=workers, shuffle=False)
    with hang_guard(120), pytest.raises(Exception) as caught:
        list(loader)
    text = str(caught.value) + "".join(getattr(caught.value, "__notes__", []))
    assert "no metadata for sample 3" in text
    if backend != "torch":  # torch re-raises a copy with the worker's traceback in its text
        assert isinstance(caught.value, KeyError)
        assert "Broken[3] (sample 3)" in text
    with pytest.raises(RuntimeError, match="an error during an epoch closed it: KeyError"):
        list(loader)


def test_a_float64_image_is_refused_naming_the_sample_and_the_fix(jpegs):
    to_f64 = lambda img, rng: img.astype(np.float64)  # noqa: E731
    with Loader(ImageOnly(jpegs), to_f64, batch_size=2) as loader:
        with pytest.raises(ValueError, match=r"ImageOnly\[\d\].*float64.*uint8 or float32"):
            list(loader)


# --------------------------------------------------------------------------- epochs


def test_iter_without_a_batch_takes_no_epoch(jpegs):
    with Loader(PilDataset(jpegs), crop_pipeline(), batch_size=4) as loader:
        iter(loader)  # as Lightning's check does
        iter(loader)
        first = next(iter(loader))
        fresh = Loader(PilDataset(jpegs), crop_pipeline(), batch_size=4)
        assert torch.equal(first[0], next(iter(fresh))[0])
        fresh.close()
        assert loader.epoch == 1


def test_set_epoch_chooses_the_next_epoch(jpegs):
    with Loader(PilDataset(jpegs), crop_pipeline(), batch_size=4) as loader:
        epochs = [epoch(loader) for _ in range(3)]
        loader.set_epoch(1)
        again = epoch(loader)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(again, epochs[1]))
    assert not torch.equal(epochs[0][0][0], epochs[1][0][0])


@pytest.mark.parametrize("backend,workers", [("thread", 2), ("process", 2)])
def test_a_run_resumed_from_state_dict_yields_the_uninterrupted_batches(jpegs, backend, workers):
    def make():
        return Loader(
            PilDataset(jpegs), crop_pipeline(), batch_size=3, backend=backend, workers=workers
        )

    with make() as loader:
        straight = [b for _ in range(2) for b in epoch(loader)]  # 4 batches an epoch
    with make() as loader:
        got = []
        for batch in loader:
            got.append(batch)
            if len(got) == 2:
                state = loader.state_dict()  # while the epoch's iterator is alive: its position
                break
    assert (state["epoch"], state["batches"]) == (0, 2)
    with make() as resumed:
        resumed.load_state_dict(state)
        got += [b for _ in range(2) for b in epoch(resumed)]
    assert len(got) == len(straight)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(got, straight))


def test_state_after_a_whole_epoch_points_at_the_next(jpegs):
    with Loader(PilDataset(jpegs), crop_pipeline(), batch_size=4) as loader:
        batches = iter(loader)
        for _ in range(len(loader)):  # every batch taken, StopIteration not yet seen
            next(batches)
        assert loader.state_dict()["epoch"] == 1 and loader.state_dict()["batches"] == 0


def test_resuming_mid_epoch_with_other_batching_is_refused(jpegs):
    with Loader(PilDataset(jpegs), batch_size=4) as loader:
        state = {**loader.state_dict(), "batches": 1, "batch_size": 5}
        with pytest.raises(ValueError, match="batch_size 5 \\(now 4\\)"):
            loader.load_state_dict(state)


def test_a_loaded_seed_restarts_workers_with_it(jpegs):
    with Loader(PilDataset(jpegs), crop_pipeline(), batch_size=4, seed=1) as other:
        expected = epoch(other)
    with Loader(
        PilDataset(jpegs), crop_pipeline(), batch_size=4, backend="thread", seed=0
    ) as loader:
        epoch(loader)
        loader.load_state_dict({**loader.state_dict(), "seed": 1, "epoch": 0})
        got = epoch(loader)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(got, expected))


class Slow(PilDataset):
    def __getitem__(self, i):
        time.sleep(0.5)
        return super().__getitem__(i)


def test_a_keyboard_interrupt_while_waiting_closes_the_loader_and_says_so(jpegs):
    loader = Loader(Slow(jpegs), batch_size=2, backend="thread", workers=2)
    signal.setitimer(signal.ITIMER_REAL, 0.3)  # Ctrl-C (a notebook's stop button) in 0.3 s
    previous = signal.signal(signal.SIGALRM, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            list(loader)
    finally:
        signal.signal(signal.SIGALRM, previous)
    with pytest.raises(RuntimeError, match="KeyboardInterrupt .*stop button.* closed it"):
        next(iter(loader))


def test_a_keyboard_interrupt_in_the_loop_body_leaves_the_loader_usable(jpegs):
    with Loader(PilDataset(jpegs), batch_size=2, backend="thread", workers=2) as loader:
        with pytest.raises(KeyboardInterrupt):
            for _ in loader:
                raise KeyboardInterrupt  # stopped during the training step
        assert len(epoch(loader)) == len(loader)


# --------------------------------------------------------------------------- sharding


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_get_disjoint_shares_that_cover_the_epoch(jpegs, world_size, drop_last):
    def indices(rank, backend="serial", workers=0):
        data = ArrayDataset(jpegs, "array", np.uint8)
        with Loader(
            data,
            batch_size=2,
            rank=rank,
            world_size=world_size,
            drop_last=drop_last,
            backend=backend,
            workers=workers,
        ) as loader:
            batches = epoch(loader)
            assert len(batches) == len(loader)
            return [i for _, index, _ in batches for i in index.tolist()]

    shares = [indices(r) for r in range(world_size)]
    per_rank = {len(s) for s in shares}
    assert len(per_rank) == 1  # the same count on every rank, or DDP would hang
    everything = [i for s in shares for i in s]
    if drop_last:
        # the epoch's tail that does not divide among ranks, then each rank's last short batch
        kept = (N // world_size) // 2 * 2 * world_size
        assert len(set(everything)) == len(everything) == kept
    else:
        assert set(everything) == set(range(N))
        assert len(everything) - len(set(everything)) == -N % world_size  # the padding
    assert indices(1, "thread", 2) == shares[1]  # the same shard on every backend


def test_rank_without_world_size_is_refused(jpegs):
    with pytest.raises(ValueError, match="give rank and world_size together"):
        Loader(PilDataset(jpegs), rank=0)
    with pytest.raises(ValueError, match=r"rank must be in \[0, world_size=2\)"):
        Loader(PilDataset(jpegs), rank=2, world_size=2)


# --------------------------------------------------------------------------- protocol


def test_the_built_in_datasets_follow_the_staged_protocol(jpegs):
    sample = augment.ImageFolder(SAMPLE, SAMPLE / "labels.csv")
    http = augment.HTTPImages("http://127.0.0.1:9", ["a.jpg"])
    assert isinstance(sample, augment.StagedDataset) and isinstance(http, augment.StagedDataset)
    assert not isinstance(PilDataset(jpegs), augment.StagedDataset)


def test_an_albumentations_transform_given_as_it_is_is_made_reproducible(jpegs):
    A = pytest.importorskip("albumentations")
    pipeline = A.Compose([A.HorizontalFlip(p=0.5), A.RandomCrop(32, 32)])
    out = {}
    for backend, workers in [("serial", 0), ("thread", 2)]:
        with Loader(
            PilDataset(jpegs), pipeline, batch_size=5, backend=backend, workers=workers
        ) as loader:
            out[backend] = epoch(loader)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(out["serial"], out["thread"]))
    assert loader.transform is pipeline  # as given; the adapter is internal
