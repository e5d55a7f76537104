"""Running experiments as separate OS processes, all at once or one after another, each
measured for its window (``augment.profiler.measure``), with their progress on the console;
then the report of what they traced."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from augment.profiler.experiment import Config, Experiment

STOP_GRACE_S = 4.0


def _experiment_main(experiment: Experiment, trace_dir: str, progress, together) -> None:
    """Body of one experiment process."""
    from augment.profiler.measure import run

    try:
        run(
            experiment,
            trace_dir,
            progress=lambda event, value: progress.put((experiment.name, event, value)),
            together=together,
        )
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        progress.put((experiment.name, "end", None))


class Runner:
    """Runs experiments as separate OS processes (all at once, or one after another), with
    their progress on the console; Ctrl-C stops them all within a few seconds, keeping what
    was traced."""

    def __init__(self, experiments: list[Experiment], trace_dir: Path, quiet: bool):
        self.experiments, self.trace_dir, self.quiet = experiments, trace_dir, quiet
        self.ctx = mp.get_context("spawn")
        self.progress = self.ctx.Queue()
        self.running: list = []
        self.together = None

    def run(self, concurrent: bool) -> bool:
        """True when every experiment finished; False when interrupted."""
        from augment.profiler.measure import Together
        from augment.profiler.progress import Console

        windows = {e.name: e.measured_seconds or e.batches for e in self.experiments}
        console = None if self.quiet else Console(windows)
        listener = threading.Thread(target=self._listen, args=(console,), daemon=True)
        listener.start()
        try:
            groups = [self.experiments] if concurrent else [[e] for e in self.experiments]
            for group in groups:
                # experiments at once warm up, then measure over the same window
                self.together = Together(self.ctx, len(group)) if len(group) > 1 else None
                self.running = [
                    self.ctx.Process(
                        target=_experiment_main,
                        name=e.name,
                        args=(e, str(self.trace_dir), self.progress, self.together),
                    )
                    for e in group
                ]
                for p in self.running:
                    p.start()
                self._join()
                failed = [p.name for p in self.running if p.exitcode != 0]
                if failed:
                    raise RuntimeError(f"experiment(s) {', '.join(failed)} failed (see above)")
            return True
        except KeyboardInterrupt:
            self.stop()
            return False
        finally:
            self.progress.put(None)
            listener.join(2)
            if console is not None:
                console.close()

    def _join(self) -> None:
        """Wait for the group; one that fails releases the others (barrier, window)."""
        while any(p.is_alive() for p in self.running):
            for p in self.running:
                p.join(0.2)
                if self.together is not None and p.exitcode not in (None, 0):
                    self.together.abort()

    def stop(self) -> None:
        """Ctrl-C to every experiment (each closes its loader), then kill what lingers."""
        for p in self.running:
            if p.is_alive():
                try:
                    os.kill(p.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + STOP_GRACE_S
        for p in self.running:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in self.running:
            if p.is_alive():
                p.kill()
                p.join(1)

    def _listen(self, console) -> None:
        while True:
            try:
                message = self.progress.get(timeout=0.5)
            except queue.Empty:
                continue
            except (EOFError, OSError):
                return
            if message is None:
                return
            if console is not None:
                console(*message)


def profile(
    experiments: list[Experiment], concurrent: bool, out: Path, quiet: bool
) -> tuple[int, dict | None]:
    """Run, trace and report ``experiments`` into ``out``: (exit code, summary or None)."""
    from augment.profiler.report import write_report
    from augment.profiler.report.summary import markdown

    trace_dir = out / "traces"
    trace_dir.mkdir(parents=True, exist_ok=True)
    mode = "at once" if concurrent else "one after another"
    if not quiet:
        print(f"{len(experiments)} experiment(s), {mode}, tracing into {trace_dir}")
    finished = Runner(experiments, trace_dir, quiet).run(concurrent)
    if not finished:
        print("interrupted: reporting what was traced so far", file=sys.stderr)
    try:
        summary = write_report(trace_dir, out)
    except ValueError as exc:
        print(f"no report: {exc}", file=sys.stderr)
        return (130 if not finished else 1), None
    print(markdown(summary))
    print(f"report: {out}/timeline.png, throughput.png, summary.md, summary.json, trace.json")
    return (0 if finished else 130), summary


@contextlib.contextmanager
def serving(config: Config):
    """Start the config's image server (if any) and point ``data = "server"`` at it."""
    if config.server is None:
        yield config.experiments
        return
    from augment.sources.serve import Served

    server = config.server
    with Served(
        server.root,
        latency_ms=server.latency_ms,
        jitter_ms=server.jitter_ms,
        fail_rate=server.fail_rate,
    ) as served:
        print(f"serving {server.root} at {served.url} ({server.latency_ms:g} ms per request)")
        yield [
            replace(e, data=served.url, names_from=server.root) if e.data == "server" else e
            for e in config.experiments
        ]
