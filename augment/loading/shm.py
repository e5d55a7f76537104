"""/dev/shm, checked before it bites: the free space of the shared-memory filesystem, and the
one clear error when batches will not fit (Docker gives containers 64 MiB by default; a full
/dev/shm otherwise shows up as a worker killed by SIGBUS); and the process backend's batch
slots in it (``SlotPool``, ``Block``, a worker's ``Slot``)."""

from __future__ import annotations

import errno
import itertools
import math
import mmap
import os
from multiprocessing import shared_memory

import numpy as np

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


# ------------------------------------------------- the process backend's batch slots


def attach(name: str) -> shared_memory.SharedMemory:
    # Workers share the consumer's resource tracker (started before them: see start), so
    # attaching registers nothing new and the consumer's unlink stays the only one.
    return shared_memory.SharedMemory(name=name)


class Slot:
    """The batch buffer a worker fills: the shared-memory slot when the batch fits, else a
    private array that goes back pickled (the consumer then grows the slot)."""

    def __init__(self, shm: shared_memory.SharedMemory | None, size: int):
        self.shm, self.size, self.used = shm, size, False

    def buffer(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        if self.shm is not None and math.prod(shape) * np.dtype(dtype).itemsize <= self.size:
            self.used = True
            return np.ndarray(shape, dtype=dtype, buffer=self.shm.buf)
        return np.empty(shape, dtype=dtype)


class Block:
    """One shared-memory slot, as the consumer holds it: its name (which workers attach to)
    and a mapping of its own, which the batches handed to the loop view. The
    ``SharedMemory``'s own mapping is closed at once, so nothing ever needs closing while a
    view lives; the consumer's mapping goes when the block and its last view are gone."""

    def __init__(self, backend: str, what: str, nbytes: int):
        self.shm = shared_memory.SharedMemory(create=True, size=max(nbytes, 1))
        self.name, self.size = self.shm.name, self.shm.size
        try:
            reserve(getattr(self.shm, "_fd", -1), self.size, backend, what)
            self.map = mmap.mmap(self.shm._fd, self.size)
        except BaseException:
            self.shm.close()
            self.shm.unlink()
            raise
        self.shm.close()  # its fd and its own mapping; the name stays until unlink()

    def unlink(self) -> None:
        """Remove the name from /dev/shm; the memory goes with the last mapping of it."""
        self.shm.unlink()


class SlotPool:
    """The consumer's slots. A slot is free when no batch is in it and nothing views it;
    ``release`` (called by ``weakref.finalize`` when the array a batch's tensor is made from
    dies, in whatever thread) makes it free again. ``keep`` slots stay; more are made while
    the loop holds batches, and unlinked when they are free again."""

    def __init__(self, keep: int):
        self.keep = keep
        self.blocks: dict[int, Block] = {}
        self.free: list[int] = []  # appended to by finalizers: list operations only
        self.closed = False
        self._ids = itertools.count()

    def release(self, slot: int) -> None:
        if not self.closed and slot in self.blocks:
            self.free.append(slot)

    def take(self) -> tuple[int, Block | None]:
        """A free slot (its block None when it has none yet), or a new one when none is free;
        free slots beyond ``keep`` are unlinked first."""
        while len(self.blocks) > self.keep and len(self.free) > 1:
            self.blocks.pop(self.free.pop(0)).unlink()
        if self.free:
            slot = self.free.pop()
            return slot, self.blocks.get(slot)
        return next(self._ids), None

    def add(self, slot: int, block: Block) -> None:
        old = self.blocks.pop(slot, None)
        if old is not None:
            old.unlink()
        self.blocks[slot] = block

    def live(self) -> frozenset[str]:
        return frozenset(b.name for b in self.blocks.values())

    def close(self) -> None:
        """Unlink every slot: /dev/shm is empty at once. A slot a batch still views stays
        mapped until the view is released."""
        self.closed = True
        blocks = list(self.blocks.values())
        self.blocks.clear()
        self.free.clear()
        for block in blocks:
            block.unlink()
