"""The backend registry: names without imports, one check of options for every backend,
no workers meaning the loop, and a backend of one's own in one file."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import augment
from augment.loading import backends
from augment.loading.backends import Backend, Deferred, register
from augment.loading.batch import make_batch


def test_listing_backends_imports_neither_torch_nor_ray():
    code = (
        "import sys, augment.loading.backends as b; print(b.names()); "
        "print('torch' in sys.modules, 'ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    names, imported = out.stdout.splitlines()
    assert names == str(["process", "ray", "serial", "thread", "torch"])
    assert imported == "False False"


@pytest.mark.parametrize(
    "name,accepted",
    [
        ("serial", "none"),
        ("thread", "none"),
        ("process", "start_method, threads"),
        ("torch", "timeout, start_method, threads"),
    ],
)
def test_an_unknown_option_is_one_value_error_listing_what_is_accepted(name, accepted):
    with pytest.raises(ValueError, match=f"backend '{name}' has no option 'foo'; accepted: "):
        backends.create(name, 1, 2, foo=1)
    with pytest.raises(ValueError, match=f"accepted: {accepted}$"):
        backends.create(name, 0, 2, foo=1)  # checked even when no worker will run


@pytest.mark.parametrize("name", ["thread", "process", "torch"])
def test_no_workers_means_the_loop(name):
    backend = backends.create(name, 0, 2)
    assert backend.name == "serial" and backend.workers == 0


@register
class InTheLoop(Backend):
    """A user's backend, defined outside augment: batches made in the loop."""

    name = "in-the-loop-test"

    def submit(self, plan):
        return Deferred(lambda: make_batch(self.task, plan))


def test_a_backend_of_ones_own_runs_the_loader_as_the_others():
    dataset = augment.ImageFolder("data/sample", "data/sample/labels.csv")
    assert "in-the-loop-test" in backends.names()
    kwargs = dict(batch_size=32, workers=1, seed=4)
    with augment.Loader(
        dataset, augment.kaggle_pipeline(64), backend="in-the-loop-test", **kwargs
    ) as a:
        ours = [x for x, _ in a]
    with augment.Loader(dataset, augment.kaggle_pipeline(64), backend="serial", **kwargs) as b:
        serial = [x for x, _ in b]
    assert len(ours) == 4 and all(torch.equal(x, y) for x, y in zip(ours, serial))
