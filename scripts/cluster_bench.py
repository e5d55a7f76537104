#!/usr/bin/env python
"""Scaling out, measured on one machine (``scripts/benchmark.py cluster`` runs this):

1. shards over HTTP on loopback, 20 ms a request, 2 process workers: images/s of
   ``augment.Shards`` (a batch's samples fetched as coalesced byte ranges, at once) vs
   ``augment.HTTPImages`` (one request per image), alternated rounds, the median of each;
2. a simulated Ray cluster (``ray.cluster_utils.Cluster``: a head and two worker nodes,
   each its own raylet, one worker on each): an uninterrupted epoch vs one in which a
   worker node is removed after a few batches; both epochs' batches are checked against
   the serial loader's, hash for hash. The removed node is added back after each round
   (the next epoch moves a worker onto it).

The server runs in its own process (its threads do not share the loop's GIL).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

import augment  # noqa: E402

DOCS = ROOT / "docs" / "benchmarks.md"
BENCH_DATA = ROOT / "runs" / "bench_data"
# Nodes are declared dead after 3 missed checks 0.5 s apart (Ray's defaults: 5 x 3 s).
FAST_HEALTH_CHECKS = {
    "health_check_period_ms": 500,
    "health_check_failure_threshold": 3,
    "health_check_initial_delay_ms": 0,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=int, default=512, help="tiles per HTTP epoch")
    parser.add_argument(
        "--cluster-images", type=int, default=2048, help="tiles per cluster epoch (default 2048)"
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds (default 3)")
    parser.add_argument("--lose-after", type=int, default=3, help="batches before the loss")
    parser.add_argument("--trace", type=Path, help="trace one more loss into this folder")


def transform():
    return augment.Compose([augment.RandomFlip(0.5), augment.RandomCrop(224)])


def dataset(n: int) -> tuple[Path, Path]:
    """The benchmark's 256x256 tiles (made once) and their shards, 8 of them."""
    from augment.sources.sample_data import write_dataset

    folder = BENCH_DATA / f"n{n}"
    if not (folder / "labels.csv").exists():
        write_dataset(folder, n=n, size=256, seed=1)
    shards = BENCH_DATA / f"shards{n}"
    if not (shards / "index.json").exists():
        images = augment.ImageFolder(folder, folder / "labels.csv")
        total = sum(p.stat().st_size for p in images.paths)
        augment.write_shards(images, shards, shard_bytes=total // 8 + 1, overwrite=True)
    return folder, shards


class Server:
    """``augment.sources.serve`` in a process of its own, on a free loopback port."""

    def __init__(self, root: Path, latency_ms: float):
        code = (
            "import sys; from augment.sources.serve import make_server; "
            f"s = make_server({str(root)!r}, latency_ms={latency_ms}); "
            "print(s.server_address[1], flush=True); s.serve_forever()"
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env)
        self.url = f"http://127.0.0.1:{int(self.proc.stdout.readline())}/"

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.proc.kill()
        self.proc.wait()


def timed_epoch(loader) -> tuple[float, list[str]]:
    """Seconds for one epoch, and its batches' hashes."""
    t0 = time.perf_counter()
    hashes = [digest(batch) for batch in loader]
    return time.perf_counter() - t0, hashes


def digest(batch) -> str:
    x, y = batch
    return hashlib.sha1(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest()[:16]


def bench_http(args, folder: Path, shards: Path) -> list[str]:
    """Images/s of Shards vs HTTPImages, 2 process workers each, with decoding alone (the
    I/O regime) and with the crop pipeline (which this machine's 2 cores cap)."""
    images = augment.ImageFolder(folder, folder / "labels.csv")
    names = [p.relative_to(folder).as_posix() for p in images.paths]
    rows = []
    with Server(folder, args.latency_ms) as files, Server(shards, args.latency_ms) as tars:
        for label, pipeline in (("decode only", None), ("flip + crop 224", transform())):
            contenders = {
                "Shards": augment.Shards(tars.url),
                "HTTPImages": augment.HTTPImages(files.url, names, folder / "labels.csv"),
            }
            rates = race(args, contenders, pipeline)
            shards_rate = statistics.median(rates["Shards"])
            http_rate = statistics.median(rates["HTTPImages"])
            rows += [
                f"| {label}: Shards over HTTP, {args.latency_ms:g} ms a request, 2 process "
                f"workers / HTTPImages (one request per image), same server | "
                f"{shards_rate:.0f} / {http_rate:.0f} images/s: "
                f"**{shards_rate / http_rate:.1f}x** |",
            ]
    return rows


def race(args, contenders: dict, pipeline) -> dict[str, list[float]]:
    """Images/s per round of each contender, rounds alternated, workers started once."""
    loaders = {
        name: augment.Loader(
            data, pipeline, batch_size=args.batch, backend="process", workers=2, seed=1
        )
        for name, data in contenders.items()
    }
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    try:
        reference = None
        for loader in loaders.values():  # warm-up: workers start, and the batches agree
            _, hashes = timed_epoch(loader)
            assert reference is None or hashes == reference, "Shards and HTTPImages differ"
            reference = hashes
        for _ in range(args.rounds):
            for name, loader in loaders.items():
                seconds, _ = timed_epoch(loader)
                rates[name].append(len(loader.dataset) / seconds)
    finally:
        for loader in loaders.values():
            loader.close()
    return rates


def ray_loader(url: str, batch: int, tracer=None):
    return augment.Loader(
        augment.Shards(url), transform(), batch, backend="ray", workers=2, seed=1, tracer=tracer
    )


def lose_a_node(args, loader, reference, sim, nodes) -> tuple[float, bool, int, list]:
    """One epoch in which worker 1's node is removed after ``lose_after`` batches: its
    seconds, whether its batches are the serial loader's, how many were made again, and the
    nodes after a new one is added in place of the lost (and a worker moved onto it)."""
    reference.set_epoch(loader.epoch)
    expected = [digest(b) for b in reference]
    before = len(loader._backend.remade)
    victim = loader.worker_nodes()[1]
    doomed = next(n for n in nodes if n.node_id.startswith(victim))
    hashes = []
    t0 = time.perf_counter()
    for number, batch in enumerate(loader):
        hashes.append(digest(batch))
        if number + 1 == args.lose_after:
            sim.remove_node(doomed, allow_graceful=False)
    seconds = time.perf_counter() - t0
    remade = len(loader._backend.remade) - before
    nodes = [n for n in nodes if n is not doomed] + [sim.add_node(num_cpus=2)]
    sim.wait_for_nodes()
    # what the next epoch's start would do (a worker onto the new node), left out of its time
    loader._backend.set_epoch_plans([])
    return seconds, hashes == expected, remade, nodes


def simulated_cluster(worker_nodes: int = 2, cpus: int = 2):
    """A Ray cluster on this machine, as Ray's own tests make one: a head without CPUs (the
    driver only) and ``worker_nodes`` nodes of ``cpus`` CPUs, each its own raylet and object
    store; health checks fast, so a lost node is noticed in about 1.5 s. Connected (ray.init)
    and ready. Returns (cluster, its worker nodes); ``ray.shutdown()`` then
    ``cluster.shutdown()`` end it."""
    import ray
    from ray.cluster_utils import Cluster

    sim = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "include_dashboard": False,
            "_system_config": FAST_HEALTH_CHECKS,
        },
    )
    nodes = [sim.add_node(num_cpus=cpus) for _ in range(worker_nodes)]
    ray.init(address=sim.address, log_to_driver=False, configure_logging=False)
    sim.wait_for_nodes()
    return sim, nodes


def bench_cluster(args, folder: Path, shards: Path) -> list[str]:
    import ray

    reference = augment.Loader(
        augment.ImageFolder(folder, folder / "labels.csv"), transform(), args.batch, seed=1
    )
    sim, nodes = simulated_cluster()
    whole, lost, remade, same = [], [], [], True
    try:
        with Server(shards, args.latency_ms) as tars:
            loader = ray_loader(tars.url, args.batch)
            try:
                timed_epoch(loader)  # warm-up
                for _ in range(args.rounds):
                    reference.set_epoch(loader.epoch)
                    seconds, hashes = timed_epoch(loader)
                    same &= hashes == [digest(b) for b in reference]
                    whole.append(seconds)
                    seconds, ok, n, nodes = lose_a_node(args, loader, reference, sim, nodes)
                    lost.append(seconds)
                    remade.append(n)
                    same &= ok
            finally:
                loader.close()
            if args.trace is not None:  # one more pair of epochs, traced, for the figure
                shutil.rmtree(args.trace, ignore_errors=True)
                tracer = augment.Tracer(args.trace, experiment="lose_a_node")
                with ray_loader(tars.url, args.batch, tracer) as loader:
                    timed_epoch(loader)
                    lose_a_node(args, loader, reference, sim, nodes)
                tracer.close()
    finally:
        reference.close()
        ray.shutdown()
        sim.shutdown()
    t_whole, t_lost = statistics.median(whole), statistics.median(lost)
    bound = t_whole * 1.5  # plus the lost node's share: half the workers
    return [
        f"| simulated cluster (head + 2 worker nodes), one worker each, shards over HTTP: "
        f"epoch of {args.cluster_images} images, uninterrupted | {t_whole:.2f} s |",
        f"| the same with a worker node removed after {args.lose_after} batches | "
        f"{t_lost:.2f} s ({t_lost / t_whole:.2f}x; target <= {bound:.2f} s, the "
        f"uninterrupted time plus the lost node's half) |",
        f"| batches made again per loss (median) / batches identical to serial | "
        f"{statistics.median(remade):.0f} / {'yes' if same else '**NO**'} |",
    ]


def run(args) -> str:
    logging.basicConfig(level=logging.ERROR)  # the warnings of each loss, by design
    rows = bench_http(args, *dataset(args.images))
    rows += bench_cluster(args, *dataset(args.cluster_images))
    table = "\n".join(["| what | measured |", "|---|---|", *rows])
    print(table)
    if args.trace is not None:
        from augment.profiler.report.summary import write_report

        write_report(args.trace, args.trace / "report")
        print(f"the traced loss: {args.trace / 'report' / 'timeline.png'}")
    return table


def copy_figure(trace: Path) -> str:
    """The traced loss's timeline as docs/cluster_timeline.png; the Markdown that shows it."""
    (DOCS.parent / "cluster_timeline.png").write_bytes(
        (trace / "report" / "timeline.png").read_bytes()
    )
    return "![a worker node lost mid-epoch](cluster_timeline.png)"


def main(argv: list[str] | None = None) -> None:
    """Standalone: prints the table (``scripts/benchmark.py cluster --write-docs`` puts it
    into docs/benchmarks.md)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
