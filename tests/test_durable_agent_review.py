"""A last review's reproductions across durable mode and the agent (each
failed before its fix): writes after a log recovered empty survive the next
restart (the log starts again naming its snapshot); a shutdown during the
disk's back-off still flushes; ``fastgossip keys`` follows every page;
``limit=0`` is a 400. (A peer's batch naming this node as its sender is a
case of tests/test_durable_review.py's refused-entries test.)"""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path
from typing import Any

import pytest

from fastgossip import GossipNode
from fastgossip.durable import DataDir, DurabilityError
from tests.test_durable import config


# D1. a log recovered empty (stale log dropped, torn head record cut, or
#     simply gone) is appended to without the head record naming the
#     snapshot's generation: at the next restart that log's first record
#     names no generation, so the whole log is dropped as "older than its
#     snapshot" -- every write acknowledged durable since is lost.
async def test_writes_after_a_torn_log_head_survive_the_next_restart(
    implementation: str, tmp_path: Path
) -> None:
    a = await GossipNode.start(config("a", tmp_path, implementation))
    await a.set_durable("first", 1)  # the first flush: a snapshot, the log = its head
    await a.shutdown()
    log = tmp_path / "log"
    head = log.read_bytes()
    assert head, "expected a head record in the log"
    log.write_bytes(head[:5])  # a crash while writing the head: a torn tail
    async with await GossipNode.start(config("a", tmp_path, implementation)) as b:
        assert b.get("first") == 1
        await b.set_durable("acked", 2)  # acknowledged: on disk
    async with await GossipNode.start(config("a", tmp_path, implementation)) as c:
        assert c.get("acked") == 2, "a write acknowledged durable was dropped at restart"


async def test_writes_after_a_stale_log_was_dropped_survive_the_next_restart(
    implementation: str, tmp_path: Path
) -> None:
    a = await GossipNode.start(config("a", tmp_path, implementation))
    await a.set_durable("first", 1)  # snapshot gen 1
    await a.set_durable("second", 2)  # in the log (gen 1)
    saved = (tmp_path / "log").read_bytes()
    a._core.journal.reshape()
    await a.sync()  # snapshot gen 2
    await a.shutdown()
    (tmp_path / "log").write_bytes(saved)  # crash before the log's truncation
    async with await GossipNode.start(config("a", tmp_path, implementation)) as b:
        assert b.get("second") == 2
        await b.set_durable("acked", 3)
    async with await GossipNode.start(config("a", tmp_path, implementation)) as c:
        assert c.get("acked") == 3, "a write acknowledged durable was dropped at restart"


# D2. a clean shutdown while the flusher is in back-off (one failed write in
#     the last 1..30 s) skips the last flush: _close_data -> _flush returns at
#     once when nobody waits and loop.time() < _retry_at. Everything written
#     since (and the snapshot owed for what the failed write lost) is gone.
async def test_shutdown_in_back_off_still_flushes(
    implementation: str, tmp_path: Path, monkeypatch: Any
) -> None:
    a = await GossipNode.start(config("a", tmp_path, implementation))
    await a.set_durable("first", 1)
    real = DataDir.append
    fail = {"n": 1}

    def flaky(self: DataDir, data: bytes, sync: bool) -> None:
        if fail["n"]:
            fail["n"] -= 1
            raise DurabilityError(errno.EIO, "transient")
        real(self, data, sync)

    monkeypatch.setattr(DataDir, "append", flaky)
    with pytest.raises(DurabilityError):
        await a.set_durable("lost-once", 2)
    a.set("later", 3)  # the disk is fine again; a clean shutdown follows
    await a.shutdown()
    monkeypatch.undo()
    async with await GossipNode.start(config("a", tmp_path, implementation)) as b:
        assert b.get("later") == 3, "the last flush at shutdown was skipped (back-off)"
        assert b.get("lost-once") == 2


# A1. ``fastgossip keys`` reads one page and ignores X-Fastgossip-More: a
#     listing longer than max_list (10,000) or ~1 MiB is cut silently, exit 0.
async def test_cli_keys_does_not_cut_a_long_listing_silently() -> None:
    pytest.importorskip("aiohttp")
    import io

    from fastgossip.cli import build_parser
    from fastgossip.client import run_client
    from tests.test_agent import agents, stop

    (a,) = await agents(1, max_list=3)
    try:
        assert a.node is not None
        for i in range(7):
            a.node.set(f"k/{i}", b"v")
        host, port = a.http_addr  # type: ignore[misc]
        args = build_parser().parse_args(["keys", "k/", "--http-addr", f"{host}:{port}", "--json"])
        out, err = io.StringIO(), io.StringIO()
        loop = asyncio.get_running_loop()
        code = await loop.run_in_executor(None, run_client, args, out, err)
        got = [e["key"] for e in __import__("json").loads(out.getvalue())]
        assert len(got) == 7 or code != 0 or err.getvalue(), (
            f"listed {len(got)} of 7 keys, exit {code}, no warning"
        )
    finally:
        await stop(a)


# A2. GET /v1/kv?limit=0 answers [] with X-Fastgossip-More: true: a client
#     following the documented paging ("ask again with after= the last key")
#     has no last key and asks for ever.
async def test_listing_limit_zero_is_not_an_endless_page() -> None:
    aiohttp = pytest.importorskip("aiohttp")
    from tests.test_agent import agents, stop, url

    (a,) = await agents(1)
    try:
        assert a.node is not None
        a.node.set("k", b"v")
        async with aiohttp.ClientSession() as s:
            r = await s.get(url(a, "/v1/kv?limit=0"))
            body = await r.json() if r.status == 200 else None
            assert r.status == 400 or body or "X-Fastgossip-More" not in r.headers
    finally:
        await stop(a)
