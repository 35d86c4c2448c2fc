"""GossipNode: a TCP gossip node sharing a last-write-wins key/value table.

Lifecycle: ``await GossipNode.start(config)`` binds and listens, then a round
timer runs. Each round the fanout policy says how many peers, the sampler says
which, and each chosen peer is sent this node's digest (per-origin high-water
marks) on a persistent connection. The peer answers with the entries this node
lacks and its own digest; this node answers with what the peer lacks
(push-pull anti-entropy, scuttlebutt-style). See docs/PROTOCOL.md.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from dataclasses import dataclass, field, fields, replace
from types import ModuleType
from typing import Any, Dict, List, Optional, Tuple, Union

from ._impl import load
from .clock import HybridClock
from .errors import NodeError
from .fanout import Fanout
from .protocol import GossipProtocol
from .replication import ReplicationLog

log = logging.getLogger("fastgossip")

Address = Tuple[str, int]
MAX_NODE_ID_BYTES = 255
Value = Union[int, bytes]

# A node writes under the origin "<node_id>#<life>", life being its start
# time (see _new_life): each run of a node id is a new origin. Watermarks
# count stamps per origin and assume that every node holds a prefix (by
# stamp) of each origin's entries; a node restarted under the same origin
# would break that (its new writes would sit above the old life's entries it
# has not received back yet, and its digest would claim those too).
LIFE_SEPARATOR = "#"
MAX_LIFE_CHARS = 10  # base 36 milliseconds: 8 digits until 2059, 10 for ~100,000 years
MAX_ORIGIN_BYTES = MAX_NODE_ID_BYTES + 1 + MAX_LIFE_CHARS
_DIGITS36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_last_life: Dict[str, int] = {}  # node id -> its latest life in this process

__all__ = ["GossipNode", "NodeConfig", "NodeStats", "node_of"]


def _new_life(node_id: str) -> str:
    """The start time in milliseconds, in base 36 (8 characters: it is in every
    digest), later than this node id's earlier lives in this process. A run in
    another process starts more than a millisecond after the last one ended."""
    life = max(time.time_ns() // 1_000_000, _last_life.get(node_id, 0) + 1)
    _last_life[node_id] = life
    digits = ""
    while life:
        life, d = divmod(life, 36)
        digits = _DIGITS36[d] + digits
    return digits


def node_of(origin: str) -> str:
    """The node id in an origin a node wrote under (``"<node_id>#<life>"``);
    any other origin unchanged."""
    head, sep, _life = origin.rpartition(LIFE_SEPARATOR)
    return head if sep else origin


@dataclass(frozen=True)
class NodeConfig:
    """How a node runs. ``NodeConfig.localhost("a")`` is enough to start one.

    ``fanout=None`` picks ``Fanout.default_for(number of peers)`` each round.
    ``max_clock_skew`` (seconds): a received version further than this ahead of
    the local wall clock is stored but not observed by the clock, so one bad
    version cannot drag every node's clock into the future.
    ``max_connections`` caps this node's outbound connections (one per peer at
    most): above it, the least recently used one is closed, and reopened when
    that peer is picked again. None means no cap. ``max_inbound`` caps the
    connections accepted at once; one more is closed as soon as it opens.
    A delta sent in answer to a digest is cut to ``max_delta_bytes`` minus what
    that connection has queued, and to ``max_buffered_bytes`` minus what all
    connections have queued: peers that ask and do not read cannot make the
    node buffer more than that in all: at that cap the connections holding the
    most queued bytes are aborted.
    ``retire_after`` (seconds, at least two gossip intervals): an origin that
    has held no key here and been sent no entry for this long is left out of
    this node's digests (None: never), so that the lives of restarted nodes do
    not stay in them forever.
    ``implementation`` is "cython", "python" or None (the process default, see
    ``fastgossip.IMPLEMENTATION``).
    """

    node_id: str
    bind: Address = ("127.0.0.1", 0)
    fanout: Optional[Fanout] = None
    gossip_interval: float = 0.2
    max_frame_size: int = 1 << 20
    max_delta_bytes: int = 32 << 20
    write_buffer_high: int = 4 << 20
    max_buffered_bytes: int = 256 << 20
    connect_timeout: float = 2.0
    reconnect_min: float = 0.05
    reconnect_max: float = 2.0
    max_connections: Optional[int] = 256
    max_inbound: Optional[int] = 1024
    max_clock_skew: float = 60.0
    retire_after: Optional[float] = 600.0
    seed: Optional[int] = None
    implementation: Optional[str] = None

    def __post_init__(self) -> None:
        if not isinstance(self.node_id, str) or not self.node_id:
            raise ValueError("node_id must be a non-empty str")
        if len(self.node_id.encode("utf-8")) > MAX_NODE_ID_BYTES:
            raise ValueError(f"node_id is longer than {MAX_NODE_ID_BYTES} UTF-8 bytes")
        for name in (
            "gossip_interval",
            "connect_timeout",
            "reconnect_min",
            "reconnect_max",
            "max_clock_skew",
        ):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        for name in ("max_delta_bytes", "write_buffer_high", "max_buffered_bytes"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be an int > 0, got {getattr(self, name)!r}")
        if not 64 <= self.max_frame_size <= 0xFFFFFFFF:
            raise ValueError("max_frame_size must be between 64 and 2**32-1 bytes")
        if self.implementation not in (None, "cython", "python"):
            raise ValueError(
                f"implementation must be 'cython', 'python' or None, not {self.implementation!r}"
            )
        if self.retire_after is not None and not (
            isinstance(self.retire_after, (int, float))
            and math.isfinite(self.retire_after)
            and self.retire_after > 0
        ):
            raise ValueError(
                f"retire_after must be None or a finite number > 0, got {self.retire_after!r}"
            )
        for name in ("max_connections", "max_inbound"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 or None (no cap)")
        if self.fanout is not None and not isinstance(self.fanout, Fanout):
            raise TypeError("fanout must be a Fanout (e.g. Fanout.bounded(3), Fanout.SQRT)")

    @classmethod
    def localhost(cls, node_id: str, port: int = 0, **kwargs: Any) -> NodeConfig:
        """A config listening on 127.0.0.1:port (0: the OS picks)."""
        return cls(node_id=node_id, bind=("127.0.0.1", port), **kwargs)

    def with_(self, **changes: Any) -> NodeConfig:
        return replace(self, **changes)


@dataclass
class NodeStats:
    """Counters of one node since it started."""

    bytes_sent: int = 0
    bytes_received: int = 0
    frames_sent: int = 0
    frames_received: int = 0
    connections_opened: int = 0
    connections_accepted: int = 0
    connect_failures: int = 0
    rounds: int = 0
    bad_frames: int = 0
    entries_merged: int = 0
    sends_dropped: int = 0
    connections_evicted: int = 0
    connections_refused: int = 0
    connections_shed: int = 0
    exchanges_skipped: int = 0

    def as_dict(self) -> Dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class _Quiet:
    """An origin that holds no key on this node (see _digest_watermarks)."""

    seen: int  # entries of it set or merged so far, when last looked at
    since: float  # when that count last changed
    window: float  # how long it must stay unchanged before the origin is left out
    left_out: bool = False


@dataclass
class _PeerLink:
    """This node's one outbound connection to a peer, and its backoff."""

    addr: Address
    proto: Optional[GossipProtocol] = None
    connecting: Optional[asyncio.Task] = None
    backoff: float = 0.0
    next_attempt: float = 0.0
    pending: List[Any] = field(default_factory=list)
    last_used: float = 0.0

    @property
    def connected(self) -> bool:
        return self.proto is not None and not self.proto.closed


class GossipNode:
    """A gossip node. Create with ``await GossipNode.start(config)``."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        impl = config.implementation
        self._codec: ModuleType = load("codec", impl)
        self._table_mod: ModuleType = load("table", impl)
        self._sampler_mod: ModuleType = load("sampler", impl)
        self.implementation: str = "python" if self._codec.__name__.endswith("_py") else "cython"
        self._state = self._table_mod.GossipState()
        self._rng = self._sampler_mod.XorShift64(config.seed)
        self._clock = HybridClock()
        self._origin = f"{config.node_id}{LIFE_SEPARATOR}{_new_life(config.node_id)}"
        # the origins that hold no key here, and when they may be left out of
        # digests: see _digest_watermarks
        self._quiet: Dict[str, _Quiet] = {}
        self.replication_log = ReplicationLog()
        self.stats = NodeStats()
        self._loop = asyncio.get_running_loop()
        self._server: Optional[asyncio.AbstractServer] = None
        self._links: Dict[Address, _PeerLink] = {}
        self._conns: set[GossipProtocol] = set()
        self._round_task: Optional[asyncio.Task] = None
        self._addr: Address = config.bind
        self._closed = False
        self._shut_down = False
        self._pongs: Dict[int, asyncio.Future[float]] = {}
        self._ping_seq = 0

    # -- lifecycle -----------------------------------------------------------
    @classmethod
    async def start(cls, config: NodeConfig) -> GossipNode:
        """Bind, listen and start gossiping; returns once listening."""
        node = cls(config)
        host, port = config.bind
        try:
            node._server = await node._loop.create_server(
                lambda: GossipProtocol(node, outbound=False), host, port, reuse_address=True
            )
        except OSError as exc:
            raise NodeError(
                f"cannot bind {host}:{port}: {exc.strerror or exc} (errno {exc.errno})"
            ) from exc
        sockname = node._server.sockets[0].getsockname()
        node._addr = (sockname[0], sockname[1])
        node._round_task = node._loop.create_task(node._round_loop())
        return node

    async def __aenter__(self) -> GossipNode:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.shutdown()

    async def shutdown(self) -> None:
        """Stop rounds, close the listener and every connection, free the port."""
        if self._shut_down:
            return
        self._shut_down = True
        await self._stop_tasks()
        if self._server is not None:
            self._server.close()
        conns = list(self._conns)
        for proto in conns:
            proto.close()
        if conns:
            waits = [asyncio.ensure_future(p.wait_closed()) for p in conns]
            await asyncio.wait(waits, timeout=1.0)
            for proto in conns:  # a peer that stops reading would hold close() forever
                if not proto.closed:
                    proto.abort()
            await asyncio.gather(*waits)
        if self._server is not None:
            await self._server.wait_closed()
        for fut in self._pongs.values():
            if not fut.done():
                fut.set_exception(NodeError(f"node {self.node_id!r} shut down"))
                fut.exception()  # retrieved: nobody may be waiting any more

    async def _stop_tasks(self) -> None:
        """Stop rounds and connection attempts (the first half of shutdown)."""
        self._closed = True
        tasks = [t for t in [self._round_task] if t is not None]
        tasks += [link.connecting for link in self._links.values() if link.connecting]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise NodeError(f"node {self.config.node_id!r} is shut down")

    # -- identity and peers ------------------------------------------------
    @property
    def node_id(self) -> str:
        return self.config.node_id

    @property
    def origin(self) -> str:
        """What this run of the node writes under: ``"<node_id>#<life>"``, a new
        life (start time) every start. Ties between equal versions are broken
        by origin; ``node_of(origin)`` gives the node id back."""
        return self._origin

    @property
    def addr(self) -> Address:
        """The (host, port) actually bound."""
        return self._addr

    @property
    def peers(self) -> List[Address]:
        return list(self._links)

    def add_peer(self, addr: Address) -> None:
        """Gossip with the node listening at ``addr`` (duplicates are ignored)."""
        self._check_open()
        host, port = addr
        key = (str(host), int(port))
        if key == self._addr or key in self._links:
            return
        self._links[key] = _PeerLink(key)

    def remove_peer(self, addr: Address) -> None:
        link = self._links.pop((str(addr[0]), int(addr[1])), None)
        if link is not None:
            if link.connecting is not None:
                link.connecting.cancel()
            if link.proto is not None:
                link.proto.close()

    # -- the table -----------------------------------------------------------
    def _check_size(self, key: str, value: Value) -> None:
        """Refuse an entry that no frame could carry (relayed by any node)."""
        if not isinstance(key, str):
            return  # the table raises the TypeError
        # a one-entry GossipBatch: 37 fixed bytes + sender + origin + key + value
        size = 37 + MAX_NODE_ID_BYTES + MAX_ORIGIN_BYTES
        size += len(key.encode("utf-8", "surrogatepass"))
        size += 4 + len(value) if isinstance(value, (bytes, bytearray)) else 8
        if size > self.config.max_frame_size:
            raise ValueError(
                f"entry of {size} bytes (key and value) does not fit one frame "
                f"(max_frame_size {self.config.max_frame_size})"
            )

    def set(self, key: str, value: Value) -> int:
        """Write ``key`` locally, versioned by this node's hybrid clock.

        Returns the version. The write reaches the peers in the next rounds.
        """
        self._check_open()
        self._check_size(key, value)
        version = self._clock.now()
        self._state.set(key, value, version, self._origin, version)
        return version

    def set_with_version(self, key: str, value: Value, version: int) -> bool:
        """Write with an explicit version; True when it won locally."""
        self._check_open()
        self._check_size(key, value)
        stamp = self._clock.now()
        changed = self._state.set(key, value, version, self._origin, stamp)
        self._observe(version)
        return bool(changed)

    def get(self, key: str) -> Optional[Value]:
        found = self._state.get(key)
        return None if found is None else found[0]

    def get_with_version(self, key: str) -> Optional[Tuple[Value, int]]:
        return self._state.get(key)

    def get_entry(self, key: str) -> Any:
        """The full entry (key, value, version, origin, stamp) or None; ``origin``
        is the writing node's origin, ``"<node_id>#<life>"`` (see ``node_of``)."""
        return self._state.get_entry(key)

    def state_len(self) -> int:
        return len(self._state)

    def keys(self) -> List[str]:
        return list(self._state.keys())

    def items(self) -> Dict[str, Value]:
        return {e.key: e.value for e in self._state}

    def watermarks(self) -> Dict[str, int]:
        return self._state.watermarks()

    def _observe(self, version: int) -> None:
        """Move the clock past ``version`` unless it is implausibly far ahead."""
        limit = (int(time.time() * 1000) + int(self.config.max_clock_skew * 1000)) << 16
        if version <= limit:
            self._clock.observe(version)

    def _observe_merged(self) -> None:
        self._observe(self._state.max_version)

    # -- rounds --------------------------------------------------------------
    async def _round_loop(self) -> None:
        interval = self.config.gossip_interval
        # de-synchronise nodes started together
        await asyncio.sleep(interval * (self._rng.below(1000) / 1000.0))
        while True:
            try:
                self.gossip_round()
            except Exception:  # a bug in a round must not kill the node
                log.exception("%s: gossip round failed", self.node_id)
            await asyncio.sleep(interval)

    def gossip_round(self) -> int:
        """Run one round now: send the digest to the peers the fanout picks.

        Returns how many peers were picked.
        """
        self._check_open()
        self.stats.rounds += 1
        links = list(self._links.values())
        if not links:
            return 0
        fanout = self.config.fanout or Fanout.default_for(len(links) + 1)
        k = fanout.resolve(len(links))
        if self.config.max_connections is not None:
            k = min(k, self.config.max_connections)  # don't evict this round's own links
        chosen = self._rng.sample(links, k)
        digest = None
        now = self._loop.time()
        patience = max(1.0, 4 * self.config.gossip_interval)
        for link in chosen:
            if link.connected:
                proto = link.proto
                assert proto is not None
                if proto.awaiting_since and now - proto.awaiting_since < patience:
                    # the last exchange's reply is still arriving: asking again
                    # would make the peer resend the same entries
                    self.stats.exchanges_skipped += 1
                    continue
                if digest is None:
                    digest = self._codec.encode(self._digest(reply=True))
                proto.ask(digest)
                link.last_used = now
            else:
                self._connect(link)
        return len(chosen)

    def _digest(self, reply: bool) -> Any:
        return self._codec.Digest(self.node_id, self._digest_watermarks(), reply)

    def _digest_watermarks(self) -> Dict[str, int]:
        """Per origin, the highest stamp seen; without the retired origins.

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
        retire_after = self.config.retire_after
        if retire_after is None:
            return self._state.watermarks()
        # at least two rounds: an origin that comes back is named in a digest
        retire_after = max(retire_after, 2 * self.config.gossip_interval)
        now = self._loop.time()
        quiet = self._quiet
        out = {}
        for origin, (watermark, live, seen) in self._state.origin_stats().items():
            if live:
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
                continue
            out[origin] = watermark
        return out

    # -- connections ---------------------------------------------------------
    def _connect(self, link: _PeerLink) -> None:
        if link.connecting is not None or self._closed:
            return
        if self._loop.time() < link.next_attempt:
            return
        link.connecting = self._loop.create_task(self._open(link))

    async def _open(self, link: _PeerLink) -> None:
        host, port = link.addr
        try:
            _, proto = await asyncio.wait_for(
                self._loop.create_connection(
                    lambda: GossipProtocol(self, outbound=True), host, port
                ),
                self.config.connect_timeout,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # OSError, timeout, a bad address...
            self.stats.connect_failures += 1
            self._schedule_retry(link)
            log.debug("%s: connect to %s:%s failed: %s", self.node_id, host, port, exc)
            return
        finally:
            link.connecting = None
        if self._closed or link.addr not in self._links:
            proto.close()
            return
        link.proto = proto  # (the backoff is reset when the peer answers: _handle)
        link.last_used = self._loop.time()
        self._evict_idle(keep=link)
        proto.peer = link.addr
        self.stats.connections_opened += 1
        # a new connection starts with an exchange, so a fresh peer catches up now
        proto.ask(self._codec.encode(self._digest(reply=True)))
        for msg in link.pending:
            proto.send(msg)
        link.pending.clear()

    def _evict_idle(self, keep: _PeerLink) -> None:
        """Close the least recently used outbound connections above the cap."""
        cap = self.config.max_connections
        if cap is None:
            return
        open_links = [lk for lk in self._links.values() if lk.connected and lk is not keep]
        excess = len(open_links) + 1 - cap
        if excess <= 0:
            return
        open_links.sort(key=lambda lk: lk.last_used)
        for lk in open_links[:excess]:
            proto, lk.proto = lk.proto, None
            if proto is not None:
                proto.close()
            self.stats.connections_evicted += 1

    def _schedule_retry(self, link: _PeerLink) -> None:
        cfg = self.config
        link.backoff = min(cfg.reconnect_max, max(cfg.reconnect_min, link.backoff * 2))
        jitter = 0.5 + self._rng.below(1000) / 1000.0
        link.next_attempt = self._loop.time() + link.backoff * jitter

    def _connection_made(self, proto: GossipProtocol) -> None:
        self._conns.add(proto)
        if not proto.outbound:
            self.stats.connections_accepted += 1
            cap = self.config.max_inbound
            inbound = sum(1 for p in self._conns if not p.outbound)
            if self._closed:
                proto.close()
            elif cap is not None and inbound > cap:
                self.stats.connections_refused += 1
                proto.abort()

    def _connection_lost(self, proto: GossipProtocol, exc: Optional[Exception]) -> None:
        self._conns.discard(proto)
        if proto.outbound:
            for link in self._links.values():
                if link.proto is proto:
                    link.proto = None
                    self._schedule_retry(link)
                    break

    def _buffered_total(self) -> int:
        """Bytes queued for sending over every connection."""
        total = 0
        for proto in self._conns:
            transport = proto.transport
            if transport is not None:
                total += transport.get_write_buffer_size()
        return total

    def _room(self, asking: GossipProtocol) -> int:
        """What all connections together may still queue (max_buffered_bytes).

        When nothing is left, the other connections holding the most queued
        bytes are aborted until half the cap is free: a peer that asks and
        does not read is the one whose bytes pile up, so a few of those cannot
        keep the node from answering everyone else. (A healthy peer aborted
        while its large answer drains reconnects and asks again.)
        """
        cap = self.config.max_buffered_bytes
        total = self._buffered_total()
        if total < cap:
            return cap - total
        queued = [
            (p.transport.get_write_buffer_size(), id(p), p)
            for p in self._conns
            if p is not asking and p.transport is not None
        ]
        queued.sort(reverse=True)
        for size, _, proto in queued:
            if size == 0 or total <= cap // 2:
                break
            proto.abort()
            total -= size
            self.stats.connections_shed += 1
        return cap - total

    # -- messages --------------------------------------------------------------
    def _handle(self, msg: Any, proto: GossipProtocol) -> None:
        codec = self._codec
        kind = type(msg)
        if kind is codec.Digest:
            if not msg.reply:
                proto.awaiting_since = 0.0  # our exchange on this connection is answered
                if proto.outbound:
                    # a peer that answers is healthy: redial it at once next
                    # time. (Reset on connect, a peer that accepts and drops
                    # every connection would be redialled at the minimum delay.)
                    link = self._links.get(proto.peer)
                    if link is not None and link.proto is proto:
                        link.backoff = 0.0
            if proto.paused:  # the peer is not reading: don't even build the reply
                self.stats.sends_dropped += 1
                return
            watermarks = dict(msg.watermarks)
            transport = proto.transport
            buffered = transport.get_write_buffer_size() if transport is not None else 0
            # this connection's share, and what all connections together may hold
            budget = min(self.config.max_delta_bytes - buffered, self._room(proto))
            frames = []
            if budget <= 0:
                self.stats.sends_dropped += 1
            else:
                try:
                    frames = self._state.delta_frames(
                        self.node_id, watermarks, self.config.max_frame_size, budget
                    )
                except ValueError as exc:  # our own entry that no frame holds
                    log.error("%s: cannot build a delta: %s", self.node_id, exc)
            # The digest goes out even without a delta: with it the peer sends
            # this node what it lacks, so a node out of room still learns.
            if msg.reply:
                frames.append(codec.encode(self._digest(reply=False)))
            proto.send_frames(frames)
        elif kind is codec.Gossip:
            # A single pushed write (the reference's message) is accepted as a
            # write with an explicit version made here: it gets this node's
            # origin and a stamp from this node's clock, so that it cannot move
            # a watermark past entries this node has not received.
            if self.set_with_version(msg.key, msg.value, msg.version):
                self.stats.entries_merged += 1
        elif kind is codec.Ping:
            proto.send(codec.Pong(self.node_id, msg.seq))
        elif kind is codec.Pong:
            fut = self._pongs.pop(msg.seq, None)
            if fut is not None and not fut.done():
                fut.set_result(self._loop.time())
        elif kind is codec.Replicate:
            ok = self.replication_log.offer(msg.index, msg.term, msg.checksum, msg.payload)
            proto.send(codec.ReplicateAck(self.node_id, msg.index, ok))
        elif kind is codec.ReplicateAck:
            log.debug("%s: ReplicateAck %r", self.node_id, msg)
        else:  # Entry or a future type: nothing to do
            log.debug("%s: ignoring %r", self.node_id, msg)

    async def ping(self, addr: Address, timeout: float = 2.0) -> float:
        """Round-trip time in seconds to the node at ``addr`` over its link."""
        self._check_open()
        key = (str(addr[0]), int(addr[1]))
        if key == self._addr:
            raise NodeError("a node cannot ping itself")
        self.add_peer(key)
        link = self._links[key]
        self._ping_seq += 1
        seq = self._ping_seq
        fut: asyncio.Future[float] = self._loop.create_future()
        self._pongs[seq] = fut
        started = self._loop.time()
        msg = self._codec.Ping(self.node_id, seq)
        if link.connected:
            link.proto.send(msg)  # type: ignore[union-attr]
        else:
            link.pending.append(msg)
            link.next_attempt = 0.0
            self._connect(link)
        try:
            return await asyncio.wait_for(fut, timeout) - started
        finally:
            self._pongs.pop(seq, None)

    def __repr__(self) -> str:
        host, port = self._addr
        state = "closed" if self._closed else "running"
        return f"<GossipNode {self.node_id!r} {host}:{port} {state} entries={self.state_len()}>"


def default_node_id() -> str:
    """A node id unique enough for a demo: host name and pid."""
    return f"{os.uname().nodename}-{os.getpid()}"
