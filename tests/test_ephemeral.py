"""Ephemeral keys: written under ``origin + ".e"``, shown only while the
writer's life is a live member, collected a grace after it ended (the table
on both implementations, the simulator, real nodes)."""

from __future__ import annotations

import asyncio
from types import ModuleType
from typing import List

import pytest

from fastgossip import Change, GossipNode, NodeConfig
from fastgossip.core import CoreLimits
from fastgossip.sim import Crash, Simulation
from tests.conftest import wait_for

# -- the table --------------------------------------------------------------------------


def test_entries_of_an_ephemeral_origin_not_live_are_kept_but_not_shown(
    table: ModuleType,
) -> None:
    s = table.GossipState()
    s.set("svc/a", b"1", 1, "a#1.e", 1)
    s.set("svc/b", b"2", 2, "b#1.e", 2)
    s.set("cfg", b"3", 3, "b#1", 3)
    assert len(s) == 3  # no rule yet: every origin shown
    s.set_capture(["svc/"])
    s.set_ephemeral_live(["a#1.e"])
    assert s.keys() == ["svc/a", "cfg"] and len(s) == 2 and "svc/b" not in s
    assert s.get("svc/b") is None and s.get_entry("svc/b").value == b"2"
    assert [e.key for e in s] == ["svc/a", "cfg"] and s.entry_count == 3
    assert [(e.key, e.value) for e in s.take_captured()] == [("svc/b", None)]
    # an origin first seen while the rule is on is hidden until said live
    s.set("svc/c", b"4", 4, "c#1.e", 4)
    assert "svc/c" not in s and len(s) == 2
    assert s.take_captured() == []  # (never shown: nothing to tell a watcher)
    s.set_ephemeral_live(["a#1.e", "c#1.e"])
    assert s.keys() == ["svc/a", "cfg", "svc/c"]
    assert [(e.key, e.value) for e in s.take_captured()] == [("svc/c", b"4")]
    # a hidden entry overwritten by a shown one shows again
    s.set("svc/b", b"new", 5, "a#1.e", 5)
    assert s.get("svc/b") == (b"new", 5) and len(s) == 4
    assert s.drop_origins(["a#1.e", "nobody.e"]) == {"a#1.e": 5}
    assert s.keys() == ["cfg", "svc/c"] and s.entry_count == 2
    s.set_ephemeral_live(None)
    assert len(s) == 2


# -- the simulator -------------------------------------------------------------------------


def cluster(n: int = 5, implementation: str = "cython") -> Simulation:
    sim = Simulation(
        n,
        seed=2,
        membership=True,
        limits=CoreLimits(tombstone_grace=3.0),
        implementation=implementation,
        trace=False,
    )
    sim.run_for(3)
    assert all(len(sim.members(i)) == n - 1 for i in range(n))
    return sim


@pytest.mark.parametrize("implementation", ["cython", "python"])
def test_ephemeral_keys_go_with_their_writer(implementation: str) -> None:
    sim = cluster(implementation=implementation)
    sim.write(1, "svc/a", b"10.0.0.1", ephemeral=True)
    sim.write(2, "svc/b", b"10.0.0.2", ephemeral=True)
    sim.write(3, "cfg", b"x")
    sim.run_for(1)
    assert all(sorted(sim.table(i)) == ["cfg", "svc/a", "svc/b"] for i in range(5))
    sim.crash(Crash(1, sim.now))  # seen dead by the others
    sim.leave(2)  # seen left at once; it shows its own keys gone too
    sim.run_for(0.5)
    assert all("svc/b" not in sim.table(i) for i in (0, 2, 3, 4))
    sim.run_for(4)
    assert all(sorted(sim.table(i)) == ["cfg"] for i in (0, 2, 3, 4))
    sim.run_for(4)  # a grace later, the entries themselves are gone
    for i in (0, 3, 4):
        assert not [e for e in sim.core(i).state.entries() if e.origin.endswith(".e")]
    assert sim.check_converged() == []


def test_a_restart_ends_the_previous_life_s_ephemeral_keys() -> None:
    sim = cluster()
    sim.write(3, "svc/old", b"1", ephemeral=True)
    sim.run_for(1)
    assert all("svc/old" in sim.table(i) for i in range(5))
    sim.crash(Crash(3, sim.now, restart_at=sim.now + 0.3))
    sim.run_for(0.5)
    sim.write(3, "svc/new", b"2", ephemeral=True)
    sim.run_for(3)
    for i in range(5):
        assert sorted(sim.table(i)) == ["svc/new"], i


def test_ephemeral_keys_need_membership() -> None:
    sim = Simulation(2, seed=1, trace=False)
    with pytest.raises(ValueError, match="membership"):
        sim.core(0).set("k", b"v", 0.0, ephemeral=True)


# -- real nodes ----------------------------------------------------------------------------

FAST = 0.05


async def test_a_registry_entry_disappears_when_its_service_dies(implementation: str) -> None:
    def config(name: str, **kw: object) -> NodeConfig:
        return NodeConfig.localhost(
            name,
            gossip_interval=FAST,
            heartbeat_interval=0.1,
            implementation=implementation,
            **kw,
        )

    watcher = await GossipNode.start(config("watcher"))
    web = await GossipNode.start(config("web", seeds=[watcher.addr]))
    db = await GossipNode.start(config("db", seeds=[watcher.addr]))
    got: List[Change] = []
    watcher.subscribe("svc/", got.append)
    try:
        web.set("svc/web", b"127.0.0.1:8080", ephemeral=True)
        db.set("svc/db", b"127.0.0.1:5432", ephemeral=True)
        await wait_for(lambda: sorted(watcher.keys()) == ["svc/db", "svc/web"])
        assert web.get_entry("svc/web").origin == web.origin + ".e"
        await db.leave()  # gone at once
        await wait_for(lambda: watcher.keys() == ["svc/web"])
        await web.shutdown()  # a crash, as the others see it: gone once seen dead
        await wait_for(lambda: watcher.keys() == [], timeout=20)
        kinds = [(c.key, c.kind) for c in got]
        assert kinds[-2:] == [("svc/db", "expire"), ("svc/web", "expire")]
    finally:
        await asyncio.gather(watcher.shutdown(), web.shutdown(), db.shutdown())


# -- regressions from review ---------------------------------------------------------------


def test_forged_entries_under_our_ephemeral_origin_are_refused(table: ModuleType) -> None:
    s = table.GossipState()
    s.own_origin = "me#1"
    s.merge([table.Entry("svc/x", b"forged", 5, "me#1.e", 99)])
    assert s.get("svc/x") is None and s.refusals()["own_origin"] == 1
    assert s.own_refused_stamp == 99  # (the node re-stamps past it)


def test_reads_judge_expiry_by_now_between_passes(table: ModuleType) -> None:
    s = table.GossipState()
    s.set("k", b"v", 1, "o", 1, 5000)
    s.now_ms = 5000  # no pass yet: reads already hide it, len() waits for the pass
    assert s.get("k") is None and "k" not in s and s.keys() == [] and len(s) == 1
    assert s.expire(5000) == 1 and len(s) == 0


@pytest.mark.parametrize("implementation", ["cython", "python"])
def test_a_member_seen_dead_past_the_grace_gets_its_keys_back_everywhere(
    implementation: str,
) -> None:
    from fastgossip.sim import Partition

    sim = cluster(implementation=implementation)
    sim.write(1, "svc/a", b"10.0.0.1", ephemeral=True)
    sim.run_for(1)
    sim.partition(Partition(((1,), (0, 2, 3, 4)), sim.now, sim.now + 15))
    sim.write(3, "other", b"x")
    sim.run_for(1)
    sim.write(3, "other", None)  # a delete collected meanwhile: horizons, resets
    sim.run_for(14)
    assert all("svc/a" not in sim.table(i) for i in (0, 2, 3, 4))
    sim.run_for(40)
    assert all("svc/a" in sim.table(i) for i in range(5)), [sim.table(i) for i in range(5)]
    assert sim.check_converged() == []


def test_a_restarted_life_s_keys_go_on_nodes_that_never_saw_it_live() -> None:
    sim = Simulation(
        5,
        seed=2,
        membership=True,
        limits=CoreLimits(tombstone_grace=3.0, horizon_keep=5.0, retire_after=5.0),
        trace=False,
    )
    sim.crash(Crash(4, 0.05))  # node 4 joins later
    sim.run_for(3)
    sim.write(1, "svc/old", b"1", ephemeral=True)
    sim.run_for(1)
    t = sim.now
    sim.crash(Crash(1, t, restart_at=t + 0.3))  # a new life
    sim.crash(Crash(4, t + 0.01, restart_at=t + 1.0))
    sim.run_for(60)
    for i in range(5):
        assert not [e for e in sim.core(i).state.entries() if e.origin.endswith(".e")], i
