"""augment as a user installs it: a wheel of this checkout in a fresh venv (not editable),
``augment-profile`` run from an empty folder. And what that rests on: shipped configs found
by name, paths in a config taken from the config's folder, bad data refused in one line, and
the sample dataset made in the cache, byte for byte the repository's data/sample.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
from support import ROOT
from support import SAMPLE as SAMPLE_DIR

from augment.profiler.experiment import (
    CONFIGS,
    config_path,
    load_config,
    prepare,
    shipped_configs,
    uses_sample,
)
from augment.sources import sample_data
from augment.sources.sample_data import SAMPLE, SAMPLE_NAME, cache_dir, write_dataset

DATA = SAMPLE_DIR
SHIPPED = ["compare_backends", "kaggle_amazon", "seed_regimes", "segmentation"]
CLI = [sys.executable, "-c", "import sys; from augment.profiler.cli import main; sys.exit(main())"]


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without what would point Python at the checkout."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return {**env, **extra}


# --------------------------------------------------------------------------- installed


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> tuple[Path, Path]:
    """A fresh venv with a wheel of this checkout installed; the running interpreter's
    dependencies (torch...) visible through a .pth file rather than installed again.
    Returns (venv's python, venv's site-packages)."""
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "source"  # build from a copy: nothing written into the checkout
    source.mkdir()
    for name in ("setup.cfg", "setup.py", "augment-trace.pth", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("augment", "configs"):  # the package, and the configs it ships
        shutil.copytree(
            ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp / "wheels", source],
        check=True,
        env=clean_env(),
    )
    [wheel] = (tmp / "wheels").glob("augment-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", tmp / "venv"], check=True)
    python = tmp / "venv" / "bin" / "python"
    purelib = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # .pth files inside the listed folder are not processed: the editable augment is not seen
    (purelib / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [*pip, "--python", python, "install", "--no-deps", wheel], check=True, env=clean_env()
    )
    return python, purelib


def test_the_wheel_is_what_the_venv_imports(venv):
    python, purelib = venv
    done = subprocess.run(
        [
            python,
            "-c",
            "import augment.profiler.cli, augment.profiler.experiment as e; "
            "print(augment.__file__); print(e.CONFIGS); print(sorted(p.name for p in "
            "e.CONFIGS.glob('*.toml')))",
        ],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=purelib.parent,
        check=True,
    )
    module, configs, names = done.stdout.splitlines()
    assert Path(module).parent == purelib / "augment"
    assert not Path(module).is_relative_to(ROOT)
    assert Path(configs) == purelib / "augment" / "profiler" / "configs"
    assert names == str([f"{n}.toml" for n in SHIPPED])


def test_installed_cli_runs_from_any_folder_without_arguments_for_data(venv, tmp_path):
    python, purelib = venv
    work, cache = tmp_path / "work", tmp_path / "cache"
    work.mkdir()
    before = files_under(purelib)
    done = subprocess.run(
        [
            python.parent / "augment-profile",
            "--backends",
            "serial",
            "--workers",
            "0",
            "--batches",
            "2",
            "--batch-size",
            "8",
            "--quiet",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(AUGMENT_CACHE=str(cache)),
    )
    assert done.returncode == 0, done.stderr
    [run] = (work / "runs").iterdir()
    assert re.fullmatch(r"\d{8}-\d{6}", run.name), run.name
    summary = json.loads((run / "summary.json").read_text())
    [experiment] = summary["experiments"]
    assert experiment["name"] == "serial" and experiment["images"] == 2 * 8
    assert list(work.iterdir()) == [work / "runs"]
    # the sample dataset was made in the cache, whole, and nothing else was left there
    assert [p.name for p in cache.iterdir()] == [SAMPLE_NAME]
    assert len(list((cache / SAMPLE_NAME).glob("*.jpg"))) == SAMPLE["n"]
    assert files_under(purelib) == before  # nothing written into site-packages

    # every shipped config by name, from the installed package, on that sample
    check = textwrap.dedent("""
        from augment.profiler.experiment import config_path, load_config, prepare
        for name in ("kaggle_amazon", "compare_backends", "seed_regimes"):
            config = prepare(load_config(config_path(name)), name)
            roots = {e.data for e in config.experiments if e.data != "server"}
            roots |= {config.server.root} if config.server else set()
            print(config_path(name).parent, *roots)
    """)
    done = subprocess.run(
        [python, "-c", check],
        cwd=work,
        capture_output=True,
        text=True,
        env=clean_env(AUGMENT_CACHE=str(cache)),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    for line in done.stdout.splitlines():
        assert line.split() == [
            str(purelib / "augment" / "profiler" / "configs"),
            str(cache / SAMPLE_NAME),
        ]
    assert len(done.stdout.splitlines()) == 3


# --------------------------------------------------------------------------- configs


def test_shipped_configs_by_name_and_paths_as_paths(tmp_path):
    assert shipped_configs() == SHIPPED
    # one copy, at the top of the checkout (DESIGN's layout), installed with the package
    assert CONFIGS == ROOT / "configs"
    assert not (ROOT / "augment" / "profiler" / "configs").exists()
    for name in SHIPPED:
        assert config_path(name) == CONFIGS / f"{name}.toml"
        assert uses_sample(load_config(config_path(name)))  # no data given: the sample's
    assert config_path("kaggle_amazon.toml") == Path("kaggle_amazon.toml")  # a suffix: a path
    assert config_path("mine/kaggle_amazon") == Path("mine/kaggle_amazon")  # a folder: a path
    with pytest.raises(ValueError, match="no shipped config named 'kagle'.*kaggle_amazon"):
        config_path("kagle")


def test_config_paths_resolve_against_the_config_folder(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    (folder / "imgs").mkdir(parents=True)
    for name in ("train_0.jpg", "train_1.jpg", "labels.csv"):
        shutil.copy(DATA / name, folder / "imgs" / name)
    (folder / "run.toml").write_text(
        textwrap.dedent(f"""
        data = "imgs"
        labels = "imgs/labels.csv"
        [server]
        root = "imgs"
        [[experiment]]
        name = "local"
        [[experiment]]
        name = "served"
        data = "server"
        names_from = "./imgs"
        [[experiment]]
        name = "absolute"
        data = "{DATA}"
        labels = "{DATA / "labels.csv"}"
        [[experiment]]
        name = "url"
        data = "http://127.0.0.1:1/"
        names_from = "imgs"
    """)
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(Path("..") / "project" / "run.toml")
    imgs = str(folder / "imgs")
    by_name = {e.name: e for e in config.experiments}
    assert (by_name["local"].data, by_name["local"].labels) == (imgs, imgs + "/labels.csv")
    assert (by_name["served"].data, by_name["served"].names_from) == ("server", imgs)
    assert by_name["absolute"].data == str(DATA)
    assert (by_name["url"].data, by_name["url"].names_from) == ("http://127.0.0.1:1/", imgs)
    assert config.server.root == imgs
    assert not uses_sample(config)
    ready = prepare(config, "config 'run.toml'")  # every path exists from here too
    assert [e.data for e in ready.experiments] == [e.data for e in config.experiments]


def test_config_data_that_does_not_exist_fails_before_anything_runs(tmp_path, monkeypatch):
    (tmp_path / "bad.toml").write_text('data = "missing"\n[[experiment]]\nname = "a"\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        ValueError,
        match=r"config 'bad.toml': experiment 'a': data '.*missing' "
        r"does not exist; accepted: a folder of images \(.jpg",
    ):
        prepare(load_config("bad.toml"), "config 'bad.toml'")


def test_bad_data_exits_with_one_line_naming_the_path(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.jpg").write_bytes(b"not a folder")
    (tmp_path / "bad.toml").write_text('data = "missing"\n[[experiment]]\nname = "a"\n')
    cases = {
        "--data /nonexistent": (["--data", "/nonexistent"], "'/nonexistent' does not exist"),
        "--data file": (["--data", str(tmp_path / "file.jpg")], "file.jpg' is not a folder"),
        "--data empty": (["--data", str(tmp_path / "empty")], "empty' has no images"),
        "config": (
            ["--config", str(tmp_path / "bad.toml")],
            f"bad.toml': experiment 'a': data '{tmp_path / 'missing'}' does not exist",
        ),
    }
    procs = {
        name: subprocess.Popen(
            [*CLI, *args, "--out", str(tmp_path / "out")],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (args, _) in cases.items()
    }
    try:
        results = {name: p.communicate(timeout=60) for name, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    for name, (_, words) in cases.items():
        _, stderr = results[name]
        assert procs[name].returncode not in (0, None), name
        assert len(stderr.strip().splitlines()) == 1, stderr
        assert stderr.startswith("augment-profile: ") and words in stderr, (name, stderr)
        assert "accepted: a folder of images (.jpg" in stderr, stderr
    assert not (tmp_path / "out").exists()  # refused before anything ran


# --------------------------------------------------------------------------- sample data


def test_cache_folder_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("AUGMENT_CACHE", raising=False)
    assert cache_dir() == tmp_path / "home" / ".cache" / "augment"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "augment"
    monkeypatch.setenv("AUGMENT_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    assert sample_data.sample_path() == tmp_path / "mine" / SAMPLE_NAME


def test_processes_making_the_sample_at_once_each_see_it_whole(tmp_path):
    """Three processes ask for the sample dataset at once: each gets the same folder, whole,
    byte for byte the repository's data/sample (made by scripts/make_dataset.py --out
    data/sample --n 128 --seed 0), and no temporary folder is left."""
    cache = tmp_path / "cache"
    ask = (
        "from augment.sources.sample_data import sample_dataset; s = sample_dataset(); "
        "print(s, len(list(s.glob('*.jpg'))), (s / 'labels.csv').is_file())"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", ask],
            stdout=subprocess.PIPE,
            text=True,
            env=clean_env(AUGMENT_CACHE=str(cache)),
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert outs == [[str(cache / SAMPLE_NAME), str(SAMPLE["n"]), "True"]] * 3
    assert [p.name for p in cache.iterdir()] == [SAMPLE_NAME]
    made = cache / SAMPLE_NAME
    assert files_under(made) == files_under(DATA)
    for name in sorted(files_under(DATA)):
        assert (made / name).read_bytes() == (DATA / name).read_bytes(), name


def test_write_dataset_checks_its_arguments_and_is_deterministic(tmp_path):
    with pytest.raises(ValueError, match="n .* >= 1, got 0"):
        write_dataset(tmp_path / "x", n=0)
    with pytest.raises(ValueError, match="quality .* 1..95, got 100"):
        write_dataset(tmp_path / "x", n=1, quality=100)
    a = write_dataset(tmp_path / "a", n=3, size=32, seed=7)
    b = write_dataset(tmp_path / "b", n=3, size=32, seed=7)
    write_dataset(tmp_path / "c", n=3, size=32, seed=8)
    assert a == b == sum(p.stat().st_size for p in (tmp_path / "a").iterdir())
    for name in ("train_0.jpg", "train_2.jpg", "labels.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "train_0.jpg").read_bytes() != (
        tmp_path / "c" / "train_0.jpg"
    ).read_bytes()


PLAIN_DATALOADER = """
import torch
from torch.utils.data import DataLoader, Dataset

class Squares(Dataset):
    def __len__(self):
        return 12
    def __getitem__(self, i):
        return torch.full((2,), i)

if __name__ == "__main__":
    print(sum(len(b) for b in DataLoader(Squares(), batch_size=4, num_workers=1)))
"""


def test_the_environment_traces_a_dataloader_script_in_the_installed_package(venv, tmp_path):
    python, purelib = venv
    assert (purelib / "augment-trace.pth").is_file()  # the start-up hook the wheel brings
    script = tmp_path / "train.py"
    script.write_text(PLAIN_DATALOADER)
    out = tmp_path / "traced"
    done = subprocess.run(
        [python, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(AUGMENT_TRACE_DIR=str(out), AUGMENT_EXPERIMENT="plain"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "12"
    stages = [
        json.loads(line).get("stage")
        for f in out.glob("plain.*.jsonl")
        for line in f.read_text().splitlines()
    ]
    assert stages.count("load") == stages.count("wait") == 3
    untraced = subprocess.run(
        [python, str(script)], capture_output=True, text=True, timeout=120, env=clean_env()
    )
    assert untraced.stdout.strip() == "12" and not any(tmp_path.glob("runs"))
