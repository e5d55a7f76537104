"""What users bring from ``torch.utils.data.DataLoader``: its keywords, its ``sampler``.

Keywords. Each DataLoader keyword either works with DataLoader's meaning or is refused with
a ``TypeError`` that names what to write instead; none is silently ignored:

- ``batch_size``, ``shuffle``, ``drop_last``, ``timeout`` (0 = none, as DataLoader's) and
  ``pin_memory`` are Loader arguments with DataLoader's meaning;
- ``persistent_workers=True`` and ``in_order=True`` describe what the Loader always does and
  are accepted; ``False`` is refused, saying why;
- ``num_workers`` -> ``workers=`` with a ``backend``; ``prefetch_factor`` -> ``prefetch=``;
  ``generator`` -> ``seed=``; ``multiprocessing_context`` ->
  ``backend_options={"start_method": ...}``; ``sampler``, ``batch_sampler``, ``collate_fn``,
  ``worker_init_fn`` and ``pin_memory_device`` are refused with what to do instead.

Sampler. Frameworks written for DataLoader + ``DistributedSampler`` call
``loader.sampler.set_epoch(epoch)`` at each epoch's start (Lightning does, for training and
validation loaders; so do hand-written DDP loops). ``Loader.sampler`` is an ``EpochSampler``:
its ``set_epoch`` is the Loader's, and iterating it gives the sample indices of the epoch
the loader runs next, on this rank, in order.
"""

from __future__ import annotations

import difflib
import logging

import torch

log = logging.getLogger("augment")

# keyword -> why it is refused and what to write instead ({value} is the value given)
REFUSED = {
    "num_workers": ("the Loader's workers are chosen with backend= and workers=: {workers_hint}"),
    "prefetch_factor": (
        "write prefetch={value} (batches in flight per worker, as DataLoader's prefetch_factor)"
    ),
    "generator": (
        "the order and every sample's randomness come from seed= (an int), the epoch and the "
        "index; write seed=..."
    ),
    "multiprocessing_context": (
        "write backend_options={{'start_method': {value!r}}} (backends 'process' and 'torch')"
    ),
    "sampler": (
        "the Loader draws each epoch's order itself (shuffle=, seed=) and shards it for "
        "data-parallel training (rank=, world_size=, by default the process group's, as "
        "DistributedSampler); for a fixed subset, pass torch.utils.data.Subset(dataset, "
        "indices); weighted sampling is not supported"
    ),
    "batch_sampler": (
        "the Loader makes batches of batch_size= from its own order (shuffle=, seed=, "
        "drop_last=); variable-sized batches are not supported"
    ),
    "collate_fn": (
        "the Loader batches images itself (a tensor N x C x H x W, written in place) and "
        "targets with torch's default_collate: return targets that default_collate batches "
        "(numbers, arrays, tensors, or a dict of them) from __getitem__"
    ),
    "worker_init_fn": (
        "randomness needs no per-worker seeding (it comes from seed, epoch and sample "
        "index); open per-worker resources (files, connections) lazily in the dataset, "
        "on its first __getitem__ in each worker"
    ),
    "pin_memory_device": "pin_memory=True pins for the current accelerator",
}
ALWAYS = {  # keyword -> what the Loader always does (True is accepted, False refused)
    "persistent_workers": (
        "the Loader's workers always persist, from the first epoch until close() (there is "
        "no start-up cost per epoch to avoid); leave persistent_workers out"
    ),
    "in_order": "the Loader always yields batches in order; leave in_order out",
}


def check_dataloader_keywords(extra: dict, accepted: list[str]) -> None:
    """Accept or refuse the keywords ``Loader(...)`` did not name (``extra``); ``accepted``
    are the names it takes, offered for a misspelt one."""
    for name, value in extra.items():
        if name in ALWAYS:
            if value is True:
                continue
            raise ValueError(f"Loader({name}={value!r}): {ALWAYS[name]}")
        if name in REFUSED:
            hint = REFUSED[name].format(value=value, workers_hint=_workers_hint(value))
            raise TypeError(f"Loader() takes no {name}= (a DataLoader keyword): {hint}")
        close = difflib.get_close_matches(name, accepted, n=1)
        raise TypeError(
            f"Loader() got an unexpected keyword argument {name!r}"
            + (f"; did you mean {close[0]}=?" if close else "")
        )


def _workers_hint(value) -> str:
    if value == 0:
        return "num_workers=0 (loading in the training loop) is backend='serial'"
    return (
        f"write backend='process', workers={value!r} (or backend='thread' for I/O-bound "
        "reading, backend='torch' for DataLoader's own workers)"
    )


class EpochSampler(torch.utils.data.Sampler):
    """``Loader.sampler``: the order of the epoch the loader runs next, on this rank, and
    ``set_epoch``, which frameworks call at each epoch's start as on a ``DistributedSampler``
    (see ``Loader.set_epoch``)."""

    def __init__(self, loader):
        self._loader = loader

    def set_epoch(self, epoch: int) -> None:
        self._loader.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return self._loader.epoch

    def __iter__(self):
        for plan in self._loader.plan_epoch(self._loader.epoch):
            yield from plan.indices

    def __len__(self) -> int:
        return sum(len(plan.indices) for plan in self._loader.plan_epoch(self._loader.epoch))


class SequentialEpochSampler(EpochSampler, torch.utils.data.SequentialSampler):
    """``Loader.sampler`` of a loader that does not shuffle, on one rank: its order is the
    dataset's, and it says so to frameworks that ask (Lightning's ``overfit_batches`` wants
    a sequential sampler and otherwise tries to rebuild the loader as a DataLoader)."""


def sampler_of(loader) -> EpochSampler:
    sequential = not loader.shuffle and loader.world_size == 1
    return (SequentialEpochSampler if sequential else EpochSampler)(loader)


def accelerator_for_pinning() -> str | None:
    """The accelerator pinned memory serves (e.g. "cuda"), or None when there is none."""
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        if not accelerator.is_available():
            return None
        device = accelerator.current_accelerator()
        return None if device is None else device.type
    return "cuda" if torch.cuda.is_available() else None


def can_pin() -> bool:
    """Whether ``pin_memory=True`` can pin; without an accelerator, one warning (as
    DataLoader gives) and no."""
    if accelerator_for_pinning() is not None:
        return True
    log.warning(
        "Loader(pin_memory=True) but no accelerator is found: batches are not pinned (as "
        "DataLoader does)"
    )
    return False


def pin(batch):
    """``batch`` (a tensor, tuple or dict of them) copied into page-locked memory, as
    DataLoader's ``pin_memory=True`` does, so that ``.to(device, non_blocking=True)`` is
    asynchronous."""
    from torch.utils.data._utils.pin_memory import pin_memory

    return pin_memory(batch)
