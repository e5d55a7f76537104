"""The private parts of ``torch.utils.data.DataLoader`` that augment relies on, in one place.

Checked against torch 2.4 to 2.13. ``tests/test_torch_internals.py`` fails loudly when a
torch release renames or removes any of them: the torch backend (persistent workers driven
through a DataLoader, batches made in shared storage) and DataLoader tracing
(``augment.trace.dataloader``) use only these.
"""

from __future__ import annotations

from torch.utils.data import dataloader as _dataloader

# DataLoader's own methods, before augment.trace.dataloader wraps them
ITER = _dataloader.DataLoader.__iter__
GET_ITERATOR = _dataloader.DataLoader._get_iterator


def workers(loader) -> list:
    """The worker processes of ``loader``'s persistent iterator (empty before it exists)."""
    return list(getattr(getattr(loader, "_iterator", None), "_workers", []))


def shutdown_workers(loader) -> None:
    """Stop the workers of ``loader``'s persistent iterator, as its destructor would."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()


def release(loader) -> list:
    """After ``shutdown_workers``: drop ``loader``'s iterator and return its queues and event,
    for the caller to empty (``augment.loading.shm.forget``), so that nothing stays in
    /dev/shm while a kept traceback's frames still reference them."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is None:
        return []
    loader._iterator = None
    return [
        *getattr(iterator, "_index_queues", []),
        getattr(iterator, "_worker_result_queue", None),
        getattr(iterator, "_data_queue", None),
        getattr(iterator, "_workers_done_event", None),
    ]


def pull_index(iterator) -> None:
    """Have ``iterator`` (a multi-process DataLoader iterator) draw its sampler's next index
    now and send it to a worker, as it does after each batch it receives; nothing when the
    sampler has none. Lets a sampler that is fed as it goes (the torch backend's) start work
    at once."""
    iterator._try_put_index()


def shared_storage(nbytes: int):
    """A new ``torch.UntypedStorage`` of ``nbytes`` made in shared memory (by torch's sharing
    strategy: a file descriptor, or a file in /dev/shm), so that sending it to another
    process passes its handle, never its bytes. ``Tensor.share_memory_()`` would copy a
    storage made elsewhere into a new shared one."""
    import torch

    return torch.UntypedStorage._new_shared(nbytes)


def is_worker_death(exc: BaseException) -> bool:
    """Whether ``exc`` is DataLoader's report of a worker that died (not one that raised)."""
    text = str(exc)
    return "worker" in text and ("exited unexpectedly" in text or "killed" in text)


def index_sampler(loader):
    """What a DataLoader iterator draws indices from: the batch sampler (automatic batching)
    or the sampler."""
    return loader._index_sampler


def batches_automatically(loader) -> bool:
    return loader._auto_collation


def new_iterator(view, num_workers: int):
    """An iterator over ``view`` (an object that reads like the DataLoader): what
    ``DataLoader._get_iterator`` builds."""
    if num_workers == 0:
        return _dataloader._SingleProcessDataLoaderIter(view)
    return _dataloader._MultiProcessingDataLoaderIter(view)
