"""The sans-IO gossip core: one node's state machine, with no sockets and no clock.

``GossipCore`` owns the table, the hybrid clock, the stamp clock, the peer set,
digests, delta choice, origin retirement and the limits a hostile peer meets.
It never touches a socket, a task or the event loop, and it reads time only
from its inputs: every input method takes ``now``, this node's wall clock in
seconds (``time.time()`` in a real node, virtual time in the simulator).

Inputs: ``tick(now)`` (a gossip round), ``receive(conn, frames, now, room)``
(complete frames from a connection), ``connected(conn, now, peer)`` /
``closed(conn, now)`` (the transport's connection events), ``set(...)`` /
``set_with_version(...)`` (local writes), ``add_peer`` / ``remove_peer``.

Outputs accumulate in ``self.out`` until the driver takes them with
``take()``: a list of ``(kind, target, payload)`` tuples,

* ``(SEND, conn, frames)``: write these encoded frames on connection ``conn``;
* ``(ASK, peer, frame)``: send this ``Digest(reply=True)`` frame to ``peer``
  over this node's own link to it, dialling first if there is none;
* ``(CLOSE, conn, None)``: close that connection;
* ``(EVENT, name, payload)``: something the facade may tell users about
  (``"pong"``: ``(seq, now)``; ``"member"``: a ``MemberEvent``; ``"unpeer"``:
  an address no longer gossiped with, whose link may be forgotten).

Connections are small ints the driver chooses. A connection the driver opened
to a peer is reported with ``connected(conn, now, peer=addr)``; an accepted one
with ``peer=None``. The core answers digests on the connection they came on.

Hot paths stay compiled: a received chunk's batch frames go to the table's
``merge_frame`` one call per frame, and an answer is one ``delta_frames`` call.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Dict, FrozenSet, Iterable, List, Optional, Tuple, Union

from .clock import LOGICAL_BITS, MAX_VERSION, HybridClock
from .fanout import Fanout
from .horizon import T_RESET, Horizons, ResetParts, reset_frames
from .membership import MEMBER_PREFIX, RESERVED_PREFIX, MemberEvent, Membership, MembershipConfig
from .replication import ReplicationLog

log = logging.getLogger("fastgossip")

Address = Tuple[str, int]
Value = Union[int, bytes]
Output = Tuple[int, Any, Any]

SEND, ASK, CLOSE, EVENT = 1, 2, 3, 4

LIFE_SEPARATOR = "#"
#: ephemeral keys are written under the writer's origin with this suffix: they
#: are shown only while that life is a live member (see GossipCore.set)
EPHEMERAL_SUFFIX = ".e"

__all__ = [
    "ASK",
    "CLOSE",
    "EVENT",
    "SEND",
    "EPHEMERAL_SUFFIX",
    "CoreLimits",
    "GossipCore",
    "RateLimitedLog",
    "node_of",
]


def cluster_tag(cluster_id: Optional[str]) -> int:
    """The 64-bit tag of a cluster id that greetings carry (None: the open
    cluster, which also takes peers that send no greeting)."""
    text = "" if cluster_id is None else cluster_id
    digest = hashlib.blake2b(b"fastgossip-cluster:" + text.encode("utf-8"), digest_size=8)
    # the top bit set: a greeting's seq is never a small counter (plain pings)
    return int.from_bytes(digest.digest(), "big") | GREETING_BIT


GREETING_BIT = 1 << 63
#: flipped in the answer's tag, so that a peer that echoes pings (one without
#: membership, the reference) cannot pass for a member of our cluster
ANSWER_BIT = 1 << 62


def node_of(origin: str) -> str:
    """The node id in an origin a node wrote under (``"<node_id>#<life>"``);
    any other origin unchanged."""
    head, sep, _life = origin.rpartition(LIFE_SEPARATOR)
    return head if sep else origin


class RateLimitedLog:
    """At most ``burst`` log lines per cause per ``period`` seconds; the lines
    held back are counted and told in the next line of that cause. The counts
    a user needs are in the node's stats whatever is logged."""

    __slots__ = ("_logger", "_burst", "_period", "_state")

    def __init__(self, logger: logging.Logger, burst: int = 5, period: float = 10.0) -> None:
        self._logger = logger
        self._burst = burst
        self._period = period
        self._state: Dict[str, List[float]] = {}  # cause -> [window start, lines, held]

    def log(self, level: int, cause: str, now: float, msg: str, *args: Any) -> None:
        st = self._state.get(cause)
        if st is None or now - st[0] >= self._period:
            held = int(st[2]) if st is not None else 0
            st = self._state[cause] = [now, 0.0, 0.0]
            if held:
                msg += f" ({held} more like this in the last {self._period:.0f} s not logged)"
        if st[1] >= self._burst:
            st[2] += 1
            return
        st[1] += 1
        self._logger.log(level, msg, *args)


@dataclass(frozen=True)
class CoreLimits:
    """The gossip settings and bounds a core enforces (``NodeConfig`` makes one)."""

    fanout: Optional[Fanout] = None
    gossip_interval: float = 0.2
    max_frame_size: int = 1 << 20
    max_delta_bytes: int = 32 << 20
    max_round_bytes: int = 16 << 20
    max_clock_skew: float = 10.0
    retire_after: Optional[float] = 600.0
    max_connections: Optional[int] = 256
    max_digest_bytes: int = 16 << 20
    #: a full digest at least this often on each connection, deltas between
    full_digest_every: float = 600.0
    #: peers asked in a round by a node with no news since its last round
    #: (None: the fanout); see GossipCore.tick
    quiet_fanout: Optional[int] = 1
    #: with membership, quiet rounds ask these few stable peers in turn, one
    #: replaced about every neighbour_turnover rounds (see GossipCore._quiet_pick)
    quiet_neighbours: int = 3
    neighbour_turnover: int = 500
    #: a tombstone is collected this long after its version's time (PROTOCOL.md,
    #: "Tombstone collection"); a GC horizon is kept until its tombstone is
    #: tombstone_grace + horizon_keep old
    tombstone_grace: float = 300.0
    horizon_keep: float = 3600.0


@dataclass
class _Quiet:
    """An origin that holds no key on this node (see GossipCore.digest_watermarks)."""

    seen: int  # entries of it set or merged so far, when last looked at
    since: float  # when that count last changed
    window: float  # how long it must stay unchanged before the origin is left out
    left_out: bool = False


class _Peer:
    """A peer this node gossips with, and its outbound connection if any."""

    __slots__ = ("addr", "conn", "awaiting_since", "last_used", "quiet_asked", "pulling")

    def __init__(self, addr: Address) -> None:
        self.addr = addr
        self.pulling = False  # asking again at once while its answers bring entries
        # a quiet question (an empty delta) went out: one answer to it is taken
        self.quiet_asked = False
        self.conn: Optional[int] = None
        self.awaiting_since = 0.0  # when our Digest(reply=True) went out unanswered
        self.last_used = 0.0


CATCH_UP_MAX = 30.0  # seconds one question may keep a node catching up (see _catching_up)
IN_FLIGHT_KEEP = 60.0  # seconds a record of deltas in flight is trusted (see _in_flight)
FIRST_CAP = 128 << 10  # bytes: the first delta on a connection (see _delta_cap)
MID_FRAME_WAIT = 5.0  # seconds a catch-up waits on a paused frame or a queued answer
CONTINUE_BYTES = 32 << 10  # an answer at least this large that was cut is continued at once


def _skews_ahead(now: float, max_clock_skew: float, skews: int) -> int:
    """The version at the start of the millisecond ``skews`` times
    ``max_clock_skew`` ahead of ``now``."""
    return (int(now * 1000) + skews * int(max_clock_skew * 1000)) << LOGICAL_BITS


def horizon(now: float, max_clock_skew: float) -> Tuple[int, int]:
    """(max stamp, max version) an entry may carry to be accepted at ``now``:
    one ``max_clock_skew`` ahead for stamps, two for versions (see PROTOCOL.md).
    Durable mode's recovery replays a peer's batches with the same bounds."""
    return (
        min(MAX_VERSION, _skews_ahead(now, max_clock_skew, 1) | 0xFFFF),
        min(MAX_VERSION, _skews_ahead(now, max_clock_skew, 2) | 0xFFFF),
    )


class _Refused(Exception):
    """The connection was refused mid-input (counted and logged already)."""


class _Conn:
    """What the core knows of one open connection."""

    __slots__ = (
        "peer",
        "answered_at",
        "parts",
        "parts_bytes",
        "parts_delta",
        "sent_gen",
        "full_at",
        "peer_wm",
        "outbound",
        "greeted",
        "node",
        "reset_gen",
        "reset",
        "identities",
        "sent",
        "progress_at",
        "cap",
        "capped_at",
        "merged",
        "batch_bytes",
        "mid_frame",
        "continued",
    )

    def __init__(
        self,
        peer: Optional[Address],
        outbound: bool = False,
        identities: Optional[FrozenSet[str]] = None,
    ) -> None:
        self.peer = peer  # the peer for a connection this node opened, else None
        self.outbound = outbound or peer is not None
        # the node ids the peer may speak as (its TLS certificate's); None: any
        self.identities = identities
        # membership: whether the greeting (a Ping or Pong carrying the cluster
        # tag) was exchanged, and the node id it named
        self.greeted = False
        self.node = ""
        self.answered_at = -1e18  # when a delta last went out on it (inbound throttle)
        self.parts: Optional[Dict[str, int]] = None  # a split digest being received
        self.parts_bytes = 0
        self.parts_delta = False
        # delta digests (PROTOCOL.md): the generation of our watermarks this
        # connection was last sent (-1: none, the next digest is full), when the
        # last full one went, and the peer's watermarks as its digests told them
        self.sent_gen = -1
        self.full_at = 0.0
        self.peer_wm: Optional[Dict[str, int]] = None
        # the horizons' generation a Reset was last sent at on it, and a Reset
        # being received on it
        self.reset_gen = -1
        self.reset: Optional[ResetParts] = None
        # in flight: per origin, the stamp up to which the deltas written on
        # this connection bring the peer once they arrive (see _in_flight),
        # and when the last was written; when bytes last arrived on it
        self.sent: Dict[str, List[Any]] = {}
        self.progress_at = 0.0
        # the most one delta on it may carry (see _delta_cap), and when the
        # last delta was cut at it; entries merged and batch bytes received
        # since our last question
        self.cap = FIRST_CAP
        self.capped_at = 0.0
        self.merged = 0
        self.batch_bytes = 0
        self.mid_frame = False
        # our last answer on it was large enough for the asker to continue
        self.continued = False


class GossipCore:
    """One node's gossip state machine (see the module docstring)."""

    def __init__(
        self,
        node_id: str,
        origin: str,
        limits: CoreLimits,
        stats: Any,
        *,
        codec: ModuleType,
        table: ModuleType,
        sampler: ModuleType,
        seed: Optional[int] = None,
        replication: Optional[ReplicationLog] = None,
        state: Any = None,
    ) -> None:
        self.node_id = node_id
        self.origin = origin
        self.limits = limits
        self.stats = stats
        self._codec = codec
        self._table = table
        self._now = 0.0
        self.state = state if state is not None else table.GossipState()
        self.state.own_origin = origin
        self.state.refuse_stale = True  # see GossipState.refuse_stale
        self.rng = sampler.XorShift64(seed)
        self.clock = HybridClock(self._wall_ms)
        # Stamps are this origin's own reading of its wall clock: they never
        # follow a peer (versions do), so a forged version cannot move them.
        self._last_stamp = 0
        self._quiet: Dict[str, _Quiet] = {}
        self._digest_cache: Dict[bool, Tuple[Tuple[int, int, int], List[bytes]]] = {}
        self._digest_key = (-1, -1, -1)
        self._retire_check_at = -1e18
        self._retire_generation = 0
        # the digest's watermarks now, their generation (it grows when they
        # change), and the changes of the last generations, for delta digests
        self._wm: Dict[str, int] = {}
        self._wm_gen = 0
        self._wm_log: List[Tuple[int, Dict[str, int]]] = []
        self._empty_delta: Dict[bool, List[bytes]] = {}
        self._peers: Dict[Address, _Peer] = {}
        self._conns: Dict[int, _Conn] = {}
        self._linked: Dict[Address, _Peer] = {}  # peers with a connection of ours
        self._peer_list: Optional[List[_Peer]] = None  # _peers' values, rebuilt on change
        self._stale_exempt: FrozenSet[str] = frozenset()
        self._changes_at_tick = -1
        self.replication_log = replication if replication is not None else ReplicationLog()
        self.out: List[Output] = []
        self._round_started = -1e18
        self._round_bytes = 0
        # the highest forged stamp of our origin seen (a table kept across a
        # restart remembers the previous life's: not a new forgery)
        self._forged_stamp = self.state.own_refused_stamp
        # durable mode (see durable.py): what this core applies, for the node
        # to write down; None without a data directory
        self.journal: Optional[Any] = None
        self._restamped_at = -1e18
        self._restamp_owed = False
        self.logs = RateLimitedLog(log)
        self._batch_type = codec.T_GOSSIP_BATCH
        self._digest_type = codec.Digest
        # writes and merges that were news (not membership records): a round
        # with none since the last asks only quiet_fanout peers
        self._news = 0
        self.membership: Optional[Membership] = None
        self._static: set = set()  # peers added by add_peer (kept whatever membership says)
        self._seeds: Tuple[Address, ...] = ()
        # members to probe next round (their link closed by their end, or
        # suspected): a dict, so that the order is the same in every process
        self._verify: Dict[Address, None] = {}
        self._neighbours: List[_Peer] = []  # see _quiet_pick
        self._turn = 0
        self._tag = cluster_tag(None)
        self._cluster_id: Optional[str] = None
        self._hello: List[bytes] = []
        self._answer: List[bytes] = []
        self.reserved_keys: set = set()  # the cluster's own keys in the table
        # key prefixes users watch (with how many watchers each): the table
        # captures what it applies under them and under RESERVED_PREFIX
        self._watched: Dict[str, int] = {}
        self._capturing = False
        self.horizons = Horizons()  # see horizon.py
        self._reset_bytes = 0  # of the Resets being received, on all connections
        # ephemeral keys: per member node id, the origin of its live life (alive
        # or suspect), and since when each ephemeral origin is no longer live
        self._eph_live: Dict[str, str] = {}
        self._eph_gone: Dict[str, float] = {}
        self._eph_dropped: set = set()  # ephemeral origins whose keys we dropped
        self._reconnect_at = 0.0  # see _reconnect
        self._reconnecting: List[Address] = []
        # connections receiving a Reset, and since when (see _on_reset)
        self._resetting: Dict[int, float] = {}
        self._ticked_at = 0.0  # the last round
        # per peer address: the exchanges' round-trip time, smoothed (seconds)
        self.rtt: Dict[Address, float] = {}
        self._progress_at = 0.0  # when entries last arrived on any connection

    # -- time ------------------------------------------------------------------
    def _wall_ms(self) -> int:
        return int(self._now * 1000)

    def _advance(self, now: float) -> None:
        if now > self._now:
            self._now = now

    def _skews_ahead(self, now: float, skews: int) -> int:
        return _skews_ahead(now, self.limits.max_clock_skew, skews)

    def horizon(self, now: float) -> Tuple[int, int]:
        """(max stamp, max version) an entry may carry to be accepted at ``now``
        (see ``horizon``)."""
        return horizon(now, self.limits.max_clock_skew)

    def _next_stamp(self) -> int:
        stamp = max(self._wall_ms() << LOGICAL_BITS, self._last_stamp + 1)
        self._last_stamp = stamp
        return stamp

    def resume(self, version_floor: int, stamp_floor: int) -> None:
        """Durable mode, after recovery: this life's clocks restart past every
        version and stamp its earlier run issued or saw, so its first writes
        never lose to, nor reuse the stamps of, writes made before a crash."""
        self.clock.observe(version_floor)
        own = self.state.watermarks().get(self.origin, 0)
        self._last_stamp = max(self._last_stamp, stamp_floor, own)

    @property
    def last_stamp(self) -> int:
        return self._last_stamp

    def _observe(self, version: int, now: float) -> None:
        """Move the clock toward ``version``, at most one skew ahead of wall time."""
        limit = self._skews_ahead(now, 1)
        self.clock.observe(version if version <= limit else limit)

    # -- outputs ---------------------------------------------------------------
    def take(self) -> List[Output]:
        """The outputs since the last call (and forget them)."""
        out = self.out
        if out:
            self.out = []
        return out

    # -- peers -----------------------------------------------------------------
    @property
    def peers(self) -> List[Address]:
        """The peers gossiped with (a dead member being tried left out)."""
        return [a for a in self._peers if a not in self._reconnecting]

    def has_peer(self, addr: Address) -> bool:
        return addr in self._peers

    def awaiting(self, addr: Address) -> bool:
        """Whether our last question to ``addr`` is still unanswered."""
        p = self._peers.get(addr)
        return p is not None and bool(p.awaiting_since)

    def add_peer(self, addr: Address) -> bool:
        """Gossip with ``addr`` whatever membership says (a static peer)."""
        self._static.add(addr)
        return self._add_peer(addr)

    def _add_peer(self, addr: Address) -> bool:
        if addr in self._peers:
            return False
        self._peers[addr] = _Peer(addr)
        self._peer_list = None
        return True

    def remove_peer(self, addr: Address) -> bool:
        self._static.discard(addr)
        return self._drop_peer(addr)

    def _drop_peer(self, addr: Address) -> bool:
        """Stop gossiping with ``addr`` and close our link to it."""
        self.rtt.pop(addr, None)
        peer = self._peers.pop(addr, None)
        if peer is None:
            return False
        self._peer_list = None
        self._linked.pop(addr, None)
        if peer.conn is not None:
            self.out.append((CLOSE, peer.conn, None))
        return True

    def connected(
        self,
        conn: int,
        now: float,
        peer: Optional[Address] = None,
        outbound: bool = False,
        identities: Optional[FrozenSet[str]] = None,
    ) -> None:
        """A connection opened: by this node to ``peer``, or accepted (None);
        ``outbound`` for one this node opened that is no peer's link (a ping's);
        ``identities``: the only node ids the peer may name itself (mutual TLS)."""
        self._advance(now)
        c = self._conns[conn] = _Conn(peer, outbound, identities)
        if self.membership is not None and c.outbound:
            self.out.append((SEND, conn, self._hello))
        if peer is None:
            return
        p = self._peers.get(peer)
        if p is None:  # removed while dialling
            self.out.append((CLOSE, conn, None))
            return
        p.conn = conn
        self._linked[peer] = p
        p.last_used = now
        # a new connection starts with an exchange, so a fresh peer catches up
        # now (unless this node is receiving a slow answer: see _catching_up;
        # a dead member being retried is asked all the same, or the try is lost)
        if peer in self._reconnecting or self._catching_up(now) is None:
            self._ask(p, self.digest_for(conn, True, now), now)

    def closed(self, conn: int, now: float, by_peer: bool = False) -> None:
        """A connection closed; ``by_peer`` when its far end closed or reset it."""
        c = self._conns.pop(conn, None)
        if c is not None and c.reset is not None:
            self._reset_bytes -= c.reset.size  # (a Reset it left unfinished)
            self._resetting.pop(conn, None)
        if c is not None and c.peer is not None:
            p = self._peers.get(c.peer)
            if p is not None and p.conn == conn:
                p.conn = None
                self._linked.pop(c.peer, None)
                p.awaiting_since = 0.0
                p.pulling = False
                m = self.membership
                if by_peer and m is not None and m.wants_probe(c.peer):
                    self._verify[c.peer] = None  # is it still there? redialled next round

    def dial_failed(self, addr: Address, now: float, refused: bool) -> None:
        """A dial to ``addr`` failed: ``refused`` when nothing listens there (a
        reset or ECONNREFUSED), else a timeout or another error."""
        self._advance(now)
        if self.membership is not None:
            self.membership.dial_failed(addr, refused, now)

    # -- membership --------------------------------------------------------------
    def enable_membership(self, config: MembershipConfig, now: float) -> Membership:
        """Publish this node's record and judge the others' (membership.py);
        ``config.seeds`` are dialled until some member is known."""
        self._advance(now)
        self._cluster_id = config.cluster_id
        self._tag = cluster_tag(config.cluster_id)
        codec = self._codec
        self._hello = [codec.encode(codec.Ping(self.node_id, self._tag))]
        self._answer = [codec.encode(codec.Pong(self.node_id, self._tag ^ ANSWER_BIT))]
        self.membership = m = Membership(self, config, self._member_event)
        self._set_capture()
        self._show_ephemeral(now)
        self._seeds = tuple(a for a in config.seeds if a != config.addr)
        for addr in self._seeds:
            self._add_peer(addr)
        m.beat(now, news=True)
        return m

    # -- watching ----------------------------------------------------------------
    def watch(self, prefix: str) -> None:
        """Report changes to keys starting with ``prefix`` as ``(EVENT,
        "changes", [Entry, ...])`` outputs, in the order they are applied
        (the table filters: no object is made for other keys)."""
        if not isinstance(prefix, str):
            raise TypeError(f"a prefix is a str, not {type(prefix).__name__}")
        if prefix.startswith(RESERVED_PREFIX):
            raise ValueError(f"keys starting with {RESERVED_PREFIX!r} are the cluster's own")
        prefix.encode("utf-8")  # (UnicodeEncodeError, a ValueError, before anything is counted)
        self._watched[prefix] = self._watched.get(prefix, 0) + 1
        self._set_capture()

    def unwatch(self, prefix: str) -> None:
        n = self._watched.get(prefix, 0) - 1
        if n > 0:
            self._watched[prefix] = n
        else:
            self._watched.pop(prefix, None)
        self._set_capture()

    def _set_capture(self) -> None:
        prefixes = list(self._watched)
        if self.membership is not None:
            prefixes.append(RESERVED_PREFIX)
        self.state.set_capture(prefixes)
        self._capturing = bool(prefixes)

    def _captured(self, now: float, apply_reserved: bool = True) -> int:
        """Hand what the table captured to membership and watchers; returns
        what to add to the news count for it: membership's entries (counted
        as merged) are news only when membership says so (not heartbeats)."""
        captured = self.state.take_captured()
        if not captured:
            return 0
        reserved = [e for e in captured if e.key.startswith(RESERVED_PREFIX)]
        if len(reserved) < len(captured):
            self.out.append(
                (EVENT, "changes", [e for e in captured if not e.key.startswith(RESERVED_PREFIX)])
            )
        if not reserved:
            return 0
        gone = [e for e in reserved if e.value is None]  # (dropped by a reset)
        if gone:
            self.reserved_keys.difference_update(e.key for e in gone)
            reserved = [e for e in reserved if e.value is not None]
            if not reserved:
                return -len(gone)
        self.reserved_keys.update(e.key for e in reserved)
        if not apply_reserved:
            return 0
        m = self.membership
        news = m.applied(reserved, now) if m is not None else 0
        return news - len(reserved)

    def _member_event(self, ev: MemberEvent) -> None:
        self.out.append((EVENT, "member", ev))
        m = ev.member
        was = self._eph_live.get(m.node_id)
        if m.status in ("alive", "suspect") and ev.kind != "forgotten":
            self._eph_live[m.node_id] = m.origin
        else:
            self._eph_live.pop(m.node_id, None)
        now_live = self._eph_live.get(m.node_id)
        if was != now_live:
            state = self.state
            if was is not None:
                self._eph_gone.setdefault(was + EPHEMERAL_SUFFIX, ev.at)
                state.set_origin_live(was + EPHEMERAL_SUFFIX, False)
            if now_live is not None:
                eph = now_live + EPHEMERAL_SUFFIX
                self._eph_gone.pop(eph, None)
                if eph in self._eph_dropped:
                    # live again after we dropped its keys: ask for them anew
                    self._eph_dropped.discard(eph)
                    state.reset_watermark(eph)
                state.set_origin_live(eph, True)
            if self._capturing:
                self._captured(ev.at)

    def _show_ephemeral(self, now: float) -> None:
        """Tell the table which ephemeral origins are live (all at once: when
        membership starts, and when this node leaves: its own go with it)."""
        self.state.set_ephemeral_live(self._live_ephemeral())
        if self._capturing:
            self._captured(now)

    def _set_reserved(self, key: str, value: bytes, now: float, news: bool = False) -> None:
        """A write of the cluster's own (a member record, a statement); news
        (spread with the whole fanout) when ``news``."""
        self._advance(now)
        try:
            version, stamp = self.clock.now(), self._next_stamp()
            self.state.set(key, value, version, self.origin, stamp)
            if self.journal is not None:
                self.journal.entry(key, value, version, self.origin, stamp, 0)
        except ValueError as exc:  # TableFull: max_keys / max_table_bytes reached
            self.logs.log(
                logging.ERROR,
                "member-record",
                now,
                "%s: cannot write %r: %s",
                self.node_id,
                key,
                exc,
            )
            return
        if self._watched:
            self._captured(now, apply_reserved=False)  # (watchers'; ours: nothing to learn)
        else:
            self.state.take_captured()
        self.reserved_keys.add(key)
        if news:
            self._news += 1

    def _member_peer(self, addr: Address, on: bool) -> None:
        """Membership says whether ``addr`` (a member's) is gossiped with."""
        if on:
            self._add_peer(addr)
            return
        self._verify.pop(addr, None)
        if addr in self._static or (addr in self._seeds and not self._joined()):
            return
        if self._drop_peer(addr):
            self.out.append((EVENT, "unpeer", addr))

    def _joined(self) -> bool:
        m = self.membership
        return m is not None and m.alive_count() > 0

    def leave(self, now: float) -> List[Address]:
        """Announce ``left`` and push it to every live member now: the record on
        our links, an exchange to the others; returns those (answers awaited)."""
        self._advance(now)
        m = self.membership
        if m is None:
            return []
        m.leave(now)
        self._show_ephemeral(now)  # our ephemeral keys go with us
        codec = self._codec
        record = self.state.get_entry(MEMBER_PREFIX + self.node_id)
        push = [codec.encode(codec.GossipBatch(self.node_id, [record]))] if record else []
        asked: List[Address] = []
        unlinked = []
        for member in m.members.values():
            if member.status in ("alive", "suspect"):
                p = self._peers.get(member.addr)
                if p is None:
                    continue
                if p.conn is None:
                    unlinked.append(p)
                elif push:
                    # the record itself, on our link: merged on arrival (an
                    # exchange could be throttled by a peer that just answered)
                    self.out.append((SEND, p.conn, push))
        # members without a link are dialled, at most 32 (the leave is news:
        # the next rounds spread it to the rest)
        for p in self.rng.sample(unlinked, min(32, len(unlinked))):
            asked.append(p.addr)
            p.awaiting_since = now  # asked once connected (see connected)
            self.out.append((ASK, p.addr, None))
        return asked

    def _greet(self, c: _Conn, conn: int, frame: bytes, now: float) -> bool:
        """The first frame on a connection, with membership on: the greeting
        (an accepted connection's first frame is a Ping naming the cluster tag,
        answered by a Pong naming ours). True when ``frame`` was the greeting
        and is consumed; a peer of another cluster is refused and closed.
        Peers that send no greeting are taken only in the open cluster (no
        cluster_id), as the reference's peers are."""
        codec = self._codec
        kind = frame[5]
        expected = codec.T_PONG if c.outbound else codec.T_PING
        msg = codec.decode(frame, self.limits.max_frame_size) if kind == expected else None
        if msg is None or not msg.seq & GREETING_BIT:
            if self._cluster_id is None:
                c.greeted = True
                return False
            self._refuse_cluster(c, conn, now, "sent no greeting")
            return True
        expected_tag = self._tag ^ ANSWER_BIT if c.outbound else self._tag
        if c.outbound and msg.seq == self._tag and self._cluster_id is None:
            c.greeted = True  # an echo: a peer without membership, taken in the open cluster
            return True
        if msg.seq != expected_tag:
            if not c.outbound:  # our answer first, so that the peer can tell why
                self.out.append((SEND, conn, self._answer))
            why = (
                "echoed our greeting (no membership)"
                if msg.seq == self._tag
                else f"is in another cluster (tag {msg.seq:016x})"
            )
            self._refuse_cluster(c, conn, now, why)
            return True
        if c.identities is not None and msg.sender_id not in c.identities:
            self._refuse_identity(c, conn, msg.sender_id, now)
            return True
        if msg.sender_id == self.node_id:
            # our own greeting: a connection to ourselves (our own address
            # among the seeds, or one reflected back to us on the path)
            self._refuse_cluster(c, conn, now, "is this node itself")
            return True
        c.greeted = True
        c.node = msg.sender_id
        if not c.outbound:
            self.out.append((SEND, conn, self._answer))
        return True

    def _senders_named(self, c: _Conn, conn: int, frames: List[bytes], now: float) -> bool:
        """Mutual TLS: batch and Reset frames, which are not decoded here, name
        their sender first (a str at offset 6): it must be one the peer's
        certificate names, else the connection is refused (False). Decoded
        messages are checked in _handle, the greeting in _greet."""
        for frame in frames:
            if frame[5] == self._batch_type or frame[5] == T_RESET:
                n = int.from_bytes(frame[6:8], "big")
                sender = bytes(frame[8 : 8 + n]).decode("utf-8", "replace")
                if sender not in (c.identities or ()):
                    self._refuse_identity(c, conn, sender, now)
                    return False
        return True

    def _refuse_identity(self, c: _Conn, conn: int, sender: str, now: float) -> None:
        """A TLS peer named itself as a node its certificate does not name."""
        self.stats.auth_failures += 1
        self._refuse(
            c,
            conn,
            now,
            "auth",
            "%s: refusing a connection: the peer speaks as %r but its certificate "
            "names %s (stats.auth_failures)",
            self.node_id,
            sender,
            sorted(c.identities or ()),
        )

    def _refuse(self, c: _Conn, conn: int, now: float, cause: str, msg: str, *args: Any) -> None:
        """Log (at a bounded rate), close and forget a connection: nothing more
        is read from it."""
        self.logs.log(logging.WARNING, cause, now, msg, *args)
        self.out.append((CLOSE, conn, None))
        c.greeted = False
        self.closed(conn, now)

    def _refuse_cluster(self, c: _Conn, conn: int, now: float, why: str) -> None:
        self.stats.cluster_mismatch += 1
        self._refuse(
            c,
            conn,
            now,
            "cluster",
            "%s: refusing a connection (%s): the peer %s; cluster_id is %r "
            "(stats.cluster_mismatch)",
            self.node_id,
            "outbound" if c.outbound else "inbound",
            why,
            self._cluster_id,
        )

    # -- local writes ----------------------------------------------------------
    def check_storable(
        self, key: str, value: Optional[Value], origin: str, expires: int = 0
    ) -> None:
        """Refuse an entry that no frame could carry when relayed by any node."""
        if not isinstance(key, str):
            return  # the table raises the TypeError
        if key.startswith(RESERVED_PREFIX):
            raise ValueError(f"keys starting with {RESERVED_PREFIX!r} are reserved for the cluster")
        if value is not None and not isinstance(value, (int, bytes, bytearray)):
            return  # the table raises the TypeError (None: a tombstone, sized too)
        # a one-entry GossipBatch from the longest sender id, prefix included:
        # what relaying it takes from any node (PROTOCOL.md, "Limits")
        size = self._table.relay_size(key, value, origin, expires)
        if size > self.limits.max_frame_size:
            raise ValueError(
                f"entry of {size} bytes (key and value) does not fit one frame "
                f"(max_frame_size {self.limits.max_frame_size})"
            )

    def set(
        self,
        key: str,
        value: Value,
        now: float,
        ephemeral: bool = False,
        ttl: Optional[float] = None,
    ) -> int:
        """A local write, versioned by the hybrid clock; returns the version.

        An ``ephemeral`` key lives as long as this life of the node: it is
        written under the origin ``origin + EPHEMERAL_SUFFIX``, whose entries
        every node shows only while it holds this life's member alive or
        suspect, and collects ``tombstone_grace`` after that (needs membership).
        A key with a ``ttl`` (seconds) carries its expiry, ``now + ttl`` as unix
        milliseconds: every node stops showing it once its own clock passes
        that (see ``expire``), and collects it ``tombstone_grace`` later."""
        if value is None:
            raise TypeError("value must be int or bytes (delete() deletes a key)")
        expires = 0
        if ttl is not None:
            if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl < 1e12:
                raise ValueError(f"ttl must be a number of seconds > 0, got {ttl!r}")
            expires = int((now + ttl) * 1000) + 1  # (rounded up: never before the ttl)
        origin = None
        if ephemeral:
            if self.membership is None:
                raise ValueError("ephemeral keys need membership (NodeConfig(membership=True))")
            origin = self.origin + EPHEMERAL_SUFFIX
        return self._write(key, value, now, origin, expires)

    def expire(self, now: float) -> int:
        """Judge expiries at ``now``: keys whose ttl has passed stop being shown
        (watchers see ``expire``); one table pass, and only when the earliest
        pending expiry has passed. Runs every round (reads judge by the clock
        between passes: GossipState.now_ms)."""
        n: int = self.state.expire(int(now * 1000))
        if n:
            self.stats.entries_expired += n
            self._news += 1
            if self._capturing:
                self._captured(now)
        return n

    def delete(self, key: str, now: float) -> int:
        """Delete ``key``: a tombstone, written as any write is (versioned by
        the hybrid clock, LWW, anti-entropy); returns its version. Deleting a
        key this node does not hold still writes the tombstone: a write of it
        may be on its way."""
        return self._write(key, None, now)

    def _write(
        self,
        key: str,
        value: Optional[Value],
        now: float,
        origin: Optional[str] = None,
        expires: int = 0,
    ) -> int:
        origin = origin or self.origin
        self._advance(now)
        self.check_storable(key, value, origin, expires)
        version, stamp = self.clock.now(), self._next_stamp()
        self.state.set(key, value, version, origin, stamp, expires)
        if self.journal is not None:
            self.journal.entry(key, value, version, origin, stamp, expires)
        self._news += 1
        if self._capturing:
            self._captured(now)
        return version

    def set_with_version(self, key: str, value: Optional[Value], version: int, now: float) -> bool:
        """A local write with the caller's version; True when it changed the table.

        A version more than ``2 * max_clock_skew`` ahead of this node's wall
        clock is refused (ValueError): every peer would refuse it, and such a
        version would make the key unwritable by honest clocks."""
        self._advance(now)
        self.check_storable(key, value, self.origin)
        if not isinstance(version, int) or isinstance(version, bool):
            raise TypeError(f"version must be an int, not {type(version).__name__}")
        _, max_version = self.horizon(now)
        if version > max_version:
            raise ValueError(
                f"version {version} is more than {2 * self.limits.max_clock_skew:g} s "
                "ahead of this node's clock (see max_clock_skew)"
            )
        stamp = self._next_stamp()
        changed = self.state.set(key, value, version, self.origin, stamp)
        if changed and self.journal is not None:
            self.journal.entry(key, value, version, self.origin, stamp, 0)
        self._observe(version, now)
        self._news += 1
        if self._capturing:
            self._captured(now)
        return bool(changed)

    # -- rounds ----------------------------------------------------------------
    def tick(self, now: float) -> int:
        """A gossip round: ask the peers the fanout picks; returns how many."""
        self._advance(now)
        self.stats.rounds += 1
        self._repair_forgery(now)
        self.expire(now)
        if self._resetting:
            # a Reset is sent in one go: one that made no progress for a few
            # rounds holds room others need (its connection is closed)
            late = max(2.0, 8 * self.limits.gossip_interval)
            for conn, since in list(self._resetting.items()):
                if now - since > late:
                    self.out.append((CLOSE, conn, None))
                    self.closed(conn, now)
        if now >= self.horizons.next_sweep:
            self._collect(now)
        m = self.membership
        pulling = self._catching_up(now)
        if m is not None:
            if pulling is not None and self._ticked_at:
                m.behind(min(now - self._ticked_at, 4 * self.limits.gossip_interval))
            self._membership_round(m, now)
        self._ticked_at = now
        peers = self._peer_list
        if peers is None:
            # (a dead member being tried is asked once, not picked by rounds)
            tries = self._reconnecting
            peers = self._peer_list = [p for p in self._peers.values() if p.addr not in tries]
        if not peers:
            return 0
        fanout = self.limits.fanout or Fanout.default_for(len(peers) + 1)
        k = fanout.resolve(len(peers))
        # A node that learned or wrote nothing since its last round has no news
        # to push: it asks quiet_fanout peers (it still pulls, and answers);
        # one that has news asks the whole fanout, so news spreads as fast
        changes = self._news
        quiet_fanout = self.limits.quiet_fanout
        quiet = changes == self._changes_at_tick and quiet_fanout is not None
        if quiet_fanout is not None and quiet:
            k = min(k, quiet_fanout)
        self._changes_at_tick = changes
        if self.limits.max_connections is not None:
            k = min(k, self.limits.max_connections)  # don't evict this round's own links
        if quiet and self.membership is not None and len(peers) > k:
            chosen = self._quiet_pick(peers, k)
        else:
            chosen = self.rng.sample(peers, k)
        cap = self.limits.max_connections
        if cap is not None and cap < len(peers):
            chosen = self._within_cap(chosen, peers, cap)
        patience = max(1.0, 4 * self.limits.gossip_interval)
        for p in chosen:
            if pulling is not None and p is not pulling:
                self.stats.exchanges_skipped += 1  # (see _catching_up)
                continue
            if p.conn is not None and p.awaiting_since:
                # the last question's answer is late when nothing of it came
                # for the patience (bytes still arriving on a slow link count)
                c = self._conns.get(p.conn)
                heard = max(p.awaiting_since, c.progress_at if c is not None else 0.0)
                if p is pulling or now - heard < patience:
                    # still arriving: asking again would make the peer resend
                    # the same entries
                    self.stats.exchanges_skipped += 1
                    continue
                # unanswered (throttled, or the answer was lost): the delta it
                # carried must not be lost with it, so the next question is full
                if c is not None:
                    c.sent_gen = -1
                p.awaiting_since = 0.0
                p.pulling = False
            if p.conn is None:
                self.out.append((ASK, p.addr, None))  # dial; we ask once connected
                continue
            frames = self.digest_for(p.conn, True, now)
            # an empty delta (nothing changed since the last exchange with this
            # peer) is answered only by a peer that has something: no reply is
            # awaited, so a quiet cluster exchanges one small frame per pick
            self._ask(p, frames, now, await_reply=frames is not self._empty_delta.get(True))
        return len(chosen)

    def _collect(self, now: float) -> None:
        """Tombstone GC: collect the tombstones older than ``tombstone_grace``
        and raise the horizons of their origins; forget old horizons. Each
        pass is one table scan, run every eighth of the grace (at least a
        round apart): a tombstone lives between one and 9/8 graces."""
        h = self.horizons
        grace = self.limits.tombstone_grace
        h.next_sweep = now + max(self.limits.gossip_interval, grace / 8)
        if h.stamps:
            h.forget_older(now, self._horizon_life())
        held = self.state.tombstones
        cutoff = max(0, int((now - grace) * 1000))
        # tombstones a grace after their version's time, expired keys a grace
        # after their expiry (a peer's older value must lose to them meanwhile)
        found = self.state.collect(cutoff << LOGICAL_BITS, cutoff)
        if found and self.journal is not None:
            self.journal.reshape()  # (a replay would bring the collected back)
        if found:
            self.stats.tombstones_collected += held - self.state.tombstones
            self._raise_horizons(found, now)
        # the ephemeral keys of lives not live here for a grace are removed:
        # lives seen to end, and those never seen live (a node that joined
        # after a restart holds the previous life's keys, hidden). A local
        # decision (each node's membership view): no horizon, no Reset covers
        # them, and they are asked for anew if the life shows up live.
        if self.membership is not None:
            live = self._live_ephemeral()
            for origin, (_wm, held, _seen) in self.state.origin_stats().items():
                if held and origin.endswith(EPHEMERAL_SUFFIX) and origin not in live:
                    self._eph_gone.setdefault(origin, now)
        gone = [o for o, t in self._eph_gone.items() if now - t >= grace]
        if gone:
            for origin in gone:
                del self._eph_gone[origin]
            self._eph_dropped.update(self.state.drop_origins(gone))
            if self.journal is not None:
                self.journal.reshape()

    def _live_ephemeral(self) -> FrozenSet[str]:
        """The ephemeral origins shown now: ours, and those of the lives of
        members alive or suspect here."""
        live = {o + EPHEMERAL_SUFFIX for o in self._eph_live.values()}
        if self.membership is None or not self.membership.left:
            live.add(self.origin + EPHEMERAL_SUFFIX)
        return frozenset(live)

    def _horizon_life(self) -> float:
        """How long after its tombstone was written a horizon is kept."""
        return self.limits.tombstone_grace + self.limits.horizon_keep

    def _raise_horizons(self, found: Dict[str, int], now: float) -> None:
        if self.horizons.raise_to(found, now, self._horizon_life()) and self._stale_exempt:
            # no stale exemption while horizons are held (see _retire): at once
            self._stale_exempt = frozenset()
            self.state.set_stale_exempt(())

    def _complete(self) -> bool:
        """Whether this node's table holds, of every origin, every entry up to
        its watermark (or one that beat it): not when it ever refused entries
        for its bounds (table_full, too_large) or as future, because a later
        entry of the same origin moved the watermark past them. Only such a
        table may tell a peer to drop what it lacks (send a Reset), or trust a
        Reset to raise its watermarks."""
        r = self.state.refusals()
        return not (r["table_full"] or r["too_large"] or r["future"])

    def _reset_frames(self) -> List[bytes]:
        """A Reset (horizon.py): our table's watermarks (every origin, the
        retired included) and horizons, and the hashes of the keys we hold."""
        wm = self.state.watermarks()
        hz = self.horizons.stamps
        # (ephemeral origins are left out: each node drops them by its own view)
        triples = [
            (o, wm.get(o, 0), hz.get(o, 0))
            for o in sorted(wm.keys() | hz.keys())
            if not o.endswith(EPHEMERAL_SUFFIX)
        ]
        return reset_frames(
            self.node_id, triples, self.state.key_hashes(), self.limits.max_frame_size
        )

    def _on_reset(self, frame: bytes, conn: int, now: float) -> None:
        """A part of a Reset: after the last, drop what the sender has seen but
        holds nothing for, raise our watermarks to its and adopt its horizons
        (horizon.py). A Reset is taken only as part of an answer to us (on our
        link while our question is out, or on a connection we just answered);
        ValueError (the peer is dropped) for any other, and for one over its
        bounds, naming a future stamp, or our own origin past our clock."""
        c = self._conns.get(conn)
        if c is None:
            return
        if c.peer is not None:
            p = self._peers.get(c.peer)
            solicited = p is not None and p.conn == conn and bool(p.awaiting_since or p.quiet_asked)
        else:
            solicited = now - c.answered_at <= max(1.0, 4 * self.limits.gossip_interval)
        if c.reset is None:
            if not solicited:
                raise ValueError("a Reset that answers nothing of ours")
            room = self.limits.max_delta_bytes - self._reset_bytes
            if room <= 0:
                raise ValueError("too many Resets at once")
            c.reset = ResetParts(room, self._max_peer_origins())
        before = c.reset.size
        self._resetting[conn] = now  # (a part arrived: it progresses)
        try:
            done = c.reset.add(frame)
        finally:
            self._reset_bytes += c.reset.size - before
        if not done:
            return
        parts, c.reset = c.reset, None
        self._resetting.pop(conn, None)
        self._reset_bytes -= parts.size
        max_stamp, _ = self.horizon(now)
        watermarks: Dict[str, int] = {}
        found: Dict[str, int] = {}
        for origin, (watermark, stamp) in parts.origins.items():
            if origin.endswith(EPHEMERAL_SUFFIX):
                continue  # (not a Reset's business: see _reset_frames)
            if watermark > max_stamp:
                raise ValueError(f"a Reset names origin {origin!r} at a future stamp")
            if stamp > watermark:
                raise ValueError(f"a Reset's horizon for {origin!r} is above its watermark")
            if origin == self.origin and watermark > self._last_stamp:
                raise ValueError("a Reset names our own origin past our clock")
            watermarks[origin] = watermark
            if stamp:
                found[origin] = stamp
        dropped = self.state.drop_unheld(b"".join(parts.hashes), watermarks)
        if self.journal is not None:
            self.journal.reshape()  # (a replay would bring the dropped back)
        watermarks.pop(self.origin, None)  # our own: our stamp clock says
        if self._complete():
            # (a table that refused entries keeps asking for them instead)
            self.state.raise_watermarks(watermarks)
        self._raise_horizons(found, now)
        self.stats.resets_received += 1
        self.stats.reset_drops += dropped
        if dropped:
            self._news += 1
            self.logs.log(
                logging.INFO,
                "reset",
                now,
                "%s: a reset dropped %d entries deleted while this node was away",
                self.node_id,
                dropped,
            )
        if self._capturing:
            self._captured(now)

    def _membership_round(self, m: Membership, now: float) -> None:
        m.tick(now)
        if now >= self._reconnect_at:
            self._reconnect(m, now)
        joined = self._joined()
        for addr in self._seeds:
            if joined:
                if (
                    addr not in m.by_addr
                    and addr not in self._static
                    and addr not in self._reconnecting  # (a dead member being tried)
                ):
                    self._member_peer(addr, False)  # a seed that never answered
            elif not m.left:
                self._add_peer(addr)
                if addr not in self._linked:
                    self.out.append((ASK, addr, None))  # (re)join: dial every seed
        probe = self._verify
        probe.update(dict.fromkeys(m.suspects()))
        if probe:
            for addr in probe:
                p = self._peers.get(addr)
                if p is None:
                    continue
                if p.conn is None:
                    self.out.append((ASK, addr, None))  # a refusal, or an answer
                elif not p.awaiting_since:
                    self._ask(p, self.digest_for(p.conn, True, now), now)  # an answer?
            probe.clear()

    def _reconnect(self, m: Membership, now: float) -> None:
        """Partitions heal: dead members are not gossiped with, so two sides
        of a partition that each saw the other dead would never meet again.
        Every ``25`` gossip intervals (at least 2 s), one dead member
        picked at random is dialled and asked (serf and memberlist reconnect
        alike); if it answers, its newer heartbeats show it alive, and ours
        reach its side. A try that got nothing is unpeered at the next."""
        self._reconnect_at = now + max(2.0, 25 * self.limits.gossip_interval)
        for addr in self._reconnecting:
            node_id = m.by_addr.get(addr)
            mem = m.members.get(node_id) if node_id is not None else None
            if mem is None or mem.status not in ("alive", "suspect"):
                self._member_peer(addr, False)
        self._reconnecting.clear()
        self._peer_list = None
        dead = [mem for mem in m.members.values() if mem.status == "dead" and mem.addr[1]]
        if dead and not m.left:
            pick = dead[self.rng.below(len(dead))]
            if pick.addr not in self._peers:
                self._reconnecting.append(pick.addr)
                self._add_peer(pick.addr)
                self.out.append((ASK, pick.addr, None))

    def _quiet_pick(self, peers: List[_Peer], k: int) -> List[_Peer]:
        """A quiet round's peers, with membership: taken in turn from a few
        stable neighbours (``quiet_neighbours``, one replaced at random about
        every ``neighbour_turnover`` rounds). Every member's heartbeat changes
        its origin's watermark, so a delta digest on a connection unused for
        long names nearly every origin: asking one random member of N each
        quiet round would cost each node O(N) bytes a round. On links used
        every few rounds the deltas hold a few rounds' changes; the overlay the
        neighbours make is a random graph (exchanges are push-pull), through
        which heartbeats and the rare quiet change still spread in O(log N)."""
        hood = [p for p in self._neighbours if self._peers.get(p.addr) is p]
        want = max(k, self.limits.quiet_neighbours)
        if hood and self.rng.below(self.limits.neighbour_turnover) == 0:
            hood.pop(self.rng.below(len(hood)))
        if len(hood) < want:
            spare = [p for p in peers if p not in hood]
            hood.extend(self.rng.sample(spare, min(want - len(hood), len(spare))))
        self._neighbours = hood
        self._turn += 1
        return [hood[(self._turn + i) % len(hood)] for i in range(min(k, len(hood)))]

    def _within_cap(self, chosen: List[_Peer], peers: List[_Peer], cap: int) -> List[_Peer]:
        """With fewer links allowed than peers, a round that dialled every peer it
        picks would close a link for each new one and spend its time connecting:
        once the links are full, picked peers without one are replaced by linked
        peers, except one new peer every fourth round or so, which keeps the
        links turning over so that the cluster stays mixed."""
        linked = list(self._linked.values())
        if len(linked) < cap:
            return chosen
        rotate = self.rng.below(4) == 0
        out: List[_Peer] = []
        spare = [p for p in linked if p not in chosen]
        for p in chosen:
            if p.conn is None:
                if rotate:
                    rotate = False
                elif spare:
                    p = spare.pop(self.rng.below(len(spare)))
                else:
                    continue
            out.append(p)
        return out

    def _ask(self, p: _Peer, frames: Any, now: float, await_reply: bool = True) -> None:
        c = self._conns.get(p.conn) if p.conn is not None else None
        if c is not None:
            c.merged = c.batch_bytes = 0
        if await_reply:
            p.awaiting_since = now
        else:
            p.quiet_asked = True
        p.last_used = now
        self.out.append((ASK, p.addr, frames))

    def encode_digest(self, reply: bool, now: float) -> List[bytes]:
        """This node's digest as frames (more than one only when it is larger
        than a frame). Reused while the table has not changed (``changes``) and
        no retirement was due: an idle round costs no per-origin work."""
        self._refresh_watermarks(now)
        key = self._digest_key
        cached = self._digest_cache.get(reply)
        if cached is not None and cached[0] == key:
            return cached[1]
        frames: List[bytes] = self._codec.digest_frames(
            self.node_id, self._wm, reply, self.limits.max_frame_size
        )
        self._digest_cache[reply] = (key, frames)
        return frames

    def _refresh_watermarks(self, now: float) -> None:
        """Recompute the digest's watermarks when the table changed or a
        retirement was due, and log what changed for the delta digests."""
        retire_due = False
        if self.limits.retire_after is not None and now >= self._retire_check_at:
            # retirement windows are long; looking once per quarter window
            # (at most once a second) is soon enough
            window = max(self.limits.retire_after, 2 * self.limits.gossip_interval)
            self._retire_check_at = now + min(1.0, window / 4)
            self._retire_generation += 1
            retire_due = True
        key: Tuple[int, int, int] = (self.state.changes, self._retire_generation, self._last_stamp)
        if key == self._digest_key:
            return
        self._digest_key = key
        old = self._wm
        if retire_due or self.limits.retire_after is None or not old:
            new = self.digest_watermarks(now)
        else:
            # between retirement passes: the table's watermarks (one C call),
            # without the origins the last pass left out (an origin that comes
            # back is named again at the next pass, within a second)
            new = self.state.watermarks()
            for origin in self._stale_exempt:
                new.pop(origin, None)
            self._name_own(new)
        diff = dict(sorted(new.items() - old.items()))  # (sorted: the same in every process)
        if len(old) + len(diff) > len(new):  # some origins left
            diff.update((o, 0) for o in old if o not in new)
        self._wm = new
        if diff:
            self._wm_gen += 1
            self._wm_log.append((self._wm_gen, diff))
            if len(self._wm_log) > 64:
                del self._wm_log[:32]

    def digest_for(self, conn: int, reply: bool, now: float) -> List[bytes]:
        """The digest to send on ``conn``: full the first time and every
        ``full_digest_every`` seconds, else only what changed since the last one
        this connection was sent (``delta``), which is empty in an idle cluster."""
        self._refresh_watermarks(now)
        c = self._conns.get(conn)
        if c is None:
            return self.encode_digest(reply, now)
        gen = self._wm_gen
        log = self._wm_log
        if (
            c.sent_gen < 0
            or now - c.full_at >= self.limits.full_digest_every
            or (c.sent_gen < gen and (not log or c.sent_gen < log[0][0] - 1))
        ):
            c.sent_gen, c.full_at = gen, now
            return self.encode_digest(reply, now)
        if c.sent_gen == gen:
            empty = self._empty_delta.get(reply)
            if empty is None:
                empty = self._empty_delta[reply] = self._codec.digest_frames(
                    self.node_id, {}, reply, self.limits.max_frame_size, True
                )
            return empty
        changes: Dict[str, int] = {}
        for g, diff in log:
            if g > c.sent_gen:
                changes.update(diff)
        c.sent_gen = gen
        if len(changes) * 2 > len(self._wm):  # as big as the whole: send it whole
            c.full_at = now
            return self.encode_digest(reply, now)
        frames: List[bytes] = self._codec.digest_frames(
            self.node_id, changes, reply, self.limits.max_frame_size, True
        )
        return frames

    def progress(self, conn: int, now: float, mid_frame: bool = False) -> None:
        """Bytes of entries arrived on ``conn`` (the driver says so per read,
        frame complete or not, and whether a frame is still incomplete): an
        answer arriving slowly is still arriving, and the peer is alive."""
        c = self._conns.get(conn)
        if c is None:
            return
        if c.node and now - c.progress_at > 0.1 and self.membership is not None:
            self.membership.heard_from(c.node, now)
        c.progress_at = self._progress_at = now
        c.mid_frame = mid_frame

    def _in_flight(self, c: _Conn, watermarks: Dict[str, int], now: float) -> Dict[str, int]:
        """The peer's watermarks raised by what the deltas already written on
        this connection bring it: TCP delivers them in order unless the
        connection breaks (then its record goes with it). Only this
        connection's: entries of one origin must reach a node in stamp order,
        and two connections do not keep each other's order.

        Per origin the record is [stamp, since, base]: it ends when the peer's
        digest reaches ``stamp``; while the digest reaches ``base`` (what was
        in flight at ``since``) the peer is taking what we send, and
        ``since``/``base`` move on; when it has not for IN_FLIGHT_KEEP seconds
        the peer refused something (a version from the future, a full table)
        and the record ends, so that it is sent again."""
        sent = c.sent
        if not sent:
            return watermarks
        out: Optional[Dict[str, int]] = None
        for origin, rec in list(sent.items()):
            stamp, since, base = rec
            theirs = watermarks.get(origin, -1)
            if theirs >= stamp:
                del sent[origin]
                continue
            if theirs >= base:
                rec[1], rec[2] = now, stamp
            elif now - since > IN_FLIGHT_KEEP:
                del sent[origin]
                continue
            if out is None:
                out = dict(watermarks)
            out[origin] = stamp
        return watermarks if out is None else out

    def _note_sent(self, c: _Conn, wanted: Dict[str, int], now: float) -> None:
        """Record what the delta just taken, about to be written on ``c``, brings the peer
        (see _in_flight). A delta is every due entry in (stamp, origin) order;
        cut at its budget, it holds at least every entry below the last
        stamp it carries."""
        upto: Optional[int] = None
        if self.state.delta_cut:
            upto = self.state.delta_top - 1
        sent = c.sent
        for origin, ours in self.state.watermarks().items():
            theirs = wanted.get(origin, -1)
            reach = ours if upto is None else min(ours, upto)
            if reach > theirs:
                rec = sent.get(origin)
                if rec is None:
                    sent[origin] = [reach, now, reach]
                elif reach > rec[0]:
                    rec[0] = reach

    def _catching_up(self, now: float) -> Optional[_Peer]:
        """The peer whose large answer this node is still receiving (a slow
        or busy link; the rules: PROTOCOL.md, "Slow links", Catching up).
        While one is, this node asks no one else and invites no pushes: every
        peer would send it the same entries."""
        interval = self.limits.gossip_interval
        window = max(1.0, 4 * interval)
        for p in self._linked.values():
            if not p.awaiting_since or p.conn is None:
                continue
            c = self._conns.get(p.conn)
            if c is None:
                continue
            if now - p.awaiting_since > CATCH_UP_MAX:
                continue  # (one question holds the node at most this long)
            # The answer is still coming while its bytes arrive, and while it
            # may be queued behind entries arriving on other connections (one
            # link carries them all). Its bytes may pause for a few seconds
            # mid-frame (TCP recovering lost packets on a congested link):
            # the frame is in flight. A question lost on a cut link catches
            # nothing up, nor does one a peer throttled.
            heard = max(p.awaiting_since, c.progress_at)
            if p.pulling and (
                now - heard < window
                or (c.mid_frame and now - heard < MID_FRAME_WAIT)
                # (queued behind others' entries: for a while only, as a
                # continuation the peer throttled gets no answer at all)
                or (now - p.awaiting_since < MID_FRAME_WAIT and now - self._progress_at < window)
            ):
                return p
            if now - c.progress_at < window and (
                c.mid_frame
                or (now - p.awaiting_since > interval and c.batch_bytes >= CONTINUE_BYTES)
            ):
                # (a large answer, still arriving: not a few small batches,
                # which a peer that is catching up itself sends)
                return p
        return None

    def send_dropped(self, conn: int) -> None:
        """The driver could not write what it was given for ``conn`` (the peer
        does not read): a digest may be lost, so the next one is full."""
        c = self._conns.get(conn)
        if c is not None:
            c.sent_gen = -1
            c.reset_gen = -1  # (a Reset in it is owed again)
            c.sent.clear()  # (what it was to carry is not in flight)

    def digest_watermarks(self, now: Optional[float] = None) -> Dict[str, int]:
        """Per origin, the highest stamp held; without the retired origins.

        An origin is retired when it has held no key here and no entry of it
        has arrived for its window (``retire_after`` seconds at first): the
        lives of restarted nodes and writers whose keys were all overwritten
        would otherwise stay in every digest. A peer that still holds entries
        of a retired origin sends them from stamp 0, and their arrival brings
        the origin back into the digests, with its watermark, and doubles its
        window. That is what keeps it safe:
        * left out for good, the origin would be answered from stamp 0 every
          time, oldest first, and answers cut at the delta budget would never
          get past the entries that lose here to those that win
          (test_mutual_overwrites_converge_through_a_small_delta_budget);
        * with a fixed window, many such origins could take turns coming back
          and retiring again, each answer filled with one origin's losing
          entries (test_many_retired_origins_converge_through_a_small_budget).
        """
        if now is None:
            now = self._now
        out: Dict[str, int]
        retire_after = self.limits.retire_after
        if retire_after is None:
            out = self.state.watermarks()
        else:
            out = self._retire(now, max(retire_after, 2 * self.limits.gossip_interval))
        # Our own origin is always named, at our stamp clock: we hold every
        # entry of it we wrote, and nothing above that exists but forgeries.
        # (Left out, or named lower, peers would send us those, or our own
        # entries, in every exchange: the table refuses entries of our origin.)
        self._name_own(out)
        return out

    def _name_own(self, out: Dict[str, int]) -> None:
        """Our origin at our stamp clock in a digest, and our ephemeral origin
        too once we wrote under it: we hold every entry of them we wrote."""
        if out.get(self.origin, -1) < self._last_stamp:
            out[self.origin] = self._last_stamp
        eph = self.origin + EPHEMERAL_SUFFIX
        if eph in out and out[eph] < self._last_stamp:
            out[eph] = self._last_stamp

    def _retire(self, now: float, retire_after: float) -> Dict[str, int]:
        """The watermarks without the retired origins (see digest_watermarks;
        at least two rounds: an origin that comes back is named in a digest)."""
        quiet = self._quiet
        out = {}
        left_out = []
        horizons = self.horizons.stamps
        for origin, (watermark, live, seen) in self.state.origin_stats().items():
            if live or origin in horizons:
                if quiet:
                    quiet.pop(origin, None)
                out[origin] = watermark
                continue
            q = quiet.get(origin)
            if q is None:
                quiet[origin] = _Quiet(seen, now, retire_after)
            elif q.seen != seen:
                if q.left_out:
                    q.window *= 2
                q.seen, q.since, q.left_out = seen, now, False
            elif now - q.since >= q.window:
                q.left_out = True
                left_out.append(origin)
                continue
            out[origin] = watermark
        # A left-out origin is answered from stamp 0: take its entries even when
        # stale, as that resend is what heals a gap an earlier cut answer left
        # below its watermark (found in review; a forger gains nothing there
        # that the origin's absence from our digests did not already give)
        # ... except while this node holds GC horizons: a key deleted and
        # collected here looks just like such a gap, and would come back
        exempt = frozenset(left_out) if not horizons else frozenset()
        if exempt != self._stale_exempt:
            self._stale_exempt = exempt
            self.state.set_stale_exempt(exempt)
        return out

    # -- forged stamps of our own origin ----------------------------------------
    def _repair_forgery(self, now: float) -> None:
        """Someone forged an entry under our origin: the table refused it when it
        came back to us (``own_refused_stamp``), which proves a stamp we never
        issued (a digest merely claiming one proves nothing). Peers that took
        it have raised their watermark for our origin past our real writes and
        would no longer ask for them. So our stamp clock jumps past the forged
        stamp (new writes spread again), and our entries are re-stamped above
        it (written before, they would stay below the peers' watermarks); a
        tie with a higher stamp replaces the stamp everywhere, so the re-stamp
        travels hop by hop. One re-stamp resends our entries: at most one per
        ``max_clock_skew``, and one owed is done as soon as that allows."""
        forged = self.state.own_refused_stamp
        if forged > self._forged_stamp:
            self._forged_stamp = forged
            if forged > self._last_stamp:
                self.stats.forged_stamps += 1
                self._last_stamp = forged
                self._restamp_owed = True
                if self.membership is not None and not self.membership.left:
                    # a forged entry of our origin may be our record (say,
                    # "left"): write it again, as news, above what our clock saw
                    self.membership.beat(now, news=True)
                self.logs.log(
                    logging.WARNING,
                    "forged",
                    now,
                    "%s: an entry of our origin with a stamp we never issued came back "
                    "(forged); our writes are re-stamped past it",
                    self.node_id,
                )
        if self._restamp_owed and now - self._restamped_at >= self.limits.max_clock_skew:
            self._restamp_owed = False
            self._restamped_at = now
            watermarks = self.state.watermarks()
            for origin in (self.origin, self.origin + EPHEMERAL_SUFFIX):
                if origin in watermarks:
                    count = self.state.restamp(origin, self._last_stamp + 1)
                    self._last_stamp += count
            if self.journal is not None:
                self.journal.reshape()  # (the log holds the old stamps)

    # -- input -----------------------------------------------------------------
    def receive(self, conn: int, frames: Iterable[bytes], now: float, room: int) -> int:
        """Complete frames from connection ``conn``; ``room`` is how many bytes
        the driver may still queue for it. Returns entries merged. Raises
        ValueError/TypeError (FrameError) for a frame the peer must be dropped
        for; whatever merged before the error stays merged (and is counted)."""
        self._advance(now)
        state = self.state
        batch_type = self._batch_type
        max_frame_size = self.limits.max_frame_size
        max_stamp, max_version = self.horizon(now)
        merged = 0
        m = self.membership
        c = self._conns.get(conn)
        if m is not None and c is not None:
            if not c.greeted:
                frames = list(frames)
                if not frames:
                    return 0
                if self._greet(c, conn, frames[0], now):
                    frames = frames[1:] if c.greeted else []
            if c.node:
                m.heard_from(c.node, now)
        if c is None:
            return 0  # a connection this core was not told of (or has closed): nothing is read
        if c.identities is not None:
            frames = list(frames)
            if not self._senders_named(c, conn, frames, now):
                return 0
        try:
            for frame in frames:
                if frame[5] == batch_type:
                    n = state.merge_frame(frame, max_frame_size, max_stamp, max_version)
                    if n and self.journal is not None:
                        self.journal.frame(frame)
                    merged += n
                    c.merged += n
                    c.batch_bytes += len(frame)
                elif frame[5] == T_RESET:
                    self._on_reset(frame, conn, now)
                else:
                    room -= self._handle(self._codec.decode(frame, max_frame_size), conn, now, room)
        except _Refused:
            pass  # the connection is closed: nothing more of it is read
        finally:
            if merged:
                self.stats.entries_merged += merged
                self._observe(state.max_version, now)
                # membership's entries (heartbeats) are news only when they say so
                self._news += merged + (self._captured(now) if self._capturing else 0)
        return merged

    def _handle(self, msg: Any, conn: int, now: float, room: int) -> int:
        """Act on one decoded message; returns the bytes queued in answer."""
        codec = self._codec
        kind = type(msg)
        c = self._conns.get(conn)
        if c is not None and c.identities is not None:
            sender = getattr(msg, "sender_id", None)
            if sender is None:
                sender = getattr(msg, "leader_id", None)
            if sender is None:
                sender = getattr(msg, "follower_id", None)
            if sender is not None and sender not in c.identities:
                self._refuse_identity(c, conn, sender, now)
                raise _Refused()
        if kind is self._digest_type:
            return self._on_digest(msg, conn, now, room)
        if kind is codec.Gossip:
            # A single pushed write (the reference's message) is accepted as a
            # write with an explicit version made here: it gets this node's
            # origin and a stamp from this node's clock, so that it cannot move
            # a watermark past entries this node has not received.
            try:
                if self.set_with_version(msg.key, msg.value, msg.version, now):
                    self.stats.entries_merged += 1
            except ValueError as exc:
                self.stats.entries_refused += 1
                self.logs.log(
                    logging.INFO, "pushed", now, "%s: pushed write refused: %s", self.node_id, exc
                )
            return 0
        if kind is codec.Ping:
            frame = codec.encode(codec.Pong(self.node_id, msg.seq))
            self.out.append((SEND, conn, [frame]))
            return len(frame)
        if kind is codec.Pong:
            self.out.append((EVENT, "pong", (msg.seq, now)))
            return 0
        if kind is codec.Replicate:
            ok = self.replication_log.offer(
                msg.index, msg.term, msg.checksum, msg.payload, leader=msg.leader_id
            )
            frame = codec.encode(codec.ReplicateAck(self.node_id, msg.index, ok))
            self.out.append((SEND, conn, [frame]))
            return len(frame)
        return 0  # ReplicateAck, Entry or a future type: nothing to do

    def _max_peer_origins(self) -> int:
        """The most origins a peer's digest may name (per connection): twice our
        own plus 1024. Peers of one cluster name about the same origins; this
        bounds what a stranger's digests can make a node hold per connection."""
        return 2 * len(self._wm) + 1024

    def _on_digest(self, msg: Any, conn: int, now: float, room: int) -> int:
        c = self._conns.get(conn)
        if c is None:
            return 0
        received: Dict[str, int]
        delta = msg.delta
        if msg.more or c.parts is not None:
            # one part of a digest split over several frames: answer after the last
            if c.parts is None:
                c.parts, c.parts_bytes, c.parts_delta = {}, 0, delta
            elif c.parts_delta != delta:
                raise ValueError("the parts of one digest disagree on delta")
            c.parts.update(msg.watermarks)
            c.parts_bytes += self.limits.max_frame_size
            # a digest in parts holds no more origins than a peer's may name
            # (below), and at most max_digest_bytes of frames
            if c.parts_bytes > self.limits.max_digest_bytes:
                raise ValueError(f"digest longer than {self.limits.max_digest_bytes} bytes")
            if len(c.parts) > self._max_peer_origins():
                raise ValueError(f"a peer's digest names over {self._max_peer_origins()} origins")
            if msg.more:
                return 0
            received, c.parts = c.parts, None
        else:
            received = dict(msg.watermarks)
        if delta:
            watermarks = c.peer_wm
            if watermarks is None:
                raise ValueError("a delta digest before any full one on this connection")
            for origin, stamp in received.items():
                if stamp:
                    watermarks[origin] = stamp
                else:
                    watermarks.pop(origin, None)
        else:
            watermarks = c.peer_wm = received
        # what a peer's digests may make this node hold per connection
        if len(watermarks) > self._max_peer_origins():
            raise ValueError(f"a peer's digest names {len(watermarks)} origins")
        asked_at = 0.0
        if not msg.reply:
            if c.peer is None:
                return 0  # only the node that asked gets an answer to a reply digest
            p = self._peers.get(c.peer)
            if p is None or p.conn != conn or not (p.awaiting_since or p.quiet_asked):
                return 0  # not an answer to our question: nothing is owed
            # our exchange on this connection is answered (a quiet question is
            # answered only by a peer with something to say: it is owed a reply,
            # or a delta cut at the budget would never be finished)
            asked_at = p.awaiting_since
            if asked_at:
                # an exchange's round trip (question to the answer's digest:
                # the link, the peer's work, and on a slow link the delta)
                took = max(0.0, now - asked_at)
                seen = self.rtt.get(c.peer)
                self.rtt[c.peer] = took if seen is None else 0.8 * seen + 0.2 * took
            p.awaiting_since = 0.0
            p.quiet_asked = False
            self.out.append((EVENT, "answered", c.peer))
        elif c.peer is None:
            # an inbound question: one answer per connection per round, and all
            # inbound answers of a round, digests included, share max_round_bytes
            # (the next question after an answer cut at its cap is its sequel)
            # (and so is the next after one whose entries the asker continues)
            if (
                now - c.answered_at < self.limits.gossip_interval * 0.5
                and not c.capped_at
                and not c.continued
            ):
                self.stats.exchanges_throttled += 1
                return 0
            # the budget's window: a gossip interval, at most a second (a node
            # run with long intervals, or none, still answers a peer a second)
            if now - self._round_started >= min(self.limits.gossip_interval, 1.0):
                self._round_started, self._round_bytes = now, 0
            if self._round_bytes >= self.limits.max_round_bytes:
                self.stats.exchanges_throttled += 1
                return 0
        # (a push's link is judged by how fast our question was answered)
        full = min(room, self.limits.max_delta_bytes)
        if c.peer is None:
            full = min(full, self.limits.max_round_bytes - self._round_bytes)
        # a delta is cut at the connection's cap; a Reset (rare) is measured
        # against the whole budget, or a large table could never send one
        budget = min(full, self._delta_cap(c, now, asked_at if not msg.reply else 0.0))
        frames: List[bytes] = []
        if budget <= 0:
            self.stats.sends_dropped += 1
        else:
            try:
                # not again what is still in flight on this connection
                wanted = self._in_flight(c, watermarks, now)
                frames = self.state.delta_frames(
                    self.node_id, wanted, self.limits.max_frame_size, budget
                )
                delta_bytes = sum(map(len, frames))
                c.continued = delta_bytes >= CONTINUE_BYTES
                if frames:
                    self._note_sent(c, wanted, now)
                    if self.state.delta_cut and budget >= c.cap:
                        c.capped_at = now
                h = self.horizons
                if (
                    h.stamps
                    and c.reset_gen != h.generation
                    and not self.state.delta_cut
                    and h.behind(watermarks) is not None
                    and self._complete()
                ):
                    # the peer may have missed a tombstone we collected: after a
                    # complete delta, a Reset (horizon.py), once per connection
                    # per change of our horizons, within the answer's budget
                    # (its size first: 8 bytes a key, and the origins)
                    n_hash = 8 * self.state.entry_count
                    size = delta_bytes + n_hash + 300 * len(self.state.watermarks())
                    fixed = 64 + len(self.node_id.encode("utf-8"))  # (a frame's own bytes)
                    size += (n_hash // max(1, self.limits.max_frame_size - fixed) + 2) * fixed
                    if size <= full:
                        c.reset_gen = h.generation
                        frames.extend(self._reset_frames())
                        self.stats.resets_sent += 1
                    else:
                        self.stats.resets_withheld += 1
            except ValueError as exc:  # our own entry that no frame holds
                self.logs.log(
                    logging.ERROR, "delta", now, "%s: cannot build a delta: %s", self.node_id, exc
                )
        # The digest goes out even without a delta: with it the peer sends
        # this node what it lacks, so a node out of room still learns.
        if msg.reply and c.peer is None and self._catching_up(now) is not None:
            # this node is receiving a slow answer: it does not hand out its
            # digest, so that peers push nothing it will get anyway (the
            # answer brings it); it asks for the rest when the answer is in
            self.stats.exchanges_skipped += 1
        elif msg.reply:
            digest = self.digest_for(conn, False, now)
            # an empty question gets no answer when there is none: nothing to
            # send and our watermarks unchanged since this connection last had them
            if frames or not delta or received or digest is not self._empty_delta.get(False):
                frames.extend(digest)
        sent = sum(map(len, frames))
        if c.peer is None and sent:
            self._round_bytes += sent
            c.answered_at = now  # only an answer that went out counts
        if frames:
            self.out.append((SEND, conn, frames))
        if not msg.reply and c.peer is not None:
            p = self._peers.get(c.peer)
            if p is not None and p.conn == conn:
                # an answer that brought entries, from a peer that holds more
                # (its delta was cut): ask again at once, on the same link,
                # rather than a round later: a catch-up goes at the link's pace
                # (a small answer was whole: what the peer's digest names
                # beyond it, e.g. its own origin at its clock, is no backlog)
                p.pulling = (
                    c.batch_bytes >= CONTINUE_BYTES and bool(c.merged) and self._lacks(watermarks)
                )
                if p.pulling:
                    self._ask(p, self.digest_for(conn, True, now), now)
        return sent

    def _delta_cap(self, c: _Conn, now: float, asked_at: float = 0.0) -> int:
        """The most one delta on ``c`` may carry. It starts at FIRST_CAP and
        doubles (up to max_delta_bytes) each time a delta cut at it was
        followed within a gossip interval by the next question (the link
        drained it at once; for a push, ``asked_at``: our question that the
        peer's digest answers); it halves when that took over four intervals. So
        a slow link is never sent much more than it carries in a few
        intervals, and peers that each send a slow node the same entries send
        little twice, while a fast link reaches the full budget in a few round
        trips (the asker continues a cut answer at once: see _on_digest)."""
        if c.capped_at:
            took = now - (asked_at or c.capped_at)
            interval = self.limits.gossip_interval
            if took < interval:
                c.cap = min(2 * c.cap, self.limits.max_delta_bytes)
            elif took > 4 * interval:
                c.cap = max(FIRST_CAP, c.cap // 2)
            c.capped_at = 0.0
        return min(c.cap, self.limits.max_delta_bytes)

    def _lacks(self, watermarks: Dict[str, int]) -> bool:
        """Whether a peer with these watermarks holds entries this node lacks."""
        ours = self.state.watermarks()
        return any(stamp > ours.get(origin, -1) for origin, stamp in watermarks.items())
