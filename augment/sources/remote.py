"""HTTPImages: a dataset whose images are fetched over HTTP(S), for the I/O-bound regime.

Each worker thread and process has its own urllib3 connection pool (made on first use, never
pickled). A fetch that fails is a bad input like any other: ``BadImageError`` naming the URL
and the cause. Timeouts, refused connections and HTTP 429/5xx are retried with exponential
back-off; a 404 or a body that is not an image is not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import numpy as np
import urllib3

from augment.ops.images import BadImageError
from augment.sources.data import decode_image, multi_hot, read_tags_csv

TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
BACKOFF_S = 0.05


class HTTPImages:
    """Images at ``base_url/name`` for each of ``names``, labelled like ``ImageFolder``'s CSV
    (``image_name`` is the name without extension); without a CSV, labels are empty vectors.
    ``timeout`` bounds each attempt (connect and read together), ``retries`` the extra
    attempts for transient failures."""

    def __init__(
        self,
        base_url: str,
        names: Sequence[str],
        labels_csv: str | Path | None = None,
        timeout: float = 10.0,
        retries: int = 2,
    ):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if not names:
            raise ValueError("names is empty: HTTPImages needs at least one image name")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
        self.base_url = base_url.rstrip("/") + "/"
        self.names = list(names)
        self.timeout, self.retries = float(timeout), retries
        if labels_csv is not None:
            tags_of = read_tags_csv(Path(labels_csv))
            stems = [Path(n).stem for n in self.names]
            missing = [n for n, s in zip(self.names, stems) if s not in tags_of]
            if missing:
                raise ValueError(
                    f"{len(missing)} name(s) have no row in {str(labels_csv)!r}, "
                    f"e.g. {missing[0]!r}"
                )
            self.classes, self.labels = multi_hot([tags_of[s] for s in stems])
        else:
            self.classes, self.labels = [], np.zeros((len(self.names), 0), dtype=np.float32)
        self._local = threading.local()

    def __len__(self) -> int:
        return len(self.names)

    def source(self, index: int) -> str:
        return self.base_url + quote(self.names[index])

    def _pool(self) -> urllib3.PoolManager:
        pool = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = urllib3.PoolManager(num_pools=4, maxsize=4)
        return pool

    def read(self, index: int) -> bytes:
        url = self.source(index)
        cause = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(BACKOFF_S * 2 ** (attempt - 1))
            try:
                response = self._pool().request(
                    "GET",
                    url,
                    retries=False,
                    redirect=True,
                    timeout=urllib3.Timeout(total=self.timeout),
                )
            except urllib3.exceptions.NewConnectionError as exc:  # (a TimeoutError subclass)
                cause = f"connection failed: {_reason(exc)}"
                continue
            except urllib3.exceptions.TimeoutError:
                cause = f"timed out after {self.timeout:g} s"
                continue
            except urllib3.exceptions.HTTPError as exc:  # reset, protocol errors...
                cause = f"connection failed: {_reason(exc)}"
                continue
            if response.status == 200:
                return response.data
            cause = f"HTTP {response.status} {response.reason or ''}".strip()
            if response.status not in TRANSIENT_STATUS:
                raise BadImageError(url, cause)
        raise BadImageError(url, f"{cause} (after {self.retries + 1} attempts)")

    def decode(self, data: bytes, index: int) -> np.ndarray:
        return decode_image(data, self.source(index))

    def label(self, index: int) -> np.ndarray:
        return self.labels[index]

    def __getitem__(self, index: int):
        return self.decode(self.read(index), index), self.label(index)

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_local")  # connection pools stay in the process that made them
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"HTTPImages({self.base_url!r}, {len(self)} images)"


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None) or exc
    return str(reason).split(": ", 1)[-1] if ": " in str(reason) else str(reason)
