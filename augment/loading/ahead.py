"""The next epoch's first batches, submitted while the current epoch's last ones are consumed,
so no worker idles at an epoch's end (nor beside a short last batch).

Invariants:
- the next epoch's order is known from (seed, epoch): its batches are the ones iterating the
  loader would submit first; they are submitted only once every batch of the current epoch
  is, and only into room the current epoch leaves (batches in flight stay at most
  ``capacity`` in all);
- they are used only by the epoch they were planned for, begun from its first batch, with
  the very same plans (same seed, batch size, sharding, order); anything else (another
  epoch, a resumed position, a changed configuration, ``close()``) cancels them: their
  results are dropped, and what they held in a backend (a process slot) is free again;
- they count in no state until delivered: ``state_dict()`` says only what the loop received.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from augment.loading.batch import BatchPlan


class Ahead:
    """The submitted first batches of epoch ``epoch`` (``pending``: plans and handles, in
    order) and the rest of its plans, to submit as room allows."""

    def __init__(self, epoch: int, plans: list[BatchPlan]):
        self.epoch = epoch
        self._plans = list(plans)
        self._todo: Iterator[BatchPlan] = iter(self._plans)
        self.pending: deque = deque()

    def submit(self, backend, room: int) -> None:
        """Submit up to ``room`` more of this epoch's batches."""
        for _ in range(room):
            plan = next(self._todo, None)
            if plan is None:
                return
            self.pending.append((plan, backend.submit(plan)))

    def take(self, epoch: int, plans: list[BatchPlan]) -> deque | None:
        """The batches in flight, when ``plans`` (the epoch about to run, from its first batch)
        is the epoch they were made for; None otherwise (then cancel them)."""
        if epoch != self.epoch or plans[: len(self.pending)] != self._plans[: len(self.pending)]:
            return None
        pending, self.pending = self.pending, deque()
        return pending

    def cancel(self) -> None:
        """Drop every batch in flight (each backend's ``cancel`` frees what it held)."""
        pending, self.pending = self.pending, deque()
        self._todo = iter(())
        for _, handle in pending:
            handle.cancel()
