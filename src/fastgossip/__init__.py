"""fastgossip: cluster-wide key/value state by epidemic gossip over TCP.

Hot paths (frame codec, LWW table, peer sampler) are compiled with Cython;
``FASTGOSSIP_NO_EXTENSIONS=1`` selects their pure-Python twins and
``IMPLEMENTATION`` says which is live.

The message types here are abstract (see _messages.py): calling one makes the
live implementation's message, and ``isinstance`` holds for messages of either
implementation. Test helpers live in ``fastgossip.testing``; the replication
log in ``fastgossip.replication``.
"""

from typing import TYPE_CHECKING, Any, Dict

from ._codec import (
    DEFAULT_MAX_FRAME_SIZE,
    PROTOCOL_VERSION,
    FrameDecoder,
    decode,
    encode,
    encode_many,
)
from ._impl import IMPLEMENTATION
from ._messages import (
    Digest,
    Entry,
    Gossip,
    GossipBatch,
    Message,
    Ping,
    Pong,
    Replicate,
    ReplicateAck,
    Value,
)
from ._sampler import XorShift64
from ._table import GossipState
from .clock import HybridClock
from .durable import DataDirError, DurabilityError
from .errors import FrameError, GossipError, NodeError, TableFull
from .fanout import Fanout
from .membership import Member, MemberEvent
from .node import Change, GossipNode, NodeConfig, NodeStats, node_of
from .secure import (
    AuthError,
    Keyring,
    TLSConfig,
    decode_key,
    encode_key,
    generate_key,
    keyring_from_env,
)
from .streams import read_message, write_message

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "Change",
    "DEFAULT_MAX_FRAME_SIZE",
    "IMPLEMENTATION",
    "PROTOCOL_VERSION",
    "DataDirError",
    "Digest",
    "DurabilityError",
    "Entry",
    "Fanout",
    "FrameDecoder",
    "FrameError",
    "Gossip",
    "GossipBatch",
    "GossipError",
    "GossipNode",
    "GossipState",
    "HybridClock",
    "Keyring",
    "Member",
    "MemberEvent",
    "Message",
    "NodeConfig",
    "NodeError",
    "NodeStats",
    "Ping",
    "Pong",
    "Replicate",
    "ReplicateAck",
    "TLSConfig",
    "TableFull",
    "Value",
    "XorShift64",
    "decode",
    "decode_key",
    "encode",
    "encode_key",
    "encode_many",
    "generate_key",
    "keyring_from_env",
    "node_of",
    "read_message",
    "write_message",
]

# Names that moved out of the top level: still found here, with a warning,
# for one release. (Hidden from type checkers, which then point at the move.)
_MOVED: Dict[str, str] = {
    "ClusterNetwork": "fastgossip.testing",
    "NetworkStats": "fastgossip.testing",
    "ReplicationLog": "fastgossip.replication",
    "LogEntry": "fastgossip.replication",
}

if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        home = _MOVED.get(name)
        if home is None:
            raise AttributeError(f"module 'fastgossip' has no attribute {name!r}")
        import importlib
        import warnings

        warnings.warn(
            f"fastgossip.{name} is deprecated and will be removed: import it from {home}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(home), name)
