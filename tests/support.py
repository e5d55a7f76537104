"""What several test files share: a hang guard, child-process and shared-memory checks,
small JPEG-friendly images, the paths of the checkout and a runner for the profiler. Test
files import it by name (pytest's ``pythonpath`` has ``tests``); fixtures are in conftest."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent  # the checkout
SAMPLE = ROOT / "data" / "sample"  # the 128 sample tiles and their labels.csv
PROFILE_SCRIPT = ROOT / "scripts" / "profile_aug.py"


def free_port() -> int:
    """A TCP port free on loopback now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_gloo_ranks(script: Path, world_size: int = 2, timeout: float = 180) -> list:
    """Run ``script`` as ``world_size`` processes of a real gloo process group on loopback
    (``torch.distributed``'s environment variables set, a free port); each prints its result
    as JSON on its last line. Returns the results, by rank."""
    import json
    import os

    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(script)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "RANK": str(rank),
                "WORLD_SIZE": str(world_size),
            },
        )
        for rank in range(world_size)
    ]
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            assert p.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return results


def run_profiler(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    """``scripts/profile_aug.py`` with ``args``, from the checkout, as a user runs it."""
    return subprocess.run(
        [sys.executable, str(PROFILE_SCRIPT), *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Hang(Exception):
    pass


@contextlib.contextmanager
def hang_guard(seconds: float = 60):
    """Fail instead of hanging forever: SIGALRM raises ``Hang`` in the main thread. Child
    processes started inside and still alive after a hang are killed, so that one hung
    worker cannot keep the rest of the session (or its output pipes) waiting."""

    def alarm(signum, frame):
        raise Hang(f"still running after {seconds} s")

    children = live_children()
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except Hang:
        for pid in live_children() - children:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        raise
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of ``pid`` from /proc, None when it does not exist."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def live_children(parent: int | None = None) -> set[int]:
    """Living children of ``parent`` (default: this process), the multiprocessing resource
    tracker left out (it lives as long as the interpreter, by design)."""
    parent = os.getpid() if parent is None else parent
    out = set()
    for pid in _all_pids():
        stat = _proc_stat(pid)
        if stat is None or stat[1] != parent or stat[0] in ("Z", "X"):
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"resource_tracker" not in cmdline:
            out.add(pid)
    return out


def _descendants(root: int) -> set[int]:
    parents = {pid: stat[1] for pid in _all_pids() if (stat := _proc_stat(pid))}
    found, grew = {root}, True
    while grew:
        more = {pid for pid, ppid in parents.items() if ppid in found} - found
        found |= more
        grew = bool(more)
    return found


def psm_names() -> set[str]:
    return shm_names(("psm_",))


def shm_names(prefixes: tuple[str, ...] = ("psm_", "sem.mp-", "torch_")) -> set[str]:
    """Entries of /dev/shm: shared-memory blocks (psm_, torch_) and semaphores (sem.mp-)."""
    return {n for n in os.listdir("/dev/shm") if n.startswith(prefixes)}


def mapped_psm(pid: int, prefixes: tuple[str, ...] = ("psm_",)) -> set[str]:
    """Names of the /dev/shm entries starting with ``prefixes`` that ``pid`` has mapped."""
    try:
        lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    except OSError:
        return set()
    names = {line.split("/dev/shm/")[1].split()[0] for line in lines if "/dev/shm/" in line}
    return {n for n in names if n.startswith(prefixes)}


def leaked_psm(before: set[str], prefixes: tuple[str, ...] = ("psm_",)) -> set[str]:
    """Entries new since ``before`` that no process outside this process tree maps (those
    belong to someone else running at the same time)."""
    new = shm_names(prefixes) - before
    if not new:
        return new
    ours = _descendants(os.getpid())
    for pid in set(_all_pids()) - ours:
        new -= mapped_psm(pid, prefixes)
    return new


def leaked_after(before: set[str], prefixes: tuple[str, ...] = ("psm_",), within: float = 5.0):
    """``leaked_psm``, given ``within`` seconds for what is released asynchronously (a dead
    worker's semaphores, unlinked by the resource tracker): what is still there is a leak."""
    import time

    deadline = time.monotonic() + within
    while True:
        left = leaked_psm(before, prefixes)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def noise_image(seed: int, h: int = 64, w: int = 64) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)  # blocky: JPEG-friendly
    return Image.fromarray(np.kron(small, np.ones((8, 8, 1), np.uint8)))


def random_image(rng, shape, dtype=np.uint8) -> np.ndarray:
    """Noise of ``shape``: uint8 over 0..255 or float32 in [0, 1); ``rng`` a Generator or a
    seed."""
    rng = np.random.default_rng(rng)
    if dtype == np.uint8:
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.random(shape, dtype=np.float32)


def smooth_image(h, w, c=3, dtype=np.uint8) -> np.ndarray:
    """Slowly varying content (periods ~30 px): interpolation errors stay well under a level."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    planes = [
        127.5 + 60 * np.sin(2 * np.pi * x / 31 + k) + 55 * np.cos(2 * np.pi * y / 37 + 2 * k)
        for k in range(c)
    ]
    img = np.stack(planes, axis=-1)
    return np.rint(img).astype(np.uint8) if dtype == np.uint8 else (img / 255).astype(np.float32)


# The per-experiment fields of summary.json that docs/profiler.md lists.
EXPERIMENT_KEYS = {
    "name",
    "backend",
    "workers",
    "batch_size",
    "images",
    "wall_s",
    "startup_s",
    "images_per_s",
    "stall_fraction",
    "measured_s",
    "measured_batches",
    "stage_cpu_s",
    "stage_wall_s",
    "stage_runq_s",
    "cpu_utilization",
    "niced_utilization",
    "uncontended_cpu_per_image_ms",
    "concurrent_workers",
    "bottleneck",
    "advice",
    "batches",
    "too_short",
    "cpu_cores_used",
    "other_load_cores",
    "process_cores",
    "model",
    "expected_images_per_s",
    "recommendation",
}


def write_jpegs(root: Path, n: int, h: int = 64, w: int = 64, name=lambda i: f"{i:02d}.jpg"):
    """``n`` noise JPEGs (quality 90) of ``h`` x ``w`` under ``root``, image ``i`` at
    ``name(i)`` (a relative path: sub-folders are made); returns their paths."""
    paths = []
    for i in range(n):
        path = root / name(i)
        path.parent.mkdir(parents=True, exist_ok=True)
        noise_image(i, h, w).save(path, quality=90)
        paths.append(path)
    return paths
