"""Where users run the Loader: a notebook with its code in cells, a script without a main
guard, the fork and forkserver start methods, and a worker that cannot import what it was
sent. Each runs as its own real process (a Jupyter kernel, ``python script.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from support import ROOT, SAMPLE, hang_guard, leaked_psm, psm_names

import augment


def run_script(path: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=path.parent,
        env=env,
    )


# --------------------------------------------------------------------------- notebooks

NOTEBOOK_CELLS = [
    """
    import numpy as np
    import torch
    from PIL import Image
    import augment

    SAMPLE = {sample!r}
    """,
    """
    class Tiles(torch.utils.data.Dataset):  # defined in the notebook, not importable
        def __init__(self, root, n):
            self.paths = sorted(Path(root).glob("*.jpg"))[:n]
        def __len__(self):
            return len(self.paths)
        def __getitem__(self, i):
            return Image.open(self.paths[i]).convert("RGB"), i
    from pathlib import Path
    """,
    """
    def my_flip(img, rng):
        return img[:, ::-1] if rng.random() < 0.5 else img
    """,
    """
    pipeline = augment.Compose([my_flip, lambda img, rng: img[16:80, 16:80]])
    out = {{}}
    for backend, workers in [("serial", 0), ("thread", 2), ("process", 2), ("torch", 2)]:
        with augment.Loader(Tiles(SAMPLE, 12), pipeline, batch_size=4, backend=backend,
                            workers=workers, seed=3) as loader:
            out[backend] = [(x.clone(), y.clone()) for x, y in loader]
    same = {{
        b: all(torch.equal(x, u) and torch.equal(y, v)
               for (x, y), (u, v) in zip(out["serial"], out[b]))
        for b in out
    }}
    print("SAME", sorted(b for b, ok in same.items() if ok))
    print("SHAPES", sorted({{tuple(x.shape) for x, _ in out["process"]}}))
    """,
]


def test_code_defined_in_notebook_cells_runs_on_every_backend(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(textwrap.dedent(c).format(sample=str(SAMPLE)).strip())
        for c in NOTEBOOK_CELLS
    ]
    client = nbclient.NotebookClient(
        notebook,
        timeout=180,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    with hang_guard(240):
        client.execute(env={**os.environ, "PYTHONPATH": str(ROOT)})
    text = "".join(
        o.get("text", "") for o in notebook.cells[-1].outputs if o.get("name") == "stdout"
    )
    assert "SAME ['process', 'serial', 'thread', 'torch']" in text, text
    assert "SHAPES [(4, 3, 64, 64)]" in text, text


# --------------------------------------------------------------------------- main guard

UNGUARDED = """
import augment

dataset = augment.ImageFolder({sample!r}, {labels!r})
loader = augment.Loader(dataset, augment.kaggle_pipeline(crop=64), batch_size=8,
                        backend={backend!r}, workers=2)
for images, labels in loader:
    pass
print("trained")
"""


@pytest.mark.parametrize("backend", ["process", "torch"])
def test_a_script_without_a_main_guard_fails_at_once_saying_why(tmp_path, backend):
    script = tmp_path / "train.py"
    script.write_text(
        UNGUARDED.format(sample=str(SAMPLE), labels=str(SAMPLE / "labels.csv"), backend=backend)
    )
    started = time.monotonic()
    done = run_script(script, timeout=60)
    took = time.monotonic() - started
    assert done.returncode != 0
    assert "trained" not in done.stdout
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("RuntimeError: ") and 'if __name__ == "__main__":' in last, last
    assert "backend 'thread'" in last
    # the workers' own words name the start method they were made with, spawn (the default)
    worker_lines = [x for x in done.stderr.splitlines() if x.startswith("augment: ")]
    assert worker_lines and all("the 'spawn' start method" in x for x in worker_lines), worker_lines
    assert "Empty" not in done.stderr  # no chained queue.Empty
    assert "During handling of the above exception" not in done.stderr
    print(f"{backend}: failed after {took:.1f} s")  # docs report it; no timing assertion


GUARDED = """
import augment

def main():
    dataset = augment.ImageFolder({sample!r}, {labels!r})
    with augment.Loader(dataset, augment.kaggle_pipeline(crop=64), batch_size=8,
                        backend="process", workers=2) as loader:
        print("batches", sum(1 for _ in loader))

if __name__ == "__main__":
    main()
"""


def test_the_same_script_with_a_main_guard_trains(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(GUARDED.format(sample=str(SAMPLE), labels=str(SAMPLE / "labels.csv")))
    done = run_script(script)
    assert done.returncode == 0, done.stderr
    assert "batches 16" in done.stdout


# --------------------------------------------------------------------------- start methods

START_METHOD = """
import warnings
import augment

warnings.simplefilter("error")  # a leak warning would fail the run

def main():
    dataset = augment.ImageFolder({sample!r}, {labels!r})
    batches = {{}}
    for backend, options in [("process", {{}}), ("process", {{"start_method": {method!r}}}),
                             ("torch", {{"start_method": {method!r}}})]:
        with augment.Loader(dataset, augment.kaggle_pipeline(crop=64), batch_size=16,
                            backend=backend, workers=2, backend_options=options) as loader:
            batches[(backend, bool(options))] = [x for _ in range(2) for x, _ in loader]
    reference = batches[("process", False)]
    for key, got in batches.items():
        same = len(got) == len(reference) and all(
            (a == b).all() for a, b in zip(got, reference))
        print(key, "same" if same else "DIFFERENT")

if __name__ == "__main__":
    main()
"""


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_fork_and_forkserver_give_the_same_batches_and_close_cleanly(tmp_path, method):
    script = tmp_path / "train.py"
    script.write_text(
        START_METHOD.format(sample=str(SAMPLE), labels=str(SAMPLE / "labels.csv"), method=method)
    )
    before = psm_names()
    done = run_script(script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("same") == 3, done.stdout
    for noise in ("resource_tracker", "leaked", "FileNotFoundError", "Warning", "Traceback"):
        assert noise not in done.stderr, done.stderr
    assert leaked_psm(before) == set()


# --------------------------------------------------------------------------- worker set-up


@pytest.mark.parametrize("backend", ["process", "torch"])
def test_a_worker_that_cannot_import_the_dataset_says_what_failed(tmp_path, backend):
    module = tmp_path / "vanishing_dataset.py"
    module.write_text(
        "import numpy as np\n"
        "class Data:\n"
        "    def __len__(self):\n"
        "        return 4\n"
        "    def __getitem__(self, i):\n"
        "        return np.zeros((8, 8, 3), np.uint8)\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        from vanishing_dataset import Data
    finally:
        sys.path.remove(str(tmp_path))
    module.unlink()  # importable here (already imported), but not in a new worker process
    loader = augment.Loader(Data(), batch_size=2, backend=backend, workers=1)
    try:
        with hang_guard(120), pytest.raises(RuntimeError) as caught:
            list(loader)
    finally:
        del sys.modules["vanishing_dataset"]
    message = str(caught.value)
    assert "ModuleNotFoundError" in message and "vanishing_dataset" in message, message
    loader.close()
