"""Days-long runs: a stuck worker is named (warning, or error past the timeout) instead of a
silent freeze; /dev/shm too small is an error at the start, never a SIGBUS; close() frees
everything while a kept traceback still holds the loader; workers run one native thread per
library unless told otherwise."""

from __future__ import annotations

import gc
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from support import (
    alive,
    hang_guard,
    leaked_after,
    live_children,
    shm_names,
    write_jpegs,
)

import augment
from augment import ImageFolder, Loader
from augment.loading import watchdog as watchdog_module
from augment.loading.backends import create

N_IMAGES = 8
BATCH = 2
STUCK = 5  # the image the transform gets stuck on: batch 2 (unshuffled, batch size 2)
ALL_SHM = ("psm_", "sem.mp-", "torch_")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("long_runs")
    write_jpegs(root, N_IMAGES)
    rows = "".join(f"{i:02d},t{i % 3}\n" for i in range(N_IMAGES))
    (root / "labels.csv").write_text("image_name,tags\n" + rows)
    return root


@pytest.fixture(scope="module")
def dataset(folder) -> ImageFolder:
    return ImageFolder(folder, folder / "labels.csv")


def decoded(dataset: ImageFolder, index: int) -> np.ndarray:
    return np.asarray(dataset.decode(dataset.read(index), index))


class StuckOn:
    """A transform that gets stuck on the images equal to ``targets``: it writes its pid and
    the time into ``marks``, then waits until the file ``release`` exists (never, unless the
    test makes it) or ``seconds`` pass. Module level, so spawned workers can unpickle it."""

    def __init__(self, targets: list[np.ndarray], marks: Path, seconds: float = 3600.0):
        self.targets, self.marks, self.seconds = targets, marks, seconds
        self.release = marks / "release"

    def __call__(self, img, rng):
        for n, target in enumerate(self.targets):
            if img.shape == target.shape and np.array_equal(img, target):
                (self.marks / f"stuck-{n}").write_text(f"{os.getpid()} {time.time()}")
                deadline = time.monotonic() + self.seconds
                while not self.release.exists() and time.monotonic() < deadline:
                    time.sleep(0.02)
        return img


def stuck_mark(marks: Path, n: int = 0) -> tuple[int, float]:
    pid, when = (marks / f"stuck-{n}").read_text().split()
    return int(pid), float(when)


# --------------------------------------------------------------------------- watchdog


@pytest.mark.parametrize("backend", ["process", "torch"])
def test_a_stuck_worker_past_the_timeout_is_an_error_naming_its_file(dataset, tmp_path, backend):
    children, shm_before = live_children(), shm_names()
    transform = StuckOn([decoded(dataset, STUCK)], tmp_path)
    loader = Loader(
        dataset, transform, batch_size=BATCH, backend=backend, workers=2, shuffle=False, timeout=2
    )
    delivered = 0
    try:
        with hang_guard(90), pytest.raises(RuntimeError) as info:
            for _ in loader:
                delivered += 1
        raised_at = time.time()
        workers_left = sorted(live_children() - children)  # closed by the error itself
        leaked = leaked_after(shm_before, ALL_SHM)
    finally:
        loader.close()
    pid, stuck_at = stuck_mark(tmp_path)
    message = str(info.value)
    assert raised_at - stuck_at < 5.0, message
    for words in (
        f"{backend} backend",
        f"batch {STUCK // BATCH} of epoch 0",
        f"(pid {pid})",
        "worker ",
        dataset.source(STUCK),  # the stuck file, by name
        dataset.source(STUCK - 1),  # and the rest of its batch
        "timeout=2",
        "killed",
    ):
        assert words in message, (words, message)
    assert delivered == STUCK // BATCH
    assert not alive(pid)
    assert workers_left == []
    assert leaked == set()
    with pytest.raises(RuntimeError, match="closed"):
        next(iter(loader))


def test_a_stuck_thread_past_the_timeout_releases_the_loop_and_says_it_keeps_running(
    dataset, tmp_path
):
    transform = StuckOn([decoded(dataset, STUCK)], tmp_path)
    loader = Loader(
        dataset, transform, batch_size=BATCH, backend="thread", workers=2, shuffle=False, timeout=1
    )
    try:
        with hang_guard(30), pytest.raises(RuntimeError) as info:
            for _ in loader:
                pass
        raised_at = time.time()
        stuck_threads = [t for t in threading.enumerate() if t.name.startswith("augment_")]
    finally:
        (tmp_path / "release").touch()
    _, stuck_at = stuck_mark(tmp_path)
    message = str(info.value)
    assert raised_at - stuck_at < 5.0, message
    for words in ("thread backend", "worker thread", dataset.source(STUCK), "keeps running"):
        assert words in message, (words, message)
    assert len(stuck_threads) == 1 and stuck_threads[0].daemon  # the stuck one, abandoned
    stuck_threads[0].join(5)  # released: it ends
    assert not stuck_threads[0].is_alive()


@pytest.mark.parametrize("backend", ["serial", "thread"])
def test_without_a_timeout_a_slow_batch_logs_one_warning_naming_it(
    dataset, tmp_path, backend, monkeypatch, caplog
):
    monkeypatch.setattr(watchdog_module, "WARN_AFTER_S", 0.3)
    # two slow batches (2 and 3), each well past the shortened threshold: one warning
    transform = StuckOn(
        [decoded(dataset, STUCK), decoded(dataset, STUCK + 2)], tmp_path, seconds=1.0
    )
    with caplog.at_level(logging.WARNING, logger="augment"), hang_guard(30):
        with Loader(
            dataset, transform, batch_size=BATCH, backend=backend, workers=2, shuffle=False
        ) as loader:
            batches = list(loader)
    assert len(batches) == N_IMAGES // BATCH  # a warning, not an error
    assert (tmp_path / "stuck-1").exists()  # the second slow batch happened
    warnings = [r.getMessage() for r in caplog.records if r.name == "augment"]
    assert len(warnings) == 1, warnings
    pid, _ = stuck_mark(tmp_path)
    where = "in the training loop" if backend == "serial" else "in worker thread"
    for words in (
        f"{backend} backend",
        f"batch {STUCK // BATCH} of epoch 0",
        where,
        f"(pid {pid})",
        dataset.source(STUCK),
        "Loader(timeout=",
        "once per loader",
    ):
        assert words in warnings[0], (words, warnings[0])


class StuckArriving:
    """A dataset whose copy in a new worker process never finishes unpickling (a dataset
    that opens a file on a dead network mount as it arrives, say): the worker is alive but
    never takes a batch. It writes its pid into ``marks`` first."""

    def __init__(self, dataset: ImageFolder, marks: Path):
        self.dataset, self.marks, self.parent = dataset, marks, os.getpid()

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return self.dataset[index]

    def __setstate__(self, state):
        self.__dict__.update(state)
        if os.getpid() != self.parent:
            (self.marks / f"arrived-{os.getpid()}").write_text(str(time.time()))
            while not (self.marks / "release").exists():
                time.sleep(0.02)


@pytest.mark.parametrize("backend", ["process", "torch"])
def test_workers_stuck_starting_past_the_timeout_are_an_error_not_a_hang(
    dataset, tmp_path, backend, monkeypatch
):
    """No worker ever begins a batch: past the timeout (and the start-up grace, cut short
    here once a worker is seen stuck, so a slow start is never mistaken for a stuck one)
    the loop gets an error saying so, every worker is killed, nothing is left."""
    monkeypatch.setattr(watchdog_module, "START_GRACE_S", 3600.0)

    def shorten_grace_once_stuck():
        while not any(tmp_path.glob("arrived-*")) and not (tmp_path / "release").exists():
            time.sleep(0.02)
        monkeypatch.setattr(watchdog_module, "START_GRACE_S", 0.5)

    threading.Thread(target=shorten_grace_once_stuck, daemon=True).start()
    children, shm_before = live_children(), shm_names()
    loader = Loader(
        StuckArriving(dataset, tmp_path), batch_size=BATCH, backend=backend, workers=2,
        shuffle=False, timeout=1.5,
    )  # fmt: skip
    try:
        with hang_guard(60), pytest.raises(RuntimeError) as info:
            start = time.monotonic()
            next(iter(loader))
        waited = time.monotonic() - start
        workers_left = sorted(live_children() - children)
        leaked = leaked_after(shm_before, ALL_SHM)
    finally:
        (tmp_path / "release").touch()
        loader.close()
    message = str(info.value)
    arrived = [int(p.name.split("-")[1]) for p in tmp_path.glob("arrived-*")]
    assert arrived, "no worker started unpickling the dataset"
    for words in (
        f"{backend} backend",
        "batch 0 of epoch 0, which no worker has begun",
        "timeout=1.5",
        "StuckArriving[0], StuckArriving[1]",  # the batch's samples
        "every worker was killed",
    ):
        assert words in message, (words, message)
    assert waited < 30, message
    assert not any(alive(pid) for pid in arrived)
    assert workers_left == []
    assert leaked == set()


def test_without_a_timeout_workers_stuck_starting_are_only_warned_about(
    dataset, tmp_path, monkeypatch, caplog
):
    monkeypatch.setattr(watchdog_module, "START_GRACE_S", 0.2)
    monkeypatch.setattr(watchdog_module, "WARN_AFTER_S", 0.5)
    loader = Loader(StuckArriving(dataset, tmp_path), batch_size=BATCH, backend="process",
                    workers=1, shuffle=False)  # fmt: skip
    releaser = threading.Timer(2.0, (tmp_path / "release").touch)
    releaser.start()
    try:
        with caplog.at_level(logging.WARNING, logger="augment"), hang_guard(60):
            batches = list(loader)
    finally:
        releaser.cancel()
        (tmp_path / "release").touch()
        loader.close()
    assert len(batches) == N_IMAGES // BATCH  # released: every batch, no error
    warnings = [r.getMessage() for r in caplog.records if r.name == "augment"]
    assert len(warnings) == 1 and "which no worker has begun" in warnings[0], warnings


# 0 is DataLoader's "no timeout" and accepted as such (tests/test_habits.py)
@pytest.mark.parametrize("timeout", [-1, float("nan"), "2", True])
def test_a_wrong_timeout_is_a_value_error_naming_it(dataset, timeout):
    with pytest.raises(ValueError, match="timeout must be a number of seconds > 0, or None"):
        Loader(dataset, timeout=timeout)


# --------------------------------------------------------------------------- /dev/shm

SMALL_SHM_CHILD = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    import augment
    from multiprocessing import shared_memory
    from augment.loading import shm

    class Frames:  # 8 images of 128x128x3 a batch: 0.4 MiB; 6 slots need 2.2 MiB
        def __len__(self):
            return 64

        def __getitem__(self, i):
            return np.full((128, 128, 3), i, np.uint8)

    if __name__ == "__main__":
        print("FREE", shm.free_bytes(), flush=True)
        try:
            with augment.Loader(Frames(), batch_size=8, backend=sys.argv[1], workers=2) as ld:
                print("DELIVERED", sum(1 for _ in ld))
        except RuntimeError as exc:
            print("ERROR", exc)
        if sys.argv[1] == "process":  # a slot that cannot get its pages: an error, no SIGBUS
            block = shared_memory.SharedMemory(create=True, size=2 * 2**20)
            try:
                shm.reserve(block._fd, block.size, "process", "a 2 MiB slot")
                print("RESERVED")
            except RuntimeError as exc:
                print("RESERVE-ERROR", exc)
            finally:
                block.close()
                block.unlink()
    """
)


def _in_small_shm(tmp_path: Path, backend: str) -> subprocess.CompletedProcess:
    """Run the child with a 1 MiB tmpfs on /dev/shm, in a mount namespace of its own."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /dev/shm"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"a mount namespace is not permitted here: {probe.stderr.strip()}")
    script = tmp_path / "child.py"
    script.write_text(SMALL_SHM_CHILD)
    command = 'mount -t tmpfs -o size=1m tmpfs /dev/shm && exec "$0" "$1" "$2"'
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", command, sys.executable, str(script), backend],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parent.parent,
    )


def test_process_backend_refuses_a_too_small_dev_shm_with_the_sizes(tmp_path):
    out = _in_small_shm(tmp_path, "process")
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
    assert out.returncode == 0, out.stderr[-3000:]
    assert 0.9 * 2**20 < int(lines["FREE"]) <= 2**20
    assert "DELIVERED" not in lines, out.stdout  # refused before the first batch came out
    error = lines["ERROR"]
    for words in (
        "process backend",
        "6 shared-memory slots",
        "4 for the batches in flight, prefetch x workers, and 2 for those the training loop",
        "need 2.2 MiB",
        "1.0 MiB free",
        "--shm-size",
        "prefetch",
        "batch_size",
        "backend='thread'",
    ):
        assert words in error, (words, error)
    assert "need 2.0 MiB" in lines["RESERVE-ERROR"], out.stdout
    assert "Bus error" not in out.stderr and "SIGBUS" not in out.stderr


def test_torch_backend_turns_a_full_dev_shm_into_an_error_not_a_hang(tmp_path):
    out = _in_small_shm(tmp_path, "torch")
    assert out.returncode == 0, out.stderr[-3000:]
    error = next((line for line in out.stdout.splitlines() if line.startswith("ERROR")), "")
    for words in ("torch backend", "/dev/shm", "MiB free", "--shm-size", "backend='thread'"):
        assert words in error, (words, out.stdout, out.stderr[-3000:])


# --------------------------------------------------------------------------- close


class FailsOn:
    """A transform that raises on the image equal to ``target``."""

    def __init__(self, target: np.ndarray):
        self.target = target

    def __call__(self, img, rng):
        if np.array_equal(img, self.target):
            raise ValueError("this image is refused")
        return img


@pytest.mark.parametrize("backend", ["process", "torch"])
def test_close_frees_dev_shm_while_an_exception_keeps_the_loader(dataset, backend):
    # As in a notebook: the last exception stays, its traceback's frames hold the loader
    # and its backend. Reference cycles are left to the garbage collector, so it is off
    # here: what close() does not drop, stays.
    before = shm_names()
    gc.disable()
    try:
        loader = Loader(
            dataset,
            FailsOn(decoded(dataset, STUCK)),
            batch_size=BATCH,
            backend=backend,
            workers=1,
            shuffle=False,
        )
        with hang_guard(90), pytest.raises(ValueError) as info:
            for _ in loader:
                assert shm_names() - before  # in use while it runs
        kept = info.value  # noqa: F841 - the point: it stays referenced
        loader.close()
        left = leaked_after(before, ALL_SHM)
    finally:
        gc.enable()
    assert left == set()


# --------------------------------------------------------------------------- threads


class ThreadCounts:
    """A map-style dataset whose samples carry the native thread counts of the process
    that loads them."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict:
        import cv2
        import torch

        return {
            "image": np.zeros((8, 8, 3), np.uint8),
            "cv2": cv2.getNumThreads(),
            "torch": torch.get_num_threads(),
            "omp": int(os.environ.get("OMP_NUM_THREADS", "0")),
            "blas": int(os.environ.get("OPENBLAS_NUM_THREADS", "0")),
            "pid": os.getpid(),
        }


@pytest.mark.parametrize("backend", ["process", "torch"])
@pytest.mark.parametrize("threads", [None, 2])
def test_workers_run_one_native_thread_per_library_unless_told(backend, threads):
    options = {} if threads is None else {"threads": threads}
    with hang_guard(90):
        with Loader(
            ThreadCounts(), batch_size=2, backend=backend, workers=1, backend_options=options
        ) as loader:
            batches = list(loader)
    # (torch imported after set_up, as in a process worker here, reads OMP_NUM_THREADS and
    # caps it at the cores: 2 is what this 2-core machine can tell apart from 1)
    want = threads or 1
    for batch in batches:
        assert set(batch["pid"].tolist()) != {os.getpid()}  # read inside a worker
        for library in ("cv2", "torch", "omp", "blas"):
            assert batch[library].tolist() == [want, want], (library, batch)


def test_threads_option_is_checked(dataset):
    for backend in ("process", "torch"):
        with pytest.raises(ValueError, match="threads .* must be an int >= 1; got 0"):
            create(backend, 1, 2, threads=0)
    with pytest.raises(ValueError, match="backend 'thread' has no option 'threads'"):
        augment.Loader(dataset, backend="thread", backend_options={"threads": 2})
