"""A slow, optionally unreliable HTTP server for a folder of images, on loopback only.

It reproduces the I/O-bound regime on one machine: each request waits ``latency +- jitter``
ms; ``fail_rate`` answers a share of requests with HTTP 500 (for tests of retries). Single
byte ranges are served (206), so shards can be read in ranges as from object storage.
"""

from __future__ import annotations

import random
import re
import threading
import time
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class SlowHandler(SimpleHTTPRequestHandler):
    """Serves the folder, answering one byte range per request (``Range: bytes=a-b``) with
    206 Partial Content, as object stores do: what ``augment.Shards`` reads over HTTP."""

    latency_s = 0.0
    jitter_s = 0.0
    fail_rate = 0.0
    rng = random.Random(0)
    lock = threading.Lock()

    def do_GET(self):  # noqa: N802 - the http.server naming
        with self.lock:
            delay = max(0.0, self.latency_s + self.rng.uniform(-self.jitter_s, self.jitter_s))
            fail = self.rng.random() < self.fail_rate
        time.sleep(delay)
        if fail:
            self.send_error(HTTPStatus.INTERNAL_SERVER_ERROR, "injected failure (--fail-rate)")
            return
        wanted = self.headers.get("Range")
        if wanted is None or not self._send_range(wanted):
            super().do_GET()

    def _send_range(self, wanted: str) -> bool:
        """Answer ``Range: bytes=a-b`` (``a-``, ``-n``) with 206 and those bytes, or 416 where
        they lie past the end; False for anything else (several ranges, a folder, a missing
        file), which is answered whole, as RFC 9110 allows."""
        match = _RANGE.fullmatch(wanted.strip())
        path = Path(self.translate_path(self.path))
        if match is None or match.groups() == ("", "") or not path.is_file():
            return False
        size = path.stat().st_size
        first, last = match.groups()
        if first == "":  # the last n bytes
            start, end = max(0, size - int(last)), size - 1
        else:
            start, end = int(first), min(size - 1, int(last) if last else size - 1)
        if start >= size or start > end:
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return True
        with open(path, "rb") as f:
            f.seek(start)
            body = f.read(end - start + 1)
        self.send_response(HTTPStatus.PARTIAL_CONTENT)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.wfile.write(body)
        return True

    def log_message(self, format, *args):  # noqa: A002 - quiet by default
        pass


def make_server(
    root: str | Path,
    port: int = 0,
    latency_ms: float = 0.0,
    jitter_ms: float = 0.0,
    fail_rate: float = 0.0,
    seed: int = 0,
) -> ThreadingHTTPServer:
    """A ready (not yet serving) server on 127.0.0.1; ``port=0`` picks a free port."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{str(root)!r} is not a directory")
    if latency_ms < 0 or jitter_ms < 0 or not 0 <= fail_rate <= 1:
        raise ValueError("latency and jitter must be >= 0 and fail-rate in [0, 1]")
    handler = type(
        "Handler",
        (SlowHandler,),
        {
            "latency_s": latency_ms / 1000,
            "jitter_s": jitter_ms / 1000,
            "fail_rate": fail_rate,
            "rng": random.Random(seed),
            "lock": threading.Lock(),
        },
    )
    server = _Server(("127.0.0.1", port), partial(handler, directory=str(root)))
    server.daemon_threads = True
    return server


class _Server(ThreadingHTTPServer):
    # listen()'s backlog: the default 5 drops the connections of clients that open many at
    # once (Shards' fetchers), which then wait a second to try again
    request_queue_size = 128


class Served:
    """``make_server`` running in a background thread: ``with Served(root, latency_ms=20) as s:``
    then ``s.url``."""

    def __init__(self, root: str | Path, **options):
        self.server = make_server(root, **options)
        host, port = self.server.server_address[:2]
        self.url = f"http://{host}:{port}/"
        self._thread = threading.Thread(
            target=self.server.serve_forever, daemon=True, name="augment-image-server"
        )

    def __enter__(self) -> Served:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()
