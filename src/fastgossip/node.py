"""GossipNode: the facade users hold. It wires a sans-IO core to a transport.

Lifecycle: ``await GossipNode.start(config)`` binds and listens, then a round
timer runs. The gossip itself (digests, deltas, retirement, the clock, the
limits a hostile peer meets) is ``core.GossipCore``; sockets, links, caps and
flow control are ``transport.Transport``. See docs/PROTOCOL.md.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import errno
import functools
import ipaddress
import logging
import math
import os
import time
from dataclasses import dataclass, fields
from types import ModuleType
from typing import (
    Any,
    AsyncIterator,
    Callable,
    Deque,
    Dict,
    FrozenSet,
    Generic,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)

from ._impl import load
from ._table import MAX_NODE_ID_BYTES
from .clock import LOGICAL_BITS
from .core import EPHEMERAL_SUFFIX, LIFE_SEPARATOR, CoreLimits, GossipCore, horizon, node_of
from .durable import (
    FSYNC_POLICIES,
    KIND_BATCH,
    KIND_OWN,
    DataDir,
    DurabilityError,
    Journal,
    Recovered,
    meta_record,
    record,
)
from .errors import NodeError
from .fanout import Fanout
from .membership import RESERVED_PREFIX, Member, MemberEvent, MembershipConfig
from .replication import ReplicationLog
from .secure import Keyring, TLSConfig, as_keyring
from .transport import Transport, TransportLimits

Address = Tuple[str, int]
Value = Union[int, bytes]

_log = logging.getLogger("fastgossip")
_T = TypeVar("_T")

_DIGITS36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_last_life: Dict[str, int] = {}  # node id -> its latest life in this process

__all__ = [
    "Change",
    "GossipNode",
    "Member",
    "MemberEvent",
    "NodeConfig",
    "NodeStats",
    "node_of",
    "parse_address",
]


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


def parse_address(addr: Union[Address, str]) -> Address:
    """``(host, port)``, ``"host:port"`` or ``"[v6]:port"`` as a normalised
    ``(host, port)``: IP literals in their canonical form and ``localhost`` as
    ``127.0.0.1``, so that one peer is not counted twice. ValueError when the
    port is not an int in 1..65535 or the host is empty."""
    if isinstance(addr, str):
        text = addr.strip()
        if text.startswith("["):
            host, sep, rest = text[1:].partition("]")
            if not sep or not rest.startswith(":"):
                raise ValueError(f"bad address {addr!r}: expected '[v6-address]:port'")
            port_text = rest[1:]
        else:
            host, sep, port_text = text.rpartition(":")
            if not sep:
                raise ValueError(f"bad address {addr!r}: expected 'host:port'")
            if ":" in host:
                raise ValueError(f"bad address {addr!r}: write an IPv6 address as '[addr]:port'")
        try:
            port: Any = int(port_text)
        except ValueError:
            raise ValueError(f"bad port in {addr!r}: not an integer") from None
    else:
        try:
            host, port = addr
        except (TypeError, ValueError):
            raise ValueError(f"an address is (host, port) or 'host:port', not {addr!r}") from None
    if not isinstance(host, str) or not host:
        raise ValueError(f"bad address {addr!r}: empty or non-str host")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"bad address {addr!r}: port must be an int in 1..65535")
    return (_normal_host(host), port)


@functools.lru_cache(maxsize=4096)
def _normal_host(host: str) -> str:
    """An IP literal in canonical form, ``localhost`` as ``127.0.0.1``, any
    other name as given (cached: a full mesh of 1000 nodes parses a million)."""
    if host.lower() == "localhost":
        return "127.0.0.1"
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host  # a host name


@dataclass(frozen=True)
class NodeConfig:
    """How a node runs. ``NodeConfig.localhost("a")`` is enough to start one.

    Gossip: ``fanout=None`` picks ``Fanout.default_for(number of peers)`` each
    round; ``gossip_interval`` seconds between rounds.

    Clocks: ``max_clock_skew`` (seconds) is the most any two nodes' wall clocks
    may differ. An entry whose stamp is more than that ahead of this node's
    clock, or whose version is more than twice that ahead, is refused (it
    comes again once the clock has caught up), and the hybrid clock never
    follows a version further than that ahead.

    Bounds on what peers can make a node spend (docs/PROTOCOL.md, "Limits"):
    ``max_frame_size`` (whole frame, prefix included); ``max_delta_bytes`` per
    answer, never more than the room in that connection's write buffer
    (``write_buffer_high``); ``max_round_bytes``: what all answers to accepted
    connections may send in one round; ``max_buffered_bytes`` queued by all
    connections (at the cap the largest queues are aborted);
    ``max_input_bytes`` of partial frames held by all connections (at the cap
    the largest are dropped); ``frame_timeout`` for a frame to complete;
    ``idle_timeout`` for an accepted connection that sends nothing;
    ``max_connections`` outbound links (least recently used closed above it);
    ``max_inbound`` accepted connections (at the cap the one that made no
    progress longest makes room); ``max_keys`` / ``max_table_bytes`` for the
    table (None: unbounded; entries beyond are refused and counted);
    ``replication_leaders``: the leader ids whose ``Replicate`` is accepted
    (None: no replication; ``{"*"}``: any, one leader per term);
    ``max_log_entries`` / ``max_log_bytes`` for the replication log.

    ``retire_after`` (seconds, at least two gossip intervals): an origin that
    has held no key here and been sent no entry for this long is left out of
    this node's digests (None: never), so that the lives of restarted nodes do
    not stay in them forever.
    ``tombstone_grace`` (seconds): a deleted key's tombstone is collected
    this long after the delete; ``horizon_keep`` (seconds, at least the
    grace): how long a node remembers what it collected, so that a node cut
    off for less than that is reset rather than bringing deleted keys back
    (docs/PROTOCOL.md, "Tombstone collection").
    ``implementation`` is "cython", "python" or None (the process default, see
    ``fastgossip.IMPLEMENTATION``).

    Membership (docs/PROTOCOL.md, "Membership"): ``seeds``, addresses dialled
    until some member is known (any one that answers is enough: the others
    are learnt by gossip); ``advertise``, the address other members dial
    (default: the bound one; required when binding a wildcard address);
    ``cluster_id``, which nodes refuse each other's connections when theirs
    differ (None: the open cluster, which also takes peers that send no
    greeting); ``meta``, this member's metadata (str to str, see
    ``set_meta``); ``heartbeat_interval`` (None: 2.5 gossip intervals, at
    least 0.5 s; stretched in large clusters); ``phi_threshold``, the
    detector's level for dead (suspect at half); ``dead_node_grace``, how long
    a dead or left member is shown before it is forgotten everywhere.
    ``membership=False`` runs a node with static peers only, as before.

    Security (docs/PROTOCOL.md, "Security"): ``cluster_key``, a 32-byte key
    (raw or base64, see ``fastgossip keygen``), a list of keys (the primary
    first) or a ``Keyring``: every connection then starts with a handshake that
    proves both ends hold a key of the keyring and every frame is sealed with
    AES-256-GCM; nodes without a key of the keyring are refused. Or
    ``cluster_key_file``, a keyring file re-read when it changes (``fastgossip
    keyring``). ``fastgossip.keyring_from_env()`` reads FASTGOSSIP_CLUSTER_KEY.
    Or ``ssl=TLSConfig(certfile, keyfile, cafile)``: mutual TLS, each node's id
    checked against its certificate. A node has one of the three or none.
    """

    node_id: str
    bind: Address = ("127.0.0.1", 0)
    fanout: Optional[Fanout] = None
    gossip_interval: float = 0.2
    max_frame_size: int = 1 << 20
    max_delta_bytes: int = 32 << 20
    max_round_bytes: int = 16 << 20
    write_buffer_high: int = 4 << 20
    max_buffered_bytes: int = 256 << 20
    max_input_bytes: int = 64 << 20
    connect_timeout: float = 2.0
    reconnect_min: float = 0.05
    reconnect_max: float = 2.0
    idle_timeout: float = 120.0
    frame_timeout: float = 30.0
    max_connections: Optional[int] = 256
    max_inbound: Optional[int] = 1024
    max_clock_skew: float = 10.0
    retire_after: Optional[float] = 600.0
    tombstone_grace: float = 300.0
    horizon_keep: float = 3600.0
    max_keys: Optional[int] = None
    max_table_bytes: Optional[int] = None
    replication_leaders: Optional[FrozenSet[str]] = None
    max_log_entries: int = 10_000
    max_log_bytes: int = 64 << 20
    seed: Optional[int] = None
    implementation: Optional[str] = None
    seeds: Sequence[Union[Address, str]] = ()
    advertise: Optional[Union[Address, str]] = None
    cluster_id: Optional[str] = None
    meta: Mapping[str, str] = dataclasses.field(default_factory=dict)
    membership: bool = True
    heartbeat_interval: Optional[float] = None
    phi_threshold: float = 8.0
    dead_node_grace: float = 3600.0
    cluster_key: Optional[Union[bytes, str, Keyring, Sequence[Union[bytes, str]]]] = (
        dataclasses.field(default=None, repr=False)
    )
    cluster_key_file: Optional[str] = None
    ssl: Optional[TLSConfig] = None
    data_dir: Optional[str] = None
    fsync: str = "interval"
    fsync_interval: float = 0.1

    def __post_init__(self) -> None:
        if not isinstance(self.node_id, str) or not self.node_id:
            raise ValueError("node_id must be a non-empty str")
        if len(self.node_id.encode("utf-8")) > MAX_NODE_ID_BYTES:
            raise ValueError(f"node_id is longer than {MAX_NODE_ID_BYTES} UTF-8 bytes")
        if LIFE_SEPARATOR in self.node_id:
            raise ValueError(f"node_id must not contain {LIFE_SEPARATOR!r}")
        if self.fsync not in FSYNC_POLICIES:
            policies = ", ".join(FSYNC_POLICIES)
            raise ValueError(f"fsync must be one of {policies}, got {self.fsync!r}")
        for name in (
            "fsync_interval",
            "gossip_interval",
            "connect_timeout",
            "reconnect_min",
            "reconnect_max",
            "max_clock_skew",
            "idle_timeout",
            "frame_timeout",
        ):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        for name in (
            "max_delta_bytes",
            "max_round_bytes",
            "write_buffer_high",
            "max_buffered_bytes",
            "max_input_bytes",
            "max_log_entries",
            "max_log_bytes",
        ):
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
        for name in ("tombstone_grace", "horizon_keep"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        if self.horizon_keep < self.tombstone_grace:
            raise ValueError(
                f"horizon_keep ({self.horizon_keep}) must be at least tombstone_grace "
                f"({self.tombstone_grace})"
            )
        for name in ("max_connections", "max_inbound", "max_keys", "max_table_bytes"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 or None (no cap)")
        if self.fanout is not None and not isinstance(self.fanout, Fanout):
            raise TypeError("fanout must be a Fanout (e.g. Fanout.bounded(3), Fanout.SQRT)")
        if isinstance(self.seeds, (str, bytes)):
            raise TypeError("seeds is a list of addresses, not one str")
        object.__setattr__(self, "seeds", tuple(parse_address(a) for a in self.seeds))
        if self.advertise is not None:
            object.__setattr__(self, "advertise", parse_address(self.advertise))
        if self.cluster_id is not None and not isinstance(self.cluster_id, str):
            raise TypeError("cluster_id must be a str or None")
        for name in ("phi_threshold", "dead_node_grace"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if self.heartbeat_interval is not None and not (
            isinstance(self.heartbeat_interval, (int, float))
            and math.isfinite(self.heartbeat_interval)
            and self.heartbeat_interval > 0
        ):
            raise ValueError("heartbeat_interval must be None or a finite number > 0")
        object.__setattr__(self, "meta", dict(self.meta))
        chosen = [n for n in ("cluster_key", "cluster_key_file", "ssl") if getattr(self, n)]
        if len(chosen) > 1:
            raise ValueError(f"choose one of cluster_key, cluster_key_file and ssl, not {chosen}")
        if self.cluster_key is not None:
            as_keyring(self.cluster_key)  # a bad key is an error here, not at start
        if self.cluster_key_file is not None:
            object.__setattr__(self, "cluster_key_file", os.fspath(self.cluster_key_file))
        if self.ssl is not None and not isinstance(self.ssl, TLSConfig):
            raise TypeError("ssl is a fastgossip.TLSConfig(certfile, keyfile, cafile)")
        if self.replication_leaders is not None:
            if isinstance(self.replication_leaders, str):
                raise TypeError("replication_leaders is a set of leader ids, not one str")
            object.__setattr__(self, "replication_leaders", frozenset(self.replication_leaders))

    @classmethod
    def localhost(cls, node_id: str, port: int = 0, **kwargs: Any) -> NodeConfig:
        """A config listening on 127.0.0.1:port (0: the OS picks)."""
        return cls(node_id=node_id, bind=("127.0.0.1", port), **kwargs)

    def core_limits(self) -> CoreLimits:
        return CoreLimits(
            fanout=self.fanout,
            gossip_interval=self.gossip_interval,
            max_frame_size=self.max_frame_size,
            max_delta_bytes=self.max_delta_bytes,
            max_round_bytes=self.max_round_bytes,
            max_clock_skew=self.max_clock_skew,
            retire_after=self.retire_after,
            max_connections=self.max_connections,
            tombstone_grace=self.tombstone_grace,
            horizon_keep=self.horizon_keep,
        )

    def membership_config(self, addr: Address) -> MembershipConfig:
        """The membership settings, for a node advertising ``addr``."""
        heartbeat = self.heartbeat_interval
        if heartbeat is None:
            heartbeat = max(0.5, 2.5 * self.gossip_interval)
        return MembershipConfig(
            addr=addr,
            meta=dict(self.meta),
            seeds=tuple(self.seeds),  # type: ignore[arg-type]
            cluster_id=self.cluster_id,
            heartbeat_interval=heartbeat,
            phi_threshold=self.phi_threshold,
            acceptable_pause=max(0.5, 2 * self.gossip_interval),
            dead_node_grace=self.dead_node_grace,
        )

    def transport_limits(self) -> TransportLimits:
        return TransportLimits(
            max_frame_size=self.max_frame_size,
            max_delta_bytes=self.max_delta_bytes,
            write_buffer_high=self.write_buffer_high,
            max_buffered_bytes=self.max_buffered_bytes,
            max_input_bytes=self.max_input_bytes,
            connect_timeout=self.connect_timeout,
            reconnect_min=self.reconnect_min,
            reconnect_max=self.reconnect_max,
            max_connections=self.max_connections,
            max_inbound=self.max_inbound,
            idle_timeout=self.idle_timeout,
            frame_timeout=self.frame_timeout,
            gossip_interval=self.gossip_interval,
        )


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
    entries_refused: int = 0
    sends_dropped: int = 0
    connections_evicted: int = 0
    connections_refused: int = 0
    connections_shed: int = 0
    input_shed: int = 0
    timeouts: int = 0
    fd_limited: int = 0
    exchanges_skipped: int = 0
    exchanges_throttled: int = 0
    forged_stamps: int = 0
    cluster_mismatch: int = 0
    tombstones_collected: int = 0
    entries_expired: int = 0
    resets_sent: int = 0
    resets_received: int = 0
    resets_withheld: int = 0
    reset_drops: int = 0
    auth_failures: int = 0
    disk_flushes: int = 0
    disk_snapshots: int = 0
    disk_errors: int = 0

    def as_dict(self) -> Dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _is_wildcard(host: str) -> bool:
    """Whether ``host`` is an IP literal for every address (0.0.0.0, ::)."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False  # a host name


class Change(NamedTuple):
    """A change to a watched key, in the order this node applied it: ``kind``
    is ``set``, ``delete`` (``value`` None: a tombstone applied, or a key
    dropped by a reset), ``expire`` (``value`` None: its ttl passed, or an
    ephemeral key whose writer's life ended), or ``lagged`` when the watcher
    fell behind and changes were dropped (then ``value`` is how many, and
    ``key`` is empty). A named tuple: one is made per change told, and a
    tuple costs a fifth of a frozen dataclass."""

    key: str
    value: Any
    version: int
    origin: str
    kind: str = "set"


def _change(e: Any) -> Change:
    if e.value is None:
        # gone: a delete; or its ttl passed, or (under an ephemeral origin) its
        # writer's life ended
        kind = "expire" if e.expires or e.origin.endswith(EPHEMERAL_SUFFIX) else "delete"
        return Change(e.key, None, e.version, e.origin, kind)
    return Change(e.key, e.value, e.version, e.origin)


class _Feed(Generic[_T]):
    """One consumer's bounded queue of events, with a slot per key (``_key``).
    An item whose key is queued replaces it, at the latest position; when
    ``maxsize`` items are queued, another drops the oldest, counted and told
    by the item ``_lagged`` makes. ``close()`` queues the end (None)."""

    def __init__(self, maxsize: int) -> None:
        self.items: collections.OrderedDict[Any, Optional[_T]] = collections.OrderedDict()
        self.maxsize = max(1, maxsize)
        self.dropped = 0
        self.closed = False
        self._n = 0
        self._waiter: Optional[asyncio.Future[None]] = None

    def _key(self, item: _T) -> Any:
        self._n += 1  # (by default items never share a slot)
        return self._n

    def _lagged(self, dropped: int, head: Optional[_T]) -> _T:
        raise NotImplementedError

    def put(self, item: Optional[_T]) -> None:
        if self.closed:
            return
        key = None if item is None else self._key(item)
        if key in self.items:
            del self.items[key]  # coalesced: the latest item, at its latest position
        elif item is not None and len(self.items) >= self.maxsize:
            self.items.popitem(last=False)
            self.dropped += 1
        self.items[key] = item
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def close(self) -> None:
        self.put(None)
        self.closed = True

    async def get(self) -> Optional[_T]:
        while not self.items:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        if self.dropped:
            n, self.dropped = self.dropped, 0
            return self._lagged(n, next(iter(self.items.values())))
        return self.items.popitem(last=False)[1]

    async def stream(self) -> AsyncIterator[_T]:
        """The items, as they come, until the end (``close()``)."""
        while True:
            item = await self.get()
            if item is None:
                return
            yield item


class _ChangeQueue(_Feed[Change]):
    """One watcher's queue: one slot per key. A key changed again before the
    watcher read it is delivered once, with its latest change, at its latest
    position (so memory is bounded by ``maxsize`` keys, and the watcher always
    ends on the table's value); the lagged item is ``Change(kind="lagged")``."""

    def __init__(self, prefix: str, maxsize: int) -> None:
        super().__init__(maxsize)
        self.prefix = prefix

    def _key(self, item: Change) -> Any:
        return item.key

    def _lagged(self, dropped: int, head: Optional[Change]) -> Change:
        return Change("", dropped, 0, "", "lagged")


class _EventQueue(_Feed[MemberEvent]):
    """A consumer's member events, every one kept in order (no coalescing);
    the lagged item is ``MemberEvent("lagged", ...)`` with ``meta["dropped"]``."""

    def _lagged(self, dropped: int, head: Optional[MemberEvent]) -> MemberEvent:
        member = head.member if head is not None else Member("", ("", 0), "", {}, 0.0, 0.0)
        return MemberEvent(
            "lagged", dataclasses.replace(member, meta={"dropped": str(dropped)}), time.time()
        )


class GossipNode:
    """A gossip node. Create with ``await GossipNode.start(config)``."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        impl = config.implementation
        self._codec: ModuleType = load("codec", impl)
        table: ModuleType = load("table", impl)
        self.implementation: str = "python" if self._codec.__name__.endswith("_py") else "cython"
        self.stats = NodeStats()
        state = table.GossipState(max_keys=config.max_keys, max_bytes=config.max_table_bytes)
        # durable mode: the table, the life and the clocks come back from disk
        self._data: Optional[DataDir] = None
        self.recovered: Optional[Recovered] = None
        if config.data_dir is not None:
            self._data = DataDir(config.data_dir, config.node_id)
            try:
                self._init(config, table, state)
            except BaseException:
                self._data.close()  # (a failed start leaves the directory free)
                raise
        else:
            self._init(config, table, state)

    def _init(self, config: NodeConfig, table: ModuleType, state: Any) -> None:
        impl = config.implementation
        origin = ""
        if self._data is not None:
            # the guards a peer's batch met when it came
            max_stamp, max_version = horizon(time.time(), config.max_clock_skew)
            self.recovered = self._data.recover(
                state, config.max_frame_size, max_stamp, max_version
            )
            origin = self.recovered.origin or ""
        origin = origin or f"{config.node_id}{LIFE_SEPARATOR}{_new_life(config.node_id)}"
        self.replication_log = ReplicationLog(
            leaders=config.replication_leaders,
            max_entries=config.max_log_entries,
            max_bytes=config.max_log_bytes,
        )
        self._core = GossipCore(
            config.node_id,
            origin,
            config.core_limits(),
            self.stats,
            codec=self._codec,
            table=table,
            sampler=load("sampler", impl),
            seed=config.seed,
            replication=self.replication_log,
            state=state,
        )
        self._waiters: List[asyncio.Future[None]] = []
        self._data_closing = False
        self._flusher: Optional[asyncio.Task[None]] = None
        self._flush_wake: Optional[asyncio.Event] = None
        self._snapshot_owed = self.recovered is not None and not self.recovered.snapshot_bytes
        self._eager = config.fsync == "always" and self._data is not None
        self._retry_at = 0.0
        self._retry_after = 1.0
        if self.recovered is not None:
            core = self._core
            core.resume(self.recovered.version_floor, self.recovered.stamp_floor)
            core.journal = Journal()
            # this life's ephemeral keys end with its run, durable or not: the
            # restart deletes those it had (the cluster drops them everywhere)
            mine = origin + EPHEMERAL_SUFFIX
            now = time.time()
            for key in list(state.keys()):
                e = state.get_entry(key)
                if e is not None and e.origin == mine and e.value is not None:
                    core.delete(key, now)
        keyring: Optional[Keyring] = None
        if config.cluster_key is not None:
            keyring = as_keyring(config.cluster_key)
        elif config.cluster_key_file is not None:
            keyring = Keyring.load(config.cluster_key_file)
        self._keyring = keyring
        self._transport = Transport(
            self._core,
            config.transport_limits(),
            self.stats,
            self._codec,
            self._on_event,
            keyring=keyring,
            tls=config.ssl,
            keyring_file=config.cluster_key_file,
        )
        self._closed = False
        self._shut_down = False
        self._pongs: Dict[int, asyncio.Future[float]] = {}
        self._ping_seq = 0
        self._member_queues: List[_EventQueue] = []
        self._watchers: List[_ChangeQueue] = []
        self._pending: Deque[Tuple[str, Any]] = collections.deque()
        self._dispatching = False
        self._change_callbacks: List[Tuple[str, Callable[[Change], Any]]] = []
        self._member_callbacks: List[Callable[[MemberEvent], Any]] = []

    # -- lifecycle -----------------------------------------------------------
    @classmethod
    async def start(cls, config: NodeConfig) -> GossipNode:
        """Bind, listen and start gossiping; returns once listening."""
        node = cls(config)
        host, port = config.bind
        if node._data is not None:
            node._flush_wake = asyncio.Event()
            node._flusher = asyncio.ensure_future(node._flush_loop())
        try:
            await node._transport.listen(host, port)
        except OSError as exc:
            await node.shutdown()
            raise NodeError(
                f"cannot bind {host}:{port}: {exc.strerror or exc} (errno {exc.errno})"
            ) from exc
        if config.membership:
            advertise = config.advertise or node.addr
            if _is_wildcard(advertise[0]):
                await node.shutdown()
                raise NodeError(
                    f"bound to the wildcard {advertise[0]}: set advertise=(host, port), the "
                    "address other members dial"
                )
            node._core.enable_membership(config.membership_config(advertise), time.time())  # type: ignore[arg-type]
            node._transport.drive()
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
        self._closed = True
        await self._transport.close()
        await self._close_data()
        for queue in self._member_queues:
            queue.close()
        for watcher in self._watchers:
            watcher.close()
        for fut in self._pongs.values():
            if not fut.done():
                fut.set_exception(NodeError(f"node {self.node_id!r} shut down"))
                fut.exception()  # retrieved: nobody may be waiting any more

    # -- durable mode ----------------------------------------------------------
    async def sync(self) -> None:
        """Return once everything this node applied so far is on disk (durable
        mode; without a data directory it returns at once). Concurrent callers
        share one write and one fsync (group commit). Raises DurabilityError
        when the disk failed (the node keeps running, in memory)."""
        if self._data is None or self._flush_wake is None:
            return
        if self._data_closing:
            raise NodeError(f"node {self.node_id!r} is shut down")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._flush_wake.set()
        await fut

    def _wake_flusher(self) -> None:
        """fsync="always": a write goes to disk at once, not at the interval
        (writes made meanwhile share the next write and fsync)."""
        if self._flush_wake is not None:
            self._flush_wake.set()

    async def set_durable(
        self, key: str, value: Value, *, ttl: Optional[float] = None, ephemeral: bool = False
    ) -> int:
        """``set``, returning once the write is on disk (``await sync()``)."""
        version = self.set(key, value, ttl=ttl, ephemeral=ephemeral)
        await self.sync()
        return version

    async def delete_durable(self, key: str) -> int:
        """``delete``, returning once the tombstone is on disk."""
        version = self.delete(key)
        await self.sync()
        return version

    async def _flush_loop(self) -> None:
        assert self._flush_wake is not None
        wake = self._flush_wake
        interval = self.config.fsync_interval
        while True:
            try:
                await asyncio.wait_for(wake.wait(), interval)
            except asyncio.TimeoutError:
                pass
            wake.clear()
            if self._data_closing:
                return  # (never cancelled mid-write: _close_data flushes last)
            try:
                await self._flush()
            except Exception:  # a bug in a flush must not end durability silently
                _log.exception("%s: flushing to the data directory failed", self.node_id)

    async def _flush(self) -> None:
        """Write what was applied since the last flush: log records, or a new
        snapshot when the log has grown as large as the last one or entries
        were dropped (see durable.py); then wake the writers waiting on it."""
        data_dir, core = self._data, self._core
        journal = core.journal
        if data_dir is None or journal is None:
            return
        loop = asyncio.get_running_loop()
        if not self._waiters and not self._data_closing and loop.time() < self._retry_at:
            return  # (the disk failed lately: retried with back-off, or when asked)
        waiters, self._waiters = self._waiters, []
        if not journal and not waiters and not self._snapshot_owed:
            return
        try:
            await self._write_down(data_dir, journal, waiters)
        except BaseException as exc:
            # (a bug, or cancelled: the waiters must not wait for ever)
            self._snapshot_owed = True
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(DurabilityError(errno.EIO, f"flush failed: {exc!r}"))
            raise

    async def _write_down(
        self, data_dir: DataDir, journal: Journal, waiters: List[asyncio.Future[None]]
    ) -> None:
        core = self._core
        entries, frames, reshaped = journal.take()
        config = self.config
        margin = max(1000, int(10_000 * config.fsync_interval)) << LOGICAL_BITS
        floors = (core.clock.last + margin, core.last_stamp + margin)
        snapshot = reshaped or self._snapshot_owed or data_dir.snapshot_due()
        write: Callable[[bytes, bool], None]
        if snapshot:
            state = core.state
            gen = data_dir.generation + 1
            parts = [meta_record(self.node_id, core.origin, *floors, state.watermarks(), gen)]
            parts += [
                record(KIND_BATCH, f)
                for f in state.delta_frames(self.node_id, {}, config.max_frame_size)
            ]
            write = functools.partial(data_dir.write_snapshot, generation=gen)
        else:
            parts = [record(KIND_BATCH, f) for f in frames]
            parts += [record(KIND_OWN, f) for f in self._encode_own(entries)]
            parts.append(
                meta_record(self.node_id, core.origin, *floors, generation=data_dir.generation)
            )
            write = data_dir.append
        data = b"".join(parts)
        sync = config.fsync != "never"
        try:
            await asyncio.get_running_loop().run_in_executor(None, write, data, sync)
        except DurabilityError as exc:
            self.stats.disk_errors += 1
            self._retry_at = asyncio.get_running_loop().time() + self._retry_after
            self._retry_after = min(30.0, 2 * self._retry_after)
            # what was taken is lost to the disk: the next write is a whole
            # snapshot (memory stays bounded by the table, not the backlog)
            self._snapshot_owed = True
            _log.error("%s: %s; running in memory, retrying", self.node_id, exc)
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(DurabilityError(exc.errno, str(exc)))
            return
        self.stats.disk_flushes += 1
        self._retry_at, self._retry_after = 0.0, 1.0
        if snapshot:
            self.stats.disk_snapshots += 1
            self._snapshot_owed = False
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _encode_own(self, entries: List[Tuple[Any, ...]]) -> List[bytes]:
        """This node's own writes as batch frames (each under the frame size)."""
        codec = self._codec
        out: List[bytes] = []
        batch: List[Any] = []
        size, limit = 0, self.config.max_frame_size // 2
        for key, value, version, origin, stamp, expires in entries:
            batch.append(codec.Entry(key, value, version, origin, stamp, expires=expires))
            size += 64 + len(key) + len(origin) + (len(value) if isinstance(value, bytes) else 8)
            if size >= limit:
                out.append(codec.encode(codec.GossipBatch(self.node_id, batch)))
                batch, size = [], 0
        if batch:
            out.append(codec.encode(codec.GossipBatch(self.node_id, batch)))
        return out

    async def _close_data(self) -> None:
        """A last flush, then release the data directory."""
        if self._data is None:
            return
        self._data_closing = True
        if self._flusher is not None and self._flush_wake is not None:
            # the flusher ends after the write it may be in (a thread can't be
            # stopped mid-write, and two writers would interleave)
            self._flush_wake.set()
            try:
                await self._flusher
            except Exception:
                pass
            self._flusher = None
        try:
            await self._flush()
        finally:
            for fut in self._waiters:
                if not fut.done():
                    fut.set_exception(NodeError(f"node {self.node_id!r} shut down"))
            self._waiters = []
            self._data.close()

    async def stop_rounds(self) -> None:
        """Stop rounds and connection attempts, keep serving (the first half of
        shutdown: ``ClusterNetwork`` stops every node's dials before closing)."""
        self._closed = True
        await self._transport.stop_tasks()

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
        return self._core.origin

    @property
    def addr(self) -> Address:
        """The (host, port) actually bound."""
        return self._transport.addr

    @property
    def keyring(self) -> Optional[Keyring]:
        """The cluster keys this node accepts (None: no cluster key). Rotate
        with ``install`` / ``use`` / ``remove`` on every node (see Keyring)."""
        return self._keyring

    @property
    def peers(self) -> List[Address]:
        return self._core.peers

    def add_peer(self, addr: Union[Address, str]) -> None:
        """Gossip with the node listening at ``addr``: ``(host, port)``,
        ``"host:port"`` or ``"[v6]:port"`` (duplicates are ignored)."""
        self._check_open()
        key = parse_address(addr)
        if key != self.addr:
            self._core.add_peer(key)

    def remove_peer(self, addr: Union[Address, str]) -> None:
        key = parse_address(addr)
        self._core.remove_peer(key)
        self._transport.forget(key)
        self._transport.drive()

    # -- the table -----------------------------------------------------------
    def set(
        self, key: str, value: Value, *, ttl: Optional[float] = None, ephemeral: bool = False
    ) -> int:
        """Write ``key`` locally, versioned by this node's hybrid clock.

        Returns the version. The write reaches the peers in the next rounds.
        With ``ttl`` (seconds) the key expires everywhere at the same wall time
        (each node by its own clock: within ``max_clock_skew`` of each other);
        watchers see ``kind="expire"``.
        An ``ephemeral`` key lives as long as this node's life: when the
        cluster sees this node dead or left (or restarted), the key disappears
        on every node (watchers see ``kind="expire"``), and is collected
        ``tombstone_grace`` later. Its origin is ``origin + ".e"``.
        """
        self._check_open()
        version = self._core.set(key, value, time.time(), ephemeral, ttl)
        if self._eager:
            self._wake_flusher()
        if self._core.out:  # watchers' changes: told now, not at the next round
            self._transport.drive()
        return version

    def delete(self, key: str) -> int:
        """Delete ``key`` everywhere: a tombstone, versioned and spread as a
        write is (the newest of a delete and a write wins). Returns its
        version. ``get`` then returns None and ``keys``/``items`` leave the
        key out; ``get_entry`` shows the tombstone (value None) until it is
        collected, ``tombstone_grace`` later."""
        self._check_open()
        version = self._core.delete(key, time.time())
        if self._eager:
            self._wake_flusher()
        if self._core.out:
            self._transport.drive()
        return version

    def set_with_version(self, key: str, value: Value, version: int) -> bool:
        """Write with the caller's version; True when it changed the table.
        A version more than ``2 * max_clock_skew`` ahead of this node's clock
        is refused with ValueError (peers would refuse it)."""
        self._check_open()
        changed = self._core.set_with_version(key, value, version, time.time())
        if self._core.out:
            self._transport.drive()
        return changed

    @property
    def _state(self) -> Any:
        return self._core.state

    def _read(self) -> Any:
        """The table, judging expiries by now (exact reads; the pass that tells
        watchers runs each round)."""
        state = self._core.state
        if state.next_expiry:
            state.now_ms = int(time.time() * 1000)
        return state

    def get(self, key: str) -> Optional[Value]:
        found = self._read().get(key)
        return None if found is None else found[0]

    def get_with_version(self, key: str) -> Optional[Tuple[Value, int]]:
        return self._read().get(key)  # type: ignore[no-any-return]

    def get_entry(self, key: str) -> Any:
        """The full entry (key, value, version, origin, stamp, and ``expires``)
        or None; ``origin`` is the writing node's origin, ``"<node_id>#<life>"``
        (see ``node_of``); a tombstone's value is None."""
        return self._read().get_entry(key)

    def state_len(self) -> int:
        """How many keys the table holds (the cluster's own left out)."""
        if self._core.membership is None:  # (no capture: count them)
            return len(self.keys())
        return len(self._read()) - len(self._core.reserved_keys)

    def keys(self) -> List[str]:
        """Every key (the cluster's own, starting with ``"\\x00"``, left out)."""
        return [k for k in self._read().keys() if not k.startswith(RESERVED_PREFIX)]

    def items(self) -> Dict[str, Value]:
        """Every key and its value (tombstones and the cluster's own keys left out)."""
        return {e.key: e.value for e in self._read() if not e.key.startswith(RESERVED_PREFIX)}

    def peer_rtt(self) -> Dict[Address, float]:
        """Per peer address, the round-trip time of this node's exchanges with
        it (question to answer, smoothed; seconds): the link, the peer's work
        and, on a slow link, the answer's transfer."""
        return dict(self._core.rtt)

    def watermarks(self) -> Dict[str, int]:
        return self._core.state.watermarks()  # type: ignore[no-any-return]

    def digest_watermarks(self) -> Dict[str, int]:
        """The watermarks this node's digests carry now (retired origins left out)."""
        return self._core.digest_watermarks(time.time())

    def refusals(self) -> Dict[str, int]:
        """Entries the table refused, by cause (see docs/PROTOCOL.md, "Limits")."""
        return dict(self._core.state.refusals())

    # -- rounds --------------------------------------------------------------
    def gossip_round(self) -> int:
        """Run one round now: send the digest to the peers the fanout picks.

        Returns how many peers were picked.
        """
        self._check_open()
        return self._transport.round()

    # -- membership ------------------------------------------------------------
    def _membership(self) -> Any:
        m = self._core.membership
        if m is None:
            raise NodeError(f"node {self.node_id!r} runs without membership (membership=False)")
        return m

    def members(self) -> List[Member]:
        """Every member this node knows, itself included, sorted by node id:
        ``Member(node_id, addr, status, meta, last_heard, phi)``."""
        return self._membership().view(time.time())  # type: ignore[no-any-return]

    def member(self, node_id: str) -> Optional[Member]:
        """One member as this node sees it (itself included), or None."""
        m = self._membership()
        now = time.time()
        if node_id == self.node_id:
            return m.me(now)  # type: ignore[no-any-return]
        found = m.members.get(node_id)
        return None if found is None else m._view(found, now)

    def set_meta(self, key: str, value: Optional[str]) -> None:
        """Set (or with None remove) one item of this member's metadata; it
        reaches every member with the next rounds (ValueError past 2 KiB)."""
        self._check_open()
        self._membership().set_meta(key, value, time.time())
        self._transport.drive()

    @property
    def meta(self) -> Dict[str, str]:
        return dict(self._membership().meta)

    async def member_events(self, maxsize: int = 1024) -> AsyncIterator[MemberEvent]:
        """Member changes as they happen, in order, from the first iteration
        on (``async for ev in node.member_events()``). A consumer that falls
        ``maxsize`` events behind loses the oldest: the next event it gets is
        ``MemberEvent("lagged", ...)`` whose member's ``meta["dropped"]`` tells
        how many were lost. The iterator ends when the node shuts down."""
        queue = _EventQueue(maxsize)
        if self._shut_down:
            return
        self._member_queues.append(queue)
        try:
            async for ev in queue.stream():
                yield ev
        finally:
            if queue in self._member_queues:
                self._member_queues.remove(queue)

    def subscribe_members(self, callback: Callable[[MemberEvent], Any]) -> Callable[[], None]:
        """Call ``callback(event)`` for every member change, in order, from the
        event loop (an exception it raises is logged, never raised here).
        Returns a function that unsubscribes."""
        self._member_callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in self._member_callbacks:
                self._member_callbacks.remove(callback)

        return unsubscribe

    async def leave(self, timeout: Optional[float] = None) -> None:
        """Tell the cluster this node leaves: its record says ``left`` and is
        pushed to every live member at once; returns when they all answered,
        or after ``timeout`` (default: 1 s, at least 5 gossip intervals). Call
        ``shutdown()`` after (``async with`` does)."""
        self._check_open()
        self._membership()
        asked = self._core.leave(time.time())
        self._transport.drive()
        loop = self._transport.loop
        if timeout is None:
            timeout = max(1.0, 5 * self.config.gossip_interval)
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if all(not self._core.awaiting(addr) for addr in asked):
                break
            await asyncio.sleep(0.01)

    def _dispatch_member(self, ev: MemberEvent) -> None:
        for queue in self._member_queues:
            queue.put(ev)
        for callback in list(self._member_callbacks):
            try:
                callback(ev)
            except Exception:
                _log.exception("%s: a member event callback failed", self.node_id)

    # -- watching ----------------------------------------------------------------
    async def watch(self, prefix: str = "", maxsize: int = 10_000) -> AsyncIterator[Change]:
        """Changes to keys starting with ``prefix`` — local writes and entries
        merged from peers — in the order this node applied them, from the
        first iteration on (``async for ch in node.watch("svc/")``). The
        compiled table filters by prefix before any object is made. A slow
        consumer never slows the node: its queue holds ``maxsize`` changes;
        when full, a change to a key already queued replaces it (coalesced),
        and any other drops the oldest, told by a ``Change(kind="lagged")``
        whose ``value`` is how many. Ends when the node shuts down."""
        if self._shut_down:
            return
        queue = _ChangeQueue(prefix, maxsize)
        self._core.watch(prefix)
        self._watchers.append(queue)
        try:
            async for ch in queue.stream():
                yield ch
        finally:
            if queue in self._watchers:
                self._watchers.remove(queue)
                self._core.unwatch(prefix)

    def subscribe(self, prefix: str, callback: Callable[[Change], Any]) -> Callable[[], None]:
        """Call ``callback(change)`` for each change to a key starting with
        ``prefix``, in order, from the event loop (an exception it raises is
        logged). Returns a function that unsubscribes."""
        self._core.watch(prefix)
        item = (prefix, callback)
        self._change_callbacks.append(item)

        def unsubscribe() -> None:
            if item in self._change_callbacks:
                self._change_callbacks.remove(item)
                self._core.unwatch(prefix)

        return unsubscribe

    def _dispatch_changes(self, entries: List[Any]) -> None:
        for e in entries:
            key = e.key
            ch: Optional[Change] = None
            for queue in self._watchers:
                if key.startswith(queue.prefix):
                    if ch is None:
                        ch = _change(e)
                    queue.put(ch)
            for prefix, callback in list(self._change_callbacks):
                if key.startswith(prefix):
                    if ch is None:
                        ch = _change(e)
                    try:
                        callback(ch)
                    except Exception:
                        _log.exception("%s: a change callback failed", self.node_id)

    def _on_event(self, name: str, payload: Any) -> None:
        if name in ("changes", "member"):
            # one at a time, in order: a callback that writes (and so drives
            # the transport) queues its own changes behind the ones being told
            self._pending.append((name, payload))
            if self._dispatching:
                return
            self._dispatching = True
            try:
                while self._pending:
                    kind, item = self._pending.popleft()
                    if kind == "changes":
                        self._dispatch_changes(item)
                    else:
                        self._dispatch_member(item)
            finally:
                self._dispatching = False
            return
        if name == "pong":
            seq, _at = payload
            fut = self._pongs.pop(seq, None)
            if fut is not None and not fut.done():
                fut.set_result(self._transport.loop.time())

    async def ping(self, addr: Union[Address, str], timeout: float = 2.0) -> float:
        """Round-trip time in seconds to the node at ``addr``. Over the link to
        it when ``addr`` is a peer; otherwise over a connection opened for the
        ping and closed after (``addr`` is not added to the peers). A refused
        connection raises NodeError at once."""
        self._check_open()
        key = parse_address(addr)
        if key == self.addr:
            raise NodeError("a node cannot ping itself")
        loop = self._transport.loop
        self._ping_seq += 1
        seq = self._ping_seq
        fut: asyncio.Future[float] = loop.create_future()
        self._pongs[seq] = fut
        frame = self._codec.encode(self._codec.Ping(self.node_id, seq))
        deadline = loop.time() + timeout
        proto = None
        try:
            if key in self.peers:
                started = loop.time()
                self._transport.send_when_connected(key, [frame])
            else:
                proto = await self._transport.open_direct(key, deadline - loop.time())
                started = loop.time()
                proto.send_frames([frame])
            return await asyncio.wait_for(fut, max(0.0, deadline - loop.time())) - started
        finally:
            self._pongs.pop(seq, None)
            if proto is not None:
                proto.close()

    def __repr__(self) -> str:
        host, port = self.addr
        state = "closed" if self._closed else "running"
        return f"<GossipNode {self.node_id!r} {host}:{port} {state} entries={self.state_len()}>"
