"""Hybrid logical clock: versions that follow wall time and never go backwards.

A version is a u64 ``(physical_ms << 16) | logical``. ``now()`` returns the wall
time's version when that is ahead of everything seen so far, otherwise the last
version plus one: the logical part counts events within a millisecond, and when
it would pass 0xFFFF the increment carries into the physical part (the clock
borrows a millisecond from the future, which wall time catches up with).
``observe(v)`` moves the clock past a version received from a peer, so a write
made after receiving ``v`` is ordered after it (happened-before).

Versions compare as plain ints; ``version_ms`` / ``version_logical`` split one.
A clock is not thread-safe: use one per event loop, as the node does.
"""

from __future__ import annotations

from time import time_ns as _time_ns
from typing import Callable, Optional

__all__ = [
    "HybridClock",
    "LOGICAL_BITS",
    "MAX_VERSION",
    "make_version",
    "version_logical",
    "version_ms",
    "wall_ms",
]

LOGICAL_BITS = 16
LOGICAL_MASK = (1 << LOGICAL_BITS) - 1
MAX_VERSION = (1 << 64) - 1
MAX_MS = MAX_VERSION >> LOGICAL_BITS


def wall_ms() -> int:
    """Milliseconds since the Unix epoch, from the system's wall clock."""
    return _time_ns() // 1_000_000


def make_version(ms: int, logical: int = 0) -> int:
    """The version ``(ms << 16) | logical``, for 0 <= ms < 2**48, 0 <= logical < 2**16."""
    if not 0 <= ms <= MAX_MS:
        raise ValueError(f"ms must be in [0, 2**48), got {ms}")
    if not 0 <= logical <= LOGICAL_MASK:
        raise ValueError(f"logical must be in [0, 2**16), got {logical}")
    return (ms << LOGICAL_BITS) | logical


def version_ms(version: int) -> int:
    """The physical part of a version, in milliseconds since the epoch."""
    return version >> LOGICAL_BITS


def version_logical(version: int) -> int:
    """The logical part of a version (a counter within its millisecond)."""
    return version & LOGICAL_MASK


class HybridClock:
    """A hybrid logical clock; ``now_ms`` (default: ``wall_ms``) is the time source,
    a callable returning integer milliseconds (inject a fake one in tests)."""

    __slots__ = ("_now_ms", "_last")

    def __init__(self, now_ms: Optional[Callable[[], int]] = None) -> None:
        # None means wall_ms, read inline in now() (saves a Python call per write)
        self._now_ms: Optional[Callable[[], int]] = None if now_ms is wall_ms else now_ms
        self._last = 0

    @property
    def last(self) -> int:
        """The greatest version issued or observed so far (0 at first)."""
        return self._last

    def now(self) -> int:
        """A new version, greater than every version issued or observed before."""
        source = self._now_ms
        if source is None:
            version = (_time_ns() // 1_000_000) << LOGICAL_BITS
        else:
            version = source() << LOGICAL_BITS
        last = self._last
        if version <= last:
            version = last + 1
            if version > MAX_VERSION:
                raise OverflowError("hybrid clock exhausted the u64 version space")
        elif version > MAX_VERSION:
            raise ValueError(f"time source out of range: {version >> LOGICAL_BITS} ms")
        self._last = version
        return version

    def observe(self, version: int) -> None:
        """Move the clock past ``version`` (a u64 seen from a peer)."""
        if type(version) is not int and (not isinstance(version, int) or isinstance(version, bool)):
            raise TypeError(f"version must be an int, not {type(version).__name__}")
        if version > self._last:
            if version > MAX_VERSION:
                raise ValueError(f"version must be < 2**64, got {version}")
            self._last = version
        elif version < 0:
            raise ValueError(f"version must be >= 0, got {version}")

    def __repr__(self) -> str:
        last = self._last
        return f"<HybridClock last={version_ms(last)}ms+{version_logical(last)} ({last:#x})>"
