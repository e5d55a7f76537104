"""The soak benchmark (``python scripts/benchmark.py soak``): memory and /dev/shm over a long run.

Each backend runs 10,000 batches (16 images cropped to 128, the Kaggle pipeline) over a few
hundred JPEG tiles, so several hundred epochs, at 2 workers. Every ``--every`` batches (and
after the first batch, at the end of the first epoch and at the last batch) it samples:

- the RSS of the consumer and of every worker process (``Loader.worker_pids()``);
- the loader's /dev/shm entries (count and bytes allocated): those that appeared since the
  loader was made and that the consumer or a worker maps by name (the workers map the
  queues' semaphores, the consumer the batch slots). The machine may be shared: entries of
  other programs, which no process of the loader maps, are reported apart ("foreign"); an
  entry leaked unmapped would be among them, and among those left after close.

After ``close()`` it checks that the workers are gone and that none of the loader's entries
is left in /dev/shm.

Each backend runs in a fresh interpreter (this file, run with ``--one BACKEND``), so the
consumer's RSS is that backend's alone and nothing one backend left behind counts against the
next. Targets: after the first epoch the total RSS (consumer + workers) grows by less than 5%,
and the /dev/shm entries stay constant.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("serial", "thread", "process", "torch")
SHM = Path("/dev/shm")
MIB = 2**20
GROWTH_TARGET = 0.05


def dataset_folder(n: int) -> Path:
    """``n`` sample-like JPEG tiles (256 x 256) outside git, made once
    (augment.sources.sample_data); the same folder as the other benchmarks' ``bench_dataset``."""
    from augment.sources.sample_data import write_dataset

    folder = ROOT / "runs" / "bench_data" / f"n{n}"
    if not (folder / "labels.csv").exists():
        write_dataset(folder, n=n, size=256, seed=1)
    return folder


# ---------------------------------------------------------------- one backend, in its own process


def _shm_listing() -> dict[str, int]:
    """Every entry of /dev/shm: name -> bytes allocated (tmpfs pages, not the nominal size)."""
    out = {}
    try:
        with os.scandir(SHM) as entries:
            for entry in entries:
                try:
                    out[entry.name] = entry.stat(follow_symlinks=False).st_blocks * 512
                except FileNotFoundError:  # unlinked while we looked
                    pass
    except FileNotFoundError:
        pass
    return out


def _mapped_shm(pids: list[int]) -> tuple[set[str], set[str]]:
    """The /dev/shm files mapped by ``pids``: (still linked, already unlinked)."""
    linked, unlinked = set(), set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as maps:
                for line in maps:
                    at = line.find("/dev/shm/")
                    if at < 0:
                        continue
                    path = line[at:].rstrip("\n")
                    if path.endswith(" (deleted)"):
                        # glibc's sem_open maps a temporary sem.XXXXXX it then renames:
                        # a named semaphore, not an unlinked buffer
                        if not path.startswith("/dev/shm/sem."):
                            unlinked.add(path[: -len(" (deleted)")])
                    else:
                        linked.add(path)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return linked, unlinked


def _rss(pid: int) -> int | None:
    import psutil

    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return None


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def soak_one(
    backend: str, folder: Path, batches: int, batch_size: int, crop: int, workers: int, every: int
) -> dict:
    """Run ``batches`` batches on ``backend`` in this process; the samples and the checks after
    close, as a JSON-able dict."""
    import cv2
    import psutil
    import torch

    import augment

    torch.set_num_threads(1)  # serial and thread run the pipeline in this process
    cv2.setNumThreads(1)
    me = psutil.Process()
    dataset = augment.ImageFolder(folder, folder / "labels.csv")
    before = _shm_listing()
    samples: list[dict] = []
    pids_seen: set[int] = set()
    ours_seen: set[str] = set()
    done = 0
    loader = augment.Loader(
        dataset,
        augment.kaggle_pipeline(crop=crop),
        batch_size=batch_size,
        backend=backend,
        workers=workers,
    )
    per_epoch = len(loader)
    start = time.perf_counter()

    def sample() -> dict:
        pids = loader.worker_pids()
        pids_seen.update(pids)
        new = {name: size for name, size in _shm_listing().items() if name not in before}
        linked, unlinked = _mapped_shm([me.pid, *pids])
        ours = {name: size for name, size in new.items() if f"/dev/shm/{name}" in linked}
        ours_seen.update(ours)
        return {
            "batch": done,
            "epoch": (done - 1) // per_epoch + 1,
            "seconds": round(time.perf_counter() - start, 3),
            "consumer": me.memory_info().rss,
            "workers": {str(pid): _rss(pid) for pid in pids},
            "shm_entries": len(ours),
            "shm_bytes": sum(ours.values()),
            "shm_names": sorted(ours),
            # new entries that none of the loader's processes maps by name: another
            # program's, or leaked ones (the consumer maps its semaphores under a temporary
            # name, but the workers map them under the real one)
            "foreign": sorted(set(new) - set(ours)),
            "mapped_unlinked": len(unlinked),
            "fds": me.num_fds(),
        }

    try:
        while done < batches:
            for images, _labels in loader:
                done += 1
                if done in (1, per_epoch, batches) or done % every == 0:
                    samples.append(sample())
                    if done % (every * 10) == 0 or done == batches:
                        s = samples[-1]
                        print(
                            f"  {backend}: {done}/{batches} batches, {s['seconds']:.0f} s, "
                            f"consumer {s['consumer'] / MIB:.0f} MiB, workers "
                            f"{sum(v or 0 for v in s['workers'].values()) / MIB:.0f} MiB, "
                            f"/dev/shm +{s['shm_entries']}",
                            file=sys.stderr,
                            flush=True,
                        )
                del images, _labels
                if done >= batches:
                    break
        elapsed = time.perf_counter() - start
    finally:
        loader.close()
    deadline = time.monotonic() + 10  # close() joins its workers; give stragglers a moment
    while any(_alive(p) for p in pids_seen) and time.monotonic() < deadline:
        time.sleep(0.1)
    after = _shm_listing()
    return {
        "backend": backend,
        "batches": done,
        "batch_size": batch_size,
        "crop": crop,
        "workers": workers,
        "images": len(dataset),
        "per_epoch": per_epoch,
        "every": every,
        "seconds": elapsed,
        "samples": samples,
        "worker_pids": sorted(pids_seen),
        "alive_after_close": sorted(p for p in pids_seen if _alive(p)),
        "shm_after_close": sorted(ours_seen & set(after)),
        "foreign_after_close": sorted(set(after) - set(before) - ours_seen),
        "consumer_mapped_after_close": len(_mapped_shm([me.pid])[0]),
    }


# ---------------------------------------------------------------------------- every backend


def _run_child(backend: str, folder: Path, args, out: Path) -> dict:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--one", backend,
        "--folder", str(folder),
        "--batches", str(args.batches),
        "--batch-size", str(args.batch_size),
        "--crop", str(args.crop),
        "--workers", str(args.workers),
        "--every", str(args.every),
        "--json", str(out),
    ]  # fmt: skip
    # subprocess.run kills the child on any exception here (Ctrl-C included); its workers
    # notice their parent is gone and exit
    proc = subprocess.run(command, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"soak {backend}: the run exited with code {proc.returncode}")
    return json.loads(out.read_text())


def _workers_rss(s: dict) -> int:
    return sum(v or 0 for v in s["workers"].values())


def _total(s: dict) -> int:
    return s["consumer"] + _workers_rss(s)


def summarise(run: dict) -> dict:
    samples = run["samples"]
    first_epoch = next((s for s in samples if s["batch"] >= run["per_epoch"]), samples[-1])
    after = [s for s in samples if s["batch"] >= first_epoch["batch"]]
    end = samples[-1]
    shm_after = [s["shm_entries"] for s in after]
    worker_sets = {tuple(sorted(s["workers"])) for s in samples[1:]}
    return {
        "first": samples[0],
        "epoch1": first_epoch,
        "end": end,
        "growth": _total(end) / _total(first_epoch) - 1,
        "growth_consumer": end["consumer"] / first_epoch["consumer"] - 1,
        "growth_workers": (_workers_rss(end) / _workers_rss(first_epoch) - 1)
        if _workers_rss(first_epoch)
        else None,
        "peak_total": max(_total(s) for s in after),
        "shm_max": max(s["shm_entries"] for s in samples),
        "shm_bytes_max": max(s["shm_bytes"] for s in samples),
        "shm_constant": min(shm_after) == max(shm_after),
        "foreign": max((s["foreign"] for s in samples), key=len),
        "unlinked_max": max(s["mapped_unlinked"] for s in samples),
        "fds": (first_epoch["fds"], max(s["fds"] for s in after), end["fds"]),
        "workers_restarted": len(worker_sets) > 1,
        "rate": run["batches"] / run["seconds"],
    }


def table(runs: dict[str, dict]) -> str:
    lines = [
        "| backend, 2 workers | batches/s | consumer RSS, MiB: epoch 1 → end "
        "| workers RSS (sum), MiB: epoch 1 → end | RSS growth after epoch 1 "
        "| /dev/shm entries: batch 1 / epoch 1 / max / end | /dev/shm max, MiB "
        "| left after close |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    rss_checks, shm_checks, close_checks = [], [], []
    for name, run in runs.items():
        s = summarise(run)
        e1, end = s["epoch1"], s["end"]
        if run["worker_pids"]:
            workers = f"{_workers_rss(e1) / MIB:.0f} → {_workers_rss(end) / MIB:.0f}"
        else:
            workers = "(in the consumer)"
        left = []
        if run["alive_after_close"]:
            left.append(f"{len(run['alive_after_close'])} worker(s)")
        if run["shm_after_close"]:
            left.append(f"{len(run['shm_after_close'])} /dev/shm entries")
        lines.append(
            f"| {name} | {s['rate']:.1f} "
            f"| {e1['consumer'] / MIB:.0f} → {end['consumer'] / MIB:.0f} | {workers} "
            f"| {s['growth']:+.1%} "
            f"| {s['first']['shm_entries']} / {e1['shm_entries']} / {s['shm_max']} "
            f"/ {end['shm_entries']} | {s['shm_bytes_max'] / MIB:.1f} "
            f"| {', '.join(left) or 'nothing'} |"
        )
        rss_checks.append(
            f"{name} {s['growth']:+.1%} {'met' if s['growth'] < GROWTH_TARGET else 'NOT met'}"
        )
        shm_checks.append(f"{name} {'met' if s['shm_constant'] else 'NOT met'}")
        close_checks.append(f"{name} {'yes' if not left else 'NO'}")
    some = next(iter(runs.values()))
    return (
        "\n".join(lines)
        + "\n\n"
        + "\n".join(
            [
                f"- {some['batches']} batches of {some['batch_size']} per backend, "
                f"{some['images']} JPEG tiles ({some['per_epoch']} batches per epoch, "
                f"{some['batches'] / some['per_epoch']:.0f} epochs); RSS sampled every "
                f"{some['every']} batches",
                f"- RSS (consumer + workers) grows < 5% after the first epoch: "
                f"{', '.join(rss_checks)}",
                f"- /dev/shm entries constant after the first epoch: {', '.join(shm_checks)}",
                f"- workers gone and /dev/shm as before after close(): {', '.join(close_checks)}",
            ]
        )
    )


def details(runs: dict[str, dict]) -> str:
    """What the table leaves out, per backend: per-part growth, peak, names, fds, restarts."""
    out = []
    for name, run in runs.items():
        s = summarise(run)
        workers = "" if s["growth_workers"] is None else f", workers {s['growth_workers']:+.1%}"
        out.append(
            f"{name}: growth after epoch 1 consumer {s['growth_consumer']:+.1%}{workers}; "
            f"peak total {s['peak_total'] / MIB:.0f} MiB; consumer fds epoch 1 / max / end "
            f"{' / '.join(map(str, s['fds']))}; /dev/shm at the end "
            f"{', '.join(s['end']['shm_names']) or '-'}; other new /dev/shm entries (another "
            f"program's or leaked) at most {len(s['foreign'])}; unlinked shm buffers mapped "
            f"at most {s['unlinked_max']}; workers restarted: "
            f"{'yes' if s['workers_restarted'] else 'no'}; {run['seconds']:.0f} s"
        )
        if run["shm_after_close"]:
            out.append(f"  left in /dev/shm after close: {', '.join(run['shm_after_close'])}")
        if run["alive_after_close"]:
            out.append(f"  alive after close: pids {run['alive_after_close']}")
        if run["foreign_after_close"]:
            out.append(
                f"  other new /dev/shm entries after close (another program's, or leaked "
                f"unmapped): {', '.join(run['foreign_after_close'])}"
            )
    return "\n".join(out)


def plot(runs: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    (consumer, workers), (growth, shm) = axes
    some = next(iter(runs.values()))
    for name, run in runs.items():
        samples = run["samples"]
        x = [s["batch"] for s in samples]
        e1 = summarise(run)["epoch1"]
        end = samples[-1]
        (line,) = consumer.plot(
            x, [s["consumer"] / MIB for s in samples], label=f"{name}: {end['consumer'] / MIB:.0f}"
        )
        if run["worker_pids"]:
            workers.plot(
                x,
                [_workers_rss(s) / MIB for s in samples],
                color=line.get_color(),
                label=f"{name}: {_workers_rss(end) / MIB:.0f}",
            )
        growth.plot(
            x,
            [100 * (_total(s) / _total(e1) - 1) for s in samples],
            color=line.get_color(),
            label=f"{name}: {_total(end) / _total(e1) - 1:+.1%}",
        )
        shm.plot(
            x,
            [s["shm_entries"] for s in samples],
            color=line.get_color(),
            label=f"{name}: {end['shm_entries']}",
            drawstyle="steps-post",
        )
    consumer.set_title("consumer process RSS (legend: at the end, MiB)")
    consumer.set_ylabel("RSS, MiB")
    workers.set_title("worker processes RSS, summed (legend: at the end, MiB)")
    workers.set_ylabel("RSS, MiB")
    growth.set_title("consumer + workers RSS, change since the end of epoch 1")
    growth.set_ylabel("change, %")
    growth.axhline(
        100 * GROWTH_TARGET, color="red", linestyle="--", linewidth=1, label="target: < +5%"
    )
    growth.axhline(0, color="grey", linewidth=0.5)
    shm.set_title("the loader's entries in /dev/shm (legend: at the end)")
    shm.set_ylabel("entries")
    shm.yaxis.get_major_locator().set_params(integer=True)
    for ax in axes.flat:
        ax.axvline(some["per_epoch"], color="grey", linestyle=":", linewidth=1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        ax.set_ylim(bottom=min(0, ax.get_ylim()[0]))
    for ax in axes[1]:
        ax.set_xlabel(f"batches delivered (one epoch = {some['per_epoch']} batches, dotted line)")
    fig.suptitle(
        f"Soak: {some['batches']:,} batches of {some['batch_size']} per backend, crop "
        f"{some['crop']}, {some['workers']} workers, {some['images']} JPEG tiles"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def bench_soak(args) -> str:
    folder = dataset_folder(args.images)
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends:
            print(f"soak: {backend}, {args.batches} batches ...", file=sys.stderr, flush=True)
            runs[backend] = _run_child(backend, folder, args, Path(tmp) / f"{backend}.json")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(runs))
    plot(runs, Path(args.plot))
    result = table(runs)
    print(f"{result}\n\n{details(runs)}\n\nplot: {args.plot}")
    return result + f"\n\n![RSS and /dev/shm over {args.batches:,} batches]({_readme_path(args)})"


def _readme_path(args) -> str:
    try:
        return str(Path(args.plot).resolve().relative_to(ROOT))
    except ValueError:
        return str(args.plot)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``benchmark.py soak``."""
    parser.add_argument(
        "--batches",
        type=int,
        default=10_000,
        help="batches per backend (default 10000; 500 for a quick try)",
    )
    parser.add_argument(
        "--images",
        type=int,
        default=512,
        help="JPEG tiles in the dataset (default 512: 32 batches per epoch)",
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--every", type=int, default=100, help="batches between samples")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument(
        "--plot",
        default=str(ROOT / "docs" / "soak_rss.png"),
        help="where the RSS-over-batches plot goes (default docs/soak_rss.png)",
    )
    parser.add_argument(
        "--json",
        default=str(ROOT / "runs" / "soak" / "soak.json"),
        help="every sample of every backend (default runs/soak/soak.json)",
    )


def _child_main() -> None:
    parser = argparse.ArgumentParser(description="one backend of the soak benchmark")
    parser.add_argument("--one", required=True, choices=BACKENDS)
    parser.add_argument("--folder", required=True, type=Path)
    parser.add_argument("--batches", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--crop", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--every", type=int, required=True)
    parser.add_argument("--json", required=True, type=Path)
    a = parser.parse_args()
    result = soak_one(a.one, a.folder, a.batches, a.batch_size, a.crop, a.workers, a.every)
    a.json.write_text(json.dumps(result))


if __name__ == "__main__":
    _child_main()
