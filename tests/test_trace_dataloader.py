"""Tracing an unchanged torch DataLoader script: ``python -m augment.trace``, the
environment variables, ``instrument()``; every worker count, persistent workers, start
methods, iterable datasets, several loaders; same batches and same exceptions as untraced;
nothing left behind. Real scripts in real processes with real DataLoader workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from support import ROOT, SAMPLE, hang_guard, leaked_psm, shm_names

import augment
from augment.trace import instrument, load
from augment.trace.schema import CONSUMER_LANE

SCRIPT = """
import json, os, sys
import numpy as np
import torch
from pathlib import Path
from PIL import Image
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

SAMPLE = Path({sample!r})


class Tiles(Dataset):
    def __init__(self, n, fail_at=None):
        self.paths, self.fail_at = sorted(SAMPLE.glob("*.jpg"))[:n], fail_at

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        if i == self.fail_at:
            raise ValueError(f"sample {{i}} is broken")
        img = np.asarray(Image.open(self.paths[i]).convert("RGB"))[:64, :64]
        return torch.from_numpy(img.copy()).permute(2, 0, 1), i, os.getpid()


class Stream(IterableDataset):
    def __init__(self, n):
        self.n = n

    def __iter__(self):
        info = get_worker_info()
        first, step = (0, 1) if info is None else (info.id, info.num_workers)
        for i in range(first, self.n, step):
            yield torch.full((3, 8, 8), i, dtype=torch.uint8), i, os.getpid()


def run(loader, epochs):
    out = {{"pids": set(), "batches": 0, "checksum": 0, "order": []}}
    for _ in range(epochs):
        for images, index, pid in loader:
            out["pids"] |= set(pid.tolist())
            out["batches"] += 1
            out["checksum"] += int(images.long().sum())
            out["order"] += index.tolist()
    out["pids"] = sorted(out["pids"])
    return out


def main():
    config = json.loads(sys.argv[1])
    workers = config["workers"]
    options = dict(num_workers=workers, batch_size=config.get("batch", 8))
    if workers:
        options["persistent_workers"] = config.get("persistent", False)
        options["multiprocessing_context"] = config.get("context", "spawn")
    if config.get("pin"):
        options["pin_memory"] = True
    if config.get("iterable"):
        data = Stream(24)
    else:
        data = Tiles(24, config.get("fail_at"))
    results = {{"train": run(DataLoader(data, shuffle=False, **options), config.get("epochs", 2))}}
    if config.get("validation"):
        results["val"] = run(DataLoader(Tiles(8), batch_size=4), 1)
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    main()
"""


def script(tmp_path: Path) -> Path:
    path = tmp_path / "train.py"
    path.write_text(SCRIPT.format(sample=str(SAMPLE)))
    return path


def run(tmp_path, config: dict, traced: str | None = "module", env: dict | None = None):
    """Run the training script; ``traced`` is "module" (python -m augment.trace), "env"
    (AUGMENT_TRACE_DIR only) or None. Returns (completed process, result, trace folder)."""
    out = tmp_path / f"trace-{len(list(tmp_path.iterdir()))}"
    command = [sys.executable]
    if traced == "module":
        command += ["-m", "augment.trace", "--out", str(out), "--experiment", "mine"]
    command += [str(script(tmp_path)), json.dumps(config)]
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    environment.pop("AUGMENT_TRACE_DIR", None)
    if traced == "env":
        environment.update(AUGMENT_TRACE_DIR=str(out), AUGMENT_EXPERIMENT="mine")
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=240, cwd=tmp_path, env=environment
    )
    result = None
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
    return done, result, out


def lanes(spans: list[dict], experiment: str = "mine") -> dict:
    by_lane = defaultdict(list)
    for s in spans:
        if s["experiment"] == experiment:
            by_lane[(s["pid"], s["worker"])].append(s)
    return by_lane


def check_batches(trace, result: dict, workers: int, batches: int) -> None:
    by_lane = lanes(trace.spans)
    loop = [k for k in by_lane if k[1] == CONSUMER_LANE]
    assert len(loop) == 1
    loop_spans = by_lane.pop(loop[0])
    assert sum(s["stage"] == "wait" for s in loop_spans) == batches
    assert sum(s["stage"] == "step" for s in loop_spans) == batches
    worker_pids = {pid for pid, _ in by_lane}
    if workers == 0:
        assert worker_pids == {loop[0][0]} and {w for _, w in by_lane} == {0}
    else:
        assert worker_pids == set(result["train"]["pids"])  # the real worker processes
        assert {w for _, w in by_lane} == set(range(workers))
    made = [s for spans in by_lane.values() for s in spans]
    assert sorted(s["stage"] for s in made) == ["collate"] * batches + ["load"] * batches
    for s in made:
        assert s["end_ns"] >= s["start_ns"] and s["cpu_ns"] >= 0
    assert {s["backend"] for s in trace.spans} == {"dataloader"}


# --------------------------------------------------------------------------- the module


@pytest.mark.parametrize(
    "config",
    [
        {"workers": 0},
        {"workers": 1},
        {"workers": 2, "persistent": True},
        {"workers": 2, "context": "fork"},
        {"workers": 2, "context": "forkserver", "persistent": True},
        {"workers": 2, "iterable": True},
        {"workers": 1, "pin": True},
    ],
    ids=["w0", "w1", "w2-persistent", "w2-fork", "w2-forkserver", "iterable", "pin"],
)
def test_python_m_augment_trace_traces_every_batch_and_changes_nothing(tmp_path, config):
    plain, expected, _ = run(tmp_path, config, traced=None)
    assert plain.returncode == 0, plain.stderr
    done, result, out = run(tmp_path, config)
    assert done.returncode == 0, done.stderr
    # same batches, same order
    assert result["train"]["checksum"] == expected["train"]["checksum"]
    assert result["train"]["order"] == expected["train"]["order"]
    batches = result["train"]["batches"]
    assert batches == expected["train"]["batches"] == (8 if config.get("iterable") else 6)
    trace = load(out)
    check_batches(trace, result, config["workers"], batches=batches)
    waits = [s["epoch"] for s in trace.spans if s["stage"] == "wait"]
    assert waits == [0] * (batches // 2) + [1] * (batches // 2)
    if not config.get("iterable"):  # tagged by the batch sampler: the loop's epoch and batch
        loads = sorted((s["epoch"], s["batch"]) for s in trace.spans if s["stage"] == "load")
        assert loads == [(e, b) for e in (0, 1) for b in range(batches // 2)]
    assert (out / "timeline.png").stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    (mine,) = summary["experiments"]
    assert mine["backend"] == "dataloader" and mine["workers"] == config["workers"]
    if mine["too_short"]:  # 6 small batches: on a fast machine under 0.3 s steady
        assert mine["bottleneck"] == "too short to judge"
        assert mine["too_short"].startswith(f"too short to judge: {batches} batches in ")
    elif not config.get("iterable"):  # decoding JPEGs in __getitem__ is the work here
        assert mine["bottleneck"] in ("data: load", "training step", "cpu oversubscribed")
    assert set(mine["stage_cpu_s"]) == {"load", "collate", "wait", "step"}


def test_a_worker_exception_reaches_the_loop_as_torch_raises_it(tmp_path):
    config = {"workers": 2, "fail_at": 5}
    plain, _, _ = run(tmp_path, config, traced=None)
    done, _, out = run(tmp_path, config)
    assert plain.returncode == done.returncode == 1
    last = [line for line in done.stderr.splitlines() if line.startswith("ValueError")]
    assert last and last == [
        line for line in plain.stderr.splitlines() if line.startswith("ValueError")
    ]
    assert "Caught ValueError in DataLoader worker process" in done.stderr
    assert "sample 5 is broken" in done.stderr
    assert out.is_dir()  # what was traced before is kept


def test_train_and_validation_loaders_are_two_experiments(tmp_path):
    done, _, out = run(tmp_path, {"workers": 0, "validation": True, "epochs": 1})
    assert done.returncode == 0, done.stderr
    trace = load(out)
    assert trace.experiments() == ["mine", "mine.2"]
    assert sum(s["stage"] == "wait" for s in trace.spans if s["experiment"] == "mine.2") == 2


def test_the_environment_traces_a_script_that_never_imports_augment(tmp_path):
    # the data path it embeds may well contain the word (a clone into a folder "augment")
    code = script(tmp_path).read_text().replace(str(SAMPLE), "DATA")
    assert "augment" not in code
    done, result, out = run(tmp_path, {"workers": 2}, traced="env")
    assert done.returncode == 0, done.stderr
    check_batches(load(out), result, 2, batches=6)


def test_nothing_is_left_in_dev_shm_or_as_a_process(tmp_path):
    before = shm_names()
    done, _, _ = run(tmp_path, {"workers": 2, "persistent": True})
    assert done.returncode == 0, done.stderr
    assert leaked_psm(before, ("psm_", "sem.mp-", "torch_")) == set()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path / "train.py") not in ps


def test_a_missing_script_is_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "augment.trace", str(tmp_path / "nope.py")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 2
    assert (
        done.stderr.strip() == f"python -m augment.trace: no script {str(tmp_path / 'nope.py')!r}"
    )


# --------------------------------------------------------------------------- instrument()


class Squares(torch.utils.data.Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        return torch.full((2,), i)


@pytest.mark.parametrize("workers", [0, 2])
def test_instrument_traces_one_loader_and_leaves_others_alone(tmp_path, workers):
    traced = torch.utils.data.DataLoader(Squares(), batch_size=4, num_workers=workers)
    other = torch.utils.data.DataLoader(Squares(), batch_size=5)
    tracer = augment.Tracer(tmp_path, experiment="one", sample_cpu=False)
    assert instrument(traced, tracer) is traced
    with hang_guard(120):
        batches = [b.clone() for b in traced]
        assert len(list(other)) == 2
    tracer.close()
    assert [b[:, 0].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    trace = load(tmp_path)
    assert trace.experiments() == ["one"]
    loads = [s for s in trace.spans if s["stage"] == "load"]
    assert sorted(s["batch"] for s in loads) == [0, 1, 2]
    assert sorted(s["images"] for s in loads) == [2, 4, 4]


def test_instrument_refuses_what_is_not_a_dataloader(tmp_path):
    with pytest.raises(ValueError, match="takes a torch.utils.data.DataLoader"):
        instrument([1, 2], augment.Tracer(tmp_path, sample_cpu=False))


def test_a_batch_is_counted_by_its_first_tensor_or_its_list_of_names():
    from augment.trace.dataloader import _batch_size

    images, labels = torch.zeros(5, 3, 8, 8), torch.zeros(5)
    assert _batch_size((images, labels)) == 5
    assert _batch_size([images, labels]) == 5
    assert _batch_size({"name": [f"f{i}" for i in range(5)], "image": images}) == 5
    assert _batch_size({"name": ["a", "b", "c"]}) == 3
    assert _batch_size({"image": images, "boxes": [torch.zeros(7, 4)] * 5}) == 5
    assert _batch_size(torch.tensor(3.0)) == 1
    assert _batch_size({}) == 0
