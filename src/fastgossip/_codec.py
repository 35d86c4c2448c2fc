"""The codec implementation in use: compiled, or the pure-Python twin.

The rest of the package imports from here, never from _codec_c/_codec_py directly.
Type checkers read the compiled module's stub (_codec_c.pyi); at run time the
names come from the module ``FASTGOSSIP_NO_EXTENSIONS`` selects (see _impl.py).
"""

from typing import TYPE_CHECKING

from ._impl import IMPLEMENTATION, not_built

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

if not TYPE_CHECKING and IMPLEMENTATION == "python":
    from ._codec_py import (
        DEFAULT_MAX_FRAME_SIZE,
        PROTOCOL_VERSION,
        T_DIGEST,
        T_GOSSIP,
        T_GOSSIP_BATCH,
        T_PING,
        T_PONG,
        T_REPLICATE,
        T_REPLICATE_ACK,
        Digest,
        Entry,
        FrameDecoder,
        Gossip,
        GossipBatch,
        Message,
        Ping,
        Pong,
        Replicate,
        ReplicateAck,
        decode,
        digest_frames,
        encode,
        encode_many,
        frame_type,
    )
else:
    try:
        from ._codec_c import (
            DEFAULT_MAX_FRAME_SIZE,
            PROTOCOL_VERSION,
            T_DIGEST,
            T_GOSSIP,
            T_GOSSIP_BATCH,
            T_PING,
            T_PONG,
            T_REPLICATE,
            T_REPLICATE_ACK,
            Digest,
            Entry,
            FrameDecoder,
            Gossip,
            GossipBatch,
            Message,
            Ping,
            Pong,
            Replicate,
            ReplicateAck,
            decode,
            digest_frames,
            encode,
            encode_many,
            frame_type,
        )
    except ImportError as exc:
        raise not_built("codec", exc) from exc
