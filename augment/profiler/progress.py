"""What the profiler shows while experiments run: on a terminal, one tqdm bar per running
experiment, made when its measured window opens (so its rate is the window's, not the
start-up's); in a log file (output that is not a terminal: CI, nohup), one line when a window
opens and one when it closes, without control codes."""

from __future__ import annotations

import sys
import time


class Console:
    """Hears ``(experiment, event, value)`` from the experiments' processes: ("measuring",
    the window in words), ("images", n) per measured batch, ("end", None)."""

    def __init__(self, windows: dict[str, float | int], stream=None, terminal: bool | None = None):
        """``windows``: each experiment's window, seconds (float) or batches (int)."""
        self.windows = windows
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self.runs: dict[str, _Run] = {}
        self.position = 0

    def __call__(self, name: str, event: str, value) -> None:
        if event == "measuring":
            self.runs[name] = _Run(name, self.windows.get(name), value, self)
        elif name in self.runs:
            run = self.runs[name]
            if event == "images":
                run.add(value)
            elif event == "end":
                run.close()

    def close(self) -> None:
        for run in self.runs.values():
            run.close()

    def bar(self, name: str, window):
        from tqdm import tqdm

        self.position += 1
        by_time = isinstance(window, float)
        return tqdm(
            total=window,
            desc=name,
            position=self.position - 1,
            leave=True,
            file=self.stream,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| "
            + ("{n:.1f}/{total:g} s" if by_time else "{n_fmt}/{total_fmt} batches")
            + "{postfix}",
        )

    def line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


class _Run:
    """One experiment's measured window on the console."""

    def __init__(self, name: str, window, words: str, console: Console):
        self.name, self.window, self.console = name, window, console
        self.opened = time.monotonic()
        self.first = self.last = None
        self.images = self.batches = self.counted = 0
        self.closed = False
        if console.terminal:
            self.bar = console.bar(name, window)
        else:
            self.bar = None
            console.line(f"{name}: measuring for {words}")

    def add(self, images: int) -> None:
        now = time.monotonic()
        self.batches += 1
        self.images += images
        if self.first is None:
            self.first = now  # the rate counts from the first batch's hand-over, as the report
        else:
            self.counted += images
        self.last = now
        if self.bar is not None:
            progress = now - self.opened if isinstance(self.window, float) else self.batches
            self.bar.n = min(progress, self.bar.total) if self.bar.total else progress
            self.bar.set_postfix_str(f"{self.images:,} img, {self.rate():,.0f} img/s")

    def rate(self) -> float:
        span = (self.last - self.first) if self.first is not None else 0.0
        return self.counted / span if span > 0 else 0.0

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        seconds = (self.last or time.monotonic()) - self.opened
        if self.bar is not None:
            self.bar.close()
        else:
            self.console.line(
                f"{self.name}: {self.images:,} images in {seconds:.2f} s, {self.rate():,.0f} img/s"
            )
