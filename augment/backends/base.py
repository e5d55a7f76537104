"""The backend interface and its registry.

A backend runs ``make_batch`` somewhere: in the consumer, in threads, in processes, in torch
DataLoader workers, on a Ray cluster. It reads like an executor: ``start(task)`` once,
``submit(plan)`` returns a handle whose ``result()`` is the ``BatchResult`` (images as an
N x H x W x C numpy array owned by the caller), ``close()`` releases everything. The Loader
submits in order, collects in order, and keeps at most ``capacity`` handles open.

A new backend is a subclass with a ``name`` and ``@register``::

    @register
    class MyBackend(Backend):
        name = "mine"
        def submit(self, plan):
            return Done(make_batch(self.task, plan))
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol

from augment.batch import BatchPlan, BatchResult, BatchTask, make_batch

_REGISTRY: dict[str, type[Backend]] = {}


class Handle(Protocol):
    def result(self) -> BatchResult: ...

    def cancel(self) -> None: ...


class Done:
    """A handle whose result is already there (or computed when asked, with ``lazy``)."""

    def __init__(self, result: BatchResult | None = None, lazy=None):
        self._result, self._lazy = result, lazy

    def result(self) -> BatchResult:
        if self._result is None:
            self._result = self._lazy()
        return self._result

    def cancel(self) -> None:
        self._lazy = None


class Backend(ABC):
    """Runs batch plans. ``workers`` is how many run at once; ``capacity`` how many may be
    submitted and not yet collected (the Loader's prefetch x workers)."""

    name: str = ""

    def __init__(self, workers: int, capacity: int, **options):
        if options:
            raise ValueError(f"backend {self.name!r} takes no options {sorted(options)}")
        self.workers, self.capacity = workers, capacity
        self.task: BatchTask | None = None

    def start(self, task: BatchTask) -> None:
        """Start workers (once per loader) with the task they all share."""
        self.task = task

    @abstractmethod
    def submit(self, plan: BatchPlan) -> Handle:
        """Begin making ``plan``; the handle's ``result()`` waits for it."""

    def close(self) -> None:
        """Stop workers and free what they hold. Safe to call twice."""


def register(cls: type[Backend]) -> type[Backend]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a name to be registered")
    _REGISTRY[cls.name] = cls
    return cls


def names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def create(name: str, workers: int, capacity: int, **options) -> Backend:
    _load_builtin()
    if name not in _REGISTRY:
        raise ValueError(f"unknown backend {name!r}; accepted: {', '.join(names())}")
    return _REGISTRY[name](workers, capacity, **options)


def _load_builtin() -> None:
    # Imported here, not at module top: each file registers itself and may import extras.
    from augment.backends import process, ray_backend, serial, thread  # noqa: F401

    try:
        from augment.backends import torch_workers  # noqa: F401
    except ImportError:
        pass


__all__ = ["Backend", "Handle", "Done", "register", "names", "create", "make_batch"]
