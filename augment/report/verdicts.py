"""Naming the bottleneck of one experiment, from its measured figures.

The rules, checked in this order (thresholds are the constants below), after one check: a
run too short to judge (fewer than 3 batches or 0.3 s in its steady state) says so instead.

1. ``training step``: the loop waited for data less than 10% of its time.
2. ``transfer``: moving batches to the loop cost more than making them (consumer transfer
   time above the workers' CPU time).
3. ``gil contention``: thread workers got less than 0.7 CPU-seconds per wall-second of
   their compute stages (decode, augment, collate: ``read`` and a dataset's own ``load`` may
   wait on I/O), those stages took longer than reading or loading, and the machine's cores
   were less than 75% busy.
4. ``cpu oversubscribed``: more busy workers (all experiments at once) than cores, and the
   cores more than 85% busy.
5. ``data: <stage>``: otherwise the loop waits for data, and <stage> is the stage that takes
   most of the workers' CPU time (or wall time, for a stage that waits on I/O).
"""

from __future__ import annotations

from augment.trace.schema import COMPUTE_STAGES, IO_STAGES, WORKER_STAGES

STALL_LOW = 0.10
GIL_CPU_PER_WALL = 0.7
IO_CPU_PER_WALL = 0.5
IDLE_CORES = 0.75
SATURATED = 0.85

RULES = __doc__


def verdict(exp: dict, machine: dict) -> tuple[str, str]:
    """``(bottleneck, advice)`` for one experiment summary (see ``summary.summarize``)."""
    if exp.get("too_short"):
        return "too short to judge", exp["too_short"][0].upper() + exp["too_short"][1:] + "."
    stall, util = exp["stall_fraction"], exp["cpu_utilization"]
    cores, busy = machine["cores"], machine["concurrent_workers"]
    backend, workers = exp["backend"], exp["workers"]
    cpu = exp["stage_cpu_s"]
    wall = exp["stage_wall_s"]
    make_cpu = sum(cpu.get(s, 0.0) for s in WORKER_STAGES)
    make_wall = sum(wall.get(s, 0.0) for s in WORKER_STAGES)
    if stall < STALL_LOW:
        spare = f"; {workers - 1} worker(s) would likely do and free a core" if workers > 1 else ""
        return "training step", (
            f"The loop waited for data only {stall:.0%} of the time: "
            f"loading keeps up with the step{spare}."
        )
    if cpu.get("transfer", 0.0) > make_cpu > 0 or wall.get("transfer", 0.0) > make_wall > 0:
        return "transfer", (
            f"Moving batches ({wall.get('transfer', 0):.2f} s) costs more than "
            f"making them ({make_wall:.2f} s): use backend 'thread' (no copy) "
            "or smaller batches or crops."
        )
    compute_cpu = sum(cpu.get(s, 0.0) for s in COMPUTE_STAGES)
    compute_wall = sum(wall.get(s, 0.0) for s in COMPUTE_STAGES)
    gil_share = compute_cpu / compute_wall if compute_wall > 0 else 1.0
    io_wall = sum(wall.get(s, 0.0) for s in IO_STAGES)
    computing = compute_wall >= io_wall  # else the workers mostly wait on I/O
    if backend == "thread" and computing and gil_share < GIL_CPU_PER_WALL and util < IDLE_CORES:
        return "gil contention", (
            f"Thread workers ran {gil_share:.0%} of a core per wall second of decode and augment "
            f"while the cores were {1 - util:.0%} idle: Python holds the GIL, so switch to "
            "backend 'process' (or 'torch')."
        )
    if busy > cores and util > SATURATED:
        return "cpu oversubscribed", (
            f"{busy} busy workers share {cores} cores ({util:.0%} busy) and the loop waits "
            f"{stall:.0%} of the time: run fewer experiments at once or give each fewer workers."
        )
    stage, share = _top_stage(cpu, wall)
    read_cpu, read_wall = cpu.get(stage, 0.0), wall.get(stage, 0.0)
    waits = read_wall > 0 and read_cpu / read_wall < IO_CPU_PER_WALL
    # a dataset's own load also decodes: on saturated cores its waiting is for a core
    if stage in IO_STAGES and waits and (stage == "read" or util < SATURATED):
        what = "Reading" if stage == "read" else "The dataset's __getitem__ (load)"
        advice = (
            f"{what} waits on I/O ({share:.0%} of worker time at {read_cpu / read_wall:.0%} "
            "CPU): more workers overlap the waits, and threads are the cheapest workers."
        )
    elif backend == "serial":
        advice = (
            f"{stage} takes {share:.0%} of the time, all of it in the training loop: use backend "
            f"'process' (or 'thread') with {cores} workers to make batches while the loop steps."
        )
    elif util < IDLE_CORES:
        advice = (
            f"{stage} takes {share:.0%} of worker CPU and the cores are {1 - util:.0%} idle: "
            f"add workers (now {workers})."
        )
    elif stage == "load":
        advice = (
            f"load (the dataset's __getitem__: reading, decoding and any augmentation in it) "
            f"takes {share:.0%} of worker CPU on busy cores: make it cheaper (augment's fused "
            "transforms on augment.Loader, see README) or use more machines."
        )
    elif stage == "augment":
        advice = (
            f"augment takes {share:.0%} of worker CPU on busy cores: use a cheaper transform "
            "(fewer resampling steps, a smaller output) or more machines."
        )
    else:
        advice = (
            f"{stage} takes {share:.0%} of worker CPU on busy cores: store smaller or "
            "pre-decoded images, or use more machines."
        )
    return f"data: {stage}", advice


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
