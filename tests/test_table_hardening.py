"""The table's defences against what peers send: one frame budget, the
plausibility horizon, own origin, origin length, table bounds, refusal counts
and restamp. Every body runs on the compiled table and its twin."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastgossip import _limits
from fastgossip._impl import load
from fastgossip.errors import FrameError, TableFull

from .test_table import batch_frame, gossip_frame, snapshot

Entry = load("codec", "python").Entry  # any implementation's Entry merges into either table

U64_MAX = (1 << 64) - 1
NOW_MS = 1_700_000_000_000
SKEW_MS = 60_000
MAX_STAMP = (NOW_MS + SKEW_MS) << 16
MAX_VERSION = (NOW_MS + 2 * SKEW_MS) << 16
NOW = NOW_MS << 16
LONG_SENDER = "s" * _limits.MAX_NODE_ID_BYTES
KINDS = {
    "future",
    "own_origin",
    "origin_too_long",
    "too_large",
    "table_full",
    "unrelayable",
    "stale",
}


def refused(state: Any, **expected: int) -> None:
    """The refusal counts are exactly ``expected`` (others zero)."""
    assert state.refusals() == {k: expected.get(k, 0) for k in KINDS}


def entries_of(codec: ModuleType, frame: bytes, max_frame_size: int = 1 << 20) -> list:
    return [e.astuple() for e in codec.decode(frame, max_frame_size).entries]


# -- the constants and relay_size ----------------------------------------------------


def test_constants_have_one_home(table: ModuleType) -> None:
    assert table.MAX_ORIGIN_BYTES == _limits.MAX_ORIGIN_BYTES == 266
    assert table.ENTRY_OVERHEAD == _limits.ENTRY_OVERHEAD == 48
    assert table.MAX_NODE_ID_BYTES == 255
    from fastgossip import _table

    assert _table.MAX_ORIGIN_BYTES == 266
    assert _table.relay_size is not None
    assert set(table.REFUSAL_KINDS) == KINDS


@pytest.mark.parametrize(
    "key,value,origin",
    [("k", 1, "o"), ("", b"", ""), ("clé", b"x" * 1000, "n#1" * 80), ("k" * 300, U64_MAX, "é")],
)
def test_relay_size_is_a_one_entry_batch_from_a_longest_sender(
    table: ModuleType, codec: ModuleType, key: str, value: Any, origin: str
) -> None:
    frame = codec.encode(codec.GossipBatch(LONG_SENDER, [codec.Entry(key, value, 1, origin)]))
    assert table.relay_size(key, value, origin) == len(frame)


def test_relay_size_checks_its_arguments(table: ModuleType) -> None:
    with pytest.raises(TypeError, match="key must be str, not int"):
        table.relay_size(1, 1, "o")
    with pytest.raises(TypeError, match="value must be int, bytes or None, not str"):
        table.relay_size("k", "v", "o")
    with pytest.raises(TypeError, match="origin must be str, not NoneType"):
        table.relay_size("k", 1, None)


# -- 1. one frame budget -------------------------------------------------------------


def _value_for_length(sender: str, origin: str, key: str, length: int) -> bytes:
    """A bytes value making a one-entry batch whose length field is ``length``."""
    base = _limits.BATCH_FIXED_BYTES - 4 + len(sender) + len(origin) + len(key) + 4
    return b"v" * (length - base)


def test_hole_1_length_field_equal_to_max_frame_size(table: ModuleType) -> None:
    """The reported hole: a batch whose *length field* is max_frame_size was
    accepted and stored, then no delta could carry it and every later
    delta_frames raised. Now that frame is too large, and an entry that arrives
    in a frame that fits but could not be relayed is refused."""
    limit = 4096
    value = _value_for_length("p", "o", "k", limit)
    frame = batch_frame("p", [("k", value, 1, "o", 1)])
    assert int.from_bytes(frame[:4], "big") == limit
    s = table.GossipState()
    with pytest.raises(FrameError, match=f"frame of {limit + 4} bytes exceeds max_frame_size"):
        s.merge_frame(frame, max_frame_size=limit)
    # a frame of exactly max_frame_size bytes is well formed, but its entry is
    # not storable: relayed by a node with a 255-byte id it would not fit
    value = _value_for_length("p", "o", "k", limit - 4)
    frame = batch_frame("p", [("k", value, 1, "o", 1)])
    assert len(frame) == limit
    assert s.merge_frame(frame, max_frame_size=limit) == 0
    assert "k" not in s and s.watermarks() == {}
    refused(s, too_large=1)
    assert s.delta_frames(LONG_SENDER, {}, limit) == []


def test_a_storable_entry_is_always_relayable(table: ModuleType, codec: ModuleType) -> None:
    limit = 4096
    value = b"v" * (limit - table.relay_size("k", b"", "o"))
    assert table.relay_size("k", value, "o") == limit
    s = table.GossipState()
    frame = batch_frame("p", [("k", value, 1, "o", 1), ("k2", value + b"!", 2, "o", 2)])
    assert s.merge_frame(frame, max_frame_size=1 << 20) == 2  # storable under 1 MiB
    s.clear()
    assert s.merge_frame(batch_frame("p", [("k", value, 1, "o", 1)]), max_frame_size=limit) == 1
    assert (
        s.merge_frame(batch_frame("p", [("k2", value + b"!", 2, "o", 2)]), max_frame_size=limit)
        == 0
    )
    refused(s, too_large=1)
    (out,) = s.delta_frames(LONG_SENDER, {}, limit)
    assert len(out) == limit
    assert codec.FrameDecoder(limit).feed(out)[0].entries[0].value == value


def test_delta_frames_never_raise_for_an_entry_held(table: ModuleType, codec: ModuleType) -> None:
    s = table.GossipState()
    s.set("a", 1, 1, "o", 1)
    s.set("huge", b"x" * 5000, 2, "o", 2)  # a local write the caller did not size-check
    s.set("b", 2, 3, "o", 3)
    for wm in ({}, {"o": 1}, {"o": 2}):
        frames = s.delta_frames("me", wm, 1000)
        keys = [e[0] for f in frames for e in entries_of(codec, f)]
        assert keys == [k for k, st in (("a", 1), ("b", 3)) if st > wm.get("o", 0)]
    refused(s, unrelayable=2)  # it was due twice
    assert s.delta_frames("me", {}, 1000, max_bytes=0) != []
    refused(s, unrelayable=3)


# -- 2. plausibility horizon ---------------------------------------------------------


@pytest.mark.parametrize(
    "stamp,version",
    [
        (U64_MAX, NOW),  # a forged stamp
        (NOW, U64_MAX),  # a forged version
        ((NOW_MS + 3_600_000) << 16, NOW),  # an hour ahead
        (NOW, (NOW_MS + 3_600_000) << 16),
        (MAX_STAMP + 1, NOW),
        (NOW, MAX_VERSION + 1),
    ],
)
def test_entries_beyond_the_horizon_are_refused(
    table: ModuleType, stamp: int, version: int
) -> None:
    s = table.GossipState()
    s.set("k", 1, 5, "o", 5)
    before = snapshot(s)
    frame = batch_frame("p", [("k", 2, version, "o", stamp), ("new", 1, version, "x", stamp)])
    assert s.merge_frame(frame, max_stamp=MAX_STAMP, max_version=MAX_VERSION) == 0
    assert snapshot(s) == before  # no value, watermark or max_version moved
    refused(s, future=2)
    e = load("codec", "python").Entry("k", 2, version, "o", stamp)
    assert s.merge([e], max_stamp=MAX_STAMP, max_version=MAX_VERSION) == []
    refused(s, future=3)
    assert snapshot(s) == before
    # without a horizon (the defaults) they are merged
    assert s.merge_frame(frame) == 2


def test_entries_at_the_horizon_are_accepted(table: ModuleType) -> None:
    s = table.GossipState()
    frame = batch_frame("p", [("a", 1, MAX_VERSION, "o", MAX_STAMP), ("b", 1, NOW, "o", NOW)])
    assert s.merge_frame(frame, 1 << 20, MAX_STAMP, MAX_VERSION) == 2
    assert s.watermarks() == {"o": MAX_STAMP}
    assert s.max_version == MAX_VERSION
    refused(s)


def test_a_gossip_frame_is_judged_too(table: ModuleType) -> None:
    s = table.GossipState()
    assert s.merge_frame(gossip_frame("p", "k", 1, U64_MAX, "o"), max_version=MAX_VERSION) == 0
    assert s.merge_frame(gossip_frame("p", "k", 1, U64_MAX, "o"), max_stamp=MAX_STAMP) == 0
    refused(s, future=2)
    assert s.merge_frame(gossip_frame("p", "k", 1, NOW, "o"), 1 << 20, MAX_STAMP, MAX_VERSION)


def test_horizon_arguments(table: ModuleType) -> None:
    s = table.GossipState()
    frame = batch_frame("p", [])
    with pytest.raises(TypeError, match="max_stamp must be int, not str"):
        s.merge_frame(frame, max_stamp="1")
    with pytest.raises(ValueError, match=r"max_version must be in range \[0, 2\*\*64\), got -1"):
        s.merge_frame(frame, max_version=-1)
    with pytest.raises(ValueError, match=r"max_stamp must be in range \[0, 2\*\*64\)"):
        s.merge([], max_stamp=1 << 64)


def test_refusing_by_stamp_leaves_no_gap(table: ModuleType) -> None:
    """Deltas go oldest stamp first: a refused stamp has only refused ones after it."""
    src = table.GossipState()
    for i in range(10):
        src.set(f"k{i}", i, NOW + i, "o", NOW + i)
    src.set("late", 1, MAX_STAMP + 5, "o", MAX_STAMP + 5)
    dst = table.GossipState()
    for frame in src.delta_frames("me", {}, 200):
        dst.merge_frame(frame, 1 << 20, MAX_STAMP, MAX_VERSION)
    assert dst.watermarks() == {"o": NOW + 9}
    assert [e.key for e in src.delta(dst.watermarks())] == ["late"]


# -- 3. own origin -------------------------------------------------------------------


def test_own_origin_is_refused_from_peers(table: ModuleType) -> None:
    s = table.GossipState()
    assert s.own_origin is None
    s.own_origin = "me#1"
    assert s.own_origin == "me#1"
    assert s.set("mine", 1, 1, "me#1", 1)  # local writes are of course allowed
    frame = batch_frame(
        "p", [("mine", 2, 9, "me#1", 9), ("x", 1, 1, "me#1", 1), ("y", 1, 1, "me", 1)]
    )
    assert s.merge_frame(frame) == 1
    assert s.get("mine") == (1, 1) and "x" not in s and "y" in s
    assert s.watermarks() == {"me#1": 1, "me": 1}
    refused(s, own_origin=2)
    assert s.merge_frame(gossip_frame("p", "z", 1, 1, "me#1")) == 0
    assert s.merge([load("codec", "python").Entry("z", 1, 1, "me#1")]) == []
    refused(s, own_origin=4)
    s.own_origin = None
    assert s.merge_frame(frame) == 2
    with pytest.raises(TypeError, match="own_origin must be str or None, not int"):
        s.own_origin = 5


# -- 4. origin length ----------------------------------------------------------------


def test_origin_length_bound(table: ModuleType) -> None:
    s = table.GossipState()
    longest, too_long, huge = "o" * 266, "o" * 267, "é" * 32767  # 64 KB of UTF-8
    frame = batch_frame(
        "p", [("a", 1, 1, longest, 1), ("b", 1, 1, too_long, 1), ("c", 1, 1, huge, 1)]
    )
    assert s.merge_frame(frame, max_frame_size=1 << 20) == 1
    assert s.keys() == ["a"] and s.watermarks() == {longest: 1}
    refused(s, origin_too_long=2)
    assert s.merge_frame(gossip_frame("p", "d", 1, 1, huge)) == 0
    refused(s, origin_too_long=3)
    assert s.set("e", 1, 1, longest)
    with pytest.raises(
        ValueError, match=r"origin is 267 bytes in UTF-8, more than MAX_ORIGIN_BYTES \(266\)"
    ):
        s.set("e", 1, 2, too_long)
    assert s.watermarks() == {longest: 1}


# -- 5. table bounds -----------------------------------------------------------------


def test_bytes_held(table: ModuleType) -> None:
    s = table.GossipState()
    assert s.bytes_held == 0
    s.set("ké", 1, 1)
    assert s.bytes_held == 3 + 8 + 48
    s.set("ké", b"abcdefghij", 2)
    assert s.bytes_held == 3 + 10 + 48
    s.set("x", b"", 1)
    assert s.bytes_held == 3 + 10 + 48 + 1 + 0 + 48
    s.set("x", b"", 0)  # loses: nothing changes
    assert s.bytes_held == 110
    s.clear()
    assert s.bytes_held == 0


def test_max_keys(table: ModuleType) -> None:
    s = table.GossipState(max_keys=2)
    assert s.max_keys == 2 and s.max_bytes is None
    frame = batch_frame("p", [("a", 1, 1, "o", 1), ("b", 1, 1, "o", 2), ("c", 1, 1, "q", 3)])
    assert s.merge_frame(frame) == 2
    refused(s, table_full=1)
    assert s.watermarks() == {"o": 2}  # the refused entry's origin is not there
    # updates of held keys are always accepted
    assert s.merge_frame(batch_frame("p", [("a", b"x" * 100, 2, "q", 4)])) == 1
    assert s.set("b", 7, 5, "o", 5)
    with pytest.raises(TableFull, match="table full: adding key 'c'") as err:
        s.set("c", 1, 9, "o", 9)
    assert isinstance(err.value, ValueError)
    assert "c" not in s and s.watermarks() == {"o": 5, "q": 4} and s.max_version == 5
    s.max_keys = None
    assert s.set("c", 1, 9, "o", 9)
    s.max_keys = 1  # lowering the bound removes nothing
    assert len(s) == 3
    assert s.merge_frame(batch_frame("p", [("d", 1, 1, "o", 1)])) == 0
    refused(s, table_full=2)


def test_max_bytes(table: ModuleType) -> None:
    per = 1 + 8 + 48  # a one-letter key with an int value
    s = table.GossipState(max_bytes=2 * per + 10)
    assert (
        s.merge_frame(
            batch_frame("p", [("a", 1, 1, "o", 1), ("b", 1, 1, "o", 2), ("c", 1, 1, "o", 3)])
        )
        == 2
    )
    refused(s, table_full=1)
    assert s.bytes_held == 2 * per
    # an update that grows within the bound is accepted, past it refused
    assert s.merge_frame(batch_frame("p", [("a", b"x" * 18, 2, "o", 4)])) == 1
    assert s.bytes_held == 2 * per + 10
    assert s.merge_frame(batch_frame("p", [("b", b"x" * 9, 2, "o", 5)])) == 0
    refused(s, table_full=2)
    assert s.watermarks() == {"o": 4}
    # an update that does not grow always is
    assert s.merge_frame(batch_frame("p", [("b", 5, 3, "o", 6), ("a", b"", 3, "o", 7)])) == 2
    assert s.bytes_held == 2 * per - 8
    # a losing update is not refused
    assert s.merge_frame(batch_frame("p", [("b", b"x" * 999, 0, "o", 8)])) == 0
    refused(s, table_full=2)
    with pytest.raises(TableFull, match="table full: growing key 'b'"):
        s.set("b", b"y" * 100, 10, "o", 10)
    assert s.get("b") == (5, 3)


def test_bound_arguments(table: ModuleType) -> None:
    with pytest.raises(TypeError, match="max_keys must be int or None, not str"):
        table.GossipState(max_keys="1")
    with pytest.raises(ValueError, match="max_bytes must be >= 0, not -1"):
        table.GossipState(max_bytes=-1)
    s = table.GossipState()
    with pytest.raises(TypeError, match="max_bytes must be int or None, not bool"):
        s.max_bytes = True
    s.max_bytes = 0
    with pytest.raises(TableFull):
        s.set("a", 1, 1)
    assert s.max_bytes == 0 and s.refusals()["table_full"] == 0  # set raises, not counts


# -- 6. counters ---------------------------------------------------------------------


def test_refusal_order_and_counts(table: ModuleType) -> None:
    """One reason per entry, in the documented order."""
    s = table.GossipState(max_keys=0)
    s.own_origin = "me"
    big = b"x" * 700  # fits 900 bytes from a short sender, not relayed by a long one
    frames = [
        [("a", 1, U64_MAX, "o" * 300, U64_MAX)],  # origin_too_long first
        [("b", big, U64_MAX, "me", U64_MAX)],  # own_origin
        [("c", big, U64_MAX, "o", U64_MAX)],  # future
        [("d", big, 1, "o", 1), ("e", 1, 1, "o", 1)],  # too_large, table_full
    ]
    for f in frames:
        assert s.merge_frame(batch_frame("p", f), 900, MAX_STAMP, MAX_VERSION) == 0
    refused(s, origin_too_long=1, own_origin=1, future=1, too_large=1, table_full=1)
    assert s.watermarks() == {} and s.max_version == 0 and len(s) == 0
    s.clear()  # keeps the counts and the bounds
    assert s.refusals()["future"] == 1 and s.max_keys == 0 and s.own_origin == "me"


# -- the twins agree -------------------------------------------------------------------

_keys = st.sampled_from(["a", "b", "c", "é"])
_origins = st.sampled_from(["o", "me", "q", "o" * 267])
_values = st.one_of(st.integers(0, 3), st.binary(max_size=40))
_stamps = st.sampled_from([0, 1, 5, NOW, MAX_STAMP, MAX_STAMP + 1, U64_MAX])
_entries = st.tuples(_keys, _values, _stamps, _origins, _stamps)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.lists(_entries, max_size=6), max_size=5),
    st.sampled_from([None, 0, 2, 3]),
    st.sampled_from([None, 60, 150, 400]),
    st.sampled_from([330, 360, 1 << 20]),
)
def test_compiled_and_python_refuse_alike(
    frames: list, max_keys: Any, max_bytes: Any, limit: int
) -> None:
    states = []
    for mod in (load("table", "cython"), load("table", "python")):
        s = mod.GossipState(max_keys=max_keys, max_bytes=max_bytes)
        s.own_origin = "me"
        out = []
        for f in frames:
            try:
                out.append(s.merge_frame(batch_frame("p", f), limit, MAX_STAMP, MAX_VERSION))
            except FrameError as exc:  # the frame itself is above the limit
                out.append(str(exc))
        states.append((out, snapshot(s), s.refusals(), s.bytes_held, s.origin_stats()))
    assert states[0] == states[1]


# -- 8. restamp ----------------------------------------------------------------------


def test_restamp(table: ModuleType) -> None:
    s = table.GossipState()
    s.set("b", 1, 10, "me", 10)
    s.set("a", 2, 10, "me", 10)  # same stamp: (stamp, key) order puts "a" first
    s.set("c", 3, 5, "me", 5)
    s.set("c", 4, 12, "me", 12)  # its older record is stale
    s.set("x", 9, 11, "other", 11)
    s.set("d", 5, 13, "me", 13)
    s.set("d", 6, 14, "other", 14)  # no longer held under "me"
    forged = U64_MAX - 100
    assert s.merge_frame(batch_frame("p", [("z", 1, 1, "me", forged)])) == 1  # a forgery
    before = {e.key: e for e in s}
    assert s.restamp("me", forged + 1) == 4
    assert {e.key: e.stamp for e in s if e.origin == "me"} == {
        "a": forged + 1,
        "b": forged + 2,
        "c": forged + 3,
        "z": forged + 4,
    }
    for e in s:  # only stamps moved
        assert e.astuple()[:4] == before[e.key].astuple()[:4]
    assert s.watermarks() == {"me": forged + 4, "other": 14}
    # a peer that took the forged watermark fetches every entry again, in order
    assert [e.key for e in s.delta({"me": forged, "other": 14})] == ["a", "b", "c", "z"]
    assert [e.key for e in s.delta({"me": forged + 2, "other": 14})] == ["c", "z"]
    frames = s.delta_frames("me", {"me": forged, "other": 14})
    peer = table.GossipState()
    for f in frames:
        peer.merge_frame(f)
    assert peer.watermarks() == {"me": forged + 4}
    # later writes continue above
    s.set("c", 7, 20, "me", forged + 5)
    assert [e.key for e in s.delta({"me": forged + 4, "other": 14})] == ["c"]


def test_restamp_edges(table: ModuleType) -> None:
    s = table.GossipState()
    assert s.restamp("nobody", 5) == 0
    s.set("a", 1, 1, "o", 7)
    s.set("a", 2, 2, "q", 3)  # "o" holds nothing now
    assert s.restamp("o", 100) == 0
    assert s.watermarks() == {"o": 7, "q": 3}
    assert s.restamp("q", 1) == 1  # a lower first stamp keeps the watermark
    assert s.get_entry("a").stamp == 1 and s.watermarks()["q"] == 3
    s.set("b", 1, 1, "q", 2)
    with pytest.raises(ValueError, match=r"restamp: 2 stamps from 18446744073709551615 pass"):
        s.restamp("q", U64_MAX)
    assert s.restamp("q", U64_MAX - 1) == 2
    with pytest.raises(TypeError, match="origin must be str, not int"):
        s.restamp(1, 1)
    with pytest.raises(ValueError, match=r"first_stamp must be in range \[0, 2\*\*64\)"):
        s.restamp("q", -1)


# -- stale entries, re-stamps, forged entries of our own origin ---------------------


def test_a_stale_winning_entry_is_refused_when_asked(table: ModuleType) -> None:
    """Found in review: an entry under n2's origin with a higher version but
    stamp 1, sent to one node only, won there and was never asked for by
    anyone else (stamp 1 is below every watermark): the nodes disagreed for
    good. A node refuses such an entry (refuse_stale): honest deltas are
    stamp-ordered prefixes, so whoever gave it that watermark held something
    greater for the key."""
    s = table.GossipState()
    assert s.refuse_stale is False  # merge stays a join for the library user
    s.refuse_stale = True
    s.merge([Entry("k", b"honest", 10, "n2#1", 50), Entry("j", 1, 11, "n2#1", 60)])
    assert s.merge([Entry("k", b"evil", 99, "n2#1", 1)]) == []  # wins, but stale
    assert s.merge([Entry("new", b"evil", 99, "n2#1", 2)]) == []  # a new key, stale too
    refused(s, stale=2)
    assert s.get("k") == (b"honest", 10) and s.get("new") is None
    assert s.merge([Entry("k", b"old", 5, "n2#1", 3)]) == []  # loses: only seen
    refused(s, stale=2)
    assert len(s.merge([Entry("k", b"newer", 12, "n2#1", 61)])) == 1  # above: taken
    # a node's own writes are not merges
    s.set("mine", 1, 1, "n2#1", 1)
    assert s.get("mine") == (1, 1)


def test_a_restamped_entry_travels_on(table: ModuleType) -> None:
    """Found in review: a re-stamped entry tied with the copy a peer held, so
    the peer kept the old stamp and never passed it on to a node two hops away.
    A tie with a higher stamp takes it."""
    a, b = table.GossipState(), table.GossipState()
    for s in (a, b):
        s.refuse_stale = True
    a.merge([Entry("k", 1, 10, "v#1", 5)])
    b.merge([Entry("k", 1, 10, "v#1", 5)])
    b.merge([Entry("x", 0, 1, "v#1", 900)])  # b's watermark for v forged up to 900
    a.merge([Entry("k", 1, 10, "v#1", 901)])  # v re-stamped k past the forgery
    assert a.get_entry("k").stamp == 901
    moved = b.merge(a.delta(b.watermarks()))
    assert moved == [] and b.get_entry("k").stamp == 901


def test_own_origin_refusals_record_the_forged_stamp(table: ModuleType) -> None:
    s = table.GossipState()
    s.own_origin = "me#1"
    assert s.own_refused_stamp == 0
    s.merge([Entry("k", 1, 1, "me#1", 500), Entry("j", 1, 1, "me#1", 400)], max_stamp=1000)
    assert s.own_refused_stamp == 500
    s.merge([Entry("k", 1, 1, "me#1", 5000)], max_stamp=1000)  # beyond the horizon
    assert s.own_refused_stamp == 500
    refused(s, own_origin=3)
