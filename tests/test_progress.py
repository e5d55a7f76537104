"""The profiler's console: one line per window in a log, one bar per running experiment on a
terminal, made when its window opens (its rate is the window's, not the start-up's)."""

from __future__ import annotations

import io
import time

from augment.profiler.progress import Console


def test_a_log_gets_a_line_per_window_and_no_control_codes():
    out = io.StringIO()
    console = Console({"a": 3.0, "b": 10}, stream=out, terminal=False)
    console("a", "measuring", "3 s")
    for _ in range(3):
        console("a", "images", 8)
        time.sleep(0.01)
    console("a", "end", None)
    console("b", "measuring", "10 batches")
    console("b", "images", 4)
    console("b", "end", None)
    console.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "a: measuring for 3 s"
    assert lines[1].startswith("a: 24 images in ") and lines[1].endswith(" img/s")
    # the rate counts from the first batch's hand-over, as the report: 16 images after it
    seconds = float(lines[1].split(" in ")[1].split(" s")[0])
    rate = float(lines[1].split(", ")[1].split(" img/s")[0].replace(",", ""))
    assert rate > 16 / max(seconds, 1e-9) * 0.5
    assert lines[2:] == ["b: measuring for 10 batches", lines[3]]
    assert lines[3].startswith("b: 4 images in ")
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()


def test_a_terminal_gets_a_bar_only_once_the_window_opens():
    out = io.StringIO()
    console = Console({"a": 2.0, "b": 2.0}, stream=out, terminal=True)
    console("b", "images", 8)  # not measuring yet (a warm-up message would not come, but)
    assert out.getvalue() == ""
    console("a", "measuring", "2 s")
    console("a", "images", 8)
    console("a", "images", 8)
    console("a", "end", None)
    console.close()
    text = out.getvalue()
    assert text.count("a: ") >= 1 and "b: " not in text
    assert "16 img" in text and "/2 s" in text
