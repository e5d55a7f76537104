"""In the consumer: each batch is made when the training loop asks for it. Also what any
backend becomes with ``workers=0``. Nothing can interrupt a batch the loop makes itself, so
the watchdog can only warn about a stuck one."""

from __future__ import annotations

from augment.loading.backends.base import Backend, Deferred, register
from augment.loading.batch import make_batch
from augment.loading.watchdog import Lanes


@register
class SerialBackend(Backend):
    name = "serial"

    def __init__(self, workers, capacity):
        super().__init__(0, capacity)
        self.lanes = Lanes(1)

    def submit(self, plan):
        return Deferred(lambda: make_batch(self.task, plan, lane=self.lanes.lane(0)))
