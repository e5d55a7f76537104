"""The Chrome Trace Event export as viewers read it: integer microseconds in which spans that
touch still touch and nested spans stay nested, the training loop as each experiment's main
thread with its workers after it in order, named lanes and processes, readable CPU counters.

A real trace (a Loader with a Tracer, thread and process backends at 2 workers, two
experiments in one folder) and hand-made records where float microseconds went wrong."""

from __future__ import annotations

import json
import re
import socket
import time
from collections import defaultdict
from itertools import combinations
from pathlib import Path

import psutil
import pytest
from support import hang_guard, write_jpegs

import augment
from augment.trace import load, to_chrome
from augment.trace.schema import CONSUMER_LANE

N_IMAGES = 12
BATCH = 4
BACKENDS = ("thread", "process")


class SlowCrop:
    """A crop that takes 10 ms a sample, so that both workers get batches."""

    def __init__(self):
        self.crop = augment.RandomCrop(48)

    def __call__(self, img, rng):
        time.sleep(0.01)
        return self.crop(img, rng)


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """(trace folder, loaded trace, exported document) of two experiments, one per backend."""
    root = tmp_path_factory.mktemp("chrome")
    images = root / "images"
    write_jpegs(images, N_IMAGES, name=lambda i: f"{'a' if i % 2 else 'b'}/{i:02d}.jpg")
    dataset = augment.ImageFolder(images)
    directory = root / "trace"
    with hang_guard(60):
        for backend in BACKENDS:
            tracer = augment.Tracer(directory, experiment=f"exp_{backend}", cpu_interval_s=0.02)
            with augment.Loader(
                dataset,
                SlowCrop(),
                batch_size=BATCH,
                backend=backend,
                workers=2,
                seed=0,
                tracer=tracer,
            ) as loader:
                for _ in range(2):
                    for _batch in loader:
                        time.sleep(0.02)
            tracer.close()
    out = to_chrome(directory, root / "trace.json")
    return directory, load(directory), json.loads(out.read_text())


def slices(doc: dict) -> list[dict]:
    return [e for e in doc["traceEvents"] if e["ph"] == "X"]


def meta(doc: dict, name: str) -> list[dict]:
    return [e for e in doc["traceEvents"] if e["ph"] == "M" and e["name"] == name]


def experiment_pids(doc: dict) -> dict[str, int]:
    return {
        e["args"]["name"].split(" (")[0]: e["pid"]
        for e in meta(doc, "process_name")
        if e["args"]["name"].startswith("exp_")
    }


def end(e: dict) -> int:
    return e["ts"] + e["dur"]


def assert_nested_or_disjoint(events: list[dict]) -> None:
    """Within every (pid, tid), two slices are disjoint (touching allowed) or one contains
    the other."""
    lanes = defaultdict(list)
    for e in events:
        lanes[(e["pid"], e["tid"])].append(e)
    for lane, items in lanes.items():
        for a, b in combinations(items, 2):
            disjoint = end(a) <= b["ts"] or end(b) <= a["ts"]
            a_in_b = b["ts"] <= a["ts"] and end(a) <= end(b)
            b_in_a = a["ts"] <= b["ts"] and end(b) <= end(a)
            assert disjoint or a_in_b or b_in_a, f"{lane}: {a} and {b} partially overlap"


# --------------------------------------------------------------------------- a real trace


@pytest.mark.slow
def test_every_span_is_a_slice_in_integer_microseconds(real):
    _, trace, doc = real
    xs = slices(doc)
    assert len(xs) == len(trace.spans) > 0
    for e in xs:
        assert type(e["ts"]) is int and type(e["dur"]) is int, e
        assert e["ts"] >= 0 and e["dur"] >= 0, e
    # microseconds, not nanoseconds: the slices span about the run's length
    total_ns = max(s["end_ns"] for s in trace.spans) - min(s["start_ns"] for s in trace.spans)
    assert abs(max(end(e) for e in xs) - min(e["ts"] for e in xs) - total_ns / 1000) <= 1


@pytest.mark.slow
def test_slices_of_a_lane_nest_or_are_disjoint(real):
    assert_nested_or_disjoint(slices(real[2]))


@pytest.mark.slow
def test_spans_that_touch_or_nest_in_nanoseconds_still_do(real):
    """Worker stages follow each other exactly; the loop's transfer ends with its wait."""
    _, trace, doc = real
    pids = experiment_pids(doc)
    by_key = {(e["pid"], e["name"], e["args"]["batch"], e["args"]["epoch"]): e for e in slices(doc)}
    lanes = defaultdict(list)
    for s in trace.spans:
        lanes[(s["experiment"], s["host"], s["pid"], s["worker"])].append(s)
    touching = nested = 0
    for spans in lanes.values():
        for a, b in combinations(spans, 2):
            ea, eb = (
                by_key[(pids[s["experiment"]], s["stage"], s["batch"], s["epoch"])] for s in (a, b)
            )
            assert ea["tid"] == eb["tid"]
            if a["end_ns"] == b["start_ns"]:
                touching += 1
                assert end(ea) == eb["ts"], (a, b, ea, eb)
            if b["end_ns"] == a["start_ns"]:
                touching += 1
                assert end(eb) == ea["ts"], (a, b, ea, eb)
            if a["start_ns"] <= b["start_ns"] and b["end_ns"] <= a["end_ns"]:
                nested += 1
                assert ea["ts"] <= eb["ts"] and end(eb) <= end(ea), (a, b, ea, eb)
    assert touching > 0 and nested > 0, (touching, nested)


@pytest.mark.slow
def test_the_loop_is_the_main_thread_and_workers_follow_in_order(real):
    _, trace, doc = real
    pids = experiment_pids(doc)
    assert sorted(pids) == [f"exp_{b}" for b in sorted(BACKENDS)]
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in meta(doc, "thread_name")}
    sort_index = {
        (e["pid"], e["tid"]): e["args"]["sort_index"] for e in meta(doc, "thread_sort_index")
    }
    assert len(set(tid for _, tid in names)) == len(names), "tids are unique across the file"
    for experiment, pid in pids.items():
        lanes = {tid: name for (p, tid), name in names.items() if p == pid}
        loop = [tid for tid, name in lanes.items() if name.startswith("training loop")]
        assert loop == [pid], lanes
        workers = {
            s["worker"]
            for s in trace.spans
            if s["experiment"] == experiment and s["worker"] != CONSUMER_LANE
        }
        assert workers == {0, 1}, "both workers made a batch"
        worker_of = {
            tid: int(re.search(r" worker (\d+) ", name).group(1))
            for tid, name in lanes.items()
            if tid != pid
        }
        by_tid = [worker_of[tid] for tid in sorted(worker_of)]
        assert by_tid == sorted(by_tid) == sorted(workers), lanes
        assert all(tid > pid for tid in worker_of)
        by_sort_index = [lanes[tid] for tid in sorted(lanes, key=lambda t: sort_index[(pid, t)])]
        assert by_sort_index == [lanes[pid]] + [lanes[tid] for tid in sorted(worker_of)]


@pytest.mark.slow
def test_every_lane_and_process_is_named(real):
    doc = real[2]
    lanes = {(e["pid"], e["tid"]) for e in slices(doc)}
    named = {(e["pid"], e["tid"]) for e in meta(doc, "thread_name") if e["args"]["name"]}
    assert lanes == named
    pids = {e["pid"] for e in doc["traceEvents"]}
    processes = {e["pid"] for e in meta(doc, "process_name") if e["args"]["name"]}
    assert pids == processes
    assert len(meta(doc, "process_name")) == len(processes), "one name per process"


@pytest.mark.slow
def test_cpu_counters_name_the_cpu_and_the_host_and_give_one_series_per_core(real):
    _, trace, doc = real
    host = socket.gethostname()
    counters = [e for e in doc["traceEvents"] if e["ph"] == "C"]
    assert len(counters) == len(trace.cpu) > 0
    cores = psutil.cpu_count()
    process = {e["pid"]: e["args"]["name"] for e in meta(doc, "process_name")}
    for e in counters:
        assert "CPU" in e["name"] and host in e["name"], e["name"]
        assert not e["name"].startswith("cpu "), "not the bare 'cpu <host>' of old"
        assert type(e["ts"]) is int
        assert list(e["args"]) == [f"core {i:0{len(str(cores - 1))}d}" for i in range(cores)]
        assert all(0 <= v <= 100 for v in e["args"].values())
        assert "CPU" in process[e["pid"]] and host in process[e["pid"]]
        assert e["pid"] not in experiment_pids(doc).values()


# --------------------------------------------------------------------------- hand-made spans

BASE = 1_700_000_000_123_456_789  # the origin: not a whole microsecond


def span(
    experiment="synthetic",
    worker=0,
    pid=100,
    stage="decode",
    start_us=0.0,
    end_us=0.0,
    batch=0,
    backend="process",
):
    return {
        "experiment": experiment,
        "backend": backend,
        "host": "node-a",
        "pid": pid,
        "worker": worker,
        "batch": batch,
        "epoch": 0,
        "stage": stage,
        "images": 4,
        "start_ns": BASE + round(start_us * 1000),
        "end_ns": BASE + round(end_us * 1000),
        "cpu_ns": 0,
    }


def export(tmp_path: Path, records: list[dict]) -> dict:
    folder = tmp_path / "trace"
    folder.mkdir()
    (folder / "synthetic.100.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return json.loads(to_chrome(folder, tmp_path / "trace.json").read_text())


def test_spans_touching_at_fractional_microseconds_touch_exactly(tmp_path):
    records = [
        span(stage="wait", worker=CONSUMER_LANE, start_us=0.0, end_us=5000.0),  # the origin
        # the brief's pair: float ts + dur landed a hair past the next ts
        span(stage="read", start_us=1000.4, end_us=2000.6),
        span(stage="decode", start_us=2000.6, end_us=3000.2),
        # rounding ts and dur apart would overlap these by a microsecond (1001 + 1000 > 2000)
        span(stage="augment", start_us=3000.6, end_us=4000.4, batch=1),
        span(stage="collate", start_us=4000.4, end_us=4500.5, batch=1),
        # exactly nested in "read", sharing both ends with it or a half microsecond
        span(stage="load", start_us=1000.4, end_us=1500.5),
        span(stage="transfer", start_us=1500.5, end_us=2000.6),
        # a clock that went back: no negative duration
        span(stage="step", start_us=4800.0, end_us=4700.0, batch=1),
    ]
    doc = export(tmp_path, records)
    xs = {(e["name"], e["args"]["batch"]): e for e in slices(doc)}
    assert len(xs) == len(records)
    for e in xs.values():
        assert type(e["ts"]) is int and type(e["dur"]) is int and e["dur"] >= 0
    assert (xs["read", 0]["ts"], xs["read", 0]["dur"]) == (1000, 1001)
    assert (xs["decode", 0]["ts"], xs["decode", 0]["dur"]) == (2001, 999)
    assert end(xs["read", 0]) == xs["decode", 0]["ts"]
    assert end(xs["augment", 1]) == xs["collate", 1]["ts"] == 4000
    assert xs["load", 0]["ts"] == xs["read", 0]["ts"]
    assert end(xs["load", 0]) == xs["transfer", 0]["ts"] == 1501
    assert end(xs["transfer", 0]) == end(xs["read", 0])
    assert (xs["step", 1]["ts"], xs["step", 1]["dur"]) == (4800, 0)
    assert_nested_or_disjoint(list(xs.values()))
    # a viewer sees the read slice's children inside it, the parent first
    lane = [e["name"] for e in slices(doc) if e["tid"] == xs["read", 0]["tid"]]
    assert lane.index("read") < lane.index("load") < lane.index("transfer")


def test_a_partial_overlap_in_the_records_is_cut_where_the_next_slice_starts(tmp_path):
    doc = export(
        tmp_path,
        [
            span(stage="collate", start_us=0, end_us=1000, batch=0),
            span(stage="read", start_us=990, end_us=2000, batch=1),
        ],
    )
    xs = {e["name"]: e for e in slices(doc)}
    assert (xs["collate"]["ts"], xs["collate"]["dur"]) == (0, 990)
    assert xs["collate"]["args"]["cut_us"] == 10
    assert (xs["read"]["ts"], xs["read"]["dur"]) == (990, 1010)
    assert "cut_us" not in xs["read"]["args"]


def test_workers_recreated_in_new_processes_get_lanes_of_their_own(tmp_path):
    """A DataLoader without persistent workers: worker 0 in pid 101, then in pid 103."""
    records = [
        span(worker=1, pid=102, start_us=10, end_us=20),
        span(worker=0, pid=103, start_us=30, end_us=40, batch=2),
        span(worker=CONSUMER_LANE, pid=100, stage="wait", start_us=0, end_us=50),
        span(worker=0, pid=101, start_us=0, end_us=10, batch=1),
        # a second experiment, without a training loop lane: no worker is its main thread
        span(experiment="other", worker=0, pid=200, start_us=0, end_us=10),
        span(experiment="other", worker=1, pid=201, start_us=0, end_us=10),
    ]
    doc = export(tmp_path, records)
    pids = {e["args"]["name"].split(" (")[0]: e["pid"] for e in meta(doc, "process_name")}
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in meta(doc, "thread_name")}
    assert len({tid for _, tid in names}) == len(names) == 6
    mine = [names[k] for k in sorted(k for k in names if k[0] == pids["synthetic"])]
    assert mine == [
        "training loop (node-a:100)",
        "process worker 0 (node-a:101)",
        "process worker 0 (node-a:103)",
        "process worker 1 (node-a:102)",
    ]
    assert (pids["synthetic"], pids["synthetic"]) in names
    assert (pids["other"], pids["other"]) not in names
    other = [names[k] for k in sorted(k for k in names if k[0] == pids["other"])]
    assert other == ["process worker 0 (node-a:200)", "process worker 1 (node-a:201)"]
    assert not [e for e in doc["traceEvents"] if e["ph"] == "C"]
