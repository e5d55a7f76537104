"""The recommendation next to each verdict: a backend and a worker count, with the images/s
the model (``augment.profiler.report.model``) expects from it and from the configuration that ran.

Experiments that ran at the same time are recommended together: the allocation of backends
and workers across them that maximises their summed images/s without starving any loop.
"""

from __future__ import annotations

from augment.loading import backends
from augment.profiler.report import model

OVERLAP = 0.5  # experiments overlapping this much of the shorter one ran "at once"


def recommend(experiments: list[dict], ran_with: dict, cores: int) -> None:
    """Add ``model``, ``expected_images_per_s`` and ``recommendation`` to each experiment
    summary (None where the run is too short to judge or has no images). ``ran_with[(a, b)]``
    is the share of a's active time b was active too (``augment.profiler.report.overlap``)."""
    available = tuple(b for b in backends.names() if b in model.CANDIDATE_BACKENDS)
    for group in _groups(experiments, ran_with):
        judged = []
        for exp in group:
            exp["expected_images_per_s"] = exp["recommendation"] = None
            c = model.costs(exp, cores)
            exp["model"] = c.to_dict() if c is not None else None
            if c is not None and not exp.get("too_short"):
                judged.append((exp, c))
        if not judged:
            continue
        now = [(c, exp["backend"], exp["workers"]) for exp, c in judged]
        other_load = sum(exp["other_load_cores"] for exp, _ in judged) / len(judged)
        free = max(cores - other_load, 0.5)
        current = model.predict(now, free)
        choices = model.best_allocation(now, free, available, max_workers=2 * cores)
        group = (
            len(judged),
            sum(r.images_per_s for r in current),
            sum(c.rate.images_per_s for c in choices),
        )
        for (exp, c), rate, choice in zip(judged, current, choices):
            exp["expected_images_per_s"] = round(rate.images_per_s, 1)
            exp["recommendation"] = {
                "backend": choice.backend,
                "workers": choice.workers,
                "expected_images_per_s": round(choice.rate.images_per_s, 1),
                "why": _why(exp, c, choice, rate, group, (cores, free), available),
            }


def label(backend: str, workers: int) -> str:
    """How a configuration is written in the report: "process x2", "serial"."""
    return "serial" if backend == "serial" else f"{backend} x{workers}"


def headline(exp: dict) -> str:
    """ "process x2: about 1,150 img/s, 1.9x now", "keep thread x2: ..." when the current
    configuration is the best found (or why there is none)."""
    rec = exp.get("recommendation")
    if rec is None:
        return "none: too short to judge" if exp.get("too_short") else "none"
    what, expected = label(rec["backend"], rec["workers"]), rec["expected_images_per_s"]
    if what == label(exp["backend"], exp["workers"]):
        measured = exp["images_per_s"]
        return f"keep {what}: about {expected:,.0f} img/s expected, {measured:,.0f} measured"
    gain = expected / exp["images_per_s"] if exp["images_per_s"] else 0.0
    return f"{what}: about {expected:,.0f} img/s, {gain:.1f}x now"


def _groups(experiments: list[dict], ran_with: dict) -> list[list[dict]]:
    """Experiments that ran at once (for at least ``OVERLAP`` of the shorter one's active
    time), together; those that ran one after another or took turns, apart."""
    groups: list[list[dict]] = []
    for exp in experiments:
        a = exp["name"]
        for group in groups:
            if any(
                max(ran_with[(a, o["name"])], ran_with[(o["name"], a)]) >= OVERLAP for o in group
            ):
                group.append(exp)
                break
        else:
            groups.append([exp])
    return groups


def _why(exp, c, choice, now, group, machine: tuple[int, float], available) -> str:
    """The recommendation's reasons; ``group`` is (experiments at once, their summed
    images/s now and as recommended, the model's), ``machine`` (cores, cores free of other
    work)."""
    cores, free = machine
    together, sum_now, sum_recommended = group
    rate = choice.rate
    parts = [_bound(c, choice, machine, together)]
    same = (choice.backend, choice.workers) == (exp["backend"], exp["workers"]) or (
        choice.backend == exp["backend"] == "serial"
    )
    parts.append(
        "the current configuration is already the best the model finds"
        if same
        else f"{rate.images_per_s / max(now.images_per_s, 1e-9):.1f}x the model's "
        f"{now.images_per_s:,.0f} img/s for the current one"
    )
    parts.append(f"measured now: {exp['images_per_s']:,.0f} img/s")
    if together > 1 and rate.images_per_s < 0.97 * now.images_per_s:
        parts.append(
            f"less than now so that the {together} experiments at once make more in all: "
            f"about {sum_recommended:,.0f} img/s summed, from {sum_now:,.0f}"
        )
    if c.backend == "thread" and choice.backend != "thread" and c.cpu_alone is not None:
        parts.append(
            f"costed at {c.cpu_alone * 1e3:.2f} ms of CPU per image, measured alone in one "
            f"thread after the run (the contended threads spent {c.cpu * 1e3:.2f} ms)"
        )
    elif c.backend == "thread" and c.gil_known == "measured" and choice.backend != "thread":
        parts.append(
            "expect more than this: threads that wait for the GIL spend more CPU per image "
            "than the same work in separate processes, and the figure is costed at the "
            "threads' CPU"
        )
    if c.gil_known == "not measured" and "thread" in available and choice.backend != "thread":
        no_gil = model.Costs(**{**c.__dict__, "gil": 0.0})
        threads = max(
            model._on_cores(model.alone(no_gil, "thread", n), free / together)
            for n in range(1, 2 * cores + 1)
        )
        if threads > 1.05 * rate.images_per_s:
            parts.append(
                f"threads might reach about {threads:,.0f} img/s if the pipeline releases "
                "the GIL, which this run cannot show: a run with backend 'thread' and 2 or "
                "more workers would tell"
            )
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def _bound(c: model.Costs, choice: model.Choice, machine: tuple[int, float], together: int):
    b, workers, bound = choice.backend, choice.workers, choice.rate.bound
    cores, free = machine
    cpu = c.cpu_on(b)
    make_ms = c.batch_size * (cpu + c.io_wait) * 1e3
    if b == "serial":
        return (
            f"making a batch in the loop ({make_ms:.0f} ms) beside the step "
            f"({c.step * 1e3:.0f} ms) costs little enough that workers would not pay"
        )
    if bound == "loop":
        return (
            f"the training step ({c.step * 1e3:.0f} ms per batch) sets the pace and "
            f"{workers} {b} worker(s) keep up with it"
        )
    if bound == "gil":
        return f"threads share one GIL, held for {c.gil:.0%} of their CPU time"
    if bound == "cores":
        shared = f", shared with {together - 1} other experiment(s)" if together > 1 else ""
        return f"the {cores} cores are the limit at {cpu * 1e3:.2f} ms of CPU per image{shared}"
    io = f", {c.io_wait * c.batch_size * 1e3:.0f} ms of it waiting on I/O" if c.io_wait else ""
    return f"each of {workers} {b} worker(s) makes a batch in {make_ms:.0f} ms{io}"
