"""Advice that can be checked: experiments at once start their measured part together, a run
too short to judge says so, and ``augment-profile tune`` runs the recommendation and puts
predicted against measured (real runs on data/sample, real worker processes). ``--sweep``
runs each backend at a few worker counts, each a run of its own (seconds of start-up
apiece): it is run by the benchmark that fills docs/benchmarks.md's table, and here its
table is checked on a result of known figures."""

from __future__ import annotations

import json
import subprocess

from support import PROFILE_SCRIPT, SAMPLE, run_profiler

from augment import Loader
from augment.profiler.report import summarize
from augment.profiler.tune import markdown
from augment.sources.data import ImageFolder
from augment.trace import Tracer, load

SCRIPT = PROFILE_SCRIPT
DATA = SAMPLE


def profiler(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    done = run_profiler(*args, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_experiments_at_once_overlap_even_when_short(tmp_path):
    """A thread loader is ready at once, a process loader after its workers import torch
    (seconds): without the barrier, 5 batches on threads end before the processes begin."""
    out = tmp_path / "out"
    profiler(
        "--backends", "thread,process", "--workers", "1", "--batches", "5",
        "--batch-size", "8", "--concurrent", "--data", DATA, "--out", out, "--quiet",
    )  # fmt: skip
    trace = load(out / "traces")
    marks = {m["experiment"]: m["measured_from_ns"] for m in trace.marks}
    assert set(marks) == {"thread_1w", "process_1w"}
    assert abs(marks["thread_1w"] - marks["process_1w"]) < 0.5e9  # released together
    # whichever loader warmed up first waited for the other (usually the thread one; on a busy
    # machine the process one can be ready first)
    ready = {m["experiment"]: m["waited_from_ns"] for m in trace.marks}
    waited = {m["experiment"]: m["measured_from_ns"] - m["waited_from_ns"] for m in trace.marks}
    first, last = sorted(ready, key=ready.get)
    assert all(w >= 0 for w in waited.values()) and waited[first] >= waited[last], waited
    exps = {e["name"]: e for e in json.loads((out / "summary.json").read_text())["experiments"]}
    for e in exps.values():
        assert e["images"] == 5 * 8  # the warm-up batches are not counted
        assert e["concurrent_workers"] > 1.0, e  # the other's worker counts for a while
    delivered = {}
    for name in marks:
        waits = [s for s in trace.spans if s["experiment"] == name and s["stage"] == "wait"]
        measured = sorted(s["end_ns"] for s in waits if s["end_ns"] > marks[name])
        assert len(measured) == 5
        delivered[name] = (measured[0], measured[-1])
    (a0, a1), (b0, b1) = delivered.values()
    assert max(a0, b0) < min(a1, b1), delivered  # each delivered while the other did


def test_a_run_shorter_than_a_cpu_sample_still_has_one_and_is_too_short(tmp_path):
    dataset = ImageFolder(DATA, DATA / "labels.csv")
    # a sample every 5 s: the run ends long before the first periodic one
    tracer = Tracer(tmp_path / "traces", experiment="blink", cpu_interval_s=5.0)
    with Loader(dataset, batch_size=2, backend="serial", tracer=tracer) as loader:
        next(iter(loader))
    tracer.close()
    trace = load(tmp_path / "traces")
    first = min(s["start_ns"] for s in trace.spans)
    last = max(s["end_ns"] for s in trace.spans)
    assert last - first < 5e9
    (sample,) = trace.cpu  # the one taken when the epoch ended
    assert sample["since_ns"] <= first and sample["t_ns"] >= last
    e = summarize(trace)["experiments"][0]
    assert e["bottleneck"] == "too short to judge"
    assert "1 batches in" in e["advice"] and "run at least" in e["advice"]
    assert e["recommendation"] is None


def test_tune_runs_the_recommendation(tmp_path):
    out = tmp_path / "tune"
    done = profiler(
        "tune", "--backends", "serial", "--step-ms", "20", "--seconds", "1",
        "--batch-size", "8", "--data", DATA, "--out", out, "--quiet",
    )  # fmt: skip
    result = json.loads((out / "tune.json").read_text())["flags"]
    (row,) = result["rows"]
    assert row["now"] == "serial"
    now = json.loads((out / "now" / "summary.json").read_text())["experiments"][0]
    assert row["now_measured"] == now["images_per_s"] > 0
    assert row["now_expected"] == now["expected_images_per_s"] > 0
    rec = now["recommendation"]
    # a serial loop sleeping 20 ms a batch: workers would make batches meanwhile
    assert rec["backend"] != "serial" and rec["workers"] >= 1
    assert row["recommended_expected"] == rec["expected_images_per_s"] > row["now_expected"]
    after = json.loads((out / "recommended" / "summary.json").read_text())["experiments"][0]
    assert (after["backend"], after["workers"]) == (rec["backend"], rec["workers"])
    assert row["recommended_measured"] == after["images_per_s"] > 0
    text = (out / "tune.md").read_text()
    assert "| experiment | now | expected | measured | recommended |" in text
    assert f"| serial | serial | {row['now_expected']:,.0f} |" in text
    assert "tune.md" in done.stdout
    assert "sweep" not in result
    for summary in (now, after):  # both sized by time, as the profiler sizes its runs
        assert summary["measured_s"] >= 0.7 and not summary["too_short"]


def test_tune_runs_a_run_too_short_to_judge_again_as_long_as_the_report_asks(tmp_path):
    out = tmp_path / "tune"
    done = profiler(
        "tune", "--backends", "serial", "--workers", "0", "--step-ms", "20", "--batches", "2",
        "--batch-size", "8", "--data", DATA, "--out", out, "--quiet",
    )  # fmt: skip
    first = json.loads((out / "now" / "summary.json").read_text())["experiments"][0]
    assert first["too_short"] and first["recommendation"] is None
    longer = first["batches_to_judge"]
    assert longer > 2 and f"run at least {longer} batches" in first["too_short"]
    assert f"running it again with {longer} batches per experiment" in done.stderr
    again = json.loads((out / "now-longer" / "summary.json").read_text())["experiments"][0]
    assert again["batches"] == longer and not again["too_short"]
    (row,) = json.loads((out / "tune.json").read_text())["flags"]["rows"]
    assert row["now_measured"] == again["images_per_s"]
    after = json.loads((out / "recommended" / "summary.json").read_text())["experiments"][0]
    assert after["batches"] == longer


def test_the_sweep_table_names_the_best_found_and_how_close_the_recommendation_came():
    result = {
        "rows": [{"experiment": "a", "now": "serial", "now_expected": 90.0,
                  "now_measured": 100.0, "recommended": "process x2",
                  "recommended_expected": 210.0, "recommended_measured": 180.0, "why": ""}],
        "sweep": [{"config": "serial", "images_per_s": {"a": 100.0}},
                  {"config": "thread x2", "images_per_s": {"a": 150.0}},
                  {"config": "process x2", "images_per_s": {"a": 200.0}}],
    }  # fmt: skip
    text = markdown("flags", result)
    assert "| a | serial | 90 | 100 | process x2 | 210 | 180 | 1.80x |" in text
    assert "| thread x2 | 150 |" in text
    assert "Best found: process x2, 200 img/s; the recommendation measured 180 img/s, 90%" in text
