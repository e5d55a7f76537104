"""The model behind the recommendation, on crafted span sets whose answers follow on paper
(``augment.profiler.report.model`` documents it): I/O bound, GIL bound, CPU bound, step bound and
oversubscribed runs, and the allocation across experiments that run at once."""

from __future__ import annotations

import pytest
from crafted import Plan, by_name, report, write_trace

from augment.profiler.report import model, recommend

B = 16  # Plan's batch size

CPU_HEAVY = {"read": (2, 2), "decode": (40, 40), "augment": (30, 30), "collate": (2, 2)}
HEAVY_CPU_MS = 74 / B  # per image, all of it on a core


def judge(tmp_path, plans, cores_load) -> dict:
    return by_name(report(write_trace(tmp_path, plans, cores_load)))


def test_an_io_bound_run_gets_as_many_threads_as_it_may(tmp_path):
    # per batch: 320 ms reading, 8 of them on the CPU; 34 ms computing
    stages = {"read": (320, 8), "decode": (16, 16), "augment": (16, 16), "collate": (2, 2)}
    plan = Plan("http", backend="thread", workers=1, stages=stages)
    e = judge(tmp_path, [plan], [10.0, 10.0])["http"]
    assert e["model"]["io_wait_per_image_ms"] == pytest.approx(312 / B, rel=1e-3)
    assert e["model"]["cpu_per_image_ms"] == pytest.approx(42 / B, rel=1e-3)
    per_image_s = (312 + 42) / B / 1e3
    assert e["expected_images_per_s"] == pytest.approx(1 / per_image_s, rel=0.02)
    rec = e["recommendation"]
    # waits overlap: 4 workers (2 x cores) make 4x as many, and threads are the cheapest
    assert (rec["backend"], rec["workers"]) == ("thread", 4)
    assert rec["expected_images_per_s"] == pytest.approx(4 / per_image_s, rel=0.02)
    assert "I/O" in rec["why"]


def test_a_gil_bound_thread_run_measures_the_gil_share_and_moves_to_processes(tmp_path):
    # compute stages get 2/3 of a core per wall second, with 2 threads and idle cores:
    # they hold the GIL 1 / (2 x 2/3) = 75% of their CPU time
    stages = {"read": (3, 3), "decode": (30, 20), "augment": (30, 20), "collate": (3, 2)}
    plan = Plan("threads", backend="thread", workers=2, stages=stages)
    e = judge(tmp_path, [plan], [40.0, 40.0])["threads"]
    assert e["model"]["gil_share"] == pytest.approx(0.75, abs=0.01)
    assert e["model"]["gil_share_is"] == "measured"
    cpu_s = 45 / B / 1e3
    assert e["expected_images_per_s"] == pytest.approx(1 / (0.75 * cpu_s), rel=0.02)
    rec = e["recommendation"]
    assert rec["backend"] in ("process", "torch")
    assert rec["workers"] == 2
    # two cores instead of one GIL: close to 2 / cpu, at least 1.3x the threads
    assert rec["expected_images_per_s"] == pytest.approx(2 / cpu_s, rel=0.05)
    assert rec["expected_images_per_s"] > 1.3 * e["expected_images_per_s"]
    assert "expect more than this" in rec["why"]  # costed at the contended threads' CPU


def test_a_cpu_bound_run_is_worth_no_more_workers_than_cores(tmp_path):
    plan = Plan("busy", backend="process", workers=2, stages=CPU_HEAVY)
    e = judge(tmp_path, [plan], [60.0, 60.0])["busy"]  # no load but the experiment's
    assert e["expected_images_per_s"] == pytest.approx(2 / (HEAVY_CPU_MS / 1e3), rel=0.03)
    rec = e["recommendation"]
    assert (rec["backend"], rec["workers"]) == ("process", 2)
    assert "already the best" in rec["why"]
    assert "2 cores" in rec["why"]
    expected, measured = rec["expected_images_per_s"], e["images_per_s"]
    assert recommend.headline(e) == (
        f"keep process x2: about {expected:,.0f} img/s expected, {measured:,.0f} measured"
    )


def test_a_step_bound_run_keeps_one_worker_and_the_same_rate(tmp_path):
    plan = Plan("slow_step", backend="process", workers=2, step=100.0, wait=1.0)
    e = judge(tmp_path, [plan], [20.0, 20.0])["slow_step"]
    assert e["bottleneck"] == "training step"
    step_s = (100 + 1) / 1e3  # the step and the transfer, per batch
    assert e["expected_images_per_s"] == pytest.approx(B / step_s, rel=0.02)
    rec = e["recommendation"]
    assert (rec["backend"], rec["workers"]) == ("process", 1)
    assert rec["expected_images_per_s"] >= 0.97 * e["expected_images_per_s"]
    assert "training step" in rec["why"]


def test_a_serial_loop_with_a_step_is_told_to_overlap_it(tmp_path):
    plan = Plan("serial", backend="serial", step=30.0, stages=CPU_HEAVY)
    e = judge(tmp_path, [plan], [50.0, 50.0])["serial"]
    per_batch_s = (30 + 1 + 74) / 1e3  # step, transfer, making the batch: all in the loop
    assert e["expected_images_per_s"] == pytest.approx(B / per_batch_s, rel=0.02)
    rec = e["recommendation"]
    assert rec["backend"] != "serial" and rec["workers"] >= 1
    assert rec["expected_images_per_s"] > 1.3 * e["expected_images_per_s"]
    gain = rec["expected_images_per_s"] / e["images_per_s"]
    assert recommend.headline(e) == (
        f"{recommend.label(rec['backend'], rec['workers'])}: "
        f"about {rec['expected_images_per_s']:,.0f} img/s, {gain:.1f}x now"
    )


def test_oversubscribed_experiments_keep_their_sum_with_fewer_workers(tmp_path):
    plans = [
        Plan(f"exp{k}", backend="process", workers=2, stages=CPU_HEAVY, pid=1000 + 10 * k)
        for k in range(3)
    ]
    exps = judge(tmp_path, plans, [100.0, 100.0])
    share = 2 / 3 / (HEAVY_CPU_MS / 1e3)  # a third of the two cores each
    now = sum(e["expected_images_per_s"] for e in exps.values())
    after = sum(e["recommendation"]["expected_images_per_s"] for e in exps.values())
    for e in exps.values():
        assert e["expected_images_per_s"] == pytest.approx(share, rel=0.05)
        assert e["recommendation"]["expected_images_per_s"] == pytest.approx(share, rel=0.05)
        assert "shared with 2 other experiment(s)" in e["recommendation"]["why"]
    assert after >= 0.97 * now
    assert sum(e["recommendation"]["workers"] for e in exps.values()) < 6


def test_an_experiment_given_less_for_the_group_is_told_why(tmp_path):
    cheap = {k: (ms / 4, cpu / 4) for k, (ms, cpu) in CPU_HEAVY.items()}
    plans = [
        Plan("heavy", backend="process", workers=2, stages=CPU_HEAVY, pid=1000),
        Plan("cheap", backend="process", workers=2, stages=cheap, pid=2000),
    ]
    exps = judge(tmp_path, plans, [100.0, 100.0])
    now = sum(e["expected_images_per_s"] for e in exps.values())
    after = sum(e["recommendation"]["expected_images_per_s"] for e in exps.values())
    assert after > 1.03 * now  # the cheap pipeline makes more images per core-second
    losers = [
        e for e in exps.values()
        if e["recommendation"]["expected_images_per_s"] < 0.97 * e["expected_images_per_s"]
    ]  # fmt: skip
    assert [e["name"] for e in losers] == ["heavy"]
    assert (
        f"less than now so that the 2 experiments at once make more in all: about "
        f"{after:,.0f} img/s summed, from {now:,.0f}"
    ) in losers[0]["recommendation"]["why"]
    assert "less than now" not in exps["cheap"]["recommendation"]["why"]


def test_one_after_another_each_is_recommended_alone(tmp_path):
    plans = [
        Plan(
            f"exp{k}",
            backend="process",
            workers=2,
            stages=CPU_HEAVY,
            pid=1000 + 10 * k,
            start_ms=k * 5000,
        )
        for k in range(2)
    ]
    exps = judge(tmp_path, plans, [60.0, 60.0])
    for e in exps.values():
        assert e["recommendation"]["expected_images_per_s"] == pytest.approx(
            2 / (HEAVY_CPU_MS / 1e3), rel=0.03
        )


def test_a_run_that_cannot_show_the_gil_says_which_run_would(tmp_path):
    # a process run whose transfer (40 ms a batch) bounds it: threads would not copy, but
    # whether they would hold the GIL only a thread run can show
    plan = Plan("copying", backend="process", workers=2, transfer=(40.0, 40.0), wait=40.0)
    e = judge(tmp_path, [plan], [50.0, 50.0])["copying"]
    assert e["model"]["gil_share_is"] == "not measured"
    assert "a run with backend 'thread'" in e["recommendation"]["why"]


def test_a_run_too_short_to_judge_says_so_and_recommends_nothing(tmp_path):
    plan = Plan("short", batches=3)
    e = judge(tmp_path, [plan], [50.0, 50.0])["short"]
    assert e["bottleneck"] == "too short to judge"
    assert "3 batches in" in e["advice"] and "run at least" in e["advice"]
    assert e["recommendation"] is None and e["expected_images_per_s"] is None


# --------------------------------------------------------------------------- the model itself


def costs(**kw) -> model.Costs:
    base = dict(
        batch_size=16,
        cpu=0.002,
        io_wait=0.0,
        copy=0.0001,
        gil=1.0,
        gil_known="measured",
        step=0.0,
        step_cpu=0.0,
        backend="process",
        transfer=0.0016,
    )
    return model.Costs(**{**base, **kw})


def test_cores_are_shared_fairly_among_runnable_threads():
    light = model.Rate(100.0, 0.2, 1, "workers")  # needs a fifth of a core
    heavy = model.Rate(1000.0, 4.0, 4, "workers")  # would take four
    shared = model.share([light, heavy], cores=2)
    assert shared[0] == light  # under its fair share: untouched
    assert shared[1].demand == pytest.approx(1.8)
    assert shared[1].images_per_s == pytest.approx(1000 * 1.8 / 4)
    assert shared[1].bound == "cores"


def test_more_threads_do_not_beat_the_gil():
    c = costs(gil=0.5)
    rates = [model.alone(c, "thread", n).images_per_s for n in (1, 2, 4, 8)]
    assert rates[-1] == pytest.approx(1 / (0.5 * 0.002))
    assert rates == sorted(rates)
    assert model.alone(c, "process", 8).images_per_s > rates[-1]


def test_an_io_bound_process_run_is_moved_to_threads(tmp_path):
    """Waiting on I/O, threads overlap the waits as well as processes, cheaper: the seed's
    lesson, whichever backend ran."""
    stages = {"read": (320, 8), "decode": (16, 16), "augment": (16, 16), "collate": (2, 2)}
    plan = Plan("http", backend="process", workers=1, stages=stages)
    rec = judge(tmp_path, [plan], [10.0, 10.0])["http"]["recommendation"]
    assert (rec["backend"], rec["workers"]) == ("thread", 4)


# ------------------------------------------------------------------ machines bigger than this


@pytest.mark.parametrize("cores", [8, 16, 64])
def test_cpu_bound_work_never_gets_more_workers_than_cores(tmp_path, cores):
    """On a big machine a CPU-bound pipeline is worth at most one worker per core: the
    recommendation reaches the cores' rate (or the loop's) without going past them."""
    stages = {"read": (2, 2), "decode": (40, 40), "augment": (30, 30), "collate": (2, 2)}
    plan = Plan("busy", backend="process", workers=2, step=0.5, stages=stages)
    e = judge(tmp_path, [plan], [100.0 * 2 / cores] * cores)["busy"]
    rec = e["recommendation"]
    assert rec["backend"] in ("process", "torch")
    assert 2 < rec["workers"] <= cores, rec
    cpu_s = e["model"]["cpu_per_image_ms"] / 1e3
    loop_rate = B / ((0.5 + 1.0) / 1e3)  # one batch per step + transfer
    assert rec["expected_images_per_s"] >= 0.9 * min(cores / cpu_s, loop_rate)


@pytest.mark.parametrize("cores", [8, 16, 64])
def test_io_bound_work_may_get_more_workers_than_cores(tmp_path, cores):
    stages = {"read": (320, 2), "decode": (2, 2), "augment": (2, 2), "collate": (1, 1)}
    plan = Plan("http", backend="thread", workers=2, step=0.5, stages=stages)
    rec = judge(tmp_path, [plan], [5.0] * cores)["http"]["recommendation"]
    # threads or processes, as the GIL's bound (<= 1/2 here, measured) allows
    assert rec["workers"] > cores, rec


def test_three_experiments_at_once_on_64_cores_share_them(tmp_path):
    """Three CPU-bound experiments at once on 64 cores: together they are given no more
    workers than cores, and none is starved."""
    stages = {"read": (2, 2), "decode": (40, 40), "augment": (30, 30), "collate": (2, 2)}
    plans = [
        Plan(f"exp{k}", backend="process", workers=2, step=0.5, stages=stages, pid=1000 + 10 * k)
        for k in range(3)
    ]
    exps = judge(tmp_path, plans, [10.0] * 64)
    recs = [e["recommendation"] for e in exps.values()]
    assert sum(r["workers"] for r in recs) <= 64, recs
    # and they are given the cores the two workers each left idle
    assert sum(r["workers"] for r in recs) >= 0.8 * 64, recs
    assert all(r["backend"] in ("process", "torch") for r in recs)
    assert min(r["expected_images_per_s"] for r in recs) > 0.5 * max(
        r["expected_images_per_s"] for r in recs
    )


def test_the_sweep_tries_a_few_worker_counts_on_any_machine():
    from augment.profiler.tune import sweep_counts

    assert sweep_counts(2) == [1, 2, 4]
    assert sweep_counts(6) == [1, 2, 4, 6, 8, 12]
    assert sweep_counts(8) == [1, 2, 4, 8, 16]
    assert sweep_counts(64) == [1, 2, 4, 8, 16, 32, 64, 128]


def test_a_calibration_run_prices_processes_at_the_uncontended_cpu(tmp_path):
    """Contended threads spent 45/16 ms of CPU per image; the same pipeline alone in one
    thread spent 30/16 ms (the calibration after the run): processes are costed at that,
    and the recommendation says so."""
    import json

    stages = {"read": (3, 3), "decode": (30, 20), "augment": (30, 20), "collate": (3, 2)}
    plan = Plan("threads", backend="thread", workers=2, stages=stages)
    folder = write_trace(tmp_path, [plan], [40.0, 40.0])
    with open(folder / f"{plan.name}.{plan.pid}.jsonl", "a") as f:
        calibration = {"experiment": plan.name, "images": 64, "cpu_s": 64 * 30 / B / 1e3}
        f.write(json.dumps({"calibration": calibration}) + "\n")
    e = by_name(report(folder))["threads"]
    assert e["uncontended_cpu_per_image_ms"] == pytest.approx(30 / B, rel=1e-3)
    assert e["model"]["uncontended_cpu_per_image_ms"] == pytest.approx(30 / B, rel=1e-3)
    rec = e["recommendation"]
    assert rec["backend"] in ("process", "torch") and rec["workers"] == 2
    # two cores at the uncontended CPU per image, not at the threads' 45/16 ms
    assert rec["expected_images_per_s"] == pytest.approx(2 / (30 / B / 1e3), rel=0.05)
    assert "measured alone in one thread" in rec["why"]
    assert "expect more than this" not in rec["why"]
