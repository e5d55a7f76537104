"""The training loop's side of the trace: for every batch, when the loop asked for it, when
it arrived, when it was handed over, and when the loop came back for the next (its step's
end). Spans: ``transfer`` (arrived to handed over, or the backend's own), ``wait`` (asked to
handed over: the data stall) and ``step`` (handed over to back)."""

from __future__ import annotations

import os
import time

from augment.trace.schema import CONSUMER_LANE, Span


def clock() -> tuple[int, int]:
    """Wall clock (shared by every process of a machine) and this thread's CPU time."""
    return time.time_ns(), time.thread_time_ns()


def span(stage: str, start: tuple[int, int], end: tuple[int, int]) -> Span:
    return Span(stage, start[0], end[0], end[1] - start[1])


class LoopClock:
    """Times one traced loop; ``tracer`` None makes every call free of writing.

    Per batch: ``ask()``, optionally ``arrived()``, ``hand_over(...)``, then ``back()`` when
    the loop asks again, stops early or the epoch ends; ``back()`` writes the batch's records
    (the worker's, given to ``hand_over``, then the loop's) in one go."""

    def __init__(self, tracer, backend: str, node: str | None = None):
        self.tracer, self.backend, self.node = tracer, backend, node  # node: the loop's
        self._asked = self._arrived = None
        self._pending: tuple | None = None
        self._lost_on: list[str] = []

    def ask(self) -> None:
        self._asked, self._arrived = clock(), None

    def arrived(self) -> None:
        self._arrived = clock()

    def hand_over(
        self, *, batch: int, epoch: int, images: int, worker=None, transfer=None, lost_on=()
    ):
        """The batch is handed to the loop. ``worker``: (spans, pid, lane, host[, node]) made
        by the worker, if they travel with the batch; ``transfer``: the backend's own span;
        ``lost_on``: the nodes the batch was lost on before it was made again (the loop's
        ``wait`` records them)."""
        self._lost_on = list(lost_on)
        self._pending = (batch, epoch, images, worker, transfer, self._asked, self._arrived)
        self._handed = clock()

    def back(self) -> None:
        if self._pending is None or self.tracer is None:
            self._pending = None
            return
        back = clock()
        batch, epoch, images, worker, transfer, asked, arrived = self._pending
        self._pending = None
        common = dict(backend=self.backend, batch=batch, epoch=epoch, images=images)
        loop = [span("wait", asked, self._handed), span("step", self._handed, back)]
        if transfer is None and arrived is not None:
            transfer = span("transfer", arrived, self._handed)
        if transfer is not None:
            loop.insert(0, transfer)
        records = []
        if worker is not None:
            spans, pid, lane, host, *node = worker
            node = node[0] if node else None
            records += self.tracer.record(
                spans=spans, pid=pid, worker=lane, host=host, node=node, **common
            )
        mine = self.tracer.record(
            spans=loop, pid=os.getpid(), worker=CONSUMER_LANE, node=self.node, **common
        )
        if self._lost_on:
            for record in mine:
                if record["stage"] == "wait":
                    record["lost_on"] = self._lost_on
        records += mine
        self.tracer.write(records)
