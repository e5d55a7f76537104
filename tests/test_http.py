"""HTTPImages against a real HTTP server on loopback: fetches, every failure kind, retries
with back-off for transient ones only, timeouts; and the GIL-bound transform."""

from __future__ import annotations

import io
import pickle
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

import augment
from augment.sources.serve import Served


def jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    for i in range(8):
        (root / f"img_{i}.jpg").write_bytes(jpeg(i))
    (root / "labels.csv").write_text(
        "image_name,tags\n"
        + "".join(f"img_{i},{'water' if i % 2 else 'road primary'}\n" for i in range(8))
    )
    (root / "notes.jpg").write_text("this is text, not a JPEG")
    return root


class Scripted(BaseHTTPRequestHandler):
    """Answers each path with a scripted sequence of statuses (then 200 with a JPEG)."""

    script: dict[str, list] = {}
    hits: dict[str, list[float]] = {}
    lock = threading.Lock()

    def do_GET(self):  # noqa: N802
        with self.lock:
            self.hits.setdefault(self.path, []).append(time.monotonic())
            steps = self.script.get(self.path, [])
            action = steps.pop(0) if steps else 200
        if action == "sleep":
            time.sleep(2.0)
            action = 200
        if action == 200:
            body = jpeg(1)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_error(action)

    def log_message(self, *args):
        pass


@pytest.fixture
def scripted():
    Scripted.script, Scripted.hits = {}, {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_fetches_decodes_and_labels_like_a_folder(folder):
    names = [f"img_{i}.jpg" for i in range(8)]
    with Served(folder) as served:
        ds = augment.HTTPImages(served.url, names, folder / "labels.csv")
        assert len(ds) == 8 and ds.classes == ["primary", "road", "water"]
        img, label = ds[3]
        expected = np.asarray(Image.open(folder / "img_3.jpg").convert("RGB"))
        assert np.array_equal(img, expected) and label.tolist() == [0.0, 0.0, 1.0]
        assert ds.source(3) == served.url + "img_3.jpg"


def test_same_batches_on_threads_and_processes(folder):
    names = [f"img_{i}.jpg" for i in range(8)]
    tf = augment.Compose([augment.RandomFlip(0.5, 0.5), augment.RandomCrop(32)])
    with Served(folder, latency_ms=5) as served:
        ds = augment.HTTPImages(served.url, names, folder / "labels.csv")
        runs = []
        for backend in ("serial", "thread", "process"):
            with augment.Loader(ds, tf, batch_size=3, backend=backend, workers=2, seed=4) as L:
                runs.append([x.clone() for x, _ in L])
    for other in runs[1:]:
        assert all(a.equal(b) for a, b in zip(runs[0], other, strict=True))


def test_404_and_not_an_image_are_not_retried(folder):
    with Served(folder) as served:
        ds = augment.HTTPImages(served.url, ["missing.jpg", "notes.jpg"], retries=3)
        start = time.monotonic()
        with pytest.raises(augment.BadImageError, match=r"missing\.jpg.*HTTP 404"):
            ds.read(0)
        assert time.monotonic() - start < 0.5  # no back-off sleeps for a 404
        data = ds.read(1)
        with pytest.raises(augment.BadImageError, match=r"notes\.jpg.*not an image"):
            ds.decode(data, 1)


def test_transient_500_is_retried_with_backoff(scripted):
    Scripted.script["/a.jpg"] = [500, 503]
    ds = augment.HTTPImages(scripted, ["a.jpg"], retries=2)
    assert ds.decode(ds.read(0), 0).shape == (40, 48, 3)
    hits = Scripted.hits["/a.jpg"]
    assert len(hits) == 3
    assert hits[2] - hits[1] > hits[1] - hits[0] > 0.04  # exponential back-off


def test_retries_run_out_with_the_last_cause(scripted):
    Scripted.script["/b.jpg"] = [500, 500, 500, 500]
    ds = augment.HTTPImages(scripted, ["b.jpg"], retries=1)
    with pytest.raises(augment.BadImageError, match=r"b\.jpg.*HTTP 500.*after 2 attempts"):
        ds.read(0)
    assert len(Scripted.hits["/b.jpg"]) == 2


def test_timeout_is_bounded(scripted):
    Scripted.script["/slow.jpg"] = ["sleep", "sleep"]
    ds = augment.HTTPImages(scripted, ["slow.jpg"], timeout=0.3, retries=1)
    start = time.monotonic()
    with pytest.raises(augment.BadImageError, match=r"slow\.jpg.*timed out after 0.3 s"):
        ds.read(0)
    assert time.monotonic() - start < 1.5


def test_refused_connection_names_the_url():
    with Served(".") as served:
        url = served.url
    ds = augment.HTTPImages(url, ["x.jpg"], timeout=1, retries=1)
    with pytest.raises(augment.BadImageError, match=r"x\.jpg.*connection failed"):
        ds.read(0)


def test_on_error_skip_lists_failed_fetches(folder):
    names = ["img_0.jpg", "missing.jpg", "img_1.jpg", "notes.jpg"]
    with Served(folder) as served:
        ds = augment.HTTPImages(served.url, names)
        with augment.Loader(
            ds, augment.CenterCrop(32), batch_size=4, backend="thread", on_error="skip"
        ) as loader:
            assert sum(len(x) for x, _ in loader) == 2
        skipped = sorted(p.rsplit("/", 1)[-1] for p, _ in loader.skipped)
        assert skipped == ["missing.jpg", "notes.jpg"]


def test_server_fail_rate_and_loopback_only(folder):
    with Served(folder, fail_rate=1.0) as served:
        assert served.url.startswith("http://127.0.0.1:")
        ds = augment.HTTPImages(served.url, ["img_0.jpg"], retries=0)
        with pytest.raises(augment.BadImageError, match="HTTP 500"):
            ds.read(0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="http:// or https://"):
        augment.HTTPImages("ftp://x/", ["a.jpg"])
    with pytest.raises(ValueError, match="names is empty"):
        augment.HTTPImages("http://127.0.0.1/", [])
    with pytest.raises(ValueError, match="timeout"):
        augment.HTTPImages("http://127.0.0.1/", ["a"], timeout=0)


def test_pickles_without_its_connection_pool(folder):
    with Served(folder) as served:
        ds = augment.HTTPImages(served.url, ["img_0.jpg"])
        ds.read(0)
        clone = pickle.loads(pickle.dumps(ds))
        assert np.array_equal(clone[0][0], ds[0][0])


def test_row_jitter_is_a_per_row_gain_and_reproducible():
    img = np.full((6, 5, 3), 100, np.uint8)
    t = augment.RandomRowJitter(0.2)
    a, b = t(img, np.random.default_rng(1)), t(img, np.random.default_rng(1))
    assert np.array_equal(a, b) and a.dtype == np.uint8 and a.shape == img.shape
    assert all((row == row[0]).all() for row in a)  # one gain per row and channel
    assert len({tuple(row[0]) for row in a}) > 1  # rows differ
    gains = np.random.default_rng(1).uniform(0.8, 1.2, size=(6, 3))
    assert np.array_equal(a[:, 0, :], np.rint(np.clip(100 * gains.astype(np.float32), 0, 255)))
    with pytest.raises(ValueError, match="strength"):
        augment.RandomRowJitter(2.0)
