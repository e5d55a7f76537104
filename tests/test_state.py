"""One rule for a Loader's state, on every backend: while an epoch's iterator is alive,
``state_dict()`` is that epoch's position; once it is finished or abandoned (``break``, an
exception, garbage collected), it is what iterating the live loader does next. A Loader
restored from it yields what the live one yields. And the epoch protocol frameworks use:
``set_epoch`` (also ``loader.sampler.set_epoch``) keeps a restored position of the same
epoch.

Real JPEG files, real worker processes and a real torch DataLoader."""

from __future__ import annotations

import gc

import pytest
import torch
from PIL import Image
from support import write_jpegs
from torch.utils.data import Dataset

import augment
from augment import Loader

N, BATCH = 10, 3  # 4 batches an epoch: 3, 3, 3, 1
BACKENDS = [("serial", 0), ("thread", 2), ("process", 2), ("torch", 2)]


class Indexed(Dataset):
    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return Image.open(self.paths[i]).convert("RGB"), i


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    return write_jpegs(tmp_path_factory.mktemp("state_jpegs"), N, 40, 48)


def make(jpegs, backend="serial", workers=0, **kw) -> Loader:
    pipeline = augment.Compose([augment.RandomFlip(0.5, 0.5), augment.RandomCrop(32)])
    return Loader(
        Indexed(jpegs), pipeline, batch_size=BATCH, backend=backend, workers=workers, **kw
    )


def grab(batches) -> list[tuple]:
    """Batches as comparable values: (sample indices, pixel checksum)."""
    return [(index.tolist(), int(images.long().sum())) for images, index in batches]


def where(loader: Loader) -> tuple[int, int]:
    state = loader.state_dict()
    return state["epoch"], state["batches"]


@pytest.mark.parametrize("backend,workers", BACKENDS)
def test_a_restored_loader_yields_what_the_live_one_yields(jpegs, backend, workers):
    with make(jpegs, backend, workers) as live:
        batches = iter(live)
        head = grab([next(batches), next(batches)])
        alive = live.state_dict()  # epoch 0's iterator is alive: its position
        rest = grab(batches)  # ... and the live loader's future: the rest of epoch 0
        for n, _ in enumerate(live):  # epoch 1, left by a break after one batch
            if n == 0:
                break
        broken = live.state_dict()  # abandoned: what iterating the live loader does next
        after_break = grab(live)
    assert (alive["epoch"], alive["batches"]) == (0, 2)
    assert (broken["epoch"], broken["batches"]) == (2, 0)
    assert len(head) == 2 and len(rest) == 2 and len(after_break) == 4
    with make(jpegs, backend, workers) as restored:
        restored.load_state_dict(alive)
        assert grab(restored) == rest
        restored.load_state_dict(broken)
        assert grab(restored) == after_break
    with make(jpegs) as reference:  # and those are the uninterrupted run's epochs 0 and 2
        epochs = [grab(reference) for _ in range(3)]
    assert head + rest == epochs[0] and after_break == epochs[2]


def test_an_exception_in_the_loop_abandons_the_epoch_and_keeps_the_loader(jpegs):
    with make(jpegs) as loader:
        with pytest.raises(RuntimeError, match="the step"):
            for _ in loader:
                raise RuntimeError("the step failed")  # the training step, not the loader
        assert where(loader) == (1, 0)
        assert len(grab(loader)) == 4  # epoch 1, on the same loader


def test_a_garbage_collected_iterator_abandons_its_epoch(jpegs):
    with make(jpegs) as loader:
        batches = iter(loader)
        next(batches)
        assert where(loader) == (0, 1)
        del batches
        gc.collect()
        assert where(loader) == (1, 0)


def test_iter_alone_takes_no_epoch_and_leaves_the_state(jpegs):
    with make(jpegs) as loader:
        iter(loader)
        assert where(loader) == (0, 0)


def test_set_epoch_of_the_same_epoch_keeps_a_restored_position(jpegs):
    with make(jpegs) as reference:
        epochs = [grab(reference) for _ in range(3)]
        state = {**reference.state_dict(), "epoch": 1, "batches": 2}
    with make(jpegs) as loader:  # the DDP loop, resumed: set_epoch before every epoch
        loader.load_state_dict(state)
        resumed = []
        for epoch in range(state["epoch"], 3):
            loader.set_epoch(epoch)
            resumed += grab(loader)
    assert resumed == epochs[1][2:] + epochs[2]
    with make(jpegs) as loader:  # another epoch starts from its first batch
        loader.load_state_dict(state)
        loader.sampler.set_epoch(2)
        assert grab(loader) == epochs[2]


def test_set_epoch_to_another_epoch_ends_the_one_in_progress(jpegs):
    with make(jpegs) as loader:
        batches = iter(loader)
        next(batches)
        loader.set_epoch(0)  # epoch 0 is running, so 1 was next: this one is another
        with pytest.raises(StopIteration):
            next(batches)
        assert where(loader) == (0, 0)
        loader.set_epoch(0)  # already next: nothing changes
        assert len(grab(loader)) == 4


def test_load_state_dict_ends_the_epoch_in_progress(jpegs):
    with make(jpegs) as loader:
        batches = iter(loader)
        next(batches)
        loader.load_state_dict({**loader.state_dict(), "epoch": 3, "batches": 1})
        with pytest.raises(StopIteration):
            next(batches)
        assert where(loader) == (3, 1)
        assert len(grab(loader)) == 3


def test_the_sampler_is_the_next_epochs_order_on_this_rank(jpegs):
    with make(jpegs) as loader:
        loader.sampler.set_epoch(2)
        assert loader.epoch == loader.sampler.epoch == 2
        order = list(loader.sampler)
        assert len(loader.sampler) == N and sorted(order) == list(range(N))
        assert [i for indices, _ in grab(loader) for i in indices] == order
        assert list(loader.sampler) != order  # epoch 3 is next, shuffled otherwise
        assert not isinstance(loader.sampler, torch.utils.data.SequentialSampler)
    with make(jpegs, shuffle=False) as ordered:
        assert isinstance(ordered.sampler, torch.utils.data.SequentialSampler)
        assert list(ordered.sampler) == list(range(N))
    with make(jpegs, rank=1, world_size=2) as half:
        share = list(half.sampler)
        assert len(share) == len(half.sampler) == N // 2
        assert [i for indices, _ in grab(half) for i in indices] == share


def test_lightning_finds_the_sampler_and_no_batch_sampler(jpegs):
    """What Lightning's own helpers do with a Loader: set the epoch through its sampler,
    and look for shuffling without tripping over a missing batch_sampler."""
    fabric_data = pytest.importorskip("lightning.fabric.utilities.data")
    pytorch_data = pytest.importorskip("lightning.pytorch.utilities.data")
    with make(jpegs) as loader:
        fabric_data._set_sampler_epoch(loader, 4)
        assert loader.epoch == 4
        assert pytorch_data._is_dataloader_shuffled(loader) is False
        assert loader.batch_sampler is None


def test_state_of_an_epoch_whose_iterator_delivered_everything_is_the_next(jpegs):
    """Lightning stops asking at len(loader), without StopIteration: the iterator is alive
    at the epoch's end, which is the next epoch's start."""
    with make(jpegs) as loader:
        batches = iter(loader)
        for _ in range(len(loader)):
            next(batches)
        assert where(loader) == (1, 0)
        with pytest.raises(StopIteration):
            next(batches)
        assert where(loader) == (1, 0)


def test_state_survives_torch_save(jpegs, tmp_path):
    with make(jpegs) as loader:
        batches = iter(loader)
        next(batches)
        torch.save(loader.state_dict(), tmp_path / "state.pt")
        rest = grab(batches)
    with make(jpegs) as restored:
        restored.load_state_dict(torch.load(tmp_path / "state.pt"))
        assert grab(restored) == rest
