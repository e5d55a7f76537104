"""Which way imports run (README, "Layout"): the library imports nothing of the runtime or
the profiler; the sources nothing of the runtime or the profiler; the runtime nothing of the
profiler; tracing nothing of the runtime or the report (its command line aside); and a worker
process loads neither the recorder nor psutil."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT, SAMPLE

PACKAGE = ROOT / "augment"
# each part and the parts it must not import
FORBIDDEN = {
    "augment.ops": ("augment.sources", "augment.loading", "augment.profiler", "augment.trace"),
    "augment.sources": ("augment.loading", "augment.profiler"),
    "augment.loading": ("augment.profiler",),
    "augment.trace": ("augment.loading", "augment.profiler", "augment.ops", "augment.sources"),
}
ALLOWED = {"augment.trace.schema"}  # the span vocabulary is the ground floor of every part


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {name for name in found if name.startswith("augment")}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_imports_run_downwards(part):
    folder = ROOT / Path(*part.split("."))
    wrong = []
    for path in sorted(folder.rglob("*.py")):
        if path.name == "__main__.py":  # a command line may stand on top of everything
            continue
        for name in imports_of(path):
            if name in ALLOWED:
                continue
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[part]):
                wrong.append(f"{module_name(path)} imports {name}")
    assert wrong == []


def test_a_worker_process_loads_neither_the_recorder_nor_psutil(tmp_path):
    """A process-backend worker reports the modules it has loaded, by the pixels it makes:
    a transform that writes 1 where the recorder or psutil is loaded, 0 where not."""
    script = tmp_path / "check.py"
    script.write_text(
        f"""
import sys
import numpy as np
import augment

def report(img, rng):
    out = np.zeros((1, 3, 3), np.uint8)
    out[0, 0, 0] = "augment.trace.recorder" in sys.modules
    out[0, 0, 1] = "psutil" in sys.modules
    out[0, 0, 2] = "augment.profiler" in sys.modules
    return out

if __name__ == "__main__":
    dataset = augment.ImageFolder({str(SAMPLE)!r}, {str(SAMPLE / "labels.csv")!r})
    with augment.Loader(dataset, report, batch_size=2, backend="process", workers=1) as loader:
        images, _ = next(iter(loader))
    print("LOADED", images[0, :, 0, 0].tolist())
"""
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    [line] = [x for x in done.stdout.splitlines() if x.startswith("LOADED")]
    assert line == "LOADED [0, 0, 0]", line
