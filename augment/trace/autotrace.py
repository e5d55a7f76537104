"""Trace every DataLoader of a program that never imports augment, when
``AUGMENT_TRACE_DIR`` is set: the ``augment-trace.pth`` file installed with the package
imports this module at interpreter start-up only when that variable is set (otherwise the
start-up costs one environment lookup), and it then waits for torch to be imported (it
never imports torch itself)."""

from __future__ import annotations

import importlib.abc
import os
import sys
from pathlib import Path

TARGET = "torch"  # traced once torch has finished importing (torch.utils.data with it)


def experiment_name() -> str:
    """``AUGMENT_EXPERIMENT``, else the script's name (``python`` for an interactive one)."""
    return os.environ.get("AUGMENT_EXPERIMENT") or Path(sys.argv[0] or "python").stem or "python"


def start_tracing() -> None:
    from augment.trace.dataloader import trace_all

    trace_all(os.environ["AUGMENT_TRACE_DIR"], experiment_name())


class _AfterImport(importlib.abc.MetaPathFinder):
    """Lets ``TARGET`` be imported as usual, then starts tracing."""

    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        sys.meta_path.remove(self)
        from importlib.util import find_spec

        spec = find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_trace(module):
            exec_module(module)
            sys.modules[name] = module
            start_tracing()

        spec.loader.exec_module = exec_then_trace
        return spec


def install() -> None:
    if not os.environ.get("AUGMENT_TRACE_DIR"):
        return
    if TARGET in sys.modules:
        start_tracing()
    elif not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport())
