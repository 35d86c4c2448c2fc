"""A checked replication log: the follower side of ``Replicate``.

The reference acknowledges every Replicate with ``success: true``. Here an
entry is accepted only when it is consistent with the log:

* its checksum equals the CRC32 of its payload;
* and either its index is the next one (``len(log) + 1``; indices start at 1,
  as in Raft) and its term is not below the last entry's term,
* or it re-delivers an entry the log already holds at that index with the
  same term and checksum (idempotent retransmission).

Everything else is refused, with the index echoed back.
"""

from __future__ import annotations

import zlib
from typing import List, NamedTuple


class LogEntry(NamedTuple):
    # the field hides tuple.index(), as it has since the first release
    index: int  # type: ignore[assignment]
    term: int
    checksum: int
    payload: bytes


class ReplicationLog:
    """An append-only, in-memory replication log with consistency checks."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: List[LogEntry] = []

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, index: int) -> LogEntry:
        """The entry at 1-based ``index``."""
        if not 1 <= index <= len(self._entries):
            raise IndexError(f"log index {index} out of range 1..{len(self._entries)}")
        return self._entries[index - 1]

    @property
    def last_index(self) -> int:
        return len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else 0

    def entries(self) -> List[LogEntry]:
        return list(self._entries)

    def offer(self, index: int, term: int, checksum: int, payload: bytes) -> bool:
        """Check an incoming entry; append it when it is the next one.

        Returns the ``success`` to put in the ReplicateAck.
        """
        if checksum != zlib.crc32(payload):
            return False
        entries = self._entries
        if index == len(entries) + 1:
            if term < self.last_term:
                return False
            entries.append(LogEntry(index, term, checksum, payload))
            return True
        if 1 <= index <= len(entries):
            held = entries[index - 1]
            return held.term == term and held.checksum == checksum
        return False
