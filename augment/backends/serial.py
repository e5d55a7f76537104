"""In the consumer: each batch is made when the training loop asks for it."""

from __future__ import annotations

from augment.backends.base import Backend, Done, register
from augment.batch import make_batch


@register
class SerialBackend(Backend):
    name = "serial"

    def submit(self, plan):
        return Done(lazy=lambda: make_batch(self.task, plan))
