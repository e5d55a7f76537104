"""The backend interface and its registry.

A backend runs ``make_batch`` somewhere: in the consumer, in threads, in processes, in torch
DataLoader workers, on a Ray cluster. It reads like an executor: ``start(task)`` once,
``submit(plan)`` returns a handle whose ``result()`` is the ``BatchResult`` (images as an
N x H x W x C numpy array or torch tensor owned by the caller: the Loader hands it to the
training loop without copying, so nothing may write into it afterwards), ``close()``
releases everything. The Loader submits in order, collects in order, and keeps at most
``capacity`` handles open.

A new backend is a subclass with a ``name`` and ``@register``::

    @register
    class MyBackend(Backend):
        name = "mine"
        def submit(self, plan):
            return Deferred(lambda: make_batch(self.task, plan))
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from augment.loading.batch import BatchPlan, BatchResult, BatchTask, make_batch
from augment.loading.watchdog import Held, Lanes

_REGISTRY: dict[str, type[Backend]] = {}


class Handle(Protocol):
    def result(self) -> BatchResult: ...

    def cancel(self) -> None: ...


class Done:
    """A handle whose result is already there."""

    def __init__(self, result: BatchResult):
        self._result = result

    def result(self) -> BatchResult:
        return self._result

    def cancel(self) -> None:
        pass


class Deferred:
    """A handle that makes its result when asked for it (in the consumer, as late as the
    loop wants the batch); a cancelled one makes nothing."""

    def __init__(self, make: Callable[[], BatchResult]):
        self._make: Callable[[], BatchResult] | None = make

    def result(self) -> BatchResult:
        if self._make is None:
            raise RuntimeError("this batch was cancelled")
        return self._make()

    def cancel(self) -> None:
        self._make = None


class Backend(ABC):
    """Runs batch plans. ``workers`` is how many run at once; ``capacity`` how many may be
    submitted and not yet collected (the Loader's prefetch x workers). The keyword arguments
    of a subclass's ``__init__`` are its options (``backend_options``)."""

    name: str = ""
    # Whether the next epoch's first batches may be submitted before this epoch's last are
    # collected (``augment.loading.ahead``): every built-in backend's can; one that needs an
    # epoch's plans before they are submitted (``set_epoch_plans``) sets it False.
    crosses_epochs: bool = True

    def __init__(self, workers: int, capacity: int):
        self.workers, self.capacity = workers, capacity
        self.task: BatchTask | None = None
        self.lanes: Lanes | None = None  # what each worker is making, where it is known

    def start(self, task: BatchTask) -> None:
        """Start workers (once per loader) with the task they all share."""
        self.task = task

    @abstractmethod
    def submit(self, plan: BatchPlan) -> Handle:
        """Begin making ``plan``; the handle's ``result()`` waits for it."""

    def set_epoch_plans(self, plans: list[BatchPlan]) -> None:
        """An epoch begins: the plans it delivers (from its resumed position). Its first ones
        may have been submitted already, ahead, while the epoch before ended, unless
        ``crosses_epochs`` is False; the others are submitted after this call."""

    def worker_pids(self) -> list[int]:
        """Process ids of the workers (none for a backend whose workers are threads)."""
        return []

    def holder(self, plan: BatchPlan) -> Held | None:
        """Who is making ``plan`` (for the watchdog): read from ``self.lanes``, which the
        workers write (``make_batch(..., lane=...)``); None when no worker has taken it."""
        lanes = getattr(self, "lanes", None)
        return None if lanes is None else lanes.find(plan.epoch, plan.number)

    def stop(self, held: Held) -> str | None:
        """Stop the worker of ``held``, stuck past the loader's timeout, so that the wait for
        its batch ends; says what was done, for the error. None: nothing can be stopped (the
        loop makes the batch itself)."""
        return None

    def stop_all(self) -> str | None:
        """Stop every worker, when none has begun the batch the loop waits for past the
        loader's timeout (stuck starting); says what was done, for the error. None: nothing
        to stop."""
        return None

    def close(self) -> None:
        """Stop workers and free what they hold. Safe to call twice."""


def register(cls: type[Backend]) -> type[Backend]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a name to be registered")
    _REGISTRY[cls.name] = cls
    return cls


def names() -> list[str]:
    """Every backend's name, without importing any (torch and Ray take seconds)."""
    return sorted(set(_REGISTRY) | set(_builtin_modules()))


def create(name: str, workers: int, capacity: int, **options) -> Backend:
    """Backend ``name`` with ``workers`` workers; with none, batches are made in the loop
    (the serial backend) whatever the name, after checking ``options`` against it."""
    cls = _backend_class(name)
    accepted = [
        p.name
        for p in list(inspect.signature(cls.__init__).parameters.values())[3:]
        if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"backend {name!r} has no option {', '.join(map(repr, unknown))}; accepted: "
            f"{', '.join(accepted) or 'none'}"
        )
    backend = cls(workers, capacity, **options)
    if workers == 0:
        return _backend_class("serial")(0, capacity)
    return backend


def check_name(name, where: str = "backend") -> str:
    """``name`` if it is a backend's, else a ``ValueError`` naming ``where`` and the names
    accepted (without importing the backend: listing names imports neither torch nor ray)."""
    if name not in names():
        raise ValueError(f"{where}: unknown backend {name!r}; accepted: {', '.join(names())}")
    return name


def _backend_class(name: str) -> type[Backend]:
    if name not in _REGISTRY and name in _builtin_modules():
        # each module registers itself when imported
        importlib.import_module(f"{__package__}.{_builtin_modules()[name]}")
    if name not in _REGISTRY:
        check_name(name)
    return _REGISTRY[name]


def _builtin_modules() -> dict[str, str]:
    """``{backend name: module}`` for the modules of this package: a backend's module is
    named after it, with an optional ``_backend`` suffix (``ray_backend.py`` is "ray"), so a
    new backend is one new file."""
    modules = [m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])]
    return {m.removesuffix("_backend"): m for m in modules if m not in ("base", "worker")}


__all__ = ["Backend", "Handle", "Done", "Deferred", "register", "names", "create", "make_batch"]
