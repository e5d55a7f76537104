"""The Ray backend on a real multi-node cluster, simulated here: a head and two worker nodes,
each its own raylet and object store (``ray.cluster_utils.Cluster``, as Ray's own tests),
all on this machine, started once for the module. Batches equal serial's bit for bit; spans
name the node that made them; a worker whose process is killed, or whose node is removed,
mid-epoch loses nothing; a node that joins is used from the next epoch."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from support import hang_guard

import augment
from augment.profiler.report.summary import write_report

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")
from cluster_bench import simulated_cluster  # noqa: E402 (scripts/: the benchmark's cluster)

N_IMAGES, BATCH = 24, 2  # 12 batches: more than the 4 in flight, so work follows a loss


def transform():
    return augment.Compose(
        [augment.RandomFlip(0.5, 0.5), augment.RandomRotate(20), augment.RandomCrop(24)]
    )


@pytest.fixture(scope="module")
def cluster():
    """A head (no CPU: the driver only) and two worker nodes of 2 CPUs each."""
    sim, nodes = simulated_cluster()
    # the nodes cannot import this test module: its classes travel by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield sim, nodes
    ray.shutdown()
    sim.shutdown()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster_images")
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        (root / f"c{i % 3}").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(
            root / f"c{i % 3}" / f"im{i:02d}.png"
        )
    return augment.ImageFolder(root)


@pytest.fixture(scope="module")
def serial(dataset):
    """Two epochs made in the loop: what every run on the cluster must yield."""
    with augment.Loader(dataset, transform(), batch_size=BATCH, seed=3) as loader:
        return [[(x.clone(), y.clone()) for x, y in loader] for _ in range(2)]


def same(got, expected):
    assert len(got) == len(expected)
    for (x, y), (ex, ey) in zip(got, expected, strict=True):
        assert torch.equal(x, ex) and torch.equal(y, ey)


def short(node) -> str:
    return node.node_id[:8]


def test_batches_equal_serial_and_spans_name_each_node(cluster, dataset, serial, tmp_path):
    sim, nodes = cluster
    tracer = augment.Tracer(tmp_path / "trace", experiment="cluster", sample_cpu=False)
    with (
        hang_guard(120),
        augment.Loader(
            dataset, transform(), batch_size=BATCH, seed=3, backend="ray", workers=2, tracer=tracer
        ) as loader,
    ):
        got = [[(x.clone(), y.clone()) for x, y in loader] for _ in range(2)]
        placed = loader.worker_nodes()
    tracer.close()
    for e in range(2):
        same(got[e], serial[e])
    # SPREAD: one worker on each worker node, none on the head
    assert sorted(placed.values()) == sorted(short(n) for n in nodes)
    spans = augment.trace.load(tmp_path / "trace").spans
    made = [s for s in spans if s["worker"] >= 0]
    assert {s["node"] for s in made} == {short(n) for n in nodes}
    assert all(s["node"] == placed[s["worker"]] for s in made)
    # the training loop's spans: the head's node, where this driver runs
    assert {s["node"] for s in spans if s["worker"] == -1} == {short(sim.head_node)}
    summary = write_report(tmp_path / "trace", tmp_path / "report")
    by_node = {n["node"]: n for n in summary["experiments"][0]["nodes"]}
    assert set(by_node) == {short(n) for n in nodes}
    assert sum(n["batches"] for n in by_node.values()) == 2 * N_IMAGES // BATCH
    assert "by node" in (tmp_path / "report" / "summary.md").read_text()


def test_killed_worker_loses_no_batch(cluster, dataset, serial, caplog):
    with (
        hang_guard(120),
        augment.Loader(
            dataset, transform(), batch_size=BATCH, seed=3, backend="ray", workers=2
        ) as loader,
    ):
        caplog.set_level(logging.WARNING, logger="augment")
        batches = iter(loader)
        got = [next(batches)]
        victim = loader._backend.worker_pids()[1]
        node = loader.worker_nodes()[1]
        os.kill(victim, signal.SIGKILL)
        got += list(batches)
        got = [(x.clone(), y.clone()) for x, y in got]
        second = [(x.clone(), y.clone()) for x, y in loader]
        remade = list(loader._backend.remade)
        pids = loader._backend.worker_pids()
    same(got, serial[0])
    same(second, serial[1])
    assert remade and {n for n, _, _ in remade} == {node}
    assert {e for _, e, _ in remade} == {0} and len({b for _, _, b in remade}) == len(remade)
    warning = next(r.getMessage() for r in caplog.records if "made again" in r.getMessage())
    assert f"node {node}" in warning and str(remade[0][2]) in warning
    assert victim not in pids and len(pids) == 2  # replaced (its node had room)


class NoNewWorkers:
    """The images of ``inner``; once the flag file exists, a worker that receives the dataset
    fails to start (its unpickling raises): no replacement can ever be had."""

    def __init__(self, inner, flag):
        self.inner, self.flag = inner, flag

    def __setstate__(self, state):
        if state["flag"].exists():
            raise RuntimeError("no new workers in this test")
        self.__dict__.update(state)

    def __len__(self):
        return len(self.inner)

    def source(self, index):
        return self.inner.source(index)

    def read(self, index):
        return self.inner.read(index)

    def decode(self, data, index):
        return self.inner.decode(data, index)

    def label(self, index):
        return self.inner.label(index)


def test_no_worker_within_replace_timeout_is_an_error(cluster, dataset, tmp_path):
    flag = tmp_path / "no-new-workers"
    loader = augment.Loader(
        NoNewWorkers(dataset, flag),
        transform(),
        batch_size=BATCH,
        backend="ray",
        workers=1,
        backend_options={"replace_timeout": 3},
    )
    with hang_guard(120):
        batches = iter(loader)
        next(batches)
        flag.touch()
        os.kill(loader.worker_pids()[0], signal.SIGKILL)
        with pytest.raises(RuntimeError, match=r"none started again within replace_timeout=3 s"):
            list(batches)
    assert loader.worker_pids() == []  # closed: nothing left running
    loader.close()


class HangsOnFlaggedNode:
    """The images of ``inner``, except that a read on a node named by a flag file
    (``hang-<node>`` in ``flags``) never returns: work on a node about to be removed is
    still in hand when it goes, whatever the machine's speed."""

    def __init__(self, inner, flags):
        self.inner, self.flags = inner, flags

    def __len__(self):
        return len(self.inner)

    def source(self, index):
        return self.inner.source(index)

    def decode(self, data, index):
        return self.inner.decode(data, index)

    def label(self, index):
        return self.inner.label(index)

    def read(self, index):
        node = ray.get_runtime_context().get_node_id()[:8]
        deadline = time.monotonic() + 300  # never outlives the test session for long
        while (self.flags / f"hang-{node}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.inner.read(index)


def test_node_removed_mid_epoch_then_a_node_joins(cluster, dataset, serial, caplog, tmp_path):
    sim, nodes = cluster
    tracer = augment.Tracer(tmp_path / "trace", experiment="lose_a_node", sample_cpu=False)
    with (
        hang_guard(180),
        augment.Loader(
            HangsOnFlaggedNode(dataset, tmp_path),
            transform(),
            batch_size=BATCH,
            seed=3,
            backend="ray",
            workers=2,
            tracer=tracer,
            backend_options={"replace_timeout": 60},
        ) as loader,
    ):
        caplog.set_level(logging.WARNING, logger="augment")
        batches = iter(loader)
        got = [next(batches)]
        placed = loader.worker_nodes()
        lost = placed[1]
        assert placed[0] != lost
        doomed = next(n for n in nodes if short(n) == lost)
        # worker 1's next batches never finish on its node, which is then removed
        (tmp_path / f"hang-{lost}").touch()
        sim.remove_node(doomed, allow_graceful=False)
        got += list(batches)
        got = [(x.clone(), y.clone()) for x, y in got]
        same(got, serial[0])
        remade = list(loader._backend.remade)
        assert remade and {n for n, _, _ in remade} == {lost}
        assert lost not in loader.worker_nodes().values()
        joined = sim.add_node(num_cpus=2)
        sim.wait_for_nodes()
        same([(x.clone(), y.clone()) for x, y in loader], serial[1])
        assert short(joined) in loader.worker_nodes().values()
    tracer.close()
    assert any(
        f"node {lost}" in r.getMessage() and "made again" in r.getMessage() for r in caplog.records
    )
    spans = augment.trace.load(tmp_path / "trace").spans
    retried = {s["batch"] for s in spans if s["stage"] == "wait" and s.get("lost_on")}
    assert retried == {b for _, e, b in remade if e == 0}
    made_on = {s["node"] for s in spans if s["worker"] >= 0 and s["epoch"] == 1}
    assert short(joined) in made_on and lost not in made_on
    summary = write_report(tmp_path / "trace", tmp_path / "report")
    by_node = {n["node"]: n for n in summary["experiments"][0]["nodes"]}
    assert by_node[lost]["lost_batches"] == len(retried)
    assert "lost with it and made again" in (tmp_path / "report" / "summary.md").read_text()
