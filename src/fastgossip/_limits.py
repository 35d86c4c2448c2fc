"""Size limits shared by the table (both implementations), the codec and the node.

One home for them: the compiled table reads these at import, the twin and the
node import them from here (or from ``fastgossip._table``, which re-exports them).

The frame budget (docs/PROTOCOL.md, "Limits"): ``max_frame_size`` bounds a whole
frame, its 4-byte length prefix included, everywhere. An entry is *storable*
under a ``max_frame_size`` when a one-entry GossipBatch carrying it, sent by a
sender whose id is ``MAX_NODE_ID_BYTES`` long, fits in it: ``relay_size(key,
value, origin) <= max_frame_size``. A node stores only what any node can relay.
"""

from __future__ import annotations

__all__ = [
    "BATCH_FIXED_BYTES",
    "ENTRY_OVERHEAD",
    "MAX_LIFE_CHARS",
    "MAX_NODE_ID_BYTES",
    "MAX_ORIGIN_BYTES",
]

#: The longest node id, in UTF-8 bytes (also the sender_id a relay is sized for).
MAX_NODE_ID_BYTES = 255
#: The longest life suffix of an origin ("<node_id>#<life>"), in characters.
MAX_LIFE_CHARS = 10
#: The longest origin an entry may have, in UTF-8 bytes: 255 + "#" + 10.
MAX_ORIGIN_BYTES = MAX_NODE_ID_BYTES + 1 + MAX_LIFE_CHARS
#: A one-entry GossipBatch frame without its sender, origin, key and value
#: bytes: prefix 4, version 1, type 1, sender length 2, n_origins 2, origin
#: length 2, n_entries 4, key length 2, origin index 2, version 8, stamp 8,
#: value tag 1 (then a u64, or a u32 length and the bytes).
BATCH_FIXED_BYTES = 37
#: Bytes counted per entry held, besides its key and value (GossipState.bytes_held).
ENTRY_OVERHEAD = 48
