"""The asyncio transport: connections, links, caps and flow control around a core.

``Transport`` drives a sans-IO ``GossipCore``: it feeds the core the frames
each connection receives and a tick every gossip interval, and carries out
what the core returns (send these frames, ask this peer, close that
connection). It owns everything about sockets:

* one persistent outbound connection per peer (a *link*), dialled when the
  core first asks that peer and redialled with exponential backoff and jitter;
* ``max_connections`` outbound and ``max_inbound`` accepted connections; at the
  inbound cap the accepted connection that made no progress longest is
  dropped for the newcomer, so a flood of idle sockets cannot take every slot;
* the process's file descriptors (``FdBudget``): the soft limit is raised to the
  hard one, and dials and accepts stop short of it, closing the least recently
  used link instead, so running out of descriptors never turns into a storm of
  errors;
* flow control: nothing is written to a peer that does not read (pause flag
  and buffer size), a delta is cut to the room left in that connection's write
  buffer, and all connections together queue at most ``max_buffered_bytes`` (at
  the cap the largest queues are aborted);
* input: every connection buffers at most one partial frame
  (``max_frame_size``), all together at most ``max_input_bytes`` (at the cap the
  largest partial frames are dropped with their connections), a frame must
  complete within ``frame_timeout`` and an accepted connection that sends
  nothing for ``idle_timeout`` is closed.

``GossipProtocol`` is the one asyncio Protocol for both directions: thin by
design (asyncpg's shape), ``data_received`` feeds the compiled decoder once
per chunk and hands the complete frames to the transport.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import ssl
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from .core import ASK, CLOSE, EVENT, SEND, GossipCore, RateLimitedLog
from .secure import (
    AuthError,
    Keyring,
    SentNonces,
    Session,
    TLSConfig,
    looks_encrypted,
    tls_identities,
)

log = logging.getLogger("fastgossip")

Address = Tuple[str, int]

__all__ = ["FdBudget", "GossipProtocol", "Transport", "TransportLimits"]


class FdBudget:
    """The file descriptors the fastgossip connections of this process may use.

    At first use the soft RLIMIT_NOFILE is raised to the hard limit where the
    OS allows it; ``limit`` is then the soft limit less a reserve for the rest
    of the program. Every node of the process shares it.
    """

    RESERVE = 64

    def __init__(self) -> None:
        self.in_use = 0  # sockets open: listeners and connections, both ends
        self.pending = 0  # descriptors held for dials in flight (see Transport._open)
        self.limit = self._compute()
        self.transports: Set[Transport] = set()
        # A dial to a listener of this process costs two descriptors, the second
        # when that listener accepts: until then it stays held. The dialling end's
        # local address names the connection on both sides.
        self.listeners: Set[Address] = set()
        self.accepted: Set[Any] = set()  # peer addresses of accepted connections
        self.expected: Dict[Any, float] = {}  # dialled, not yet accepted here: since
        self.logs = RateLimitedLog(log)
        # every connected link of the process, least recently used first
        self.lru: OrderedDict[_Link, None] = OrderedDict()

    @classmethod
    def _compute(cls) -> int:
        try:
            import resource
        except ImportError:  # pragma: no cover - not POSIX
            return 1 << 30
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = 1 << 20
        if soft == resource.RLIM_INFINITY:
            soft = 1 << 20
        if soft < hard:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
                soft = hard
            except (ValueError, OSError):  # pragma: no cover - not allowed here
                pass
        return max(16, soft - min(cls.RESERVE, soft // 4))

    def free(self) -> int:
        return self.limit - self.in_use - self.pending

    def expire(self, now: float, after: float) -> None:
        """Forget dials whose accepting end never showed up (refused, or the
        listener's accept failed) after ``after`` seconds."""
        stale = [k for k, t in self.expected.items() if now - t > after]
        for k in stale:
            del self.expected[k]
            self.pending -= 1

    def make_room(self, asking: Transport) -> bool:
        """Try to free one descriptor by closing the least recently used idle
        link of any node in this process; True when one is free."""
        if self.free() > 0:
            return True
        now = asyncio.get_running_loop().time()
        best: Optional[_Link] = None
        for link in self.lru:  # least recently used first
            # a link younger than two rounds has not served yet: keep it (and
            # the ones after it, used later still)
            if now - link.last_used < 2 * link.interval:
                break
            if link.dials == 0 and link.proto is not None:
                best = link
                break
        if best is None:
            return False
        link = best
        proto = link.proto
        link.proto = None
        self.lru.pop(link, None)
        assert proto is not None
        proto.abort()
        asking.stats.connections_evicted += 1
        return True


FDS = FdBudget()


@dataclass(frozen=True)
class TransportLimits:
    """The transport's settings (``NodeConfig.transport_limits()`` makes one)."""

    max_frame_size: int
    max_delta_bytes: int
    write_buffer_high: int
    max_buffered_bytes: int
    max_input_bytes: int
    connect_timeout: float
    reconnect_min: float
    reconnect_max: float
    max_connections: Optional[int]
    max_inbound: Optional[int]
    idle_timeout: float
    frame_timeout: float
    gossip_interval: float


class _Link:
    """This node's one outbound connection to a peer, and its backoff."""

    __slots__ = (
        "addr",
        "proto",
        "connecting",
        "backoff",
        "next_attempt",
        "pending",
        "last_used",
        "dials",
        "interval",
    )

    def __init__(self, addr: Address, interval: float) -> None:
        self.addr = addr
        self.interval = interval  # the owner's gossip interval
        self.proto: Optional[GossipProtocol] = None
        self.connecting: Optional[asyncio.Task[None]] = None
        self.backoff = 0.0
        self.next_attempt = 0.0
        self.pending: List[bytes] = []  # frames to send once connected
        self.last_used = 0.0
        self.dials = 0

    @property
    def connected(self) -> bool:
        return self.proto is not None and not self.proto.closed


def stall_timeout(gossip_interval: float) -> float:
    """Seconds bytes this node sent may stay unacknowledged before the kernel
    drops the connection (TCP_USER_TIMEOUT): a link cut silently (packets
    dropped, no reset) is then redialled, not left to TCP's retransmission
    back-off, which would only give up after about 15 minutes and, once the
    cut heals, retransmit seconds later. Long enough for a slow or lossy
    link's recovery (a few retransmission timeouts)."""
    return max(3.0, 10 * gossip_interval)


def _abandon_stalled(transport: asyncio.BaseTransport, gossip_interval: float) -> None:
    option = getattr(socket, "TCP_USER_TIMEOUT", None)  # (Linux)
    sock = transport.get_extra_info("socket")
    if option is None or sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, option, int(stall_timeout(gossip_interval) * 1000))
    except OSError:
        pass  # (not where this kernel does not offer it)


class GossipProtocol(asyncio.Protocol):
    """One TCP connection of a node, inbound or outbound."""

    __slots__ = (
        "owner",
        "conn",
        "transport",
        "peer",
        "outbound",
        "paused",
        "closed",
        "decoder",
        "partial",
        "partial_since",
        "mid_frame",
        "last_frame_at",
        "closed_here",
        "_closed_fut",
        "sec",
        "ready",
        "early",
        "fresh",
        "opened_at",
        "authed",
        "identities",
        "_handshake",
    )

    def __init__(self, owner: Transport, outbound: bool) -> None:
        self.owner = owner
        self.outbound = outbound
        self.conn = 0
        self.transport: Optional[asyncio.Transport] = None
        self.peer: Any = None
        self.paused = False
        self.closed = False
        self.decoder = owner.codec.FrameDecoder(owner.limits.max_frame_size)
        self.partial = 0  # bytes of an incomplete frame the decoder holds
        self.partial_since = 0.0
        self.mid_frame = False  # (the core was told so: see _feed)
        self.last_frame_at = 0.0
        self.closed_here = False  # closed or aborted by this node (not its peer)
        self._closed_fut: asyncio.Future[None] = owner.loop.create_future()
        # security (see secure.py): the cluster-key session, whether the first
        # bytes are still to come (a node without a key recognises an encrypted
        # peer by them), and the names a TLS peer's certificate gives it
        keyring = owner.keyring
        self.sec: Optional[Session] = (
            Session(keyring, outbound, nonces=owner.sent_nonces) if keyring is not None else None
        )
        self.fresh = True
        # whether the core was told of this connection (make_ready): frames
        # that come before (a TLS peer's data right behind its Finished) wait
        # in ``early`` (at most max_frame_size), never read unchecked
        self.ready = False
        self.early = b""
        self.opened_at = owner.loop.time()
        self.authed = keyring is None and owner.tls is None
        self.identities: Optional[frozenset] = None
        # a dial waits on this: done when the session is established, or with
        # the AuthError / closed connection that ended it first
        self._handshake: Optional[asyncio.Future[None]] = None

    # -- asyncio callbacks -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peer = transport.get_extra_info("peername")
        high = self.owner.limits.write_buffer_high
        transport.set_write_buffer_limits(high=high, low=high // 4)  # type: ignore[attr-defined]
        _abandon_stalled(transport, self.owner.limits.gossip_interval)
        if self.owner.tls is not None:
            transport.pause_reading()  # type: ignore[attr-defined]  # (start_tls resumes it)
        elif self.sec is not None and self.outbound:
            hello = self.sec.start()
            self.owner.stats.bytes_sent += len(hello)
            transport.write(hello)  # type: ignore[attr-defined]
        self.owner.connection_made(self)

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        owner.stats.bytes_received += len(data)
        sec = self.sec
        if sec is not None:
            if self.closed_here:
                return
            was_open = sec.established
            try:
                data = sec.receive(data)
            except AuthError as exc:
                owner.auth_failed(self, exc)
                return
            if sec.out:
                self._write_raw(sec.out)
                sec.out = b""
            if not was_open and sec.established:
                owner.session_established(self)
        elif self.fresh:
            self.fresh = False
            if looks_encrypted(data) and self.authed:
                owner.auth_failed(
                    self, AuthError("the peer is encrypted and this node has no cluster_key")
                )
                return
        if not self.ready:
            if data:
                self.early += data
                if len(self.early) > owner.limits.max_frame_size:
                    owner.bad_input(self, ValueError("data before the connection was accepted"))
            return
        self._feed(data)

    def make_ready(self) -> None:
        """The core was told of this connection: read what waited, and what comes."""
        self.ready = True
        early, self.early = self.early, b""
        if early and not self.closed and not self.closed_here:
            self._feed(early)

    def _feed(self, data: bytes) -> None:
        owner = self.owner
        sec = self.sec
        if data:
            try:
                frames = self.decoder.feed_frames(data)
            except ValueError as exc:  # FrameError: a malformed stream
                owner.bad_input(self, exc)
                return
        else:
            frames = []
        partial = self.decoder.buffered + (sec.buffered if sec is not None else 0)
        # an answer still arriving: a frame (or a sealed record, up to 64 KiB)
        # in the making, or entries (not a trickle of small complete frames,
        # which would keep this node "catching up" for ever)
        mid = partial > 0
        if mid or self.mid_frame or any(f[5] == owner.core._batch_type for f in frames):
            owner.core.progress(self.conn, owner.now(), mid)
        self.mid_frame = mid
        if partial != self.partial:
            owner.input_changed(self, partial)
        if frames:
            self.last_frame_at = owner.loop.time()
            owner.frames_received(self, frames)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if isinstance(exc, OSError) and exc.errno == errno.ETIMEDOUT and not self.closed:
            self.owner.stats.timeouts += 1  # (stalled: see _abandon_stalled)
        self.closed = True
        if not self._closed_fut.done():
            self._closed_fut.set_result(None)
        self.settle(AuthError("the connection closed during the handshake"))
        self.owner.connection_lost(self)

    # -- sending -----------------------------------------------------------
    def _write_raw(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            self.owner.stats.bytes_sent += len(data)
            transport.write(data)

    def room(self) -> int:
        """Bytes an answer may still queue on this connection: max_delta_bytes
        less what is queued; 0 while the peer is not reading (paused)."""
        transport = self.transport
        if self.closed or self.paused or transport is None or transport.is_closing():
            return 0
        return max(0, self.owner.limits.max_delta_bytes - transport.get_write_buffer_size())

    def send_frames(self, frames: List[bytes]) -> bool:
        """Write already-encoded frames; False (and nothing written) when the
        peer is not reading fast enough or the connection is gone."""
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            return False
        # The buffer size is checked as well as the pause flag: writelines()
        # does not call pause_writing() on some CPython releases (gh-127655).
        stats = self.owner.stats
        if self.paused or transport.get_write_buffer_size() >= self.owner.limits.write_buffer_high:
            stats.sends_dropped += 1
            return False
        if not frames:
            return True
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        stats.frames_sent += len(frames)
        sec = self.sec
        if sec is not None:
            try:  # (the core sends only on connections whose session is established)
                data = sec.seal(data)
            except AuthError:  # its keys used up (MAX_RECORDS): redialled afresh
                stats.sends_dropped += 1
                self.close()
                return False
        stats.bytes_sent += len(data)
        self.owner.queued_estimate += len(data)
        transport.write(data)
        return True

    def close(self) -> None:
        self.closed_here = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        self.closed_here = True
        if self.transport is not None:
            self.transport.abort()

    async def wait_closed(self) -> None:
        await self._closed_fut

    def settle(self, exc: Optional[Exception] = None) -> None:
        """The handshake is over: established (None) or failed (``exc``)."""
        fut = self._handshake
        if fut is not None and not fut.done():
            if exc is None:
                fut.set_result(None)
            else:
                fut.set_exception(exc)
                fut.exception()  # (retrieved: a dial that gave up does not wait)

    async def established(self) -> None:
        """Wait until the cluster-key session is established (AuthError when it
        fails or the connection closes first)."""
        sec = self.sec
        if sec is None or sec.established:
            return
        if self.closed:
            raise AuthError("the connection closed during the handshake")
        if self._handshake is None:
            self._handshake = self.owner.loop.create_future()
        await self._handshake


def _file_stamp(path: str) -> Optional[Tuple[int, int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class Transport:
    """Connections of one node, driving its core (see the module docstring)."""

    def __init__(
        self,
        core: GossipCore,
        limits: TransportLimits,
        stats: Any,
        codec: Any,
        on_event: Callable[[str, Any], None],
        now: Callable[[], float] = time.time,
        keyring: Optional[Keyring] = None,
        tls: Optional[TLSConfig] = None,
        keyring_file: Optional[str] = None,
    ) -> None:
        self.core = core
        self.keyring = keyring
        self.sent_nonces = SentNonces()
        self.tls = tls
        self._tls_server: Optional[ssl.SSLContext] = None
        self._tls_client: Optional[ssl.SSLContext] = None
        if tls is not None:
            self._tls_server, self._tls_client = tls.contexts()
        self._keyring_file = keyring_file
        self._keyring_stat = _file_stamp(keyring_file) if keyring_file else None
        # (a key removed from another thread closes connections in the loop's)
        self._unsubscribe_keys = keyring.on_remove(self._key_removed_soon) if keyring else None
        # a dial includes its handshake: it gets the connect timeout twice
        secure = tls is not None or keyring is not None
        self._handshake_allowance = limits.connect_timeout if secure else 0.0
        self.limits = limits
        self.stats = stats
        self.codec = codec
        self.on_event = on_event
        self.now = now
        self.loop = asyncio.get_running_loop()
        self.links: Dict[Address, _Link] = {}
        self.conns: Dict[int, GossipProtocol] = {}
        self._next_conn = 0
        self._input_total = 0
        # an upper bound of the bytes queued on all connections: what was
        # written since it was last counted exactly (every round, or when it
        # nears max_buffered_bytes), so that answering costs O(1), not O(conns)
        self.queued_estimate = 0
        self._sweep_at = 0.0
        self._server: Optional[asyncio.AbstractServer] = None
        self._listen_fds = 0
        self._round_task: Optional[asyncio.Task[None]] = None
        self.addr: Address = ("", 0)
        self.closing = False
        self.logs = core.logs
        FDS.transports.add(self)

    # -- lifecycle ---------------------------------------------------------
    async def listen(self, host: str, port: int) -> Address:
        self._server = await self.loop.create_server(
            lambda: GossipProtocol(self, outbound=False), host, port, reuse_address=True
        )
        self._listen_fds = len(self._server.sockets)
        FDS.in_use += self._listen_fds
        sockname = self._server.sockets[0].getsockname()
        self.addr = (sockname[0], sockname[1])
        FDS.listeners.add(self.addr)
        self._round_task = self.loop.create_task(self._round_loop())
        return self.addr

    async def stop_tasks(self) -> None:
        """Stop rounds and dials (the first half of shutdown)."""
        self.closing = True
        tasks = [t for t in [self._round_task] if t is not None]
        tasks += [link.connecting for link in self.links.values() if link.connecting]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        await self.stop_tasks()
        FDS.listeners.discard(self.addr)
        if self._server is not None:
            self._server.close()
        conns = list(self.conns.values())
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
            FDS.in_use -= self._listen_fds
            self._listen_fds = 0
            self._server = None
        FDS.transports.discard(self)
        if self._unsubscribe_keys is not None:
            self._unsubscribe_keys()
            self._unsubscribe_keys = None

    # -- rounds ------------------------------------------------------------
    async def _round_loop(self) -> None:
        interval = self.limits.gossip_interval
        # de-synchronise nodes started together
        await asyncio.sleep(interval * (self.core.rng.below(1000) / 1000.0))
        while True:
            try:
                self.round()
            except Exception:  # a bug in a round must not kill the node
                log.exception("%s: gossip round failed", self.core.node_id)
            await asyncio.sleep(interval)

    def round(self) -> int:
        picked = self.core.tick(self.now())
        self.drive()
        now = self.loop.time()
        if now >= self._sweep_at:  # deadlines are tens of seconds: look once a second
            self._sweep_at = now + min(1.0, self.limits.frame_timeout / 4)
            self._sweep()
        return picked

    def _sweep(self) -> None:
        """Close connections past their idle, partial-frame or handshake
        deadline (a handshake, like a frame, must complete in frame_timeout)."""
        now = self.loop.time()
        idle, frame = self.limits.idle_timeout, self.limits.frame_timeout
        if self._keyring_file is not None:
            self._reload_keyring()
        for proto in list(self.conns.values()):
            if not proto.authed:  # (still in its handshake)
                if now - proto.opened_at > frame:
                    self.stats.timeouts += 1
                    proto.abort()
            elif proto.partial and now - proto.partial_since > frame:
                self.stats.timeouts += 1
                proto.abort()
            elif not proto.outbound and now - proto.last_frame_at > idle:
                self.stats.timeouts += 1
                proto.close()

    # -- the core's outputs ------------------------------------------------
    def drive(self) -> None:
        """Carry out what the core asked for."""
        for kind, target, payload in self.core.take():
            if kind == SEND:
                proto = self.conns.get(target)
                if proto is not None and not proto.send_frames(payload):
                    self.core.send_dropped(target)
            elif kind == ASK:
                self._ask(target, payload)
            elif kind == CLOSE:
                proto = self.conns.get(target)
                if proto is not None:
                    proto.close()
            elif kind == EVENT:
                if payload is not None and target == "answered":
                    link = self.links.get(payload)
                    if link is not None:
                        # a peer that answers is healthy: redial it at once next
                        # time. (Reset on connect, a peer that accepts and drops
                        # every connection would be redialled at the minimum delay.)
                        link.backoff = 0.0
                elif target == "unpeer":
                    self.forget(payload)
                    continue
                self.on_event(target, payload)

    def _link(self, addr: Address) -> _Link:
        """The link to ``addr``, made on first use."""
        link = self.links.get(addr)
        if link is None:
            link = self.links[addr] = _Link(addr, self.limits.gossip_interval)
        return link

    def _ask(self, addr: Address, frames: Optional[List[bytes]]) -> None:
        if addr not in self.links and not self.core.has_peer(addr):
            return  # removed meanwhile
        link = self._link(addr)
        link.last_used = self.loop.time()
        if link.connected:
            FDS.lru.move_to_end(link)
            if frames:
                assert link.proto is not None
                if not link.proto.send_frames(frames):
                    self.core.send_dropped(link.proto.conn)
            return
        self.connect(link)

    def send_when_connected(self, addr: Address, frames: List[bytes]) -> None:
        link = self._link(addr)
        if link.connected:
            assert link.proto is not None
            link.proto.send_frames(frames)
        else:
            link.pending.extend(frames)
            link.next_attempt = 0.0
            self.connect(link)

    async def open_direct(self, addr: Address, timeout: float) -> GossipProtocol:
        """A connection to ``addr`` that is no peer's link (for a ping); the core
        sees it as accepted. NodeError at once when it cannot be opened."""
        from .errors import NodeError

        try:
            proto = await asyncio.wait_for(self._dial(addr[0], addr[1]), timeout)
        except asyncio.TimeoutError:
            raise NodeError(f"cannot connect to {addr[0]}:{addr[1]}: timed out") from None
        except AuthError as exc:
            raise NodeError(f"cannot connect to {addr[0]}:{addr[1]}: {exc}") from exc
        except OSError as exc:
            raise NodeError(
                f"cannot connect to {addr[0]}:{addr[1]}: {exc.strerror or exc}"
            ) from exc
        if proto.closed or proto.closed_here:
            raise NodeError(f"cannot connect to {addr[0]}:{addr[1]}: closed after the handshake")
        self._admit(proto, outbound=True)
        self.drive()  # the greeting goes first
        return proto

    async def _dial(self, host: str, port: int) -> GossipProtocol:
        """A new outbound connection, authenticated: its TLS or cluster-key
        handshake done (AuthError when it fails, counted already)."""
        _, proto = await self.loop.create_connection(
            lambda: GossipProtocol(self, outbound=True), host, port
        )
        assert isinstance(proto, GossipProtocol)
        if self.tls is not None and not await self._start_tls(proto):
            raise AuthError(f"TLS handshake with {host}:{port} failed")
        try:
            await proto.established()
        except BaseException:
            proto.abort()  # (cancelled by the dial's timeout: nothing more of it)
            raise
        return proto

    def forget(self, addr: Address) -> None:
        link = self.links.pop(addr, None)
        if link is not None:
            FDS.lru.pop(link, None)
            if link.connecting is not None:
                link.connecting.cancel()
            if link.proto is not None:
                link.proto.close()

    # -- dialling ----------------------------------------------------------
    def connect(self, link: _Link) -> None:
        if link.connecting is not None or self.closing:
            return
        if self.loop.time() < link.next_attempt:
            return
        if FDS.expected:
            FDS.expire(self.loop.time(), self.limits.connect_timeout)
        if not FDS.make_room(self):
            self.stats.fd_limited += 1
            FDS.logs.log(
                logging.WARNING,
                "fds",
                self.now(),
                "%s: out of file descriptors (%d in use, limit %d): not dialling %s:%s; "
                "raise 'ulimit -n' or lower max_connections",
                self.core.node_id,
                FDS.in_use,
                FDS.limit,
                *link.addr,
            )
            self._schedule_retry(link)
            return
        link.connecting = self.loop.create_task(self._open(link))

    async def _open(self, link: _Link) -> None:
        host, port = link.addr
        link.dials += 1
        # a dial holds its descriptor until it is counted as a connection, and
        # one to a listener of this process the accepting end's too
        held = 2 if link.addr in FDS.listeners else 1
        FDS.pending += held
        try:
            proto = await asyncio.wait_for(
                self._dial(host, port), self.limits.connect_timeout + self._handshake_allowance
            )
        except asyncio.CancelledError:
            FDS.pending -= held
            raise
        except Exception as exc:  # OSError, timeout, a bad address...
            FDS.pending -= held
            self.stats.connect_failures += 1
            self._schedule_retry(link)
            refused = isinstance(exc, (ConnectionRefusedError, ConnectionResetError))
            self.core.dial_failed(link.addr, self.now(), refused)
            self.loop.call_soon(self.drive)
            if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
                self.stats.fd_limited += 1
                FDS.logs.log(
                    logging.WARNING,
                    "fds",
                    self.now(),
                    "%s: out of file descriptors dialling %s:%s (stats.fd_limited)",
                    self.core.node_id,
                    host,
                    port,
                )
            else:
                log.debug("%s: connect to %s:%s failed: %s", self.core.node_id, host, port, exc)
            return
        finally:
            link.connecting = None
            link.dials -= 1
        FDS.pending -= 1  # this end is counted now (connection_made)
        if held == 2:
            local = proto.transport.get_extra_info("sockname") if proto.transport else None
            if local in FDS.accepted:
                FDS.pending -= 1  # the accepting end is counted already
            else:
                FDS.expected[local] = self.loop.time()
        if (
            self.closing
            or self.links.get(link.addr) is not link
            or proto.closed
            or proto.closed_here
        ):
            proto.close()
            return
        link.proto = proto  # (the backoff is reset when the peer answers)
        link.last_used = self.loop.time()
        FDS.lru[link] = None
        proto.peer = link.addr
        self._evict_idle(keep=link)
        self.stats.connections_opened += 1
        self._admit(proto, peer=link.addr)
        self.drive()  # the greeting first
        if link.pending:
            pending, link.pending = link.pending, []
            proto.send_frames(pending)

    def _evict_idle(self, keep: _Link) -> None:
        """Close the least recently used outbound connections above the cap."""
        cap = self.limits.max_connections
        if cap is None:
            return
        open_links = [lk for lk in self.links.values() if lk.connected and lk is not keep]
        excess = len(open_links) + 1 - cap
        if excess <= 0:
            return
        open_links.sort(key=lambda lk: lk.last_used)
        for lk in open_links[:excess]:
            proto, lk.proto = lk.proto, None
            FDS.lru.pop(lk, None)
            if proto is not None:
                proto.close()
            self.stats.connections_evicted += 1

    def _schedule_retry(self, link: _Link) -> None:
        lim = self.limits
        link.backoff = min(lim.reconnect_max, max(lim.reconnect_min, link.backoff * 2))
        jitter = 0.5 + self.core.rng.below(1000) / 1000.0
        link.next_attempt = self.loop.time() + link.backoff * jitter

    # -- connection events -------------------------------------------------
    def connection_made(self, proto: GossipProtocol) -> None:
        self._next_conn += 1
        proto.conn = self._next_conn
        proto.last_frame_at = self.loop.time()
        self.conns[proto.conn] = proto
        FDS.in_use += 1
        if proto.outbound:
            return  # the core hears of it from _open, with the peer's address
        FDS.accepted.add(proto.peer)
        budgeted = FDS.expected.pop(proto.peer, None) is not None  # held by its dialler
        if budgeted:
            FDS.pending -= 1
        self.stats.connections_accepted += 1
        if self.closing:
            proto.close()
            return
        # Dials hold descriptors for the connections they will make (pending),
        # which an accepted one may use: past the real limit, or past the
        # inbound cap (at most half the descriptors, so that accepted
        # connections cannot take the links' share), the accepted connection
        # that has gone longest without a complete frame (over two rounds)
        # makes room; else the newcomer is refused. Outbound links are never
        # closed to let a stranger in.
        cap = max(8, FDS.limit // 2)
        if self.limits.max_inbound is not None:
            cap = min(cap, self.limits.max_inbound)
        over_fds = not budgeted and FDS.in_use > FDS.limit
        # (one shed a moment ago is still here until asyncio reports it lost:
        # a burst of accepts must not count it as room again)
        inbound = [
            p for p in self.conns.values() if not p.outbound and not p.closed and not p.closed_here
        ]
        if over_fds or len(inbound) > cap:
            others = [p for p in inbound if p is not proto]
            # a connection still in its handshake (cluster key or TLS) gets no
            # grace: the oldest goes first, so that a stranger who churns
            # unauthenticated connections must open max_inbound of them per
            # round trip to keep an honest newcomer out
            pending = [p for p in others if not p.authed]
            victim: Optional[GossipProtocol] = None
            if pending:
                victim = min(pending, key=lambda p: p.opened_at)
            elif others:
                stalest = min(others, key=lambda p: p.last_frame_at)
                if self.loop.time() - stalest.last_frame_at > 2 * self.limits.gossip_interval:
                    victim = stalest
            if victim is not None:
                self.stats.connections_shed += 1
                victim.abort()
            else:
                self.stats.connections_refused += 1
                proto.abort()
                return
        if self.tls is not None:  # the core hears of it once the peer is authenticated
            self.loop.create_task(self._accept_tls(proto))
            return
        self._admit(proto)

    def connection_lost(self, proto: GossipProtocol) -> None:
        if self.conns.pop(proto.conn, None) is None:
            return
        FDS.in_use -= 1
        if not proto.outbound:
            FDS.accepted.discard(proto.peer)
        if proto.partial:
            self._input_total -= proto.partial
            proto.partial = 0
        self.core.closed(proto.conn, self.now(), by_peer=not proto.closed_here)
        if proto.outbound:
            link = self.links.get(proto.peer)
            if link is not None and link.proto is proto:
                link.proto = None
                FDS.lru.pop(link, None)
                self._schedule_retry(link)
        self.drive()

    # -- security ------------------------------------------------------------
    def auth_failed(self, proto: GossipProtocol, exc: Exception) -> None:
        """A peer failed the handshake (or a sealed record did not open): count
        it, log it at a bounded rate, write the Refusal if any and close.
        Nothing it sent reached the decoder. (A node that dialled itself, its
        own ClientHello coming back, is counted as ``cluster_mismatch`` and
        logged at INFO, as a plaintext node's own greeting is: an address of
        its own among the seeds is no attack.)"""
        own = isinstance(exc, AuthError) and exc.own_hello
        if own:
            self.stats.cluster_mismatch += 1
        else:
            self.stats.auth_failures += 1
        self.logs.log(
            logging.INFO if own else logging.WARNING,
            "self" if own else "auth",
            self.now(),
            "%s: refusing %s connection %s: %s (stats.%s)",
            self.core.node_id,
            "outbound" if proto.outbound else "inbound",
            proto.peer,
            exc,
            "cluster_mismatch" if own else "auth_failures",
        )
        sec = proto.sec
        if sec is not None and sec.out:
            proto._write_raw(sec.out)
            sec.out = b""
            proto.close()  # (flushes the Refusal)
        else:
            proto.abort()
        proto.settle(AuthError(str(exc)))

    def session_established(self, proto: GossipProtocol) -> None:
        """``proto``'s peer is authenticated (cluster-key session or TLS)."""
        proto.authed = True
        proto.last_frame_at = self.loop.time()
        proto.settle()

    def _key_removed_soon(self, key: bytes) -> None:
        self.loop.call_soon_threadsafe(self._key_removed, key)

    def _key_removed(self, key: bytes) -> None:
        """A key left the keyring: close the connections opened with it (they
        are redialled with the primary key)."""
        for proto in list(self.conns.values()):
            if proto.sec is not None and proto.sec.key == key:
                proto.close()

    def _reload_keyring(self) -> None:
        path = self._keyring_file
        assert path is not None and self.keyring is not None
        stamp = _file_stamp(path)
        if stamp == self._keyring_stat:
            return
        self._keyring_stat = stamp
        try:
            fresh = Keyring.load(path)
        except (OSError, ValueError) as exc:
            self.logs.log(
                logging.WARNING,
                "keyring",
                self.now(),
                "%s: keeping the keyring in use: cannot read %s: %s",
                self.core.node_id,
                path,
                exc,
            )
            return
        self.keyring.replace(fresh)
        log.info("%s: keyring reloaded from %s (%d keys)", self.core.node_id, path, len(fresh))

    async def _start_tls(self, proto: GossipProtocol) -> bool:
        """Upgrade ``proto``'s connection to mutual TLS; False (the connection
        closed and counted) when the handshake fails."""
        raw = proto.transport
        assert raw is not None
        if proto.closed_here or raw.is_closing():  # shed before its handshake began
            self._lost_in_handshake(proto)
            return False
        ctx = self._tls_client if proto.outbound else self._tls_server
        timeout = self.limits.frame_timeout
        try:
            new = await asyncio.wait_for(
                self.loop.start_tls(
                    raw,
                    proto,
                    ctx,  # type: ignore[arg-type]
                    server_side=not proto.outbound,
                    ssl_handshake_timeout=timeout + 1.0,  # (ours below ends it first)
                ),
                timeout,
            )
        except asyncio.CancelledError:
            raw.abort()
            self._lost_in_handshake(proto)
            raise
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            raw.abort()
            if proto.closed_here:
                pass  # closed by this node meanwhile (shed, shutdown): not the peer's failing
            elif isinstance(exc, asyncio.TimeoutError):
                self.stats.timeouts += 1  # (as an unfinished cluster-key handshake)
            else:
                why = str(exc) or type(exc).__name__
                self.auth_failed(proto, AuthError(f"TLS handshake failed: {why}"))
            self._lost_in_handshake(proto)
            return False
        if new is None or proto.closed:
            self._lost_in_handshake(proto)
            return False
        proto.transport = new  # type: ignore[assignment]
        high = self.limits.write_buffer_high
        new.set_write_buffer_limits(high=high, low=high // 4)  # type: ignore[attr-defined]
        proto.identities = tls_identities(new.get_extra_info("peercert"))
        proto.fresh = False
        self.session_established(proto)
        return True

    def _admit(
        self, proto: GossipProtocol, peer: Optional[Address] = None, outbound: bool = False
    ) -> None:
        """Tell the core of an (authenticated) connection, then read what
        arrived before it knew (see GossipProtocol.make_ready)."""
        self.core.connected(
            proto.conn, self.now(), peer=peer, outbound=outbound, identities=proto.identities
        )
        proto.make_ready()

    def _lost_in_handshake(self, proto: GossipProtocol) -> None:
        """asyncio does not tell a protocol that its connection died during a
        TLS handshake: do it here, once."""
        if not proto.closed:
            proto.connection_lost(None)

    async def _accept_tls(self, proto: GossipProtocol) -> None:
        if await self._start_tls(proto):
            self._admit(proto)
            self.drive()

    # -- input -------------------------------------------------------------
    def bad_input(self, proto: GossipProtocol, exc: Exception) -> None:
        """A malformed frame, or a well-formed one carrying unusable values:
        drop that one connection."""
        self.stats.bad_frames += 1
        self.logs.log(
            logging.WARNING,
            "bad-frame",
            self.now(),
            "%s: closing connection from %s: bad frame: %s (stats.bad_frames)",
            self.core.node_id,
            proto.peer,
            exc,
        )
        proto.abort()

    def input_changed(self, proto: GossipProtocol, partial: int) -> None:
        """The bytes of an incomplete frame ``proto`` holds changed."""
        if not proto.partial and partial:
            proto.partial_since = self.loop.time()
        self._input_total += partial - proto.partial
        proto.partial = partial
        cap = self.limits.max_input_bytes
        if self._input_total > cap:
            # drop the connections holding the largest partial frames until
            # half the cap is free
            holders = sorted(
                (p for p in self.conns.values() if p.partial), key=lambda p: -p.partial
            )
            for p in holders:
                if self._input_total <= cap // 2:
                    break
                self._input_total -= p.partial
                p.partial = 0
                p.abort()
                self.stats.input_shed += 1

    def frames_received(self, proto: GossipProtocol, frames: List[bytes]) -> None:
        if proto.closed:
            return
        self.stats.frames_received += len(frames)
        batch = self.core._batch_type
        room = 0
        for frame in frames:
            if frame[5] != batch:  # something may be answered: measure the room
                room = min(proto.room(), self._room(proto))
                break
        try:
            self.core.receive(proto.conn, frames, self.now(), room)
        except (ValueError, TypeError) as exc:  # FrameError is a ValueError
            self.bad_input(proto, exc)
        except Exception:  # a bug of ours: lose this connection, never the node
            self.stats.bad_frames += 1
            log.exception("%s: error handling data from %s", self.core.node_id, proto.peer)
            proto.abort()
        self.drive()

    def buffered_total(self) -> int:
        """Bytes queued for sending over every connection."""
        total = 0
        for proto in self.conns.values():
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
        cap = self.limits.max_buffered_bytes
        if self.queued_estimate < cap // 2:
            return cap - self.queued_estimate
        total = self.queued_estimate = self.buffered_total()
        if total < cap:
            return cap - total
        queued = [
            (p.transport.get_write_buffer_size(), p.conn, p)
            for p in self.conns.values()
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
