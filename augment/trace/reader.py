"""The reading side: every experiment's spans and the CPU samples of a trace folder."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from augment.trace.schema import SPAN_KEYS

log = logging.getLogger("augment")


@dataclass
class Trace:
    spans: list[dict] = field(default_factory=list)  # sorted by start_ns
    cpu: list[dict] = field(default_factory=list)  # {"t_ns", "host", "cpu": [percent per core]}
    meta: list[dict] = field(default_factory=list)  # one per traced loader: backend, workers...
    # {"experiment", "measured_from_ns"}: where an experiment's measured part begins (after
    # its warm-up, when concurrent experiments were released together)
    marks: list[dict] = field(default_factory=list)
    # {"experiment", "t_ns", "cpu_s", "processes"}: CPU time of an experiment's processes
    procs: list[dict] = field(default_factory=list)
    # {"experiment", "images", "cpu_s"}: its pipeline run alone in one thread, uncontended
    calibrations: list[dict] = field(default_factory=list)

    def experiments(self) -> list[str]:
        return sorted({s["experiment"] for s in self.spans})


def _read_lines(path: Path, required: tuple[str, ...]) -> list[dict]:
    records = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s:%d: skipped a line cut short (a crash mid-write?)", path, number)
                continue
            if not isinstance(record, dict) or not all(k in record for k in required):
                log.warning("%s:%d: skipped a record without %s", path, number, ", ".join(required))
                continue
            records.append(record)
    return records


def load(directory: str | Path) -> Trace:
    """Span records of every experiment in ``directory``, sorted by ``start_ns``, and the
    CPU samples sorted by time. Records are told apart by their keys, not by file names,
    so any experiment name is safe."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"trace folder {str(directory)!r} does not exist")
    trace = Trace()
    for path in sorted(directory.glob("*.jsonl")):
        for record in _read_lines(path, ()):
            if "meta" in record:
                trace.meta.append(record["meta"])
            elif "mark" in record:
                trace.marks.append(record["mark"])
            elif "proc" in record:
                trace.procs.append(record["proc"])
            elif "calibration" in record:
                trace.calibrations.append(record["calibration"])
            elif all(k in record for k in SPAN_KEYS):
                trace.spans.append(record)
            elif "t_ns" in record and "cpu" in record:
                trace.cpu.append(record)
            else:
                log.warning(
                    "%s: skipped a record that is neither a span (%s) nor a CPU sample",
                    path,
                    ", ".join(SPAN_KEYS),
                )
    trace.spans.sort(key=lambda s: (s["start_ns"], s["end_ns"]))
    trace.cpu.sort(key=lambda c: c["t_ns"])
    return trace
