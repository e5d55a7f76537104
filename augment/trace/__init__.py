"""Tracing: every stage of every batch, in every process, for several experiments at once.

``Tracer`` writes span records (JSON lines) as batches arrive; ``load`` reads a folder
back; ``to_chrome`` exports it for ui.perfetto.dev or chrome://tracing; ``instrument``
traces a plain torch DataLoader (``python -m augment.trace script.py`` traces them all).
"""

from augment.trace.chrome import to_chrome
from augment.trace.reader import Trace, load
from augment.trace.recorder import Tracer, tracer_from_env
from augment.trace.schema import STAGES

__all__ = ["Tracer", "tracer_from_env", "load", "Trace", "to_chrome", "STAGES", "instrument"]


def __getattr__(name: str):
    # DataLoader tracing imports torch (seconds): only when asked for
    if name == "instrument":
        from augment.trace.dataloader import instrument

        return instrument
    raise AttributeError(f"module 'augment.trace' has no attribute {name!r}")
