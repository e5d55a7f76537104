"""scripts/overhead.py runs (a tiny pass, no timings asserted): the per-image path over 1x1
images gives one figure per pass and the stages of a staged dataset."""

from __future__ import annotations

import json
from pathlib import Path

import overhead  # scripts/, on pytest's pythonpath
from support import ROOT


def test_one_measurement_reports_each_pass_and_the_stages(capsys):
    overhead.main(["--one", str(ROOT), "--images", "10", "--batch-size", "4", "--reps", "2"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert Path(result["augment"]) == ROOT / "augment"
    assert len(result["us_per_image"]) == 2 and all(t > 0 for t in result["us_per_image"])
    assert set(result["stages"]) == {"read", "decode", "augment", "collate"}


def test_the_table_names_both_revisions_and_every_stage():
    run = {"us_per_image": [100.0, 110.0], "stages": {"read": 5.0, "augment": 40.0}, "kernel": "x"}
    faster = {"us_per_image": [50.0, 52.0], "stages": {"read": 1.0, "augment": 20.0}, "kernel": "x"}

    class Args:
        images, batch_size, rounds, reps = 10, 4, 1, 2

    table = overhead._table({"before": [run], "after": [faster]}, Args, "abc", "def")
    assert "| whole path (make_batch) | 105.0 | 51.0 | 0.49x (paired: 0.49x) |" in table
    assert "| stage `augment` | 40.0 | 20.0 | 0.50x |" in table
