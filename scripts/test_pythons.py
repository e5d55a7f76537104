"""Run the quick part of the test suite on every Python that setup.cfg claims.

    python scripts/test_pythons.py [--pythons 3.10 3.12 3.13] [--tests FILE ...]

For each version: find its interpreter (pyenv's, else ``pythonX.Y`` on PATH), make a venv in
``.venv-pythons/X.Y``, install the package with its dependencies and pytest, compile every
module and run the quick tests; then print one line per Python. torch is installed only as
the CPU build (from ``--torch-index``, PyTorch's CPU index, or a local wheel pip already
finds): PyPI has only the CUDA build, gigabytes with its nvidia-* packages. Without a CPU
torch the package is installed with every other dependency and the quick tests, which import
no torch, run all the same (the line says so). Exit status 1 when any Python failed.
``make test-pythons`` runs it; it is not part of CI (a venv per Python is a large download).
"""

from __future__ import annotations

import argparse
import configparser
import glob
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUMMARY = re.compile(r"\b\d+ (passed|failed|errors?)\b.* in [\d.]+s")
TORCH = "torch==2.13.0"
# the tests that start no process, notebook or install and need no torch (the Loader does);
# with the two that read the shipped TOML configs
QUICK = [
    "tests/test_functional.py",
    "tests/test_transforms.py",
    "tests/test_kernels.py",
    "tests/test_keyed_rng.py",
    "tests/test_warp_into.py",
    "tests/test_report.py",
    "tests/test_model.py",
    "tests/test_install.py::test_shipped_configs_by_name_and_paths_as_paths",
    "tests/test_install.py::test_config_paths_resolve_against_the_config_folder",
]


def interpreter(version: str) -> str | None:
    """pyenv's build of ``version``, else ``pythonX.Y`` on PATH: the first that runs (a pyenv
    shim of a version not selected does not)."""
    root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates = sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"))[::-1]
    candidates += [shutil.which(f"python{version}")]
    for path in filter(None, candidates):
        if subprocess.run([path, "-c", "pass"], capture_output=True).returncode == 0:
            return path
    return None


def requirements() -> list[str]:
    """install_requires without torch, and the fast extra (the default kernel and decoder)."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options"]["install_requires"].splitlines()
    lines += config["options.extras_require"]["fast"].splitlines()
    return [r.strip() for r in lines if r.strip() and not r.strip().startswith("torch")]


def run(cmd: list[str], log) -> bool:
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT).returncode == 0


def one(version: str, tests: list[str], torch_index: str, out: Path) -> tuple[bool, str]:
    python = interpreter(version)
    if python is None:
        return False, "no interpreter found (pythonX.Y on PATH or under pyenv)"
    venv = out / version
    log_path = out / f"{version}.log"
    with open(log_path, "w") as log:
        if not (venv / "bin" / "python").exists():
            if not run([python, "-m", "venv", str(venv)], log):
                return False, f"venv failed (see {log_path})"
        py = str(venv / "bin" / "python")
        pip = [py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        cpu = ["--only-binary", ":all:", "--retries", "0", "--timeout", "15"]
        torch = run([*pip, *cpu, TORCH, "--index-url", torch_index], log)
        torch = torch or run([*pip, "--no-index", TORCH], log)  # a local CPU wheel, if any
        if not run([*pip, *requirements(), "pytest>=8", "hypothesis>=6"], log):
            return False, f"installing the dependencies failed (see {log_path})"
        if not run([*pip, "--no-deps", "-e", "."], log):
            return False, f"installing augment failed (see {log_path})"
        # every module compiles on this Python, those the quick tests leave out too
        if not run([py, "-m", "compileall", "-q", "augment", "scripts", "tests"], log):
            return False, f"a module does not compile (see {log_path})"
        start = time.monotonic()
        passed = run([py, "-m", "pytest", "-p", "no:cacheprovider", "-rfE", *tests], log)
        took = time.monotonic() - start
    with open(log_path) as log:
        summary = [line.strip(" =\n") for line in log if SUMMARY.search(line)]
    version_line = subprocess.run(
        [str(venv / "bin" / "python"), "--version"], capture_output=True, text=True
    ).stdout.strip()
    note = "" if torch else ", without torch (no CPU build reachable)"
    result = summary[-1] if summary else "no test summary"
    return passed, f"{version_line}{note}: {result} ({took:.0f} s; log {log_path})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pythons", nargs="+", default=["3.10", "3.12", "3.13"])
    parser.add_argument("--tests", nargs="+", default=QUICK)
    parser.add_argument("--torch-index", default="https://download.pytorch.org/whl/cpu")
    parser.add_argument("--out", default=str(ROOT / ".venv-pythons"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    results = [(v, *one(v, args.tests, args.torch_index, out)) for v in args.pythons]
    for version, ok, line in results:
        print(f"{'ok  ' if ok else 'FAIL'} {version}: {line}")
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
