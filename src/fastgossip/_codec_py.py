"""Pure-Python frame codec: the twin of _codec_c.pyx."""

from ._messages_py import (  # noqa: F401
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
