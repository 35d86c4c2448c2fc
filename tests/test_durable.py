"""Durable mode (issue #15): a data directory keeps a node's table, life and
clocks across restarts and crashes; torn tails are cut, damage is refused; a
disk that fails degrades the node to memory, loudly; ``kill -9`` of a real
child process loses no write acknowledged by ``set_durable`` (fsync=always),
and with fsync=interval at most the last interval."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path
from typing import Any, Dict, List

import pytest

from fastgossip import GossipNode, NodeConfig
from fastgossip._impl import load
from fastgossip.durable import (
    KIND_BATCH,
    DataDir,
    DataDirError,
    DurabilityError,
    read_records,
    record,
)
from tests.conftest import child_env, wait_for


def config(node_id: str, data_dir: Any, implementation: str, **kw: Any) -> NodeConfig:
    kw.setdefault("membership", False)
    kw.setdefault("gossip_interval", 0.05)
    return NodeConfig(node_id, data_dir=str(data_dir), implementation=implementation, **kw)


# -- records -------------------------------------------------------------------------
def test_records_are_checked_and_a_torn_tail_is_told_from_damage() -> None:
    recs = [record(KIND_BATCH, bytes([i]) * (10 + i)) for i in range(5)]
    data = b"".join(recs)
    got, end, torn = read_records(data)
    assert [(k, b) for k, b in got] == [(KIND_BATCH, bytes([i]) * (10 + i)) for i in range(5)]
    assert end == len(data) and torn
    for cut in range(1, len(recs[-1])):  # the last write torn anywhere
        got, end, torn = read_records(data[: len(data) - cut])
        assert len(got) == 4 and end == len(data) - len(recs[-1]) and torn
    bad = bytearray(data)
    bad[len(recs[0]) + 9] ^= 0x40  # a flipped bit in the second record's body
    got, end, torn = read_records(bytes(bad))
    assert len(got) == 1 and end == len(recs[0])
    assert not torn  # whole, valid records follow: damage, not a torn write


# -- restart -------------------------------------------------------------------------
async def test_a_restarted_node_keeps_its_table_life_and_clock(
    implementation: str, tmp_path: Path
) -> None:
    a = await GossipNode.start(config("a", tmp_path, implementation))
    for i in range(2000):
        a.set(f"k{i}", i)
    a.delete("k7")
    a.set("ttl", b"t", ttl=3600)
    last = await a.set_durable("last", b"before")
    origin, watermarks = a.origin, a.watermarks()
    await a.shutdown()
    b = await GossipNode.start(config("a", tmp_path, implementation))
    async with b:
        assert b.origin == origin  # the same life: nothing to re-download
        assert b.watermarks() == watermarks
        assert b.get("k1999") == 1999 and b.get("k7") is None
        assert b.get_entry("k7").value is None  # (the tombstone)
        assert b.get_entry("ttl").expires > 0
        assert len(b.keys()) == 2001
        # the clocks restart past everything the last run issued
        assert b.set("last", b"after") > last
        assert b.get_entry("last").stamp > watermarks[origin]


async def test_merged_entries_are_kept_and_not_downloaded_again(
    implementation: str, tmp_path: Path
) -> None:
    a = await GossipNode.start(NodeConfig("a", membership=False, implementation=implementation))
    async with a:
        for i in range(5000):
            a.set(f"k{i}", b"x" * 20)
        b = await GossipNode.start(config("b", tmp_path, implementation))
        b.add_peer(a.addr)
        await wait_for(lambda: len(b.keys()) == 5000)
        await b.sync()
        first = b.stats.bytes_received
        await b.shutdown()
        b = await GossipNode.start(config("b", tmp_path, implementation))
        async with b:
            assert len(b.keys()) == 5000  # before any gossip
            b.add_peer(a.addr)
            a.set("new", 1)
            await wait_for(lambda: b.get("new") == 1)
            assert b.stats.bytes_received < first / 10  # the delta, not the table


async def test_one_data_directory_one_process_and_one_node(
    implementation: str, tmp_path: Path
) -> None:
    a = await GossipNode.start(config("a", tmp_path, implementation))
    async with a:
        with pytest.raises(DataDirError, match="in use"):
            await GossipNode.start(config("a", tmp_path, implementation))
    with pytest.raises(DataDirError, match="belongs to node 'a'"):
        await GossipNode.start(config("b", tmp_path, implementation))
    async with await GossipNode.start(config("a", tmp_path, implementation)):
        pass  # released at shutdown


def test_a_data_directory_that_cannot_be_made_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(DataDirError, match="cannot open data directory"):
        DataDir(str(tmp_path / "file" / "sub"), "a")


async def test_a_torn_log_is_cut_and_damage_is_refused(
    implementation: str, tmp_path: Path, caplog: Any
) -> None:
    a = await GossipNode.start(config("a", tmp_path, implementation))
    await a.set_durable("snap", 1)  # (the first flush is a snapshot)
    for i in range(20):
        await a.set_durable(f"k{i}", i)
    await a.shutdown()
    log = tmp_path / "log"
    data = log.read_bytes()
    records, _, _ = read_records(data)
    assert len(records) >= 20
    log.write_bytes(data[:-7])  # the last write torn by a crash
    async with await GossipNode.start(config("a", tmp_path, implementation)) as b:
        assert b.recovered is not None and b.recovered.cut_bytes > 0
        assert b.get("k18") == 18 and b.get("snap") == 1
        assert "torn write" in caplog.text
    bad = bytearray(log.read_bytes())
    bad[60] ^= 0x01  # damage early in the log, whole records after it
    log.write_bytes(bytes(bad))
    # the node starts from what precedes the damage, loudly, and keeps the rest
    async with await GossipNode.start(config("a", tmp_path, implementation)) as c:
        assert c.recovered is not None and c.recovered.damaged_bytes > 0
        assert c.get("snap") == 1  # (in the snapshot)
        assert "is damaged" in caplog.text
    kept = list(tmp_path.glob("log.damaged.*"))
    assert len(kept) == 1 and kept[0].stat().st_size == c.recovered.damaged_bytes
    snap = tmp_path / "snapshot"
    damaged = bytearray(snap.read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    snap.write_bytes(bytes(damaged))
    with pytest.raises(DataDirError, match="snapshot is damaged"):
        await GossipNode.start(config("a", tmp_path, implementation))


async def test_the_log_stays_within_the_live_data(implementation: str, tmp_path: Path) -> None:
    """Overwrites grow the log, not the table: a snapshot compacts it once it
    holds as many bytes as the last snapshot (at least 256 KiB)."""
    a = await GossipNode.start(config("a", tmp_path, implementation, fsync="never"))
    async with a:
        data = a._data
        assert data is not None
        worst = 0.0
        for r in range(60):
            for i in range(500):
                a.set(f"k{i}", b"%d" % r * 40)
            await a.sync()
            live = max(256 << 10, data.snapshot_bytes)
            worst = max(worst, data.log_bytes / live)
        assert a.stats.disk_snapshots >= 2
        assert worst <= 2.0, worst  # (the target; here ~1.05: the live size plus one flush)
        assert os.path.getsize(tmp_path / "log") == data.log_bytes


async def test_a_failing_disk_degrades_to_memory_then_recovers(
    implementation: str, tmp_path: Path, monkeypatch: Any
) -> None:
    a = await GossipNode.start(config("a", tmp_path, implementation))
    async with a:
        await a.set_durable("before", 1)

        def full(self: DataDir, data: bytes, sync: bool) -> None:
            raise DurabilityError(28, "cannot write the log: No space left on device")

        monkeypatch.setattr(DataDir, "append", full)
        monkeypatch.setattr(DataDir, "write_snapshot", full)
        with pytest.raises(DurabilityError, match="No space left"):
            await a.set_durable("during", 2)
        assert a.stats.disk_errors >= 1
        a.set("still", 3)  # the node keeps serving, in memory
        assert a.get("during") == 2 and a.get("still") == 3
        monkeypatch.undo()
        await a.set_durable("after", 4)  # the disk is back: a whole snapshot
    async with await GossipNode.start(config("a", tmp_path, implementation)) as b:
        assert [b.get(k) for k in ("before", "during", "still", "after")] == [1, 2, 3, 4]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
async def test_a_full_disk_for_real(implementation: str, tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=True)
    try:
        a = await GossipNode.start(config("a", mnt, implementation))
        async with a:
            with pytest.raises(DurabilityError):
                for i in range(200):
                    await a.set_durable(f"k{i}", b"x" * 4000)
            assert a.stats.disk_errors >= 1 and a.get("k0") == b"x" * 4000
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a read-only tmpfs needs root")
def test_a_read_only_directory_is_a_clear_error(tmp_path: Path) -> None:
    mnt = tmp_path / "ro"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(mnt)], check=True)
    try:
        with pytest.raises(DataDirError, match="Read-only file system"):
            DataDir(str(mnt), "a")
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


# -- kill -9 ---------------------------------------------------------------------------
CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    from fastgossip import GossipNode, NodeConfig

    async def main(data_dir, fsync, durable):
        node = await GossipNode.start(NodeConfig(
            "w", data_dir=data_dir, fsync=fsync, membership=False, fsync_interval=0.1))
        out = sys.stdout
        async def writer(w):
            for i in range(10 ** 9):
                key = f"w{w}-{i}"
                if durable:
                    await node.set_durable(key, i)
                else:
                    node.set(key, i)
                    await asyncio.sleep(0.001)
                out.write(f"{key} {time.monotonic()}\\n")
        await asyncio.gather(*(writer(w) for w in range(100 if durable else 10)))

    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] == "1"))
    """
)


def _kill_during_writes(data_dir: Path, fsync: str, durable: bool, after: float) -> List[Any]:
    """Run the writer child, kill -9 it ``after`` seconds into its writes;
    returns [(key, acked at)] of what it had printed (acknowledged)."""
    env = child_env()
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data_dir), fsync, "1" if durable else "0"],
        stdout=subprocess.PIPE,
        env=env,
    )
    acked: List[Any] = []
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # (writing started)
        assert first, "the writer did not start"
        deadline = time.monotonic() + after
        os.set_blocking(proc.stdout.fileno(), False)
        buf = first
        while time.monotonic() < deadline:
            chunk = proc.stdout.read()
            if chunk:
                buf += chunk
            time.sleep(0.005)
        killed_at = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        rest = proc.stdout.read()
        buf += rest or b""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    for line in buf.decode().splitlines():
        parts = line.split()
        if len(parts) == 2:  # (a line cut by the kill is no acknowledgement)
            acked.append((parts[0], float(parts[1])))
    return [acked, killed_at]


def _recovered_keys(data_dir: Path) -> Dict[str, Any]:
    table = load("table", None)
    state = table.GossipState()
    d = DataDir(str(data_dir), "w")
    try:
        d.recover(state, 1 << 20)
    finally:
        d.close()
    return {k: state.get(k) for k in state.keys()}


def test_kill_9_loses_no_write_acknowledged_by_set_durable(tmp_path: Path) -> None:
    """fsync=always: 100 concurrent writers, killed at random moments, eight
    times over one data directory; every write set_durable acknowledged, in
    every earlier life, is there after each restart."""
    rng = random.Random(15)
    all_acked: List[str] = []
    for run in range(8):
        acked, _ = _kill_during_writes(tmp_path, "always", True, rng.uniform(0.2, 0.8))
        assert acked, f"run {run}: nothing acknowledged"
        all_acked += [k for k, _ in acked]
        held = _recovered_keys(tmp_path)
        lost = [k for k in all_acked if k not in held]
        assert not lost, f"run {run} (seed 15): {len(lost)} acknowledged writes lost: {lost[:5]}"


def test_kill_9_with_fsync_interval_loses_at_most_the_last_interval(tmp_path: Path) -> None:
    """fsync=interval (0.1 s): what was acknowledged (in memory) over half a
    second before the kill is on disk (0.1 s interval plus scheduling slack on
    a loaded machine); newer writes may be lost, as documented."""
    for run in range(3):
        acked, killed_at = _kill_during_writes(tmp_path, "interval", False, 0.6 + 0.2 * run)
        held = _recovered_keys(tmp_path)
        old = [k for k, t in acked if t < killed_at - 0.5]
        assert old, "nothing old enough to judge"
        lost = [k for k in old if k not in held]
        assert not lost, f"run {run}: {len(lost)} writes older than 0.5 s lost: {lost[:5]}"


def test_recovery_reads_records_a_crc_protects(tmp_path: Path) -> None:
    """The log is records of wire frames: a flipped bit in the middle of a
    record's frame is caught by its crc (never merged as data)."""
    table = load("table", None)
    codec = load("codec", None)
    frame = codec.encode(codec.GossipBatch("w", [codec.Entry("k", 1, 5, "w#1", 5)]))
    rec = record(KIND_BATCH, frame)
    assert struct.unpack(">I", rec[4:8])[0] == zlib.crc32(rec[8:])
    (tmp_path / "log").write_bytes(rec + rec[:-1] + b"\xff")  # the second one corrupt
    state = table.GossipState()
    d = DataDir(str(tmp_path), "w")
    try:
        got = d.recover(state, 1 << 20)
    finally:
        d.close()
    assert got.cut_bytes == len(rec) and state.get("k") == (1, 5)


def test_durable_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="fsync must be one of"):
        NodeConfig("a", fsync="sometimes")
    with pytest.raises(ValueError, match="fsync_interval"):
        NodeConfig("a", fsync_interval=0)


async def test_without_a_data_directory_sync_returns_at_once() -> None:
    async with await GossipNode.start(NodeConfig("a", membership=False)) as a:
        await asyncio.wait_for(a.sync(), 1)
        assert await a.set_durable("k", 1) > 0
