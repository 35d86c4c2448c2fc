"""The sans-IO core by itself: inputs in, outputs out, time as an argument.

A tiny driver connects two cores by hand (no sockets, no event loop): what a
core returns for a connection is handed to the other core's ``receive``.
"""

from __future__ import annotations

from typing import Any, List, Tuple

import pytest

from fastgossip._impl import load
from fastgossip.core import ASK, SEND, CoreLimits, GossipCore
from fastgossip.node import NodeStats

T0 = 1_800_000_000.0  # a wall clock, seconds
A, B = ("a", 1), ("b", 2)


class Pair:
    """Core ``a`` has a link to ``b`` (a's conn 1 is b's conn 2)."""

    def __init__(self, implementation: str, **limits: Any) -> None:
        mods = {m: load(m, implementation) for m in ("codec", "table", "sampler")}
        self.codec = mods["codec"]
        limits.setdefault("gossip_interval", 0.2)
        self.a, self.b = (
            GossipCore(
                name,
                f"{name}#1",
                CoreLimits(**limits),
                NodeStats(),
                codec=mods["codec"],
                table=mods["table"],
                sampler=mods["sampler"],
                seed=7,
            )
            for name in ("a", "b")
        )
        self.a.add_peer(B)
        self.b.connected(2, T0, peer=None)
        self.a.connected(1, T0, peer=B)
        self.now = T0
        self.sent: List[Tuple[str, bytes]] = []  # (from, frame)

    def pump(self, rounds: int = 10) -> None:
        """Deliver everything both cores want to send until they are quiet."""
        for _ in range(rounds):
            moved = False
            for src, dst, dst_conn in ((self.a, self.b, 2), (self.b, self.a, 1)):
                for kind, _target, frames in src.take():
                    if kind in (SEND, ASK) and frames:
                        moved = True
                        self.sent += [(src.node_id, f) for f in frames]
                        dst.receive(dst_conn, frames, self.now, 1 << 30)
            if not moved:
                return
        raise AssertionError("the cores never went quiet")

    def digests(self, since: int = 0) -> List[Any]:
        out = []
        for _src, frame in self.sent[since:]:
            msg = self.codec.decode(frame)
            if type(msg) is self.codec.Digest:
                out.append(msg)
        return out

    def tick(self, dt: float = 0.2) -> None:
        self.now += dt
        self.a.tick(self.now)
        self.pump()


def test_digests_are_full_once_then_only_what_changed(implementation: str) -> None:
    p = Pair(implementation)
    for i in range(50):
        p.a.set(f"a{i}", i, T0)
        p.b.state.set(f"w{i}", i, 10 + i, f"writer-{i}#1", 10 + i)  # 50 origins at b
    p.pump()
    p.tick()  # most of a's watermarks changed since its first digest: sent whole
    first = p.digests()
    assert [d.delta for d in first[:2]] == [False, False]  # a's question, b's answer
    assert len(first[1].watermarks) == 51  # b#1 and b's 50: a's entries are not there yet
    assert [d.delta for d in first[2:]] == [False, True]
    mark = len(p.sent)
    p.tick()
    idle = p.digests(mark)
    # nothing changed: a's question is an empty delta, and b, with nothing to
    # send and nothing new to tell, does not answer it
    assert [(d.delta, d.watermarks) for d in idle] == [(True, ())]
    assert len(p.sent) == mark + 1
    assert p.a.state.watermarks() == p.b.state.watermarks()
    mark = len(p.sent)
    p.b.set("fresh", 1, p.now)
    p.tick()
    changed = p.digests(mark)
    assert changed[1].delta and dict(changed[1].watermarks) == {"b#1": p.b._last_stamp}
    assert p.a.state.get("fresh") is not None


def test_a_dropped_send_makes_the_next_digest_full(implementation: str) -> None:
    p = Pair(implementation)
    p.a.set("k", 1, T0)
    p.pump()
    p.tick()
    p.a.send_dropped(1)
    mark = len(p.sent)
    p.tick()
    assert [d.delta for d in p.digests(mark)] == [False, True]


def test_a_delta_digest_needs_a_full_one_first(implementation: str) -> None:
    p = Pair(implementation)
    frame = p.codec.encode(p.codec.Digest("x", {"o#1": 5}, reply=True, delta=True))
    with pytest.raises(ValueError, match="before any full one"):
        p.b.receive(2, [frame], T0, 1 << 20)


def test_an_origin_that_leaves_the_digest_is_sent_as_stamp_zero(implementation: str) -> None:
    p = Pair(implementation, retire_after=0.4)
    for i in range(10):
        p.b.state.set(f"w{i}", i, 5, f"writer-{i}#1", 5)
    p.b.state.set("k", 1, 10, "gone#1", 10)
    p.b.state.set("k", 2, 11, "b#1", 11)  # gone#1 holds no key any more
    p.pump()
    p.tick()
    for _ in range(12):  # past the window, looked at once per quarter window
        p.tick()
    leaving = [d for d in p.digests() if d.delta and ("gone#1", 0) in d.watermarks]
    assert len(leaving) == 1
    assert "gone#1" not in p.a._conns[1].peer_wm  # a forgot it from b's digests


def test_far_future_entries_are_refused_and_the_clock_follows_at_most_one_skew(
    implementation: str,
) -> None:
    p = Pair(implementation, max_clock_skew=5.0)
    ms = int(T0 * 1000)
    p.b.state.set("future", 1, (ms + 60_000) << 16, "b#0", (ms + 60_000) << 16)
    p.b.state.set("ahead", 1, (ms + 8_000) << 16, "b#0", ms << 16)  # version 8 s ahead
    p.pump()
    assert p.a.state.get("future") is None and p.a.state.refusals()["future"] == 1
    assert p.a.state.get("ahead") is not None  # within 2 skews: stored
    assert p.a.set("mine", 1, T0) >> 16 <= ms + 5_000 + 1  # followed, but one skew only


def test_a_forged_stamp_of_our_origin_is_repaired_at_the_next_tick(implementation: str) -> None:
    p = Pair(implementation, max_clock_skew=5.0)
    p.a.set("k", 1, T0)
    p.pump()
    forged = (int(T0 * 1000) + 3_000) << 16
    # b took an entry under a's origin with a stamp a never issued
    p.b.state.set("evil", 1, 1, "a#1", forged)
    p.tick()  # a learns of it from b's digest...
    p.tick()  # ...and repairs it at its next round
    assert p.a.stats.forged_stamps == 1
    assert p.a.state.get_entry("k").stamp > forged
    p.tick()
    assert p.b.state.watermarks()["a#1"] > forged  # b fetched the re-stamped entry
    p.a.set("after", 2, p.now)
    p.tick()
    assert p.b.state.get("after") == (2, p.a.state.get("after")[1])


def test_one_answer_per_accepted_connection_per_round(implementation: str) -> None:
    p = Pair(implementation)
    p.pump()
    ask = p.codec.encode(p.codec.Digest("a", {}, reply=True))
    before = p.b.stats.exchanges_throttled
    p.b.receive(2, [ask, ask, ask], T0 + 0.01, 1 << 20)
    assert p.b.stats.exchanges_throttled == before + 3  # answered at T0 already
    p.b.take()
    p.b.receive(2, [ask], T0 + 0.2, 1 << 20)
    assert any(k == SEND for k, _, _ in p.b.take())
