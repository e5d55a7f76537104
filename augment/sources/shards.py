"""Shards: a staged dataset read from indexed tar shards (``write_shards``), in a folder or
at an ``http(s)://`` URL of that folder, by byte ranges.

Invariants:
- sample ``i`` is the ``i``-th sample written: permutation, seeds, sharding across ranks,
  resume and the batches themselves are those of the dataset that was written (an
  ``ImageFolder``'s images keep their bytes, so batches are bit-identical to its own);
- ``index.json`` is read once, when the dataset is made; labels come from it, so only the
  images are fetched;
- a batch's reads are planned together (``will_read``, called by the loader before the
  batch's first ``read``): its samples in one shard are coalesced into as few ranges as the
  index allows (neighbours closer than ``coalesce_bytes`` share a range), the ranges are
  fetched at once on up to ``fetchers`` threads, and the ``read`` stage of the batch is that
  fetch; a ``read`` outside a planned batch fetches its own range;
- every member's size and CRC32 is checked: a truncated or corrupt shard is a
  ``BadImageError`` naming the shard and the member, which ``on_error`` raises or skips;
- each process (and thread) opens its own files and HTTP connections (never pickled).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import urllib3

from augment.sources.data import BadImageError, decode_image
from augment.sources.remote import BACKOFF_S, TRANSIENT_STATUS, _reason
from augment.sources.shard_writer import FORMAT, INDEX, VERSION, from_json

log = logging.getLogger("augment")
COALESCE_BYTES = 64 << 10  # a gap up to this is read through rather than split off
FETCHERS = 16


class Shards:
    """The samples of shards written by ``augment.write_shards``, from ``where``: a folder
    or an ``http(s)://`` URL of one. ``timeout`` bounds each HTTP attempt, ``retries`` the
    extra attempts for transient failures; ``reduced_decode`` as ``ImageFolder``'s."""

    def __init__(
        self,
        where: str | Path,
        timeout: float = 10.0,
        retries: int = 2,
        coalesce_bytes: int = COALESCE_BYTES,
        fetchers: int = FETCHERS,
        reduced_decode: bool = True,
    ):
        text = str(where)
        self.remote = text.startswith(("http://", "https://"))
        self.base = text.rstrip("/") + "/" if self.remote else str(Path(where))
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
        for name, value, low in (("coalesce_bytes", coalesce_bytes, 0), ("fetchers", fetchers, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        self.timeout, self.retries = float(timeout), retries
        self.coalesce_bytes, self.fetchers = coalesce_bytes, fetchers
        self.reduced_decode = bool(reduced_decode)
        self._state = _Local()
        index = self._load_index()
        self.shards = [s["name"] for s in index["shards"]]
        self.shard_bytes = [int(s["bytes"]) for s in index["shards"]]
        members = index["members"]
        self._shard = np.array([m[0] for m in members], dtype=np.int32)
        self._offset = np.array([m[1] for m in members], dtype=np.int64)
        self._size = np.array([m[2] for m in members], dtype=np.int64)
        self._crc = np.array([m[4] for m in members], dtype=np.uint32)
        self._exts = [m[3] for m in members]
        self._width = int(index.get("key_width", 8))
        self._spec = index["label"]
        self._labels = index["labels"]
        self.classes = list(index.get("classes") or [])
        if not self.remote:
            self._check_files()

    # -- the index ----------------------------------------------------------------------------
    def _load_index(self) -> dict:
        where = self._url(INDEX) if self.remote else str(Path(self.base) / INDEX)
        try:
            if self.remote:
                text = self._fetch(where, None).decode()
            else:
                text = Path(where).read_text()
            index = json.loads(text)
        except (OSError, BadImageError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            cause = exc.cause if isinstance(exc, BadImageError) else exc
            raise ValueError(
                f"cannot read the shard index {where}: {cause} (write shards with "
                "augment.write_shards(dataset, folder))"
            ) from None
        if not isinstance(index, dict) or index.get("format") != FORMAT:
            raise ValueError(f"{where} is not an index written by augment.write_shards")
        if index.get("version") != VERSION:
            raise ValueError(
                f"{where} is version {index.get('version')!r} of the shard index; this augment "
                f"reads version {VERSION}"
            )
        missing = {"shards", "members", "label", "labels"} - set(index)
        if missing or len(index["members"]) != index.get("samples"):
            raise ValueError(f"{where} is incomplete: it lacks {', '.join(sorted(missing))}")
        if not index["members"]:
            raise ValueError(f"{where} lists no samples")
        return index

    def _check_files(self) -> None:
        """Warn, naming them, about shards missing or not of the size written (truncated or
        rewritten); their samples then fail one by one, as ``on_error`` says."""
        for name, size in zip(self.shards, self.shard_bytes):
            path = Path(self.base) / name
            found = path.stat().st_size if path.is_file() else None
            if found != size:
                state = "is missing" if found is None else f"is {found} bytes, not {size}"
                log.warning("shard %s %s as written: its samples cannot all be read", path, state)

    # -- the staged dataset -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._shard)

    def member(self, index: int) -> str:
        return f"{index:0{self._width}d}.{self._exts[index]}"

    def source(self, index: int) -> str:
        """``<folder or URL>/<shard>:<member>``, e.g. ``data/shard-000002.tar:00001234.jpg``."""
        shard = self.shards[self._shard[index]]
        where = self._url(shard) if self.remote else str(Path(self.base) / shard)
        return f"{where}:{self.member(index)}"

    def will_read(self, indices) -> None:
        """The samples of the batch about to be read: their ranges are fetched together by
        the first ``read`` among them."""
        self._state.local().planned = [int(i) for i in indices]
        self._state.local().got = {}

    def read(self, index: int) -> bytes:
        local = self._state.local()
        planned = local.planned
        if planned is not None and index in planned and index not in local.got:
            local.got = self._read_many(planned)
            local.planned = None
        got = local.got.pop(index, None)
        if got is None:
            got = self._read_many([index])[index]
        if isinstance(got, BadImageError):
            raise got
        return got

    def decode(self, data: bytes, index: int, reduce=None) -> np.ndarray:
        return decode_image(data, self.source(index), reduce if self.reduced_decode else None)

    def label(self, index: int):
        if self._labels is None:
            return np.zeros(0, dtype=np.float32)
        return from_json(self._labels[index], self._spec)

    def __getitem__(self, index: int):
        return self.decode(self.read(index), index), self.label(index)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_state"] = None  # files, connections and threads stay in their process
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._state = _Local()

    def __repr__(self) -> str:
        return f"Shards({self.base!r}, {len(self)} samples in {len(self.shards)} shards)"

    # -- ranges -------------------------------------------------------------------------------
    def ranges(self, indices) -> list[tuple[int, int, int, list[int]]]:
        """``(shard, start, end, samples)`` to fetch for ``indices``: per shard, members in
        offset order, neighbours less than ``coalesce_bytes`` apart in one range."""
        out = []
        order = sorted(
            set(int(i) for i in indices), key=lambda i: (self._shard[i], self._offset[i])
        )
        for i in order:
            shard, start = int(self._shard[i]), int(self._offset[i])
            end = start + int(self._size[i])
            if out and out[-1][0] == shard and start - out[-1][2] <= self.coalesce_bytes:
                last = out[-1]
                out[-1] = (shard, last[1], max(last[2], end), last[3] + [i])
            else:
                out.append((shard, start, end, [i]))
        return out

    def _read_many(self, indices) -> dict[int, bytes | BadImageError]:
        ranges = self.ranges(indices)
        if len(ranges) > 1 and self.remote:
            pool = self._state.pool(self.fetchers)
            pieces = list(pool.map(self._get_range, ranges))
        else:
            pieces = [self._get_range(r) for r in ranges]
        got: dict[int, bytes | BadImageError] = {}
        for (_, start, _, samples), piece in zip(ranges, pieces):
            for i in samples:
                got[i] = self._cut(i, piece, start)
        return got

    def _cut(self, i: int, piece: bytes | BadImageError, start: int) -> bytes | BadImageError:
        """Sample ``i``'s bytes out of the range read from ``start``, checked."""
        if isinstance(piece, BadImageError):
            return BadImageError(self.source(i), piece.cause)
        at, size = int(self._offset[i]) - start, int(self._size[i])
        data = piece[at : at + size]
        shard = self.shards[self._shard[i]]
        if len(data) != size:
            return BadImageError(
                self.source(i),
                f"shard {shard} is truncated: it ends {len(data)} of {size} bytes into this "
                f"member (at offset {int(self._offset[i])}); write the shards again",
            )
        crc, written = zlib.crc32(data), int(self._crc[i])
        if crc != written:
            return BadImageError(
                self.source(i),
                f"shard {shard} is corrupt: this member's bytes (offset {int(self._offset[i])}, "
                f"{size} bytes) are not those written (CRC32 {crc:08x}, index {written:08x})",
            )
        return data

    def _get_range(self, r) -> bytes | BadImageError:
        shard, start, end, _ = r
        name = self.shards[shard]
        try:
            if self.remote:
                return self._fetch(self._url(name), (start, end))
            return self._state.pread(Path(self.base) / name, start, end - start)
        except BadImageError as exc:
            return exc
        except OSError as exc:
            return BadImageError(name, f"cannot read the shard: {exc.strerror or exc}")

    def _url(self, name: str) -> str:
        from urllib.parse import quote

        return self.base + quote(name)

    def _fetch(self, url: str, span: tuple[int, int] | None) -> bytes:
        """GET ``url`` (bytes ``span[0]`` to ``span[1]``, end excluded), with retries."""
        headers = None if span is None else {"Range": f"bytes={span[0]}-{span[1] - 1}"}
        http = self._state.http(self.fetchers)
        cause = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(BACKOFF_S * 2 ** (attempt - 1))
            try:
                response = http.request(
                    "GET",
                    url,
                    headers=headers,
                    retries=False,
                    timeout=urllib3.Timeout(total=self.timeout),
                )
            except urllib3.exceptions.TimeoutError as exc:
                cause = f"timed out after {self.timeout:g} s ({_reason(exc)})"
                continue
            except urllib3.exceptions.HTTPError as exc:
                cause = f"connection failed: {_reason(exc)}"
                continue
            if response.status == 206 or (response.status == 200 and span is None):
                return response.data
            if response.status == 200:  # the server ignored the range: cut it out
                self._state.warn_once(url)
                return response.data[span[0] : span[1]]
            if response.status == 416:  # the range starts past the end: a truncated shard
                return b""
            cause = f"HTTP {response.status} {response.reason or ''}".strip()
            if response.status not in TRANSIENT_STATUS:
                raise BadImageError(url, cause)
        raise BadImageError(url, f"{cause} (after {self.retries + 1} attempts)")


class _Local:
    """What one process keeps for a ``Shards``: per thread the batch being read; shared, the
    open files, the HTTP connection pool and the fetching threads. Made again after a fork
    or an unpickling."""

    def __init__(self):
        self._pid = os.getpid()
        self._threads = threading.local()
        self._lock = threading.Lock()
        self._files: dict[Path, int] = {}
        self._http = None
        self._pool: ThreadPoolExecutor | None = None
        self._warned: set[str] = set()

    def local(self):
        t = self._threads
        if not hasattr(t, "planned"):
            t.planned, t.got = None, {}
        return t

    def _check_pid(self) -> None:
        if self._pid != os.getpid():  # forked: nothing of the parent's is ours
            self.__init__()

    def pread(self, path: Path, start: int, size: int) -> bytes:
        self._check_pid()
        with self._lock:
            fd = self._files.get(path)
            if fd is None:
                fd = self._files[path] = os.open(path, os.O_RDONLY)
        return os.pread(fd, size, start)

    def http(self, fetchers: int) -> urllib3.PoolManager:
        self._check_pid()
        with self._lock:
            if self._http is None:
                self._http = urllib3.PoolManager(num_pools=4, maxsize=fetchers)
        return self._http

    def pool(self, fetchers: int) -> ThreadPoolExecutor:
        self._check_pid()
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(fetchers, thread_name_prefix="augment-shards")
        return self._pool

    def warn_once(self, url: str) -> None:
        if url not in self._warned:
            self._warned.add(url)
            log.warning("%s: the server ignored the byte range asked for and sent it all", url)

    def __del__(self):
        for fd in getattr(self, "_files", {}).values():
            try:
                os.close(fd)
            except OSError:
                pass
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)
