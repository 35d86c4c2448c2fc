"""Watching changes: local writes and merged entries, in order, filtered by
prefix in the table, with a bounded queue that coalesces or drops (told)."""

from __future__ import annotations

import asyncio
from typing import List

from fastgossip import Change, GossipNode, NodeConfig
from fastgossip.node import _ChangeQueue
from tests.conftest import wait_for

FAST = 0.05


async def test_watch_sees_local_and_remote_writes_in_order(implementation: str) -> None:
    a = await GossipNode.start(
        NodeConfig.localhost("a", gossip_interval=FAST, implementation=implementation)
    )
    b = await GossipNode.start(
        NodeConfig.localhost(
            "b", gossip_interval=FAST, implementation=implementation, seeds=[a.addr]
        )
    )
    got: List[Change] = []

    async def consume() -> None:
        async for ch in b.watch("svc/"):
            got.append(ch)

    task = asyncio.create_task(consume())
    try:
        await wait_for(lambda: b._watchers != [])  # registered on first iteration
        b.set("svc/local", b"1")
        b.set("other", b"no")
        a.set("svc/x", b"2")
        a.set("svc/x", b"3")
        await wait_for(lambda: [c.value for c in got if c.key == "svc/x"][-1:] == [b"3"])
        assert got[0] == Change("svc/local", b"1", got[0].version, b.origin, "set")
        assert all(c.key.startswith("svc/") for c in got)
        xs = [c.value for c in got if c.key == "svc/x"]
        assert xs in ([b"2", b"3"], [b"3"])  # (both, or only the newer if they came together)
        assert all(c.origin == a.origin for c in got if c.key == "svc/x")
        # no membership record reaches a watcher of everything
        seen: List[Change] = []
        unsubscribe = b.subscribe("", seen.append)
        a.set("z", 1)
        await wait_for(lambda: any(c.key == "z" for c in seen))
        assert not [c for c in seen if c.key.startswith("\x00")]
        unsubscribe()
        unsubscribe()  # (twice is harmless)
    finally:
        await a.shutdown()
        await b.shutdown()
        await asyncio.wait_for(task, 5)  # ends at shutdown
    assert b._core._watched == {}  # unwatched when the iterator ended


def test_the_queue_keeps_one_slot_per_key_and_drops_the_oldest_when_full() -> None:
    q = _ChangeQueue("", 3)
    for i in range(3):
        q.put(Change(f"k{i}", i, i, "o"))
    q.put(Change("k0", 99, 9, "o"))  # coalesced: the latest change, moved to the end
    assert [(c.key, c.value) for c in q.items.values()] == [("k1", 1), ("k2", 2), ("k0", 99)]
    q.put(Change("k3", 3, 3, "o"))  # full: the oldest (k1) goes, counted

    async def drain() -> List[Change]:
        return [await q.get() for _ in range(4)]  # type: ignore[misc]

    out = asyncio.run(drain())
    assert out[0].kind == "lagged" and out[0].value == 1
    assert [(c.key, c.value) for c in out[1:]] == [("k2", 2), ("k0", 99), ("k3", 3)]


def test_a_watcher_always_ends_on_the_latest_value() -> None:
    """Found in review: a full queue coalesced into a key's first slot while
    later slots kept older values, and the watcher ended on a stale one."""
    q = _ChangeQueue("", 4)
    for v in range(1, 6):
        q.put(Change("k", v, v, "o"))
    assert [c.value for c in q.items.values()] == [5]


async def test_a_callback_that_writes_does_not_reorder_changes() -> None:
    node = await GossipNode.start(NodeConfig.localhost("n", gossip_interval=FAST))
    seen: List[str] = []
    try:
        node.subscribe("x/", lambda ch: ch.key == "x/a" and node.set("x/b", b"from-callback"))
        node.subscribe("x/", lambda ch: seen.append(f"{ch.key}={ch.value!r}"))
        node.set("x/a", b"1")
        assert seen == ["x/a=b'1'", "x/b=b'from-callback'"]
    finally:
        await node.shutdown()


async def test_a_watcher_that_never_reads_does_not_grow_without_bound() -> None:
    """Bounded by keys: 1000 keys into a queue of 100 keep the last 100."""
    node = await GossipNode.start(NodeConfig.localhost("n", gossip_interval=FAST))
    it = node.watch("k", maxsize=100)
    first = asyncio.ensure_future(it.__anext__())
    try:
        await wait_for(lambda: node._watchers != [])
        node.set("k0", 0)
        ch = await asyncio.wait_for(first, 5)
        assert ch.key == "k0"
        for i in range(1000):
            node.set(f"k{i}", i)
        assert len(node._watchers[0].items) == 100
        ch = await it.__anext__()
        assert ch.kind == "lagged" and ch.value == 900  # 1000 changes, 100 kept
    finally:
        await node.shutdown()
        await it.aclose()


async def test_a_prefix_that_is_not_utf8_is_refused_and_leaves_nothing_behind(
    implementation: str,
) -> None:
    import pytest

    node = await GossipNode.start(
        NodeConfig.localhost("n", gossip_interval=FAST, implementation=implementation)
    )
    try:
        with pytest.raises(ValueError):
            node._core.watch("\ud800")  # a lone surrogate: no UTF-8 for it
        assert node._core._watched == {}
        unsubscribe = node.subscribe("ok/", lambda ch: None)  # still works
        unsubscribe()
        assert node._core._watched == {}
    finally:
        await node.shutdown()


def test_member_events_are_all_kept_in_order_and_the_oldest_dropped_when_full() -> None:
    from fastgossip import Member, MemberEvent
    from fastgossip.node import _EventQueue

    q = _EventQueue(2)
    m = Member("a", ("h", 1), "alive", {}, 0.0, 0.0)
    for kind in ("joined", "suspect", "alive"):
        q.put(MemberEvent(kind, m, 0.0))  # the same member: no coalescing

    async def drain() -> list:
        return [await q.get() for _ in range(3)]

    out = asyncio.run(drain())
    assert out[0].kind == "lagged" and out[0].member.meta == {"dropped": "1"}
    assert [e.kind for e in out[1:]] == ["suspect", "alive"]
