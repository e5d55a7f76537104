"""/dev/shm, checked before it bites: the free space of the shared-memory filesystem, and the
one clear error when batches will not fit (Docker gives containers 64 MiB by default; a full
/dev/shm otherwise shows up as a worker killed by SIGBUS)."""

from __future__ import annotations

import errno
import math
import os

SHM_DIR = "/dev/shm"


def free_bytes(path: str = SHM_DIR) -> int | None:
    """Bytes free for an unprivileged writer on ``path``; None where it cannot be told."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def too_small(backend: str, what: str, need: int | None, free: int | None) -> RuntimeError:
    """The error for ``need`` bytes (None: unknown) that ``SHM_DIR`` cannot hold: what needs
    them, how much is free, and what to change."""
    has = "" if free is None else f", which has {_mib(free)} free"
    size = "more shared memory than there is" if need is None else f"{_mib(need)} of shared memory"
    suggest = max(256, 2 ** math.ceil(math.log2(max(2 * (need or 0), 1) / 2**20)))  # MiB: 2x
    return RuntimeError(
        f"{backend} backend: {what} need {size} in {SHM_DIR}{has}. "
        f"Give it more (Docker: docker run --shm-size={suggest}m ...; Kubernetes: an "
        "emptyDir with medium Memory on /dev/shm), or need less: a smaller prefetch or "
        "batch_size, or backend='thread', which uses no shared memory"
    )


def check(backend: str, what: str, need: int, own: int = 0) -> None:
    """Raise ``too_small`` when ``need`` bytes exceed the free space plus ``own`` (bytes the
    caller holds there already and will free first)."""
    free = free_bytes()
    if free is not None and need > free + own:
        raise too_small(backend, what, need, free + own)


def reserve(fd: int, size: int, backend: str, what: str) -> None:
    """Allocate ``size`` bytes of the shared-memory file ``fd`` now: a file only truncated
    to size is sparse, and a write into a page /dev/shm cannot supply is a SIGBUS in the
    worker. Here it is ``too_small``, raised in the consumer. Filesystems without fallocate
    (and an ``fd`` below 0: unknown) keep the earlier ``check`` alone."""
    if fd < 0:
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
            raise too_small(backend, what, size, free_bytes()) from exc
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise


def forget(*objects) -> None:
    """Empty multiprocessing ``objects`` (queues, events), closed already. Their semaphores
    are files in /dev/shm (``sem.mp-*``), removed only when the semaphore objects are
    collected: a traceback a notebook keeps may reference a queue through a frame, but then
    it references an empty shell, and the files go now."""
    for obj in objects:
        if obj is not None and type(obj).__module__.startswith("multiprocessing."):
            vars(obj).clear()
