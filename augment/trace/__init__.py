"""Tracing: every stage of every batch, in every process, for several experiments at once.

``Tracer`` writes span records (JSON lines) as batches arrive; ``load`` reads a folder
back; ``to_chrome`` exports it for ui.perfetto.dev or chrome://tracing; ``instrument``
traces a plain torch DataLoader (``python -m augment.trace script.py`` traces them all).

The names load on first use: a worker process imports ``augment.trace.schema`` and
``stage_clock`` only, never the recorder (nor psutil, nor torch for DataLoader tracing).
"""

from augment.trace.schema import STAGES

__all__ = ["Tracer", "tracer_from_env", "load", "Trace", "to_chrome", "STAGES", "instrument"]

_LAZY = {
    "Tracer": "augment.trace.recorder",
    "tracer_from_env": "augment.trace.recorder",
    "load": "augment.trace.reader",
    "Trace": "augment.trace.reader",
    "to_chrome": "augment.trace.chrome",
    "instrument": "augment.trace.dataloader",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'augment.trace' has no attribute {name!r}")
