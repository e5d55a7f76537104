"""One contract, run against every backend in ``augment.backends.names()``: a new backend is
checked by adding its file. The same batches as serial, epoch after epoch; a mid-epoch state
that resumes to the same batches; an error in a worker that reaches the loop as itself;
nothing left behind by ``close()``; a worker process that dies is an error naming the
backend, or its batches are made again, identical (never a hang, never a lost batch)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from support import hang_guard, leaked_psm, psm_names, write_jpegs

import augment

N_IMAGES, BATCH = 20, 4


def workers_for(name: str) -> int:
    return 0 if name == "serial" else 2


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module, if the ray extra is installed: the Ray backend joins it
    (rather than starting and stopping one per loader). This module's classes travel to
    Ray's workers by value."""
    try:
        import ray
    except ImportError:
        yield
        return
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    write_jpegs(root, N_IMAGES, h=40, w=48, name=lambda i: f"c{i % 2}/{i:02d}.jpg")
    return root


def pipeline():
    return augment.Compose([augment.RandomFlip(0.5, 0.5), augment.RandomRotate(15)])


def loader(dataset, name: str, **kw):
    return augment.Loader(
        dataset, pipeline(), batch_size=BATCH, backend=name, workers=workers_for(name), seed=3,
        **kw,
    )  # fmt: skip


def epochs(dataset, name: str, count: int = 2) -> list[list[torch.Tensor]]:
    with hang_guard(120), loader(dataset, name) as it:
        return [[images.clone() for images, _ in it] for _ in range(count)]


def test_batches_are_serials_epoch_after_epoch(folder, backend_name):
    dataset = augment.ImageFolder(folder)
    expected = epochs(dataset, "serial")
    got = epochs(dataset, backend_name)
    assert [len(e) for e in got] == [N_IMAGES // BATCH] * 2
    for mine, theirs in zip(got, expected):
        assert all(torch.equal(a, b) for a, b in zip(mine, theirs))
    assert not all(torch.equal(a, b) for a, b in zip(got[0], got[1]))  # epochs differ


def test_a_mid_epoch_state_resumes_to_the_same_batches(folder, backend_name):
    dataset = augment.ImageFolder(folder)
    whole = epochs(dataset, "serial", count=1)[0]
    with hang_guard(120), loader(dataset, backend_name) as first:
        for number, _ in enumerate(first):
            if number == 1:
                state = first.state_dict()  # the iterator is alive: epoch 0, 2 delivered
                break
    assert (state["epoch"], state["batches"]) == (0, 2)
    with hang_guard(120), loader(dataset, backend_name) as resumed:
        resumed.load_state_dict(state)
        rest = [images.clone() for images, _ in resumed]
    assert len(rest) == len(whole) - 2
    assert all(torch.equal(a, b) for a, b in zip(rest, whole[2:]))


class Failing:
    """A transform that raises on one image: the white one."""

    def __call__(self, img, rng):
        if img.mean() > 250:
            raise KeyError("no such channel")
        return img


def test_an_error_in_a_worker_reaches_the_loop_as_itself_naming_the_sample(
    folder, backend_name, tmp_path
):
    write_jpegs(tmp_path / "noise", 7, h=40, w=48)
    (tmp_path / "white").mkdir()
    Image.new("RGB", (48, 40), (255, 255, 255)).save(tmp_path / "white" / "odd.jpg")
    dataset = augment.ImageFolder(tmp_path)
    with hang_guard(120), augment.Loader(
        dataset, Failing(), batch_size=BATCH, backend=backend_name,
        workers=workers_for(backend_name), shuffle=False,
    ) as it:  # fmt: skip
        with pytest.raises(KeyError) as info:
            for _ in it:
                pass
    # named in a note (or, from torch's workers, in the message torch rebuilds the error from)
    said = " ".join([str(info.value), *getattr(info.value, "__notes__", [])])
    assert "odd.jpg" in said, said


def test_close_leaves_no_worker_and_nothing_in_dev_shm(folder, backend_name):
    dataset = augment.ImageFolder(folder)
    before = psm_names()
    with hang_guard(120):
        it = loader(dataset, backend_name)
        for _ in it:
            pass
        pids = it.worker_pids()
        it.close()
    deadline = time.monotonic() + 30  # a cluster's worker exits after close() returns
    while True:  # every worker process is gone (reaped, or not a child of ours)
        left = [pid for pid in pids if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert left == [], left
    assert leaked_psm(before) == set()
    with pytest.raises(RuntimeError, match="closed"):
        next(iter(it))


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


class DiesOnce:
    """Sample 6 kills the worker process making it, once (a marker file says it happened);
    in the training process itself it never dies."""

    def __init__(self, inner, marker: Path, parent: int):
        self.inner, self.marker, self.parent = inner, marker, parent

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        if i == 6 and os.getpid() != self.parent and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os._exit(9)
        return self.inner[i]


class Plain:
    """ImageFolder's images as a map-style dataset (image, label)."""

    def __init__(self, folder):
        self.folder = augment.ImageFolder(folder)

    def __len__(self):
        return len(self.folder)

    def __getitem__(self, i):
        return self.folder.decode(self.folder.read(i), i), self.folder.label(i)


def test_a_dead_worker_is_an_error_naming_the_backend_or_its_batches_are_made_again(
    folder, backend_name, tmp_path
):
    marker = tmp_path / "died"
    plain = Plain(folder)
    with (
        hang_guard(120),
        augment.Loader(
            plain, pipeline(), batch_size=BATCH, backend="serial", seed=3, shuffle=False
        ) as serial,
    ):
        expected = [images.clone() for images, _ in serial]
    dying = DiesOnce(plain, marker, os.getpid())
    got, error = [], None
    with hang_guard(180), augment.Loader(
        dying, pipeline(), batch_size=BATCH, backend=backend_name,
        workers=workers_for(backend_name), seed=3, shuffle=False,
    ) as it:  # fmt: skip
        try:
            for images, _ in it:
                if not got and not it.worker_pids():
                    pytest.skip(f"{backend_name}: no worker is a process of its own to die")
                got.append(images.clone())
        except RuntimeError as exc:
            error = exc
    assert marker.exists()  # a worker process did die
    if error is not None:  # an error that names the backend, at the batch that was lost
        assert backend_name in str(error), str(error)
        assert all(torch.equal(a, b) for a, b in zip(got, expected))
    else:  # or the epoch came through whole: the lost batches made again, identical
        assert len(got) == len(expected)
        assert all(torch.equal(a, b) for a, b in zip(got, expected))
