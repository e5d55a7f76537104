"""The span vocabulary, in one place: which stages exist, who makes them, which lane is the
training loop, and the keys of a span record. Writers, readers and the report import it.

A staged dataset (``read``, ``decode``, ``label``) is timed per stage; a map-style dataset
(``__getitem__``) is timed as one ``load`` stage. ``augment`` and ``collate`` follow either.
"""

from __future__ import annotations

from dataclasses import dataclass

STAGED_STAGES = ("read", "decode", "augment", "collate")
MAP_STAGES = ("load", "augment", "collate")
# Every stage a worker may report, in the order they happen in one sample.
WORKER_STAGES = ("load", "read", "decode", "augment", "collate")
# Stages that compute (hold a core) rather than wait on I/O: reading and a dataset's own
# ``__getitem__`` may wait on disks or networks.
COMPUTE_STAGES = ("decode", "augment", "collate")
IO_STAGES = ("read", "load")
# The training loop's stages: ``wait`` is the data stall, ``step`` the training step.
CONSUMER_STAGES = ("transfer", "wait", "step")
STAGES = WORKER_STAGES + CONSUMER_STAGES
CONSUMER_LANE = -1  # the ``worker`` of spans made by the training loop

# Optional keys of a span record: ``node``, the cluster node that made it (Ray; a trace without
# it is read as one node per host), and, on the loop's ``wait``, ``lost_on``: the nodes its
# batch was lost on before it was made again.
OPTIONAL_SPAN_KEYS = ("node", "lost_on")
SPAN_KEYS = (
    "experiment",
    "backend",
    "host",
    "pid",
    "worker",
    "batch",
    "epoch",
    "stage",
    "start_ns",
    "end_ns",
    "cpu_ns",
)
# Keys a span record may add: ``runq_ns``, of its wall time how long its thread waited on a
# run queue for a core (worker stages, where the kernel tells: Linux)
OPTIONAL_SPAN_KEYS = ("runq_ns",)


@dataclass
class Span:
    """One stage of one batch in one thread: wall clock (``time.time_ns``, shared by every
    process of a machine and comparable across NTP-synced hosts) and the thread's CPU time
    over it (far below the wall time when the thread waited for the GIL or a core)."""

    stage: str
    start_ns: int
    end_ns: int
    cpu_ns: int
    # of the wall time, how long the thread was runnable but waited for a core (Linux's
    # schedstat), None where unknown: the rest of the time off the CPU it slept (the GIL, I/O)
    runq_ns: int | None = None
