"""Slow links (issue #13, problem 1), on the sans-IO core: what a node
writes on a connection it does not write again, a catch-up pulls from one peer
at a time, and none of that may cost correctness elsewhere (a refused entry
comes again, a Reset still gets through, a silent cut or a busy writer does not
isolate a node). The first tests are a reviewer's reproductions of
regressions found in the first version of these rules."""

from __future__ import annotations

import socket
from typing import Any, Dict, List, Tuple

import pytest

from fastgossip._impl import load
from fastgossip.clock import LOGICAL_BITS
from fastgossip.core import ASK, SEND, CoreLimits, GossipCore
from fastgossip.fanout import Fanout
from fastgossip.node import NodeStats
from fastgossip.sim import Partition, Simulation
from fastgossip.transport import stall_timeout
from tests.conftest import wait_for
from tests.test_core import T0, Pair
from tests.test_node import FAST, pair


def test_entry_refused_as_future_comes_again(implementation: str) -> None:
    # a holds an entry of origin x whose stamp is 20 s ahead (x's clock runs
    # ahead of b's by more than max_clock_skew, within a's): b refuses it as
    # "future". Once b's clock reaches it, it must come again (PROTOCOL.md:
    # the in-flight record is dropped after 60 s for exactly this).
    p = Pair(implementation)
    stamp = int((T0 + 20) * 1000) << LOGICAL_BITS
    p.a.state.set("fut", 1, stamp, "x#1", stamp)
    p.pump()
    for i in range(600):  # 120 s of rounds; a keeps writing (as heartbeats do)
        p.a.set(f"w{i}", i, p.now)
        p.tick()
    assert p.b.state.refusals()["future"] >= 1
    assert p.b.state.get("fut") is not None, "b never got the entry back"


class Mesh:
    """Cores linked by hand: links[(x, y)] = (x's conn, y's conn); x dials y."""

    def __init__(self, implementation: str, names, links, **limits: Any) -> None:
        mods = {m: load(m, implementation) for m in ("codec", "table", "sampler")}
        limits.setdefault("gossip_interval", 0.2)
        self.cores = {
            n: GossipCore(
                n,
                f"{n}#1",
                CoreLimits(**limits),
                NodeStats(),
                codec=mods["codec"],
                table=mods["table"],
                sampler=mods["sampler"],
                seed=7,
            )
            for n in names
        }
        self.now = T0
        self.route: Dict[Tuple[str, int], Tuple[str, int]] = {}
        self.addr = {n: (n, i + 1) for i, n in enumerate(names)}
        self.bytes_to: Dict[str, int] = dict.fromkeys(names, 0)
        conn = 1
        for x, y in links:
            cx, cy = conn, conn + 1
            conn += 2
            self.route[(x, cx)] = (y, cy)
            self.route[(y, cy)] = (x, cx)
            self.cores[x].add_peer(self.addr[y])
            self.cores[y].connected(cy, self.now, peer=None)
            self.cores[x].connected(cx, self.now, peer=self.addr[y])

    def pump(self, rounds: int = 50) -> None:
        for _ in range(rounds):
            moved = False
            for n, core in self.cores.items():
                for kind, target, frames in core.take():
                    if kind not in (SEND, ASK) or not frames:
                        continue
                    conn = target if kind == SEND else core._peers[target].conn
                    dst, dconn = self.route[(n, conn)]
                    if self.lost(n, dst):
                        continue
                    moved = True
                    self.bytes_to[dst] += sum(map(len, frames))
                    self.deliver(self.cores[dst], dconn, frames)
            if not moved:
                return

    def lost(self, src: str, dst: str) -> bool:
        """Whether what ``src`` sends ``dst`` now is lost (see CutMesh)."""
        return False

    def deliver(self, core: GossipCore, conn: int, frames: List[bytes]) -> None:
        core.receive(conn, frames, self.now, 1 << 30)

    def tick(self, dt: float = 0.2) -> None:
        self.now += dt
        for core in self.cores.values():
            core.tick(self.now)
            self.pump()


def test_a_busy_writer_does_not_cut_a_node_off_from_the_rest(implementation: str) -> None:
    # a links b and c (b and c are not linked: a partition between them, or
    # a chain). b writes ~40 KiB a round (200 KiB/s); c writes one key.
    m = Mesh(implementation, ["a", "b", "c"], [("a", "b"), ("a", "c")])
    m.tick()
    m.cores["c"].set("from-c", 1, m.now)
    n = 0
    for _ in range(50):  # 10 s
        for _ in range(400):
            m.cores["b"].set(f"b{n}", b"x" * 80, m.now)
            n += 1
        m.tick()
    a = m.cores["a"]
    print(
        "a skipped",
        a.stats.exchanges_skipped,
        "b throttled",
        m.cores["b"].stats.exchanges_throttled,
        "c's key at a:",
        a.state.get("from-c"),
        "b keys at a:",
        a.state.entry_count,
    )
    assert a.state.get("from-c") is not None, "c's write never reached a in 10 s"


def test_a_full_node_keeps_hearing_from_others(implementation: str) -> None:
    # a is at max_keys (its operator's bound). b keeps updating keys a holds
    # (~40 KiB a round) and now and then writes a new key, which a refuses as
    # table_full: b's digest names a stamp a lacks. c updates a key a holds.
    m = Mesh(implementation, ["a", "b", "c"], [("a", "b"), ("a", "c")])
    a, b, c = m.cores["a"], m.cores["b"], m.cores["c"]
    a.state.max_keys = 401
    c.set("from-c", 0, m.now)
    for i in range(400):
        b.set(f"k{i}", b"x" * 80, m.now)
    m.tick()
    m.tick()
    assert a.state.get("from-c") is not None and a.state.entry_count == 401
    for r in range(50):  # 10 s
        if r == 10:
            c.set("from-c", 1, m.now)
        for i in range(400):
            b.set(f"k{i}", bytes([r % 250]) * 80, m.now)
        b.set(f"new{r}", 1, m.now)  # refused by a: table_full
        m.tick()
    print(
        "\na skipped",
        a.stats.exchanges_skipped,
        "b throttled",
        b.stats.exchanges_throttled,
        "a refusals",
        a.state.refusals()["table_full"],
        "from-c at a:",
        a.state.get("from-c"),
        "k0 at a",
        a.state.get("k0")[0][:1],
        "b's k0",
        b.state.get("k0")[0][:1],
    )
    assert a.state.get("from-c")[0] == 1, "c's update never reached a in 8 s"


class CutMesh(Mesh):
    """Mesh whose link x-y goes silent (frames dropped, no close: a silent cut)
    after ``after`` deliveries from y to x."""

    def __init__(self, *args: Any, cut: Tuple[str, str], after: int, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.cut, self.after, self.cut_now = cut, after, False

    def lost(self, src: str, dst: str) -> bool:
        if {src, dst} == set(self.cut):
            if self.cut_now:
                return True
            if src == self.cut[1]:
                self.after -= 1
                self.cut_now = self.after <= 0
        return False

    def deliver(self, core: GossipCore, conn: int, frames: List[bytes]) -> None:
        core.progress(conn, self.now)  # (bytes arrived, as the transport says)
        core.receive(conn, frames, self.now, 1 << 30)


def test_a_silent_cut_during_a_catch_up_does_not_isolate_the_node(implementation: str) -> None:
    m = CutMesh(implementation, ["a", "b", "c"], [("a", "b"), ("a", "c")], cut=("a", "b"), after=1)
    a, b, c = m.cores["a"], m.cores["b"], m.cores["c"]
    for i in range(3000):  # a backlog at b (~300 KiB): a's first answer is cut
        b.set(f"k{i}", b"x" * 80, m.now)
    m.tick()
    assert m.cut_now
    c.set("from-c", 1, m.now)
    for _ in range(150):  # 30 s, the link to b silent all along (TCP would wait ~15 min)
        m.tick()
    print(
        "\nskipped",
        a.stats.exchanges_skipped,
        "pulling",
        getattr(a, "_catching_up", lambda _: None)(m.now),
    )
    assert a.state.get("from-c") is not None, "a asked no one but the silent b for 30 s"


@pytest.mark.parametrize("n_keys", [100, 20_000])
def test_a_reset_still_reaches_a_node_back_from_a_long_cut(
    implementation: str, n_keys: int
) -> None:
    # a table of 20,000 keys: a Reset is ~160 KB of key hashes, above FIRST_CAP
    # (128 KiB) but far below max_delta_bytes / max_round_bytes.
    GRACE = 2.0
    limits = CoreLimits(fanout=Fanout.bounded(2), tombstone_grace=GRACE, horizon_keep=120.0)
    sim = Simulation(2, seed=1, limits=limits, implementation=implementation, trace=False)
    sim.preload((f"p{i}", i, 100 + i, "w#1", 100 + i) for i in range(n_keys))
    sim.write(1, "gone", 1)
    sim.run_for(2)
    assert sim.table(0) == sim.table(1)
    sim.partition(Partition(((0,), (1,)), sim.now, sim.now + 5 * GRACE))
    sim.run_for(0.5)
    sim.write(1, "gone", None)  # deleted and collected while node 0 is away
    sim.run_for(4 * GRACE)
    assert sim.core(1).state.tombstones == 0
    sim.run_for(3 * GRACE)
    print("\nresets sent", sim.total("resets_sent"), "withheld", sim.total("resets_withheld"))
    assert "gone" not in sim.table(0), "the deleted key stays at node 0 (no Reset came)"


# -- catching up (this session's rules) ------------------------------------------
def _asks(core: GossipCore) -> Dict[Any, bool]:
    """The peers asked by the outputs taken from ``core`` (dials included)."""
    return {t: True for kind, t, _ in core.take() if kind == ASK}


def test_an_answer_in_the_middle_of_a_frame_holds_the_node_to_that_peer(
    implementation: str,
) -> None:
    """A frame still arriving on the link of a question (a large answer on a
    slow link) makes the node ask no one else and hand out no digest: every
    peer would send it the same entries."""
    m = Mesh(implementation, "abc", [("a", "b"), ("a", "c"), ("c", "a")])
    a = m.cores["a"]
    a.take()
    b_conn = a._peers[m.addr["b"]].conn
    a._ask(a._peers[m.addr["b"]], a.digest_for(b_conn, True, m.now), m.now)
    a.take()
    a.progress(b_conn, m.now + 0.05, mid_frame=True)
    assert a._catching_up(m.now + 0.05) is a._peers[m.addr["b"]]
    skipped = a.stats.exchanges_skipped
    for _ in range(5):  # a second of rounds, the frame's bytes still arriving
        m.now += 0.2
        a.progress(b_conn, m.now, mid_frame=True)
        a.tick(m.now)
        assert m.addr["c"] not in _asks(a)
    assert a.stats.exchanges_skipped > skipped
    # a question from c is answered without a's digest (c would push it)
    c = m.cores["c"]
    c_conn = c._peers[m.addr["a"]].conn
    a_conn_from_c = m.route[("c", c_conn)][1]
    a.receive(a_conn_from_c, c.encode_digest(True, m.now), m.now, 1 << 30)
    answer = [f for kind, t, fs in a.take() if kind == SEND for f in fs]
    assert not any(f[5] == 0x07 for f in answer)  # (0x07: Digest)
    # the frame stops arriving: after the window the node is free again
    m.now += max(1.0, 4 * 0.2) + 0.01
    assert a._catching_up(m.now) is None


def test_a_pulled_answer_queued_behind_other_bytes_is_not_late(implementation: str) -> None:
    """While a node continues a catch-up, its question's answer may wait in
    the link's queue behind entries arriving on its other connections: as
    long as those arrive, the question is not given up (asking another peer
    would bring the same entries twice)."""
    m = Mesh(implementation, "abc", [("a", "b"), ("a", "c")])
    a = m.cores["a"]
    a.take()
    pb = a._peers[m.addr["b"]]
    c_conn = a._peers[m.addr["c"]].conn
    a._ask(pb, a.digest_for(pb.conn, True, m.now), m.now)
    pb.pulling = True
    a.take()
    for _ in range(10):  # 2 s: nothing on b's link, entries arriving on c's
        m.now += 0.2
        a.progress(c_conn, m.now, mid_frame=False)
        assert a._catching_up(m.now) is pb
        a.tick(m.now)
        assert m.addr["c"] not in _asks(a)
    m.now += 1.01  # nothing arrives anywhere: the question is late
    assert a._catching_up(m.now) is None


def test_a_peers_small_batches_do_not_make_a_node_catch_up(implementation: str) -> None:
    """A peer that is itself catching up answers with small batches and no
    digest: that is no large answer arriving, and the asker must not stop
    answering others with its digest (that stalled a whole cluster's catch-up
    in the fault suite)."""
    m = Mesh(implementation, "ab", [("a", "b")])
    a = m.cores["a"]
    a.take()
    pb = a._peers[m.addr["b"]]
    a._ask(pb, a.digest_for(pb.conn, True, m.now), m.now)
    a.take()
    c = a._conns[pb.conn]
    for _ in range(5):
        m.now += 0.2
        c.batch_bytes += 103  # a few small batches, each frame whole
        a.progress(pb.conn, m.now, mid_frame=False)
        assert a._catching_up(m.now) is None


# -- a silent cut (problem 2) ---------------------------------------------------
@pytest.mark.skipif(not hasattr(socket, "TCP_USER_TIMEOUT"), reason="no TCP_USER_TIMEOUT here")
async def test_gossip_connections_give_up_on_unacknowledged_bytes(implementation: str) -> None:
    """A link cut silently (packets dropped) must not wait on TCP's
    retransmission back-off: every gossip connection, dialled or accepted,
    has TCP_USER_TIMEOUT set to the stall timeout (the fault suite cuts links
    for real)."""
    a, b = await pair(implementation)
    async with a, b:
        a.set("k", 1)
        await wait_for(lambda: b.get("k") == 1)
        want = int(stall_timeout(FAST) * 1000)
        seen = 0
        for node in (a, b):
            for proto in node._transport.conns.values():
                sock = proto.transport.get_extra_info("socket")
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == want
                seen += 1
        assert seen >= 2  # (a's dial and b's accept at least)


def test_the_stall_timeout_leaves_room_for_a_slow_links_recovery() -> None:
    assert stall_timeout(0.2) == 3.0  # a few retransmission timeouts on a congested link
    assert stall_timeout(1.0) == 10.0
