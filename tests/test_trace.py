"""Per-batch instrumentation: spans from every backend, the CPU sampler, tracing from the
environment, two traced OS processes sharing one folder, reading damaged traces back, and
the Chrome Trace Event export.

Real JPEG files, real worker processes (process and torch backends), real subprocesses.
Each backend's traced run happens once per module (``traced``) and several tests read it.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image
from support import hang_guard

import augment
from augment.trace import load, to_chrome
from augment.trace.schema import (
    CONSUMER_LANE,
    CONSUMER_STAGES,
    OPTIONAL_SPAN_KEYS,
    SPAN_KEYS,
    STAGED_STAGES,
)

N_IMAGES = 16
BATCH = 4  # four batches per epoch
EPOCHS = 2
STEP_S = 0.08  # 8 batches x 80 ms: the sampler (every 100 ms) gets several samples
BACKENDS = ["serial", "thread", "process", "torch"]
WORKER_STAGES = STAGED_STAGES
# an ImageFolder is a staged dataset: each batch has these spans
STAGES = STAGED_STAGES + CONSUMER_STAGES
KEYS = set(SPAN_KEYS) | {"images"}
TYPES = {
    "experiment": str,
    "backend": str,
    "host": str,
    "pid": int,
    "worker": int,
    "batch": int,
    "epoch": int,
    "stage": str,
    "start_ns": int,
    "end_ns": int,
    "cpu_ns": int,
    "images": int,
}


class Hang(Exception):
    pass


def transform():
    return augment.Compose(
        [augment.RandomFlip(0.5, 0.5), augment.RandomRotate(15), augment.RandomCrop(48)]
    )


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    """16 JPEGs of 64x64 in two class folders."""
    root = tmp_path_factory.mktemp("trace_images")
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(exist_ok=True)
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(np.kron(small, np.ones((8, 8, 1), np.uint8))).save(
            folder / f"img_{i:02d}.jpg", quality=90
        )
    return root


@pytest.fixture(scope="module")
def dataset(image_dir):
    return augment.ImageFolder(image_dir)


@dataclass
class Traced:
    backend: str
    directory: Path
    experiment: str
    path: Path  # the file the tracer named
    records: list[dict]  # raw lines of that file, meta included
    worker_pids: set[int] = field(default_factory=set)  # the backend's worker processes
    children: set[int] = field(default_factory=set)  # new child processes seen while running
    delivered: int = 0

    @property
    def spans(self) -> list[dict]:
        return [r for r in self.records if "meta" not in r]


@pytest.fixture(scope="module", params=BACKENDS)
def traced(request, dataset, tmp_path_factory) -> Traced:
    """Two epochs of one backend at 2 workers, traced, with a training step of 80 ms."""
    backend = request.param
    directory = tmp_path_factory.mktemp(f"trace_{backend}")
    experiment = f"exp_{backend}"
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    tracer = augment.Tracer(directory, experiment=experiment)
    worker_pids: set[int] = set()
    children: set[int] = set()
    delivered = 0
    with hang_guard(120):
        with augment.Loader(
            dataset,
            transform(),
            batch_size=BATCH,
            backend=backend,
            workers=2,
            seed=3,
            tracer=tracer,
        ) as loader:
            for _ in range(EPOCHS):
                for images, _labels in loader:
                    delivered += len(images)
                    if hasattr(loader._backend, "worker_pids"):
                        worker_pids |= set(loader.worker_pids())
                    children |= {p.pid for p in me.children(recursive=True)} - before
                    time.sleep(STEP_S)
        tracer.close()
    return Traced(
        backend,
        directory,
        experiment,
        tracer.path,
        read_jsonl(tracer.path),
        worker_pids,
        children,
        delivered,
    )


# --------------------------------------------------------------------------- spans


def test_trace_file_is_named_after_experiment_and_pid(traced):
    assert traced.path == traced.directory / f"{traced.experiment}.{os.getpid()}.jsonl"
    span_files = [
        p.name for p in traced.directory.glob("*.jsonl") if not p.name.startswith("cpu-samples.")
    ]
    assert span_files == [traced.path.name]
    assert traced.delivered == EPOCHS * N_IMAGES


def test_every_batch_has_one_span_of_each_stage(traced):
    per_batch: dict[tuple[int, int], list[str]] = {}
    for s in traced.spans:
        per_batch.setdefault((s["batch"], s["epoch"]), []).append(s["stage"])
    expected = {(b, e) for e in range(EPOCHS) for b in range(N_IMAGES // BATCH)}
    assert set(per_batch) == expected
    for key, stages in per_batch.items():
        assert sorted(stages) == sorted(STAGES), key


def test_records_have_exactly_the_documented_keys_and_types(traced):
    assert traced.spans
    for r in traced.spans:
        assert set(r) - set(OPTIONAL_SPAN_KEYS) == KEYS, r
        if r["worker"] != CONSUMER_LANE and sys.platform == "linux":
            # a worker stage says how long it waited for a core: within its time off the CPU
            assert 0 <= r["runq_ns"] <= max(0, r["end_ns"] - r["start_ns"] - r["cpu_ns"]), r
        for key, kind in TYPES.items():
            assert isinstance(r[key], kind) and not isinstance(r[key], bool), (key, r)
        assert r["experiment"] == traced.experiment
        assert r["backend"] == traced.backend
        assert r["stage"] in STAGES
        assert r["end_ns"] >= r["start_ns"], r
        assert r["cpu_ns"] >= 0, r
        assert r["images"] == BATCH
        # wall clock of this run, not some other epoch: within the last ten minutes
        assert abs(r["start_ns"] - time.time_ns()) < 600e9


def test_meta_line_describes_the_loader(traced):
    metas = [r["meta"] for r in traced.records if "meta" in r]
    assert len(metas) == EPOCHS  # one per epoch the loader ran
    for m in metas:
        assert m["experiment"] == traced.experiment
        assert m["backend"] == traced.backend
        assert m["batch_size"] == BATCH
        assert m["workers"] == (0 if traced.backend == "serial" else 2)
        assert m["pid"] == os.getpid()
    assert sorted(m["epoch"] for m in metas) == list(range(EPOCHS))


def test_consumer_stages_are_on_the_loop_lane_of_this_process(traced):
    for s in traced.spans:
        if s["stage"] in CONSUMER_STAGES:
            assert s["worker"] == -1, s
            assert s["pid"] == os.getpid(), s


def test_worker_stages_carry_the_worker_that_made_them(traced):
    workers = [s for s in traced.spans if s["stage"] in WORKER_STAGES]
    me = os.getpid()
    if traced.backend == "serial":
        assert all(s["worker"] == -1 and s["pid"] == me for s in workers)
        return
    assert {s["worker"] for s in workers} <= {0, 1}
    if traced.backend == "thread":
        assert all(s["pid"] == me for s in workers)
        return
    # process, torch: other processes, the backend's own workers, children of this one
    pids = {s["pid"] for s in workers}
    assert me not in pids
    assert len(traced.worker_pids) == 2
    assert pids <= traced.worker_pids, (pids, traced.worker_pids)
    assert traced.worker_pids <= traced.children
    # one lane is one process: a worker index always comes with the same pid
    lane_pid: dict[int, set[int]] = {}
    for s in workers:
        lane_pid.setdefault(s["worker"], set()).add(s["pid"])
    assert all(len(p) == 1 for p in lane_pid.values()), lane_pid
    assert len({next(iter(p)) for p in lane_pid.values()}) == len(lane_pid)
    # all four stages of a batch come from one worker
    for key in {(s["batch"], s["epoch"]) for s in workers}:
        assert (
            len({(s["pid"], s["worker"]) for s in workers if (s["batch"], s["epoch"]) == key}) == 1
        )


def test_spans_of_a_batch_follow_the_pipeline(traced):
    by_batch: dict[tuple[int, int], dict[str, dict]] = {}
    for s in traced.spans:
        by_batch.setdefault((s["batch"], s["epoch"]), {})[s["stage"]] = s
    for key, st in by_batch.items():
        starts = [st[name]["start_ns"] for name in WORKER_STAGES]
        assert starts == sorted(starts), key
        # one thread does the stages one after another
        for a, b in zip(WORKER_STAGES, WORKER_STAGES[1:]):
            assert st[a]["end_ns"] <= st[b]["start_ns"], (key, a, b)
        wait, transfer, step = st["wait"], st["transfer"], st["step"]
        # the batch is made before the loop has it; the transfer is part of the wait
        assert st["collate"]["end_ns"] <= wait["end_ns"], key
        assert wait["start_ns"] <= transfer["start_ns"] <= transfer["end_ns"] <= wait["end_ns"], key
        assert wait["end_ns"] <= step["start_ns"] <= step["end_ns"], key
        # the step slept 80 ms: its wall clock says so, its CPU time does not
        assert step["end_ns"] - step["start_ns"] >= STEP_S * 1e9 * 0.9, key
        assert step["cpu_ns"] < step["end_ns"] - step["start_ns"], key


def test_batches_follow_one_another_on_the_loop(traced):
    waits = sorted((s for s in traced.spans if s["stage"] == "wait"), key=lambda s: s["start_ns"])
    assert [(s["epoch"], s["batch"]) for s in waits] == [
        (e, b) for e in range(EPOCHS) for b in range(N_IMAGES // BATCH)
    ]
    steps = {(s["epoch"], s["batch"]): s for s in traced.spans if s["stage"] == "step"}
    for a, b in zip(waits, waits[1:]):
        assert steps[(a["epoch"], a["batch"])]["end_ns"] <= b["start_ns"]


def test_cpu_sampler_writes_one_value_per_core(traced):
    files = list(traced.directory.glob("cpu-samples.*.jsonl"))
    assert len(files) == 1, files
    assert str(os.getpid()) in files[0].name
    samples = read_jsonl(files[0])
    assert len(samples) >= 3  # the loop ran for more than 0.6 s, sampled every 0.1 s
    cores = psutil.cpu_count()
    spans = traced.spans
    first, last = min(s["start_ns"] for s in spans), max(s["end_ns"] for s in spans)
    for sample in samples:
        assert isinstance(sample["t_ns"], int)
        assert len(sample["cpu"]) == cores
        assert all(isinstance(v, (int, float)) and 0 <= v <= 100 for v in sample["cpu"])
        # sampled while the loader ran (give the sampler's last tick 1 s)
        assert first - 1e9 <= sample["t_ns"] <= last + 1e9
    assert [s["t_ns"] for s in samples] == sorted(s["t_ns"] for s in samples)
    loaded = load(traced.directory)
    assert len(loaded.cpu) == len(samples)


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_cpu_sampler_reads_busy_cores_as_busy_from_its_first_sample(tmp_path):
    """Every core kept busy by a spinning process: every sample, the first included, reads
    each core as busy (psutil's cpu_percent keeps its baseline per thread: a baseline taken
    in the caller's thread made the sampler's first reading 0% on every core)."""
    import multiprocessing as mp

    from augment.trace.sampler import CpuSampler

    cores = psutil.cpu_count()
    spinners = [mp.get_context("spawn").Process(target=_spin, args=(30.0,)) for _ in range(cores)]
    for p in spinners:
        p.start()
    try:
        time.sleep(1.0)  # the spinners are past their start-up and spinning
        for _ in range(3):  # start and stop again: each start's first sample counts
            sampler = CpuSampler(tmp_path, interval_s=0.1)
            sampler.start()
            time.sleep(0.35)
            sampler.stop()
    finally:
        for p in spinners:
            p.kill()
            p.join()
    samples = read_jsonl(next(tmp_path.glob("cpu-samples.*.jsonl")))
    assert len(samples) >= 3 * 3
    for sample in samples:
        assert len(sample["cpu"]) == cores
        # a spinning process on every core: no core reads idle, whatever else runs
        assert min(sample["cpu"]) > 50, sample


def test_load_reads_back_every_span_sorted(traced):
    loaded = load(traced.directory)
    assert len(loaded.spans) == len(traced.spans)
    assert [s["start_ns"] for s in loaded.spans] == sorted(s["start_ns"] for s in loaded.spans)
    assert loaded.experiments() == [traced.experiment]
    assert len(loaded.meta) == EPOCHS


def test_a_loop_that_stops_early_traces_every_batch_it_received(dataset, tmp_path):
    """A training loop that breaks after batch 2 has received batches 0, 1 and 2 and run its
    step on each: all three belong in the trace (the profiler stops every run this way)."""
    tracer = augment.Tracer(tmp_path, experiment="early", sample_cpu=False)
    with (
        hang_guard(60),
        augment.Loader(
            dataset, transform(), batch_size=BATCH, backend="thread", workers=2, tracer=tracer
        ) as loader,
    ):
        received = []
        for number, _batch in enumerate(loader):
            received.append(number)
            time.sleep(0.01)
            if number == 2:
                break
    tracer.close()
    spans = load(tmp_path).spans
    traced_batches = sorted({s["batch"] for s in spans})
    assert received == [0, 1, 2]
    assert traced_batches == received, (
        f"received batches {received}, the trace has {traced_batches}"
    )
    for number in received:
        assert sorted(s["stage"] for s in spans if s["batch"] == number) == sorted(STAGES)


# --------------------------------------------------------------------------- environment


def test_environment_traces_a_loader_without_a_tracer(dataset, tmp_path, monkeypatch):
    out = tmp_path / "from_env"
    monkeypatch.setenv("AUGMENT_TRACE_DIR", str(out))
    monkeypatch.setenv("AUGMENT_EXPERIMENT", "baseline")
    with hang_guard(60):
        loader = augment.Loader(dataset, transform(), batch_size=8, backend="serial")
        assert loader.tracer is not None
        batches = sum(1 for _ in loader)
        loader.close()
    assert batches == N_IMAGES // 8
    path = out / f"baseline.{os.getpid()}.jsonl"
    assert path.is_file()
    spans = load(out).spans
    assert {s["experiment"] for s in spans} == {"baseline"}
    assert len(spans) == batches * len(STAGES)


def test_without_environment_a_loader_does_not_trace(dataset, tmp_path, monkeypatch):
    monkeypatch.delenv("AUGMENT_TRACE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    with augment.Loader(dataset, transform(), batch_size=8, backend="serial") as loader:
        assert loader.tracer is None
        for _ in loader:
            pass
    assert not list(tmp_path.rglob("*.jsonl"))


# --------------------------------------------------------------------------- two processes


SCRIPT = textwrap.dedent("""
    import pathlib
    import sys
    import time

    if __name__ == "__main__":
        import augment

        data, out, name, sync = sys.argv[1:5]
        dataset = augment.ImageFolder(data)
        transform = augment.Compose([augment.RandomFlip(0.5), augment.RandomCrop(48)])
        tracer = augment.Tracer(out, experiment=name)
        loader = augment.Loader(dataset, transform, batch_size=4, backend="thread", workers=2,
                                tracer=tracer)
        sync = pathlib.Path(sync)
        (sync / name).touch()  # both are ready before either starts: their runs overlap
        deadline = time.monotonic() + 60
        while len(list(sync.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        for epoch in range(2):
            for images, labels in loader:
                time.sleep(0.05)
        loader.close()
        tracer.close()
        print("done", name)
""")


@pytest.fixture(scope="module")
def two_processes(image_dir, tmp_path_factory):
    """Experiments "alpha" and "beta" traced at once by two Python processes into one folder."""
    root = tmp_path_factory.mktemp("two_processes")
    script = root / "train.py"
    script.write_text(SCRIPT)
    out, sync = root / "traces", root / "sync"
    sync.mkdir()
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(script), str(image_dir), str(out), name, str(sync)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("alpha", "beta")
    }
    results = {}
    for name, p in procs.items():
        try:
            stdout, stderr = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            for q in procs.values():
                q.kill()
            raise
        results[name] = (p.pid, p.returncode, stdout, stderr)
    for name, (_, code, stdout, stderr) in results.items():
        assert code == 0, f"{name} failed:\n{stderr}"
        assert f"done {name}" in stdout
    return out, {name: r[0] for name, r in results.items()}


def test_two_processes_write_two_files_into_one_folder(two_processes):
    out, pids = two_processes
    names = sorted(p.name for p in out.glob("*.jsonl") if not p.name.startswith("cpu-samples."))
    assert names == sorted(f"{name}.{pid}.jsonl" for name, pid in pids.items())
    assert len(list(out.glob("cpu-samples.*.jsonl"))) == 2  # one sampler per process
    trace = load(out)
    assert trace.experiments() == ["alpha", "beta"]
    for name, pid in pids.items():
        mine = [s for s in trace.spans if s["experiment"] == name]
        assert len(mine) == 2 * (N_IMAGES // 4) * len(STAGES)
        assert {s["pid"] for s in mine} == {pid}  # thread workers: all in that process


def test_two_processes_overlap_in_time(two_processes):
    out, _ = two_processes
    trace = load(out)
    interval = {}
    for name in ("alpha", "beta"):
        mine = [s for s in trace.spans if s["experiment"] == name]
        interval[name] = (min(s["start_ns"] for s in mine), max(s["end_ns"] for s in mine))
    (a0, a1), (b0, b1) = interval["alpha"], interval["beta"]
    assert a0 < b1 and b0 < a1, interval
    # and some batch of one was being made while the other's loop ran
    alpha = [s for s in trace.spans if s["experiment"] == "alpha"]
    beta = [s for s in trace.spans if s["experiment"] == "beta"]
    assert any(
        a["start_ns"] < b["end_ns"] and b["start_ns"] < a["end_ns"] for a in alpha for b in beta
    )


# --------------------------------------------------------------------------- reading back


def test_load_skips_a_line_cut_short_and_keeps_the_rest(tmp_path, caplog, two_processes):
    out, pids = two_processes
    folder = tmp_path / "damaged"
    shutil.copytree(out, folder)
    complete = load(folder)
    path = folder / f"alpha.{pids['alpha']}.jsonl"
    last = path.read_text().splitlines()[-1]
    with open(path, "a") as f:
        f.write(last[: len(last) // 2])  # a crash in the middle of a write
    with caplog.at_level(logging.WARNING, logger="augment"):
        damaged = load(folder)
    warnings = [r for r in caplog.records if r.name == "augment" and r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert path.name in warnings[0].getMessage()
    assert damaged.spans == complete.spans
    assert len(damaged.meta) == len(complete.meta)
    assert len(damaged.cpu) == len(complete.cpu)
    starts = [s["start_ns"] for s in damaged.spans]
    assert starts == sorted(starts)
    assert [c["t_ns"] for c in damaged.cpu] == sorted(c["t_ns"] for c in damaged.cpu)


def test_load_of_a_missing_folder_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load(tmp_path / "nowhere")


# --------------------------------------------------------------------------- Chrome export


def check_chrome(directory: Path, out: Path) -> dict:
    """Validate ``to_chrome(directory)`` against the Trace Event format and the trace."""
    trace = load(directory)
    assert to_chrome(directory, out) == out
    doc = json.loads(out.read_text())
    assert isinstance(doc, dict) and isinstance(doc["traceEvents"], list)
    events = doc["traceEvents"]
    for e in events:
        assert e["ph"] in ("X", "M", "C"), e
        assert isinstance(e["name"], str) and isinstance(e["pid"], int)
        assert isinstance(e.get("tid", 0), int)
    meta = [e for e in events if e["ph"] == "M"]
    for e in meta:
        assert isinstance(e["args"]["name" if "name" in e["args"] else "sort_index"], (str, int))
    process_names = [e for e in meta if e["name"] == "process_name"]
    assert all(isinstance(e["args"]["name"], str) for e in process_names)
    exp_pid: dict[str, int] = {}
    for e in process_names:
        label = e["args"]["name"]
        for name in trace.experiments():
            if label.split(" (")[0] == name:
                assert name not in exp_pid, f"two process_name events for {name}"
                exp_pid[name] = e["pid"]
    assert set(exp_pid) == set(trace.experiments())
    assert len(set(exp_pid.values())) == len(exp_pid), "one pid per experiment"
    # every span is one complete event, in microseconds
    xs = [e for e in events if e["ph"] == "X"]
    assert len(xs) == len(trace.spans)
    by_key = {}
    for e in xs:
        assert isinstance(e["tid"], int)
        assert isinstance(e["ts"], (int, float)) and isinstance(e["dur"], (int, float))
        assert e["dur"] >= 0
        key = (e["pid"], e["name"], e["args"]["batch"], e["args"]["epoch"])
        assert key not in by_key, key
        by_key[key] = e
    lane_tid: dict[tuple, set[int]] = {}
    offsets = []
    for s in trace.spans:
        e = by_key[(exp_pid[s["experiment"]], s["stage"], s["batch"], s["epoch"])]
        assert abs(e["dur"] * 1000 - (s["end_ns"] - s["start_ns"])) <= 1000, (e, s)
        offsets.append(s["start_ns"] - e["ts"] * 1000)
        lane = (s["experiment"], s["host"], s["pid"], s["worker"])
        lane_tid.setdefault(lane, set()).add(e["tid"])
    assert max(offsets) - min(offsets) <= 1000, "ts is start_ns in microseconds from one origin"
    assert all(len(t) == 1 for t in lane_tid.values()), "one tid per lane"
    for name, pid in exp_pid.items():
        tids = [next(iter(t)) for lane, t in lane_tid.items() if lane[0] == name]
        assert len(set(tids)) == len(tids), f"{name}: two lanes share a tid"
        thread_names = [e for e in meta if e["name"] == "thread_name" and e["pid"] == pid]
        assert sorted(e["tid"] for e in thread_names) == sorted(tids)
        assert all(isinstance(e["args"]["name"], str) and e["args"]["name"] for e in thread_names)
    # CPU counters: one per sample, a number per core, in a process of their own
    counters = [e for e in events if e["ph"] == "C"]
    assert len(counters) == len(trace.cpu)
    for e, sample in zip(sorted(counters, key=lambda e: e["ts"]), trace.cpu):
        assert e["pid"] not in exp_pid.values()
        assert isinstance(e["ts"], (int, float))
        assert len(e["args"]) == len(sample["cpu"])
        assert all(isinstance(v, (int, float)) and 0 <= v <= 100 for v in e["args"].values())
    return doc


def test_chrome_export_of_two_experiments(two_processes, tmp_path):
    out, _ = two_processes
    doc = check_chrome(out, tmp_path / "trace.json")
    names = [
        e["args"]["name"]
        for e in doc["traceEvents"]
        if e["ph"] == "M" and e["name"] == "process_name"
    ]
    assert any(n.startswith("alpha") for n in names) and any(n.startswith("beta") for n in names)
    assert any(e["ph"] == "C" for e in doc["traceEvents"])


def test_chrome_export_of_each_backend(traced, tmp_path):
    doc = check_chrome(traced.directory, tmp_path / "trace.json")
    lanes = [e for e in doc["traceEvents"] if e["ph"] == "M" and e["name"] == "thread_name"]
    # the loop, plus one lane per worker that made a batch
    workers = {(s["pid"], s["worker"]) for s in traced.spans if s["stage"] in WORKER_STAGES}
    expected = 1 if traced.backend == "serial" else 1 + len(workers)
    assert len(lanes) == expected


# --------------------------------------------------------------------------- the Tracer


def test_tracer_refuses_to_be_pickled(tmp_path):
    tracer = augment.Tracer(tmp_path, experiment="x", sample_cpu=False)
    with pytest.raises(TypeError):
        pickle.dumps(tracer)
    tracer.close()


@pytest.mark.parametrize("name", ["", "a/b", "a\\b", "nul\0byte"])
def test_tracer_refuses_a_bad_experiment_name(tmp_path, name):
    with pytest.raises(ValueError, match="experiment"):
        augment.Tracer(tmp_path, experiment=name)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["cpu", "cpu.node1"])
def test_an_accepted_experiment_name_is_read_back(dataset, tmp_path, name):
    """Whatever name the Tracer accepts, load must give its spans back (its file must not be
    taken for the CPU sampler's ``cpu.*.jsonl``), or the Tracer must refuse the name."""
    try:
        tracer = augment.Tracer(tmp_path, experiment=name)
    except ValueError:
        return
    with augment.Loader(
        dataset, transform(), batch_size=8, backend="serial", tracer=tracer
    ) as loader:
        batches = sum(1 for _ in loader)
    tracer.close()
    trace = load(tmp_path)
    assert trace.experiments() == [name]
    assert len(trace.spans) == batches * len(STAGES)
