"""RSS growth of one process holding N entries (16-byte keys, int values).

Run as ``python -m bench.memory --impl cython --n 1000000``; prints one JSON
object. ``bench.ratios`` runs it in a fresh subprocess per table kind, so one
measurement's heap does not leak into the next.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional

VERSION = (1_700_000_000_000 << 16) | 7


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(kind: str, n: int) -> Dict[str, Any]:
    """Fill a table of ``kind`` ("cython", "python" or "dict") with n entries."""
    if kind == "dict":
        table: Any = {}

        def put(key: str, value: int, version: int, origin: str, stamp: int) -> None:
            table[key] = (version, origin, value, stamp)

        size = table.__len__
    else:
        from fastgossip._impl import load

        table = load("table", kind).GossipState()
        put = table.set
        size = table.__len__
    gc.collect()
    before = rss_bytes()
    t0 = time.perf_counter()
    for i in range(n):
        # 16-byte keys, int values; one origin, stamps increasing (as one writer makes)
        put(f"key-{i:012d}", i, VERSION + i, "node-000", VERSION + i)
    elapsed = time.perf_counter() - t0
    gc.collect()
    after = rss_bytes()
    assert size() == n, (size(), n)
    grown = after - before
    return {
        "kind": kind,
        "entries": n,
        "rss_growth_bytes": grown,
        "rss_growth_mb": grown / 1e6,
        "bytes_per_entry": grown / n,
        "fill_seconds": elapsed,
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=["cython", "python", "dict"], default="cython")
    parser.add_argument("--n", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.impl, args.n)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
