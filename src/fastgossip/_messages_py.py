"""Pure-Python twins of the compiled message types (see _messages_c.pxi).

Same constructors, same repr, equality and hashing by (type, fields). Each
registers with its abstract type in _messages.py, as the compiled ones do.
"""

from __future__ import annotations

from typing import Any, Iterable, Tuple, Union

from . import _messages as _abstract

Value = Union[int, bytes, None]


@_abstract.Message.register
class Message:
    """Base of every message type: immutable, equal and hashed by its fields."""

    __slots__ = ()
    _fields: Tuple[str, ...] = ()

    def astuple(self) -> tuple:
        return tuple(getattr(self, name) for name in self._fields)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _init(self, *values: Any) -> None:
        if hasattr(self, self._fields[0]):
            raise TypeError(f"{type(self).__name__} is immutable: __init__ runs once")
        for name, value in zip(self._fields, values):
            object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={v!r}" for n, v in zip(self._fields, self.astuple()))
        return f"{type(self).__name__}({inner})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.astuple() == other.astuple()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__,) + self.astuple())

    def __reduce__(self) -> tuple:
        return (type(self), self.astuple())


def _check_str(name: str, value: object) -> str:
    """A str argument as an exact str (a subclass is copied to one)."""
    if type(value) is str:
        return value  # type: ignore[return-value]
    if isinstance(value, str):
        return str.__str__(value)
    raise TypeError(
        f"Argument '{name}' has incorrect type (expected str, got {type(value).__name__})"
    )


@_abstract.Entry.register
class Entry(Message):
    """One LWW table entry: key, value, version, origin and stamp.

    ``value`` is an int, bytes, or None for a tombstone (a deleted key).
    ``stamp`` is the origin's clock reading when the entry was written; the
    per-origin maximum stamp is what digests carry. It defaults to ``version``.
    ``expires`` (keyword): the unix time in milliseconds after which the entry
    is expired (0: never); not part of ``astuple()``, part of equality.
    """

    __slots__ = ("key", "value", "version", "origin", "stamp", "expires")
    _fields = ("key", "value", "version", "origin", "stamp")
    key: str
    value: Value
    version: int
    origin: str
    stamp: int
    expires: int

    def __init__(
        self,
        key: str,
        value: Value,
        version: int,
        origin: str = "",
        stamp: int | None = None,
        *,
        expires: int = 0,
    ) -> None:
        if type(expires) is bool or not isinstance(expires, int):
            raise TypeError(f"expires must be int, not {type(expires).__name__}")
        if not 0 <= expires < 1 << 64:
            raise ValueError(f"expires must be in range [0, 2**64), got {expires}")
        self._init(
            _check_str("key", key),
            value,
            version,
            _check_str("origin", origin),
            version if stamp is None else stamp,
        )
        object.__setattr__(self, "expires", int(expires))

    def __repr__(self) -> str:
        text = super().__repr__()
        return text[:-1] + f", expires={self.expires})" if self.expires else text

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.astuple() == other.astuple() and self.expires == other.expires  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__,) + self.astuple() + (self.expires,))

    def __reduce__(self) -> tuple:
        if self.expires:
            return (_entry_with_expiry, self.astuple() + (self.expires,))
        return (type(self), self.astuple())


def _entry_with_expiry(
    key: str, value: Value, version: int, origin: str, stamp: int, expires: int
) -> Entry:
    return Entry(key, value, version, origin, stamp, expires=expires)


@_abstract.Gossip.register
class Gossip(Message):
    """A single key/value update (the reference's Gossip message)."""

    __slots__ = ("sender_id", "key", "value", "version", "origin")
    _fields = __slots__
    sender_id: str
    key: str
    value: Value
    version: int
    origin: str

    def __init__(
        self, sender_id: str, key: str, value: Value, version: int, origin: str = ""
    ) -> None:
        self._init(
            _check_str("sender_id", sender_id),
            _check_str("key", key),
            value,
            version,
            _check_str("origin", origin),
        )


@_abstract.Ping.register
class Ping(Message):
    """Liveness probe; answered by a Pong with the same seq."""

    __slots__ = ("sender_id", "seq")
    _fields = __slots__
    sender_id: str
    seq: int

    def __init__(self, sender_id: str, seq: int) -> None:
        self._init(_check_str("sender_id", sender_id), seq)


@_abstract.Pong.register
class Pong(Message):
    """Answer to a Ping, echoing its seq."""

    __slots__ = ("sender_id", "seq")
    _fields = __slots__
    sender_id: str
    seq: int

    def __init__(self, sender_id: str, seq: int) -> None:
        self._init(_check_str("sender_id", sender_id), seq)


@_abstract.Replicate.register
class Replicate(Message):
    """A replication log entry offered by a leader."""

    __slots__ = ("leader_id", "index", "term", "checksum", "payload")
    _fields = __slots__
    leader_id: str
    index: int
    term: int
    checksum: int
    payload: bytes

    def __init__(
        self, leader_id: str, index: int, term: int, checksum: int, payload: bytes = b""
    ) -> None:
        if type(payload) is not bytes:
            raise TypeError(
                f"Argument 'payload' has incorrect type (expected bytes, got "
                f"{type(payload).__name__})"
            )
        self._init(_check_str("leader_id", leader_id), index, term, checksum, payload)


@_abstract.ReplicateAck.register
class ReplicateAck(Message):
    """A follower's verdict on one Replicate."""

    __slots__ = ("follower_id", "index", "success")
    _fields = __slots__
    follower_id: str
    index: int
    success: bool

    def __init__(self, follower_id: str, index: int, success: bool) -> None:
        self._init(_check_str("follower_id", follower_id), index, bool(success))


@_abstract.GossipBatch.register
class GossipBatch(Message):
    """Many entries in one frame: what a delta is sent as."""

    __slots__ = ("sender_id", "entries")
    _fields = __slots__
    sender_id: str
    entries: Tuple[Entry, ...]

    def __init__(self, sender_id: str, entries: Iterable[Entry] = ()) -> None:
        self._init(_check_str("sender_id", sender_id), tuple(entries))


@_abstract.Digest.register
class Digest(Message):
    """Per-origin high-water marks: ((origin, max_stamp), ...).

    ``reply=True`` asks the receiver to answer with its delta *and* its own
    digest (push-pull); ``reply=False`` asks for the delta only. ``more=True``
    says that more parts of this digest follow (one too large for a frame is
    sent in parts, see ``digest_frames``): the receiver answers after the last.
    ``delta=True``: the watermarks are the changes since the sender's previous
    digest on this connection (stamp 0: the origin left the digest).
    """

    __slots__ = ("sender_id", "watermarks", "reply", "more", "delta")
    _fields = __slots__
    sender_id: str
    watermarks: Tuple[Tuple[str, int], ...]
    reply: bool
    more: bool
    delta: bool

    def __init__(
        self,
        sender_id: str,
        watermarks: Any = (),
        reply: bool = False,
        more: bool = False,
        delta: bool = False,
    ) -> None:
        if isinstance(watermarks, dict):
            watermarks = watermarks.items()
        self._init(
            _check_str("sender_id", sender_id),
            tuple(tuple(p) for p in watermarks),
            bool(reply),
            bool(more),
            bool(delta),
        )
