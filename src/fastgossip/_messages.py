"""The message types as the package presents them: abstract and typed.

``fastgossip.Message``, ``fastgossip.Entry``, ``fastgossip.Gossip``, ... are
the abstract classes below. Each implementation registers its concrete types
with them (``register``, called by _messages_c.pxi and _messages_py.py), so
``isinstance(m, fastgossip.Entry)`` holds for an entry made by either one: the
compiled ``Entry`` and ``Gossip``, which have no ``Message`` base (they keep a
freelist), included.

Calling an abstract type constructs the live implementation's message
(``fastgossip._codec``): ``fastgossip.Entry("k", b"v", 1)`` is a
``fastgossip._codec_c.Entry``, or a ``_messages_py.Entry`` under
``FASTGOSSIP_NO_EXTENSIONS=1``. The package's own hot paths construct the
concrete types directly.

The properties and ``__init__`` signatures are what type checkers see (they are
not abstract methods, so that type checkers let ``Entry(...)`` be called); the
registered classes provide them. A field added to a message is added here too.
"""

from __future__ import annotations

from abc import ABCMeta
from typing import Any, ClassVar, Dict, Iterable, Mapping, Optional, Tuple, Union

__all__ = [
    "AnyMessage",
    "Digest",
    "Entry",
    "Gossip",
    "GossipBatch",
    "Message",
    "Ping",
    "Pong",
    "Replicate",
    "ReplicateAck",
    "Value",
    "register",
]

Value = Union[int, bytes, None]  # None: a tombstone (a deleted key)

# abstract type -> the live implementation's class, filled on first construction
_LIVE: Dict[type, type] = {}


class Message(metaclass=ABCMeta):  # noqa: B024 (abstract for register(), not methods)
    """A message: immutable, equal and hashed by its type and fields."""

    __slots__ = ()
    _fields: ClassVar[Tuple[str, ...]] = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        live = _LIVE.get(cls)
        if live is None:
            live = _live_class(cls)
        return live(*args, **kwargs)

    def astuple(self) -> Tuple[Any, ...]:
        """The fields, in order."""
        raise NotImplementedError


def _live_class(cls: type) -> type:
    if cls.__module__ != __name__:
        raise TypeError(f"{cls.__name__}: fastgossip's message types cannot be subclassed")
    if cls is Message:
        raise TypeError("Message is abstract: construct one of its types")
    from . import _codec  # here: _codec imports the implementations, which import this

    live: type = getattr(_codec, cls.__name__)
    _LIVE[cls] = live
    return live


class Entry(Message):
    """One LWW table entry: key, value, version, origin and stamp.

    ``stamp`` is the origin's clock reading when the entry was written; the
    per-origin maximum stamp is what digests carry. It defaults to ``version``.
    """

    __slots__ = ()

    def __init__(
        self,
        key: str,
        value: Value,
        version: int,
        origin: str = "",
        stamp: Optional[int] = None,
        *,
        expires: int = 0,
    ) -> None:
        """The signature only: construction goes to the live implementation."""

    @property
    def key(self) -> str:
        raise NotImplementedError

    @property
    def value(self) -> Value:
        raise NotImplementedError

    @property
    def version(self) -> int:
        raise NotImplementedError

    @property
    def origin(self) -> str:
        raise NotImplementedError

    @property
    def expires(self) -> int:
        raise NotImplementedError

    @property
    def stamp(self) -> int:
        raise NotImplementedError


class Gossip(Message):
    """A single key/value update (the reference's Gossip message)."""

    __slots__ = ()

    def __init__(
        self, sender_id: str, key: str, value: Value, version: int, origin: str = ""
    ) -> None:
        """The signature only: construction goes to the live implementation."""

    @property
    def sender_id(self) -> str:
        raise NotImplementedError

    @property
    def key(self) -> str:
        raise NotImplementedError

    @property
    def value(self) -> Value:
        raise NotImplementedError

    @property
    def version(self) -> int:
        raise NotImplementedError

    @property
    def origin(self) -> str:
        raise NotImplementedError


class Ping(Message):
    """Liveness probe; answered by a Pong with the same seq."""

    __slots__ = ()

    def __init__(self, sender_id: str, seq: int) -> None:
        """The signature only: construction goes to the live implementation."""

    @property
    def sender_id(self) -> str:
        raise NotImplementedError

    @property
    def seq(self) -> int:
        raise NotImplementedError


class Pong(Message):
    """Answer to a Ping, echoing its seq."""

    __slots__ = ()

    def __init__(self, sender_id: str, seq: int) -> None:
        """The signature only: construction goes to the live implementation."""

    @property
    def sender_id(self) -> str:
        raise NotImplementedError

    @property
    def seq(self) -> int:
        raise NotImplementedError


class Replicate(Message):
    """A replication log entry offered by a leader."""

    __slots__ = ()

    def __init__(
        self, leader_id: str, index: int, term: int, checksum: int, payload: bytes = b""
    ) -> None:
        """The signature only: construction goes to the live implementation."""

    @property
    def leader_id(self) -> str:
        raise NotImplementedError

    @property
    def index(self) -> int:
        raise NotImplementedError

    @property
    def term(self) -> int:
        raise NotImplementedError

    @property
    def checksum(self) -> int:
        raise NotImplementedError

    @property
    def payload(self) -> bytes:
        raise NotImplementedError


class ReplicateAck(Message):
    """A follower's verdict on one Replicate."""

    __slots__ = ()

    def __init__(self, follower_id: str, index: int, success: bool) -> None:
        """The signature only: construction goes to the live implementation."""

    @property
    def follower_id(self) -> str:
        raise NotImplementedError

    @property
    def index(self) -> int:
        raise NotImplementedError

    @property
    def success(self) -> bool:
        raise NotImplementedError


class GossipBatch(Message):
    """Many entries in one frame: what a delta is sent as."""

    __slots__ = ()

    def __init__(self, sender_id: str, entries: Iterable[Entry] = ()) -> None:
        """The signature only: construction goes to the live implementation."""

    @property
    def sender_id(self) -> str:
        raise NotImplementedError

    @property
    def entries(self) -> Tuple[Entry, ...]:
        raise NotImplementedError


class Digest(Message):
    """Per-origin high-water marks: ((origin, max_stamp), ...).

    ``reply=True`` asks the receiver to answer with its delta *and* its own
    digest (push-pull); ``reply=False`` asks for the delta only. ``more=True``
    marks a part of a digest too large for one frame: more parts follow, and
    the receiver answers after the last (``digest_frames`` splits one).
    ``delta=True``: the watermarks are the changes since the sender's previous
    digest on this connection (stamp 0: the origin left the digest).
    """

    __slots__ = ()

    def __init__(
        self,
        sender_id: str,
        watermarks: Union[Mapping[str, int], Iterable[Tuple[str, int]]] = (),
        reply: bool = False,
        more: bool = False,
        delta: bool = False,
    ) -> None:
        """The signature only: construction goes to the live implementation."""

    @property
    def sender_id(self) -> str:
        raise NotImplementedError

    @property
    def watermarks(self) -> Tuple[Tuple[str, int], ...]:
        raise NotImplementedError

    @property
    def reply(self) -> bool:
        raise NotImplementedError

    @property
    def more(self) -> bool:
        raise NotImplementedError

    @property
    def delta(self) -> bool:
        raise NotImplementedError


AnyMessage = Union[Gossip, Ping, Pong, Replicate, ReplicateAck, GossipBatch, Digest]

_ABSTRACT: Dict[str, ABCMeta] = {
    cls.__name__: cls
    for cls in (Message, Entry, Gossip, Ping, Pong, Replicate, ReplicateAck, GossipBatch, Digest)
}


def register(*classes: type) -> None:
    """Register an implementation's message types with the abstract type of
    the same name (``Entry`` with ``Entry``, ...)."""
    for cls in classes:
        _ABSTRACT[cls.__name__].register(cls)
