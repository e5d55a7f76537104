"""Naming the bottleneck of one experiment, from its measured figures.

The rules, checked in this order (thresholds are the constants below), after one check: a
run too short to judge (fewer than 3 batches or 0.3 s in its steady state) says so instead.

1. ``training step``: the loop waited for data less than 10% of its time.
2. ``transfer``: moving batches to the loop cost more than making them (consumer transfer
   time above the workers' CPU time).
3. ``gil contention``: thread workers slept (off the CPU, not waiting for a core: the
   kernel's run-queue delay tells the two apart) more than 15% of their compute stages'
   time, that wait left out (decode, augment, collate: ``read`` and a dataset's own
   ``load`` may wait on I/O), and those stages took longer than reading or loading. In
   traces without run-queue times: they got less than 0.7 CPU-seconds per wall-second
   there while this run's processes used less than 75% of the cores (other programs' load
   left out).
4. ``cpu oversubscribed``: workers waited on a run queue for a core more than 25% of their
   time (in traces without run-queue times: more busy workers, all experiments at once,
   than cores, and the cores more than 85% busy).
5. ``data: <stage>``: otherwise the loop waits for data, and <stage> is the stage that takes
   most of the workers' CPU time (or wall time, for a stage that waits on I/O).

"Busy" and "idle" cores leave out what other programs took (``other_load_cores``). The
advice's remedy is the recommendation's (``advice``), so the two never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from augment.trace.schema import COMPUTE_STAGES, IO_STAGES, WORKER_STAGES

STALL_LOW = 0.10
GIL_CPU_PER_WALL = 0.7
# Threads that sleep this share of their compute time (off a core, not waiting for one) wait
# for the GIL: a pipeline that releases it (numpy, OpenCV, the decoders) sleeps under 10% on
# 2 threads here, a pure-Python step 20-35%.
GIL_SLEPT = 0.15
IO_CPU_PER_WALL = 0.5
IDLE_CORES = 0.75
SATURATED = 0.85
QUEUED_FOR_CORE = 0.25

RULES = __doc__


@dataclass(frozen=True)
class Verdict:
    """A bottleneck, what shows it, the change of loader configuration that the rule alone
    would suggest (None: none), and what else would help whatever the configuration."""

    bottleneck: str
    finding: str
    change: str | None = None
    beyond: str | None = None


def verdict(exp: dict, machine: dict) -> Verdict:
    """The verdict for one experiment summary (see ``summary.summarize``)."""
    if exp.get("too_short"):
        return Verdict("too short to judge", exp["too_short"][0].upper() + exp["too_short"][1:])
    stall, util = exp["stall_fraction"], exp["cpu_utilization"]
    cores, busy = machine["cores"], machine["concurrent_workers"]
    # the cores' load less what other programs took: the share left idle for this work
    ours = max(0.0, util - exp.get("other_load_cores", 0.0) / max(cores, 1))
    backend, workers = exp["backend"], exp["workers"]
    cpu = exp["stage_cpu_s"]
    wall = exp["stage_wall_s"]
    make_cpu = sum(cpu.get(s, 0.0) for s in WORKER_STAGES)
    make_wall = sum(wall.get(s, 0.0) for s in WORKER_STAGES)
    if stall < STALL_LOW:
        spare = f"{workers - 1} worker(s) would likely do and free a core" if workers > 1 else None
        return Verdict(
            "training step",
            f"The loop waited for data only {stall:.0%} of the time: loading keeps up with the "
            "step",
            spare,
        )
    if cpu.get("transfer", 0.0) > make_cpu > 0 or wall.get("transfer", 0.0) > make_wall > 0:
        return Verdict(
            "transfer",
            f"Moving batches ({wall.get('transfer', 0):.2f} s) costs more than making them "
            f"({make_wall:.2f} s)",
            "use backend 'thread' (no copy)",
            "smaller batches or crops",
        )
    compute_cpu = sum(cpu.get(s, 0.0) for s in COMPUTE_STAGES)
    compute_wall = sum(wall.get(s, 0.0) for s in COMPUTE_STAGES)
    gil_share = compute_cpu / compute_wall if compute_wall > 0 else 1.0
    io_wall = sum(wall.get(s, 0.0) for s in IO_STAGES)
    computing = compute_wall >= io_wall  # else the workers mostly wait on I/O
    slept = gil_wait(exp)
    if backend == "thread" and computing and slept is not None:
        if slept > GIL_SLEPT:
            return Verdict(
                "gil contention",
                f"Thread workers slept {slept:.0%} of their decode and augment time (not "
                "counting their wait for a core): Python holds the GIL",
                "switch to backend 'process' (or 'torch')",
            )
    elif backend == "thread" and computing and gil_share < GIL_CPU_PER_WALL and ours < IDLE_CORES:
        return Verdict(
            "gil contention",
            f"Thread workers ran {gil_share:.0%} of a core per wall second of decode and "
            f"augment while this run used {ours:.0%} of the cores: Python holds the GIL",
            "switch to backend 'process' (or 'torch')",
        )
    queued = core_wait(exp)
    if queued is not None and queued > QUEUED_FOR_CORE:
        return Verdict(
            "cpu oversubscribed",
            f"Workers waited for a core {queued:.0%} of their time ({busy:g} workers of this "
            f"and other experiments on {cores} cores, {util:.0%} busy) and the loop waits "
            f"{stall:.0%} of the time",
            "give each experiment fewer workers",
            "run fewer experiments (or other programs) at once",
        )
    if queued is None and busy > cores and util > SATURATED:
        return Verdict(
            "cpu oversubscribed",
            f"{busy:g} busy workers share {cores} cores ({util:.0%} busy) and the loop waits "
            f"{stall:.0%} of the time",
            "give each experiment fewer workers",
            "run fewer experiments at once",
        )
    stage, share = _top_stage(cpu, wall)
    read_cpu, read_wall = cpu.get(stage, 0.0), wall.get(stage, 0.0)
    waits = read_wall > 0 and read_cpu / read_wall < IO_CPU_PER_WALL
    # a dataset's own load also decodes: on saturated cores its waiting is for a core
    if stage in IO_STAGES and waits and (stage == "read" or util < SATURATED):
        what = "Reading" if stage == "read" else "The dataset's __getitem__ (load)"
        return Verdict(
            f"data: {stage}",
            f"{what} waits on I/O ({share:.0%} of worker time at {read_cpu / read_wall:.0%} CPU)",
            "more workers overlap the waits, and threads are the cheapest workers",
            "store the images nearer (a local copy, or shards read in ranges)",
        )
    if backend == "serial":
        return Verdict(
            f"data: {stage}",
            f"{stage} takes {share:.0%} of the time, all of it in the training loop",
            f"use backend 'process' (or 'thread') with {cores} workers to make batches while "
            "the loop steps",
            _cheaper(stage),
        )
    if util < IDLE_CORES:
        return Verdict(
            f"data: {stage}",
            f"{stage} takes {share:.0%} of worker CPU and the cores are {1 - util:.0%} idle",
            f"add workers (now {workers})",
            _cheaper(stage),
        )
    return Verdict(
        f"data: {stage}",
        f"{stage} takes {share:.0%} of worker CPU on busy cores",
        None,
        _cheaper(stage),
    )


def core_wait(exp: dict) -> float | None:
    """The share of the worker stages' wall time their threads waited on a run queue for a
    core; None where the trace has no run-queue times."""
    wall, runq = exp["stage_wall_s"], exp.get("stage_runq_s", {})
    stages = [s for s in WORKER_STAGES if s in wall]
    if not stages or any(s not in runq for s in stages):
        return None
    total = sum(wall[s] for s in stages)
    return sum(runq[s] for s in stages) / total if total > 0 else None


def gil_wait(exp: dict) -> float | None:
    """The share of the compute stages' time not spent waiting for a core (the kernel's
    run-queue delay) that their threads slept rather than ran: for stages that do no I/O,
    waiting for the GIL. None where the trace has no run-queue times."""
    wall, cpu, runq = exp["stage_wall_s"], exp["stage_cpu_s"], exp.get("stage_runq_s", {})
    stages = [s for s in COMPUTE_STAGES if s in wall]
    if not stages or any(s not in runq for s in stages):
        return None
    # of the time not spent waiting for a core: on one, or asleep
    awake = sum(wall[s] - runq[s] for s in stages)
    slept = sum(wall[s] - cpu.get(s, 0.0) - runq[s] for s in stages)
    return max(0.0, slept / awake) if awake > 0 else None


def _cheaper(stage: str) -> str:
    """What makes ``stage`` cost less, whatever the loader's configuration."""
    if stage == "load":
        return (
            "make the dataset's __getitem__ (reading, decoding and any augmentation in it) "
            "cheaper (augment's fused transforms on augment.Loader, see docs/profiler.md) or "
            "use more machines"
        )
    if stage == "augment":
        return "use a cheaper transform (fewer resampling steps, a smaller output) or more machines"
    return "store smaller or pre-decoded images, or use more machines"


def advice(v: Verdict, exp: dict) -> str:
    """The verdict in one sentence whose remedy agrees with the recommendation: where the
    model recommends a configuration, that is the change named (the rule's own is only
    said where there is no recommendation)."""
    from augment.profiler.report.recommend import label

    rec = exp.get("recommendation")
    if rec is None:
        remedy = [r for r in (v.change, v.beyond) if r]
    else:
        now, want = label(exp["backend"], exp["workers"]), label(rec["backend"], rec["workers"])
        expected = rec["expected_images_per_s"]
        # against the model's figure for the current configuration: the same model's error
        current = exp.get("expected_images_per_s") or exp["images_per_s"]
        if want == now:
            remedy = [f"keep {now}, the best configuration the model finds"]
        elif expected < 0.9 * current:  # given less so that the experiments at once make more
            remedy = [
                f"use {want} (about {expected:,.0f} img/s: less, so that the experiments "
                "running at once make more in all)"
            ]
        elif rec["workers"] < exp["workers"] and expected < 1.1 * current:
            remedy = [f"use {want}: about as fast ({expected:,.0f} img/s) on fewer workers"]
        else:
            remedy = [f"use {want} (about {expected:,.0f} img/s)"]
        if v.beyond:
            remedy.append(f"beyond that, {v.beyond}")
    text = v.finding + (": " + "; ".join(remedy) if remedy else "")
    return text + "."


def _top_stage(cpu: dict, wall: dict) -> tuple[str, float]:
    total_cpu = sum(cpu.get(s, 0.0) for s in WORKER_STAGES)
    total_wall = sum(wall.get(s, 0.0) for s in WORKER_STAGES)
    if total_cpu <= 0 and total_wall <= 0:
        return "read", 0.0
    # A stage that waits (I/O) shows in wall time, not CPU: rank by whichever is larger.
    score = {
        s: max(
            cpu.get(s, 0.0) / total_cpu if total_cpu else 0.0,
            wall.get(s, 0.0) / total_wall if total_wall else 0.0,
        )
        for s in WORKER_STAGES
    }
    stage = max(score, key=score.get)
    return stage, score[stage]
