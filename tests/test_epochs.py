"""Epoch ends: the next epoch's first batches are submitted while the current epoch's last ones
are consumed (``augment.loading.ahead``). The batches stay those of a loader that never looks ahead,
bit for bit; set_epoch, load_state_dict, a break and close() between epochs cancel or keep
them rightly and leak nothing; the state counts only what was delivered; the watchdog names
a stuck batch submitted ahead."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from support import hang_guard, leaked_after, live_children, shm_names, write_jpegs

import augment
from augment import ImageFolder, Loader

N = 10
ALL_SHM = ("psm_", "sem.mp-", "torch_")
BACKENDS = [("serial", 0), ("thread", 2), ("process", 2), ("torch", 2), ("ray", 2)]
CROSSING = BACKENDS[:4]  # and Ray, in the first test only (it starts slowly)


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory) -> Path:
    """A folder of ``N`` JPEGs, each its own class: a sample's label is its index."""
    root = tmp_path_factory.mktemp("epochs_jpegs")
    write_jpegs(root, N, 40, 48, name=lambda i: f"c{i}/{i:02d}.jpg")
    return root


def make(jpegs, backend="serial", workers=0, batch_size=3, **kw) -> Loader:
    pipeline = augment.Compose([augment.RandomFlip(0.5, 0.5), augment.RandomCrop(32)])
    return Loader(
        ImageFolder(jpegs), pipeline, batch_size=batch_size, backend=backend, workers=workers, **kw
    )


def grab(batches) -> list[tuple]:
    """Batches as comparable values: (sample indices, the pixels' bytes)."""
    return [(index.tolist(), images.numpy().tobytes()) for images, index in batches]


def alone(jpegs, epoch: int, batch_size: int = 3, **kw) -> list[tuple]:
    """Epoch ``epoch`` as a serial loader made for it alone gives it: nothing looks ahead."""
    with make(jpegs, batch_size=batch_size, **kw) as loader:
        loader.set_epoch(epoch)
        return grab(loader)


def where(loader: Loader) -> tuple[int, int]:
    state = loader.state_dict()
    return state["epoch"], state["batches"]


def ahead_of(loader: Loader) -> tuple[int, int] | None:
    """(epoch, batches in flight) submitted ahead; None when nothing is."""
    ahead = loader._ahead
    return None if ahead is None or not ahead.pending else (ahead.epoch, len(ahead.pending))


@pytest.mark.parametrize("batch_size", [3, 1])  # 4 batches an epoch (3, 3, 3, 1), or 10
@pytest.mark.parametrize("backend,workers", BACKENDS)
def test_epochs_are_the_batches_of_epochs_run_alone(jpegs, backend, workers, batch_size):
    if backend == "ray":
        pytest.importorskip("ray", reason="the ray extra is not installed")
        if batch_size == 1:
            pytest.skip("one Ray run is enough (Ray starts slowly)")
    reference = [alone(jpegs, e, batch_size) for e in range(3)]
    seen_ahead = []
    with hang_guard(120), make(jpegs, backend, workers, batch_size) as loader:
        epochs = []
        for _ in range(3):
            epochs.append(grab(loader))
            seen_ahead.append(ahead_of(loader))
    assert epochs == reference
    # the next epoch's first batches were in flight as each epoch ended
    assert [a and a[0] for a in seen_ahead] == [1, 2, 3]
    assert all(0 < a[1] <= loader.capacity for a in seen_ahead)


@pytest.mark.parametrize("backend,workers", CROSSING)
def test_set_epoch_to_another_epoch_between_epochs_cancels_what_was_ahead(jpegs, backend, workers):
    reference = {e: alone(jpegs, e) for e in (0, 1, 3, 4)}
    with hang_guard(120), make(jpegs, backend, workers) as loader:
        assert grab(loader) == reference[0]
        assert ahead_of(loader)[0] == 1
        for _ in range(5):  # each cancels: a process slot not freed would soon run out
            loader.set_epoch(3)
            assert ahead_of(loader) is None
            loader.set_epoch(1)
        loader.set_epoch(3)
        assert grab(loader) == reference[3]
        loader.set_epoch(4)  # already next: what is ahead is kept, and used
        assert ahead_of(loader)[0] == 4
        assert grab(loader) == reference[4]


@pytest.mark.parametrize("backend,workers", CROSSING)
def test_load_state_dict_between_epochs_resumes_its_position(jpegs, backend, workers):
    reference = {e: alone(jpegs, e) for e in (0, 1, 2)}
    with hang_guard(120), make(jpegs, backend, workers) as loader:
        assert grab(loader) == reference[0]
        saved = loader.state_dict()
        assert (saved["epoch"], saved["batches"]) == (1, 0)  # nothing ahead counted
        loader.load_state_dict({**saved, "epoch": 2, "batches": 1})
        assert ahead_of(loader) is None
        assert grab(loader) == reference[2][1:]
        loader.load_state_dict(saved)  # epoch 1 from its start: the same batches
        assert grab(loader) == reference[1]
        other = {**saved, "epoch": 0, "seed": 7}  # another seed: workers restart
        loader.load_state_dict(other)
        assert grab(loader) == alone(jpegs, 0, seed=7)


@pytest.mark.parametrize("backend,workers", CROSSING)
@pytest.mark.parametrize("after", [1, 3])  # before, and after, epoch 1 was submitted ahead
def test_a_break_is_followed_by_the_next_epochs_batches(jpegs, backend, workers, after):
    reference = {e: alone(jpegs, e) for e in (0, 1, 2)}
    with hang_guard(120), make(jpegs, backend, workers, prefetch=1) as loader:
        got = []
        for batch in loader:
            got += grab([batch])
            if len(got) == after:
                break
        assert got == reference[0][:after]
        assert where(loader) == (1, 0)
        assert grab(loader) == reference[1]
        assert where(loader) == (2, 0)
        batches = iter(loader)  # epoch 2, adopted from what was ahead: counted as delivered
        assert grab([next(batches)]) == reference[2][:1]
        assert where(loader) == (2, 1)


@pytest.mark.parametrize("backend,workers", CROSSING[1:])
def test_close_between_epochs_leaves_no_worker_and_nothing_in_dev_shm(jpegs, backend, workers):
    children, shm_before = live_children(), shm_names()
    loader = make(jpegs, backend, workers)
    with hang_guard(120):
        grab(loader)
        assert ahead_of(loader)[0] == 1
        loader.close()
    assert live_children() - children == set()
    assert leaked_after(shm_before, ALL_SHM) == set()
    assert not [t for t in __import__("threading").enumerate() if t.name.startswith("augment_")]
    with pytest.raises(RuntimeError, match="closed"):
        next(iter(loader))


class StuckWhenArmed:
    """Stuck on ``target`` once the file ``arm`` exists under ``marks`` (a test arms it once
    the target's batch of epoch 0 is delivered), until ``release`` does. Module level, so
    spawned workers can unpickle it."""

    def __init__(self, target: np.ndarray, marks: Path):
        self.target, self.marks = target, marks

    def __call__(self, img, rng):
        if (self.marks / "arm").exists() and np.array_equal(img, self.target):
            (self.marks / "stuck").write_text(str(os.getpid()))
            deadline = time.monotonic() + 600
            while not (self.marks / "release").exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        return img


def test_the_watchdog_names_a_stuck_batch_submitted_ahead(jpegs, tmp_path):
    dataset = ImageFolder(jpegs)
    first = np.asarray(dataset.decode(dataset.read(0), 0))
    children, shm_before = live_children(), shm_names()
    loader = Loader(
        dataset,
        StuckWhenArmed(first, tmp_path),
        batch_size=1,
        backend="process",
        workers=2,
        prefetch=1,
        shuffle=False,
        timeout=2,
    )
    delivered = []
    try:
        with hang_guard(90), pytest.raises(RuntimeError) as info:
            for epoch in range(2):
                for _, index in loader:
                    delivered.append((epoch, int(index[0])))
                    (tmp_path / "arm").touch()  # sample 0 next comes in epoch 1's batch 0
        workers_left = live_children() - children
        leaked = leaked_after(shm_before, ALL_SHM)
    finally:
        (tmp_path / "release").touch()
        loader.close()
    message = str(info.value)
    pid = int((tmp_path / "stuck").read_text())
    for words in ("process backend", "batch 0 of epoch 1", f"(pid {pid})", dataset.source(0)):
        assert words in message, (words, message)
    assert delivered == [(0, i) for i in range(N)]  # epoch 0 whole, none of epoch 1
    assert workers_left == set() and leaked == set()
