"""Module paths from before the sub-packages (``augment.loader``, ``augment.report``, ...)
still import, for one release, with a ``DeprecationWarning`` naming the new path. The public
names at ``augment.X`` (``augment.Loader``, ``augment.functional``, ...) are unchanged."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "augment.adapters": "augment.ops.adapters",
    "augment.backends": "augment.loading.backends",
    "augment.batch": "augment.loading.batch",
    "augment.callables": "augment.ops.callables",
    "augment.cli": "augment.profiler.cli",
    "augment.compat": "augment.loading.compat",
    "augment.data": "augment.sources.data",
    "augment.experiment": "augment.profiler.experiment",
    "augment.functional": "augment.ops.functional",
    "augment.geometry": "augment.ops.geometry",
    "augment.jpeg_region": "augment.sources.jpeg_region",
    "augment.kernels": "augment.ops.kernels",
    "augment.loader": "augment.loading.loader",
    "augment.measure": "augment.profiler.measure",
    "augment.progress": "augment.profiler.progress",
    "augment.remote": "augment.sources.remote",
    "augment.report": "augment.profiler.report",
    "augment.sample_data": "augment.sources.sample_data",
    "augment.sample_targets": "augment.ops.sample_targets",
    "augment.samples": "augment.sources.samples",
    "augment.serve": "augment.sources.serve",
    "augment.shard_writer": "augment.sources.shard_writer",
    "augment.shards": "augment.sources.shards",
    "augment.sharding": "augment.loading.sharding",
    "augment.shm": "augment.loading.shm",
    "augment.target_batch": "augment.loading.target_batch",
    "augment.targets": "augment.ops.targets",
    "augment.torch_internals": "augment.trace.torch_internals",
    "augment.transforms": "augment.ops.transforms",
    "augment.tune": "augment.profiler.tune",
    "augment.warp_plan": "augment.ops.warp_plan",
    "augment.watchdog": "augment.loading.watchdog",
}


def new_name(name: str) -> str | None:
    """Where the module ``name`` lives now, or None when it did not move."""
    for old, new in MOVED.items():
        if name == old or name.startswith(old + "."):
            return new + name[len(old) :]
    return None


class _OldPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old path as the module at its new one (the same module object, so that
    nothing is loaded twice)."""

    def find_spec(self, name, path=None, target=None):
        if not name.startswith("augment.") or new_name(name) is None:
            return None
        return importlib.util.spec_from_loader(name, self)

    def create_module(self, spec):
        target = new_name(spec.name)
        warnings.warn(
            f"{spec.name} moved to {target}: import it from there (the old path goes in the "
            "next release)",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(target)
        self._real_spec = module.__spec__
        return module

    def exec_module(self, module) -> None:
        # the import system gave the module the old path's spec: give it back its own
        module.__spec__ = self._real_spec


def install() -> None:
    if not any(isinstance(f, _OldPaths) for f in sys.meta_path):
        sys.meta_path.insert(0, _OldPaths())
