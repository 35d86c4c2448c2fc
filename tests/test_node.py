"""GossipNode and ClusterNetwork over real sockets on 127.0.0.1.

No sleeps as synchronisation: every wait polls a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import zlib

import pytest

from fastgossip import (
    Fanout,
    GossipNode,
    NodeConfig,
    NodeError,
    Ping,
    Pong,
    Replicate,
    ReplicateAck,
    node_of,
    read_message,
    write_message,
)
from fastgossip.testing import ClusterNetwork

from .conftest import wait_for

FAST = 0.02  # gossip interval for tests, seconds


def config(node_id: str, implementation: str, **kw) -> NodeConfig:
    kw.setdefault("gossip_interval", FAST)
    kw.setdefault("bind", ("127.0.0.1", 0))
    return NodeConfig(node_id, implementation=implementation, **kw)


async def non_reading_client(addr) -> socket.socket:
    """A connected socket with a tiny receive buffer that the test never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, addr)
    except BaseException:
        sock.close()
        raise
    return sock


async def pair(implementation: str, **kw):
    a = await GossipNode.start(config("a", implementation, **kw))
    b = await GossipNode.start(config("b", implementation, **kw))
    a.add_peer(b.addr)
    b.add_peer(a.addr)
    return a, b


# -- the reference's scenarios ----------------------------------------------------


async def test_two_nodes_converge(implementation: str) -> None:
    a, b = await pair(implementation)
    async with a, b:
        a.set("color", b"blue")
        await wait_for(lambda: b.get("color") == b"blue")
        assert b.get_with_version("color") == a.get_with_version("color")
        assert a.implementation == implementation


async def test_three_nodes_bounded_one(implementation: str) -> None:
    async with await ClusterNetwork.spawn(
        3, fanout=Fanout.bounded(1), gossip_interval=FAST, implementation=implementation
    ) as net:
        net.set_on(0, "k", 7)
        result = await net.wait_converged("k", 7, timeout=10)
        assert result.converged and result.node_count == 3
        assert [net.get_on(i, "k") for i in range(3)] == [7, 7, 7]


async def test_five_nodes_sqrt(implementation: str) -> None:
    async with await ClusterNetwork.spawn(
        5, fanout=Fanout.SQRT, gossip_interval=FAST, implementation=implementation
    ) as net:
        net.set_on(4, "k", b"v")
        result = await net.wait_converged("k", b"v", timeout=10)
        assert result.converged
        assert result.final_state_entries == 5


async def test_ten_nodes_sqrt_three_keys(implementation: str) -> None:
    async with await ClusterNetwork.spawn(
        10, fanout=Fanout.SQRT, gossip_interval=FAST, implementation=implementation
    ) as net:
        for i, key in enumerate(("x", "y", "z")):
            net.set_on(i * 3, key, i + 100)
        for i, key in enumerate(("x", "y", "z")):
            assert (await net.wait_converged(key, i + 100, timeout=10)).converged
        assert all(node.state_len() == 3 for node in net.nodes)


async def test_distinct_keys_counted_and_several_keys_propagate() -> None:
    async with await ClusterNetwork.spawn(4, gossip_interval=FAST) as net:
        for i in range(40):
            net.set_on(i % 4, f"key-{i}", i)
        net.set_on(1, "key-3", 1003)  # an overwrite is not a new key
        result = await net.wait_until(lambda: all(n.state_len() == 40 for n in net.nodes))
        assert result.converged and result.final_state_entries == 160
        assert (await net.wait_converged("key-3", 1003)).converged
        for node in net.nodes:
            assert {k: node.get(k) for k in node.keys()} == {
                f"key-{i}": (1003 if i == 3 else i) for i in range(40)
            }


async def test_explicit_versions_higher_wins(implementation: str) -> None:
    a, b = await pair(implementation)
    async with a, b:
        assert a.set_with_version("k", 1, 10)
        assert b.set_with_version("k", 2, 20)
        assert not a.set_with_version("k", 3, 5)  # a lower version does not win
        assert a.get("k") == 1
        await wait_for(lambda: a.get("k") == 2 and b.get("k") == 2)
        assert a.get_with_version("k") == (2, 20)


async def test_graceful_shutdown_frees_port() -> None:
    a, b = await pair("cython")
    a.set("k", 1)
    await wait_for(lambda: b.get("k") == 1)
    port = a.addr[1]
    await a.shutdown()
    await b.shutdown()
    assert a.closed
    with pytest.raises(NodeError):
        a.set("k", 2)
    await a.shutdown()  # idempotent
    # the port can be bound again at once
    again = await GossipNode.start(NodeConfig.localhost("again", port))
    assert again.addr[1] == port
    await again.shutdown()
    assert not a._transport.conns and not b._transport.conns
    me = asyncio.current_task()
    leftover = [
        t
        for t in asyncio.all_tasks()
        if t is not me and not t.get_coro().__qualname__.startswith("wait_for")
    ]
    assert not leftover, leftover


async def test_bind_failure_is_node_error() -> None:
    a = await GossipNode.start(NodeConfig.localhost("a"))
    try:
        # a second listener on a listening port fails (no SO_REUSEPORT)
        with pytest.raises(NodeError, match=f"127.0.0.1:{a.addr[1]}"):
            await GossipNode.start(NodeConfig.localhost("b", a.addr[1]))
    finally:
        await a.shutdown()


async def test_raw_ping_pong(implementation: str) -> None:
    node = await GossipNode.start(config("n", implementation))
    async with node:
        reader, writer = await asyncio.open_connection(*node.addr)
        await write_message(writer, Ping("tester", 41))
        assert await asyncio.wait_for(read_message(reader), 5) == Pong("n", 41)
        await write_message(writer, Ping("tester", 2**64 - 1))
        assert await asyncio.wait_for(read_message(reader), 5) == Pong("n", 2**64 - 1)
        writer.close()
        await writer.wait_closed()


async def test_node_ping_measures_rtt() -> None:
    a, b = await pair("cython")
    async with a, b:
        rtt = await a.ping(b.addr)
        assert 0 <= rtt < 5


# -- Replicate is checked ----------------------------------------------------------


async def test_raw_replicate_and_refusals(implementation: str) -> None:
    node = await GossipNode.start(config("f", implementation, replication_leaders={"leader"}))
    async with node:
        reader, writer = await asyncio.open_connection(*node.addr)

        async def offer(index: int, term: int, payload: bytes, checksum=None) -> ReplicateAck:
            crc = zlib.crc32(payload) if checksum is None else checksum
            await write_message(writer, Replicate("leader", index, term, crc, payload))
            return await asyncio.wait_for(read_message(reader), 5)

        assert await offer(1, 1, b"one") == ReplicateAck("f", 1, True)
        assert await offer(2, 1, b"two") == ReplicateAck("f", 2, True)
        assert await offer(2, 1, b"two") == ReplicateAck("f", 2, True)  # re-delivery
        assert await offer(2, 2, b"two") == ReplicateAck("f", 2, False)  # term conflict
        assert await offer(4, 1, b"gap") == ReplicateAck("f", 4, False)  # not next
        assert await offer(3, 1, b"bad", checksum=123) == ReplicateAck("f", 3, False)
        assert await offer(3, 3, b"three") == ReplicateAck("f", 3, True)
        assert await offer(4, 2, b"stale") == ReplicateAck("f", 4, False)  # term went back
        assert await offer(0, 3, b"zero") == ReplicateAck("f", 0, False)
        assert len(node.replication_log) == 3
        assert node.replication_log[3].payload == b"three"
        writer.close()
        await writer.wait_closed()


# -- what the reference gets wrong ----------------------------------------------------


async def test_later_write_wins_across_nodes(implementation: str) -> None:
    """Node a writes a key 50 times; node b writes it once, later. b wins
    everywhere (with per-node counters, a's 50th write would beat it)."""
    a, b = await pair(implementation)
    async with a, b:
        for i in range(50):
            a.set("k", i)
        await wait_for(lambda: b.get("k") == 49)
        b.set("k", 1000)
        await wait_for(lambda: a.get("k") == 1000)
        assert b.get("k") == 1000
        va, vb = a.get_with_version("k")[1], b.get_with_version("k")[1]
        assert va == vb


async def test_equal_versions_converge_to_one_value(implementation: str) -> None:
    a, b = await pair(implementation)
    async with a, b:
        a.set_with_version("k", b"from-a", 7)
        b.set_with_version("k", b"from-b", 7)
        await wait_for(lambda: a.get("k") == b.get("k"))
        # origin is the tie-break: "b#<life>" > "a#<life>"
        assert a.get("k") == b"from-b"
        assert a.get_entry("k").origin == b.origin and node_of(b.origin) == "b"


async def test_bytes_and_int_values_keep_their_types(implementation: str) -> None:
    a, b = await pair(implementation)
    async with a, b:
        a.set("bin", b"\x00\xff" * 100)
        a.set("num", 2**64 - 1)
        a.set("empty", b"")
        await wait_for(lambda: b.state_len() == 3)
        assert b.get("bin") == b"\x00\xff" * 100
        assert b.get("num") == 2**64 - 1 and type(b.get("num")) is int
        assert b.get("empty") == b""


async def test_hostile_bytes_close_only_that_connection(implementation: str) -> None:
    a, b = await pair(implementation, max_frame_size=4096)
    async with a, b:
        a.set("before", 1)
        await wait_for(lambda: b.get("before") == 1)
        hostile = [
            b"\x00\x00\x00\x05\x09\x01abc",  # unknown version
            b"\x00\x00\x00\x03\x01\x63z",  # unknown type
            struct.pack(">I", 0xFFFFFFF0) + b"\x01\x01",  # claims 4 GiB
            b"\x00\x00\x00\x06\x01\x02\x00\x09ab",  # inner length overruns
            b"\x00\x00\x00\x0e\x01\x02\x00\x02\xff\xfe" + b"\x00" * 8,  # bad UTF-8
        ]
        for i, junk in enumerate(hostile, start=1):
            reader, writer = await asyncio.open_connection(*b.addr)
            writer.write(junk)
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by b
            writer.close()
            await wait_for(lambda i=i: b.stats.bad_frames == i)
        # b still serves a, and kept what it had
        assert b.get("before") == 1
        a.set("after", 2)
        await wait_for(lambda: b.get("after") == 2)
        reader, writer = await asyncio.open_connection(*b.addr)
        await write_message(writer, Ping("t", 1))
        assert await asyncio.wait_for(read_message(reader), 5) == Pong("b", 1)
        writer.close()


async def test_one_connection_per_peer_across_rounds(implementation: str) -> None:
    async with await ClusterNetwork.spawn(
        4, fanout=Fanout.UNBOUNDED, gossip_interval=0.01, implementation=implementation
    ) as net:
        start = [n.stats.rounds for n in net.nodes]
        await wait_for(lambda: all(n.stats.rounds - s >= 40 for n, s in zip(net.nodes, start)))
        for i in range(20):
            net.set_on(i % 4, f"k{i}", i)
        assert (await net.wait_until(lambda: all(n.state_len() == 20 for n in net.nodes))).converged
        for node in net.nodes:
            assert node.stats.connections_opened == 3
            assert node.stats.connections_accepted == 3


async def test_steady_state_traffic_is_flat(implementation: str) -> None:
    """With no writes, a round's bytes do not grow with the number of keys."""

    async def bytes_per_round(keys: int) -> float:
        a, b = await pair(implementation, gossip_interval=0.01)
        async with a, b:
            for i in range(keys):
                a.set(f"some-longer-key-{i:08d}", i)
            await wait_for(lambda: b.state_len() == keys, timeout=30)
            # let the catch-up finish, then measure
            await wait_for(lambda: a.stats.rounds >= 5)
            sent0, rounds0 = a.stats.bytes_sent + b.stats.bytes_sent, a.stats.rounds
            await wait_for(lambda: a.stats.rounds >= rounds0 + 30)
            sent = a.stats.bytes_sent + b.stats.bytes_sent - sent0
            return sent / (a.stats.rounds - rounds0)

    small = await bytes_per_round(10)
    large = await bytes_per_round(5000)
    assert large <= 2 * small + 64, (small, large)
    assert large < 1000  # digests, not the 5000-key state (~150 kB)


async def test_fresh_peer_catches_up_in_one_exchange(implementation: str) -> None:
    """A peer that lacks everything gets it all within one round, in many
    frames, not one frame per round: the first answer on a connection is cut
    at FIRST_CAP (issue #13: a slow link is not flooded), and the peer asks
    again at once while answers bring entries, the cap doubling each time."""
    # (without membership: its greeting would be one more frame each way)
    slow = dict(gossip_interval=3600, max_frame_size=64 * 1024, membership=False)
    a = await GossipNode.start(config("a", implementation, **slow))
    async with a:
        for i in range(20000):
            a.set(f"k{i}", i)
        b = await GossipNode.start(config("b", implementation, **slow))
        async with b:
            b.add_peer(a.addr)
            b.gossip_round()  # connect, then one digest exchange
            await wait_for(lambda: b.state_len() == 20000, timeout=30)
            # no round went by (an hour apart): b asked again at once, a few
            # times (128 KiB, 256, 512...), and was sent ~600 kB in frames of
            # at most 64 KiB
            assert a.stats.frames_received <= 6
            assert a.stats.frames_sent >= 8
            assert b.get("k19999") == 19999


async def test_peer_restart_reconnects(implementation: str) -> None:
    a, b = await pair(implementation)
    async with a:
        a.set("k", 1)
        await wait_for(lambda: b.get("k") == 1 and a.stats.connections_opened == 1)
        port = b.addr[1]
        await b.shutdown()
        a.set("k", 2)
        b2 = await GossipNode.start(config("b", implementation, bind=("127.0.0.1", port)))
        async with b2:
            await wait_for(lambda: b2.get("k") == 2, timeout=15)
            assert a.stats.connections_opened >= 2


def test_origin_names_a_life_of_a_node() -> None:
    from fastgossip.node import _new_life

    lives = [_new_life("x#y") for _ in range(50)]  # faster than the clock ticks
    assert lives == sorted(lives) and len(set(lives)) == 50
    assert all(len(life) == 8 and life.isalnum() for life in lives)
    assert node_of(f"x#y#{lives[0]}") == "x#y"
    assert node_of("no-life") == "no-life"


@pytest.mark.parametrize("ahead_ms", [0, 15_000])
async def test_restarted_node_first_writes_spread(implementation: str, ahead_ms: int) -> None:
    """A node restarted under its old id writes before its first exchange (a
    service registering itself at start-up): it must get its previous life's
    entries back and spread the new write. With ahead_ms, its previous life's
    clock had followed a version pushed that far into the future, so that
    every stamp it issued is above the new life's clock."""
    from fastgossip.clock import make_version, wall_ms

    a, b = await pair(implementation)
    async with b:
        async with a:
            a.set_with_version("pushed", 1, make_version(wall_ms() + ahead_ms))
            a.set("before", 1)
            await wait_for(lambda: b.get("before") == 1 and b.get("pushed") == 1)
        a2 = await GossipNode.start(config("a", implementation))
        a2.set("after-restart", 2)  # no loop iteration yet: before any exchange
        a2.add_peer(b.addr)
        async with a2:
            await wait_for(lambda: a2.get("before") == 1)  # the old life comes back
            await wait_for(lambda: b.get("after-restart") == 2, timeout=5)
            a2.set("later", 3)
            await wait_for(lambda: b.get("later") == 3)


@pytest.mark.parametrize("retire_after", [None, 0.05])
async def test_mutual_overwrites_converge_through_a_small_delta_budget(
    implementation: str, retire_after
) -> None:
    """During a partition each node overwrites every key the other wrote, so
    neither holds a live entry of the other's origin (and with retire_after,
    leaves it out of its digests). After healing, answers are cut at 8 KiB:
    the digests must name the other's origin again (with its watermark) once
    its entries arrive, or each answer restarts from stamp 0 with entries that
    lose and never reaches the ones that win."""
    # (without membership, which would bring the removed peers back)
    a, b = await pair(
        implementation, max_delta_bytes=8192, retire_after=retire_after, membership=False
    )
    async with a, b:
        value = b"x" * 100
        for i in range(200):
            a.set(f"A{i}", value)
            b.set(f"B{i}", value)
        await wait_for(lambda: a.state_len() == b.state_len() == 400)
        a.remove_peer(b.addr)
        b.remove_peer(a.addr)
        for i in range(200):
            a.set(f"B{i}", b"a" + value)
            b.set(f"A{i}", b"b" + value)
        if retire_after is not None:  # each has left the other's origin out
            await wait_for(lambda: b.origin not in a.digest_watermarks())
            await wait_for(lambda: a.origin not in b.digest_watermarks())
        a.add_peer(b.addr)
        b.add_peer(a.addr)
        await wait_for(lambda: a.items() == b.items(), timeout=20)


async def test_many_retired_origins_converge_through_a_small_budget(
    implementation: str,
) -> None:
    """Twelve dead origins per side, each with more entries than one 8 KiB
    answer holds; a overwrote all of one side's, b all of the other's, and
    both have retired them. Once peered, each origin comes back while its
    losing entries arrive; with a fixed window they took turns retiring again
    and the nodes never converged (found in review). Each origin's window now
    doubles whenever it comes back."""
    a, b = await pair(implementation, max_delta_bytes=8192, retire_after=0.05)
    a.remove_peer(b.addr)
    b.remove_peer(a.addr)
    async with a, b:
        value = b"x" * 100
        stamp = 1000
        for i in range(12):  # as if gossiped earlier: both hold every dead origin's keys
            for side in "DE":
                for j in range(100):
                    stamp += 1
                    for node in (a, b):
                        node._state.set(f"{side}{i}-{j}", value, stamp, f"{side}{i}#dead", stamp)
        for i in range(12):
            for j in range(100):
                a.set(f"D{i}-{j}", b"a" + value)
                b.set(f"E{i}-{j}", b"b" + value)
        await wait_for(lambda: not any(o.startswith("D") for o in a.digest_watermarks()))
        await wait_for(lambda: not any(o.startswith("E") for o in b.digest_watermarks()))
        a.add_peer(b.addr)
        b.add_peer(a.addr)
        await wait_for(lambda: a.items() == b.items(), timeout=60)


async def test_dead_lives_leave_the_digests(implementation: str) -> None:
    """Each restart is a new origin. Once a life holds no key (here: the next
    life overwrote its only one) and nothing of it arrives for retire_after,
    it leaves the digests, which therefore do not grow with restarts; a new
    node still gets everything."""
    from fastgossip import Digest

    a, b = await pair(implementation, retire_after=0.2)
    async with b:
        b.set("from-b", 1)
        await a.shutdown()
        lives = []
        for i in range(4):
            life = await GossipNode.start(config("a", implementation))
            life.add_peer(b.addr)
            async with life:
                life.set("k", i)  # overwrites the previous life's only key
                await wait_for(lambda i=i: b.get("k") == i)
                lives.append(life.origin)
        assert set(lives) < set(b.watermarks())  # every life is still counted
        await wait_for(lambda: set(b.digest_watermarks()) == {lives[-1], b.origin})
        # what b sends: ask as a peer would, holding everything already
        reader, writer = await asyncio.open_connection(*b.addr)
        try:
            await write_message(writer, Digest("probe", b.watermarks(), reply=True))
            answer = await asyncio.wait_for(read_message(reader), 5)
        finally:
            writer.close()
        assert isinstance(answer, Digest) and not answer.reply
        assert {origin for origin, _ in answer.watermarks} == {lives[-1], b.origin}
        fresh = await GossipNode.start(config("c", implementation))
        fresh.add_peer(b.addr)
        async with fresh:
            await wait_for(lambda: fresh.items() == {"k": 3, "from-b": 1})


async def test_peer_that_drops_every_connection_is_redialled_with_backoff(
    implementation: str,
) -> None:
    """A peer that accepts and at once closes each connection never answers, so
    the backoff keeps doubling (it is reset only by an answer): six dials take
    at least half the sum of 0.05 + 0.1 + 0.2 + 0.4 + 0.4 s (jitter is 0.5x to
    1.5x). Reset on connect, they came every ~0.05 s."""
    loop = asyncio.get_running_loop()
    accepted: list = []

    def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(loop.time())
        writer.close()

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    node = await GossipNode.start(config("n", implementation, reconnect_max=0.4))
    try:
        node.add_peer(server.sockets[0].getsockname()[:2])
        await wait_for(lambda: len(accepted) >= 6, timeout=20)
        assert accepted[5] - accepted[0] >= 0.5 * (0.05 + 0.1 + 0.2 + 0.4 + 0.4)
    finally:
        await node.shutdown()
        server.close()
        await server.wait_closed()


async def test_concurrent_writes_and_a_crash_converge(implementation: str) -> None:
    """Random concurrent writes on five nodes, one node crashing and coming
    back empty on its old port: every node ends with the same table, and each
    key holds its greatest (version, origin, value) write."""
    import random

    rng = random.Random(7)
    async with await ClusterNetwork.spawn(
        5, fanout=Fanout.bounded(2), gossip_interval=FAST, implementation=implementation
    ) as net:
        writes: dict = {}

        def write(i: int, key: str, value) -> None:
            version = net.set_on(i, key, value)
            best = writes.get(key)
            cand = (version, net.nodes[i].node_id, value)
            if best is None or cand > best:
                writes[key] = cand

        for step in range(300):
            write(rng.randrange(5), f"k{rng.randrange(40)}", rng.randrange(1000))
            if step % 50 == 0:
                await asyncio.sleep(0)  # let rounds interleave with writes

        def settled() -> bool:
            return all(
                {k: n.get(k) for k in writes} == {k: w[2] for k, w in writes.items()}
                for n in net.nodes
            )

        assert (await net.wait_until(settled, timeout=20)).converged
        victim = net.nodes[3]
        port = victim.addr[1]
        await victim.shutdown()
        for _ in range(100):
            write(rng.choice([0, 1, 2, 4]), f"k{rng.randrange(40)}", rng.randrange(1000))
        reborn = await GossipNode.start(
            config("node-3", implementation, bind=("127.0.0.1", port), fanout=Fanout.bounded(2))
        )
        for other in net.nodes:
            if other is not victim:
                reborn.add_peer(other.addr)
        net.nodes[3] = reborn
        assert (await net.wait_until(settled, timeout=20)).converged
        for node in net.nodes:
            for key, (version, origin, value) in writes.items():
                assert node.get_with_version(key) == (value, version)
                assert node_of(node.get_entry(key).origin) == origin


async def test_partition_heals_to_one_table(implementation: str) -> None:
    """Six nodes split into two halves that write the same keys concurrently,
    with equal versions (ties broken by origin, then by value: ints below
    bytes). While split, neither half sees the other's writes; once healed,
    every node holds each key's greatest (version, origin, value)."""
    import random

    rng = random.Random(11)
    async with await ClusterNetwork.spawn(
        6, fanout=Fanout.bounded(2), gossip_interval=FAST, implementation=implementation
    ) as net:
        halves = ([0, 1, 2], [3, 4, 5])
        addrs = [node.addr for node in net.nodes]
        for side, other in (halves, halves[::-1]):
            for i in side:
                for j in other:
                    net.nodes[i].remove_peer(addrs[j])
        best: dict = {}

        def rank(version: int, origin: str, value) -> tuple:
            return (version, origin, (0, value) if isinstance(value, int) else (1, value))

        for _ in range(300):
            i = rng.randrange(6)
            key = f"k{rng.randrange(25)}"
            value = rng.choice([rng.randrange(100), bytes([rng.randrange(256)])])
            version = 1000 + rng.randrange(3)  # few versions: many ties
            net.set_with_version_on(i, key, value, version)
            cand = rank(version, net.nodes[i].origin, value)
            if key not in best or cand > best[key]:
                best[key] = cand
        net.set_on(4, "only-in-b", 1)
        result = await net.wait_until(lambda: all(net.get_on(i, "only-in-b") == 1 for i in (3, 5)))
        assert result.converged
        assert all(net.get_on(i, "only-in-b") is None for i in halves[0])  # still split
        for side, other in (halves, halves[::-1]):
            for i in side:
                for j in other:
                    net.nodes[i].add_peer(addrs[j])

        def healed() -> bool:
            return all(
                rank(n.get_entry(k).version, n.get_entry(k).origin, n.get_entry(k).value) == b
                for n in net.nodes
                for k, b in best.items()
                if n.get_entry(k) is not None
            ) and all(n.state_len() == len(best) + 1 for n in net.nodes)

        assert (await net.wait_until(healed, timeout=20)).converged
        assert len({tuple(sorted(n.items().items(), key=repr)) for n in net.nodes}) == 1


async def test_peer_that_stops_reading_is_not_buffered_without_bound(
    implementation: str,
) -> None:
    """A client asks for the whole state again and again and never reads:
    the node stops writing to it (sends dropped) instead of buffering."""
    from fastgossip import Digest, encode

    high, max_delta = 64 * 1024, 128 * 1024
    node = await GossipNode.start(
        config("n", implementation, write_buffer_high=high, max_delta_bytes=max_delta)
    )
    async with node:
        for i in range(5000):
            node.set(f"a-fairly-long-key-{i:06d}", b"x" * 16)
        sock = await non_reading_client(node.addr)
        loop = asyncio.get_running_loop()
        ask = encode(Digest("greedy", {}, reply=True))
        try:
            for _ in range(400):
                await loop.sock_sendall(sock, ask)
                if node.stats.sends_dropped:
                    break
            # answers are cut to the room in the write buffer, and one per
            # round: the rest are dropped or throttled
            await wait_for(lambda: node.stats.sends_dropped + node.stats.exchanges_throttled > 0)
            inbound = [p for p in node._transport.conns.values() if not p.outbound]
            assert inbound
            buffered = max(p.transport.get_write_buffer_size() for p in inbound)
            assert buffered <= high + max_delta + 4096, buffered
            # everyone else is still served
            reader, writer = await asyncio.open_connection(*node.addr)
            await write_message(writer, Ping("other", 5))
            assert await asyncio.wait_for(read_message(reader), 5) == Pong("n", 5)
            writer.close()
        finally:
            sock.close()


async def test_peers_that_stop_reading_cannot_fill_the_node(implementation: str) -> None:
    """Clients ask for the whole state again and again and never read. All
    connections together never queue more than max_buffered_bytes (plus a
    frame), though each alone could take max_delta_bytes: when the cap is hit
    the connections holding the most are aborted, and no connection is sent
    what is already in flight on it. A healthy peer meanwhile
    still gets the node's new writes, and the node still gets the peer's."""
    from fastgossip import Digest, encode

    cap, frame = 96 * 1024, 16 * 1024
    a = await GossipNode.start(
        config(
            "a",
            implementation,
            max_frame_size=frame,
            max_delta_bytes=1 << 20,
            max_buffered_bytes=cap,
            write_buffer_high=1 << 20,
        )
    )
    b = await GossipNode.start(config("b", implementation))
    async with a, b:
        for i in range(5000):
            a.set(f"a-fairly-long-key-{i:06d}", b"x" * 16)  # ~300 kB of entries
        a.add_peer(b.addr)
        b.add_peer(a.addr)
        await wait_for(lambda: b.state_len() == 5000)
        socks = [await non_reading_client(a.addr) for _ in range(4)]
        loop = asyncio.get_running_loop()
        ask = encode(Digest("greedy", {}, reply=True))
        try:
            for _ in range(200):
                sent, shed = a.stats.frames_received, a.stats.connections_shed
                for sock in list(socks):
                    try:
                        await loop.sock_sendall(sock, ask)
                        sent += 1
                    except OSError:  # aborted by the node
                        socks.remove(sock)
                        sock.close()
                # each ask handled before the next round; an aborted client's
                # last ask may be lost with it
                await wait_for(
                    lambda sent=sent, shed=shed: (
                        a.stats.frames_received >= sent - (a.stats.connections_shed - shed)
                    )
                )
                assert a._transport.buffered_total() <= cap + frame, a._transport.buffered_total()
                if a.stats.connections_shed >= 4 or not socks:
                    break
            # each client was sent the state once at most (what is in flight
            # on a connection is not sent on it again), or was shed for it
            assert a.stats.connections_shed > 0 or a.stats.bytes_sent < 2_500_000
            a.set("new", 1)
            await wait_for(lambda: b.get("new") == 1)
            b.set("from-b", 1)
            await wait_for(lambda: a.get("from-b") == 1)
        finally:
            for sock in socks:
                sock.close()


async def test_pushed_gossip_spreads_and_oversized_values_refused(implementation: str) -> None:
    from fastgossip import Gossip

    a, b = await pair(implementation, max_frame_size=4096)
    async with a, b:
        reader, writer = await asyncio.open_connection(*a.addr)
        await write_message(writer, Gossip("client", "pushed", b"hello", 123))
        await wait_for(lambda: b.get_with_version("pushed") == (b"hello", 123))
        # an older pushed version loses; a bad value closes only that connection
        await write_message(writer, Gossip("client", "pushed", b"old", 5))
        await write_message(writer, Ping("client", 9))
        assert await asyncio.wait_for(read_message(reader), 5) == Pong("a", 9)
        assert a.get("pushed") == b"hello"
        writer.close()
        with pytest.raises(ValueError, match="does not fit one frame"):
            a.set("big", b"x" * 5000)
        assert a.get("big") is None


async def test_outbound_connections_are_capped(implementation: str) -> None:
    async with await ClusterNetwork.spawn(
        6,
        fanout=Fanout.bounded(2),
        gossip_interval=0.01,
        implementation=implementation,
        max_connections=2,
    ) as net:
        for i in range(6):
            net.set_on(i, f"k{i}", i)
        assert (await net.wait_until(lambda: all(n.state_len() == 6 for n in net.nodes))).converged
        start = [n.stats.rounds for n in net.nodes]
        await wait_for(lambda: all(n.stats.rounds - s >= 20 for n, s in zip(net.nodes, start)))
        for node in net.nodes:
            assert sum(1 for link in node._transport.links.values() if link.connected) <= 2
        assert sum(n.stats.connections_evicted for n in net.nodes) > 0


async def test_far_future_versions_are_refused_and_clocks_keep_working(
    implementation: str,
) -> None:
    """A peer pushing version 2**64-1 (or one an hour ahead) is refused: the
    key stays writable by honest nodes, no clock follows it, and nothing is
    closed (the frame itself is valid)."""
    from fastgossip import Gossip
    from fastgossip.clock import make_version, wall_ms

    a, b = await pair(implementation)
    async with a, b:
        reader, writer = await asyncio.open_connection(*a.addr)
        await write_message(writer, Gossip("evil", "k", 1, 2**64 - 1))
        await write_message(writer, Gossip("evil", "k2", 2, make_version(wall_ms() + 3_600_000)))
        await write_message(writer, Ping("evil", 1))
        assert await asyncio.wait_for(read_message(reader), 5) == Pong("a", 1)
        writer.close()
        assert a.stats.entries_refused == 2
        assert a.get("k") is None and a.get("k2") is None
        for node in (a, b):
            version = node.set("fresh", 3)
            assert version < make_version(wall_ms() + 1000)
        b.set("k", b"honest")
        await wait_for(lambda: a.get("k") == b"honest")
        assert a.stats.bad_frames == 0 and b.stats.bad_frames == 0
        with pytest.raises(ValueError, match="ahead of this node's clock"):
            a.set_with_version("k", 1, 2**64 - 1)


async def test_shutdown_with_a_peer_that_stops_reading(implementation: str) -> None:
    from fastgossip import Digest, encode

    node = await GossipNode.start(config("n", implementation))
    for i in range(20000):
        node.set(f"key-{i:08d}", b"v" * 32)
    sock = await non_reading_client(node.addr)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_sendall(sock, encode(Digest("stuck", {}, reply=True)))
        await wait_for(lambda: node.stats.frames_sent > 0)
        started = loop.time()
        await asyncio.wait_for(node.shutdown(), 10)
        assert loop.time() - started < 5
        assert not node._transport.conns
    finally:
        sock.close()


def test_entry_size_is_checked_in_utf8_bytes() -> None:
    async def main() -> None:
        node = await GossipNode.start(NodeConfig.localhost("n", max_frame_size=4096))
        async with node:
            with pytest.raises(ValueError, match="does not fit one frame"):
                node.set("é" * 1000, b"y" * 2500)  # 2000 key bytes + 2500 value bytes
            with pytest.raises(ValueError, match="does not fit one frame"):
                node.set("k" * 4000, 1)
            node.set("é" * 100, b"y" * 2500)
            assert node.state_len() == 1

    asyncio.run(main())


def test_config_refuses_unusable_values() -> None:
    for bad in (
        dict(gossip_interval=float("nan")),
        dict(gossip_interval=0),
        dict(connect_timeout=0),
        dict(max_delta_bytes=-1),
        dict(write_buffer_high=0),
        dict(max_connections=0),
        dict(max_buffered_bytes=0),
        dict(retire_after=0),
        dict(retire_after=float("inf")),
    ):
        with pytest.raises(ValueError):
            NodeConfig("n", **bad)
    assert NodeConfig("n", retire_after=None).retire_after is None
    with pytest.raises(ValueError, match="longer than 255"):
        NodeConfig("x" * 256)


async def test_causal_write_wins_even_with_a_clock_behind(implementation: str) -> None:
    """a's clock runs 10 s ahead. b writes after seeing a's write: b's write
    must win, which only the hybrid clock's observe() makes true."""
    import time as _time

    from fastgossip.clock import HybridClock

    a, b = await pair(implementation)
    async with a, b:
        a._core.clock = HybridClock(now_ms=lambda: int(_time.time() * 1000) + 10_000)
        a.set("k", b"from-a")
        await wait_for(lambda: b.get("k") == b"from-a")
        b.set("k", b"from-b")
        await wait_for(lambda: a.get("k") == b"from-b")
        assert b.get("k") == b"from-b"
        with pytest.raises(NodeError):
            await a.ping(a.addr)


async def test_no_new_exchange_while_a_reply_is_outstanding(implementation: str) -> None:
    """A peer that never answers is asked once, not every round."""
    from fastgossip import FrameDecoder

    received: list = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder()
        while data := await reader.read(65536):
            received.extend(decoder.feed(data))
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    node = await GossipNode.start(
        config("n", implementation, gossip_interval=0.01, membership=False)  # no greeting
    )
    async with node:
        node.add_peer(server.sockets[0].getsockname()[:2])
        await wait_for(lambda: node.stats.rounds >= 30)
        assert len(received) == 1 and received[0].reply
        assert node.stats.exchanges_skipped >= 20
    server.close()
    await server.wait_closed()


async def test_inbound_connections_are_capped(implementation: str) -> None:
    node = await GossipNode.start(config("n", implementation, max_inbound=2))
    async with node:
        conns = [await asyncio.open_connection(*node.addr) for _ in range(3)]
        assert await asyncio.wait_for(conns[2][0].read(), 5) == b""  # closed at once
        assert node.stats.connections_refused == 1
        for i, (reader, writer) in enumerate(conns[:2]):
            await write_message(writer, Ping("c", i))
            assert await asyncio.wait_for(read_message(reader), 5) == Pong("n", i)
        for _, writer in conns:
            writer.close()


async def test_a_one_way_peer_gets_everything_through_a_small_budget(
    implementation: str,
) -> None:
    """Found in review: a lists b, b lists nobody (as a node that only knows its
    seeds); a's pushes are cut at an 8 KiB budget. Once a's questions became
    quiet (empty deltas, no reply awaited), b's answers were dropped as not
    owed and b stayed at 63 of 300 keys forever. A quiet question is owed one
    reply."""
    a = await GossipNode.start(config("a", implementation, max_delta_bytes=8192))
    b = await GossipNode.start(config("b", implementation, max_delta_bytes=8192))
    async with a, b:
        for i in range(300):
            a.set(f"key-{i:04d}", b"v" * 60)
        a.add_peer(b.addr)
        await wait_for(lambda: b.state_len() == 300, timeout=20)
