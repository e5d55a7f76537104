"""Experiments for the profiler: what to load, how to augment, where to run it, and the
training step that stands for the GPU (``training_step``). Built from TOML tables or
command-line flags.

A config is a TOML file, or the name of one shipped in ``configs/`` (installed with the
package). Paths in it
resolve against its own folder; an experiment without ``data`` (a server without ``root``)
uses the sample dataset, made on first use (``augment.sources.sample_data``; for
``task = "segment"``, the sample tiles with class maps: ``augment.sources.sample_masks``)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as the tomli package (a dependency there)
    import tomli as tomllib

from augment.loading import backends
from augment.ops import compose, transforms
from augment.sources.data import IMAGE_SUFFIXES, ImageFolder
from augment.sources.sample_data import sample_dataset
from augment.sources.sample_masks import sample_segmentation
from augment.sources.segmentation import SegmentationFolder


def _configs_folder() -> Path:
    """The shipped configs: ``configs/`` at the top of a checkout (an editable install too),
    installed as package data beside this module by a wheel (setup.py)."""
    installed = Path(__file__).parent / "configs"
    return installed if installed.is_dir() else Path(__file__).parents[2] / "configs"


CONFIGS = _configs_folder()

OPS = {
    name: getattr(transforms, name)
    for name in transforms.__all__
    if isinstance(getattr(transforms, name), type)
    and issubclass(getattr(transforms, name), transforms.Transform)
    and name not in ("Transform", "GeometricTransform", "Compose")
}

DEFAULT_SECONDS = 3.0  # the measured window of a run sized by time
MIN_SECONDS = 0.5
WINDOW_KEYS = {"batches", "seconds"}

KAGGLE_TRANSFORM = compose.kaggle_steps(224)  # the default transform: the seed's
# what the training loop learns: labels of whole images (an ImageFolder, HTTPImages) or a
# class per pixel (a SegmentationFolder: images/ and masks/, the mask moved with the image)
TASKS = ("classify", "segment")


@dataclass
class Experiment:
    """One loader run with a ``step`` after each batch: milliseconds of sleep standing for GPU
    compute, or "model" for a small CNN on the CPU. It is measured for ``seconds`` after a
    warm-up (``DEFAULT_SECONDS`` when neither is given), or for exactly ``batches`` batches
    (see ``augment.profiler.measure``). ``task = "segment"`` reads ``data`` as a
    ``SegmentationFolder`` (images/ and masks/): each batch is a dict of images and masks,
    moved by the same warps."""

    name: str
    data: str | None = None  # a folder, an http(s) URL, "server"; None: the sample dataset
    labels: str | None = None
    transform: list[dict] = field(default_factory=lambda: [dict(t) for t in KAGGLE_TRANSFORM])
    batch_size: int = 32
    backend: str = "thread"
    workers: int = 2
    batches: int | None = None
    seconds: float | None = None
    step: float | str = 0.0
    seed: int = 0
    names_from: str | None = None  # for an http:// data URL: the folder whose files it serves
    task: str = "classify"
    mask_fill: float = 0  # a mask's value where a warp's constant border shows no image

    def __post_init__(self):
        where = f"experiment {self.name!r}"
        backends.check_name(self.backend, where)
        if self.task not in TASKS:
            raise ValueError(f"{where}: task must be one of {', '.join(TASKS)}, got {self.task!r}")
        remote = isinstance(self.data, str) and self.data.startswith(("http://", "https://"))
        if self.task == "segment" and (remote or self.data == "server"):
            raise ValueError(
                f'{where}: task "segment" reads a local folder holding images/ and masks/, '
                f"not {self.data!r}"
            )
        for name in ("batch_size", "batches"):
            value = getattr(self, name)
            if (value is not None or name == "batch_size") and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise ValueError(f"{where}: {name} must be an integer >= 1, got {value!r}")
        if self.seconds is not None:
            if self.batches is not None:
                raise ValueError(
                    f"{where}: give batches (exactly that many) or seconds (a window sized by "
                    "time), not both"
                )
            if not isinstance(self.seconds, (int, float)) or isinstance(self.seconds, bool):
                raise ValueError(f"{where}: seconds must be a number, got {self.seconds!r}")
            if self.seconds < MIN_SECONDS:
                raise ValueError(
                    f"{where}: seconds must be at least {MIN_SECONDS:g} (the report judges "
                    f"a steady state of {MIN_SECONDS:g} s or more), got {self.seconds!r}"
                )
        if not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"{where}: workers must be an integer >= 0")
        if self.step != "model" and not (isinstance(self.step, (int, float)) and self.step >= 0):
            raise ValueError(
                f'{where}: step must be milliseconds >= 0 or "model", got {self.step!r}'
            )
        build_transform(self.transform, where, self.mask_fill)

    @property
    def measured_seconds(self) -> float | None:
        """The window's length when it is sized by time, else None."""
        if self.batches is not None:
            return None
        return float(self.seconds if self.seconds is not None else DEFAULT_SECONDS)

    @property
    def window(self) -> str:
        """The measured window in words: "3 s" or "20 batches"."""
        if self.batches is not None:
            return f"{self.batches} batches"
        return f"{self.measured_seconds:g} s"


def build_transform(
    spec: list[dict], where: str = "transform", mask_fill: float = 0
) -> compose.Compose:
    """A Compose from ``[{"op": "RandomFlip", "horizontal": 0.5}, ...]`` (and its masks'
    ``mask_fill``)."""
    if not isinstance(spec, list):
        raise ValueError(f"{where}: transform must be a list of tables with an 'op' key")
    steps = []
    for i, item in enumerate(spec):
        item = dict(item)
        op = item.pop("op", None)
        if op not in OPS:
            raise ValueError(
                f"{where}: transform[{i}] op {op!r} is unknown; accepted: {', '.join(sorted(OPS))}"
            )
        try:
            steps.append(OPS[op](**item))
        except TypeError as exc:
            raise ValueError(f"{where}: transform[{i}] {op}: {exc}") from None
    try:
        return compose.Compose(steps, mask_fill=mask_fill)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


@dataclass
class Server:
    """A ``[server]`` table: serve ``root`` over HTTP on loopback while the experiments run;
    experiments with ``data = "server"`` fetch their images from it."""

    root: str | None = None  # None: the sample dataset
    latency_ms: float = 20.0
    jitter_ms: float = 0.0
    fail_rate: float = 0.0


@dataclass
class Config:
    experiments: list[Experiment]
    concurrent: bool = False
    server: Server | None = None


def shipped_configs() -> list[str]:
    """Names of the configs shipped with the package."""
    return sorted(p.stem for p in CONFIGS.glob("*.toml"))


def config_path(text: str | Path) -> Path:
    """``--config`` argument to a file: a bare name (no folder, no suffix) is a shipped
    config; anything else is a path."""
    path = Path(text)
    if path.suffix or len(path.parts) != 1:
        return path
    if path.name not in shipped_configs():
        raise ValueError(
            f"no shipped config named {path.name!r}; accepted: {', '.join(shipped_configs())}, "
            "or the path of a TOML file"
        )
    return CONFIGS / f"{path.name}.toml"


def _resolve(value: str | None, base: Path) -> str | None:
    """A path given in a config, taken from the config's folder; URLs and "server" as is."""
    if value is None or value == "server" or value.startswith(("http://", "https://")):
        return value
    return str(base / Path(value).expanduser())  # an absolute path stays as it is


def load_config(path: str | Path) -> Config:
    """Experiments of a TOML file (``[[experiment]]`` tables), whether they run at once
    (top-level ``concurrent = true``) and an optional ``[server]``. Other top-level keys are
    defaults for every experiment (a table's ``batches`` or ``seconds`` replaces both).
    ``data``, ``labels``, ``names_from`` and the server's ``root`` are relative to the
    file's folder, whatever the current folder."""
    path = Path(path)
    base = path.resolve().parent
    try:
        config = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read config {str(path)!r}: {exc}") from None
    tables = config.pop("experiment", None)
    concurrent = bool(config.pop("concurrent", False))
    server = config.pop("server", None)
    if server is not None:
        try:
            server = Server(**server)
        except TypeError as exc:
            raise ValueError(f"config {str(path)!r}: [server]: {exc}") from None
    if not tables:
        raise ValueError(f"config {str(path)!r} has no [[experiment]] table")
    known = {f.name for f in fields(Experiment)}
    unknown = set(config) - known
    if unknown:
        raise ValueError(f"config {str(path)!r}: unknown top-level keys {sorted(unknown)}")
    experiments = []
    for i, table in enumerate(tables):
        bad = set(table) - known
        if bad:
            raise ValueError(
                f"config {str(path)!r}: experiment {i} has unknown keys {sorted(bad)}; "
                f"accepted: {', '.join(sorted(known))}"
            )
        defaults = dict(config)
        if WINDOW_KEYS & set(table):  # an experiment's own window replaces the default one
            defaults = {k: v for k, v in defaults.items() if k not in WINDOW_KEYS}
        e = Experiment(**{**defaults, **table})
        experiments.append(
            replace(
                e,
                data=_resolve(e.data, base),
                labels=_resolve(e.labels, base),
                names_from=_resolve(e.names_from, base),
            )
        )
    names = [e.name for e in experiments]
    if len(set(names)) != len(names):
        raise ValueError(f"config {str(path)!r}: experiment names must be unique, got {names}")
    if server is None and any(e.data == "server" for e in experiments):
        raise ValueError(f'config {str(path)!r}: data = "server" needs a [server] table')
    if server is not None:
        server.root = _resolve(server.root, base)
    return Config(experiments, concurrent, server)


def check_folder(path: str | Path, what: str) -> None:
    """Refuse a data folder that cannot load, naming it as ``what``: before anything runs."""
    folder = Path(path)
    if not folder.is_dir():
        problem = "does not exist" if not folder.exists() else "is not a folder"
    elif not any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.rglob("*")):
        problem = "has no images"
    else:
        return
    raise ValueError(
        f"{what} {str(folder)!r} {problem}; accepted: a folder of images "
        f"({', '.join(IMAGE_SUFFIXES)})"
    )


def uses_sample(config: Config) -> bool:
    """Whether an experiment (or the server) of ``config`` gives no data: the sample's."""
    server_without_root = config.server is not None and config.server.root is None
    return server_without_root or any(e.data is None for e in config.experiments)


def prepare(config: Config, where: str) -> Config:
    """``config`` ready to run: no data (no server root) means the sample dataset, made here
    once rather than by experiments starting at once; every local folder and labels file
    is checked, so a wrong path fails before any experiment starts. ``where`` names the
    config in errors."""
    sample = str(sample_dataset()) if uses_sample(config) else None
    segment = any(e.data is None and e.task == "segment" for e in config.experiments)
    sample_masks = str(sample_segmentation()) if segment else None
    server = config.server
    if server is not None:
        server = replace(server, root=server.root or sample)
        check_folder(server.root, f"{where}: [server] root")
    experiments = []
    for e in config.experiments:
        e = replace(e, data=e.data or (sample_masks if e.task == "segment" else sample))
        what = f"{where}: experiment {e.name!r}"
        if e.task == "segment":
            try:
                SegmentationFolder(e.data)
            except ValueError as exc:
                raise ValueError(f"{what}: data: {exc}") from None
        elif e.data != "server" and not e.data.startswith(("http://", "https://")):
            check_folder(e.data, f"{what}: data")
        if e.names_from is not None:
            check_folder(e.names_from, f"{what}: names_from")
        if e.labels is not None and not Path(e.labels).is_file():
            raise ValueError(
                f"{what}: labels {e.labels!r} is not a file; accepted: a CSV of image_name,tags"
            )
        experiments.append(e)
    return replace(config, experiments=experiments, server=server)


def make_dataset(experiment: Experiment):
    """ImageFolder for a folder (None: the sample dataset), HTTPImages for an http(s) URL
    (names from ``names_from``). Labels default to ``labels.csv`` in that folder if any.
    A SegmentationFolder for ``task = "segment"``."""
    from augment.sources.remote import HTTPImages

    if experiment.task == "segment":
        return SegmentationFolder(experiment.data or sample_segmentation())

    data = experiment.data or str(sample_dataset())
    remote = data.startswith(("http://", "https://"))
    if remote and not experiment.names_from:
        raise ValueError(
            f"experiment {experiment.name!r}: an http data URL needs names_from "
            "(the folder whose files the server serves)"
        )
    folder = Path(experiment.names_from if remote else data)
    labels = experiment.labels
    if labels is None and (folder / "labels.csv").exists():
        labels = str(folder / "labels.csv")
    if remote:
        return HTTPImages(data, [p.name for p in ImageFolder(folder, labels).paths], labels)
    return ImageFolder(folder, labels)
