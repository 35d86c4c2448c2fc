"""HybridClock: monotonic versions, observe(), logical carry, happened-before."""

from __future__ import annotations

import time

import pytest

from fastgossip.clock import (
    LOGICAL_BITS,
    MAX_VERSION,
    HybridClock,
    make_version,
    version_logical,
    version_ms,
    wall_ms,
)


class FakeTime:
    """An injectable millisecond source that moves only when told to."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def test_version_helpers() -> None:
    v = make_version(1_700_000_000_123, 7)
    assert v == (1_700_000_000_123 << 16) | 7
    assert version_ms(v) == 1_700_000_000_123
    assert version_logical(v) == 7
    assert make_version(5) == 5 << 16
    assert LOGICAL_BITS == 16
    with pytest.raises(ValueError):
        make_version(-1)
    with pytest.raises(ValueError):
        make_version(1 << 48)
    with pytest.raises(ValueError):
        make_version(1, 1 << 16)
    with pytest.raises(ValueError):
        make_version(1, -1)
    assert make_version((1 << 48) - 1, 0xFFFF) == MAX_VERSION


def test_first_version_follows_wall_time() -> None:
    clock = HybridClock(FakeTime(1000))
    assert clock.last == 0
    assert clock.now() == make_version(1000, 0)
    assert clock.last == make_version(1000, 0)


def test_monotonic_under_frozen_time() -> None:
    clock = HybridClock(FakeTime(1000))
    versions = [clock.now() for _ in range(1000)]
    assert versions == sorted(set(versions))
    assert all(version_ms(v) == 1000 for v in versions)
    assert [version_logical(v) for v in versions] == list(range(1000))


def test_time_moving_forward_resets_logical() -> None:
    source = FakeTime(1000)
    clock = HybridClock(source)
    clock.now()
    clock.now()
    source.ms = 1001
    assert clock.now() == make_version(1001, 0)


def test_time_going_backwards_never_decreases() -> None:
    source = FakeTime(5000)
    clock = HybridClock(source)
    a = clock.now()
    source.ms = 4000  # an NTP step backwards
    b = clock.now()
    c = clock.now()
    assert a < b < c
    assert (version_ms(b), version_logical(b)) == (5000, 1)


def test_logical_overflow_carries_into_physical() -> None:
    clock = HybridClock(FakeTime(1000))
    clock.observe(make_version(1000, 0xFFFE))
    assert clock.now() == make_version(1000, 0xFFFF)
    carried = clock.now()
    assert carried == make_version(1001, 0)  # borrowed a millisecond
    assert clock.now() == make_version(1001, 1)
    versions = [clock.now() for _ in range(3 * (1 << 16))]
    assert versions == sorted(set(versions))
    assert version_ms(versions[-1]) == 1004


def test_observe_future_version() -> None:
    clock = HybridClock(FakeTime(1000))
    clock.now()
    future = make_version(9000, 42)
    clock.observe(future)
    assert clock.last == future
    assert clock.now() == make_version(9000, 43)


def test_observe_past_version_changes_nothing() -> None:
    clock = HybridClock(FakeTime(1000))
    v = clock.now()
    clock.observe(make_version(10, 3))
    clock.observe(0)
    assert clock.last == v
    assert clock.now() == v + 1


@pytest.mark.parametrize(
    "bad, exc",
    [
        (-1, ValueError),
        (MAX_VERSION + 1, ValueError),
        (1.5, TypeError),
        ("1", TypeError),
        (None, TypeError),
        (True, TypeError),
    ],
)
def test_observe_validation(bad, exc) -> None:
    clock = HybridClock(FakeTime(1000))
    with pytest.raises(exc):
        clock.observe(bad)
    assert clock.last == 0


def test_exhausted_version_space() -> None:
    clock = HybridClock(FakeTime(1))
    clock.observe(MAX_VERSION)
    with pytest.raises(OverflowError):
        clock.now()
    assert clock.last == MAX_VERSION


def test_time_source_out_of_range() -> None:
    with pytest.raises(ValueError, match="time source out of range"):
        HybridClock(FakeTime(1 << 48)).now()


def test_happened_before_across_clocks() -> None:
    # b's wall clock is 10 s behind a's: without observe(), b's writes would
    # sort before a's even when made after receiving them.
    a = HybridClock(FakeTime(20_000))
    b = HybridClock(FakeTime(10_000))
    sent = a.now()
    assert b.now() < sent
    b.observe(sent)  # b receives a's write...
    reply = b.now()  # ...then writes: ordered after it
    assert reply > sent
    a.observe(reply)  # and a, receiving that, orders its next write after both
    assert a.now() > reply
    # a chain of messages through three clocks stays ordered
    c = HybridClock(FakeTime(0))
    chain = [a.now()]
    for clock in (b, c, a, c, b):
        clock.observe(chain[-1])
        chain.append(clock.now())
    assert chain == sorted(set(chain))


def test_default_source_is_wall_clock() -> None:
    before = time.time_ns() // 1_000_000
    clock = HybridClock()
    v = clock.now()
    after = time.time_ns() // 1_000_000
    assert before <= version_ms(v) <= after
    assert clock.now() > v
    assert before <= wall_ms() <= after + 1000
    same = HybridClock(wall_ms)  # passing the default explicitly is the same
    assert before <= version_ms(same.now()) <= after + 1000


def test_repr() -> None:
    clock = HybridClock(FakeTime(7))
    clock.now()
    clock.now()
    assert repr(clock) == "<HybridClock last=7ms+1 (0x70001)>"
