"""A deterministic simulator: many ``GossipCore``s over a virtual network, in virtual time.

The cores are the very ``core.GossipCore`` real nodes run; this module plays
the part of ``transport.Transport`` (links, dials, backoff, write buffers) and
of the network and the clocks. Nothing touches a socket or the system clock:
node ``i`` has the address ``("sim", i)``, and time is a float that jumps from
event to event (a heap keyed by ``(time, sequence number)``).

The network model, per message (one ``SEND`` / ``ASK`` output, i.e. one write
on a TCP connection):

* **latency**: ``latency + U(0, jitter)`` seconds, one seeded draw per message;
  a connection delivers in order (TCP), so a message never overtakes the one
  before it on the same connection and direction;
* **bandwidth** (bytes/s per connection and direction, None: unbounded): a
  message starts when the one before it has left, and leaves ``size /
  bandwidth`` later. What has not left yet is the connection's write buffer:
  the core's ``room`` is ``write_buffer_high`` minus it, and a send made when it
  is full is dropped (``stats.sends_dropped``), as the transport does;
* **loss** (probability per message). TCP does not lose data on a connection,
  so what loss means is a choice, ``loss_mode``:

  - ``"retransmit"`` (default, what TCP does with a lossy path): a lost message
    arrives one retransmission timeout later (``rto``, 0.2 s, Linux's minimum;
    lost again with the same probability, the timeout doubling), and the
    messages behind it on that connection wait for it (head-of-line blocking);
  - ``"reset"`` (a path so bad the connection is given up, or a middlebox that
    drops it): the message is dropped and the connection is closed on both
    sides when it would have arrived; whatever was sent after it on that
    connection is dropped too. The nodes redial as the transport does.

  A connection attempt whose SYN is lost is retried by the kernel after 1 s
  (doubling), in both modes.
* **dials**: an ``ASK`` with no open link dials; the connection opens one
  latency later on both sides (``connected(conn, now, peer=addr)`` on the
  dialling side, ``connected(conn2, now, peer=None)`` on the other). A dial to
  a node that is down fails after a round trip (refused), across a partition
  after ``connect_timeout``; the link then backs off as the transport does
  (``reconnect_min`` doubling to ``reconnect_max``, jitter from the core's rng).
* **partitions**: named groups of nodes with a start and an end; nodes in no
  group form one more group. At the start every connection between groups is
  closed on both sides (``closed``), messages on them are dropped, and dials
  across fail until the end.
* **crashes**: the node's process dies; its peers see their connections close
  one latency later. A restart brings a new core with a new life
  (``"n<i>#<life>"``, as a real restart takes a new origin), either empty or
  ``keep_state=True``: with the table of the life before (a node that persisted
  its table; its clock is not kept, as ``GossipNode`` keeps none).
* **clocks**: node ``i``'s ``now`` is ``EPOCH + offset_i + t * (1 + drift_i)``
  for virtual time ``t``; rounds tick every ``gossip_interval`` of virtual time
  from a random phase (the transport's de-synchronisation).

Not modelled (the transport does them; none matters below a few hundred peers
per node or a few minutes of virtual time): ``max_connections`` eviction,
``max_inbound``, ``max_buffered_bytes`` across connections, idle and partial
frame timeouts, file descriptor budgets, frames split across TCP segments
(``receive`` gets whole messages).

Reproducibility: one ``random.Random(seed)`` drives the network, and each core
is seeded from it (``seed=``) with an explicit origin. Same seed, same trace:
``trace_hash()`` is a blake2b over every delivery's (time, source node,
destination node, frame bytes), plus writes, connections opened and closed.
The core's outputs do not depend on the per-process hash seed (the table's
seeded hash only places keys in its index; origins are kept in insertion
order and deltas sorted by bytes), and ``tests/test_sim.py`` checks that two
processes with different ``PYTHONHASHSEED`` produce the same hash.
"""

from __future__ import annotations

import gc
import hashlib
import heapq
import random
import resource
import struct
import sys
import time
from dataclasses import dataclass, field, fields, replace
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from ._impl import load
from .core import ASK, CLOSE, EPHEMERAL_SUFFIX, EVENT, SEND, CoreLimits, GossipCore
from .fanout import Fanout
from .membership import RESERVED_PREFIX, MembershipConfig
from .node import NodeStats

__all__ = [
    "EPOCH",
    "ConvergenceReport",
    "Crash",
    "NetworkModel",
    "Partition",
    "SimStats",
    "Simulation",
    "WriteRecord",
    "measure_convergence",
    "percentiles",
    "schedule",
    "sim_address",
]

Address = Tuple[str, int]
Value = Any  # int | bytes

#: virtual time 0 on every node's wall clock (before its offset), in Unix seconds
EPOCH = 1_700_000_000.0

# event kinds
_DELIVER, _TICK, _CONNECT, _CONNFAIL, _LOST, _RESET, _CALL, _REFUSED = range(8)

_pack_delivery = struct.Struct("<dIIQ").pack
_pack_event = struct.Struct("<dBII").pack


def sim_address(i: int) -> Address:
    """The address of node ``i`` in a simulation."""
    return ("sim", i)


@dataclass(frozen=True)
class NetworkModel:
    """The virtual network (see the module docstring)."""

    latency: float = 0.001
    jitter: float = 0.001
    loss: float = 0.0
    loss_mode: str = "retransmit"
    rto: float = 0.2
    syn_rto: float = 1.0
    bandwidth: Optional[float] = None
    write_buffer_high: int = 4 << 20
    connect_timeout: float = 2.0
    reconnect_min: float = 0.05
    reconnect_max: float = 2.0

    def __post_init__(self) -> None:
        if self.loss_mode not in ("retransmit", "reset"):
            raise ValueError(f"loss_mode must be 'retransmit' or 'reset', not {self.loss_mode!r}")
        if not 0.0 <= self.loss < 1.0:
            raise ValueError(f"loss must be in [0, 1), got {self.loss!r}")
        if self.latency < 0 or self.jitter < 0:
            raise ValueError("latency and jitter must be >= 0")
        if self.bandwidth is not None and self.bandwidth <= 0:
            raise ValueError("bandwidth must be > 0 bytes/s or None")


@dataclass(frozen=True)
class Partition:
    """Between ``start`` and ``end`` (virtual seconds) nodes in different groups
    cannot reach each other; nodes in no group form one more group."""

    groups: Tuple[Tuple[int, ...], ...]
    start: float
    end: float
    name: str = ""


@dataclass(frozen=True)
class Crash:
    """Node ``node`` dies at ``at``; restarts at ``restart_at`` (None: never),
    with its table when ``keep_state``."""

    node: int
    at: float
    restart_at: Optional[float] = None
    keep_state: bool = False


@dataclass(frozen=True)
class WriteRecord:
    """A write a node made (``Simulation.write``)."""

    time: float
    node: int
    life: int
    key: str
    value: Value
    version: int
    origin: str
    transient: bool = False  # ephemeral or with a ttl: need not survive

    @property
    def lww(self) -> Tuple[int, str, Any]:
        """What last-writer-wins compares: (version, origin, value); ints below
        bytes below a tombstone (a delete, value None)."""
        return _lww(self.version, self.origin, self.value)


def _lww(version: int, origin: str, v: Any) -> Tuple[int, str, Any]:
    if v is None:
        return (version, origin, (2, 0))
    return (version, origin, (1, v) if isinstance(v, bytes) else (0, v))


_STAT_FIELDS = tuple(f.name for f in fields(NodeStats))


class SimStats:
    """A node's counters: ``NodeStats``'s fields, in slots (100,000 of them fit)."""

    __slots__ = _STAT_FIELDS
    # the same fields, for type checkers (test_sim checks they match NodeStats)
    bytes_sent: int
    bytes_received: int
    frames_sent: int
    frames_received: int
    connections_opened: int
    connections_accepted: int
    connect_failures: int
    rounds: int
    bad_frames: int
    entries_merged: int
    entries_refused: int
    sends_dropped: int
    connections_evicted: int
    connections_refused: int
    connections_shed: int
    input_shed: int
    timeouts: int
    fd_limited: int
    exchanges_skipped: int
    exchanges_throttled: int
    forged_stamps: int
    cluster_mismatch: int
    tombstones_collected: int
    entries_expired: int
    resets_sent: int
    resets_received: int
    resets_withheld: int
    reset_drops: int
    auth_failures: int
    disk_flushes: int
    disk_snapshots: int
    disk_errors: int

    def __init__(self) -> None:
        for name in _STAT_FIELDS:
            setattr(self, name, 0)

    def as_dict(self) -> Dict[str, int]:
        return {name: getattr(self, name) for name in _STAT_FIELDS}


class _Link:
    """A node's outbound connection to one peer, as the transport keeps it."""

    __slots__ = ("conn", "connecting", "backoff", "next_attempt")

    def __init__(self) -> None:
        self.conn: Optional[int] = None
        self.connecting = False
        self.backoff = 0.0
        self.next_attempt = 0.0


class _Conn:
    """One side of a connection: the node it belongs to and its sending direction."""

    __slots__ = ("node", "other", "peer_addr", "free_at", "last_arrival")

    def __init__(self, node: int, other: int, peer_addr: Optional[Address]) -> None:
        self.node = node
        self.other = other  # the conn id of the other side
        self.peer_addr = peer_addr  # for the dialling side: the peer dialled
        self.free_at = 0.0  # when the last message queued on it has left
        self.last_arrival = 0.0  # arrival time of the last message sent on it


class _Node:
    __slots__ = ("index", "addr", "core", "up", "life", "base", "mul", "links", "conns", "stats")

    def __init__(self, index: int) -> None:
        self.index = index
        self.addr = sim_address(index)
        self.core: Optional[GossipCore] = None
        self.up = False
        self.life = 0
        self.base = EPOCH
        self.mul = 1.0
        self.links: Dict[Address, _Link] = {}
        self.conns: Set[int] = set()
        self.stats = SimStats()


@dataclass
class _Watch:
    key: str
    value: Value
    version: int
    since: float
    have: Dict[int, float] = field(default_factory=dict)


class Simulation:
    """``n`` gossip cores over a virtual network (see the module docstring).

    ``peers``: how many peers each node knows (random, seeded; None: every
    other node up to 33 nodes, else 20). ``limits``: the cores' settings
    (``fanout`` overrides its fanout). ``clock_skew``: offsets drawn uniformly
    in ``[-clock_skew/2, clock_skew/2]`` seconds, so any two clocks differ by at
    most ``clock_skew``; ``clock_drift``: rates in ``[-drift, drift]``.
    ``trace=False`` skips the trace hash (a little faster). Rounds start at a
    random phase per node, as the transport's do, so a value can travel several
    hops within one interval; ``sync_rounds=True`` makes every node tick at the
    same instants instead (the textbook synchronous round: one hop per round).
    """

    def __init__(
        self,
        n: int,
        *,
        seed: int = 0,
        network: NetworkModel = NetworkModel(),
        limits: Optional[CoreLimits] = None,
        fanout: Optional[Fanout] = None,
        peers: Optional[int] = None,
        clock_skew: float = 0.0,
        clock_drift: float = 0.0,
        implementation: Optional[str] = None,
        trace: bool = True,
        sync_rounds: bool = False,
        membership: bool = False,
        seeds: int = 1,
        member_settings: Optional[Dict[str, Any]] = None,
    ) -> None:
        if n < 1:
            raise ValueError("a simulation needs at least one node")
        self.n = n
        self.seed = seed
        self.network = network
        if limits is None:
            limits = CoreLimits(fanout=fanout or Fanout.bounded(3))
        elif fanout is not None:
            limits = replace(limits, fanout=fanout)
        self.limits = limits
        self.interval = limits.gossip_interval
        self.rng = random.Random(seed)
        self._random = self.rng.random
        self._plain = network.bandwidth is None and not network.loss
        self._lat, self._jit = network.latency, network.jitter
        self.sync_rounds = sync_rounds
        self._codec = load("codec", implementation)
        self._table = load("table", implementation)
        self._sampler = load("sampler", implementation)
        self.implementation = "python" if self._codec.__name__.endswith("_py") else "cython"
        self.now = 0.0
        self._heap: List[tuple] = []
        self._seq = 0
        self._conns: Dict[int, _Conn] = {}
        self._next_conn = 0
        self._partitions: List[Tuple[Partition, Dict[int, int]]] = []
        self._hash = hashlib.blake2b(digest_size=16) if trace else None
        self.writes: List[WriteRecord] = []
        self.lost_table_at: Dict[int, List[float]] = {}  # node -> when it lost its table
        self.deliveries = 0
        self.events = 0
        self._watch: Optional[_Watch] = None
        self.converged_at: Optional[float] = None
        self._live = 0
        # membership: nodes join through the first ``seeds`` nodes instead of
        # knowing a peer list; member events are kept as (time, node, kind, member)
        self.membership = membership
        self.seed_count = max(1, seeds)
        self.member_settings = dict(member_settings or {})
        self.member_events: List[Tuple[float, int, str, str]] = []
        if peers is None:
            peers = n - 1 if n <= 33 else 20
        self.peers_per_node = min(peers, n - 1)
        self.nodes = [_Node(i) for i in range(n)]
        self._peer_lists = self._draw_peers()
        rng = self.rng
        for node in self.nodes:
            if clock_skew:
                node.base = EPOCH + (rng.random() - 0.5) * clock_skew
            if clock_drift:
                node.mul = 1.0 + (rng.random() * 2 - 1) * clock_drift
        for node in self.nodes:
            self._start(node, state=None)

    # -- set-up ----------------------------------------------------------------
    def _draw_peers(self) -> List[List[int]]:
        n, k, rng = self.n, self.peers_per_node, self.rng
        if k >= n - 1:
            return [[j for j in range(n) if j != i] for i in range(n)]
        out = []
        for i in range(n):
            picked = rng.sample(range(n - 1), k)
            out.append([j if j < i else j + 1 for j in picked])
        return out

    def _start(self, node: _Node, state: Any) -> None:
        node.life += 1
        origin = f"n{node.index}#{node.life}"
        core = GossipCore(
            f"n{node.index}",
            origin,
            self.limits,
            node.stats,
            codec=self._codec,
            table=self._table,
            sampler=self._sampler,
            seed=self.rng.getrandbits(64) | 1,
            state=state,
        )
        if self.membership:
            settings = dict(self.member_settings)
            settings.setdefault("heartbeat_interval", max(0.5, 2.5 * self.limits.gossip_interval))
            settings.setdefault("acceptable_pause", max(0.5, 2 * self.limits.gossip_interval))
            config = MembershipConfig(
                addr=node.addr,
                seeds=tuple(sim_address(j) for j in range(min(self.seed_count, self.n))),
                **settings,
            )
            core.enable_membership(config, node.base + self.now * node.mul)
        else:
            for j in self._peer_lists[node.index]:
                core.add_peer(("sim", j))
        node.core = core
        node.up = True
        self._live += 1
        if self._watch is not None:
            self._watch.have.pop(node.index, None)
        node.links = {}
        node.conns = set()
        if self.sync_rounds:  # the next multiple of the interval
            k = int(self.now / self.interval) + 1 if self.now > 0 else 0
            first = k * self.interval
        else:
            first = self.now + self.rng.random() * self.interval
        self._push(first, _TICK, node.index, node.life)
        if state is not None and self._watch is not None:
            self._check_watch(node, self.now)

    def set_clock(self, i: int, offset: float = 0.0, drift: float = 0.0) -> None:
        """Node ``i``'s clock reads ``EPOCH + offset + t * (1 + drift)``."""
        self.nodes[i].base = EPOCH + offset
        self.nodes[i].mul = 1.0 + drift

    def node_now(self, i: int, t: Optional[float] = None) -> float:
        """Node ``i``'s wall clock at virtual time ``t`` (default: now)."""
        node = self.nodes[i]
        return node.base + (self.now if t is None else t) * node.mul

    def core(self, i: int) -> GossipCore:
        """Node ``i``'s current core (its latest life)."""
        core = self.nodes[i].core
        assert core is not None
        return core

    def is_up(self, i: int) -> bool:
        return self.nodes[i].up

    def live_nodes(self) -> List[int]:
        return [node.index for node in self.nodes if node.up]

    def stats(self, i: int) -> SimStats:
        """Node ``i``'s counters, over all its lives."""
        return self.nodes[i].stats

    def total(self, name: str) -> int:
        """A counter summed over every node (e.g. ``"bytes_sent"``)."""
        return sum(getattr(node.stats, name) for node in self.nodes)

    # -- scheduling ------------------------------------------------------------
    def _push(self, t: float, kind: int, a: Any = None, b: Any = None, c: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, a, b, c))

    def at(self, t: float, fn: Any, *args: Any) -> None:
        """Call ``fn(*args)`` at virtual time ``t`` (in event order)."""
        self._push(t, _CALL, fn, args)

    def write(
        self,
        i: int,
        key: str,
        value: Value,
        at: Optional[float] = None,
        ephemeral: bool = False,
        ttl: Optional[float] = None,
    ) -> None:
        """Node ``i`` writes ``key`` at ``at`` (default: now) with ``core.set``
        (value None: deletes it, ``core.delete``); recorded in ``writes`` when
        it is up then (a down node writes nothing); ``ephemeral``: see
        ``GossipCore.set`` (such writes need not survive their writer's life:
        ``expected_floor`` leaves them out); ``ttl``: seconds (these neither)."""
        self.at(self.now if at is None else at, self._write, i, key, value, ephemeral, ttl)

    def _write(
        self, i: int, key: str, value: Value, ephemeral: bool = False, ttl: Optional[float] = None
    ) -> None:
        node = self.nodes[i]
        if not node.up:
            return
        assert node.core is not None
        now = node.base + self.now * node.mul
        if value is None:
            version = node.core.delete(key, now)
        else:
            version = node.core.set(key, value, now, ephemeral, ttl)
        origin = node.core.origin + (EPHEMERAL_SUFFIX if ephemeral else "")
        self.writes.append(
            WriteRecord(
                self.now, i, node.life, key, value, version, origin, ephemeral or ttl is not None
            )
        )
        if self._hash is not None:
            self._hash.update(_pack_event(self.now, 7, i, node.life))
            self._hash.update(f"{key}={value!r}@{version}".encode())
        w = self._watch
        if w is not None and w.key == key:
            self._check_watch(node, self.now)

    def crash(self, c: Crash) -> None:
        """Schedule a crash (and a restart)."""
        self.at(c.at, self._crash, c.node)
        if c.restart_at is not None:
            self.at(c.restart_at, self._restart, c.node, c.keep_state)

    def partition(self, p: Partition) -> None:
        """Schedule a partition."""
        self.at(p.start, self._partition_start, p)
        self.at(p.end, self._partition_end, p)

    def watch(self, key: str, value: Value, version: int = 0) -> None:
        """Record when each node first holds ``key`` = ``value`` (with at least
        ``version``); ``converged_at`` is set once every live node does."""
        self._watch = _Watch(key, value, version, self.now)
        self.converged_at = None
        for node in self.nodes:
            if node.up:
                self._check_watch(node, self.now)

    def watch_times(self) -> Dict[int, float]:
        """Per node, the virtual time it first held the watched value."""
        return dict(self._watch.have) if self._watch is not None else {}

    def _check_watch(self, node: _Node, t: float) -> None:
        w = self._watch
        assert w is not None and node.core is not None
        if node.index in w.have:
            return
        got = node.core.state.get(w.key)
        if got is not None and got[0] == w.value and got[1] >= w.version:
            w.have[node.index] = t
            if self.converged_at is None and len(w.have) >= self._live:
                if all(nd.index in w.have for nd in self.nodes if nd.up):
                    self.converged_at = t

    # -- faults ----------------------------------------------------------------
    def _crash(self, i: int) -> None:
        node = self.nodes[i]
        if not node.up:
            return
        node.up = False
        self._live -= 1
        t = self.now
        for cid in sorted(node.conns):
            c = self._conns.pop(cid)
            self._push(t + self._latency(), _LOST, c.other)
        node.conns = set()
        node.links = {}
        if self._hash is not None:
            self._hash.update(_pack_event(t, 8, i, node.life))

    def _restart(self, i: int, keep_state: bool) -> None:
        node = self.nodes[i]
        if node.up:
            return
        state = None
        if keep_state:
            assert node.core is not None
            state = node.core.state
        else:
            self.lost_table_at.setdefault(i, []).append(self.now)
        self._start(node, state)

    def _partition_start(self, p: Partition) -> None:
        group_of = {}
        for g, members in enumerate(p.groups):
            for m in members:
                group_of[m] = g
        self._partitions.append((p, group_of))
        for cid in sorted(self._conns):
            c = self._conns.get(cid)
            if c is None:
                continue
            other = self._conns.get(c.other)
            # (a side whose other side crashed is lost a latency after the crash)
            if other is not None and self._separated(c.node, other.node):
                self._lose(cid)
                self._lose(c.other)

    def _partition_end(self, p: Partition) -> None:
        self._partitions = [(q, g) for q, g in self._partitions if q is not p]

    def _separated(self, a: int, b: int) -> bool:
        for _, group_of in self._partitions:
            if group_of.get(a, -1) != group_of.get(b, -1):
                return True
        return False

    # -- the network -----------------------------------------------------------
    def _latency(self) -> float:
        net = self.network
        return net.latency + self.rng.random() * net.jitter if net.jitter else net.latency

    def _send(self, cid: int, frames: List[bytes], t: float) -> None:
        c = self._conns.get(cid)
        if c is None:
            return
        stats = self.nodes[c.node].stats
        size = sum(map(len, frames))
        if self._plain:  # no bandwidth limit, no loss: the common case, kept short
            stats.frames_sent += len(frames)
            stats.bytes_sent += size
            arrival = t + self._lat + self._random() * self._jit
            if arrival < c.last_arrival:
                arrival = c.last_arrival
            c.last_arrival = arrival
            self._seq += 1
            heapq.heappush(self._heap, (arrival, self._seq, _DELIVER, c.other, frames, c.node))
            return
        net = self.network
        bw = net.bandwidth
        if bw is not None:
            if (c.free_at - t) * bw >= net.write_buffer_high:
                stats.sends_dropped += 1
                return
            c.free_at = (c.free_at if c.free_at > t else t) + size / bw
            arrival = c.free_at
        else:
            arrival = t
        stats.frames_sent += len(frames)
        stats.bytes_sent += size
        rng = self.rng
        arrival += net.latency + rng.random() * net.jitter if net.jitter else net.latency
        if net.loss and rng.random() < net.loss:
            if net.loss_mode == "reset":
                if arrival < c.last_arrival:
                    arrival = c.last_arrival
                c.last_arrival = arrival
                self._push(arrival, _RESET, cid)
                return
            rto = net.rto
            arrival += rto
            while rng.random() < net.loss:
                rto *= 2
                arrival += rto
        if arrival < c.last_arrival:
            arrival = c.last_arrival
        c.last_arrival = arrival
        self._push(arrival, _DELIVER, c.other, frames, c.node)

    def _room(self, c: _Conn, t: float) -> int:
        net = self.network
        if net.bandwidth is None or c.free_at <= t:
            return net.write_buffer_high
        return max(0, net.write_buffer_high - int((c.free_at - t) * net.bandwidth))

    def _dial(self, node: _Node, link: _Link, addr: Address) -> None:
        t = self.now
        if link.connecting or t < link.next_attempt:
            return
        link.connecting = True
        net = self.network
        target = addr[1]
        if self._separated(node.index, target):
            self._push(t + net.connect_timeout, _CONNFAIL, node.index, node.life, addr)
            return
        delay = self._latency()
        rto = net.syn_rto
        while net.loss and self.rng.random() < net.loss:
            delay += rto
            rto *= 2
        self._push(t + delay, _CONNECT, node.index, node.life, (addr, t))

    def _connect(self, i: int, life: int, addr: Address, dialled_at: float) -> None:
        node = self.nodes[i]
        if not node.up or node.life != life:
            return
        link = node.links.get(addr)
        if link is None:
            return
        t = self.now
        j = addr[1]
        peer = self.nodes[j]
        if self._separated(i, j):
            # the SYN never arrived: the dial times out
            self._push(dialled_at + self.network.connect_timeout, _CONNFAIL, i, life, addr)
            return
        if not peer.up:
            self._push(t + self._latency(), _REFUSED, i, life, addr)  # nothing listens
            return
        link.connecting = False
        self._next_conn += 2
        mine, theirs = self._next_conn - 1, self._next_conn
        self._conns[mine] = _Conn(i, theirs, addr)
        self._conns[theirs] = _Conn(j, mine, None)
        node.conns.add(mine)
        peer.conns.add(theirs)
        link.conn = mine
        if self._hash is not None:
            self._hash.update(_pack_event(t, 1, i, j))
        pcore = peer.core
        assert pcore is not None and node.core is not None
        peer.stats.connections_accepted += 1
        pcore.connected(theirs, peer.base + t * peer.mul, peer=None)
        self._drain(peer)
        node.stats.connections_opened += 1
        node.core.connected(mine, node.base + t * node.mul, peer=addr)
        self._drain(node)

    def _connfail(self, i: int, life: int, addr: Address, refused: bool = False) -> None:
        node = self.nodes[i]
        if not node.up or node.life != life:
            return
        link = node.links.get(addr)
        if link is None:
            return
        link.connecting = False
        node.stats.connect_failures += 1
        self._retry_later(node, link)
        assert node.core is not None
        node.core.dial_failed(addr, node.base + self.now * node.mul, refused)
        self._drain(node)

    def _retry_later(self, node: _Node, link: _Link) -> None:
        """The transport's _schedule_retry, with the core's rng for the jitter."""
        net = self.network
        link.backoff = min(net.reconnect_max, max(net.reconnect_min, link.backoff * 2))
        assert node.core is not None
        jitter = 0.5 + node.core.rng.below(1000) / 1000.0
        link.next_attempt = self.now + link.backoff * jitter

    def _lose(self, cid: int, by_peer: bool = True) -> None:
        """One side of a connection closes (its node hears of it); ``by_peer``
        unless that node closed it itself."""
        c = self._conns.pop(cid, None)
        if c is None:
            return
        node = self.nodes[c.node]
        node.conns.discard(cid)
        if self._hash is not None:
            self._hash.update(_pack_event(self.now, 2, c.node, cid))
        assert node.core is not None
        node.core.closed(cid, node.base + self.now * node.mul, by_peer)
        if c.peer_addr is not None:
            link = node.links.get(c.peer_addr)
            if link is not None and link.conn == cid:
                link.conn = None
                self._retry_later(node, link)
        self._drain(node)

    def _close(self, cid: int) -> None:
        """A node closes a connection: its side now, the other side a latency later."""
        c = self._conns.get(cid)
        if c is None:
            return
        other = c.other
        self._lose(cid, by_peer=False)
        self._push(self.now + self._latency(), _LOST, other)

    # -- the cores' outputs ----------------------------------------------------
    def _drain(self, node: _Node) -> None:
        core = node.core
        assert core is not None
        out = core.take()
        if not out:
            return
        t = self.now
        for kind, target, payload in out:
            if kind == SEND:
                self._send(target, payload, t)
            elif kind == ASK:
                link = node.links.get(target)
                if link is None:
                    if not core.has_peer(target):
                        continue
                    link = node.links[target] = _Link()
                if link.conn is not None:
                    if payload:
                        self._send(link.conn, payload, t)
                else:
                    self._dial(node, link, target)
            elif kind == CLOSE:
                self._close(target)
            elif kind == EVENT:
                if target == "answered":
                    link = node.links.get(payload)
                    if link is not None:
                        link.backoff = 0.0
                elif target == "member":
                    self.member_events.append((t, node.index, payload.kind, payload.member.node_id))
                elif target == "unpeer":
                    node.links.pop(payload, None)

    # -- running ---------------------------------------------------------------
    def run(self, until: float, stop_when_converged: bool = False) -> None:
        """Process events up to virtual time ``until`` (inclusive); with
        ``stop_when_converged``, stop as soon as the watched value is everywhere."""
        heap = self._heap
        pop = heapq.heappop
        nodes = self.nodes
        conns = self._conns
        h = self._hash
        watch = self._watch
        interval = self.interval
        wbh = self.network.write_buffer_high
        unbounded = self.network.bandwidth is None
        events = 0
        try:
            while heap and heap[0][0] <= until:
                if stop_when_converged and self.converged_at is not None:
                    break
                t, _, kind, a, b, c = pop(heap)
                self.now = t
                events += 1
                if kind == _DELIVER:
                    conn = conns.get(a)
                    if conn is None:
                        continue  # closed meanwhile: dropped
                    node = nodes[conn.node]
                    core = node.core
                    assert core is not None  # a crashed node's connections are closed
                    self.deliveries += 1
                    stats = node.stats
                    stats.frames_received += len(b)
                    if h is not None:
                        h.update(_pack_delivery(t, c, conn.node, sum(map(len, b))))
                        for f in b:
                            h.update(f)
                    room = wbh if unbounded else self._room(conn, t)
                    try:
                        merged = core.receive(a, b, node.base + t * node.mul, room)
                    except (ValueError, TypeError):  # a bad frame: the transport aborts
                        stats.bad_frames += 1
                        self._close(a)
                        continue
                    if merged and watch is not None and node.index not in watch.have:
                        self._check_watch(node, t)
                    if core.out:
                        self._drain(node)
                elif kind == _TICK:
                    node = nodes[a]
                    if not node.up or node.life != b:
                        continue
                    node.core.tick(node.base + t * node.mul)
                    self._drain(node)
                    self._push(t + interval, _TICK, a, b)
                elif kind == _CONNECT:
                    self._connect(a, b, c[0], c[1])
                elif kind == _CONNFAIL:
                    self._connfail(a, b, c)
                elif kind == _REFUSED:
                    self._connfail(a, b, c, True)
                elif kind == _LOST:
                    self._lose(a)
                elif kind == _RESET:
                    conn = conns.get(a)
                    if conn is not None:
                        self._lose(a)
                        self._lose(conn.other)
                elif kind == _CALL:
                    a(*b)
                    watch = self._watch
        finally:
            self.events += events
        if not (stop_when_converged and self.converged_at is not None):
            self.now = max(self.now, until)

    def run_for(self, seconds: float) -> None:
        self.run(self.now + seconds)

    def run_until_converged(self, timeout: float) -> Optional[float]:
        """Run until every live node holds the watched value, at most ``timeout``
        virtual seconds; returns the virtual time it took (None: not converged)."""
        w = self._watch
        if w is None:
            raise RuntimeError("watch(key, value) first")
        self.run(self.now + timeout, stop_when_converged=True)
        return None if self.converged_at is None else self.converged_at - w.since

    # -- results ---------------------------------------------------------------
    def trace_hash(self) -> str:
        """The blake2b (16 bytes, hex) of the trace so far."""
        if self._hash is None:
            raise RuntimeError("this simulation was made with trace=False")
        return self._hash.hexdigest()

    def table(self, i: int) -> Dict[str, Tuple[int, str, Value]]:
        """Node ``i``'s table: key -> (version, origin, value), without the
        cluster's own keys (member records)."""
        return {
            e.key: (e.version, e.origin, e.value)
            for e in self.core(i).state
            if not e.key.startswith(RESERVED_PREFIX)
        }

    def leave(self, i: int, at: Optional[float] = None) -> None:
        """Node ``i`` leaves gracefully at ``at`` (default now); it keeps
        running (and answering) until crashed."""
        self.at(self.now if at is None else at, self._leave, i)

    def _leave(self, i: int) -> None:
        node = self.nodes[i]
        if node.up and node.core is not None:
            node.core.leave(node.base + self.now * node.mul)
            self._drain(node)

    def members(self, i: int) -> Dict[str, str]:
        """Node ``i``'s view: member node id -> status (itself left out)."""
        m = self.core(i).membership
        if m is None:
            raise RuntimeError("this simulation runs without membership")
        return {node_id: mem.status for node_id, mem in m.members.items()}

    def expected_floor(self) -> Dict[str, WriteRecord]:
        """Per key, the greatest (version, origin, value) among the writes that
        must survive: those whose node is up and never lost its table after
        making them (it stayed up, or restarted with its state). A write of a
        node that is down, or lost its table, survives only if it reached
        another node first: it may be there, but need not be."""
        out: Dict[str, WriteRecord] = {}
        for w in self.writes:
            lost = self.lost_table_at.get(w.node, ())
            if w.transient or not self.nodes[w.node].up or any(t >= w.time for t in lost):
                continue
            cur = out.get(w.key)
            if cur is None or w.lww > cur.lww:
                out[w.key] = w
        return out

    def check_converged(self) -> List[str]:
        """What is wrong with the live nodes' tables (empty: nothing).

        Every live node must hold the same table; each key's entry must be one
        that was written, no less than ``expected_floor()`` (so equal to it
        unless a greater write escaped from a node that later lost its table
        before its restart), and every key of the floor must be there."""
        problems: List[str] = []
        live = self.live_nodes()
        if not live:
            return problems
        first = self.table(live[0])
        for i in live[1:]:
            other = self.table(i)
            if other != first:
                diff = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
                problems.append(
                    f"node {i} differs from node {live[0]} on {len(diff)} keys, e.g. "
                    f"{diff[0]!r}: {other.get(diff[0])!r} vs {first.get(diff[0])!r}"
                )
        written = {(w.key, w.version, w.origin, w.value) for w in self.writes}
        for key, (version, origin, value) in sorted(first.items()):
            if (key, version, origin, value) not in written:
                problems.append(f"{key!r} holds {(version, origin, value)!r}, never written")
        for key, w in sorted(self.expected_floor().items()):
            got = first.get(key)
            if got is None:
                if w.value is not None:
                    problems.append(f"{key!r} is missing; {w} must survive")
                continue
            if _lww(*got) < w.lww:
                problems.append(f"{key!r} holds {got!r}, below the surviving write {w}")
        return problems

    def preload(self, entries: Iterable[Tuple[str, Value, int, str, int]]) -> None:
        """Put the same entries (key, value, version, origin, stamp) in every
        live node's table, as if they had been gossiped already."""
        rows = list(entries)
        for node in self.nodes:
            if node.up:
                assert node.core is not None
                state = node.core.state
                for key, value, version, origin, stamp in rows:
                    state.set(key, value, version, origin, stamp)


def schedule(sim: Simulation, faults: Sequence[Any]) -> None:
    """Schedule ``Crash`` and ``Partition`` faults."""
    for f in faults:
        if isinstance(f, Crash):
            sim.crash(f)
        elif isinstance(f, Partition):
            sim.partition(f)
        else:
            raise TypeError(f"not a fault: {f!r}")


def percentiles(
    values: Sequence[float], ps: Sequence[float] = (50, 90, 99, 100)
) -> Dict[str, float]:
    """Nearest-rank percentiles, keyed ``"p50"`` ... ``"max"`` (empty: {})."""
    data = sorted(values)
    out: Dict[str, float] = {}
    if not data:
        return out
    for p in ps:
        rank = max(1, -(-len(data) * p // 100))
        out["max" if p == 100 else f"p{p:g}"] = data[int(rank) - 1]
    return out


def peak_rss_mib() -> float:
    """This process's peak resident set size so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


@dataclass
class ConvergenceReport:
    """What ``measure_convergence`` found (rounds are gossip intervals of virtual time)."""

    nodes: int
    fanout: str
    peers: int
    loss: float
    loss_mode: str
    seed: int
    sync_rounds: bool
    origins: int
    implementation: str
    converged: bool
    rounds: Optional[float]
    node_rounds: Dict[str, float]
    bytes_per_node_round: float
    node_bytes_per_round: Dict[str, float]
    idle_bytes_per_node_round: Optional[float]
    connections_opened: int
    events: int
    deliveries: int
    trace_hash: Optional[str]
    wall_s: float
    setup_s: float
    cpu_s: float
    peak_rss_mib: float
    #: per node, rounds from the write until it held the key (not in as_dict)
    node_round_times: List[float] = field(default_factory=list, repr=False)

    def as_dict(self) -> Dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.repr}


def measure_convergence(
    nodes: int,
    *,
    fanout: Optional[Fanout] = None,
    seed: int = 1,
    network: NetworkModel = NetworkModel(),
    peers: Optional[int] = None,
    interval: float = 0.2,
    warmup_rounds: int = 2,
    max_rounds: int = 100,
    idle_rounds: int = 0,
    origins: int = 0,
    sync_rounds: bool = False,
    implementation: Optional[str] = None,
    trace: bool = True,
) -> ConvergenceReport:
    """A fresh key written on one node (chosen by the seed) after
    ``warmup_rounds``: how many rounds until every node holds it, and the bytes
    spent. ``origins``: every table starts with that many keys from as many
    writer origins (idle digests grow with them); ``idle_rounds``: then, with
    nothing changing, the bytes per node per round."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if fanout is None:
        fanout = Fanout.bounded(3)
    limits = CoreLimits(fanout=fanout, gossip_interval=interval)
    sim = Simulation(
        nodes,
        seed=seed,
        network=network,
        limits=limits,
        peers=peers,
        implementation=implementation,
        trace=trace,
        sync_rounds=sync_rounds,
    )
    if origins:
        version = int(EPOCH * 1000) << 16
        sim.preload((f"w{j}", j, version + j, f"w{j}#1", version + j) for j in range(origins))
    setup = time.perf_counter() - wall0
    # The run makes millions of long-lived objects (cores, connections) and few
    # cycles: the cyclic collector's full passes over them cost more than the
    # gossip at 100,000 nodes. Off for the run (a restarted core's cycle with
    # its clock waits for the next collection).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _measure(
            sim,
            nodes,
            fanout,
            seed,
            network,
            interval,
            warmup_rounds,
            max_rounds,
            idle_rounds,
            origins,
            sync_rounds,
            trace,
            wall0,
            cpu0,
            setup,
        )
    finally:
        if gc_was_enabled:
            gc.enable()


def _measure(
    sim: Simulation,
    nodes: int,
    fanout: Fanout,
    seed: int,
    network: NetworkModel,
    interval: float,
    warmup_rounds: int,
    max_rounds: int,
    idle_rounds: int,
    origins: int,
    sync_rounds: bool,
    trace: bool,
    wall0: float,
    cpu0: float,
    setup: float,
) -> ConvergenceReport:
    sim.run(warmup_rounds * interval)
    writer = sim.rng.randrange(nodes)
    sim.write(writer, "fresh-key", b"fresh-value")
    sim.run(sim.now)
    w = sim.writes[-1]
    sim.watch(w.key, w.value, w.version)
    sent0 = [nd.stats.bytes_sent for nd in sim.nodes]
    t0 = sim.now
    took = sim.run_until_converged(max_rounds * interval)
    window = max(sim.now - t0, interval) / interval  # rounds
    sent = [nd.stats.bytes_sent - b for nd, b in zip(sim.nodes, sent0)]
    times = [(at - t0) / interval for at in sim.watch_times().values()]
    idle = None
    if idle_rounds:
        before = sim.total("bytes_sent")
        sim.run_for(idle_rounds * interval)
        idle = (sim.total("bytes_sent") - before) / nodes / idle_rounds
    return ConvergenceReport(
        nodes=nodes,
        fanout=str(fanout),
        peers=sim.peers_per_node,
        loss=network.loss,
        loss_mode=network.loss_mode,
        seed=seed,
        sync_rounds=sync_rounds,
        origins=origins,
        implementation=sim.implementation,
        converged=took is not None,
        rounds=None if took is None else took / interval,
        node_rounds=percentiles(times),
        node_round_times=sorted(times),
        bytes_per_node_round=sum(sent) / nodes / window,
        node_bytes_per_round=percentiles([b / window for b in sent]),
        idle_bytes_per_node_round=idle,
        connections_opened=sim.total("connections_opened"),
        events=sim.events,
        deliveries=sim.deliveries,
        trace_hash=sim.trace_hash() if trace else None,
        wall_s=time.perf_counter() - wall0,
        setup_s=setup,
        cpu_s=time.process_time() - cpu0,
        peak_rss_mib=peak_rss_mib(),
    )
