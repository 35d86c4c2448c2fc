"""Deletes: tombstones in the codec and the table (both implementations),
their collection after ``tombstone_grace``, and the Reset that keeps a node cut
off longer than the grace from bringing deleted keys back (unit tests on the
table and the Reset codec, the simulator with a property test over partition
schedules whose failing seeds are printed, and real nodes on loopback)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from types import ModuleType
from typing import Any, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastgossip import Change, GossipNode, NodeConfig, _codec_py
from fastgossip._table_py import fnv1a
from fastgossip.core import CoreLimits
from fastgossip.errors import FrameError
from fastgossip.fanout import Fanout
from fastgossip.horizon import T_RESET, Horizons, ResetParts, reset_frames
from fastgossip.sim import Crash, Partition, Simulation
from tests.conftest import wait_for
from tests.test_table import batch_frame

# -- the table --------------------------------------------------------------------------


def test_a_tombstone_hides_the_key_but_is_an_entry(table: ModuleType) -> None:
    s = table.GossipState()
    s.set("a", b"1", 10, "n1", 10)
    s.set("b", 2, 11, "n1", 11)
    assert s.set("a", None, 12, "n2", 12)
    assert s.get("a") is None and "a" not in s
    assert s.keys() == ["b"] and len(s) == 1 and [e.key for e in s] == ["b"]
    assert s.tombstones == 1 and s.entry_count == 2
    assert s.get_entry("a").astuple() == ("a", None, 12, "n2", 12)
    assert [e.key for e in s.entries()] == ["a", "b"]
    # a write newer than the delete brings the key back; an older one does not
    assert not s.set("a", b"old", 11, "n3", 11)
    assert s.set("a", b"new", 13, "n3", 13)
    assert s.get("a") == (b"new", 13) and s.tombstones == 0


def test_a_tombstone_wins_a_tie_of_version_and_origin(table: ModuleType) -> None:
    # LWW compares (version, origin, value): ints < bytes < a tombstone
    s = table.GossipState()
    s.set("k", b"zzz", 5, "n1", 5)
    assert s.set("k", None, 5, "n1", 6)
    assert not s.set("k", 2**64 - 1, 5, "n1", 7)
    assert s.get_entry("k").value is None


def test_tombstones_hold_no_value_bytes(table: ModuleType) -> None:
    s = table.GossipState()
    s.set("key", b"x" * 1000, 1, "n1", 1)
    held = s.bytes_held
    s.set("key", None, 2, "n1", 2)
    assert s.bytes_held == held - 1000
    s.collect(3)
    assert s.bytes_held == 0 and s.entry_count == 0


def test_tombstones_travel_in_deltas_and_frames(table: ModuleType) -> None:
    a, b = table.GossipState(), table.GossipState()
    a.set("x", b"1", 1, "n1", 1)
    a.set("x", None, 2, "n1", 2)
    a.set("y", 7, 3, "n1", 3)
    frames = a.delta_frames("a", {})
    assert sum(b.merge_frame(f) for f in frames) == 2
    assert b.get_entry("x").astuple() == ("x", None, 2, "n1", 2)
    assert b.get("y") == (7, 3)
    # a hand-made frame reads the same: tag 0x02 and nothing after it
    c = table.GossipState()
    assert c.merge_frame(batch_frame("s", [("x", None, 2, "n1", 2)])) == 1
    assert c.get_entry("x").value is None


def test_collect_removes_only_old_tombstones_and_the_rest_still_works(table: ModuleType) -> None:
    s = table.GossipState()
    for i in range(300):
        s.set(f"k{i}", i, 100 + i, f"n{i % 3}", 100 + i)
    for i in range(0, 300, 2):
        s.set(f"k{i}", None, 1000 + i, f"n{i % 3}", 1000 + i)
    assert s.tombstones == 150
    found = s.collect(1100)  # the deletes of k0..k98
    assert found == {"n0": 1096, "n1": 1094, "n2": 1098}
    assert s.tombstones == 100 and s.entry_count == 250
    assert [e.key for e in s.entries()][:3] == ["k1", "k3", "k5"]  # order kept
    for i in range(300):
        e = s.get_entry(f"k{i}")
        if i % 2:
            assert e.value == i
        elif i < 100:
            assert e is None
        else:
            assert e.value is None
    # the index and the logs were rebuilt: new keys, deltas and merges work
    s.set("k0", b"back", 2000, "n0", 2000)
    s.set("fresh", 1, 2001, "n1", 2001)
    assert s.get("k0") == (b"back", 2000) and s.get("fresh") == (1, 2001)
    due = [(e.key, e.stamp) for e in s.delta({"n0": 1500, "n1": 1500, "n2": 10**9})]
    assert due == [("k0", 2000), ("fresh", 2001)]
    other = table.GossipState()
    for f in s.delta_frames("s", {}):
        other.merge_frame(f)
    assert [e.astuple() for e in other.entries()] == [
        e.astuple() for e in sorted(s.entries(), key=lambda e: (e.stamp, e.origin, e.key))
    ]
    assert s.collect(10**6) == {"n0": 1294, "n1": 1298, "n2": 1296}
    assert s.tombstones == 0 and len(s) == 152


def test_key_hashes_are_fnv1a_64(table: ModuleType) -> None:
    # the FNV-1a test vectors (and docs/PROTOCOL.md's)
    assert fnv1a(b"") == 0xCBF29CE484222325
    assert fnv1a(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a(b"foobar") == 0x85944171F73967E8
    s = table.GossipState()
    s.set("a", 1, 1, "n1")
    s.set("foobar", None, 2, "n1")
    assert s.key_hashes() == bytes.fromhex("af63dc4c8601ec8c85944171f73967e8")


def test_drop_unheld_drops_what_the_peer_saw_and_lacks(table: ModuleType) -> None:
    s = table.GossipState()
    s.set("seen-held", 1, 10, "p", 10)
    s.set("seen-gone", 2, 11, "p", 11)  # the peer saw it and holds nothing: deleted
    s.set("unseen", 3, 30, "p", 30)  # above the peer's watermark: new to it
    s.set("other-origin", 4, 12, "q", 12)  # the peer names no q: not covered
    s.set_capture(["seen"])
    held = fnv1a(b"seen-held").to_bytes(8, "big")
    assert s.drop_unheld(held, {"p": 20}) == 1
    assert s.keys() == ["seen-held", "unseen", "other-origin"]
    assert [(e.key, e.value) for e in s.take_captured()] == [("seen-gone", None)]
    with pytest.raises(ValueError, match="whole u64s"):
        s.drop_unheld(b"123", {})
    s.raise_watermarks({"p": 25, "r": 7})
    assert s.watermarks() == {"p": 30, "q": 12, "r": 7}


def test_delta_cut_tells_a_cut_delta(table: ModuleType) -> None:
    s = table.GossipState()
    for i in range(50):
        s.set(f"k{i}", b"v" * 100, i + 1, "n1", i + 1)
    frames = s.delta_frames("s", {}, 1 << 20, 500)
    assert s.delta_cut
    # the last entry taken: with the cut, every due entry below it is in
    taken = [e.stamp for f in frames for e in _codec_py.decode(f).entries]
    assert s.delta_top == max(taken) == len(taken)
    s.delta_frames("s", {}, 1 << 20, None)
    assert not s.delta_cut
    assert s.delta_top == 50
    assert s.delta_frames("s", {"n1": 50}, 1 << 20, None) == []
    assert s.delta_top == 0


def test_the_codec_carries_tombstones(codec: ModuleType) -> None:
    e = codec.Entry("k", None, 5, "o", 6)
    frame = codec.encode(codec.GossipBatch("s", [e]))
    # key, origin index, version, stamp, then the tag 0x02 alone
    assert frame.endswith(bytes.fromhex("00016b 0000 0000000000000005 0000000000000006 02"))
    assert codec.decode(frame).entries[0] == e
    g = codec.Gossip("s", "k", None, 3)
    assert codec.decode(codec.encode(g)) == g and codec.decode(codec.encode(g)).value is None


# -- the Reset ---------------------------------------------------------------------------


def test_a_reset_splits_into_parts_and_reads_back() -> None:
    origins = [(f"origin-{i}", 1000 + i, i) for i in range(40)]
    hashes = b"".join(i.to_bytes(8, "big") for i in range(500))
    frames = reset_frames("me", origins, hashes, 600)
    assert len(frames) > 2 and all(len(f) <= 600 for f in frames)
    assert all(f[5] == T_RESET for f in frames)
    parts = ResetParts(1 << 20)
    done = [parts.add(f) for f in frames]
    assert done == [False] * (len(frames) - 1) + [True]
    assert parts.origins == {o: (w, h) for o, w, h in origins}
    assert b"".join(parts.hashes) == hashes


def test_malformed_resets_are_frame_errors_and_long_ones_are_refused() -> None:
    (frame,) = reset_frames("me", [("o", 5, 1)], (7).to_bytes(8, "big"), 1 << 20)
    for bad, words in [
        (frame[:-3], "does not match"),
        (frame[:12], "truncated"),
        (frame[:10] + b"\xff" + frame[11:], "flags"),
    ]:
        with pytest.raises(FrameError, match=words):
            ResetParts(1 << 20).add(bad)
    with pytest.raises(ValueError, match="longer than"):
        ResetParts(10).add(frame)


def test_horizons_grow_say_who_is_behind_and_are_forgotten_by_their_age() -> None:
    h = Horizons()
    ms = 1_700_000_000_000
    assert h.raise_to({"a": ms << 16}, 1_700_000_000.5, 60.0)
    assert not h.raise_to({"a": (ms - 1) << 16}, 1_700_000_001.0, 60.0)
    gen = h.generation
    assert h.behind({"a": (ms << 16) - 1}) == "a" and h.behind({"a": ms << 16}) is None
    assert h.behind({}) == "a"
    h.forget_older(1_700_000_059.0, 60.0)  # not yet 60 s after the tombstone was written
    assert h.stamps and h.generation == gen
    h.forget_older(1_700_000_060.0, 60.0)  # the same moment on every node, whoever holds it
    assert h.stamps == {} and h.generation == gen + 1
    assert not h.raise_to({"a": ms << 16}, 1_700_000_060.0, 60.0)  # too old to adopt


# -- the simulator -------------------------------------------------------------------------

GRACE = 2.0


def cut_off_cluster(implementation: str, seed: int = 1) -> Simulation:
    limits = CoreLimits(fanout=Fanout.bounded(2), tombstone_grace=GRACE, horizon_keep=120.0)
    return Simulation(4, seed=seed, limits=limits, implementation=implementation, trace=False)


@pytest.mark.parametrize("implementation", ["cython", "python"])
def test_a_node_cut_off_past_the_grace_does_not_bring_deleted_keys_back(
    implementation: str,
) -> None:
    sim = cut_off_cluster(implementation)
    for k in range(20):
        sim.write(k % 4, f"k{k}", k)
    sim.run_for(2)
    assert sim.check_converged() == []
    sim.partition(Partition(((0,), (1, 2, 3)), sim.now, sim.now + 5 * GRACE))
    sim.run_for(0.5)
    for k in range(10):
        sim.write(1 + k % 3, f"k{k}", None)
    sim.write(0, "written-while-away", 7)
    sim.run_for(4 * GRACE)
    # the deletes were collected on the far side, never seen by node 0
    assert [sim.core(i).state.tombstones for i in (1, 2, 3)] == [0, 0, 0]
    assert len(sim.table(0)) == 21 and len(sim.table(1)) == 10
    sim.run_for(3 * GRACE)
    assert sim.check_converged() == []
    assert sorted(sim.table(0)) == sorted([f"k{k}" for k in range(10, 20)] + ["written-while-away"])
    assert sim.total("reset_drops") == 10 and sim.total("resets_received") >= 1


def test_a_delete_spreads_and_its_tombstone_is_collected_everywhere() -> None:
    sim = cut_off_cluster("cython")
    sim.write(0, "k", b"v")
    sim.run_for(1)
    sim.write(2, "k", None)
    sim.run_for(1)
    assert all(sim.core(i).state.get_entry("k").value is None for i in range(4))
    sim.run_for(2 * GRACE)
    assert all(sim.core(i).state.get_entry("k") is None for i in range(4))
    assert sim.total("tombstones_collected") == 4 and sim.total("resets_sent") == 0


PARTITIONS = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))

Op = Tuple[float, int, int, bool]  # (time offset, node index, key number, delete)


def run_schedule(
    implementation: str,
    seed: int,
    n: int,
    cut: List[int],
    away: float,
    before: List[Op],
    during: List[Op],
) -> Tuple[Simulation, str]:
    """Writes before a partition that cuts ``cut`` off for ``away`` seconds
    (longer than the grace), writes and deletes on both sides during it, then
    the heal; returns the simulation run until converged or 60 s. During the
    partition each side writes its own keys: a write older than a delete made
    on the other side whose tombstone was collected before the heal comes
    back (docs/PROTOCOL.md, "Tombstone collection", states this limit)."""
    replay = (
        f"replay: implementation={implementation!r}, seed={seed}, n={n}, cut={cut}, "
        f"away={away}, before={before}, during={during}"
    )
    limits = cut_off_cluster(implementation).limits
    sim = Simulation(n, seed=seed, limits=limits, implementation=implementation, trace=False)
    for t, node, key, delete in before:
        sim.write(node % n, f"k{key}", None if delete else key, at=t)
    start = 3.0
    rest = tuple(i for i in range(n) if i not in cut)
    sim.partition(Partition((tuple(cut), rest), start, start + away))
    for t, node, key, delete in during:
        side = cut if node % 2 else rest
        writer = side[node % len(side)]
        # writes go to keys of the writer's side; deletes also to keys of before
        name = f"k{key}" if delete and key % 2 else f"{'c' if writer in cut else 'r'}{key}"
        sim.write(writer, name, None if delete else key, at=start + t)
    sim.run(start + away)
    for _ in range(120):
        sim.run_for(0.5)
        if not sim.check_converged():
            break
    return sim, replay


op = st.tuples(st.floats(0.0, 2.5), st.integers(0, 7), st.integers(0, 9), st.booleans())


@PARTITIONS
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(3, 5),
    cut_size=st.integers(1, 2),
    away=st.floats(2 * GRACE, 5 * GRACE),
    before=st.lists(op, max_size=15),
    during=st.lists(op, max_size=15),
)
def test_deletes_stay_deleted_after_partitions_longer_than_the_grace(
    implementation: str,
    seed: int,
    n: int,
    cut_size: int,
    away: float,
    before: List[Op],
    during: List[Op],
) -> None:
    cut = list(range(cut_size))
    sim, replay = run_schedule(implementation, seed, n, cut, away, before, during)
    problems = sim.check_converged()
    assert not problems, f"{problems[:3]}; {replay}"


# -- real nodes ----------------------------------------------------------------------------

FAST = 0.05


async def test_delete_spreads_watchers_see_it_and_the_tombstone_goes(implementation: str) -> None:
    def config(name: str, **kw: object) -> NodeConfig:
        return NodeConfig.localhost(
            name, gossip_interval=FAST, implementation=implementation, tombstone_grace=0.5, **kw
        )

    a = await GossipNode.start(config("a"))
    b = await GossipNode.start(config("b", seeds=[a.addr]))
    got: List[Change] = []
    b.subscribe("svc/", got.append)
    try:
        a.set("svc/web", b"10.0.0.1:80")
        await wait_for(lambda: b.get("svc/web") == b"10.0.0.1:80")
        version = a.delete("svc/web")
        await wait_for(lambda: b.get("svc/web") is None)
        assert "svc/web" not in b.keys() and "svc/web" not in b.items()
        assert b.get_entry("svc/web").astuple() == ("svc/web", None, version, a.origin, version)
        await wait_for(lambda: [c.kind for c in got] == ["set", "delete"])
        assert got[1] == Change("svc/web", None, version, a.origin, "delete")
        await wait_for(lambda: a.get_entry("svc/web") is None and b.get_entry("svc/web") is None)
        assert a.stats.tombstones_collected == 1 and b.stats.tombstones_collected == 1
        with pytest.raises(TypeError, match="delete"):
            a.set("k", None)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="reserved"):
            a.delete("\x00m:b")
    finally:
        await asyncio.gather(a.shutdown(), b.shutdown())


def test_tombstone_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="tombstone_grace"):
        NodeConfig("n", tombstone_grace=0)
    with pytest.raises(ValueError, match="horizon_keep"):
        NodeConfig("n", tombstone_grace=100, horizon_keep=10)


def test_the_reset_vector_in_the_protocol_doc() -> None:
    text = (Path(__file__).parent.parent / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```text\nreset:(.*?)```", text, flags=re.S)
    frame = bytes.fromhex("".join(block.split()))
    assert reset_frames("n1", [("o", 5, 1)], fnv1a(b"a").to_bytes(8, "big"), 1 << 20) == [frame]
    parts = ResetParts(1 << 20)
    assert parts.add(frame) and parts.origins == {"o": (5, 1)}


def test_a_table_that_collected_most_of_itself_still_works(table: ModuleType) -> None:
    # the compiled table shrinks its arrays and index here (memory given back)
    s = table.GossipState()
    for i in range(5000):
        s.set(f"k{i}", None if i >= 10 else i, i + 1, "o", i + 1, 0 if i >= 10 else 10**9)
    assert s.collect(10**6) == {"o": 5000} and s.entry_count == 10
    for i in range(10, 6000):
        s.set(f"k{i}", i, 10_000 + i, "p", 10_000 + i)
    assert all(s.get(f"k{i}") is not None for i in range(6000))
    assert len(s.delta({})) == 6000 and s.expire(10**9) == 10 and len(s) == 5990


# -- regressions from review: what a Reset may and may not do ------------------------------


def _core(limits: Optional[CoreLimits] = None) -> Any:
    from fastgossip._impl import load
    from fastgossip.core import GossipCore
    from fastgossip.node import NodeStats

    mods = {m: load(m, "cython") for m in ("codec", "table", "sampler")}
    return GossipCore(
        "a",
        "a#1",
        limits or CoreLimits(),
        NodeStats(),
        codec=mods["codec"],
        table=mods["table"],
        sampler=mods["sampler"],
        seed=1,
    )


def test_a_reset_that_answers_nothing_is_refused() -> None:
    from fastgossip._codec_c import Digest, encode

    a = _core()
    now = 1_700_000_000.0
    a.tick(now)
    a.state.set("k", 1, 10, "w#1", 10)
    a.connected(1, now)  # a stranger's connection, never answered
    (frame,) = reset_frames("x", [("w#1", 10, 0)], b"", 1 << 20)
    with pytest.raises(ValueError, match="answers nothing"):
        a.receive(1, [frame], now, 1 << 20)
    assert a.state.get("k") == (1, 10)
    # answered: taken, but not one that covers our own origin past our clock
    a.connected(2, now)
    a.receive(2, [encode(Digest("x", {}, reply=True))], now, 1 << 20)
    (frame,) = reset_frames("x", [("a#1", (int(now * 1000) + 5000) << 16, 0)], b"", 1 << 20)
    with pytest.raises(ValueError, match="own origin"):
        a.receive(2, [frame], now, 1 << 20)


def test_a_dropped_reset_is_sent_again_and_one_over_the_budget_is_withheld() -> None:
    from fastgossip._codec_c import Digest, encode
    from fastgossip.core import SEND

    a = _core(CoreLimits(max_round_bytes=64 << 10))
    now = 1_700_000_000.0
    a.tick(now)
    a.state.set("x", 1, 10, "d#1", 10)
    a.horizons.raise_to({"d#1": 10}, now, 1e12)
    a.connected(1, now)
    for _ in range(2):
        now += 1.0
        a.receive(1, [encode(Digest("b", {}, reply=True))], now, 1 << 20)
        sent = [f[5] for kind, _, frames in a.take() if kind == SEND for f in frames]
        assert sent == [6, T_RESET, 7]
        a.send_dropped(1)
    for i in range(20_000):  # 160 KB of key hashes: more than the round's budget
        a.state.set(f"key{i}", i, 100 + i, "w#1", 100 + i)
    a.connected(2, now)
    a.receive(2, [encode(Digest("c", {"w#1": 20_099, "d#1": 5}, reply=True))], now, 1 << 30)
    assert all(f[5] != T_RESET for kind, _, fr in a.take() if kind == SEND for f in fr)
    assert a.stats.resets_withheld == 1


@pytest.mark.parametrize("implementation", ["cython", "python"])
def test_tables_that_refused_entries_neither_send_resets_nor_trust_them(
    implementation: str,
) -> None:
    limits = CoreLimits(fanout=Fanout.bounded(2), tombstone_grace=2.0, horizon_keep=120.0)
    sim = Simulation(2, seed=1, limits=limits, implementation=implementation, trace=False)
    sim.write(1, "y", 1)
    sim.run_for(1)
    sim.core(0).state.max_keys = 1  # node 0 is full with "y"
    t0 = sim.now
    sim.partition(Partition(((0,), (1,)), t0, t0 + 10))
    sim.write(1, "y", None, at=t0 + 0.5)  # deleted and collected while node 0 is away
    sim.write(1, "x", 2, at=t0 + 5)  # a new key node 0 will refuse at first (full)
    sim.run_for(30)
    # the reset freed room (y dropped) and did not raise node 0's watermark
    # past the x it had refused: x came next
    assert sim.table(0) == sim.table(1) and "x" in sim.table(0)
    assert sim.stats(0).reset_drops == 1 and sim.stats(0).resets_sent == 0


@pytest.mark.parametrize("implementation", ["cython", "python"])
def test_horizons_end_everywhere_together_so_resets_do_not_go_on(implementation: str) -> None:
    limits = CoreLimits(
        fanout=Fanout.bounded(2), tombstone_grace=2.0, horizon_keep=20.0, retire_after=3.0
    )
    sim = Simulation(3, seed=1, limits=limits, implementation=implementation, trace=False)
    sim.write(0, "keep", 1)
    sim.write(1, "k", 1)
    sim.run_for(0.5)
    sim.write(1, "k", None)
    sim.crash(Crash(2, 1.0, restart_at=12.0))  # a new life, after the collection
    sim.run_for(200)
    assert [len(sim.core(i).horizons.stamps) for i in range(3)] == [0, 0, 0]
    assert sim.total("resets_sent") <= 3 and sim.check_converged() == []


def test_a_tombstone_no_frame_could_carry_is_refused_like_a_write() -> None:
    a = _core(CoreLimits(max_frame_size=400))
    with pytest.raises(ValueError, match="does not fit one frame"):
        a.delete("k" * 200, 1_700_000_000.0)
    assert a.state.entry_count == 0
