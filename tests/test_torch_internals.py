"""Everything ``augment.trace.torch_internals`` reaches into, checked on the installed torch: a
release that renames or removes one fails here, by name, before anything subtler breaks."""

from __future__ import annotations

import inspect

import torch
from torch.utils.data import DataLoader
from torch.utils.data._utils import fetch

from augment.loading import shm
from augment.trace import torch_internals


class Squares(torch.utils.data.Dataset):
    def __len__(self):
        return 6

    def __getitem__(self, i):
        return torch.full((2,), i)


def test_the_originals_are_dataloaders_own_methods():
    assert torch_internals.ITER.__qualname__ == "DataLoader.__iter__"
    assert torch_internals.GET_ITERATOR.__qualname__ == "DataLoader._get_iterator"


def test_samplers_and_automatic_batching():
    batched = DataLoader(Squares(), batch_size=4)
    assert torch_internals.batches_automatically(batched)
    assert torch_internals.index_sampler(batched) is batched.batch_sampler
    single = DataLoader(Squares(), batch_size=None)
    assert not torch_internals.batches_automatically(single)
    assert torch_internals.index_sampler(single) is single.sampler
    # the fetcher hands a batch sampler's whole batch to __getitems__
    assert "__getitems__" in inspect.getsource(fetch._MapDatasetFetcher.fetch)


def test_a_new_iterator_over_a_view_of_the_loader():
    loader = DataLoader(Squares(), batch_size=4)
    batches = list(torch_internals.new_iterator(loader, 0))
    assert [b[:, 0].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5]]


def test_persistent_workers_are_found_and_shut_down():
    loader = DataLoader(Squares(), batch_size=3, num_workers=1, persistent_workers=True)
    assert torch_internals.workers(loader) == []
    assert len(list(loader)) == 2
    (worker,) = torch_internals.workers(loader)
    assert worker.is_alive()
    torch_internals.shutdown_workers(loader)
    worker.join(10)
    assert not worker.is_alive()
    # what release() hands back to be emptied: the iterator's multiprocessing queues and event
    it = loader._iterator
    held = [*it._index_queues, it._worker_result_queue, it._data_queue, it._workers_done_event]
    assert all(type(obj).__module__.startswith("multiprocessing.") for obj in held)
    released = torch_internals.release(loader)
    assert loader._iterator is None
    assert [id(obj) for obj in released] == [id(obj) for obj in held]
    shm.forget(*released)
    assert all(vars(obj) == {} for obj in held)


class Dies(Squares):
    def __getitem__(self, i):
        import os

        os._exit(3)


def test_a_dead_worker_is_told_from_a_raising_one():
    loader = DataLoader(Dies(), batch_size=3, num_workers=1)
    try:
        list(loader)
    except RuntimeError as exc:
        assert torch_internals.is_worker_death(exc)
    else:
        raise AssertionError("a worker that exits must make the loop raise")
    assert not torch_internals.is_worker_death(ValueError("sample 3 is broken"))


class _Feed:
    """A sampler fed as it goes: its iterator is empty until told an index, then resumes."""

    def __init__(self):
        self.waiting: list[int] = []

    def __iter__(self):
        return self

    def __next__(self):
        if not self.waiting:
            raise StopIteration
        return self.waiting.pop(0)


def test_an_index_fed_later_is_pulled_at_once():
    feed = _Feed()
    loader = DataLoader(
        Squares(), batch_size=None, sampler=feed, num_workers=1, persistent_workers=True
    )
    try:
        batches = iter(loader)
        for i in (3, 1):
            feed.waiting.append(i)
            torch_internals.pull_index(batches)  # the sampler was empty when it last drew
            assert int(next(batches)[0]) == i
        torch_internals.pull_index(batches)  # nothing fed: nothing sent
        assert feed.waiting == []
    finally:
        torch_internals.shutdown_workers(loader)
