"""Type stub of the compiled frame codec (_codec_c.pyx); _codec_py.py is its twin.

The message types are registered, at run time, with the abstract types of
_messages.py (``fastgossip.Entry``, ...); here they subclass them, which is
what ``isinstance`` answers.
"""

from typing import Any, ClassVar, Iterable, List, Mapping, Optional, Tuple, Union

from _typeshed import ReadableBuffer

from . import _messages
from ._messages import AnyMessage, Value

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "PROTOCOL_VERSION",
    "T_DIGEST",
    "T_GOSSIP",
    "T_GOSSIP_BATCH",
    "T_PING",
    "T_PONG",
    "T_REPLICATE",
    "T_REPLICATE_ACK",
    "Digest",
    "Entry",
    "FrameDecoder",
    "Gossip",
    "GossipBatch",
    "Message",
    "Ping",
    "Pong",
    "Replicate",
    "ReplicateAck",
    "decode",
    "digest_frames",
    "encode",
    "encode_many",
    "frame_type",
]

PROTOCOL_VERSION: int
DEFAULT_MAX_FRAME_SIZE: int
T_GOSSIP: int
T_PING: int
T_PONG: int
T_REPLICATE: int
T_REPLICATE_ACK: int
T_GOSSIP_BATCH: int
T_DIGEST: int

class Message(_messages.Message):
    _fields: ClassVar[Tuple[str, ...]]
    def astuple(self) -> Tuple[Any, ...]: ...
    def __reduce__(self) -> Tuple[Any, ...]: ...

# Entry and Gossip have no compiled Message base (they keep a freelist).
class Entry(_messages.Entry):
    _fields: ClassVar[Tuple[str, ...]]
    def __init__(
        self,
        key: str,
        value: Value,
        version: int,
        origin: str = "",
        stamp: Optional[int] = None,
        *,
        expires: int = 0,
    ) -> None: ...
    @property
    def key(self) -> str: ...
    @property
    def value(self) -> Value: ...
    @property
    def version(self) -> int: ...
    @property
    def origin(self) -> str: ...
    @property
    def stamp(self) -> int: ...
    @property
    def expires(self) -> int: ...
    def astuple(self) -> Tuple[str, Value, int, str, int]: ...
    def __reduce__(self) -> Tuple[Any, ...]: ...

class Gossip(_messages.Gossip):
    _fields: ClassVar[Tuple[str, ...]]
    def __init__(
        self, sender_id: str, key: str, value: Value, version: int, origin: str = ""
    ) -> None: ...
    @property
    def sender_id(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def value(self) -> Value: ...
    @property
    def version(self) -> int: ...
    @property
    def origin(self) -> str: ...
    def astuple(self) -> Tuple[str, str, Value, int, str]: ...
    def __reduce__(self) -> Tuple[Any, ...]: ...

class Ping(Message, _messages.Ping):
    def __init__(self, sender_id: str, seq: int) -> None: ...
    @property
    def sender_id(self) -> str: ...
    @property
    def seq(self) -> int: ...

class Pong(Message, _messages.Pong):
    def __init__(self, sender_id: str, seq: int) -> None: ...
    @property
    def sender_id(self) -> str: ...
    @property
    def seq(self) -> int: ...

class Replicate(Message, _messages.Replicate):
    def __init__(
        self, leader_id: str, index: int, term: int, checksum: int, payload: bytes = b""
    ) -> None: ...
    @property
    def leader_id(self) -> str: ...
    @property
    def index(self) -> int: ...
    @property
    def term(self) -> int: ...
    @property
    def checksum(self) -> int: ...
    @property
    def payload(self) -> bytes: ...

class ReplicateAck(Message, _messages.ReplicateAck):
    def __init__(self, follower_id: str, index: int, success: bool) -> None: ...
    @property
    def follower_id(self) -> str: ...
    @property
    def index(self) -> int: ...
    @property
    def success(self) -> bool: ...

class GossipBatch(Message, _messages.GossipBatch):
    def __init__(self, sender_id: str, entries: Iterable[_messages.Entry] = ()) -> None: ...
    @property
    def sender_id(self) -> str: ...
    @property
    def entries(self) -> Tuple[_messages.Entry, ...]: ...

class Digest(Message, _messages.Digest):
    def __init__(
        self,
        sender_id: str,
        watermarks: Union[Mapping[str, int], Iterable[Tuple[str, int]]] = (),
        reply: bool = False,
        more: bool = False,
        delta: bool = False,
    ) -> None: ...
    @property
    def sender_id(self) -> str: ...
    @property
    def watermarks(self) -> Tuple[Tuple[str, int], ...]: ...
    @property
    def reply(self) -> bool: ...
    @property
    def more(self) -> bool: ...
    @property
    def delta(self) -> bool: ...

def encode(msg: AnyMessage) -> bytes: ...
def encode_many(msgs: Iterable[AnyMessage]) -> bytes: ...
def decode(frame: ReadableBuffer, max_frame_size: int = ...) -> AnyMessage: ...
def frame_type(frame: ReadableBuffer) -> int: ...
def digest_frames(
    sender_id: str,
    watermarks: Union[Mapping[str, int], Iterable[Tuple[str, int]]],
    reply: bool,
    max_frame_size: int,
    delta: bool = False,
) -> List[bytes]: ...

class FrameDecoder:
    def __init__(self, max_frame_size: int = ...) -> None: ...
    @property
    def buffered(self) -> int: ...
    @property
    def max_frame_size(self) -> int: ...
    def feed(self, data: ReadableBuffer) -> List[AnyMessage]: ...
    def feed_frames(self, data: ReadableBuffer) -> List[bytes]: ...
