"""fastgossip: cluster-wide key/value state by epidemic gossip over TCP.

Hot paths (frame codec, LWW table, peer sampler) are compiled with Cython;
``FASTGOSSIP_NO_EXTENSIONS=1`` selects their pure-Python twins and
``IMPLEMENTATION`` says which is live.

The message types here are abstract (see _messages.py): calling one makes the
live implementation's message, and ``isinstance`` holds for messages of either
implementation.
"""

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
)
from ._sampler import XorShift64
from ._table import GossipState
from .clock import HybridClock
from .errors import FrameError, GossipError, NodeError
from .fanout import Fanout
from .network import ClusterNetwork, NetworkStats
from .node import GossipNode, NodeConfig, NodeStats, node_of
from .replication import LogEntry, ReplicationLog
from .streams import read_message, write_message

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "IMPLEMENTATION",
    "PROTOCOL_VERSION",
    "ClusterNetwork",
    "Digest",
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
    "LogEntry",
    "Message",
    "NetworkStats",
    "NodeConfig",
    "NodeError",
    "NodeStats",
    "Ping",
    "Pong",
    "Replicate",
    "ReplicateAck",
    "ReplicationLog",
    "XorShift64",
    "decode",
    "encode",
    "encode_many",
    "node_of",
    "read_message",
    "write_message",
]
