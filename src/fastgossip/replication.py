"""A checked replication log: the follower side of ``Replicate``.

The reference acknowledges every Replicate with ``success: true``. Here an
entry is accepted only when it is consistent with the log:

* it comes from an accepted leader: ``leaders`` names the leader ids whose
  entries are taken (``None``, the default: none, so a stranger cannot write
  the log; ``{"*"}``: any); and a term has one leader: the first leader seen
  in a term keeps it, another id claiming the same term is refused;
* its checksum equals the CRC32 of its payload;
* and either its index is the next one (``len(log) + 1``; indices start at 1,
  as in Raft) and its term is not below the last entry's term,
* or it re-delivers an entry the log already holds at that index with the
  same term and checksum (idempotent retransmission);
* and the log stays within ``max_entries`` entries and ``max_bytes`` payload
  bytes: at either cap a new entry is refused (the log is not compacted; a
  follower that must keep going needs its leader to snapshot, which this log
  does not do).

Everything else is refused, with the index echoed back; ``refused`` counts
refusals by cause.
"""

from __future__ import annotations

import zlib
from typing import Dict, FrozenSet, Iterable, List, NamedTuple, Optional


class LogEntry(NamedTuple):
    # the field hides tuple.index(), as it has since the first release
    index: int  # type: ignore[assignment]
    term: int
    checksum: int
    payload: bytes


class ReplicationLog:
    """An append-only, bounded, in-memory replication log with consistency checks."""

    __slots__ = (
        "_entries",
        "_leaders",
        "_term_leader",
        "max_entries",
        "max_bytes",
        "_bytes",
        "refused",
    )

    def __init__(
        self,
        leaders: Optional[Iterable[str]] = ("*",),
        max_entries: int = 10_000,
        max_bytes: int = 64 << 20,
    ) -> None:
        self._entries: List[LogEntry] = []
        self._leaders: Optional[FrozenSet[str]] = None if leaders is None else frozenset(leaders)
        self._term_leader: Dict[int, str] = {}
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._bytes = 0
        self.refused: Dict[str, int] = {}

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

    @property
    def payload_bytes(self) -> int:
        return self._bytes

    def entries(self) -> List[LogEntry]:
        return list(self._entries)

    def _refuse(self, cause: str) -> bool:
        self.refused[cause] = self.refused.get(cause, 0) + 1
        return False

    def offer(self, index: int, term: int, checksum: int, payload: bytes, leader: str = "") -> bool:
        """Check an incoming entry; append it when it is the next one.

        Returns the ``success`` to put in the ReplicateAck.
        """
        leaders = self._leaders
        if leaders is None or ("*" not in leaders and leader not in leaders):
            return self._refuse("leader")
        held_by = self._term_leader.get(term)
        if held_by is not None and held_by != leader:
            return self._refuse("term")
        if checksum != zlib.crc32(payload):
            return self._refuse("checksum")
        entries = self._entries
        if index == len(entries) + 1:
            if term < self.last_term:
                return self._refuse("term")
            if len(entries) >= self.max_entries or self._bytes + len(payload) > self.max_bytes:
                return self._refuse("full")
            if held_by is None:
                if len(self._term_leader) >= self.max_entries:  # bounded too
                    return self._refuse("full")
                self._term_leader[term] = leader
            entries.append(LogEntry(index, term, checksum, bytes(payload)))
            self._bytes += len(payload)
            return True
        if 1 <= index <= len(entries):
            held = entries[index - 1]
            return held.term == term and held.checksum == checksum
        return self._refuse("index")
