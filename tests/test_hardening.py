"""A hostile peer with valid frames: every hole and every resource bound.

Each test plays the attack over TCP on loopback against real nodes and checks
that honest propagation keeps working and the resource stays bounded. The
table-level refusals (horizon, own origin, origin length, table size) have
their unit tests in test_table_hardening.py.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import zlib

import pytest

from fastgossip import (
    Digest,
    Entry,
    Gossip,
    GossipBatch,
    GossipNode,
    NodeError,
    Ping,
    Pong,
    Replicate,
    ReplicateAck,
    encode,
    read_message,
    write_message,
)
from fastgossip.clock import make_version, version_ms, wall_ms
from fastgossip.node import parse_address
from fastgossip.transport import FDS

from .conftest import wait_for
from .test_node import FAST, config, pair


async def raw(addr):
    return await asyncio.open_connection(*addr)


# -- clocks -------------------------------------------------------------------------


async def test_clock_keeps_following_after_a_far_future_push(implementation: str) -> None:
    """Hole 4: once a node had stored a version beyond now + skew, its clock
    compared against that stuck maximum and stopped following merged versions,
    so a write made after seeing another node's write lost to it."""
    import time as _time

    from fastgossip.clock import HybridClock

    a, b = await pair(implementation)
    async with a, b:
        reader, writer = await raw(b.addr)
        await write_message(writer, Gossip("evil", "stuck", 1, 2**64 - 1))
        await write_message(writer, Ping("evil", 1))
        await asyncio.wait_for(read_message(reader), 5)
        writer.close()
        # a's clock runs 5 s ahead of b's: b must follow a's versions
        a._core.clock = HybridClock(now_ms=lambda: int(_time.time() * 1000) + 5_000)
        a.set("k", b"from-a")
        await wait_for(lambda: b.get("k") == b"from-a")
        b.set("k", b"from-b")  # made after seeing a's write: must win everywhere
        await wait_for(lambda: a.get("k") == b"from-b")
        assert b.get("k") == b"from-b"


async def test_a_version_from_the_future_moves_clocks_at_most_one_skew(
    implementation: str,
) -> None:
    """Hole 4: one frame with a version 59 s ahead moved every clock +57.7 s.
    A version within the horizon is accepted, but clocks follow it only up to
    max_clock_skew ahead of their wall clock."""
    skew = 2.0
    a, b = await pair(implementation, max_clock_skew=skew)
    async with a, b:
        reader, writer = await raw(a.addr)
        ahead = make_version(wall_ms() + int(3.5 * 1000))  # within 2 * skew: accepted
        await write_message(writer, Gossip("evil", "k", 1, ahead))
        writer.close()
        await wait_for(lambda: b.get("k") == 1)
        for node in (a, b):
            lead_ms = version_ms(node.set("fresh", 1)) - wall_ms()
            assert lead_ms <= skew * 1000 + 50, lead_ms


# -- forged stamps under another node's origin ---------------------------------------


async def test_forged_watermark_cannot_silence_an_origin(implementation: str) -> None:
    """Hole 2: an entry under b's live origin with a stamp ahead of b's clock
    (but within the horizon, so no rule can tell it from an honest one) raised
    every node's watermark for b: b's later writes were never asked for.
    b sees its own origin claimed above its stamp clock, jumps past it and
    re-stamps its entries; its writes reach everyone again."""
    a, b = await pair(implementation, max_clock_skew=5.0)
    c = await GossipNode.start(config("c", implementation, max_clock_skew=5.0))
    async with a, b, c:
        for n in (a, b):
            n.add_peer(c.addr)
            c.add_peer(n.addr)
        b.set("before", 1)
        await wait_for(lambda: a.get("before") == 1 and c.get("before") == 1)
        forged_stamp = make_version(wall_ms() + 4_000)
        reader, writer = await raw(a.addr)
        batch = GossipBatch("evil", [Entry("forged", 0, 1, b.origin, forged_stamp)])
        await write_message(writer, batch)
        writer.close()
        await wait_for(lambda: c.watermarks().get(b.origin, 0) >= forged_stamp)
        b.set("after", 2)
        await wait_for(lambda: a.get("after") == 2 and c.get("after") == 2, timeout=10)
        assert b.stats.forged_stamps >= 1


# -- slow and idle connections ---------------------------------------------------------


async def test_slowloris_and_idle_connections_are_closed(implementation: str) -> None:
    node = await GossipNode.start(config("n", implementation, frame_timeout=0.3, idle_timeout=0.6))
    async with node:
        slow_r, slow_w = await raw(node.addr)
        slow_w.write(b"\x00\x00\x01")  # three bytes of a length prefix, then nothing
        idle_r, idle_w = await raw(node.addr)
        try:
            assert await asyncio.wait_for(slow_r.read(), 5) == b""  # closed by the node
            assert await asyncio.wait_for(idle_r.read(), 5) == b""
            assert node.stats.timeouts >= 2
        finally:
            slow_w.close()
            idle_w.close()


async def test_a_full_inbound_table_keeps_a_slot_for_peers_that_make_progress(
    implementation: str,
) -> None:
    """1100 idle connections kept a new peer out. At max_inbound, the accepted
    connection that has gone longest without a complete frame makes room."""
    node = await GossipNode.start(config("n", implementation, max_inbound=5))
    async with node:
        idle = [await raw(node.addr) for _ in range(5)]
        start = node.stats.rounds
        await wait_for(lambda: node.stats.rounds >= start + 3)  # they are now stale
        try:
            reader, writer = await raw(node.addr)
            await write_message(writer, Ping("newcomer", 7))
            assert await asyncio.wait_for(read_message(reader), 5) == Pong("n", 7)
            writer.close()
            assert node.stats.connections_shed >= 1
        finally:
            for _, w in idle:
                w.close()


async def test_partial_frames_held_by_all_connections_are_bounded(implementation: str) -> None:
    """1000 connections each sending a 1 MiB frame 3 bytes short took 1 GB.
    At max_input_bytes, the connections holding the largest partial frames go."""
    cap = 64 * 1024
    node = await GossipNode.start(
        config("n", implementation, max_frame_size=cap, max_input_bytes=cap)
    )
    async with node:
        conns = []
        try:
            for _ in range(6):
                r, w = await raw(node.addr)
                w.write(struct.pack(">I", cap - 8) + b"\x01\x06" + b"x" * 20_000)
                conns.append((r, w))
            await wait_for(lambda: node.stats.input_shed >= 3)
            assert node._transport._input_total <= cap
            reader, writer = await raw(node.addr)
            await write_message(writer, Ping("other", 1))
            assert await asyncio.wait_for(read_message(reader), 5) == Pong("n", 1)
            writer.close()
        finally:
            for _, w in conns:
                w.close()


# -- amplification --------------------------------------------------------------------


async def test_answers_to_strangers_share_a_per_round_budget(implementation: str) -> None:
    """An empty Digest(reply=True) on a big node returned ~39,000 times its size,
    to every asker. Answers on accepted connections, digests included, share
    max_round_bytes per round (plus the one entry an answer always carries, so
    that the answer that crosses the budget still makes progress); askers
    beyond it get nothing this round (exchanges_throttled)."""
    budget = 64 * 1024
    node = await GossipNode.start(
        config("n", implementation, gossip_interval=5.0, max_round_bytes=budget)
    )
    async with node:
        for i in range(10_000):
            node.set(f"key-{i:06d}", b"v" * 20)  # ~500 kB of entries
        ask = encode(Digest("greedy", {}, reply=True))
        conns = [await raw(node.addr) for _ in range(20)]
        try:
            for _, w in conns:
                w.write(ask)
            await wait_for(lambda: node.stats.exchanges_throttled >= 1)
            await wait_for(lambda: node.stats.frames_received >= 20)
            one_entry, digest = 100, 60
            assert node.stats.bytes_sent <= budget + one_entry + digest, node.stats.bytes_sent
            got = 0
            for r, _ in conns[:1]:  # the first asker got a whole answer
                while True:
                    msg = await asyncio.wait_for(read_message(r, 1 << 20), 5)
                    if isinstance(msg, Digest):
                        break
                    got += len(encode(msg))
            assert got > 0
        finally:
            for _, w in conns:
                w.close()


async def test_repeated_questions_on_one_connection_are_throttled(implementation: str) -> None:
    node = await GossipNode.start(config("n", implementation, gossip_interval=5.0))
    async with node:
        node.set("k", b"v")
        r, w = await raw(node.addr)
        try:
            ask = encode(Digest("greedy", {}, reply=True))
            w.write(ask * 50)
            await w.drain()
            await wait_for(lambda: node.stats.exchanges_throttled == 49)
            w.write(encode(Ping("greedy", 1)))
            answers = []
            while True:
                msg = await asyncio.wait_for(read_message(r), 5)
                answers.append(msg)
                if isinstance(msg, Pong):
                    break
            assert sum(isinstance(m, Digest) for m in answers) == 1
        finally:
            w.close()


async def test_reply_digests_are_answered_only_on_the_link_that_asked(
    implementation: str,
) -> None:
    node = await GossipNode.start(config("n", implementation))
    async with node:
        node.set("k", b"v")
        r, w = await raw(node.addr)
        try:
            w.write(encode(Digest("stranger", {}, reply=False)) + encode(Ping("s", 3)))
            assert await asyncio.wait_for(read_message(r), 5) == Pong("n", 3)
        finally:
            w.close()


# -- replication ----------------------------------------------------------------------


async def test_replication_is_off_unless_leaders_are_named(implementation: str) -> None:
    node = await GossipNode.start(config("f", implementation))
    async with node:
        r, w = await raw(node.addr)
        try:
            await write_message(w, Replicate("stranger", 1, 1, zlib.crc32(b"x"), b"x"))
            assert await asyncio.wait_for(read_message(r), 5) == ReplicateAck("f", 1, False)
            assert len(node.replication_log) == 0
        finally:
            w.close()


async def test_replication_log_is_bounded_and_one_leader_holds_a_term(
    implementation: str,
) -> None:
    node = await GossipNode.start(
        config("f", implementation, replication_leaders={"L1", "L2"}, max_log_entries=3)
    )
    async with node:
        r, w = await raw(node.addr)

        async def offer(leader: str, index: int, term: int) -> bool:
            payload = b"p%d" % index
            await write_message(w, Replicate(leader, index, term, zlib.crc32(payload), payload))
            ack = await asyncio.wait_for(read_message(r), 5)
            return bool(ack.success)

        try:
            assert await offer("L1", 1, 1)
            assert not await offer("L2", 2, 1)  # term 1 is L1's
            assert not await offer("X", 2, 2)  # not a named leader
            assert await offer("L2", 2, 2)
            assert await offer("L2", 3, 2)
            assert not await offer("L2", 4, 2)  # max_log_entries
            assert node.replication_log.refused == {"term": 1, "leader": 1, "full": 1}
        finally:
            w.close()


# -- logs -----------------------------------------------------------------------------


async def test_a_garbage_flood_logs_a_bounded_number_of_lines(
    implementation: str, caplog: pytest.LogCaptureFixture
) -> None:
    """2,650 WARNING lines a second during a garbage flood: now at most a few per
    cause per 10 s; the count is in stats.bad_frames."""
    node = await GossipNode.start(config("n", implementation))
    async with node:
        with caplog.at_level(logging.WARNING, logger="fastgossip"):
            for _ in range(40):
                r, w = await raw(node.addr)
                w.write(b"\x00\x00\x00\x05\x09garbage")
                await asyncio.wait_for(r.read(), 5)  # closed by the node
                w.close()
        assert node.stats.bad_frames == 40
        lines = [rec for rec in caplog.records if "bad frame" in rec.getMessage()]
        assert 1 <= len(lines) <= 5


# -- small things a new user hit ------------------------------------------------------


async def test_ping_neither_adds_a_peer_nor_waits_on_a_refused_port(implementation: str) -> None:
    a, b = await pair(implementation)
    async with a, b:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed_port = s.getsockname()[1]
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(NodeError, match="cannot connect"):
            await a.ping(("127.0.0.1", closed_port), timeout=5)
        assert loop.time() - started < 2
        assert ("127.0.0.1", closed_port) not in a.peers
        c = await GossipNode.start(config("c", implementation))
        async with c:
            assert await c.ping(a.addr) >= 0
            assert a.addr not in c.peers and c.addr not in a.peers
        assert await a.ping(b.addr) >= 0  # over the existing link


def test_addresses_are_parsed_and_normalised() -> None:
    assert parse_address("127.0.0.1:17001") == ("127.0.0.1", 17001)
    assert parse_address("[::1]:80") == ("::1", 80)
    assert parse_address("[0:0:0:0:0:0:0:1]:80") == ("::1", 80)
    assert parse_address(("localhost", 5)) == ("127.0.0.1", 5)
    assert parse_address("db.example:5") == ("db.example", 5)
    for bad in ["127.0.0.1", "h:0", "h:x", ("h", "5"), ("h", True), "::1:5", "[::1]5", ":5"]:
        with pytest.raises(ValueError):
            parse_address(bad)  # type: ignore[arg-type]


async def test_add_peer_takes_strings_and_counts_a_host_once(implementation: str) -> None:
    node = await GossipNode.start(config("n", implementation))
    async with node:
        node.add_peer("127.0.0.1:17001")
        node.add_peer(("localhost", 17001))
        node.add_peer(("127.0.0.1", 17001))
        assert node.peers == [("127.0.0.1", 17001)]
        with pytest.raises(ValueError):
            node.add_peer(("127.0.0.1", 0))


async def test_a_small_descriptor_budget_still_converges(
    implementation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With few file descriptors, 100 nodes took 10 s and 300 never converged,
    with hundreds of thousands of 'Too many open files' tracebacks. Dials stop
    short of the budget and close the least recently used link instead."""
    from fastgossip.testing import ClusterNetwork

    monkeypatch.setattr(FDS, "limit", FDS.in_use + 30)
    monkeypatch.setattr(FDS, "pending", 0)  # what earlier tests' dials may have left held
    monkeypatch.setattr(FDS, "expected", {})
    async with await ClusterNetwork.spawn(
        8, gossip_interval=FAST, implementation=implementation
    ) as net:
        for i in range(8):
            net.set_on(i, f"k{i}", i)
        stats = await net.wait_until(lambda: all(n.state_len() == 8 for n in net.nodes), 20)
        assert stats.converged
        # dials stop at the limit; accepted sockets may pass it by the few in
        # flight, never by the reserve kept below the OS limit
        assert FDS.in_use <= FDS.limit + FDS.RESERVE // 2


# -- what a node takes in: the table's refusals, end to end ---------------------------


async def send_batch(addr, entries) -> None:
    reader, writer = await raw(addr)
    try:
        await write_message(
            writer,
            GossipBatch("evil", entries),
        )
        await write_message(writer, Ping("evil", 99))
        assert (await asyncio.wait_for(read_message(reader), 5)).seq == 99  # handled
    finally:
        writer.close()


async def test_an_entry_that_cannot_be_relayed_is_refused_on_arrival(
    implementation: str,
) -> None:
    """Hole 1: a batch whose length field equalled max_frame_size was stored;
    relaying it needs the prefix and a longer sender id, so every delta build
    failed and the node sent nothing to anyone again. Now an entry is stored
    only when a one-entry batch from the longest sender id carries it."""
    size = 4096
    a, b = await pair(implementation, max_frame_size=size)
    async with a, b:
        # the largest value that fits a frame from a short sender, not from a long one
        big = b"x" * (size - 60)
        await send_batch(a.addr, [Entry("big", big, 1, "someone#1", 1)])
        assert a.get("big") is None and a.refusals()["too_large"] == 1
        a.set("fresh", 1)
        await wait_for(lambda: b.get("fresh") == 1)
        assert a.stats.bad_frames == 0


async def test_a_forged_stamp_from_the_far_future_is_refused(implementation: str) -> None:
    """Hole 2: one ~60-byte frame with stamp 2**64-1 under b's origin raised every
    watermark for b forever. Beyond the horizon it is refused on arrival."""
    a, b = await pair(implementation)
    async with a, b:
        b.set("before", 1)
        await wait_for(lambda: a.get("before") == 1)
        hour = make_version(wall_ms() + 3_600_000)
        await send_batch(
            a.addr, [Entry("x", 1, 1, b.origin, 2**64 - 1), Entry("y", 1, 1, b.origin, hour)]
        )
        assert a.refusals()["future"] == 2
        assert a.watermarks()[b.origin] < hour
        b.set("after", 2)
        await wait_for(lambda: a.get("after") == 2)


async def test_a_node_refuses_entries_under_its_own_origin(implementation: str) -> None:
    a, b = await pair(implementation)
    async with a, b:
        await send_batch(a.addr, [Entry("mine?", 1, 1, a.origin, 5)])
        assert a.get("mine?") is None and a.refusals()["own_origin"] == 1


async def test_a_key_cannot_be_made_unwritable(implementation: str) -> None:
    """Hole 5: version 2**64-1 with a 64 KB origin of U+10FFFF beat every later
    write, even set_with_version(key, v, 2**64-1). Both are refused now: the
    version is beyond the horizon, and an origin is at most 266 bytes."""
    a, b = await pair(implementation)
    async with a, b:
        huge_origin = "\U0010ffff" * 16_000
        now = make_version(wall_ms())
        await send_batch(
            a.addr,
            [
                Entry("leader", b"evil", 2**64 - 1, "e#1", now),
                Entry("leader", b"evil", 5, huge_origin, now),
            ],
        )
        refused = a.refusals()
        assert refused["future"] == 1 and refused["origin_too_long"] == 1
        b.set("leader", b"honest")
        await wait_for(lambda: a.get("leader") == b"honest")


async def test_digests_larger_than_a_frame_are_split(implementation: str) -> None:
    """Hole 3: with enough origins a digest passed max_frame_size and every peer
    refused it: the node was cut off. Digests are now sent in parts."""
    size = 8192
    a, b = await pair(implementation, max_frame_size=size)
    async with a, b:
        stamp = make_version(wall_ms())
        entries = [Entry(f"k{i}", i, stamp, f"writer-{i:04d}#1", stamp) for i in range(600)]
        for start in range(0, 600, 100):  # ~20 bytes per origin: 12 kB of digest
            await send_batch(a.addr, entries[start : start + 100])
        assert len(a.digest_watermarks()) > size // 20
        await wait_for(lambda: b.state_len() == 600, timeout=20)
        a.set("fresh", 1)
        await wait_for(lambda: b.get("fresh") == 1)
        b.set("back", 1)
        await wait_for(lambda: a.get("back") == 1)
        assert a.stats.bad_frames == 0 and b.stats.bad_frames == 0


async def test_a_bounded_table_refuses_a_flood_of_keys(implementation: str) -> None:
    """400 MiB of junk keys reached every node and stayed. With max_keys (or
    max_table_bytes) a node stores no more; entries beyond are refused and
    counted, and a local write beyond raises TableFull."""
    from fastgossip import TableFull

    # (without membership: its own record would take one of the 100 keys)
    node = await GossipNode.start(config("n", implementation, max_keys=100, membership=False))
    async with node:
        now = make_version(wall_ms())
        for start in range(0, 1000, 250):
            await send_batch(
                node.addr,
                [Entry(f"junk{i}", i, now, "e#1", now + i) for i in range(start, start + 250)],
            )
        assert node.state_len() == 100
        assert node.refusals()["table_full"] == 900
        with pytest.raises(TableFull):
            node.set("one-more", 1)
        node.set("junk0", 2)  # an update of a held key is still taken
        assert node.get("junk0") == 2


async def test_forged_entries_of_a_silent_node_are_not_resent_forever(
    implementation: str,
) -> None:
    """Found in review: entries planted under the origin of a node that never
    writes were refused by it (own origin) and resent to it in every exchange,
    since its digest did not name its origin: 53 MB/s. A node names its own
    origin at its stamp clock, and a refused entry of it within the horizon
    moves that clock past it, so the resending stops. (Without membership:
    a member's heartbeats move its stamp clock anyway.)"""
    a, b = await pair(implementation, membership=False)
    async with a, b:
        now = make_version(wall_ms())
        await send_batch(a.addr, [Entry(f"k{i}", i, now, b.origin, now + i) for i in range(200)])
        await wait_for(lambda: b.refusals()["own_origin"] >= 200)
        await wait_for(lambda: b.stats.forged_stamps >= 1)
        settled = b.refusals()["own_origin"]
        start = b.stats.rounds
        await wait_for(lambda: b.stats.rounds >= start + 10)
        assert b.refusals()["own_origin"] <= settled + 200  # one more pass at most
        b.set("fresh", 1)
        await wait_for(lambda: a.get("fresh") == 1)
