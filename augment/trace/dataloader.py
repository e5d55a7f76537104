"""Tracing a plain ``torch.utils.data.DataLoader``: the user's script stays as it is.

What runs in the workers is wrapped, not changed: the dataset (its ``__getitem__`` /
``__getitems__`` / iteration, timed per batch as one ``load`` span) and the collate function
(a ``collate`` span, after which the worker writes the batch's spans to its own file in the
trace folder). The loop's side times ``next()`` (``wait``, the stall) and the time between
two ``next()`` calls (``step``). Batches, exceptions and worker start-up are torch's own.

The DataLoader internals this relies on are in ``augment.trace.torch_internals``.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from augment.trace import torch_internals
from augment.trace.loop import LoopClock
from augment.trace.recorder import Tracer
from augment.trace.schema import Span

BACKEND = "dataloader"
_lock = threading.Lock()
_auto: dict | None = None  # {"out_dir", "experiment", "count"} while every DataLoader is traced


def instrument(dataloader: DataLoader, tracer: Tracer | None = None) -> DataLoader:
    """Trace every batch of ``dataloader`` from now on (into ``tracer``, by default one from
    ``AUGMENT_TRACE_DIR``); returns it. Its batches and exceptions stay torch's own."""
    if not isinstance(dataloader, DataLoader):
        raise ValueError(
            f"instrument() takes a torch.utils.data.DataLoader, got {type(dataloader).__name__}"
        )
    if tracer is None:
        from augment.trace.recorder import tracer_from_env

        tracer = tracer_from_env()
        if tracer is None:
            raise ValueError("instrument() needs a tracer, or AUGMENT_TRACE_DIR set")
    _install_hooks()
    dataloader._augment_trace = _LoaderTrace(dataloader, tracer)
    return dataloader


def trace_all(out_dir: str | Path, experiment: str) -> None:
    """Trace every DataLoader iterated from now on in this process: the first as
    ``experiment``, later ones (a validation loader, say) as ``experiment.2``, ``.3``, ..."""
    global _auto
    Tracer(out_dir, experiment, sample_cpu=False)  # checks the name and makes the folder
    _auto = {"out_dir": str(out_dir), "experiment": experiment, "count": itertools.count(1)}
    _install_hooks()


def _install_hooks() -> None:
    with _lock:
        if DataLoader.__iter__ is not _traced_iter:
            DataLoader.__iter__ = _traced_iter
            DataLoader._get_iterator = _traced_get_iterator


def _state(loader: DataLoader) -> _LoaderTrace | None:
    if "_augment_trace" in loader.__dict__:  # traced, or False: never (augment's own)
        return loader.__dict__["_augment_trace"] or None
    state = None
    if _auto is not None:
        n = next(_auto["count"])
        name = _auto["experiment"] if n == 1 else f"{_auto['experiment']}.{n}"
        state = loader._augment_trace = _LoaderTrace(loader, Tracer(_auto["out_dir"], name))
    return state


def _traced_iter(loader: DataLoader):
    state = _state(loader)
    if state is not None:
        state.epoch += 1  # before the iterator draws its first indices
    inner = torch_internals.ITER(loader)
    return inner if state is None else _TimedIterator(inner, state)


def _traced_get_iterator(loader: DataLoader):
    state = _state(loader)
    if state is None:
        return torch_internals.GET_ITERATOR(loader)
    return _build_iterator(loader, state)


def _build_iterator(loader: DataLoader, state: _LoaderTrace):
    """DataLoader._get_iterator, on a view of the loader whose dataset, collate function
    and index sampler are the traced ones."""
    view = _LoaderView(loader, state.dataset, state.collate, state.sampler)
    if loader.num_workers:
        loader.check_worker_number_rationality()
    return torch_internals.new_iterator(view, loader.num_workers)


class _LoaderView:
    """The DataLoader as its iterator reads it, with three attributes replaced."""

    def __init__(self, loader, dataset, collate_fn, index_sampler):
        self._loader = loader
        self.dataset, self.collate_fn, self._index_sampler = dataset, collate_fn, index_sampler

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _LoaderTrace:
    """One traced DataLoader: its tracer, the traced dataset, collate and sampler, and the
    epoch its loop is in."""

    def __init__(self, loader: DataLoader, tracer: Tracer):
        self.tracer, self.epoch = tracer, -1
        writer = _SpanWriter(tracer)
        self.dataset = _TracedDataset(loader.dataset, writer)
        self.collate = _TracedCollate(loader.collate_fn, self.dataset)
        sampler = torch_internals.index_sampler(loader)
        if torch_internals.batches_automatically(loader):
            sampler = _TaggingSampler(sampler, self)
        self.sampler = sampler
        self.workers, self.batch_size = loader.num_workers, loader.batch_size

    def begin_epoch(self) -> int:
        self.tracer.start()
        self.tracer.write_meta(
            backend=BACKEND, workers=self.workers, batch_size=self.batch_size, epoch=self.epoch
        )
        return self.epoch


class _Tagged(list):
    """A batch of indices that says which batch of which epoch it is."""

    def __init__(self, indices, epoch: int, number: int):
        super().__init__(indices)
        self.epoch, self.number = epoch, number


class _TaggingSampler:
    """The loader's batch sampler, its batches tagged with (epoch, number): the epoch is the
    loop's (torch may iterate a sampler twice while it sets up an iterator)."""

    def __init__(self, sampler, trace: _LoaderTrace):
        self.sampler, self.trace = sampler, trace

    def __iter__(self):
        epoch = self.trace.epoch
        return (_Tagged(ix, epoch, n) for n, ix in enumerate(self.sampler))

    def __len__(self):
        return len(self.sampler)


class _SpanWriter:
    """Writes a worker's spans: through the loop's tracer in the loop's process, else through
    a tracer of the worker's own (its own file, made on first use)."""

    def __init__(self, tracer: Tracer):
        self.out_dir, self.experiment = str(tracer.out_dir), tracer.experiment
        self.tracer, self.pid = tracer, os.getpid()

    def __getstate__(self):
        return {"out_dir": self.out_dir, "experiment": self.experiment, "tracer": None, "pid": 0}

    def write(self, spans: list[Span], epoch: int, number: int, images: int) -> None:
        if self.tracer is None or self.pid != os.getpid():
            self.tracer = Tracer(self.out_dir, self.experiment, sample_cpu=False)
            self.pid = os.getpid()
        info = torch.utils.data.get_worker_info()
        self.tracer.write(
            self.tracer.record(
                backend=BACKEND,
                batch=number,
                epoch=epoch,
                images=images,
                spans=spans,
                pid=self.pid,
                worker=0 if info is None else info.id,
            )
        )


class _TracedDataset:
    """The user's dataset, its loading timed: every ``__getitem__``, ``__getitems__`` or
    ``next()`` between two collates is one batch's ``load``. Attributes read and set go to
    the user's dataset (a ``worker_init_fn`` may configure it through
    ``get_worker_info().dataset``)."""

    _OWN = ("_dataset", "_writer", "_batch")

    def __init__(self, dataset, writer: _SpanWriter):
        object.__setattr__(self, "_dataset", dataset)
        object.__setattr__(self, "_writer", writer)
        object.__setattr__(self, "_batch", None)

    def __getattr__(self, name):
        if name in self._OWN:  # not set yet: being unpickled
            raise AttributeError(name)
        return getattr(self._dataset, name)

    def __setattr__(self, name, value):
        if name in self._OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self._dataset, name, value)

    def __len__(self):
        return len(self._dataset)

    def __getitem__(self, index):
        with self._timed(index):
            return self._dataset[index]

    def __getitems__(self, indices):
        with self._timed(indices):
            getitems = getattr(self._dataset, "__getitems__", None)
            if getitems:
                return getitems(indices)
            return [self._dataset[i] for i in indices]

    def __iter__(self):
        items = iter(self._dataset)
        while True:
            with self._timed(None):
                try:
                    item = next(items)
                except StopIteration:
                    return
            yield item

    def _timed(self, indices):
        if self._batch is None:
            self._batch = _BatchClock(indices)
        return self._batch

    def end_batch(self, collate_start: tuple[int, int], images: int) -> None:
        """The collate that ends this batch ran from ``collate_start`` to now: write the
        batch's ``load`` and ``collate`` spans."""
        batch, self._batch = self._batch, None
        if batch is None:  # a collate with no load before it: nothing to say
            return
        t, c = time.time_ns(), time.thread_time_ns()
        load_end = batch.start + batch.wall
        spans = [
            Span("load", batch.start, load_end, batch.cpu),
            Span("collate", load_end, load_end + t - collate_start[0], c - collate_start[1]),
        ]
        self._writer.write(spans, batch.epoch, batch.number, images)


class _BatchClock:
    """Wall and thread-CPU time summed over a batch's loading calls (a context manager)."""

    _numbers = itertools.count()

    def __init__(self, indices):
        self.start, self.wall, self.cpu = time.time_ns(), 0, 0
        self.epoch = getattr(indices, "epoch", 0)
        self.number = getattr(indices, "number", None)
        if self.number is None:  # no tag (no batch sampler): count this worker's batches
            self.number = next(self._numbers)

    def __enter__(self):
        self._t, self._c = time.perf_counter_ns(), time.thread_time_ns()
        return self

    def __exit__(self, *exc):
        self.wall += time.perf_counter_ns() - self._t
        self.cpu += time.thread_time_ns() - self._c
        return False


class _TracedCollate:
    """The user's collate function (or torch's default), timed; it ends each batch."""

    def __init__(self, collate_fn, dataset: _TracedDataset):
        self.collate_fn, self.dataset = collate_fn, dataset

    def __call__(self, data):
        start = time.time_ns(), time.thread_time_ns()
        batch = self.collate_fn(data)
        self.dataset.end_batch(start, _images(data))
        return batch


def _images(data) -> int:
    return len(data) if isinstance(data, list) else 1


class _TimedIterator:
    """The loop's side: ``wait`` is the time in ``next()``, ``step`` the time from one batch
    handed over to the next asked for."""

    def __init__(self, inner, state: _LoaderTrace):
        self._inner, self._state = inner, state
        self._clock = LoopClock(state.tracer, BACKEND)
        self._epoch, self._number = None, 0

    def __iter__(self):
        return self

    def __len__(self):
        return len(self._inner)

    def __getattr__(self, name):
        if name == "_inner":
            raise AttributeError(name)
        return getattr(self._inner, name)

    def __next__(self):
        if self._epoch is None:
            self._epoch = self._state.begin_epoch()
        self._clock.back()
        self._clock.ask()
        try:
            batch = next(self._inner)
        except BaseException:
            self._state.tracer.stop()
            raise
        self._clock.hand_over(batch=self._number, epoch=self._epoch, images=_batch_size(batch))
        self._number += 1
        return batch


def _batch_size(batch) -> int:
    """Samples in a collated batch: the first dimension of its first tensor (a dict's first
    tensor, whatever its keys' order: a segmentation batch may list its file names first);
    a list of plain values (names, ids) has one per sample."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    if isinstance(batch, dict):
        values = list(batch.values())
        first = next(
            (v for v in values if isinstance(v, torch.Tensor)), values[0] if values else None
        )
        return 0 if first is None else _batch_size(first)
    if isinstance(batch, (list, tuple)) and batch:
        if isinstance(batch[0], (torch.Tensor, dict, list, tuple)):
            return _batch_size(batch[0])  # the fields of collated tuples
        return len(batch)
    return 1
