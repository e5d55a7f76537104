"""The Ray backend on a real local Ray: one cluster for the whole module (starting Ray costs
seconds), bit-for-bit equality with serial, spans from Ray workers, errors, worker death."""

from __future__ import annotations

import os
import signal
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import augment
from augment.loading.backends import ray_backend
from augment.trace.schema import CONSUMER_STAGES, STAGED_STAGES

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")

N_IMAGES, BATCH = 12, 4


def transform():
    return augment.Compose(
        [augment.RandomFlip(0.5, 0.5), augment.RandomRotate(20), augment.RandomCrop(40)]
    )


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    # Ray's workers may not import this test module (after another module's cluster, they
    # do not): its classes travel by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray_images")
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        (root / f"c{i % 2}").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (48, 56, 3), dtype=np.uint8)).save(
            root / f"c{i % 2}" / f"im{i:02d}.png"
        )
    return root


def epochs(dataset, backend, workers, **kw):
    with augment.Loader(
        dataset, transform(), batch_size=BATCH, backend=backend, workers=workers, seed=5, **kw
    ) as loader:
        return [[(x.clone(), y.clone()) for x, y in loader] for _ in range(2)]


def test_ray_batches_equal_serial_bit_for_bit(cluster, folder):
    dataset = augment.ImageFolder(folder)
    expected = epochs(dataset, "serial", 1)
    for workers in (1, 2):
        got = epochs(dataset, "ray", workers)
        assert len(got[0]) == len(expected[0]) == 3
        for e in range(2):
            for (x, y), (ex, ey) in zip(got[e], expected[e], strict=True):
                assert x.dtype == torch.uint8 and torch.equal(x, ex) and torch.equal(y, ey)
    assert not torch.equal(expected[0][0][0], expected[1][0][0])  # epochs differ


def test_ray_spans_come_from_ray_workers(cluster, folder, tmp_path):
    dataset = augment.ImageFolder(folder)
    tracer = augment.Tracer(tmp_path, experiment="ray_run", sample_cpu=False)
    with augment.Loader(
        dataset, transform(), batch_size=BATCH, backend="ray", workers=2, tracer=tracer
    ) as loader:
        for _ in loader:
            pass
        worker_pids = set(loader.worker_pids())
    tracer.close()
    spans = augment.trace.load(tmp_path).spans
    made = [s for s in spans if s["stage"] in ("read", "decode", "augment", "collate")]
    assert {s["pid"] for s in made} <= worker_pids and os.getpid() not in worker_pids
    assert {s["worker"] for s in made} == {0, 1}
    assert all(s["host"] and s["backend"] == "ray" for s in spans)
    per_batch = {}
    for s in spans:
        per_batch.setdefault(s["batch"], set()).add(s["stage"])
    assert all(stages == set(STAGED_STAGES + CONSUMER_STAGES) for stages in per_batch.values())


def test_ray_bad_images_raise_or_skip(cluster, folder, tmp_path):
    for f in folder.rglob("*.png"):
        (tmp_path / f.parent.name).mkdir(exist_ok=True)
        (tmp_path / f.parent.name / f.name).write_bytes(f.read_bytes())
    bad = tmp_path / "c0" / "broken.png"
    bad.write_bytes(b"not an image at all")
    dataset = augment.ImageFolder(tmp_path)
    with pytest.raises(augment.BadImageError, match="broken.png"):
        epochs(dataset, "ray", 2)
    with augment.Loader(
        dataset, transform(), batch_size=BATCH, backend="ray", workers=2, on_error="skip"
    ) as loader:
        delivered = sum(len(x) for x, _ in loader)
        assert delivered == N_IMAGES
        assert [path for path, _ in loader.skipped] == [str(bad)]


class KillsItsWorker:
    """A dataset whose sample 5 kills the process that reads it, unless that is the test."""

    def __init__(self, folder):
        self.inner, self.test_pid = augment.ImageFolder(folder), os.getpid()

    def __len__(self):
        return len(self.inner)

    def source(self, index):
        return self.inner.source(index)

    def decode(self, data, index):
        return self.inner.decode(data, index)

    def label(self, index):
        return self.inner.label(index)

    def read(self, index):
        if index == 5 and os.getpid() != self.test_pid:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner.read(index)


def test_a_batch_that_kills_every_worker_is_a_clear_error(cluster, folder):
    """A lost worker's batches are made again elsewhere (tests/test_cluster.py); a batch that
    kills whoever makes it is an error after 3 tries, naming the batch and its samples."""
    loader = augment.Loader(
        KillsItsWorker(folder),
        transform(),
        batch_size=BATCH,
        backend="ray",
        workers=2,
        shuffle=False,
    )
    with pytest.raises(RuntimeError, match=r"died 3 times making batch 1 of epoch 0.*im10.png"):
        for _ in loader:
            pass
    loader.close()


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setattr(ray_backend, "ray", None)
    with pytest.raises(ValueError, match=r"augment\[ray\]"):
        augment.Loader([0], transform(), backend="ray")


def test_too_many_workers_for_the_cluster(cluster, folder):
    loader = augment.Loader(augment.ImageFolder(folder), transform(), backend="ray", workers=64)
    with pytest.raises(ValueError, match="64 workers need 64 CPUs"):
        next(iter(loader))


def test_ray_lightning_resumes_with_the_uninterrupted_batches(cluster, tmp_path):
    """Lightning's checkpoints at an epoch's end and mid-epoch, resumed on Ray, as on the
    other backends (tests/test_frameworks.py)."""
    pytest.importorskip("lightning.pytorch")
    import test_frameworks
    from support import write_jpegs
    from test_frameworks import N, lightning_run, trained

    folder = tmp_path / "jpegs"
    write_jpegs(folder, N, 40, 40)
    straight = trained(lightning_run(folder, tmp_path / "straight", "serial", 3))
    # Ray's workers cannot import the tests' module that defines the dataset: send it by value
    ray.cloudpickle.register_pickle_by_value(test_frameworks)
    try:
        # a training and a validation loader, one Ray worker each: the cluster has 2 CPUs
        first = trained(lightning_run(folder, tmp_path / "ckpt", "ray", 2, workers=1))
        assert first == straight[: len(first)]
        for name in ("val-step=6", "every-step=10"):
            path = tmp_path / "ckpt" / f"{name}.ckpt"
            done = torch.load(path, weights_only=False)["steps_seen"]
            resumed = lightning_run(folder, tmp_path / f"again-{name}", "ray", 3, path, 1)
            assert trained(resumed) == straight[done:], name
    finally:
        ray.cloudpickle.unregister_pickle_by_value(test_frameworks)
