"""Membership and failure detection: the part of the sans-IO core that knows
who the members are (docs/PROTOCOL.md, "Membership").

Every member publishes one record in the gossiped table, under its own origin:
the key ``"\\x00m:<node_id>"``, a small JSON value (advertised address, status,
metadata). It rewrites the same record every heartbeat period: a record's new
version *is* the heartbeat, and it travels by the ordinary anti-entropy, so a
heartbeat reaches a node through whichever members relay it. A node learns of
records as the table applies them (``GossipState.set_capture``), never by
scanning the table.

Each node judges every other member for itself:

* a phi-accrual detector (Hayashibara et al.) over the arrival times of the
  member's heartbeats here, with a normal distribution (as Akka's), a floor on
  its deviation and an acceptable pause: ``suspect`` at half the threshold,
  ``dead`` at the threshold (8 by default, as Cassandra's and Akka's). Since a
  heartbeat comes through any member, silence means that none of them heard
  it: that is the indirect probe, for free;
* direct evidence from the transport: our link to the member closed by its
  end is verified at once by a redial; a refused connection makes the member
  ``suspect`` at once, and a second refusal at least a gossip interval later
  ``dead`` (a refused connection means nothing listens at that address);
* local health (after Lifeguard): time this node itself was stalled (its rounds
  ran late) is not counted as silence from others.

A member that leaves (``leave``) writes ``left`` into its record and pushes it to
every member at once. Dead and left members are not dialled or picked; after
``dead_node_grace`` their record is replaced by an empty one (a marker, written
with this node's clock, so it wins over anything the dead member wrote and
nothing can bring it back), and forgotten. A member still alive that sees a
marker, or a suspicion it disagrees with, simply rewrites its record: the
newer version wins everywhere (the refutation of SWIM, from last-write-wins).
"""

from __future__ import annotations

import heapq
import json
import logging
import math
from collections import deque
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional, Tuple

log = logging.getLogger("fastgossip")

Address = Tuple[str, int]

#: keys starting with this are the cluster's own (users may not write them)
RESERVED_PREFIX = "\x00"
#: a member's record: ``MEMBER_PREFIX + node_id``
MEMBER_PREFIX = "\x00m:"
#: a statement that a member's life is dead: ``DEAD_PREFIX + node_id``, its
#: origin as the value; written by a node with direct evidence (refusals)
DEAD_PREFIX = "\x00d:"
#: lateness of a round beyond this fraction of the interval counts as a stall
STALL_SLACK = 0.1
#: the most bytes a record (address, status, metadata as JSON) may take
MAX_RECORD_BYTES = 2048

ALIVE, SUSPECT, DEAD, LEFT = "alive", "suspect", "dead", "left"

__all__ = [
    "ALIVE",
    "DEAD",
    "LEFT",
    "MEMBER_PREFIX",
    "RESERVED_PREFIX",
    "SUSPECT",
    "Member",
    "MemberEvent",
    "MembershipConfig",
    "PhiDetector",
    "format_address",
]


def format_address(addr: Address) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _parse_address(text: str) -> Address:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"bad address {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    p = int(port)
    if not 0 <= p < 65536:
        raise ValueError(f"bad port in {text!r}")
    return (host, p)


@dataclass(frozen=True)
class Member:
    """One member as this node sees it.

    ``status``: ``alive``, ``suspect``, ``dead`` or ``left``. ``last_heard``:
    this node's wall-clock time of the last heartbeat or frame from it (0.0:
    never). ``phi``: the detector's suspicion level now (8 and above: dead).
    ``origin``: the life it writes under (``"<node_id>#<life>"``)."""

    node_id: str
    addr: Address
    status: str
    meta: Mapping[str, str]
    last_heard: float
    phi: float
    origin: str = ""


@dataclass(frozen=True)
class MemberEvent:
    """A change of a member: ``kind`` is ``joined``, ``suspect``, ``alive``
    (alive again after suspect or dead), ``dead``, ``left`` or ``forgotten``;
    ``at`` is this node's wall-clock time."""

    kind: str
    member: Member
    at: float


@dataclass(frozen=True)
class MembershipConfig:
    """The membership settings a core runs with (``NodeConfig`` makes one).

    ``heartbeat_interval``: the least time between two heartbeats (a member's
    record rewritten); larger clusters stretch it so that heartbeats cost each
    node at most about ``heartbeat_budget`` records per round (see
    ``heartbeat_period``). ``phi_threshold``: dead at this phi, suspect at half.
    ``acceptable_pause``: silence beyond the usual that is not yet held
    against a member. ``min_std``: the floor on the arrival deviation (as a
    fraction of the mean interval). ``dead_node_grace``: seconds a dead or
    left member is kept (and shown) before it is forgotten everywhere.
    ``max_members``: records of more members than this are refused (counted
    in ``records_refused``): what records from strangers can make a node hold."""

    addr: Address
    meta: Mapping[str, str] = field(default_factory=dict)
    seeds: Tuple[Address, ...] = ()
    cluster_id: Optional[str] = None
    heartbeat_interval: float = 0.5
    heartbeat_budget: float = 10.0
    phi_threshold: float = 8.0
    acceptable_pause: float = 0.5
    min_std: float = 0.25
    dead_node_grace: float = 3600.0
    max_members: int = 65536


def _life(origin: str) -> int:
    """The life in an origin ``"<node_id>#<life>"`` (base 36), 0 if none."""
    try:
        return int(origin.rpartition("#")[2], 36)
    except ValueError:
        return 0


def _z_for(phi: float) -> float:
    """The z-score whose upper normal tail has probability 10**-phi."""
    lo, hi = -10.0, 40.0
    target = 10.0**-phi
    for _ in range(80):
        mid = (lo + hi) / 2
        if 0.5 * math.erfc(mid / math.sqrt(2)) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


class PhiDetector:
    """Arrival intervals of one member's heartbeats (a bounded window) and the
    phi of a silence: ``-log10`` of the chance that the next heartbeat comes
    later than that, under a normal law fitted to the window, shifted by the
    acceptable pause."""

    __slots__ = ("intervals", "total", "squares", "last", "pause", "min_std", "period")

    WINDOW = 64
    WARMUP = 4

    def __init__(self, first: float, expected: float, pause: float, min_std: float) -> None:
        # a new member starts with one interval of the expected period, so
        # that phi is defined from its first heartbeat on
        self.intervals: Deque[float] = deque([expected], maxlen=self.WINDOW)
        self.total = expected
        self.squares = expected * expected
        self.last = first
        self.pause = pause
        self.min_std = min_std
        # the period the member says it beats at: the mean is never taken
        # below it (a member whose cluster grew beats less often, and says so)
        self.period = expected

    def arrived(self, now: float) -> None:
        gap = now - self.last
        if gap <= 0:
            return
        self.last = now
        if len(self.intervals) == self.WINDOW:
            old = self.intervals[0]
            self.total -= old
            self.squares -= old * old
        self.intervals.append(gap)
        self.total += gap
        self.squares += gap * gap

    def mean_std(self) -> Tuple[float, float]:
        n = len(self.intervals)
        learned = self.total / n
        var = max(0.0, self.squares / n - learned * learned)
        mean = max(learned, self.period)
        # until a few intervals were seen, the law is wide (a member met at
        # start-up, while the cluster forms, is not judged on one sample)
        floor = self.min_std if n > self.WARMUP else 1.0
        return mean, max(math.sqrt(var), floor * mean)

    def phi(self, silence: float) -> float:
        mean, std = self.mean_std()
        z = (silence - mean - self.pause) / std
        p = 0.5 * math.erfc(z / math.sqrt(2))
        return 1000.0 if p <= 1e-300 else min(1000.0, -math.log10(p))

    def silence_for(self, z: float) -> float:
        """The silence at which the z-score reaches ``z``."""
        mean, std = self.mean_std()
        return mean + self.pause + z * std


class _Member:
    __slots__ = (
        "node_id",
        "origin",
        "addr",
        "status",
        "meta",
        "value",
        "version",
        "detector",
        "heard",
        "stall_at_heard",
        "since",
        "refusals",
        "refused_at",
        "evidence",
        "direct",
        "queued",
        "period",
    )

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.origin = ""
        self.addr: Address = ("", 0)
        self.status = ALIVE
        self.meta: Mapping[str, str] = MappingProxyType({})
        self.value = b""
        self.version = 0
        self.detector: Optional[PhiDetector] = None
        self.heard = 0.0  # last heartbeat or direct frame (local time)
        self.stall_at_heard = 0.0  # this node's stall total then
        self.since = 0.0  # when the status last changed
        self.refusals = 0  # refused dials since last heard
        self.refused_at = -1e18
        # the version of the last evidence against it (a statement's, or our
        # clock's at a refusal or verdict): a heartbeat of a version not above
        # it (one still travelling when it died) does not undo it
        self.evidence = 0
        self.direct = False  # suspected on direct evidence (refusals, a statement)
        self.period = 0.0  # the heartbeat period its record states
        self.queued = False  # it has an entry in the deadline heap


class Membership:
    """The members a core knows, and the rules above. Driven by the core."""

    def __init__(
        self,
        core: Any,
        config: MembershipConfig,
        emit: Callable[[MemberEvent], None],
    ) -> None:
        self.core = core
        self.config = config
        self._emit = emit
        self.node_id: str = core.node_id
        self.origin: str = core.origin
        self.addr = config.addr
        self.meta: Dict[str, str] = dict(config.meta)
        self.left = False
        self.members: Dict[str, _Member] = {}
        self._gone: Dict[str, _Member] = {}  # the dead and left among them
        self._suspected: Dict[str, _Member] = {}  # those suspect now
        self.by_addr: Dict[Address, str] = {}
        # address -> the node ids that advertise it (dicts: ordered alike everywhere)
        self._at: Dict[Address, Dict[str, None]] = {}
        # when to look at a member's silence again; one entry per member,
        # moved on when popped early (a heartbeat does not push one)
        self._heap: List[Tuple[float, int, str]] = []
        self._seq = 0
        self._beat_at = -1e18
        self._refuted_at = -1e18
        self._stall = 0.0  # seconds this node's rounds ran late, in all
        self._gc_at = -1e18
        self._jitter = 1.0
        # the least time a member is suspect before silence makes it dead
        self._min_suspicion = 3 * core.limits.gossip_interval
        self._last_tick: Optional[float] = None
        self._period = config.heartbeat_interval
        self._z_dead = _z_for(config.phi_threshold)
        self._z_suspect = _z_for(config.phi_threshold / 2)
        self.records_refused = 0
        self.seeds = tuple(config.seeds)
        self._check_meta(self.meta)

    # -- our own record --------------------------------------------------------
    @staticmethod
    def _check_meta(meta: Mapping[str, str]) -> None:
        for k, v in meta.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError("member metadata maps str to str")

    def record_value(self) -> bytes:
        body: Dict[str, Any] = {
            "a": format_address(self.addr),
            "s": LEFT if self.left else ALIVE,
            "p": self._period,
        }
        if self.meta:
            body["m"] = self.meta
        value = json.dumps(body, separators=(",", ":"), sort_keys=True).encode("utf-8")
        if len(value) > MAX_RECORD_BYTES:
            raise ValueError(f"member record of {len(value)} bytes (max {MAX_RECORD_BYTES})")
        return value

    def set_meta(self, key: str, value: Optional[str], now: float) -> None:
        meta = dict(self.meta)
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
        self._check_meta(meta)
        old, self.meta = self.meta, meta
        try:
            self.beat(now, news=True)
        except ValueError:
            self.meta = old
            raise

    def beat(self, now: float, news: bool = False) -> None:
        """Write our record: a heartbeat, or ``news`` (a join, a change, a
        refutation, a leave: spread with the whole fanout)."""
        self._beat_at = now
        self.core._set_reserved(MEMBER_PREFIX + self.node_id, self.record_value(), now, news)

    def heartbeat_period(self) -> float:
        """``heartbeat_interval``, stretched in large clusters so that all
        members' heartbeats together bring a node about ``heartbeat_budget``
        records per gossip interval."""
        return self._period

    def _update_period(self) -> None:
        """The period, a power-of-two multiple of ``heartbeat_interval`` (so it
        changes seldom); the record states it, and others judge by it."""
        cfg = self.config
        n = 1 + self.alive_count()
        want = n * self.core.limits.gossip_interval / cfg.heartbeat_budget
        period = cfg.heartbeat_interval
        while period < want:
            period *= 2
        self._period = period

    def leave(self, now: float) -> None:
        self.left = True
        self.beat(now, news=True)

    # -- what the table applied -------------------------------------------------
    def applied(self, entries: List[Any], now: float) -> int:
        """Records and statements the table just applied (captured), in order;
        returns how many were news (not a mere heartbeat) for the round's fanout."""
        news = 0
        for e in entries:
            try:
                news += self._apply_one(e, now)
            except Exception:  # one bad entry must not cut off the rest of the batch
                self.records_refused += 1
                log.exception("%s: membership could not take %r", self.node_id, e.key)
        return news

    def _apply_one(self, e: Any, now: float) -> int:
        key = e.key
        if key.startswith(DEAD_PREFIX):
            self._statement(key[len(DEAD_PREFIX) :], e, now)
            return 1
        if not key.startswith(MEMBER_PREFIX):
            return 0
        node_id = key[len(MEMBER_PREFIX) :]
        if node_id == self.node_id:
            if e.origin != self.origin:
                self._refute(e, now)
            return 0
        return self._record(node_id, e, now)

    def _statement(self, node_id: str, e: Any, now: float) -> None:
        """Some node stated that ``node_id``'s life (the value) is dead. When it
        names the life we know and is newer than the newest heartbeat of it we
        hold, the member becomes suspect here and is probed at once: our own
        two refusals make it dead (one node's view of the network is not taken
        on trust). The member itself refutes it with a new heartbeat."""
        value = e.value
        if not isinstance(value, bytes) or not value:
            return
        origin = value.decode("utf-8", "replace")
        if node_id == self.node_id:
            if origin == self.origin and not self.left:
                self._refuted_at = now
                self.beat(now, news=True)  # (our clock has seen the statement: we win)
            return
        m = self.members.get(node_id)
        if m is None or m.origin != origin or m.status in (DEAD, LEFT):
            return
        if e.version <= m.version:
            return  # we hold a heartbeat newer than the statement
        # (a statement dated ahead counts only up to what our clock would
        # follow: the member's refutation, from a clock that saw it, beats that)
        m.evidence = max(m.evidence, min(e.version, self.core._skews_ahead(now, 1)))
        if m.status == ALIVE:
            self._set_status(m, SUSPECT, now)
        m.direct = True  # probed first every round while suspect (suspects())

    def _refute(self, e: Any, now: float) -> None:
        """Someone wrote our record (a marker, or another process with our
        node id): rewrite it, at most once per heartbeat period."""
        if now - self._refuted_at < self.heartbeat_period() and e.value != b"":
            self.core.logs.log(
                logging.ERROR,
                "node-id",
                now,
                "%s: another node (%s) writes under this node id; node ids must be unique",
                self.node_id,
                e.origin,
            )
            return
        self._refuted_at = now
        self.beat(now, news=True)

    def _record(self, node_id: str, e: Any, now: float) -> int:
        m = self.members.get(node_id)
        value = e.value
        if value == b"" or not isinstance(value, bytes):
            # a marker: the member was forgotten by some node; we forget it too
            # once we also hold it dead or left (a live one rewrites its record)
            if m is not None and m.status in (DEAD, LEFT):
                self._forget(m, now, write=False)
            return 1
        if e.origin.rpartition("#")[0] != node_id:
            self.records_refused += 1  # a record only its own member may write
            return 0
        if m is not None and value == m.value and e.origin == m.origin:
            if e.version > m.version:
                m.version = e.version
            self._heard(m, now, heartbeat=True, version=e.version)
            return 0
        if (
            m is not None
            and e.origin != m.origin
            and _life(e.origin) < _life(m.origin)
            and m.status in (ALIVE, SUSPECT)
            and now - m.heard < 2 * max(m.period, self._period)
        ):
            # an older life than the one we know, which is alive: two processes
            # run this node id (the newest keeps it; the other's records are
            # not taken while it lives; a restart whose clock went back is
            # taken once the newer life falls silent)
            self.records_refused += 1
            self.core.logs.log(
                logging.WARNING,
                "twin",
                now,
                "%s: two processes write node id %r (%s and %s); node ids must be unique",
                self.node_id,
                node_id,
                e.origin,
                m.origin,
            )
            return 0
        if m is None and len(self.members) >= self.config.max_members:
            self.records_refused += 1
            self.core.logs.log(
                logging.WARNING,
                "members",
                now,
                "%s: more than max_members=%d members: the record of %r is not taken",
                self.node_id,
                self.config.max_members,
                node_id,
            )
            return 0
        try:
            if len(value) > MAX_RECORD_BYTES:
                raise ValueError("record too large")
            body = json.loads(value)
            if not isinstance(body, dict) or not isinstance(body.get("a"), str):
                raise ValueError("not a record")
            addr = _parse_address(body["a"])
            status = body["s"]
            meta = body.get("m", {})
            period = float(body.get("p", 0.0))
            if status not in (ALIVE, LEFT) or not isinstance(meta, dict):
                raise ValueError("bad status or metadata")
            if not 0.0 <= period <= 86400.0:
                raise ValueError("bad period")
            self._check_meta(meta)
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError):
            self.records_refused += 1
            return 0
        new_life = m is None or e.origin != m.origin
        if m is None:
            m = self.members[node_id] = _Member(node_id)
        if new_life:
            m.detector = None
            m.refusals = 0
            m.evidence = 0
            m.direct = False
        old_addr = m.addr
        m.origin, m.addr, m.value, m.version = e.origin, addr, value, e.version
        m.meta = MappingProxyType(meta)  # (shared by every view and event: read-only)
        m.period = period
        if m.detector is not None:
            m.detector.period = self._stated(m)
        if old_addr != addr:
            if old_addr[1] or old_addr[0]:
                self._unadvertise(old_addr, node_id)
                self._release(old_addr, node_id)
            self._at.setdefault(addr, {})[node_id] = None
            self.by_addr[addr] = node_id
        if new_life:
            m.status = LEFT if status == LEFT else ALIVE
            if m.status == LEFT:
                self._gone[node_id] = m
            else:
                self._gone.pop(node_id, None)
            self._suspected.pop(node_id, None)
            m.since = now
            self._heard(m, now, heartbeat=True)
            self._event("joined", m, now)
            if m.status == LEFT:
                self._event("left", m, now)
        elif status == LEFT:
            if m.status != LEFT:
                self._set_status(m, LEFT, now)
        elif m.status == LEFT:
            # the same life says alive again after a left (a forged left that
            # it refuted: a member that leaves never writes alive again)
            self._set_status(m, ALIVE, now)
            self._heard(m, now, heartbeat=True, version=e.version)
        else:
            self._heard(m, now, heartbeat=True, version=e.version)
        if m.status in (ALIVE, SUSPECT):
            holder = self.members.get(self.by_addr.get(addr, ""))
            if holder is None or holder is m or holder.status not in (ALIVE, SUSPECT):
                self.by_addr[addr] = node_id  # (a new life at the old address, say)
            self._at.setdefault(addr, {})[node_id] = None
            self.core._member_peer(addr, True)
        else:
            self._release(addr, node_id)
        return 1

    def _stated(self, m: _Member) -> float:
        """The period ``m``'s record states, taken up to 4 times what our own
        member count gives (a record cannot make a member immune to silence)."""
        return min(m.period, 4 * self._period)

    def _unadvertise(self, addr: Address, node_id: str) -> None:
        """``node_id`` no longer advertises ``addr`` (the address index)."""
        holders = self._at.get(addr)
        if holders is not None:
            holders.pop(node_id, None)
            if not holders:
                del self._at[addr]

    def _release(self, addr: Address, node_id: str) -> None:
        """``node_id`` no longer needs ``addr`` (it moved, died, left or was
        forgotten): stop gossiping with the address unless another live
        member advertises it too."""
        for other_id in self._at.get(addr, ()):
            other = self.members.get(other_id)
            if (
                other is not None
                and other_id != node_id
                and other.addr == addr
                and other.status in (ALIVE, SUSPECT)
            ):
                self.by_addr[addr] = other_id
                return
        if self.by_addr.get(addr) == node_id:
            del self.by_addr[addr]
        self.core._member_peer(addr, False)

    # -- evidence ----------------------------------------------------------------
    def heard_from(self, node_id: str, now: float) -> None:
        """A frame came straight from ``node_id`` (on a connection it greeted):
        it clears a suspicion, not a dead verdict (only a heartbeat newer than
        the verdict does: a greeting proves no life, and a restart greets
        under the old id before its new record arrives)."""
        m = self.members.get(node_id)
        if m is not None and m.status != DEAD:
            self._heard(m, now, heartbeat=False)

    def _heard(self, m: _Member, now: float, heartbeat: bool, version: int = -1) -> None:
        if m.status == LEFT:
            return
        if version >= 0 and version <= m.evidence:
            return  # not after the evidence against it: no news of its life
        if heartbeat:
            if m.detector is None:
                cfg = self.config
                m.detector = PhiDetector(
                    now, self._stated(m) or self._period, cfg.acceptable_pause, cfg.min_std
                )
                m.detector.period = self._stated(m)
            else:
                m.detector.arrived(now)
        if now > m.heard:
            m.heard = now
            m.stall_at_heard = self._stall
        m.refusals = 0
        m.direct = False
        if m.status in (SUSPECT, DEAD):
            self._set_status(m, ALIVE, now)
        self._schedule(m, now)

    def dial_failed(self, addr: Address, refused: bool, now: float) -> None:
        node_id = self.by_addr.get(addr)
        m = self.members.get(node_id) if node_id is not None else None
        if m is None or m.status in (DEAD, LEFT) or not refused:
            return
        if not m.refusals:
            m.refusals = 1
            m.refused_at = now  # (the first refusal: the next counts an interval after it)
        elif now - m.refused_at >= self.core.limits.gossip_interval:
            m.refusals += 1
        m.evidence = max(m.evidence, self.core.clock.now())
        m.direct = True
        stated = self.core.state.get_entry(DEAD_PREFIX + m.node_id)
        own = m.origin.encode("utf-8")
        # a statement about this life newer than its newest heartbeat we hold
        standing = stated is not None and stated.value == own and stated.version > m.version
        if m.refusals >= 2 or standing:
            # two refusals of our own, or one that confirms a statement
            self._set_status(m, DEAD, now)
            if not standing:
                # direct evidence: tell the cluster (a node that only hears
                # silence does not: silence is everyone's to judge)
                self.core._set_reserved(DEAD_PREFIX + m.node_id, own, now, True)
        elif m.status == ALIVE:
            self._set_status(m, SUSPECT, now)

    def wants_probe(self, addr: Address) -> bool:
        """Whether a link to ``addr`` that its far end closed should be
        redialled at once (to learn whether the member is still there)."""
        node_id = self.by_addr.get(addr)
        m = self.members.get(node_id) if node_id is not None else None
        return m is not None and m.status in (ALIVE, SUSPECT)

    def suspects(self) -> List[Address]:
        """Addresses of suspected members, probed every round (at most 16):
        a frame from one clears it."""
        # those suspected on direct evidence (refusals, a statement) all, and
        # first; then those suspected on silence
        out = [m.addr for m in self._suspected.values() if m.direct]
        for m in self._suspected.values():
            if len(out) >= 16:
                break
            if not m.direct:
                out.append(m.addr)
        return out

    # -- time ----------------------------------------------------------------------
    def _due(self, m: _Member) -> float:
        """When ``m``'s silence reaches its next verdict (suspect, or dead)."""
        assert m.detector is not None
        z = self._z_suspect if m.status == ALIVE else self._z_dead
        return m.heard + m.detector.silence_for(z) + (self._stall - m.stall_at_heard)

    def _schedule(self, m: _Member, now: float) -> None:
        if m.queued or m.detector is None or m.status in (DEAD, LEFT):
            return
        m.queued = True
        self._seq += 1
        heapq.heappush(self._heap, (self._due(m), self._seq, m.node_id))

    def _silence(self, m: _Member, now: float) -> float:
        """Time since we last heard ``m``, less the time we were stalled
        (including a stall still going on: a round overdue now)."""
        stall = self._stall - m.stall_at_heard
        if self._last_tick is not None:
            stall += max(
                0.0, now - self._last_tick - self.core.limits.gossip_interval * (1 + STALL_SLACK)
            )
        return max(0.0, now - m.heard - stall)

    def phi(self, m: _Member, now: float) -> float:
        if m.detector is None or m.status == LEFT:
            return 0.0
        return m.detector.phi(self._silence(m, now))

    def behind(self, seconds: float) -> None:
        """This node spent ``seconds`` receiving a slow answer (a catch-up
        over a slow link): the heartbeats it lacks are queued behind older
        entries, so that time is not counted as any member's silence (as
        rounds that ran late are not)."""
        self._stall += seconds

    def tick(self, now: float) -> None:
        interval = self.core.limits.gossip_interval
        if self._last_tick is not None:
            # lateness counts in proportion (a steady slowdown of every round
            # stretches relays as much as one long stall does), past a small slack
            late = now - self._last_tick - interval * (1.0 + STALL_SLACK)
            if late > 0:
                self._stall += late
        self._last_tick = now
        period = self._period
        self._update_period()
        if self._period != period:
            for each in self.members.values():
                if each.detector is not None:
                    each.detector.period = self._stated(each)
        if not self.left and (
            now - self._beat_at >= self._period * self._jitter or self._period != period
        ):
            # (a new period is told at once: others judge by it; the next beat
            # is 0.75-1.25 periods away, so that nodes started together drift
            # apart instead of beating in the same round forever; +-25 %, so
            # that at 2.5 rounds a period it lands on different rounds)
            self._jitter = 0.75 + self.core.rng.below(501) / 1000.0
            self.beat(now)
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, node_id = heapq.heappop(heap)
            m = self.members.get(node_id)
            if m is None:
                continue
            m.queued = False
            if m.detector is None or m.status in (DEAD, LEFT):
                continue
            silence = self._silence(m, now)
            if m.status == ALIVE and silence >= m.detector.silence_for(self._z_suspect):
                self._set_status(m, SUSPECT, now)
            if (
                m.status == SUSPECT
                and silence >= m.detector.silence_for(self._z_dead)
                and now - m.since >= self._min_suspicion
            ):
                # (suspect for a few rounds first: time for a probe's answer)
                self._set_status(m, DEAD, now)
            if m.status in (ALIVE, SUSPECT) and not m.queued:
                # not yet (it was heard, or we were stalled): look again then
                m.queued = True
                self._seq += 1
                heapq.heappush(heap, (max(self._due(m), now + interval / 2), self._seq, node_id))
        if self._gone and now >= self._gc_at:
            self._gc_at = now + 1.0  # (looked at once a second)
            grace = self.config.dead_node_grace
            for m in list(self._gone.values()):
                if now - m.since >= grace:
                    self._forget(m, now, write=True)

    def _set_status(self, m: _Member, status: str, now: float) -> None:
        if m.status == status:
            return
        old = m.status
        m.status = status
        m.since = now
        if status in (DEAD, LEFT):
            self._gone[m.node_id] = m
        else:
            self._gone.pop(m.node_id, None)
        if status == SUSPECT:
            self._suspected[m.node_id] = m
        else:
            self._suspected.pop(m.node_id, None)
        if status == DEAD:
            m.evidence = max(m.evidence, self.core.clock.now())
        if status == ALIVE:
            self._event("alive", m, now)
        else:
            self._event(status, m, now)
        if status in (DEAD, LEFT):
            self._release(m.addr, m.node_id)
        elif old in (DEAD, LEFT):
            self.by_addr[m.addr] = m.node_id
            self.core._member_peer(m.addr, True)
        self._schedule(m, now)

    def _forget(self, m: _Member, now: float, write: bool) -> None:
        if write:
            self.core._set_reserved(MEMBER_PREFIX + m.node_id, b"", now)
        self.members.pop(m.node_id, None)
        self._gone.pop(m.node_id, None)
        self._suspected.pop(m.node_id, None)
        self._unadvertise(m.addr, m.node_id)
        self._release(m.addr, m.node_id)
        self._event("forgotten", m, now)

    # -- views -----------------------------------------------------------------------
    def _view(self, m: _Member, now: float) -> Member:
        return Member(
            m.node_id, m.addr, m.status, m.meta, m.heard, round(self.phi(m, now), 3), m.origin
        )

    def _event(self, kind: str, m: _Member, now: float) -> None:
        self._emit(MemberEvent(kind, self._view(m, now), now))

    def me(self, now: float) -> Member:
        return Member(
            self.node_id,
            self.addr,
            LEFT if self.left else ALIVE,
            dict(self.meta),
            now,
            0.0,
            self.origin,
        )

    def view(self, now: float) -> List[Member]:
        out = [self.me(now)]
        out.extend(self._view(m, now) for m in self.members.values())
        out.sort(key=lambda m: m.node_id)
        return out

    def alive_count(self) -> int:
        """Members alive or suspect (itself not counted)."""
        return len(self.members) - len(self._gone)
