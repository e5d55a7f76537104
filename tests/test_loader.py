"""Loader on every backend: identical batches, order, bounded shared memory, bad input,
worker death, argument checks, close and Ctrl-C.

Real JPEG files, real worker processes and a real torch DataLoader. Starting a
spawned worker costs seconds (it imports torch), so each loader configuration of the
process and torch backends runs once per module (``runs``) and several tests read its
record. Shared-memory checks only count ``/dev/shm/psm_*`` entries that this test process
maps or that no other process maps, so another program using shared memory at the same
time cannot make them fail.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from support import (
    alive,
    hang_guard,
    leaked_after,
    leaked_psm,
    live_children,
    mapped_psm,
    noise_image,
    psm_names,
    write_jpegs,
)

import augment
from augment import ImageFolder, Loader

SEED = 7
N_IMAGES = 22  # batch_size 4: five full batches and a last one of 2
BATCH = 4
N_TAGS = 5
BACKENDS = ["serial", "thread", "process", "torch"]
COMBOS = [(b, w) for b in BACKENDS for w in (1, 2)]
# One worker is enough where order across workers is not the point: spawning costs seconds.
ONE_EACH = [("serial", 1), ("thread", 2), ("process", 1), ("torch", 1)]


def transform():
    return augment.Compose(
        [
            augment.RandomFlip(0.5, 0.5),
            augment.RandomRotate90(0.5),
            augment.RandomRotate(20),
            augment.RandomCrop(48),
        ]
    )


# --------------------------------------------------------------------------- helpers


def same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x, y) and torch.equal(u, v) for (x, u), (y, v) in zip(a, b)
    )


# --------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory) -> Path:
    """22 JPEGs of 64x64; each label is a distinct non-empty set of 5 tags."""
    root = tmp_path_factory.mktemp("loader_images")
    write_jpegs(root, N_IMAGES, name=lambda i: f"img_{i:02d}.jpg")
    rows = []
    for i in range(N_IMAGES):
        tags = [f"t{b}" for b in range(N_TAGS) if (i + 1) >> b & 1]
        rows.append(f"img_{i:02d},{' '.join(tags)}\n")
    (root / "labels.csv").write_text("image_name,tags\n" + "".join(rows))
    return root


@pytest.fixture(scope="module")
def dataset(sample_dir) -> ImageFolder:
    return ImageFolder(sample_dir, sample_dir / "labels.csv")


@dataclass
class Run:
    """What one loader configuration delivered over two epochs, and what it left behind."""

    epochs: list[list[tuple[torch.Tensor, torch.Tensor]]]
    length: int
    capacity: int
    mapped: list[set[str]] = field(default_factory=list)  # psm_ mapped here, per batch
    leaked: set[str] = field(default_factory=set)
    left_over: set[str] = field(default_factory=set)  # mapped during, still in /dev/shm
    workers_alive_after: list[int] = field(default_factory=list)


@pytest.fixture(scope="module")
def runs(dataset):
    cache: dict = {}

    def run(backend: str, workers: int, seed: int = SEED) -> Run:
        key = (backend, workers, seed)
        if key not in cache:
            try:
                cache[key] = _run(backend, workers, seed)
            except Exception as exc:  # noqa: BLE001 - every test of this run reports it
                cache[key] = exc
        if isinstance(cache[key], Exception):
            raise cache[key]
        return cache[key]

    def _run(backend: str, workers: int, seed: int) -> Run:
        before = psm_names()
        children = live_children()
        with (
            hang_guard(),
            Loader(
                dataset, transform(), batch_size=BATCH, backend=backend, workers=workers, seed=seed
            ) as loader,
        ):
            rec = Run([], len(loader), loader.capacity)
            for _ in range(2):
                epoch = []
                for batch in loader:
                    epoch.append(batch)
                    # in /dev/shm: the slots of earlier runs, unlinked, stay mapped while
                    # the batches kept from them live
                    rec.mapped.append(mapped_psm(os.getpid()) & psm_names())
                rec.epochs.append(epoch)
        seen = set().union(*rec.mapped)
        rec.leaked, rec.left_over = leaked_psm(before), seen & psm_names()
        rec.workers_alive_after = sorted(live_children() - children)
        return rec

    return run


@pytest.fixture(scope="module")
def reference(runs) -> Run:
    return runs("serial", 1)


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("backend, workers", COMBOS)
def test_same_seed_gives_the_same_batches_as_serial(runs, reference, backend, workers):
    rec = runs(backend, workers)
    assert len(rec.epochs) == 2
    for epoch in range(2):
        assert same(rec.epochs[epoch], reference.epochs[epoch]), f"epoch {epoch} differs"


@pytest.mark.parametrize("backend, workers", COMBOS)
def test_next_epoch_differs(runs, backend, workers):
    e0, e1 = runs(backend, workers).epochs
    assert not same(e0, e1)
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(e0, e1))


@pytest.mark.parametrize("backend, workers", COMBOS)
def test_batches_are_uint8_nchw_with_float32_labels(runs, dataset, backend, workers):
    rec = runs(backend, workers)
    for epoch in rec.epochs:
        sizes = [len(images) for images, _ in epoch]
        assert sizes == [4, 4, 4, 4, 4, 2]
        for images, labels in epoch:
            assert images.dtype == torch.uint8
            assert tuple(images.shape) == (len(images), 3, 48, 48)
            assert labels.dtype == torch.float32
            assert tuple(labels.shape) == (len(images), N_TAGS)


@pytest.mark.parametrize("backend, workers", COMBOS)
def test_len_is_the_number_of_batches_and_each_sample_comes_once(runs, dataset, backend, workers):
    rec = runs(backend, workers)
    assert rec.length == 6
    for epoch in rec.epochs:
        assert len(epoch) == rec.length
        labels = torch.cat([lab for _, lab in epoch]).numpy()
        # labels are distinct per image, so this is "every image exactly once"
        assert sorted(map(tuple, labels.tolist())) == sorted(map(tuple, dataset.labels.tolist()))


@pytest.mark.parametrize("backend, workers", COMBOS)
def test_workers_are_gone_after_close(runs, backend, workers):
    rec = runs(backend, workers)
    assert rec.workers_alive_after == []
    assert rec.leaked == set() and rec.left_over == set()


@pytest.mark.parametrize("backend, workers", ONE_EACH)
def test_different_seed_differs(runs, reference, backend, workers):
    other = runs(backend, workers, seed=SEED + 1)
    assert not same(other.epochs[0], reference.epochs[0])
    ref_labels = torch.cat([lab for _, lab in reference.epochs[0]])
    other_labels = torch.cat([lab for _, lab in other.epochs[0]])
    assert not torch.equal(ref_labels, other_labels)  # another order


@pytest.mark.parametrize("backend, workers", ONE_EACH)
def test_unshuffled_drop_last_yields_dataset_order_in_full_batches(dataset, backend, workers):
    with (
        hang_guard(),
        Loader(
            dataset,
            transform(),
            batch_size=5,
            backend=backend,
            workers=workers,
            shuffle=False,
            drop_last=True,
        ) as loader,
    ):
        assert len(loader) == N_IMAGES // 5 == 4
        epochs = [list(loader), list(loader)]
    for batches in epochs:
        assert len(batches) == 4
        assert [len(images) for images, _ in batches] == [5, 5, 5, 5]
        labels = torch.cat([lab for _, lab in batches]).numpy()
        np.testing.assert_array_equal(labels, dataset.labels[:20])


def test_no_drop_last_keeps_the_short_last_batch(dataset):
    with Loader(dataset, transform(), batch_size=5, shuffle=False) as loader:
        assert len(loader) == 5
        batches = list(loader)
    assert [len(images) for images, _ in batches] == [5, 5, 5, 5, 2]
    np.testing.assert_array_equal(torch.cat([lab for _, lab in batches]).numpy(), dataset.labels)


def test_batch_size_larger_than_dataset(dataset):
    with Loader(dataset, transform(), batch_size=100, drop_last=True) as loader:
        assert len(loader) == 0
        assert list(loader) == []
    with Loader(dataset, transform(), batch_size=100) as loader:
        assert [len(images) for images, _ in loader] == [N_IMAGES]


# --------------------------------------------------------------------------- memory bound


def test_process_backend_slots_are_capacity_plus_the_batches_the_loop_holds(runs):
    # This run keeps every batch it is given (12, over two epochs; the first ones come back
    # pickled, before the slots are sized): each it holds keeps its slot, nothing is
    # overwritten, and new slots are made for the batches still to come.
    rec = runs("process", 2)
    assert rec.capacity == 4  # prefetch 2 x 2 workers, fewer than the 6 batches of an epoch
    assert len(rec.mapped) == 12
    held = range(1, 13)
    assert all(0 < len(n) <= rec.capacity + k for n, k in zip(rec.mapped, held)), [
        len(n) for n in rec.mapped
    ]
    assert rec.left_over == set()  # every slot unlinked at close
    assert rec.leaked == set()


# --------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory) -> tuple[Path, int, dict[str, str]]:
    """10 good JPEGs in cat/ and dog/, plus a 0-byte file, a text file and a truncated
    JPEG; returns (root, number of good images, {bad path: word its reason contains})."""
    import io

    root = tmp_path_factory.mktemp("bad_images")
    for i in range(10):
        (root / ("cat" if i % 2 else "dog")).mkdir(exist_ok=True)
        noise_image(100 + i).save(root / ("cat" if i % 2 else "dog") / f"{i}.jpg")
    buf = io.BytesIO()
    noise_image(999).save(buf, format="JPEG", quality=95)
    bad = {
        root / "cat" / "zero.jpg": (b"", "empty"),
        root / "dog" / "text.jpg": (b"this is not an image\n" * 10, "not an image"),
        root / "dog" / "cut.jpg": (buf.getvalue()[: len(buf.getvalue()) // 2], "truncated"),
    }
    for path, (content, _) in bad.items():
        path.write_bytes(content)
    return root, 10, {str(p): word for p, (_, word) in bad.items()}


@pytest.mark.parametrize("backend, workers", ONE_EACH)
def test_bad_image_raises_naming_the_file(bad_dir, backend, workers):
    root, _, bad = bad_dir
    ds = ImageFolder(root)
    with (
        hang_guard(),
        Loader(
            ds, transform(), batch_size=4, backend=backend, workers=workers, on_error="raise"
        ) as loader,
    ):
        with pytest.raises(augment.BadImageError) as info:
            for _ in loader:
                pass
    assert info.value.source in bad
    assert info.value.source in str(info.value)
    assert bad[info.value.source] in info.value.cause


@pytest.mark.parametrize("backend, workers", ONE_EACH)
def test_bad_images_skipped_and_listed(bad_dir, backend, workers):
    root, n_good, bad = bad_dir
    ds = ImageFolder(root)
    assert len(ds) == n_good + 3
    with (
        hang_guard(),
        Loader(
            ds, transform(), batch_size=4, backend=backend, workers=workers, on_error="skip"
        ) as loader,
    ):
        batches = list(loader)
        skipped = list(loader.skipped)
    assert sum(len(images) for images, _ in batches) == n_good
    assert all(len(images) == len(labels) for images, labels in batches)
    assert all(labels.dtype == torch.int64 for _, labels in batches)
    assert sorted(source for source, _ in skipped) == sorted(bad)
    for source, reason in skipped:
        assert bad[source] in reason, (source, reason)


# --------------------------------------------------------------------------- sizes


@pytest.fixture(scope="module")
def wide_dir(tmp_path_factory) -> Path:
    """12 images 64 wide and 48 high, labelled by folder."""
    root = tmp_path_factory.mktemp("wide_images")
    (root / "a").mkdir()
    for i in range(12):
        noise_image(200 + i, h=48, w=64).save(root / "a" / f"{i:02d}.png")
    return root


@pytest.mark.parametrize("backend, workers", ONE_EACH)
def test_transform_returning_different_sizes_is_a_value_error(wide_dir, backend, workers):
    ds = ImageFolder(wide_dir)
    with (
        hang_guard(),
        Loader(
            ds, augment.RandomRotate90(0.5), batch_size=4, backend=backend, workers=workers
        ) as loader,
    ):
        with pytest.raises(ValueError) as info:
            for _ in loader:
                pass
    message = str(info.value)
    assert "48x64x3" in message and "64x48x3" in message, message


@pytest.mark.parametrize("backend, workers", [("thread", 2), ("process", 1), ("torch", 1)])
def test_size_changing_from_batch_to_batch_matches_serial(dataset, backend, workers):
    # batch_size 1 and no crop: every batch has its own size, many larger than the first
    # sample's (which is what the process backend sizes its shared memory slots by).
    scale = augment.RandomScale(0.5, 1.5)
    with Loader(dataset, scale, batch_size=1, seed=SEED) as loader:
        expected = list(loader)
    assert len({tuple(images.shape) for images, _ in expected}) > 5
    with (
        hang_guard(),
        Loader(dataset, scale, batch_size=1, backend=backend, workers=workers, seed=SEED) as loader,
    ):
        got = list(loader)
    assert same(got, expected)


# --------------------------------------------------------------------------- worker death


class DyingDataset:
    """Wraps an ImageFolder; in a worker process (never in the test process) ``read`` of
    ``index`` kills the worker with SIGKILL. Workers leave their pid and the time of death
    in ``marks``. Module level, so spawned workers can unpickle it."""

    def __init__(self, inner: ImageFolder, marks: Path, index: int = 5):
        self.inner, self.marks, self.index = inner, marks, index
        self.parent = os.getpid()

    def __len__(self) -> int:
        return len(self.inner)

    def source(self, index: int) -> str:
        return self.inner.source(index)

    def read(self, index: int) -> bytes:
        pid = os.getpid()
        if pid != self.parent:
            (self.marks / f"worker-{pid}").touch()
            if index == self.index:
                (self.marks / "killed").write_text(repr(time.monotonic()))
                os.kill(pid, signal.SIGKILL)
        return self.inner.read(index)

    def decode(self, data: bytes, index: int):
        return self.inner.decode(data, index)

    def label(self, index: int):
        return self.inner.label(index)


@pytest.mark.parametrize("backend", ["process", "torch"])
def test_worker_death_is_a_runtime_error_and_leaves_nothing(dataset, tmp_path, backend):
    marks = tmp_path / "marks"
    marks.mkdir()
    children, shm_before = live_children(), psm_names()
    loader = Loader(
        DyingDataset(dataset, marks),
        transform(),
        batch_size=4,
        backend=backend,
        workers=2,
        shuffle=False,
    )
    delivered = 0
    try:
        with hang_guard():
            with pytest.raises(RuntimeError) as info:
                for _ in loader:
                    delivered += 1
        raised_at = time.monotonic()
        # the failed epoch closed the loader itself: no close() call before these checks
        workers_left = sorted(live_children() - children)
        leaked = leaked_after(shm_before)
    finally:
        loader.close()
    killed_at = float((marks / "killed").read_text())
    assert raised_at - killed_at < 10.0
    assert backend in str(info.value), str(info.value)
    assert delivered <= 1  # batch 1 (indices 4..7) never arrives
    worker_pids = [int(p.name.split("-")[1]) for p in marks.glob("worker-*")]
    assert worker_pids
    assert [pid for pid in worker_pids if alive(pid)] == []
    assert workers_left == []
    assert leaked == set()
    with pytest.raises(RuntimeError, match="closed"):
        next(iter(loader))


class LargeImages:
    """Map-style dataset of 512x512 images: the first batches go back to the consumer
    pickled (about 3 MiB each), far more than a pipe holds, so a worker sends for as long
    as the consumer does not read. Module level, so spawned workers can unpickle it."""

    def __len__(self) -> int:
        return 16

    def __getitem__(self, index: int):
        return np.full((512, 512, 3), index, dtype=np.uint8), index


def test_worker_killed_halfway_through_sending_a_batch_is_an_error_not_a_hang():
    """The worker is killed while the consumer, busy in its loop body, has read only part of
    the batch it sends: the rest never comes. That is the worker's death, named, and the
    other workers' answers stay readable."""
    children, shm_before = live_children(), psm_names()
    loader = Loader(
        LargeImages(), None, batch_size=4, backend="process", workers=1, shuffle=False, prefetch=2
    )
    try:
        with hang_guard(30):
            batches = iter(loader)
            images, _ = next(batches)
            assert tuple(images.shape) == (4, 3, 512, 512)
            time.sleep(1.0)  # the worker made batch 1 and is stuck sending it
            (pid,) = loader.worker_pids()
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(RuntimeError) as info:
                next(batches)
        workers_left = sorted(live_children() - children)
        leaked = leaked_after(shm_before)
    finally:
        loader.close()
    assert f"pid {pid}" in str(info.value) and "SIGKILL" in str(info.value), str(info.value)
    assert workers_left == [] and leaked == set()


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"backend": "gpu"}, ["'gpu'", "serial", "thread", "process"]),
        ({"workers": -1}, ["workers", ">= 0", "-1"]),
        ({"batch_size": 0}, ["batch_size", ">= 1"]),
        ({"on_error": "ignore"}, ["'ignore'", "raise", "skip"]),
        ({"prefetch": 0}, ["prefetch", ">= 1"]),
        ({"batch_size": 2.5}, ["batch_size"]),
        ({"seed": 2**64}, ["seed", "2**64"]),
        ({"seed": -1}, ["seed", "[0, 2**64)", "-1"]),
    ],
)
def test_wrong_arguments_are_value_errors_saying_what_is_accepted(dataset, kwargs, words):
    with pytest.raises(ValueError) as info:
        Loader(dataset, transform(), **kwargs)
    for word in words:
        assert word in str(info.value), str(info.value)


# --------------------------------------------------------------------------- close


@pytest.mark.parametrize("backend, workers", [("process", 2), ("torch", 1)])
def test_early_break_keeps_workers_and_close_frees_them(dataset, reference, backend, workers):
    children, shm_before = live_children(), psm_names()
    with hang_guard():
        with Loader(
            dataset, transform(), batch_size=BATCH, backend=backend, workers=workers, seed=SEED
        ) as loader:
            for images, labels in loader:  # epoch 0, left after one batch
                first = (images, labels)
                break
            assert same([first], reference.epochs[0][:1])
            pids = loader.worker_pids()
            assert len(pids) == workers and all(alive(p) for p in pids)

            epoch1 = list(loader)  # the same workers run the next epoch
            assert same(epoch1, reference.epochs[1])
            assert loader.worker_pids() == pids
            assert all(alive(p) for p in pids)

            images, _ = next(iter(loader))  # epoch 2, abandoned at once
            assert images.shape == (BATCH, 3, 48, 48)
            seen = mapped_psm(os.getpid())
        assert not any(alive(p) for p in pids)
        assert live_children() - children == set()
        assert seen & psm_names() == set()
        assert leaked_psm(shm_before) == set()
        with pytest.raises(RuntimeError, match="closed"):
            next(iter(loader))


def test_with_block_closes_after_next_iter(dataset):
    children, shm_before = live_children(), psm_names()
    with hang_guard():
        with Loader(
            dataset, transform(), batch_size=BATCH, backend="process", workers=1, seed=SEED
        ) as loader:
            next(iter(loader))
            pids = loader.worker_pids()
            seen = mapped_psm(os.getpid())
    assert seen  # the slots were really in /dev/shm
    assert pids and not any(alive(p) for p in pids)
    assert live_children() - children == set()
    assert seen & psm_names() == set()
    assert leaked_psm(shm_before) == set()


# --------------------------------------------------------------------------- Ctrl-C


CONSUMER_SCRIPT = textwrap.dedent("""
    import faulthandler
    import signal
    import sys
    import time

    import augment

    if __name__ == "__main__":
        # Ctrl-C raises KeyboardInterrupt as in a terminal, even when this was started from
        # a shell that ignores SIGINT (background jobs); the test may ask for a stack dump.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        faulthandler.register(signal.SIGUSR1)
        root = sys.argv[1]
        dataset = augment.ImageFolder(root, root + "/labels.csv")
        transform = augment.Compose([augment.RandomRotate90(0.5), augment.RandomCrop(48)])
        loader = augment.Loader(dataset, transform, batch_size=2, backend="process",
                                workers=2)
        kept = []  # with "keep": every batch, each viewing a shared-memory slot of its own
        while True:
            for i, (images, labels) in enumerate(loader):
                if i == 0:
                    print("PIDS", *loader.worker_pids(), flush=True)
                if sys.argv[2:] == ["keep"]:
                    kept.append(images)
                time.sleep(0.3)
""")


@contextlib.contextmanager
def consumer_process(sample_dir: Path, tmp_path: Path, keep: bool = False):
    """A training loop in its own session on a 2-worker process-backend loader (``keep``:
    one that keeps every batch); yields (process, worker pids, psm_ names it maps) once its
    first batch arrived. Whatever is left of it afterwards is killed and its slots unlinked,
    so a failure leaks nothing."""
    script = tmp_path / "consumer.py"
    script.write_text(CONSUMER_SCRIPT)
    # the same augment as this test imports (a checkout may shadow the installed one)
    package_parent = str(Path(augment.__file__).resolve().parent.parent)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.Popen(
        [sys.executable, str(script), str(sample_dir), *(["keep"] if keep else [])],
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env=env,
    )
    seen: set[str] = set()
    try:
        with hang_guard():
            line = proc.stdout.readline()
        assert line.startswith("PIDS"), (line, proc.poll())
        pids = [int(p) for p in line.split()[1:]]
        assert len(pids) == 2 and all(alive(p) for p in pids)
        seen = mapped_psm(proc.pid)
        assert seen  # the consumer's slots
        yield proc, pids, seen
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # workers or a tracker a failure left
        proc.communicate()
        for name in seen & psm_names():
            with contextlib.suppress(OSError):
                os.unlink(f"/dev/shm/{name}")


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


@pytest.mark.parametrize("keep", [False, True], ids=["loop", "loop-keeping-batches"])
def test_ctrl_c_stops_workers_and_frees_shared_memory(sample_dir, tmp_path, keep):
    shm_before = psm_names()
    with consumer_process(sample_dir, tmp_path, keep) as (proc, pids, seen):
        if keep:  # some batches kept, each in a slot of its own
            time.sleep(1.5)
            seen = seen | mapped_psm(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        sent = time.monotonic()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGUSR1)
            time.sleep(1)
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(
                f"still running {time.monotonic() - sent:.1f} s after SIGINT; its "
                f"stderr:\n{proc.communicate()[1]}"
            )
        workers_left = _wait_gone(pids, 2)  # orphans are reaped by init, not by us
        left_over = seen & psm_names()
        leaked = leaked_after(shm_before)
        stderr = proc.communicate(timeout=10)[1]
    assert "KeyboardInterrupt" in stderr
    assert "leaked shared_memory" not in stderr, stderr
    assert workers_left == []
    assert left_over == set()
    assert leaked == set()


def test_killed_consumer_does_not_leave_workers_running(sample_dir, tmp_path):
    # The training process killed outright (OOM killer, SIGKILL): nobody runs its cleanup,
    # so the workers must notice on their own (torch's DataLoader workers watch their
    # parent) and exit; the multiprocessing resource tracker then frees the slots.
    with consumer_process(sample_dir, tmp_path) as (proc, pids, seen):
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        workers_left = _wait_gone(pids, 10)
        deadline = time.monotonic() + 2
        while seen & psm_names() and time.monotonic() < deadline:
            time.sleep(0.05)
        left_over = seen & psm_names()
    assert workers_left == [], "process-backend workers outlive their killed consumer"
    assert left_over == set()
