"""How many images per second a loader configuration delivers, predicted from one measured run.

Measured per image (the worker stages of the run, ``summary.summarize``):

- ``cpu``: CPU time of the worker stages (read or load, decode, augment, collate);
- ``io_wait``: time the I/O stages (read, load) waited off the CPU: their wall time less
  their CPU time stretched by how long the compute stages took per CPU second (so waiting
  for a core or the GIL is not taken for I/O);
- ``gil``: the share of ``cpu`` that holds the GIL. Only a thread run with 2+ workers shows
  it: n threads that hold the GIL a share g of their CPU get at most 1/(n g) of a core each,
  so g = 1 / (n x CPU-per-wall of their compute stages), once the time they waited for a
  core is taken out (the kernel's run-queue delay, in each span; in older traces, estimated
  from the cores others took). A run whose threads got a full core only bounds it
  (g <= 1/n); a run on another backend does not measure it, and threads are then assumed to
  hold it throughout.

- ``cpu_alone``: after a thread run of 2+ workers, the same pipeline's CPU per image made
  alone in one thread (``augment.profiler.measure.calibrate``): threads that contend for the GIL
  spend more CPU per image than the same work in processes, so other backends are costed
  at this figure;

- ``overhead``: CPU the experiment's processes spent outside the traced stages (the loop's
  Python, queues, pickling): their CPU times at the start and end of the steady state, less
  the traced stages' CPU, per image. It is charged to every backend alike.

Measured per batch: the loop's ``step`` (wall and CPU) and the ``transfer`` of the backend
that ran. Backends that did not run get none: the process backend hands the loop a tensor
viewing its shared-memory slot, and torch's loop maps the block its worker wrote. Torch
workers write each batch into a new shared-memory block, whose fresh pages cost about a copy
of the pixels (collate per image); the process backend's slots are reused.

For a backend and n workers, the rate without CPU contention is the smallest of:

- workers: n batches at a time, each taking B x (cpu + io_wait) + the backend's own copy;
- loop: one batch per step + transfer;
- GIL (threads): 1 / (g x cpu);
- serial: the loop makes each batch itself, so one batch per step + making it.

Its CPU demand is that rate times the CPU per image (workers, copies, and the loop's share).
Experiments that run at once share the cores as the OS shares them among runnable threads:
each worker gets an equal share unless it needs less (max-min fairness), and an experiment
given less than it demands slows in proportion.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from augment.trace.schema import COMPUTE_STAGES, IO_STAGES, WORKER_STAGES

CANDIDATE_BACKENDS = ("serial", "thread", "process", "torch")  # from the lightest
GIL_SATURATED = 0.85  # threads below this CPU per wall (cores aside) are held back by the GIL
# threads win a tie only below this measured GIL share: measured by 4 threads on 2 cores it
# swings by several points around 0.5 for a pipeline whose 2-thread run measures 0.75, and a
# tie costs nothing on processes
THREADS_GIL_SHARE = 0.4
EXHAUSTIVE_LIMIT = 30_000  # joint configurations tried one by one; beyond, one at a time


@dataclass(frozen=True)
class Costs:
    """What one measured run says about its pipeline; times in seconds."""

    batch_size: int
    cpu: float  # worker stages' CPU per image
    io_wait: float  # per image, waiting off the CPU in read or load
    copy: float  # one copy of an image's pixels (collate per image)
    gil: float  # share of ``cpu`` that holds the GIL (1.0 when not measured)
    gil_known: str  # "measured", "upper bound" or "not measured"
    step: float  # the loop's step per batch, wall
    step_cpu: float  # and its CPU
    backend: str  # the backend that ran
    transfer: float  # its transfer per batch, as measured
    overhead: float = 0.0  # per image, CPU the processes spent outside the traced stages
    # per image, the pipeline's CPU alone in one thread (a calibration run after a thread
    # run: contended threads spend more), None where not measured
    cpu_alone: float | None = None

    def cpu_on(self, backend: str) -> float:
        """CPU per image of the worker stages on ``backend``: as measured on the backend
        that ran, else uncontended where a calibration measured it."""
        if backend == self.backend or self.cpu_alone is None:
            return self.cpu
        return self.cpu_alone

    def overhead_on(self, backend: str) -> float:
        """Untraced CPU per image on ``backend``: as measured on the backend that ran; from a
        calibrated thread run, shrunk as its CPU per image shrinks alone (contended threads
        spend it switching for the GIL, which other backends do not)."""
        if backend == self.backend or self.cpu_alone is None or self.cpu <= 0:
            return self.overhead
        return self.overhead * min(1.0, self.cpu_alone / self.cpu)

    def transfer_for(self, backend: str) -> float:
        """Consumer-side cost of receiving one batch on ``backend``."""
        return self.transfer if backend == self.backend else 0.0

    def worker_copy_for(self, backend: str) -> float:
        """Worker-side cost per batch beyond making it: a torch worker fills a new shared
        block per batch (fresh pages, about a copy); process slots are reused."""
        return self.batch_size * self.copy if backend == "torch" else 0.0

    def to_dict(self) -> dict:
        return {
            "cpu_per_image_ms": round(self.cpu * 1e3, 4),
            "io_wait_per_image_ms": round(self.io_wait * 1e3, 4),
            "gil_share": round(self.gil, 3),
            "gil_share_is": self.gil_known,
            "step_ms": round(self.step * 1e3, 3),
            "step_cpu_ms": round(self.step_cpu * 1e3, 3),
            "transfer_ms": round(self.transfer * 1e3, 3),
            "untraced_cpu_per_image_ms": round(self.overhead * 1e3, 4),
            "uncontended_cpu_per_image_ms": (
                round(self.cpu_alone * 1e3, 4) if self.cpu_alone is not None else None
            ),
        }


def costs(exp: dict, cores: int) -> Costs | None:
    """The model's inputs from one experiment's summary figures; None without images."""
    images, batches = exp.get("images", 0), exp.get("batches", 0)
    if not images or not batches:
        return None
    cpu, wall = exp["stage_cpu_s"], exp["stage_wall_s"]
    compute_cpu = sum(cpu.get(s, 0.0) for s in COMPUTE_STAGES)
    compute_wall = sum(wall.get(s, 0.0) for s in COMPUTE_STAGES)
    stretch = max(1.0, compute_wall / compute_cpu) if compute_cpu > 0 else 1.0
    io_wait = sum(max(0.0, wall.get(s, 0.0) - cpu.get(s, 0.0) * stretch) for s in IO_STAGES)
    gil, known = 1.0, "not measured"
    workers = exp["workers"]
    if exp["backend"] == "thread" and workers >= 2 and compute_wall > 0:
        runq = exp.get("stage_runq_s", {})
        if all(s in runq for s in COMPUTE_STAGES if s in wall):
            # the time not spent waiting for a core is on it or waiting for the GIL
            on_or_gil = compute_wall - sum(runq.get(s, 0.0) for s in COMPUTE_STAGES)
            per_wall = min(1.0, compute_cpu / on_or_gil) if on_or_gil > 0 else 1.0
        else:  # no run-queue times: estimate the cores the threads could have had
            others = max(0.0, exp.get("concurrent_workers", workers) - workers)
            free = cores - others - exp.get("other_load_cores", 0.0)
            core_share = min(1.0, max(0.5, free) / workers)
            per_wall = min(1.0, compute_cpu / compute_wall / core_share)
        gil = min(1.0, 1.0 / (workers * per_wall)) if per_wall > 0 else 1.0
        known = "measured" if per_wall < GIL_SATURATED else "upper bound"
    return Costs(
        batch_size=max(1, round(images / batches)),
        cpu=sum(cpu.get(s, 0.0) for s in WORKER_STAGES) / images,
        io_wait=io_wait / images,
        copy=cpu.get("collate", 0.0) / images,
        gil=gil,
        gil_known=known,
        step=wall.get("step", 0.0) / batches,
        step_cpu=cpu.get("step", 0.0) / batches,
        backend=exp["backend"],
        transfer=wall.get("transfer", 0.0) / batches,
        overhead=_untraced(exp),
        cpu_alone=(
            exp["uncontended_cpu_per_image_ms"] / 1e3
            if exp.get("uncontended_cpu_per_image_ms")
            else None
        ),
    )


def _untraced(exp: dict) -> float:
    """CPU per image the experiment's processes spent outside its traced stages (the loop's
    Python, queues, pickling), from their CPU times; 0 without them."""
    if not exp.get("process_cores") or not exp.get("images_per_s"):
        return 0.0
    return max(0.0, exp["process_cores"] - exp["cpu_cores_used"]) / exp["images_per_s"]


@dataclass(frozen=True)
class Rate:
    """A configuration's rate alone (images/s), the cores it would use, its runnable threads,
    and what bounds it: "loop", "workers", "gil" or, once shared, "cores"."""

    images_per_s: float
    demand: float
    threads: float
    bound: str


def alone(c: Costs, backend: str, workers: int) -> Rate:
    """The rate of ``backend`` with ``workers`` given all the cores it wants."""
    b = c.batch_size
    cpu = c.cpu_on(backend)
    transfer = c.transfer_for(backend)
    loop_cpu = (c.step_cpu + transfer) / b + c.overhead_on(backend)
    if backend == "serial" or workers == 0:
        rate = b / (c.step + transfer + b * (cpu + c.io_wait))
        return Rate(rate, rate * (cpu + loop_cpu), 1.0, "loop")
    own_copy = c.worker_copy_for(backend)
    bounds = {
        "workers": workers * b / (b * (cpu + c.io_wait) + own_copy),
        "loop": b / (c.step + transfer) if c.step + transfer > 0 else math.inf,
    }
    if backend == "thread" and c.gil * cpu > 0:
        bounds["gil"] = 1.0 / (c.gil * cpu)
    bound = min(bounds, key=bounds.get)
    rate = bounds[bound]
    demand = rate * (cpu + own_copy / b + loop_cpu)
    loop_busy = (c.step_cpu + transfer) / (c.step + transfer) if c.step + transfer > 0 else 0.0
    return Rate(rate, demand, workers + loop_busy, bound)


def share(rates: list[Rate], cores: float) -> list[Rate]:
    """Rates once experiments running at once share ``cores``: max-min fair per thread."""
    if sum(r.demand for r in rates) <= cores:
        return rates
    level = _fill_level([(r.demand, r.threads) for r in rates], cores)
    out = []
    for r in rates:
        given = min(r.demand, r.threads * level)
        if given < r.demand * (1 - 1e-9):
            out.append(Rate(r.images_per_s * given / r.demand, given, r.threads, "cores"))
        else:
            out.append(r)
    return out


def _fill_level(needs: list[tuple[float, float]], cores: float) -> float:
    """The per-thread share L with sum(min(demand, threads x L)) == cores."""
    needs = sorted(needs, key=lambda n: n[0] / n[1])
    left, threads = cores, sum(t for _, t in needs)
    for demand, t in needs:
        if demand / t * threads <= left:
            left -= demand
            threads -= t
        else:
            break
    return left / threads if threads > 0 else math.inf


def predict(group: list[tuple[Costs, str, int]], cores: float) -> list[Rate]:
    """Rates of experiments running at once, each ``(costs, backend, workers)``."""
    return share([alone(c, b, n) for c, b, n in group], cores)


@dataclass
class Choice:
    backend: str
    workers: int
    rate: Rate
    notes: list[str] = field(default_factory=list)


def candidates(max_workers: int, available: tuple[str, ...]) -> list[tuple[str, int]]:
    """Every configuration worth predicting: serial, and each parallel backend at 1 to
    ``max_workers`` workers."""
    out = [("serial", 0)] if "serial" in available else []
    for backend in CANDIDATE_BACKENDS[1:]:
        if backend in available:
            out += [(backend, n) for n in range(1, max_workers + 1)]
    return out


def best_allocation(
    group: list[tuple[Costs, str, int]],
    cores: int,
    available: tuple[str, ...],
    slack: float = 0.03,
    starve: float = 0.5,
    max_workers: int | None = None,
) -> list[Choice]:
    """The configurations (one per experiment running at once) that maximise the summed
    images/s, each experiment keeping at least ``starve`` of what it would get alone on its
    fair share of the cores. Among those within ``slack`` of the best sum: the fewest
    workers (a serial loop counts as one), then the lightest backends (``_backend_rank``),
    then the fewest changes (of backend, of worker count), then the most images/s.
    ``cores`` may be a fraction (those free of other work);
    ``max_workers`` defaults to 2 x cores."""
    max_workers = max_workers or max(1, round(2 * cores))
    options = []
    for _, backend, workers in group:
        opts = candidates(max_workers, available)
        if (backend, workers) not in opts:
            opts.append((backend, workers))
        options.append(opts)
    fair, fair_choice = [], []
    for (c, _, _), opts in zip(group, options):
        on_share = [((b, n), _on_cores(alone(c, b, n), cores / len(group))) for b, n in opts]
        top = max(rate for _, rate in on_share)
        fair.append(top)
        near = [(o, r) for o, r in on_share if r >= (1 - slack) * top]
        fair_choice.append(min(near, key=lambda o_r: (max(o_r[0][1], 1), -o_r[1]))[0])

    def score(config):
        rates = predict([(c, b, n) for (c, _, _), (b, n) in zip(group, config)], cores)
        ok = all(r.images_per_s >= starve * f for r, f in zip(rates, fair))
        return rates, ok

    tried = []
    for config in _configurations(options, group, cores, slack, fair_choice):
        rates, ok = score(config)
        if ok:
            tried.append((config, rates))
    if not tried:  # nothing keeps every loop fed: keep the current configuration
        config = [(b, n) for _, b, n in group]
        tried = [(config, score(config)[0])]
    best = max(sum(r.images_per_s for r in rates) for _, rates in tried)

    def preference(item):
        config, rates = item
        workers = sum(max(n, 1) for _, n in config)  # a serial loop is a worker too
        rank = sum(_backend_rank(b, fine) for (b, _), fine in zip(config, light))
        changes = sum((b != cb) + (n != cn) for (b, n), (_, cb, cn) in zip(config, group))
        return (workers, rank, changes, -sum(r.images_per_s for r in rates))

    light = [threads_do(c) for c, _, _ in group]

    near = [item for item in tried if sum(r.images_per_s for r in item[1]) >= (1 - slack) * best]
    config, rates = min(near, key=preference)
    return [Choice(b, n, r) for (b, n), r in zip(config, rates)]


def _backend_rank(backend: str, threads_fine: bool) -> int:
    """Between configurations the model finds equal: threads first where ``threads_do``
    (they share the loop's memory and copy nothing), else processes first (a worker thread
    that holds the GIL delays the loop each time it wakes: up to a switch interval, 5 ms,
    per hand-over, which the model does not price); torch workers last (a new shared block
    per batch). A serial loop ranks with the first: its cost is in the worker count."""
    if backend == "serial":
        return 0
    order = ("thread", "process") if threads_fine else ("process", "thread")
    return order.index(backend) if backend in order else len(order)


def threads_do(c: Costs) -> bool:
    """Whether threads suit the pipeline as well as processes: it mostly waits on I/O, or a
    thread run measured that it holds the GIL for little of its CPU time (below
    ``THREADS_GIL_SHARE``). A pipeline whose
    GIL share is unknown is not moved to threads on a tie (the loop needs the GIL too)."""
    return c.io_wait >= c.cpu or (c.gil_known != "not measured" and c.gil < THREADS_GIL_SHARE)


def _on_cores(rate: Rate, cores: float) -> float:
    """Images/s of ``rate`` with at most ``cores`` to itself."""
    return rate.images_per_s * min(1.0, cores / rate.demand) if rate.demand > 0 else 0.0


def _configurations(options, group, cores, slack: float, start: list):
    """Every joint configuration when there are few; else the current one, then improve one
    experiment at a time from ``start`` (each on its fair share of the cores, so that every
    step keeps the others fed) for a few rounds, each step taking the fewest workers within
    ``slack`` of the best sum (past the cores, more workers only shift the share)."""
    if math.prod(len(o) for o in options) <= EXHAUSTIVE_LIMIT:
        yield from itertools.product(*options)
        return
    yield tuple((b, n) for _, b, n in group)
    config = list(start)
    yield tuple(config)
    for _ in range(3):
        for i, opts in enumerate(options):
            totals = []
            for option in opts:
                trial = config[:i] + [option] + config[i + 1 :]
                yield tuple(trial)
                rates = predict([(c, b, n) for (c, _, _), (b, n) in zip(group, trial)], cores)
                totals.append((option, sum(r.images_per_s for r in rates)))
            best = max(total for _, total in totals)
            near = [(o, t) for o, t in totals if t >= (1 - slack) * best]
            config[i] = min(near, key=lambda ot: (max(ot[0][1], 1), -ot[1]))[0]
