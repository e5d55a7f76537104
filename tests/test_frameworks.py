"""Training frameworks: a real Lightning Trainer resuming from each kind of its own
checkpoint (epoch ends, every n steps, after validation, max_epochs extended) with a
validation Loader, on every backend; and two ranks of a real gloo process group sharding
every epoch."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support import ROOT, free_port, run_gloo_ranks, write_jpegs

import augment

N = 22  # batch 4: five full batches and one of 2 per epoch


class Indexed(torch.utils.data.Dataset):
    """JPEGs and their index, so that every batch says which samples it holds."""

    def __init__(self, root: Path):
        self.paths = sorted(Path(root).glob("*.jpg"))

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return Image.open(self.paths[i]).convert("RGB"), i


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("framework_jpegs")
    write_jpegs(root, N, 40, 40)
    return root


def make_loader(
    folder: Path, backend: str = "thread", shuffle: bool = True, workers: int = 2
) -> augment.Loader:
    pipeline = augment.Compose([augment.RandomFlip(0.5, 0.5), augment.RandomCrop(32)])
    return augment.Loader(
        Indexed(folder), pipeline, batch_size=4, backend=backend, workers=workers, shuffle=shuffle
    )


# --------------------------------------------------------------------------- Lightning
#
# Lightning restores a loader's state_dict only when it restarts mid-epoch; at an epoch's
# start it calls set_epoch on the loader's sampler (for training and validation loaders),
# and a validation loader is first iterated for 2 batches by the sanity check. Every resume
# must see what the uninterrupted run saw after the checkpoint, training and validation.

TRAIN_STEPS = 6  # batches per epoch (22 samples, batches of 4)


@functools.cache
def recorder_class():
    lightning = pytest.importorskip("lightning.pytorch")

    class Recorder(lightning.LightningModule):
        """Records what every step saw: (stage, epoch, batch_idx, the sample indices, a
        checksum of the pixels); a checkpoint records how much of it came before."""

        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(3, 1)
            self.seen: list[tuple] = []

        def _record(self, stage: str, batch, batch_idx: int) -> None:
            images, index = batch
            stage = "sanity" if self.trainer.sanity_checking else stage
            self.seen.append(
                (stage, self.current_epoch, batch_idx, index.tolist(), int(images.long().sum()))
            )

        def training_step(self, batch, batch_idx):
            self._record("train", batch, batch_idx)
            return self.layer(batch[0].float().mean(dim=(2, 3))).pow(2).mean()

        def validation_step(self, batch, batch_idx):
            self._record("val", batch, batch_idx)

        def on_save_checkpoint(self, checkpoint):
            checkpoint["steps_seen"] = len(trained(self.seen))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    return Recorder


def trained(seen: list[tuple]) -> list[tuple]:
    """What the run trained and validated on, without the sanity check's batches."""
    return [s for s in seen if s[0] != "sanity"]


def lightning_run(
    folder: Path,
    ckpt_dir: Path,
    backend: str,
    max_epochs: int,
    resume: Path | None = None,
    workers: int = 2,
) -> list[tuple]:
    """A real Lightning fit: a training and a validation Loader, validation twice an epoch
    (after 3 and 6 batches), the sanity check's 2 batches, a checkpoint after every
    validation (the default ModelCheckpoint's moment) and every 5 training steps."""
    lightning = pytest.importorskip("lightning.pytorch")
    checkpoints = [
        lightning.callbacks.ModelCheckpoint(
            dirpath=ckpt_dir, every_n_train_steps=5, save_top_k=-1, filename="every-{step}"
        ),
        lightning.callbacks.ModelCheckpoint(dirpath=ckpt_dir, save_top_k=-1, filename="val-{step}"),
    ]
    trainer = lightning.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=checkpoints,
        val_check_interval=0.5,
        num_sanity_val_steps=2,
    )
    model = recorder_class()()
    with (
        make_loader(folder, backend, workers=workers) as train,
        make_loader(folder, backend, False, workers) as val,
    ):
        trainer.fit(model, train, val, ckpt_path=resume)
    return model.seen


@pytest.fixture(scope="module")
def uninterrupted(folder, tmp_path_factory) -> list[tuple]:
    """Three epochs without a break: what every resume is compared with."""
    return lightning_run(folder, tmp_path_factory.mktemp("straight"), "serial", 3)


def test_lightning_validation_loader_loses_nothing_to_the_sanity_check(folder, uninterrupted):
    sanity = [s for s in uninterrupted if s[0] == "sanity"]
    val = [s for s in trained(uninterrupted) if s[0] == "val"]
    per_pass = TRAIN_STEPS  # the validation Loader has 6 batches too
    assert len(val) == 3 * 2 * per_pass  # 3 epochs, validated twice each
    with make_loader(folder, "serial", False) as plain:  # a validation Loader's own epochs
        epochs = [[(i.tolist(), int(x.long().sum())) for x, i in plain] for _ in range(3)]
    for epoch in range(3):
        for second in (0, 1):  # both validations of an epoch see that epoch, whole
            start = (2 * epoch + second) * per_pass
            got = [(s[3], s[4]) for s in val[start : start + per_pass]]
            assert got == epochs[epoch], (epoch, second)
    assert epochs[0] != epochs[1]  # the epochs' pixels differ, so the check above could fail
    assert [(s[3], s[4]) for s in sanity] == epochs[0][:2]  # the check saw epoch 0 too


@pytest.mark.parametrize(
    "backend,resumes",
    [
        # every kind of checkpoint: after the mid-epoch validation (step 3), at an epoch's end
        # after validation (6), mid-epoch by step count (5, 10), and the last one of a
        # 2-epoch run, resumed with max_epochs=3 (12)
        (
            "serial",
            (
                "val-step=3",
                "every-step=5",
                "val-step=6",
                "val-step=9",
                "every-step=10",
                "val-step=12",
            ),
        ),
        ("thread", ("val-step=6", "every-step=10", "val-step=12")),
        ("process", ("val-step=6", "every-step=10", "val-step=12")),
        ("torch", ("val-step=6", "every-step=10", "val-step=12")),
    ],
)
def test_lightning_resumes_from_every_checkpoint_with_the_uninterrupted_batches(
    folder, tmp_path, uninterrupted, backend, resumes
):
    first = lightning_run(folder, tmp_path / "ckpt", backend, max_epochs=2)
    straight = trained(uninterrupted)
    assert trained(first) == straight[: len(trained(first))]  # the same batches on any backend
    assert len(trained(first)) == 2 * (TRAIN_STEPS + 2 * TRAIN_STEPS)
    for name in resumes:
        path = tmp_path / "ckpt" / f"{name}.ckpt"
        done = torch.load(path, weights_only=False)["steps_seen"]
        resumed = lightning_run(folder, tmp_path / f"again-{name}", backend, 3, path)
        assert trained(resumed) == straight[done:], name
        for s in resumed:  # a sanity check, where Lightning runs one, reads its epoch's start
            if s[0] == "sanity":
                assert s[1:] == [v for v in straight if v[0] == "val" and v[1] == s[1]][s[2]][1:]


def test_lightning_overfit_batches_with_a_loader_that_does_not_shuffle(folder, tmp_path):
    """overfit_batches wants a sequential sampler (else Lightning rebuilds the loader as a
    DataLoader, which a Loader is not): an unshuffled Loader's sampler is one."""
    lightning = pytest.importorskip("lightning.pytorch")
    trainer = lightning.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        overfit_batches=2,
    )
    model = recorder_class()()
    with make_loader(folder, "serial", shuffle=False) as loader:
        assert isinstance(loader.sampler, torch.utils.data.SequentialSampler)
        trainer.fit(model, loader)
    assert [s[3] for s in model.seen] == [[0, 1, 2, 3], [4, 5, 6, 7]] * 2


# --------------------------------------------------------------------------- gloo

RANK_SCRIPT = """
import json, sys
import torch.distributed as dist
sys.path.insert(0, {tests!r})
from test_frameworks import make_loader
from pathlib import Path

if __name__ == "__main__":
    dist.init_process_group("gloo")
    loader = make_loader(Path({folder!r}), backend={backend!r})  # no rank, no world_size
    epochs = []
    for _ in range(2):
        epochs.append([i for _, index in loader for i in index.tolist()])
    out = {{"rank": loader.rank, "world_size": loader.world_size, "len": len(loader),
            "epochs": epochs}}
    loader.close()
    dist.barrier()
    dist.destroy_process_group()
    print(json.dumps(out))
"""


def ranks(folder: Path, tmp_path: Path, backend: str) -> list[dict]:
    script = tmp_path / f"rank_{backend}.py"
    script.write_text(
        RANK_SCRIPT.format(tests=str(Path(__file__).parent), folder=str(folder), backend=backend)
    )
    outs = run_gloo_ranks(script)
    return sorted(outs, key=lambda o: o["rank"])


def test_two_gloo_ranks_get_disjoint_shards_covering_each_epoch(folder, tmp_path):
    got = ranks(folder, tmp_path, "thread")
    assert [(o["rank"], o["world_size"]) for o in got] == [(0, 2), (1, 2)]
    assert got[0]["len"] == got[1]["len"] == 3  # 11 samples each: batches of 4, 4, 3
    for epoch in range(2):
        a, b = got[0]["epochs"][epoch], got[1]["epochs"][epoch]
        assert len(a) == len(b) == N // 2
        assert set(a).isdisjoint(b) and set(a) | set(b) == set(range(N))
    assert got[0]["epochs"][0] != got[0]["epochs"][1]  # reshuffled every epoch
    # the same shards, whatever the backend
    assert ranks(folder, tmp_path, "process") == got
    # and they are a single-process loader's epoch, split as DistributedSampler splits it
    with make_loader(folder, "serial") as whole:
        order = [i for _, index in whole for i in index.tolist()]
    np.testing.assert_array_equal(got[0]["epochs"][0], order[0::2])


# --------------------------------------------------------------------------- Lightning DDP

LIGHTNING_DDP = """
import json, os, sys
import torch
import lightning.pytorch as L
sys.path.insert(0, {tests!r})
from test_frameworks import make_loader
from pathlib import Path


class Recorder(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.seen = []

    def training_step(self, batch, batch_idx):
        images, index = batch
        self.seen.append(index.tolist())
        return self.layer(images.float().mean(dim=(2, 3))).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


if __name__ == "__main__":
    model = Recorder()
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=2, strategy="ddp",
                        logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False)
    with make_loader(Path({folder!r})) as loader:  # built before the process group exists
        trainer.fit(model, loader)
    out = Path({out!r}) / f"rank{{trainer.global_rank}}.json"
    out.write_text(json.dumps(model.seen))
"""


def test_lightning_ddp_ranks_train_on_disjoint_shares(folder, tmp_path):
    pytest.importorskip("lightning.pytorch")
    script = tmp_path / "ddp.py"
    script.write_text(
        LIGHTNING_DDP.format(
            tests=str(Path(__file__).parent), folder=str(folder), out=str(tmp_path)
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "MASTER_PORT": str(free_port())},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    flat = [[i for batch in rank for i in batch] for rank in seen]
    assert len(seen[0]) == len(seen[1]) == 3  # 11 samples a rank: batches of 4, 4, 3
    assert set(flat[0]).isdisjoint(flat[1]) and set(flat[0]) | set(flat[1]) == set(range(N))
