"""Data-parallel sharding: which share of every epoch one rank loads.

The split is ``DistributedSampler``'s, so a Loader drops into DDP code written for it.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

log = logging.getLogger("augment")


class Sharding:
    """Which share of every epoch this rank takes: ``rank`` and ``world_size`` as given, or
    else those of an initialised ``torch.distributed`` (looked up when an epoch is planned,
    since frameworks initialise it after the loader is built), or else the whole epoch.

    As ``DistributedSampler``: every rank gets the same number of samples; an epoch that does
    not divide evenly is padded with its first samples (``drop_last=False``) or loses its
    last few (``drop_last=True``)."""

    def __init__(self, rank: int | None, world_size: int | None):
        if (rank is None) != (world_size is None):
            raise ValueError(
                f"give rank and world_size together (or neither, to take them from "
                f"torch.distributed); got rank={rank!r}, world_size={world_size!r}"
            )
        if world_size is not None:
            check_int(world_size, "world_size", 1)
            check_int(rank, "rank", 0)
            if rank >= world_size:
                raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
            _warn_if_unsharded(world_size)
        self.given = None if rank is None else (int(rank), int(world_size))

    def resolve(self) -> tuple[int, int]:
        if self.given is not None:
            return self.given
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def share(self, n: int, drop_last: bool) -> int:
        world_size = self.resolve()[1]
        return n // world_size if drop_last else -(-n // world_size)

    def take(self, order: np.ndarray, drop_last: bool) -> np.ndarray:
        rank, world_size = self.resolve()
        if world_size == 1:
            return order
        total = self.share(len(order), drop_last) * world_size
        order = order[:total] if drop_last else np.resize(order, total)  # resize repeats
        return order[rank::world_size]


def _warn_if_unsharded(world_size: int) -> None:
    dist = torch.distributed
    if world_size == 1 and dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1:
            log.warning(
                "world_size=1 under a process group of %d ranks: every rank loads every "
                "sample (leave rank and world_size unset to shard)",
                dist.get_world_size(),
            )


def check_int(value, name: str, low: int) -> None:
    """A ``ValueError`` naming ``name`` unless ``value`` is an integer >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
