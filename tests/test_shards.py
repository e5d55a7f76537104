"""Indexed shards: written from an ImageFolder or a map-style dataset into WebDataset's tar
layout, read back from a folder and over HTTP on loopback (byte ranges, with latency) into
the same batches, read by the ``webdataset`` package, resumed mid-epoch, split across two
gloo ranks; a corrupt or truncated shard is named."""

from __future__ import annotations

import json
import logging
import shutil
import tarfile

import numpy as np
import pytest
import torch
import urllib3
from PIL import Image
from support import run_gloo_ranks

import augment
from augment.sources.serve import Served

N = 14


def transform():
    return augment.Compose([augment.RandomFlip(0.5, 0.5), augment.RandomCrop(24)])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Real JPEGs of a few sizes, in two class folders."""
    root = tmp_path_factory.mktemp("shard_images")
    rng = np.random.default_rng(1)
    for i in range(N):
        (root / f"c{i % 2}").mkdir(exist_ok=True)
        pixels = rng.integers(0, 256, (32 + i % 3, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"c{i % 2}" / f"im{i:02d}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def shards(folder, tmp_path_factory):
    """The folder in shards of about 3 images each."""
    out = tmp_path_factory.mktemp("shards")
    return augment.write_shards(augment.ImageFolder(folder), out, shard_bytes=shard_size(folder))


def shard_size(folder) -> int:
    return 3 * (max(p.stat().st_size for p in folder.rglob("*.jpg")) + 1536)


def epochs(dataset, backend="serial", workers=0, n=2, **kw):
    with augment.Loader(
        dataset, transform(), batch_size=4, seed=7, backend=backend, workers=workers, **kw
    ) as loader:
        return [[(x.clone(), y.clone()) for x, y in loader] for _ in range(n)]


def same(a, b):
    assert len(a) == len(b)
    for epoch_a, epoch_b in zip(a, b, strict=True):
        assert len(epoch_a) == len(epoch_b)
        for (x, y), (ex, ey) in zip(epoch_a, epoch_b, strict=True):
            assert torch.equal(x, ex) and torch.equal(y, ey)


def test_layout_index_and_same_bytes_each_time(folder, shards, tmp_path):
    index = json.loads((shards / "index.json").read_text())
    names = [s["name"] for s in index["shards"]]
    assert len(names) >= 4 and names == sorted(p.name for p in shards.glob("*.tar"))
    files = augment.ImageFolder(folder).paths
    for i, (shard, offset, size, ext, _) in enumerate(index["members"]):
        with open(shards / names[shard], "rb") as f:
            f.seek(offset)
            assert f.read(size) == files[i].read_bytes()  # the file's own bytes, in place
        assert ext == "jpg"
    with tarfile.open(shards / names[0]) as tar:
        assert tar.getnames()[:2] == ["00000000.jpg", "00000000.cls"]
        assert tar.extractfile("00000000.cls").read() == b"0"
    again = augment.write_shards(augment.ImageFolder(folder), tmp_path, shard_bytes=10**9)
    assert [p.name for p in again.glob("*.tar")] == ["shard-000000.tar"]
    with pytest.raises(ValueError, match="already holds shards"):
        augment.write_shards(augment.ImageFolder(folder), tmp_path)
    augment.write_shards(augment.ImageFolder(folder), tmp_path, shard_size(folder), overwrite=True)
    for name in names:  # the same bytes, written again
        assert (tmp_path / name).read_bytes() == (shards / name).read_bytes()


def test_batches_equal_the_folder_from_disk_and_over_http(folder, shards):
    expected = epochs(augment.ImageFolder(folder))
    same(epochs(augment.Shards(shards)), expected)
    same(epochs(augment.Shards(shards), "thread", 2), expected)
    with Served(shards, latency_ms=20) as served:
        counted = _count_requests(served)
        remote = augment.Shards(served.url)
        assert remote.source(5).startswith(served.url) and remote.source(5).endswith(
            ":00000005.jpg"
        )
        same(epochs(remote, "process", 2), expected)
        # a batch's samples in one shard are one range, whatever the gaps within it
        assert counted() >= N  # (requests so far: at least one per sample for two epochs)
        in_order = epochs(remote, n=1, shuffle=False)
        requests = counted()
    assert len(in_order[0]) == 4
    planned = [len(remote.ranges(range(b * 4, min(N, b * 4 + 4)))) for b in range(4)]
    assert requests == sum(planned) < N


def _count_requests(served):
    handler, seen = served.server.RequestHandlerClass, []
    inner = handler.func.do_GET if hasattr(handler, "func") else handler.do_GET
    cls = handler.func if hasattr(handler, "func") else handler

    def do_get(self):
        if self.headers.get("Range"):
            seen.append(self.path)
        inner(self)

    cls.do_GET = do_get
    start = 0

    def counted():
        nonlocal start
        n, start = len(seen) - start, len(seen)
        return n

    return counted


def test_coalesced_ranges_per_shard(shards):
    near = augment.Shards(shards, coalesce_bytes=0)  # no gap read through
    far = augment.Shards(shards, coalesce_bytes=10**9)
    same_shard = [i for i in range(N) if near._shard[i] == 0]
    assert len(same_shard) >= 2
    assert len(near.ranges(same_shard)) == len(same_shard)  # a label member lies between
    assert len(far.ranges(same_shard)) == 1
    assert len(far.ranges(range(N))) == len(far.shards)  # never across shards
    (shard, start, end, members), *_ = far.ranges(same_shard)
    assert members == same_shard and start == far._offset[same_shard[0]]
    assert end == far._offset[same_shard[-1]] + far._size[same_shard[-1]]


def test_webdataset_reads_the_shards_as_written(folder, shards):
    wds = pytest.importorskip("webdataset")
    urls = [str(p) for p in sorted(shards.glob("*.tar"))]
    got = list(wds.WebDataset(urls, shardshuffle=False).to_tuple("__key__", "jpg", "cls"))
    images = augment.ImageFolder(folder)
    assert [k for k, _, _ in got] == [f"{i:08d}" for i in range(N)]
    for i, (_, data, cls) in enumerate(got):
        assert data == images.paths[i].read_bytes() and int(cls) == images.labels[i]


def test_resume_mid_epoch_and_trace_reads(shards, tmp_path):
    data = augment.Shards(shards)
    straight = epochs(data, n=1)[0]
    tracer = augment.Tracer(tmp_path, experiment="shards", sample_cpu=False)
    with augment.Loader(data, transform(), batch_size=4, seed=7, tracer=tracer) as loader:
        it = iter(loader)
        next(it), next(it)
        state = loader.state_dict()
    tracer.close()
    with augment.Loader(data, transform(), batch_size=4, seed=7) as loader:
        loader.load_state_dict(state)
        rest = [(x.clone(), y.clone()) for x, y in loader]
    same([rest], [straight[2:]])
    stages = {s["stage"] for s in augment.trace.load(tmp_path).spans if s["worker"] == -1}
    assert "read" in stages and "decode" in stages


class Noise:
    """A map-style dataset: image i and its index as the label."""

    def __len__(self):
        return 10

    def __getitem__(self, i):
        return np.random.default_rng(i).integers(0, 256, (20, 30, 3), dtype=np.uint8), i


def test_map_style_dataset_written_as_png_reads_back_exactly(tmp_path):
    out = augment.write_shards(Noise(), tmp_path, shard_bytes=4000, image_format="png")
    data = augment.Shards(out)
    assert len(data) == 10 and len(data.shards) > 1
    for i in range(10):
        img, label = data[i]
        assert np.array_equal(img, Noise()[i][0]) and label == i


RANK_SCRIPT = """
import json, sys
import torch.distributed as dist
import augment

if __name__ == "__main__":
    dist.init_process_group("gloo")
    loader = augment.Loader(augment.Shards({where!r}), batch_size=3, seed=4, backend="thread")
    epochs = [[i for _, labels in loader for i in labels.tolist()] for _ in range(2)]
    print(json.dumps({{"rank": loader.rank, "epochs": epochs}}))
    loader.close()
    dist.barrier()
    dist.destroy_process_group()
"""


def test_two_gloo_ranks_split_each_epoch(tmp_path):
    out = augment.write_shards(Noise(), tmp_path / "shards", shard_bytes=4000, image_format="png")
    script = tmp_path / "rank.py"
    with Served(out, latency_ms=5) as served:
        script.write_text(RANK_SCRIPT.format(where=served.url))
        outs = run_gloo_ranks(script)
    outs.sort(key=lambda o: o["rank"])
    with augment.Loader(augment.Shards(out), batch_size=3, seed=4) as whole:
        orders = [[i for _, labels in whole for i in labels.tolist()] for _ in range(2)]
    for epoch in range(2):
        a, b = outs[0]["epochs"][epoch], outs[1]["epochs"][epoch]
        assert a == orders[epoch][0::2] and b == orders[epoch][1::2]
        assert set(a).isdisjoint(b) and set(a) | set(b) == set(range(10))


def test_corrupt_and_truncated_shards_are_named(shards, tmp_path, caplog):
    bad = tmp_path / "bad"
    shutil.copytree(shards, bad)
    index = json.loads((bad / "index.json").read_text())
    shard, offset, size, _, _ = index["members"][4]
    name = index["shards"][shard]["name"]
    with open(bad / name, "r+b") as f:  # a flipped byte in the middle of member 4
        f.seek(offset + size // 2)
        byte = f.read(1)
        f.seek(offset + size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    data = augment.Shards(bad)
    with pytest.raises(augment.BadImageError, match=rf"{name}:00000004\.jpg.*corrupt"):
        epochs(data, n=1)
    with augment.Loader(data, transform(), batch_size=4, on_error="skip") as loader:
        assert sum(len(x) for x, _ in loader) == N - 1
        assert [s for s, _ in loader.skipped] == [data.source(4)]
    last = bad / index["shards"][-1]["name"]
    first_of_last = [m[0] for m in index["members"]].index(len(index["shards"]) - 1)
    with open(last, "r+b") as f:  # cut 10 bytes into its first member
        f.truncate(index["members"][first_of_last][1] + 10)
    caplog.set_level(logging.WARNING, logger="augment")
    data = augment.Shards(bad)
    assert any(last.name in r.getMessage() for r in caplog.records)
    with pytest.raises(augment.BadImageError, match=rf"{last.name}.*truncated"):
        data.read(first_of_last)
    with Served(bad) as served:
        with pytest.raises(augment.BadImageError, match="truncated"):
            augment.Shards(served.url).read(N - 1)


def test_server_answers_byte_ranges(shards):
    blob = (shards / "shard-000000.tar").read_bytes()
    with Served(shards) as served:
        url = served.url + "shard-000000.tar"
        part = urllib3.request("GET", url, headers={"Range": "bytes=10-19"})
        assert part.status == 206 and part.data == blob[10:20]
        assert part.headers["Content-Range"] == f"bytes 10-19/{len(blob)}"
        tail = urllib3.request("GET", url, headers={"Range": "bytes=-5"})
        assert tail.status == 206 and tail.data == blob[-5:]
        past = urllib3.request("GET", url, headers={"Range": f"bytes={len(blob)}-"})
        assert past.status == 416
        assert urllib3.request("GET", url).data == blob


def test_bad_arguments_and_missing_index(tmp_path, shards):
    with pytest.raises(ValueError, match="cannot read the shard index"):
        augment.Shards(tmp_path)
    with pytest.raises(ValueError, match="shard_bytes"):
        augment.write_shards(Noise(), tmp_path, shard_bytes=0)
    with pytest.raises(ValueError, match="fetchers"):
        augment.Shards(shards, fetchers=0)
    with Served(tmp_path) as served, pytest.raises(ValueError, match="HTTP 404"):
        augment.Shards(served.url)
