"""Batches reach the training loop without a copy: the process backend's tensors view its
shared-memory slots, the torch backend's are the storage the worker wrote into.

And what that must not break: a slot is reused only once nothing views it, so a batch the
loop holds (or writes into) never changes; holding many makes new slots, which go again
once let go of; close() and garbage collection leave nothing in /dev/shm while a batch is
still held, and its mapping goes with the last view of it.
"""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

import numpy as np
import torch
from support import hang_guard, leaked_psm, mapped_psm, psm_names, shm_names

from augment import BadImageError, Loader
from augment.loading.backends import process
from augment.loading.backends.torch_backend import _SharedBuffer
from augment.loading.batch import BatchPlan, BatchTask, make_batch
from augment.sources.samples import as_sample_transform, source_for

BATCH = 4
SKIPPED = 5  # on_error="skip": batch 1 holds 3 images


class Frames:
    """Map-style: image ``i`` is 16 x 16 x 3 of value ``i``; image ``SKIPPED`` is bad.
    Module level, so spawned workers can unpickle it."""

    def __len__(self) -> int:
        return 24

    def __getitem__(self, index: int):
        if index == SKIPPED:
            raise BadImageError(f"frame-{index}", "refused by the test")
        return np.full((16, 16, 3), index, np.uint8), index


def expected(number: int) -> list[int]:
    return [i for i in range(number * BATCH, (number + 1) * BATCH) if i != SKIPPED]


def values(images: torch.Tensor) -> list[int]:
    return [int(v) for v in images[:, 0, 0, 0]]


def psm_maps(pid: int | str = "self") -> dict[str, list[tuple[int, int]]]:
    """The address ranges of ``pid``'s mappings of /dev/shm/psm_* files, by name."""
    ranges: dict[str, list[tuple[int, int]]] = {}
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        if "/dev/shm/psm_" in line:
            low, high = (int(x, 16) for x in line.split()[0].split("-"))
            name = line.split("/dev/shm/")[1].split()[0]
            ranges.setdefault(name, []).append((low, high))
    return ranges


def slot_of(images: torch.Tensor) -> str | None:
    """The psm_ file whose mapping holds all of ``images``' bytes, if one does."""
    start = images.data_ptr()
    end = start + images.untyped_storage().nbytes()
    for name, ranges in psm_maps().items():
        if any(low <= start and end <= high for low, high in ranges):
            return name
    return None


def ours() -> set[str]:
    """The psm_ entries of /dev/shm this process maps."""
    return mapped_psm(os.getpid()) & psm_names()


def eventually(check, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def loader(backend: str, **kwargs) -> Loader:
    options = {"batch_size": BATCH, "workers": 1, "shuffle": False, "on_error": "skip"}
    return Loader(Frames(), None, backend=backend, **{**options, **kwargs})


# --------------------------------------------------------------------------- process


def test_process_batches_view_their_slots_which_are_reused_kept_and_freed():
    before = psm_names()
    with hang_guard(120), loader("process", prefetch=1) as ld:
        keep = ld.capacity + process.LOOP_HOLDS
        assert keep == 3

        # a loop that lets go of each batch: every batch but the first (which comes back
        # pickled, before the slots are sized) views a slot, and the same few slots serve
        names: list[set[str]] = []
        for epoch in range(2):
            for number, (images, labels) in enumerate(ld):
                assert values(images) == expected(number) == labels.tolist()
                if (epoch, number) != (0, 0):
                    assert slot_of(images) is not None, (epoch, number, psm_maps())
                    assert not images.is_contiguous()  # channels-last: no transpose copy
                names.append(ours())
        assert all(len(n) <= keep for n in names), names
        assert len(set().union(*names)) <= keep  # reused, not renewed

        # a loop that keeps its batches and writes into them: nothing it holds changes,
        # new slots are made for the batches to come
        kept = []
        for images, _ in ld:
            images.add_(100)  # in place, into the slot
            kept.append((images, images.clone()))
        held = {slot_of(images) for images, _ in kept}
        assert len(held) == len(kept) and None not in held  # a slot each
        for _ in range(2):
            for images, _ in ld:
                images.sub_(1)  # the loop's own: nobody else sees it
        for number, (images, copy) in enumerate(kept):
            assert torch.equal(images, copy)
            assert values(images) == [v + 100 for v in expected(number)]
        assert len(ours()) > keep

        # let go of them: the next epoch unlinks the slots beyond keep, in this process
        # and in the worker
        del kept, images, copy
        for _ in ld:
            pass
        assert len(ours()) <= keep
        gone = held - ours()
        assert gone and not gone & psm_names()
        assert not gone & set(psm_maps())
        (worker,) = ld.worker_pids()
        assert eventually(lambda: not gone & mapped_psm(worker)), mapped_psm(worker)

        # close with a batch held: /dev/shm is empty at once, the batch stays valid
        held_images, held_labels = next(iter(ld))
        name = slot_of(held_images)
        assert name in psm_names()
        copy = held_images.clone()
    assert name not in psm_names()
    assert leaked_psm(before) == set()
    assert torch.equal(held_images, copy) and held_labels.tolist() == expected(0)
    held_images.mul_(2)  # still the loop's to write
    assert values(held_images) == [2 * v for v in expected(0)]
    view = held_images[1:]
    del held_images
    assert name in psm_maps()  # a view of it keeps the mapping
    del view
    gc.collect()
    assert name not in psm_maps()  # the last view gone: unmapped


def test_process_batch_kept_after_the_loader_is_garbage_collected():
    before = psm_names()
    with hang_guard(120):
        ld = loader("process", prefetch=1)
        batches = iter(ld)
        next(batches)  # the first comes back pickled
        images, labels = next(batches)
        name = slot_of(images)
        assert name in psm_names()
        del batches, ld
        gc.collect()
    assert name not in psm_names()
    assert leaked_psm(before) == set()
    assert values(images) == expected(1) == labels.tolist()
    array = images.numpy()  # a numpy view keeps it too
    del images
    gc.collect()
    assert name in psm_maps()
    assert array[:, 0, 0, 0].tolist() == expected(1)
    del array
    gc.collect()
    assert name not in psm_maps()


def test_process_slots_made_for_held_batches_pass_the_dev_shm_check(monkeypatch):
    checked: list[tuple[str, int]] = []
    real = process.shm_check.check

    def check(backend, what, need, own=0):
        checked.append((what, need))
        real(backend, what, need, own)

    monkeypatch.setattr(process.shm_check, "check", check)
    with hang_guard(120), loader("process", prefetch=1) as ld:
        kept = [images for images, _ in ld]
    slot = 4 * 16 * 16 * 3
    # batch 0 comes back pickled; batches 1 to 5 each need a new slot, the loop keeping
    # them all, and so does the next epoch's batch 0, submitted as the last one is consumed:
    # room for capacity + 2 slots is checked from the first, then for every slot
    assert len(kept) == 6
    needs = [3 * slot, 3 * slot, 3 * slot, 4 * slot, 5 * slot, 6 * slot]
    assert [need for _, need in checked] == needs
    assert "3 shared-memory slots" in checked[0][0] and ".clone()" not in checked[0][0]
    assert "6 shared-memory slots" in checked[-1][0]
    assert "5 for those the training loop holds: .clone() the batches you keep" in checked[-1][0]


# --------------------------------------------------------------------------- torch


def test_torch_worker_buffer_is_the_shared_storage_it_sends():
    source = source_for(Frames())
    task = BatchTask(source, as_sample_transform(None), 0, "skip")
    buffer = _SharedBuffer()
    result = make_batch(task, BatchPlan(0, 1, tuple(range(4, 8))), buffer)
    assert isinstance(result.images, np.ndarray)  # what make_batch filled: a view of it
    tensor = buffer.tensor(result.images)
    assert isinstance(tensor, torch.Tensor) and tensor.is_shared()
    assert tensor.untyped_storage().data_ptr() == buffer.storage.data_ptr()
    assert tensor.data_ptr() == result.images.ctypes.data
    assert tensor.shape == (3, 16, 16, 3)  # image 5 skipped: the first 3 of 4 places
    assert buffer.storage.nbytes() == 4 * 16 * 16 * 3
    assert [int(v) for v in tensor[:, 0, 0, 0]] == expected(1)
    # a dtype torch does not have stays a numpy array, sent as before
    assert isinstance(_SharedBuffer()((2, 2), np.dtype(">u4")), np.ndarray)


def test_torch_batches_are_the_workers_storage_and_the_loops_own():
    before = shm_names()
    with hang_guard(120), loader("torch") as ld:
        kept = []
        for number, (images, labels) in enumerate(ld):
            assert values(images) == expected(number) == labels.tolist()
            assert images.is_shared()
            # the storage the worker made for the whole batch: batch 1 skipped an image,
            # and its tensor is the first 3 of 4 places (a copy would hold just those 3)
            assert images.untyped_storage().nbytes() == BATCH * 16 * 16 * 3
            images.add_(1)
            kept.append((images, images.clone()))
        for _ in ld:
            pass
    assert leaked_psm(before, ("psm_", "torch_")) == set()
    for images, copy in kept:
        assert torch.equal(images, copy)
