"""Durable mode (issue #15): what a data directory costs, in one run.

    python -m bench.durable [--quick] [--out bench/results/durable.json]

1. **ingest** - a fresh peer catching up on K keys (100,000) from one node,
   in memory and with ``fsync=interval``, alternating, ``--repeats`` each:
   entries/s and the ratio (target >= 50 %).
2. **always** - 100 concurrent writers calling ``set_durable`` for a few
   seconds with ``fsync=always``: acknowledged writes/s (target >= 20,000),
   flushes (one fsync each) per second, and the disk's own fsync latency
   (a 4 KiB append + fsync, measured alone).
3. **restart** - a node holding M keys (1,000,000) restarted: seconds until it
   serves with its whole table (target <= 2 s), and the files' sizes (the log
   never beyond twice the live data).

Everything on loopback and in a temporary directory on this machine's disk
(``--dir`` to choose another), removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from typing import Any, Dict, List, Optional

from bench._meta import RESULTS, machine, write_json
from fastgossip import GossipNode, NodeConfig

LONG = 3600.0


async def _ingest_once(keys: int, data_dir: Optional[str]) -> float:
    a = await GossipNode.start(NodeConfig("a", membership=False, gossip_interval=LONG))
    try:
        for i in range(keys):
            a.set(f"key-{i:08d}", b"v" * 16)
        b = await GossipNode.start(
            NodeConfig(
                "b",
                membership=False,
                gossip_interval=LONG,
                data_dir=data_dir,
                fsync="interval",
            )
        )
        try:
            started = time.perf_counter()
            b.add_peer(a.addr)
            b.gossip_round()
            deadline = started + 60
            while b.state_len() < keys:
                if time.perf_counter() > deadline:
                    raise RuntimeError("ingest did not complete")
                await asyncio.sleep(0.0005)
            return time.perf_counter() - started
        finally:
            await b.shutdown()
    finally:
        await a.shutdown()


async def measure_ingest(keys: int, repeats: int, base: str) -> Dict[str, Any]:
    mem: List[float] = []
    disk: List[float] = []
    for r in range(repeats):
        for kind in ("mem", "disk") if r % 2 == 0 else ("disk", "mem"):
            d = tempfile.mkdtemp(dir=base) if kind == "disk" else None
            try:
                took = await _ingest_once(keys, d)
            finally:
                if d:
                    shutil.rmtree(d, ignore_errors=True)
            (mem if kind == "mem" else disk).append(took)
    best_mem, best_disk = keys / min(mem), keys / min(disk)
    return {
        "keys": keys,
        "repeats": repeats,
        "memory_entries_per_s": round(best_mem),
        "interval_entries_per_s": round(best_disk),
        "ratio_best": round(best_disk / best_mem, 3),
        "ratio_median": round(statistics.median(mem) / statistics.median(disk), 3),
    }


async def measure_always(seconds: float, writers: int, base: str) -> Dict[str, Any]:
    d = tempfile.mkdtemp(dir=base)
    try:
        node = await GossipNode.start(
            NodeConfig("w", membership=False, data_dir=d, fsync="always", gossip_interval=LONG)
        )
        acked = 0
        latencies: List[float] = []
        stop = time.perf_counter() + seconds

        async def writer(w: int) -> None:
            nonlocal acked
            i = 0
            while time.perf_counter() < stop:
                t = time.perf_counter()
                await node.set_durable(f"w{w}-{i}", i)
                latencies.append(time.perf_counter() - t)
                acked += 1
                i += 1

        flushes0 = node.stats.disk_flushes
        started = time.perf_counter()
        await asyncio.gather(*(writer(w) for w in range(writers)))
        took = time.perf_counter() - started
        flushes = node.stats.disk_flushes - flushes0
        await node.shutdown()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    latencies.sort()
    return {
        "writers": writers,
        "seconds": round(took, 2),
        "acked_writes_per_s": round(acked / took),
        "flushes_per_s": round(flushes / took, 1),
        "writes_per_flush": round(acked / max(1, flushes), 1),
        "ack_latency_ms_median": round(1000 * latencies[len(latencies) // 2], 2),
        "ack_latency_ms_p99": round(1000 * latencies[int(len(latencies) * 0.99)], 2),
        "fsync_ms": fsync_latency(base),
    }


def fsync_latency(base: str, n: int = 200) -> Dict[str, float]:
    """The disk's own: append 4 KiB and fsync, ``n`` times."""
    fd, path = tempfile.mkstemp(dir=base)
    try:
        times = []
        block = b"x" * 4096
        for _ in range(n):
            t = time.perf_counter()
            os.write(fd, block)
            os.fsync(fd)
            times.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        os.unlink(path)
    times.sort()
    return {
        "median": round(1000 * times[n // 2], 3),
        "p99": round(1000 * times[int(n * 0.99)], 3),
    }


async def measure_restart(keys: int, base: str) -> Dict[str, Any]:
    d = tempfile.mkdtemp(dir=base)
    try:
        cfg = NodeConfig("r", membership=False, data_dir=d, fsync="interval", gossip_interval=LONG)
        node = await GossipNode.start(cfg)
        worst = 0.0
        data = node._data
        assert data is not None
        for i in range(keys):
            node.set(f"key-{i:08d}", b"value-%08d" % i)
            if i % 50_000 == 49_999:
                await node.sync()
                worst = max(worst, data.log_bytes / max(1, data.snapshot_bytes))
        # overwrite a tenth, so the log holds more than new keys
        for i in range(0, keys, 10):
            node.set(f"key-{i:08d}", b"again-%08d" % i)
        await node.sync()
        worst = max(worst, data.log_bytes / max(1, data.snapshot_bytes))
        await node.shutdown()
        snapshot = os.path.getsize(os.path.join(d, "snapshot"))
        log_size = os.path.getsize(os.path.join(d, "log"))
        started = time.perf_counter()
        node = await GossipNode.start(cfg)
        took = time.perf_counter() - started
        held = node.state_len()
        rec = node.recovered
        await node.shutdown()
        assert held == keys, (held, keys)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return {
        "keys": keys,
        "restart_s": round(took, 3),
        "replay_s": round(rec.seconds, 3) if rec else None,
        "snapshot_bytes": snapshot,
        "log_bytes": log_size,
        "worst_log_over_snapshot": round(worst, 3),
    }


async def run(quick: bool, base: str) -> Dict[str, Any]:
    keys, repeats, seconds, restart_keys = (
        (20_000, 3, 1.0, 50_000) if quick else (100_000, 7, 3.0, 1_000_000)
    )
    out: Dict[str, Any] = {"meta": machine(), "settings": {"quick": quick, "dir": base}}
    t0 = time.perf_counter()
    out["ingest"] = await measure_ingest(keys, repeats, base)
    out["always"] = await measure_always(seconds, 100, base)
    out["restart"] = await measure_restart(restart_keys, base)
    out["settings"]["elapsed_s"] = round(time.perf_counter() - t0, 1)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dir", default=None, help="where to make data directories")
    parser.add_argument("--out", default=os.path.join(RESULTS, "durable.json"))
    args = parser.parse_args(argv)
    base = args.dir or tempfile.gettempdir()
    result = asyncio.run(run(args.quick, base))
    write_json(args.out, result)
    for name in ("ingest", "always", "restart"):
        print(name, result[name])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
