"""The wire layout's constants, for Python code (docs/PROTOCOL.md).

Their C home is the ``cdef enum`` of _wire.pxd, which the compiled modules
read at compile time; this module is the one Python home, imported by the
pure-Python twins, the streams helpers and the node. tests/test_wire.py checks
that the two agree, name by name.
"""

from __future__ import annotations

PROTOCOL_VERSION = 1
PREFIX_SIZE = 4  # u32 length prefix
HEADER_SIZE = 6  # prefix + version byte + type byte
T_GOSSIP = 1
T_PING = 2
T_PONG = 3
T_REPLICATE = 4
T_REPLICATE_ACK = 5
T_GOSSIP_BATCH = 6
T_DIGEST = 7
V_INT = 0
V_BYTES = 1
V_TOMBSTONE = 2  # a deleted key: the tag alone, no payload
V_EXPIRES = 4  # an entry's value tag bit: a u64 expiry (unix ms) follows the tag
MIN_ENTRY_SIZE = 21  # str16 key + u16 origin index + u64 version + u64 stamp + tag (a tombstone)
MIN_WATERMARK_SIZE = 10  # str16 origin + u64 stamp
MIN_ORIGIN_SIZE = 2  # str16 origin in a batch's origin table
MIN_FRAME_LENGTH = 2  # version + type
DEFAULT_MAX_FRAME_SIZE = 1048576
MAX_STR_SIZE = 65535  # str16 payload bytes
MAX_ORIGINS = 65535  # u16 n_origins
MAX_TYPE = 7  # highest known type code
DIGEST_REPLY = 1  # Digest flags: bit 0
DIGEST_MORE = 2  # bit 1
DIGEST_DELTA = 4  # bit 2; the others must be 0
