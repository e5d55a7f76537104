"""One experiment's measured run: warm up, measure for a window, stop.

A window is sized by time, never by a count that suits one machine (``timeit``'s autorange,
Google Benchmark's min time): the loader starts its workers, makes ``warmup_batches`` batches,
and is then measured for ``seconds`` and at least as many batches as the report needs to
judge it, whatever the machine's speed. ``batches`` instead runs exactly that many measured
batches (a run the report may then call too short, honestly).

Experiments that run at once share a ``Together``: each warms up, waits for the others at a
barrier, and the measured window starts for all at the same moment; in a window sized by time,
each keeps running until every one of them has had its window, so they stop together and
each is measured while the others load the machine.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from augment.profiler.experiment import Experiment, build_transform, make_dataset
from augment.profiler.report.summary import MIN_BATCHES, MIN_STEADY_S
from augment.profiler.training_step import TrainingStep, images_and_targets

BARRIER_TIMEOUT_S = 600.0  # the slowest experiment's start-up, with room to spare
log = logging.getLogger("augment")


def warmup_batches(experiment: Experiment) -> int:
    """Batches an experiment makes before its measured window: enough for every worker to
    have started and made one."""
    return max(experiment.workers, 1) + 1


class Together:
    """What experiments running at once share (made by the runner, passed to each process):
    a barrier to start measuring at once and a count of those whose window is over."""

    def __init__(self, ctx, count: int):
        self.count = count
        self.barrier = ctx.Barrier(count)
        self.finished = ctx.Value("i", 0)

    def start(self, name: str) -> None:
        """Wait for the others; if one of them failed (the barrier is broken), go on: the
        runner reports the failure."""
        try:
            self.barrier.wait(BARRIER_TIMEOUT_S)
        except threading.BrokenBarrierError:
            log.warning(
                "experiment %r: the others did not reach the start together (one failed or "
                "took over %.0f s to start); measuring from now",
                name,
                BARRIER_TIMEOUT_S,
            )

    def finish(self) -> None:
        with self.finished.get_lock():
            self.finished.value += 1

    def all_finished(self) -> bool:
        return self.finished.value >= self.count

    def abort(self) -> None:
        """One of them failed: release the others from the barrier and from waiting."""
        self.barrier.abort()
        with self.finished.get_lock():
            self.finished.value = self.count


class Window:
    """When the measured part of a run is over (see the module's docstring). ``in_flight``:
    batches the loader may have begun before the window opened, which the report leaves
    out of the steady state."""

    def __init__(self, experiment: Experiment, in_flight: int, together: Together | None):
        self.batches, self.seconds = experiment.batches, experiment.measured_seconds
        self.needed = in_flight + MIN_BATCHES + 1
        self.together = together if self.batches is None else None
        self._opened = self._mine_done = None

    def open(self) -> None:
        self._opened = time.monotonic()
        self._mine_done = False

    def over(self, measured: int) -> bool:
        if self._opened is None:  # still warming up
            return False
        if self.batches is not None:
            return measured >= self.batches
        if not self._mine_done:
            elapsed = time.monotonic() - self._opened
            self._mine_done = elapsed >= max(self.seconds, MIN_STEADY_S) and measured >= self.needed
            if self._mine_done and self.together is not None:
                self.together.finish()
        return self._mine_done and (self.together is None or self.together.all_finished())


def run(
    experiment: Experiment,
    trace_dir: str | Path,
    progress=None,
    together: Together | None = None,
) -> int:
    """Run ``experiment`` traced into ``trace_dir``: warm up, then measure for its window.
    ``progress(event, value)`` hears ("measuring", the window in words) when the window
    opens and ("images", n) after each measured batch. Returns the images measured.

    The window's start is marked in the trace, so the report leaves the warm-up out. A run
    of ``batches`` alone starts measuring at once (the report counts from the first batch's
    hand-over, and gives the start-up apart)."""
    from augment.loading.loader import Loader
    from augment.trace import Tracer

    dataset = make_dataset(experiment)
    tracer = Tracer(trace_dir, experiment=experiment.name)
    # only a model needs the class count (a segmentation folder reads masks to find it)
    classes = len(dataset.classes) if experiment.step == "model" else 1
    step = TrainingStep(experiment.step, classes, experiment.task)
    warm_up = together is not None or experiment.batches is None
    warmup = warmup_batches(experiment) if warm_up else 0
    loader = Loader(
        dataset,
        build_transform(experiment.transform, mask_fill=experiment.mask_fill),
        batch_size=experiment.batch_size,
        backend=experiment.backend,
        workers=experiment.workers,
        seed=experiment.seed,
        tracer=tracer,
    )
    window = Window(experiment, loader.capacity, together)
    delivered = batches = measured = 0

    def open_window() -> None:
        if warm_up:
            waited_from = time.time_ns()
            if together is not None:
                together.start(experiment.name)
            tracer.mark_measured(waited_from)
        window.open()
        if progress is not None:
            progress("measuring", experiment.window)

    try:
        if not warm_up:
            open_window()
        while not window.over(measured):
            for batch in loader:
                images, targets = images_and_targets(batch)
                step(images, targets)
                batches += 1
                if batches <= warmup:
                    if batches == warmup:
                        open_window()
                    continue
                measured += 1
                if measured == 1:  # the steady state starts at this batch's hand-over
                    tracer.record_process_cpu(loader.worker_pids())
                delivered += len(images)
                if progress is not None:
                    progress("images", len(images))
                if window.over(measured):
                    tracer.record_process_cpu(loader.worker_pids())
                    break
    finally:
        loader.close()
    try:
        if needs_calibration(experiment):
            calibrate(experiment, dataset, tracer)
    finally:
        tracer.close()
    return delivered


CALIBRATE_S = 0.5


def needs_calibration(experiment: Experiment) -> bool:
    """Thread workers that contend for the GIL spend more CPU per image than the same work
    in a process of its own: only a run without them tells what processes would spend."""
    return experiment.backend == "thread" and experiment.workers >= 2


def calibrate(experiment: Experiment, dataset, tracer) -> None:
    """Make batches in this thread alone (a serial loader, no step) for ``CALIBRATE_S``
    (at least one batch), and record their CPU time per image."""
    from augment.loading.loader import Loader

    images = cpu_ns = 0
    started = time.monotonic()
    with Loader(
        dataset,
        build_transform(experiment.transform, mask_fill=experiment.mask_fill),
        batch_size=experiment.batch_size,
        backend="serial",
        seed=experiment.seed,
    ) as loader:
        batches = iter(loader)
        while images == 0 or time.monotonic() - started < CALIBRATE_S:
            before = time.thread_time_ns()
            try:
                batch = next(batches)
            except StopIteration:
                break
            cpu_ns += time.thread_time_ns() - before
            images += len(images_and_targets(batch)[0])
    if images:
        tracer.record_calibration(images, cpu_ns / 1e9)
