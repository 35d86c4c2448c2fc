"""The follower's replication log refuses inconsistent entries."""

from __future__ import annotations

import zlib

import pytest

from fastgossip.replication import ReplicationLog


def offer(log: ReplicationLog, index: int, term: int, payload: bytes, crc=None) -> bool:
    return log.offer(index, term, zlib.crc32(payload) if crc is None else crc, payload)


def test_appends_in_order_and_rejects_gaps() -> None:
    log = ReplicationLog()
    assert offer(log, 1, 1, b"a")
    assert not offer(log, 3, 1, b"c")
    assert offer(log, 2, 1, b"b")
    assert [e.payload for e in log.entries()] == [b"a", b"b"]
    assert log.last_index == 2 and log.last_term == 1


def test_redelivery_is_idempotent_but_conflicts_are_refused() -> None:
    log = ReplicationLog()
    assert offer(log, 1, 2, b"a")
    assert offer(log, 1, 2, b"a")
    assert not offer(log, 1, 3, b"a")
    assert not offer(log, 1, 2, b"other")
    assert len(log) == 1


def test_checksum_and_term_checked() -> None:
    log = ReplicationLog()
    assert not offer(log, 1, 1, b"a", crc=0)
    assert offer(log, 1, 5, b"a")
    assert not offer(log, 2, 4, b"b")
    assert offer(log, 2, 5, b"b")
    assert not offer(log, 0, 5, b"z")
    with pytest.raises(IndexError):
        log[3]
