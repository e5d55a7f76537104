#!/usr/bin/env python
"""Serve a folder of images over HTTP on loopback, slowly and unreliably on purpose, so the
I/O-bound regime (threads should win) can be reproduced on one machine.

    python scripts/serve_images.py data/sample --port 8765 --latency-ms 20 --jitter-ms 5

Each request waits ``latency +- jitter`` ms before its answer; ``--fail-rate R`` answers a
share R of requests with HTTP 500 (for tests of retries). Binds to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from augment.sources.serve import make_server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dir", type=Path)
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        server = make_server(
            args.dir, args.port, args.latency_ms, args.jitter_ms, args.fail_rate, args.seed
        )
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    host, port = server.server_address[:2]
    print(f"serving {args.dir} on http://{host}:{port}/ (latency {args.latency_ms} ms)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
