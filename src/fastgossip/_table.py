"""The table implementation in use: compiled, or the pure-Python twin.

The rest of the package imports from here, never from _table_c/_table_py directly.
Type checkers read the compiled module's stub (_table_c.pyi); at run time the
names come from the module ``FASTGOSSIP_NO_EXTENSIONS`` selects (see _impl.py).
"""

from typing import TYPE_CHECKING

from ._impl import IMPLEMENTATION, not_built

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "ENTRY_OVERHEAD",
    "MAX_LIFE_CHARS",
    "MAX_NODE_ID_BYTES",
    "MAX_ORIGIN_BYTES",
    "REFUSAL_KINDS",
    "Entry",
    "GossipState",
    "TableFull",
    "relay_size",
]

if not TYPE_CHECKING and IMPLEMENTATION == "python":
    from ._table_py import (
        DEFAULT_MAX_FRAME_SIZE,
        ENTRY_OVERHEAD,
        MAX_LIFE_CHARS,
        MAX_NODE_ID_BYTES,
        MAX_ORIGIN_BYTES,
        REFUSAL_KINDS,
        Entry,
        GossipState,
        TableFull,
        relay_size,
    )
else:
    try:
        from ._table_c import (
            DEFAULT_MAX_FRAME_SIZE,
            ENTRY_OVERHEAD,
            MAX_LIFE_CHARS,
            MAX_NODE_ID_BYTES,
            MAX_ORIGIN_BYTES,
            REFUSAL_KINDS,
            Entry,
            GossipState,
            TableFull,
            relay_size,
        )
    except ImportError as exc:
        raise not_built("table", exc) from exc
