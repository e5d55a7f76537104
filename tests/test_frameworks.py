"""Training frameworks: a real Lightning Trainer resuming from its own checkpoint mid-epoch,
and two ranks of a real gloo process group sharding every epoch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_jpegs
from PIL import Image

import augment

ROOT = Path(__file__).resolve().parent.parent
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


def make_loader(folder: Path, backend: str = "thread") -> augment.Loader:
    pipeline = augment.Compose([augment.RandomFlip(0.5, 0.5), augment.RandomCrop(32)])
    return augment.Loader(Indexed(folder), pipeline, batch_size=4, backend=backend, workers=2)


# --------------------------------------------------------------------------- Lightning


def lightning_run(folder: Path, ckpt_dir: Path, resume: str | None = None) -> list[tuple]:
    """Two epochs of a real Lightning fit; what every training step saw: (epoch, step, the
    sample indices, a checksum of the pixels)."""
    lightning = pytest.importorskip("lightning.pytorch")

    class Recorder(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(3, 1)
            self.seen: list[tuple] = []

        def training_step(self, batch, batch_idx):
            images, index = batch
            self.seen.append(
                (self.current_epoch, batch_idx, index.tolist(), int(images.long().sum()))
            )
            x = images.float().mean(dim=(2, 3))
            return self.layer(x).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    every = lightning.callbacks.ModelCheckpoint(
        dirpath=ckpt_dir, every_n_train_steps=4, save_top_k=-1, filename="{step}"
    )
    trainer = lightning.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[every],
        num_sanity_val_steps=0,
    )
    model = Recorder()
    with make_loader(folder) as loader:
        trainer.fit(model, loader, ckpt_path=resume)
    return model.seen


def test_lightning_resumes_mid_epoch_with_the_uninterrupted_batches(folder, tmp_path):
    straight = lightning_run(folder, tmp_path / "ckpt")
    assert len(straight) == 12  # 6 steps an epoch, 2 epochs
    with make_loader(folder) as plain:  # Lightning's epoch 0 is the Loader's epoch 0
        first = next(iter(plain))
    assert straight[0][2] == first[1].tolist()
    assert [s[2] for s in straight[:6]] != [s[2] for s in straight[6:]]  # epochs differ
    for step, done in [("step=4", 4), ("step=8", 8)]:  # mid-epoch 0, mid-epoch 1
        resumed = lightning_run(folder, tmp_path / f"again-{step}", tmp_path / f"ckpt/{step}.ckpt")
        assert resumed == straight[done:], step


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ranks(folder: Path, tmp_path: Path, backend: str) -> list[dict]:
    script = tmp_path / f"rank_{backend}.py"
    script.write_text(
        RANK_SCRIPT.format(tests=str(Path(__file__).parent), folder=str(folder), backend=backend)
    )
    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(script)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "RANK": str(rank),
                "WORLD_SIZE": "2",
            },
        )
        for rank in range(2)
    ]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
        outs.append(json.loads(out.strip().splitlines()[-1]))
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
