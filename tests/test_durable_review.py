"""Durable mode, a review's reproductions (each failed before its fix): a
shutdown during a flush neither hangs a writer nor loses its write; entries a
node refused live are refused on replay too; this life's ephemeral keys end
with a restart; a failed start frees the directory; sync() after shutdown
raises; a log older than its snapshot is not replayed over it; an unsynced
append with a hole (a power cut) does not keep a node from starting."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from fastgossip import GossipNode
from fastgossip._impl import load
from fastgossip.durable import DataDir
from fastgossip.errors import NodeError
from tests.conftest import wait_for
from tests.test_durable import config

LOGICAL_BITS = 16


# 1. shutdown while a flush is in the executor: the set_durable caller hangs forever
async def test_shutdown_during_an_inflight_flush_neither_hangs_nor_loses_the_write(
    implementation: str, tmp_path: Path, monkeypatch: Any
) -> None:
    a = await GossipNode.start(config("a", tmp_path, implementation, fsync="always"))
    await a.set_durable("first", 1)  # (the snapshot)
    real = DataDir.append

    def slow(self: DataDir, data: bytes, sync: bool) -> None:
        time.sleep(0.5)  # a slow disk
        real(self, data, sync)

    monkeypatch.setattr(DataDir, "append", slow)
    task = asyncio.ensure_future(a.set_durable("acked?", 2))
    await asyncio.sleep(0.15)  # the flush holding this waiter is in the executor
    await a.shutdown()
    try:
        # must either succeed (on disk) or fail (NodeError) -- not hang
        await asyncio.wait_for(asyncio.shield(task), 3)
    except NodeError:
        pass
    finally:
        task.cancel()
    await asyncio.sleep(0.6)
    monkeypatch.undo()
    async with await GossipNode.start(config("a", tmp_path, implementation)) as b:
        assert b.get("acked?") == 2


# 2. recovery merges whole journaled frames without the live refusals; and
#    (a later review) a peer's frame may name this node as its sender: that
#    must not skip the guards either (only the record's kind says "own")
@pytest.mark.parametrize("sender", ["x", "a"], ids=["peer-sender", "sender-named-as-this-node"])
async def test_recovery_does_not_apply_entries_that_were_refused_live(
    implementation: str, tmp_path: Path, sender: str
) -> None:
    codec = load("codec", implementation)
    a = await GossipNode.start(config("a", tmp_path, implementation))
    await a.set_durable("first", 1)  # (the first flush is a snapshot; the frame goes to the log)
    now_ms = int(time.time() * 1000)
    far = (now_ms + 10 * 86400 * 1000) << LOGICAL_BITS  # ten days ahead: "future"
    ok = now_ms << LOGICAL_BITS
    frame = codec.encode(
        codec.GossipBatch(
            sender,
            [
                codec.Entry("good", 1, ok, "x#1", ok),
                codec.Entry("future", b"forged", far, "x#1", far),
                codec.Entry("mine", b"forged", ok + 5, a.origin, ok + 5),
                codec.Entry("mine2", b"forged", ok + 6, a.origin, far),
            ],
        )
    )
    _, w = await asyncio.open_connection(*a.addr)
    w.write(frame)
    await w.drain()
    await wait_for(lambda: a.get("good") == 1)
    assert a.get("future") is None and a.get("mine") is None  # refused live
    await a.sync()
    w.close()
    await a.shutdown()
    async with await GossipNode.start(config("a", tmp_path, implementation)) as b:
        assert b.get("good") == 1
        b.set("after", 1)
        ahead = (b.get_entry("after").stamp >> LOGICAL_BITS) / 1000 - time.time()
        assert ahead < 60, f"own stamps now {ahead / 86400:.1f} days ahead: peers refuse them"
        assert b.get("mine") is None, "a forged own-origin entry came back on restart"
        assert b.get("future") is None, "a refused future entry came back on restart"


# 3. an ephemeral key of this life comes back after a crash/restart
async def test_ephemeral_keys_do_not_survive_a_restart(implementation: str, tmp_path: Path) -> None:
    a = await GossipNode.start(config("a", tmp_path, implementation, membership=True))
    a.set("lease", b"held", ephemeral=True)
    await a.set_durable("plain", 1)
    await a.shutdown()
    async with await GossipNode.start(config("a", tmp_path, implementation, membership=True)) as b:
        assert b.get("plain") == 1
        assert b.get("lease") is None, "an ephemeral key outlived its process"


# 5. a constructor failing after the data directory was locked leaks the lock
async def test_a_failed_start_releases_the_data_directory(
    implementation: str, tmp_path: Path
) -> None:
    with pytest.raises(OSError):  # (the keyring file does not exist)
        await GossipNode.start(
            config("a", tmp_path / "d", implementation, cluster_key_file=str(tmp_path / "nokey"))
        )
    async with await GossipNode.start(config("a", tmp_path / "d", implementation)):
        pass


# 6. sync() after shutdown waits forever (the flusher is gone)
async def test_sync_after_shutdown_does_not_hang(implementation: str, tmp_path: Path) -> None:
    a = await GossipNode.start(config("a", tmp_path, implementation))
    await a.shutdown()
    try:
        await asyncio.wait_for(a.sync(), 2)
    except NodeError:
        pass


# 7. crash between the snapshot's rename and the log's truncation: the old log
#    is replayed over the new snapshot and brings dropped entries back
async def test_a_crash_after_the_snapshot_rename_does_not_resurrect_dropped_entries(
    implementation: str, tmp_path: Path, monkeypatch: Any
) -> None:
    a = await GossipNode.start(config("a", tmp_path, implementation))
    await a.set_durable("first", 1)  # (snapshot)
    await a.set_durable("gone", b"x")  # in the log
    saved = (tmp_path / "log").read_bytes()
    # what a tombstone collection / drop / Reset does: drop the entry, owe a snapshot
    a._core.state.clear() if hasattr(a._core.state, "clear") else None
    a._core.state.set("first", 1, 1 << 40, a.origin, 1 << 40)
    a._core.journal.reshape()
    await a.sync()  # the snapshot without "gone"
    assert os.path.getsize(tmp_path / "log") < 64  # (the head record naming the snapshot)
    await a.shutdown()
    (tmp_path / "log").write_bytes(saved)  # the crash came before ftruncate(log)
    async with await GossipNode.start(config("a", tmp_path, implementation)) as b:
        assert b.get("gone") is None, "the pre-snapshot log was replayed over the snapshot"


# 9. power loss with an un-fsynced last append: a hole inside it, a whole
#    record after -> the node refuses to start (nothing acknowledged was lost)
def test_an_unsynced_append_with_a_hole_is_not_fatal(tmp_path: Path) -> None:
    from fastgossip.durable import KIND_BATCH, record

    codec = load("codec", None)
    recs = [
        record(
            KIND_BATCH,
            codec.encode(codec.GossipBatch("w", [codec.Entry(f"k{i}", i, 5 + i, "w#1", 5 + i)])),
        )
        for i in range(6)
    ]
    synced = b"".join(recs[:3])
    last_append = bytearray(b"".join(recs[3:]))  # one append (one flush), never fsynced
    last_append[0 : len(recs[3])] = b"\0" * len(recs[3])  # its first page never reached disk
    (tmp_path / "log").write_bytes(synced + bytes(last_append))
    state = load("table", None).GossipState()
    d = DataDir(str(tmp_path), "w")
    try:
        d.recover(state, 1 << 20)  # DataDirError: "damaged ... not a torn tail"
    finally:
        d.close()
