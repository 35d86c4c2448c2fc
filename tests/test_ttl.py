"""Expiring keys: ``set(key, value, ttl=...)`` carries its expiry (unix ms)
in the entry; every node stops showing it when its own clock passes that,
in one table pass (no per-key timers), and collects it a grace later (the
table on both implementations, the codec, the simulator, real nodes)."""

from __future__ import annotations

import asyncio
from types import ModuleType
from typing import Dict, List

import pytest

from fastgossip import Change, GossipNode, NodeConfig
from fastgossip.core import CoreLimits
from fastgossip.sim import Simulation
from tests.conftest import wait_for
from tests.test_table import batch_frame

# -- the table and the codec ----------------------------------------------------------------


def test_an_entry_expires_in_one_pass_when_its_time_comes(table: ModuleType) -> None:
    s = table.GossipState()
    s.set("a", b"1", 1, "o", 1, 5000)
    s.set("b", 2, 2, "o", 2, 3000)
    s.set("c", 3, 3, "o", 3)
    s.set_capture([""])
    assert s.next_expiry == 3000 and len(s) == 3
    assert s.expire(2999) == 0 and s.get("b") == (2, 2)
    assert s.expire(3000) == 1 and s.get("b") is None and "b" not in s
    assert s.keys() == ["a", "c"] and len(s) == 2 and s.next_expiry == 5000
    gone = s.take_captured()
    assert [(e.key, e.value, e.expires) for e in gone] == [("b", None, 3000)]
    assert s.get_entry("b").astuple() == ("b", 2, 2, "o", 2) and s.get_entry("b").expires == 3000
    # a newer write of the key without a ttl shows it again, for good
    s.set("b", 4, 9, "o", 9)
    assert s.get("b") == (4, 9) and s.get_entry("b").expires == 0
    assert s.expire(10**6) == 1 and s.keys() == ["b", "c"] and s.next_expiry == 0
    # collected a grace after expiring: removed, with its origin's horizon
    assert s.collect(0, 4999) == {} and s.collect(0, 5000) == {"o": 1}
    assert s.entry_count == 2


def test_an_entry_that_arrives_expired_is_not_shown(table: ModuleType) -> None:
    s = table.GossipState()
    s.expire(10_000)
    assert s.merge_frame(batch_frame("p", [("k", b"v", 5, "o", 5, 9_000)])) == 1
    assert s.get("k") is None and s.get_entry("k").expires == 9_000 and len(s) == 0


def test_expiries_travel_in_deltas_and_frames(table: ModuleType, codec: ModuleType) -> None:
    a, b = table.GossipState(), table.GossipState()
    a.set("t", b"x" * 10, 1, "o", 1, 123_456)
    a.set("n", 7, 2, "o", 2, 654_321)
    for f in a.delta_frames("a", {}):
        assert b.merge_frame(f)
    assert [(e.key, e.expires) for e in b.entries()] == [("t", 123_456), ("n", 654_321)]
    e = codec.Entry("k", 1, 2, "o", 3, expires=99)
    frame = codec.encode(codec.GossipBatch("s", [e]))
    # the tag 0x00 | 0x04, the u64 expiry, then the u64 value
    assert frame.endswith(bytes.fromhex("04 0000000000000063 0000000000000001"))
    assert codec.decode(frame).entries[0] == e and e != codec.Entry("k", 1, 2, "o", 3)
    with pytest.raises(ValueError, match="tombstone cannot expire"):
        codec.encode(codec.GossipBatch("s", [codec.Entry("k", None, 2, expires=5)]))


def test_an_expiry_breaks_ties_of_the_same_write(table: ModuleType) -> None:
    s = table.GossipState()
    s.set("k", b"v", 5, "o", 5, 100)
    assert s.set("k", b"v", 5, "o", 6, 200)  # (only a forger sends both)
    assert not s.set("k", b"v", 5, "o", 7, 150)
    assert s.get_entry("k").expires == 200


# -- the simulator -------------------------------------------------------------------------


@pytest.mark.parametrize("implementation", ["cython", "python"])
def test_a_ttl_key_disappears_everywhere_within_the_clock_skew(implementation: str) -> None:
    sim = Simulation(
        5, seed=4, limits=CoreLimits(tombstone_grace=2.0), implementation=implementation
    )
    skews = [0.0, 0.3, -0.2, 0.1, -0.4]  # seconds each node's clock is off
    for i, skew in enumerate(skews):
        sim.set_clock(i, offset=skew)
    sim.write(0, "lease", b"holder", ttl=3.0)
    sim.write(1, "plain", b"stays")
    gone_at: Dict[int, float] = {}
    while sim.now < 8.0:
        sim.run_for(0.05)
        for i in range(5):
            if i not in gone_at and "lease" not in sim.table(i):
                gone_at[i] = sim.now
    assert set(gone_at) == set(range(5))
    # each by its own clock: the expiry in node 0's time, plus each node's offset
    # the other way, within a round (0.2 s) of checking
    for i, t in gone_at.items():
        due = 3.0 - skews[i]
        assert due - 0.01 <= t <= due + 0.3, (i, t, due)
    assert all(sorted(sim.table(i)) == ["plain"] for i in range(5))
    sim.run_for(3.0)  # a grace later: collected
    assert all(sim.core(i).state.get_entry("lease") is None for i in range(5))
    assert sim.check_converged() == []


# -- real nodes ----------------------------------------------------------------------------


async def test_ttl_on_real_nodes_and_watchers_see_it_expire(implementation: str) -> None:
    def config(name: str, **kw: object) -> NodeConfig:
        return NodeConfig.localhost(name, gossip_interval=0.05, implementation=implementation, **kw)

    a = await GossipNode.start(config("a"))
    b = await GossipNode.start(config("b", seeds=[a.addr]))
    got: List[Change] = []
    b.subscribe("lock/", got.append)
    try:
        version = a.set("lock/leader", b"a", ttl=0.5)
        assert a.get_entry("lock/leader").expires > 0
        await wait_for(lambda: b.get("lock/leader") == b"a")
        await wait_for(lambda: b.get("lock/leader") is None and a.get("lock/leader") is None)
        await wait_for(lambda: [c.kind for c in got] == ["set", "expire"])
        assert got[1] == Change("lock/leader", None, version, a.origin, "expire")
        with pytest.raises(ValueError, match="ttl"):
            a.set("k", b"v", ttl=0)
    finally:
        await asyncio.gather(a.shutdown(), b.shutdown())


def test_watchers_are_told_of_a_key_removed_after_it_expired_unmarked(
    table: ModuleType,
) -> None:
    # a read judged it expired (now_ms) before the pass told watchers; then a
    # delete arrives: the watcher must still hear that the key went
    s = table.GossipState()
    s.set_capture(["k"])
    s.set("k", b"v", 1, "o", 1, 5000)
    s.take_captured()
    s.now_ms = 6000
    assert s.get("k") is None
    s.set("k", None, 2, "o", 2)
    assert [(e.key, e.value) for e in s.take_captured()] == [("k", None)]
    assert s.expire(6000) == 0 and s.take_captured() == []
