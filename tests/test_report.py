"""The report from crafted traces: each verdict, the summary's figures, and the report files.

No loader runs here: each test writes a trace folder by hand (span records, a meta line and
CPU samples, as the Tracer and its sampler write them) laid out so that the expected figures
can be computed on paper, then reads it back with ``augment.trace.load``.
"""

from __future__ import annotations

import json

import psutil
import pytest
from crafted import MS, Plan, by_name, report, write_trace
from PIL import Image
from support import EXPERIMENT_KEYS

from augment.profiler.report import write_report
from augment.profiler.report.recommend import label


def assert_sentence(advice: str) -> None:
    assert isinstance(advice, str) and len(advice) > 30, advice
    assert advice[0].isalnum(), advice  # may open with a stage name: "decode takes..."
    assert advice.rstrip().endswith("."), advice
    assert "{" not in advice and "}" not in advice, advice  # no unformatted placeholder


def assert_agrees(e: dict) -> None:
    """The advice names the recommendation's change, and no other."""
    rec = e["recommendation"]
    want = label(rec["backend"], rec["workers"])
    if want == label(e["backend"], e["workers"]):
        assert f"keep {want}" in e["advice"] and "add workers" not in e["advice"], e["advice"]
    else:
        assert f"use {want}" in e["advice"], e["advice"]


# --------------------------------------------------------------------------- verdicts


def test_training_step(tmp_path):
    plan = Plan("slow_step", first_wait=1, wait=1, step=50)
    e = report(write_trace(tmp_path, [plan], [50.0, 50.0]))["experiments"][0]
    assert e["bottleneck"] == "training step"
    assert e["stall_fraction"] < 0.10
    assert_sentence(e["advice"])
    # two workers: one would do, as the recommendation says
    assert e["recommendation"]["workers"] == 1
    assert "use process x1: about as fast" in e["advice"] and "fewer workers" in e["advice"]


def test_data_decode_with_idle_cores(tmp_path):
    plan = Plan(
        "decode_bound",
        stages={"read": (1, 1), "decode": (30, 30), "augment": (4, 4), "collate": (1, 1)},
    )
    e = report(write_trace(tmp_path, [plan], [30.0, 35.0]))["experiments"][0]
    assert e["bottleneck"] == "data: decode"
    assert_sentence(e["advice"])
    assert "68% idle" in e["advice"]
    assert_agrees(e)


def test_advice_for_a_serial_loader_names_a_parallel_backend(tmp_path):
    """A serial loader runs every batch in the training loop whatever its ``workers``:
    "add workers" changes nothing there; the remedy is a backend with workers."""
    plan = Plan(
        "serial_decode",
        backend="serial",
        workers=0,
        stages={"read": (1, 1), "decode": (30, 30), "augment": (4, 4), "collate": (1, 1)},
    )
    e = report(write_trace(tmp_path, [plan], [50.0, 10.0]))["experiments"][0]
    assert e["workers"] == 0
    assert e["bottleneck"] == "data: decode"
    assert_sentence(e["advice"])
    assert "thread" in e["advice"] or "process" in e["advice"], e["advice"]


def test_data_augment_with_busy_cores(tmp_path):
    plan = Plan(
        "augment_bound",
        stages={"read": (1, 1), "decode": (5, 5), "augment": (30, 30), "collate": (1, 1)},
    )
    summary = report(write_trace(tmp_path, [plan], [95.0, 96.0, 94.0, 95.0]))
    e = summary["experiments"][0]
    assert summary["machine"]["cores"] == 4  # the sampled machine, not this one
    assert e["bottleneck"] == "data: augment"
    assert_sentence(e["advice"])
    assert "cheaper transform" in e["advice"]


def oversubscribed_plans(offset_ms: float) -> list[Plan]:
    return [Plan(f"exp{k}", start_ms=k * offset_ms, pid=1000 + 10 * k) for k in range(3)]


def test_cpu_oversubscribed(tmp_path):
    plans = oversubscribed_plans(0)  # three experiments at once, 2 workers each
    summary = report(write_trace(tmp_path, plans, [99.0, 100.0]))
    assert summary["machine"] == {"cores": 2, "concurrent_workers": 6}
    for e in summary["experiments"]:
        assert e["concurrent_workers"] == 6
        assert e["bottleneck"] == "cpu oversubscribed", e
        assert_sentence(e["advice"])
        assert "fewer" in e["advice"]
        assert e["cpu_utilization"] == pytest.approx(0.995, abs=1e-3)


def test_workers_count_for_the_time_they_ran_alongside(tmp_path):
    """Concurrency is the time experiments overlapped: one that ran beside another for half
    of its steady state counts half of the other's workers."""
    first = Plan("first", pid=1)
    steady = first.end - (first.t0 + int(first.first_wait * MS))  # what the rates describe
    second = Plan("second", pid=2, start_ms=steady / 2 / MS)
    summary = report(write_trace(tmp_path, [first, second], [60.0, 60.0]))
    for e in summary["experiments"]:
        assert e["concurrent_workers"] == pytest.approx(2 + 2 * 0.5, abs=0.02), e["name"]


def test_loaders_that_take_turns_are_not_counted_as_running_at_once(tmp_path):
    """A script's training and validation loaders alternate (train epoch, validation, train
    epoch...): each spans most of the run, but they never load at the same time, so each is
    judged alone: its own workers busy, no experiment shrunk for the other's sake."""
    plans, t = [], 0.0
    for epoch in range(3):
        train = Plan("train", start_ms=t, pid=1000 + epoch, epoch=epoch, batches=12)
        t = (train.end - Plan("x").t0) / MS + 5
        val = Plan("val", start_ms=t, pid=2000 + epoch, epoch=epoch, batches=6, step=2.0)
        t = (val.end - Plan("x").t0) / MS + 5
        plans += [train, val]
    summary = report(write_trace(tmp_path, plans, [60.0, 60.0]))
    exps = by_name(summary)
    # the intervals do overlap: validation runs inside the training loader's first-to-last
    assert exps["train"]["start_ns"] < exps["val"]["start_ns"] < exps["train"]["end_ns"]
    assert summary["machine"]["concurrent_workers"] == pytest.approx(2, abs=0.1)
    for e in exps.values():
        assert e["concurrent_workers"] == pytest.approx(2, abs=0.1), e["name"]
        assert e["bottleneck"] != "cpu oversubscribed"
        assert "experiments at once" not in e["recommendation"]["why"], e["recommendation"]


def test_loaders_at_once_in_one_script_are_counted_together(tmp_path):
    """The same two loaders run side by side (two experiments at once): 4 workers busy."""
    plans = [Plan("train", pid=1000, batches=12), Plan("val", pid=2000, batches=12)]
    summary = report(write_trace(tmp_path, plans, [99.0, 99.0]))
    for e in summary["experiments"]:
        assert e["concurrent_workers"] == pytest.approx(4, abs=0.1), e["name"]


def test_same_experiments_one_after_another_are_not_oversubscribed(tmp_path):
    plans = oversubscribed_plans(2000)  # each ends before the next starts
    assert all(a.end < b.start for a, b in zip(plans, plans[1:]))
    summary = report(write_trace(tmp_path, plans, [99.0, 100.0]))
    assert summary["machine"]["concurrent_workers"] == 2
    for e in summary["experiments"]:
        assert e["concurrent_workers"] == 2
        assert e["bottleneck"] == "data: decode", e
        assert "pre-decoded" in e["advice"]


@pytest.mark.parametrize(
    "plans, cores",
    [
        ([Plan("step", first_wait=1, wait=1, step=50)], [50.0, 50.0]),
        ([Plan("idle", stages={"read": (1, 1), "decode": (30, 30), "augment": (4, 4),
                               "collate": (1, 1)})], [30.0, 35.0]),
        ([Plan("busy", stages={"read": (1, 1), "decode": (5, 5), "augment": (30, 30),
                               "collate": (1, 1)})], [95.0, 96.0, 94.0, 95.0]),
        ([Plan("serial", backend="serial", workers=0)], [50.0, 10.0]),
        ([Plan(f"exp{k}", pid=1000 + 10 * k) for k in range(3)], [99.0, 100.0]),
        ([Plan("threads", backend="thread", workers=4, stages={"read": (2, 0.6),
          "decode": (20, 6), "augment": (10, 3), "collate": (2, 0.6)})], [40.0, 45.0]),
        ([Plan("io", backend="thread", workers=2, stages={"read": (30, 1), "decode": (2, 2),
          "augment": (2, 2), "collate": (1, 1)})], [20.0, 20.0]),
    ],
)  # fmt: skip
def test_the_advice_never_disagrees_with_the_recommendation(tmp_path, plans, cores):
    for e in report(write_trace(tmp_path, plans, cores))["experiments"]:
        assert_sentence(e["advice"])
        assert_agrees(e)


def test_threads_asleep_off_a_core_are_gil_bound_even_on_busy_cores(tmp_path):
    """A third of a core per wall second and no wait for a core (the kernel's run-queue
    delay): the threads slept, waiting for the GIL, however busy other programs kept the
    cores (a niced program soaks up whatever we leave)."""
    stages = {"read": (2, 2, 0), "decode": (30, 10, 0), "augment": (30, 10, 0),
              "collate": (3, 1, 0)}  # fmt: skip
    plan = Plan("threads", backend="thread", workers=3, stages=stages)
    for load in ([100.0, 100.0], [30.0, 30.0]):
        e = report(write_trace(tmp_path / str(load[0]), [plan], load))["experiments"][0]
        assert e["bottleneck"] == "gil contention", e["advice"]
        assert "slept 67%" in e["advice"]
        assert e["model"]["gil_share_is"] == "measured"
    # with the cores to itself, processes do better than threads that share one GIL
    assert e["recommendation"]["backend"] in ("process", "torch")


def test_threads_waiting_for_a_core_are_not_called_gil_bound(tmp_path):
    """The same third of a core per wall second, but all of the rest waiting on a run queue:
    other programs took the cores, and the GIL is not to blame."""
    stages = {"read": (2, 2, 0), "decode": (30, 10, 20), "augment": (30, 10, 20),
              "collate": (3, 1, 2)}  # fmt: skip
    plan = Plan("threads", backend="thread", workers=3, stages=stages)
    e = report(write_trace(tmp_path, [plan], [100.0, 100.0]))["experiments"][0]
    assert e["bottleneck"] != "gil contention", e["advice"]
    assert e["model"]["gil_share_is"] != "measured"


# a third of a CPU-second per wall-second in every worker stage
THREAD_STARVED = {"read": (2, 0.6), "decode": (20, 6), "augment": (10, 3), "collate": (2, 0.6)}


def test_gil_contention(tmp_path):
    plan = Plan("threads", backend="thread", stages=THREAD_STARVED)
    e = report(write_trace(tmp_path, [plan], [40.0, 42.0]))["experiments"][0]
    assert e["bottleneck"] == "gil contention"
    assert_sentence(e["advice"])
    assert "process" in e["advice"]


def test_the_same_cpu_share_on_processes_is_not_gil_contention(tmp_path):
    plan = Plan("processes", backend="process", stages=THREAD_STARVED)
    e = report(write_trace(tmp_path, [plan], [40.0, 42.0]))["experiments"][0]
    assert e["bottleneck"] != "gil contention"
    assert e["bottleneck"].startswith("data: ")


def test_transfer(tmp_path):
    plan = Plan(
        "big_batches",
        stages={"read": (1, 1), "decode": (3, 3), "augment": (3, 3), "collate": (1, 1)},
        transfer=(30, 30),
    )
    e = report(write_trace(tmp_path, [plan], [60.0, 60.0]))["experiments"][0]
    assert e["bottleneck"] == "transfer"
    assert_sentence(e["advice"])
    assert "thread" in e["advice"]


def test_data_read_waiting_on_io(tmp_path):
    plan = Plan(
        "over_http",
        stages={"read": (30, 1), "decode": (3, 3), "augment": (2, 2), "collate": (1, 1)},
    )
    e = report(write_trace(tmp_path, [plan], [15.0, 20.0]))["experiments"][0]
    assert e["bottleneck"] == "data: read"
    assert_sentence(e["advice"])
    assert "I/O" in e["advice"] and "thread" in e["advice"]


# --------------------------------------------------------------------------- figures


def test_summary_figures_match_the_crafted_trace(tmp_path):
    # a slow start (workers starting, 2 s) that the rates must leave out
    plan = Plan("figures", batches=12, batch_size=8, first_wait=2000, wait=30, step=20)
    summary = report(write_trace(tmp_path, [plan], [50.0, 70.0]))
    e = summary["experiments"][0]
    assert set(e) >= EXPERIMENT_KEYS
    assert e["name"] == "figures" and e["backend"] == "process"
    assert e["workers"] == 2 and e["batch_size"] == 8
    assert e["images"] == 12 * 8
    assert e["wall_s"] == pytest.approx((plan.end - plan.start) / 1e9, abs=1e-4)
    assert e["startup_s"] == pytest.approx(2.0, abs=1e-4)
    # steady state: 11 batches after the first one arrived, over 20 + 11 x 50 ms
    assert plan.steady_s == pytest.approx(0.57)
    assert e["images_per_s"] == pytest.approx(11 * 8 / 0.57, abs=0.01)
    assert e["stall_fraction"] == pytest.approx(11 * 0.030 / 0.57, abs=1e-4)
    assert e["stage_cpu_s"]["decode"] == pytest.approx(12 * 0.020, abs=1e-4)
    assert e["stage_cpu_s"]["augment"] == pytest.approx(12 * 0.010, abs=1e-4)
    assert e["stage_cpu_s"]["read"] == pytest.approx(12 * 0.002, abs=1e-4)
    assert e["stage_cpu_s"]["transfer"] == pytest.approx(12 * 0.001, abs=1e-4)
    assert e["stage_wall_s"]["step"] == pytest.approx(12 * 0.020, abs=1e-4)
    assert e["stage_wall_s"]["wait"] == pytest.approx(2.0 + 11 * 0.030, abs=1e-4)
    # the mean of both cores over the samples inside the run; the idle one before is not
    assert e["cpu_utilization"] == pytest.approx(0.60, abs=1e-4)
    assert e["concurrent_workers"] == 2
    assert e["start_ns"] == plan.start and e["end_ns"] == plan.end
    assert summary["machine"] == {"cores": 2, "concurrent_workers": 2}


def test_rates_of_a_fast_start_match_too(tmp_path):
    plan = Plan("even", batches=5, batch_size=10, first_wait=40, wait=40, step=10)
    e = report(write_trace(tmp_path, [plan], [50.0, 50.0]))["experiments"][0]
    assert e["images"] == 50
    assert e["images_per_s"] == pytest.approx(plan.images_per_s, abs=0.01)
    assert e["images_per_s"] == pytest.approx(40 / 0.21, abs=0.01)
    assert e["stall_fraction"] == pytest.approx(plan.stall, abs=1e-4)


def test_experiments_are_listed_in_start_order(tmp_path):
    plans = [
        Plan("late", start_ms=500, pid=1),
        Plan("early", start_ms=0, pid=2),
        Plan("middle", start_ms=250, pid=3),
    ]
    summary = report(write_trace(tmp_path, plans, [50.0, 50.0]))
    assert [e["name"] for e in summary["experiments"]] == ["early", "middle", "late"]


def test_a_serial_experiment_counts_as_one_busy_worker(tmp_path):
    plans = [Plan("serial", backend="serial", pid=1), Plan("procs", pid=2)]
    summary = report(write_trace(tmp_path, plans, [50.0, 50.0]))
    exps = by_name(summary)
    assert exps["serial"]["workers"] == 0
    assert exps["serial"]["concurrent_workers"] == 3
    assert summary["machine"]["concurrent_workers"] == 3


def test_without_cpu_samples_the_cores_are_this_machines(tmp_path):
    summary = report(write_trace(tmp_path, [Plan("nocpu")], None))
    assert summary["machine"]["cores"] == psutil.cpu_count()
    assert summary["experiments"][0]["cpu_utilization"] == 0.0


# --------------------------------------------------------------------------- report files


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


HEADER = (
    "| experiment | backend | workers | measured | images/s | stall | CPU | bottleneck "
    "| recommended |"
)


def test_write_report_writes_every_file(tmp_path):
    traces = write_trace(tmp_path / "traces", oversubscribed_plans(0), [99.0, 100.0])
    out = tmp_path / "report"
    summary = write_report(traces, out)
    for name in ("summary.json", "summary.md", "trace.json", "timeline.png", "throughput.png"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "summary.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert set(saved) == {"experiments", "machine"}
    assert set(saved["machine"]) == {"cores", "concurrent_workers"}
    assert [e["name"] for e in saved["experiments"]] == ["exp0", "exp1", "exp2"]
    for e in saved["experiments"]:
        assert set(e) >= EXPERIMENT_KEYS
        assert e["bottleneck"] == "cpu oversubscribed"
    md = (out / "summary.md").read_text()
    assert HEADER in md
    for e in saved["experiments"]:
        assert f"| {e['name']} | process | 2 |" in md
        assert e["advice"] in md
    assert "2 cores" in md
    chrome = json.loads((out / "trace.json").read_text())
    spans = [ev for ev in chrome["traceEvents"] if ev["ph"] == "X"]
    assert len(spans) == 3 * 10 * 7
    for name in ("timeline.png", "throughput.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE, name
        with Image.open(out / name) as im:
            im.verify()
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.width > 500 and im.height > 200, (name, im.size)


def test_write_report_without_cpu_samples(tmp_path):
    traces = write_trace(tmp_path / "traces", [Plan("nocpu")], None)
    write_report(traces, tmp_path / "report")
    with Image.open(tmp_path / "report" / "timeline.png") as im:
        assert im.width > 500


def test_write_report_of_a_folder_without_spans_is_a_value_error(tmp_path):
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "cpu-samples.h.1.jsonl").write_text('{"t_ns": 1, "cpu": [1.0]}\n')
    with pytest.raises(ValueError, match="no spans"):
        write_report(tmp_path / "traces", tmp_path / "report")


def test_the_cores_of_a_big_machine_are_drawn_as_a_heat_map(tmp_path):
    """64 cores: one row per core in colour (magma), not 64 lines and a 64-entry legend."""
    import matplotlib
    import numpy as np

    plans = [Plan(f"exp{k}", workers=3, pid=1000 + 10 * k, start_ms=300 * k) for k in range(3)]
    write_trace(tmp_path / "traces", plans, [100.0] * 32 + [0.0] * 32)
    write_report(tmp_path / "traces", tmp_path)
    pixels = np.asarray(Image.open(tmp_path / "timeline.png").convert("RGB"), dtype=int)
    cpu_panel = pixels[int(0.75 * len(pixels)) :]  # the lower quarter: the CPU panel
    hot = (np.array(matplotlib.colormaps["magma"](1.0)[:3]) * 255).astype(int)
    cold = (np.array(matplotlib.colormaps["magma"](0.0)[:3]) * 255).astype(int)
    for colour in (hot, cold):  # busy cores and idle ones, each a band of its colour
        near = np.abs(cpu_panel - colour).sum(axis=2) < 30
        assert near.mean() > 0.05, colour


def test_a_niced_program_is_no_load_on_the_run(tmp_path):
    """Other programs' load takes cores from the run; a niced one yields them (its share of
    each sample is told apart), so the run is judged as if the cores were its own."""
    stages = {"read": (1, 1), "decode": (30, 30), "augment": (4, 4), "collate": (1, 1)}
    plan = Plan("decode_bound", stages=stages)
    normal = report(write_trace(tmp_path / "normal", [plan], [100.0, 100.0]))["experiments"][0]
    niced_dir = write_trace(tmp_path / "niced", [plan], [100.0, 100.0])
    samples = next(niced_dir.glob("cpu-samples.*.jsonl"))
    lines = [json.loads(line) for line in samples.read_text().splitlines()]
    for s in lines:  # the same load, but a spinner at nice 19 is what made it 100%
        s["nice"] = [100.0 - v for v in (30.0, 30.0)] if s["cpu"][0] else [0.0, 0.0]
    samples.write_text("".join(json.dumps(s) + "\n" for s in lines))
    niced = report(niced_dir)["experiments"][0]
    assert normal["other_load_cores"] > 0.8
    assert niced["niced_utilization"] == pytest.approx(0.7, abs=0.01)
    assert niced["other_load_cores"] < 0.3


def test_workers_queued_for_a_core_are_oversubscribed_and_io_waiters_are_not(tmp_path):
    """Waiting on a run queue for a core is oversubscription, however few workers this run
    has (others took the cores); four threads that wait on the network on busy cores are
    not: they are a read waiting on I/O."""
    queued = {"read": (2, 1, 1), "decode": (30, 12, 16), "augment": (10, 4, 6),
              "collate": (2, 1, 1)}  # fmt: skip
    e = report(write_trace(tmp_path / "q", [Plan("queued", stages=queued)], [100.0, 100.0]))
    e = e["experiments"][0]
    assert e["bottleneck"] == "cpu oversubscribed", e["advice"]
    assert "waited for a core 55%" in e["advice"]  # 24 of 44 ms
    io = {"read": (300, 2, 1), "decode": (3, 3, 0), "augment": (2, 2, 0), "collate": (1, 1, 0)}
    plan = Plan("http", backend="thread", workers=4, stages=io)
    e = report(write_trace(tmp_path / "io", [plan], [100.0, 100.0]))["experiments"][0]
    assert e["bottleneck"] == "data: read", e["advice"]


def test_a_node_lost_before_its_workers_made_a_batch_is_in_the_nodes_table():
    from augment.profiler.report.summary import by_node

    def span(stage, worker, batch, node=None, lost_on=None, start=0, end=10):
        s = {"stage": stage, "worker": worker, "batch": batch, "epoch": 0, "pid": 1,
             "start_ns": start * MS, "end_ns": end * MS}  # fmt: skip
        if node:
            s["node"] = node
        if lost_on:
            s["lost_on"] = lost_on
        return s

    spans = [
        span("decode", 0, 0, node="aaaa"),
        span("wait", -1, 0),
        span("decode", 0, 1, node="aaaa", start=10, end=20),
        span("wait", -1, 1, lost_on=["bbbb"], start=10, end=40),  # its node went with it
    ]
    nodes = {n["node"]: n for n in by_node(spans)}
    assert set(nodes) == {"aaaa", "bbbb"}
    assert nodes["bbbb"]["lost_batches"] == 1 and nodes["bbbb"]["workers"] == 0
    assert nodes["bbbb"]["wait_s"] == pytest.approx(0.03)  # the wait is charged to the loss
    assert nodes["aaaa"]["batches"] == 2
