"""GossipState, the LWW table: one test body for the compiled table and its twin."""

from __future__ import annotations

import gc
import os
import struct
from types import ModuleType
from typing import Any, Iterable, List, Optional, Tuple

import pytest

from fastgossip._impl import load
from fastgossip.errors import FrameError

U64_MAX = (1 << 64) - 1


# -- frames by hand, per docs/PROTOCOL.md ------------------------------------------------


def _str16(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack(">H", len(b)) + b


def _value(v: Any) -> bytes:
    if v is None:
        return b"\x02"  # a tombstone
    if isinstance(v, bytes):
        return b"\x01" + struct.pack(">I", len(v)) + v
    return b"\x00" + struct.pack(">Q", v)


def _frame(mtype: int, payload: bytes) -> bytes:
    return struct.pack(">IBB", 2 + len(payload), 1, mtype) + payload


def batch_frame(sender: str, entries: Iterable[Tuple[Any, ...]]) -> bytes:
    """A GossipBatch frame of (key, value, version, origin, stamp[, expires]) tuples."""
    entries = list(entries)
    origins: List[str] = []
    for e in entries:
        if e[3] not in origins:
            origins.append(e[3])
    payload = _str16(sender) + struct.pack(">H", len(origins))
    payload += b"".join(_str16(o) for o in origins)
    payload += struct.pack(">I", len(entries))
    for key, value, version, origin, stamp, *rest in entries:
        v = _value(value)
        if rest and rest[0]:  # an expiry: the tag's bit 0x04, then the u64
            v = bytes((v[0] | 4,)) + struct.pack(">Q", rest[0]) + v[1:]
        payload += _str16(key) + struct.pack(">HQQ", origins.index(origin), version, stamp) + v
    return _frame(6, payload)


def gossip_frame(sender: str, key: str, value: Any, version: int, origin: str = "") -> bytes:
    return _frame(
        1,
        _str16(sender) + _str16(key) + _value(value) + struct.pack(">Q", version) + _str16(origin),
    )


def snapshot(state: Any) -> Tuple[list, dict, int]:
    """Everything observable about a table, comparable across implementations."""
    return ([e.astuple() for e in state], state.watermarks(), state.max_version)


def both() -> Tuple[ModuleType, ModuleType]:
    return load("table", "cython"), load("table", "python")


# -- basics --------------------------------------------------------------------------


def test_empty(table: ModuleType) -> None:
    s = table.GossipState()
    assert len(s) == 0
    assert not s
    assert "a" not in s
    assert s.get("a") is None
    assert s.get_entry("a") is None
    assert list(s) == []
    assert s.keys() == []
    assert s.watermarks() == {}
    assert s.max_version == 0
    assert s.delta({}) == []
    assert s.delta_frames("me", {}) == []
    assert "GossipState" in repr(s)


def test_set_get(table: ModuleType) -> None:
    s = table.GossipState()
    assert s.set("a", 1, 10) is True
    assert s.set("b", b"xy", 11, "n1", 5) is True
    assert s.set("é🙂", 2**64 - 1, 12, "ñ") is True
    assert len(s) == 3 and s
    assert s.get("a") == (1, 10)
    assert s.get("b") == (b"xy", 11)
    assert type(s.get("a")[0]) is int and type(s.get("b")[0]) is bytes
    assert s.get("é🙂") == (2**64 - 1, 12)
    e = s.get_entry("b")
    assert isinstance(e, table.Entry)
    assert e.astuple() == ("b", b"xy", 11, "n1", 5)
    assert s.get_entry("a").astuple() == ("a", 1, 10, "", 10)  # stamp defaults to version
    assert "a" in s and "z" not in s and 1 not in s and None not in s
    assert s.keys() == ["a", "b", "é🙂"]
    assert [e.key for e in s] == ["a", "b", "é🙂"]
    assert s.max_version == 12
    assert s.watermarks() == {"": 10, "n1": 5, "ñ": 12}


def test_empty_key_and_values(table: ModuleType) -> None:
    s = table.GossipState()
    assert s.set("", b"", 0)
    assert s.get("") == (b"", 0)
    assert s.set("zero", 0, 0)
    assert s.get("zero") == (0, 0)


def test_iteration_order_is_first_insertion(table: ModuleType) -> None:
    s = table.GossipState()
    for k in "cab":
        s.set(k, 1, 1)
    s.set("a", 2, 2)  # an update does not move a key
    assert s.keys() == ["c", "a", "b"]
    assert [e.astuple() for e in s] == [("c", 1, 1, "", 1), ("a", 2, 2, "", 2), ("b", 1, 1, "", 1)]


def test_iteration_sees_keys_added_meanwhile(table: ModuleType) -> None:
    s = table.GossipState()
    s.set("a", 1, 1)
    seen = []
    for e in s:
        seen.append(e.key)
        if len(seen) < 3:
            s.set(f"k{len(seen)}", 1, 1)
    assert seen == ["a", "k1", "k2"]


def test_many_keys_grow_the_index(table: ModuleType) -> None:
    s = table.GossipState()
    n = 5000
    for i in range(n):
        assert s.set(f"key{i}", i, i + 1, f"o{i % 7}")
    assert len(s) == n
    for i in range(0, n, 97):
        assert s.get(f"key{i}") == (i, i + 1)
    assert s.get("key5000") is None
    assert s.keys() == [f"key{i}" for i in range(n)]


def test_clear(table: ModuleType) -> None:
    s = table.GossipState()
    s.set("a", b"v", 3, "o")
    s.clear()
    assert len(s) == 0 and s.watermarks() == {} and s.max_version == 0 and list(s) == []
    assert s.set("a", 1, 1)
    assert s.get("a") == (1, 1)


# -- validation ----------------------------------------------------------------------

# The codec encoder's rules and words, with the bare argument name.
BAD_SETS = [
    ((1, 1, 1), {}, TypeError, "key must be str, not int"),
    ((b"k", 1, 1), {}, TypeError, "key must be str, not bytes"),
    (("k", 1.5, 1), {}, TypeError, "value must be int, bytes or None, not float"),
    (("k", True, 1), {}, TypeError, "value must be int, bytes or None, not bool"),
    (("k", bytearray(b"x"), 1), {}, TypeError, "value must be int, bytes or None, not bytearray"),
    (("k", -1, 1), {}, ValueError, "value must be in range [0, 2**64), got -1"),
    (
        ("k", 2**64, 1),
        {},
        ValueError,
        "value must be in range [0, 2**64), got 18446744073709551616",
    ),
    (("k", 1, "1"), {}, TypeError, "version must be int, not str"),
    (("k", 1, 1.0), {}, TypeError, "version must be int, not float"),
    (("k", 1, True), {}, TypeError, "version must be int, not bool"),
    (("k", 1, -1), {}, ValueError, "version must be in range [0, 2**64), got -1"),
    (
        ("k", 1, 2**200),
        {},
        ValueError,
        "version must be in range [0, 2**64), got an int of 201 bits",
    ),
    (("k", 1, 1, 7), {}, TypeError, "origin must be str, not int"),
    (("k", 1, 1, None), {}, TypeError, "origin must be str, not NoneType"),
    (("k", 1, 1), {"stamp": "x"}, TypeError, "stamp must be int, not str"),
    (("k", 1, 1), {"stamp": -5}, ValueError, "stamp must be in range [0, 2**64), got -5"),
    (
        ("x" * 65536, 1, 1),
        {},
        ValueError,
        "key is 65536 bytes in UTF-8, more than the 65535 a str field holds",
    ),
    (
        ("é" * 32768, 1, 1),
        {},
        ValueError,
        "key is 65536 bytes in UTF-8, more than the 65535 a str field holds",
    ),
    (
        ("k", 1, 1, "o" * 70000),
        {},
        ValueError,
        "origin is 70000 bytes in UTF-8, more than the 65535 a str field holds",
    ),
    (
        ("\ud800", 1, 1),
        {},
        ValueError,
        "key cannot be encoded as UTF-8: 'utf-8' codec can't "
        "encode character '\\ud800' in position 0: surrogates not allowed",
    ),
]


@pytest.mark.parametrize("args, kwargs, exc, message", BAD_SETS)
def test_set_validation(
    table: ModuleType, args: tuple, kwargs: dict, exc: type, message: str
) -> None:
    s = table.GossipState()
    with pytest.raises(exc) as info:
        s.set(*args, **kwargs)
    assert str(info.value) == message
    assert len(s) == 0 and s.watermarks() == {} and s.max_version == 0


def test_limits_are_accepted(table: ModuleType) -> None:
    s = table.GossipState()
    assert s.set("x" * 65535, U64_MAX, U64_MAX, "o" * table.MAX_ORIGIN_BYTES, U64_MAX)
    assert s.get("x" * 65535) == (U64_MAX, U64_MAX)
    assert s.max_version == U64_MAX


def test_int_and_str_subclasses_are_normalised(table: ModuleType) -> None:
    class MyInt(int):
        pass

    class MyStr(str):
        pass

    s = table.GossipState()
    s.set(MyStr("k"), MyInt(5), MyInt(2), MyStr("o"), MyInt(3))
    e = s.get_entry("k")
    assert e.astuple() == ("k", 5, 2, "o", 3)
    assert [type(f) for f in e.astuple()] == [str, int, int, str, int]


def test_surrogates(table: ModuleType) -> None:
    s = table.GossipState()
    with pytest.raises(ValueError, match="key cannot be encoded as UTF-8"):
        s.get("\ud800")
    with pytest.raises(ValueError, match="origin cannot be encoded as UTF-8"):
        s.set("k", 1, 1, "a\udfff")
    assert "\ud800" not in s
    assert len(s) == 0


def test_validation_words_are_the_encoders(table: ModuleType) -> None:
    """set() refuses what encoding a Gossip refuses, in the same words."""
    codec = load("codec", "cython" if table.__name__.endswith("_c") else "python")
    bad = [
        ("k", -1, 1, ""),
        ("k", 1.5, 1, ""),
        ("k", 1, True, ""),
        ("k", 1, 2**64, ""),
        ("k", b"v", -3, ""),
        ("k", 1, 1, "x" * 65536),
        ("\udcff", 1, 1, ""),
    ]
    for key, value, version, origin in bad:
        with pytest.raises((TypeError, ValueError)) as mine:
            table.GossipState().set(key, value, version, origin)
        with pytest.raises((TypeError, ValueError)) as theirs:
            codec.encode(codec.Gossip("s", key, value, version, origin))
        assert type(mine.value) is type(theirs.value)
        assert "Gossip." + str(mine.value) == str(theirs.value)


def test_get_validates_the_key(table: ModuleType) -> None:
    s = table.GossipState()
    with pytest.raises(TypeError, match="key must be str, not int"):
        s.get(1)
    with pytest.raises(TypeError, match="key must be str, not bytes"):
        s.get_entry(b"k")


# -- LWW ------------------------------------------------------------------------------


def test_higher_version_wins(table: ModuleType) -> None:
    s = table.GossipState()
    assert s.set("k", 1, 5, "b")
    assert s.set("k", 2, 6, "a")
    assert s.get("k") == (2, 6)
    assert not s.set("k", 3, 5, "z")  # lower version never wins
    assert s.get_entry("k").astuple() == ("k", 2, 6, "a", 6)


def test_equal_version_higher_origin_wins(table: ModuleType) -> None:
    s = table.GossipState()
    assert s.set("k", 9, 5, "b")
    assert not s.set("k", 99, 5, "a")
    assert s.set("k", 1, 5, "c")
    assert s.get_entry("k").origin == "c"
    assert s.set("k", 1, 5, "é")  # origins compare as str (code points == UTF-8 bytes)
    assert not s.set("k", 1, 5, "z")
    assert s.set("k", 1, 5, "\U0001f600")
    assert not s.set("k", 1, 5, "\uffff")


def test_equal_version_and_origin_greater_value_wins(table: ModuleType) -> None:
    s = table.GossipState()
    assert s.set("k", 5, 1, "o")
    assert not s.set("k", 4, 1, "o")
    assert s.set("k", 6, 1, "o")
    assert s.set("k", b"", 1, "o")  # any bytes > any int
    assert not s.set("k", U64_MAX, 1, "o")
    assert s.set("k", b"a", 1, "o")
    assert s.set("k", b"a\x00", 1, "o")  # longer with equal prefix is greater
    assert not s.set("k", b"a", 1, "o")
    assert s.set("k", b"b", 1, "o")
    assert s.get("k") == (b"b", 1)


def test_equal_triple_changes_nothing_but_a_higher_stamp(table: ModuleType) -> None:
    """The same (version, origin, value) again changes no value; with a higher
    stamp it is the same entry re-stamped by its origin (GossipState.restamp),
    and the new stamp is taken, so that the re-stamp travels on to the peers
    whose watermarks were raised past the old one."""
    s = table.GossipState()
    assert s.set("k", 5, 1, "o", stamp=7)
    assert not s.set("k", 5, 1, "o", stamp=9)
    assert s.get_entry("k").stamp == 9
    assert s.watermarks() == {"o": 9}
    assert not s.set("k", 5, 1, "o", stamp=8)  # a lower one is only seen
    assert s.get_entry("k").stamp == 9
    assert s.delta({"o": 8}) == [table.Entry("k", 5, 1, "o", 9)]


def test_origin_stats(table: ModuleType) -> None:
    """(watermark, keys held, entries seen won or lost) per origin, whichever
    way the entries came in."""
    s = table.GossipState()
    assert s.origin_stats() == {}
    s.set("k", 1, 10, "a", 100)
    assert not s.set("k", 1, 3, "b", 50)  # lost: seen, holds nothing
    s.merge([table.Entry("j", 1, 1, "c", 7), table.Entry("i", 1, 1, "c", 8)])
    assert s.origin_stats() == {"a": (100, 1, 1), "b": (50, 0, 1), "c": (8, 2, 2)}
    codec = load("codec", "cython" if table.__name__.endswith("_c") else "python")
    frame = codec.encode(codec.GossipBatch("p", [codec.Entry("j", 2, 2, "a", 101)]))
    assert s.merge_frame(frame) == 1  # c's key j now belongs to a
    s.merge_frame(frame)  # the same again: seen, no change
    assert s.origin_stats() == {"a": (101, 2, 3), "b": (50, 0, 1), "c": (8, 1, 2)}
    s.clear()
    assert s.origin_stats() == {}


def test_watermarks_and_max_version_count_losers(table: ModuleType) -> None:
    s = table.GossipState()
    s.set("k", 1, 10, "a", 100)
    assert not s.set("k", 1, 3, "b", 50)
    assert s.watermarks() == {"a": 100, "b": 50}
    s.set("k", 1, 2, "a", 1)
    assert s.watermarks()["a"] == 100
    s2 = table.GossipState()
    s2.set("k", 1, 10)
    s2.merge([table.Entry("k", 1, 99, "x", 1), table.Entry("k", 1, 5, "y", 1)])
    assert s2.max_version == 99


# -- merge ----------------------------------------------------------------------------


def test_merge_returns_the_changes_in_input_order(table: ModuleType) -> None:
    E = table.Entry
    s = table.GossipState()
    s.set("b", 1, 5, "o")
    batch = [E("a", 1, 1, "o"), E("b", 1, 4, "o"), E("c", b"x", 2, "p", 9), E("a", 2, 1, "o")]
    changed = s.merge(batch)
    assert [e.astuple() for e in changed] == [
        ("a", 1, 1, "o", 1),
        ("c", b"x", 2, "p", 9),
        ("a", 2, 1, "o", 1),
    ]
    assert changed[0] is batch[0]
    assert s.merge(batch) == []
    assert s.merge([]) == []
    assert s.merge(iter([E("d", 1, 1)]))[0].key == "d"


def test_merge_gossip_and_duck_typed_entries(table: ModuleType) -> None:
    codec_messages = load("codec", "cython" if table.__name__.endswith("_c") else "python")
    s = table.GossipState()
    g = codec_messages.Gossip("sender", "k", b"v", 7, "origin")
    (e,) = s.merge([g])
    assert isinstance(e, table.Entry)
    assert e.astuple() == ("k", b"v", 7, "origin", 7)

    class Duck:
        key, value, version, origin = "d", 3, 4, "o"

    (e,) = s.merge([Duck()])
    assert e.astuple() == ("d", 3, 4, "o", 4)
    # an Entry of the other implementation works too
    other = load("table", "python" if table.__name__.endswith("_c") else "cython")
    (e,) = s.merge([other.Entry("x", 1, 1, "o", 2)])
    assert isinstance(e, table.Entry) and e.astuple() == ("x", 1, 1, "o", 2)


def test_merge_validates_everything_first(table: ModuleType) -> None:
    E = table.Entry
    s = table.GossipState()
    with pytest.raises(ValueError, match=r"version must be in range \[0, 2\*\*64\), got -1"):
        s.merge([E("a", 1, 1), E("b", 1, -1)])
    with pytest.raises(TypeError, match="value must be int, bytes or None, not str"):
        s.merge([E("a", 1, 1), E("b", "v", 1)])
    with pytest.raises(AttributeError):
        s.merge([E("a", 1, 1), object()])
    assert len(s) == 0 and s.watermarks() == {} and s.max_version == 0


# -- merge_frame ----------------------------------------------------------------------

ENTRIES = [
    ("alpha", 1, 10, "node-a", 10),
    ("beta", b"\x00\xff", 11, "node-b", 3),
    ("gamma", 2**64 - 1, 12, "node-a", 11),
    ("é", b"", 13, "", 13),
    ("alpha", 5, 9, "node-c", 20),  # loses to version 10
]


def test_batch_frame_test_vector() -> None:
    # GossipBatch("a", [Entry("k", 1, 2, "o", 3)]), byte by byte from PROTOCOL.md
    expected = bytes.fromhex(
        "0000002c"
        "0106"
        "000161"
        "0001"
        "00016f"
        "00000001"
        "00016b"
        "0000"
        "0000000000000002"
        "0000000000000003"
        "00"
        "0000000000000001"
    )
    assert batch_frame("a", [("k", 1, 2, "o", 3)]) == expected
    for mod in both():
        s = mod.GossipState()
        s.set("k", 1, 2, "o", 3)
        assert s.delta_frames("a", {}) == [expected]
        t = mod.GossipState()
        assert t.merge_frame(expected) == 1
        assert snapshot(t) == snapshot(s)


def test_merge_frame_is_merge(table: ModuleType) -> None:
    frame = batch_frame("sender", ENTRIES)
    a, b = table.GossipState(), table.GossipState()
    a.set("beta", 1, 100, "x")
    b.set("beta", 1, 100, "x")
    changed = a.merge([table.Entry(*e) for e in ENTRIES])
    assert b.merge_frame(frame) == len(changed) == 3
    assert snapshot(a) == snapshot(b)
    assert b.merge_frame(frame) == 0
    assert snapshot(a) == snapshot(b)


def test_merge_frame_accepts_buffers(table: ModuleType) -> None:
    frame = batch_frame("s", ENTRIES)
    for buf in (bytearray(frame), memoryview(frame), memoryview(b"xx" + frame)[2:]):
        s = table.GossipState()
        assert s.merge_frame(buf) == 4
    with pytest.raises(TypeError):
        table.GossipState().merge_frame("not bytes")


def test_merge_frame_single_gossip(table: ModuleType) -> None:
    s = table.GossipState()
    assert s.merge_frame(gossip_frame("s", "k", b"v", 7, "o")) == 1
    assert s.get_entry("k").astuple() == ("k", b"v", 7, "o", 7)
    assert s.merge_frame(gossip_frame("s", "k", 1, 7, "o")) == 0
    assert s.merge_frame(gossip_frame("s", "k2", 1, 3)) == 1
    assert s.get_entry("k2").astuple() == ("k2", 1, 3, "", 3)


def test_merge_frame_many_origins(table: ModuleType) -> None:
    entries = [(f"k{i}", i, i, f"origin-{i % 40}", i) for i in range(200)]
    s = table.GossipState()
    assert s.merge_frame(batch_frame("s", entries)) == 200
    assert len(s.watermarks()) == 40
    assert s.get_entry("k77").astuple() == ("k77", 77, 77, "origin-37", 77)


def test_merge_frame_empty_batch(table: ModuleType) -> None:
    s = table.GossipState()
    assert s.merge_frame(batch_frame("s", [])) == 0
    assert len(s) == 0 and s.watermarks() == {}


def test_merge_frame_unused_origin_is_not_seen(table: ModuleType) -> None:
    payload = _str16("s") + struct.pack(">H", 2) + _str16("ghost") + _str16("real")
    payload += struct.pack(">I", 1) + _str16("k") + struct.pack(">HQQ", 1, 1, 1) + _value(1)
    s = table.GossipState()
    assert s.merge_frame(_frame(6, payload)) == 1
    assert s.watermarks() == {"real": 1}


def _expect_frame_error(mod: ModuleType, frame: bytes, **kw: Any) -> FrameError:
    s = mod.GossipState()
    s.set("alpha", 0, 1, "node-a")
    before = snapshot(s)
    with pytest.raises(FrameError) as info:
        s.merge_frame(frame, **kw)
    assert snapshot(s) == before, "a malformed frame changed the table"
    err = info.value
    assert isinstance(err, ValueError)
    assert str(err).endswith(f"at offset {err.offset}")
    assert 0 <= err.offset <= len(frame)
    return err


def _both_fail_alike(frame: bytes, **kw: Any) -> FrameError:
    c, p = both()
    ec = _expect_frame_error(c, frame, **kw)
    ep = _expect_frame_error(p, frame, **kw)
    assert (str(ec), ec.offset) == (str(ep), ep.offset)
    return ec


def _with_length(body: bytes) -> bytes:
    """body (version byte onwards) with a length prefix that matches it."""
    return struct.pack(">I", len(body)) + body


def test_truncation_at_every_offset() -> None:
    frame = batch_frame("sender", ENTRIES)
    for cut in range(len(frame)):
        _both_fail_alike(frame[:cut])  # the prefix claims more than there is
        if cut >= 6:
            _both_fail_alike(_with_length(frame[4:cut]))  # a consistent but short frame


def test_gossip_truncation_at_every_offset() -> None:
    frame = gossip_frame("sender", "key", b"value", 5, "origin")
    for cut in range(6, len(frame)):
        _both_fail_alike(_with_length(frame[4:cut]))


def test_trailing_bytes() -> None:
    frame = batch_frame("s", ENTRIES)
    _both_fail_alike(frame + b"\x00")
    _both_fail_alike(_with_length(frame[4:] + b"\x00"))
    g = gossip_frame("s", "k", 1, 1)
    _both_fail_alike(_with_length(g[4:] + b"zz"))


def test_header_errors() -> None:
    frame = batch_frame("s", ENTRIES)
    err = _both_fail_alike(b"\x00\x00\x00\x01\x01")
    assert err.offset == 0
    err = _both_fail_alike(frame[:4] + b"\x02" + frame[5:])
    assert err.offset == 4
    for mtype in (0, 8, 255):
        err = _both_fail_alike(frame[:5] + bytes([mtype]) + frame[6:])
        assert str(err) == f"unknown message type {mtype} at offset 5"
    for mtype in (2, 3, 4, 5, 7):  # the codec's error for such a payload
        _both_fail_alike(frame[:5] + bytes([mtype]) + frame[6:])
    err = _both_fail_alike(frame, max_frame_size=len(frame) - 1)  # the prefix counts
    assert err.offset == 0
    for mod in both():
        s = mod.GossipState()
        # the frame is accepted; its entries are not storable under so small a limit
        assert s.merge_frame(frame, max_frame_size=len(frame)) == 0
        assert s.refusals()["too_large"] == len(ENTRIES)
        assert mod.GossipState().merge_frame(frame) == 4


def _entry_offsets() -> Tuple[bytes, int]:
    frame = batch_frame("s", [("k", 1, 1, "o", 1)])
    first_entry = 4 + 2 + 3 + 2 + 3 + 4
    return frame, first_entry


def test_bad_tag() -> None:
    frame, at = _entry_offsets()
    tag_at = at + 3 + 2 + 16
    assert frame[tag_at] == 0
    err = _both_fail_alike(frame[:tag_at] + b"\x03" + frame[tag_at + 1 :])
    assert err.offset == tag_at
    g = gossip_frame("s", "k", 1, 1)
    tag_at = 6 + 3 + 3
    _both_fail_alike(g[:tag_at] + b"\x07" + g[tag_at + 1 :])


def test_bad_origin_index() -> None:
    frame, at = _entry_offsets()
    idx_at = at + 3
    err = _both_fail_alike(frame[:idx_at] + b"\x00\x01" + frame[idx_at + 2 :])
    assert err.offset == idx_at
    _both_fail_alike(frame[:idx_at] + b"\xff\xff" + frame[idx_at + 2 :])


@pytest.mark.parametrize(
    "bad",
    [
        b"\xff",
        b"\xc0\x80",
        b"\xed\xa0\x80",
        b"\xf4\x90\x80\x80",
        b"a\x80",
        b"\xe2\x82",
        b"abcdefgh\xf0\x9f\x98",
    ],
)
def test_bad_utf8(bad: bytes) -> None:
    n = len(bad)
    # in the key
    payload = (
        _str16("s")
        + struct.pack(">H", 1)
        + _str16("o")
        + struct.pack(">I", 1)
        + struct.pack(">H", n)
        + bad
        + struct.pack(">HQQ", 0, 1, 1)
        + _value(1)
    )
    _both_fail_alike(_frame(6, payload))
    # in an origin
    payload = (
        _str16("s")
        + struct.pack(">H", 1)
        + struct.pack(">H", n)
        + bad
        + struct.pack(">I", 1)
        + _str16("k")
        + struct.pack(">HQQ", 0, 1, 1)
        + _value(1)
    )
    _both_fail_alike(_frame(6, payload))
    # in the sender
    payload = struct.pack(">H", n) + bad + struct.pack(">HI", 0, 0)
    _both_fail_alike(_frame(6, payload))
    # in a single Gossip's key and origin
    g = struct.pack(">H", n) + bad
    _both_fail_alike(_frame(1, _str16("s") + g + _value(1) + struct.pack(">Q", 1) + _str16("")))
    _both_fail_alike(_frame(1, _str16("s") + _str16("k") + _value(1) + struct.pack(">Q", 1) + g))


def test_valid_utf8_edges_are_accepted(table: ModuleType) -> None:
    keys = [
        "\x7f",
        "\x80",
        "\u07ff",
        "\u0800",
        "\ud7ff",
        "\ue000",
        "\uffff",
        "\U00010000",
        "\U0010ffff",
        "plain ascii longer than eight bytes",
        "mixed ascii and é at end é",
    ]
    s = table.GossipState()
    assert s.merge_frame(batch_frame("s", [(k, 1, 1, k, 1) for k in keys])) == len(keys)
    assert s.keys() == keys
    assert set(s.watermarks()) == set(keys)


def test_huge_counts() -> None:
    head = _str16("s") + struct.pack(">H", 1) + _str16("o")
    for count in (1, 2, 1000, 0xFFFFFFFF):
        err = _both_fail_alike(_frame(6, head + struct.pack(">I", count)))
        assert err.offset == 4 + 2 + len(head)
    # a count of 2 with only one entry present
    body = _str16("k") + struct.pack(">HQQ", 0, 1, 1) + _value(1)
    _both_fail_alike(_frame(6, head + struct.pack(">I", 2) + body + b"\x00" * 10))
    # n_origins bigger than the frame holds
    _both_fail_alike(_frame(6, _str16("s") + struct.pack(">H", 0xFFFF)))


def test_merge_frame_is_atomic_on_a_late_error(table: ModuleType) -> None:
    entries = [(f"k{i}", i, i + 1, "o", i + 1) for i in range(50)]
    frame = bytearray(batch_frame("s", entries))
    frame[-9] = 9  # the last entry's value tag
    s = table.GossipState()
    with pytest.raises(FrameError, match="tag"):
        s.merge_frame(bytes(frame))
    assert len(s) == 0 and s.watermarks() == {} and s.max_version == 0


def test_max_frame_size_argument(table: ModuleType) -> None:
    s = table.GossipState()
    with pytest.raises(TypeError, match="max_frame_size must be int, not str"):
        s.merge_frame(b"", max_frame_size="1")
    with pytest.raises(TypeError, match="max_frame_size must be int, not bool"):
        s.merge_frame(b"", max_frame_size=True)
    for bad in (-1, 1, 2**32):
        with pytest.raises(
            ValueError,
            match=r"max_frame_size must be in \[2, 4294967295\], "
            f"got {bad}",
        ):
            s.merge_frame(b"", max_frame_size=bad)
    frame = batch_frame("s", ENTRIES)
    assert s.merge_frame(frame, max_frame_size=2**32 - 1) == 4


def test_other_message_types_are_refused() -> None:
    ping = _frame(2, _str16("s") + struct.pack(">Q", 9))
    err = _both_fail_alike(ping)
    assert str(err) == "cannot merge a Ping frame (type 2) at offset 5"
    digest = _frame(7, _str16("s") + b"\x00" + struct.pack(">I", 0))
    assert str(_both_fail_alike(digest)) == "cannot merge a Digest frame (type 7) at offset 5"


def test_frame_errors_are_the_codecs() -> None:
    """merge_frame reports a malformed frame exactly as the codec's decode does."""
    frames = [batch_frame("sender", ENTRIES), gossip_frame("s", "key", b"val", 3, "o")]
    cases = []
    for frame in frames:
        for cut in range(len(frame)):
            cases.append(frame[:cut])
            if cut >= 6:
                cases.append(_with_length(frame[4:cut]))
        for pos in range(4, len(frame)):
            for byte in (0x00, 0x02, 0x80, 0xFF):
                cases.append(frame[:pos] + bytes([byte]) + frame[pos + 1 :])
    for impl in ("cython", "python"):
        codec, table = load("codec", impl), load("table", impl)
        for frame in cases:
            try:
                msg = codec.decode(frame)
            except FrameError as exc:
                with pytest.raises(FrameError) as mine:
                    table.GossipState().merge_frame(frame)
                assert (str(mine.value), mine.value.offset) == (str(exc), exc.offset)
            else:
                if type(msg).__name__ in ("Gossip", "GossipBatch"):
                    table.GossipState().merge_frame(frame)


# -- watermarks and delta ----------------------------------------------------------------


def brute_delta(state: Any, watermarks: dict, limit: Optional[int] = None) -> List[tuple]:
    """The delta by definition: a full scan, sorted, cut at a group boundary."""
    due = sorted(
        (e for e in state.entries() if e.stamp > watermarks.get(e.origin, -1)),
        key=lambda e: (e.stamp, e.origin, e.key),
    )
    due = [e.astuple() for e in due]
    if limit is None or len(due) <= limit:
        return due
    cut = limit
    group = lambda t: (t[4], t[3])  # noqa: E731
    if limit and group(due[limit - 1]) == group(due[limit]):
        while cut > 0 and group(due[cut - 1]) == group(due[limit]):
            cut -= 1
        cut = cut or limit
    return due[:cut]


def test_delta_returns_newer_entries_in_stamp_order(table: ModuleType) -> None:
    s = table.GossipState()
    s.set("a", 1, 1, "x", 1)
    s.set("b", 1, 1, "y", 2)
    s.set("c", 1, 1, "x", 3)
    wm = s.watermarks()
    assert s.delta(wm) == []
    s.set("d", 2, 2, "y", 4)
    s.set("a", 2, 5, "y", 5)
    s.set("e", 2, 2, "x", 4)
    s.set("b", 3, 6, "z", 4)
    assert [e.astuple() for e in s.delta(wm)] == [
        ("e", 2, 2, "x", 4),
        ("d", 2, 2, "y", 4),
        ("b", 3, 6, "z", 4),
        ("a", 2, 5, "y", 5),
    ]
    assert [e.key for e in s.delta({})] == ["c", "e", "d", "b", "a"]
    assert [e.key for e in s.delta({"x": 3, "y": 4, "z": -1})] == ["e", "b", "a"]
    assert [e.key for e in s.delta({"x": 2**64, "y": 2**70, "z": 4})] == []
    assert s.delta(s.watermarks()) == []
    assert [e.astuple() for e in s.delta(wm)] == brute_delta(s, wm)


def test_delta_orders_ties_by_origin_then_key(table: ModuleType) -> None:
    s = table.GossipState()
    for key, origin in [("b", "o2"), ("a", "o2"), ("z", "o1"), ("é", "o1"), ("c", "o1")]:
        s.set(key, 1, 1, origin, 7)
    assert [(e.origin, e.key) for e in s.delta({})] == [
        ("o1", "c"),
        ("o1", "z"),
        ("o1", "é"),
        ("o2", "a"),
        ("o2", "b"),
    ]


def test_delta_limit_and_group_back_off(table: ModuleType) -> None:
    s = table.GossipState()
    for i in range(10):
        s.set(f"k{i}", i, i + 1, "a", i + 1)
    assert [e.key for e in s.delta({}, limit=3)] == ["k0", "k1", "k2"]
    assert s.delta({}, limit=0) == []
    assert len(s.delta({}, limit=100)) == 10
    # three keys share (origin, stamp): a cut inside that group backs off before it
    t = table.GossipState()
    t.set("p", 1, 1, "a", 1)
    for k in "xyz":
        t.set(k, 1, 1, "a", 2)
    t.set("q", 1, 1, "a", 3)
    for limit in (2, 3):
        assert [e.key for e in t.delta({}, limit=limit)] == ["p"]
    assert [e.key for e in t.delta({}, limit=4)] == ["p", "x", "y", "z"]
    # unless the group is all there is: then it is split
    assert [e.key for e in t.delta({"a": 1}, limit=2)] == ["x", "y"]
    for limit in range(6):
        for wm in ({}, {"a": 1}, {"a": 2}):
            assert [e.astuple() for e in t.delta(wm, limit=limit)] == brute_delta(t, wm, limit)
    with pytest.raises(ValueError, match="limit must be >= 0, not -1"):
        t.delta({}, limit=-1)
    with pytest.raises(TypeError, match="limit must be int, not float"):
        t.delta({}, limit=1.0)


def test_delta_bad_watermark_values(table: ModuleType) -> None:
    s = table.GossipState()
    s.set("k", 1, 1, "o")
    with pytest.raises(TypeError, match="watermark for origin 'o' must be int, not str"):
        s.delta({"o": "5"})
    assert s.delta({"other": "ignored"})[0].key == "k"


def test_delta_with_a_mapping_that_meddles(table: ModuleType) -> None:
    s = table.GossipState()
    for i in range(5):
        s.set(f"k{i}", i, i + 1, f"o{i}")

    class Meddler(dict):
        def get(self, key: Any, default: Any = None) -> Any:
            s.clear()
            return default

    assert s.delta(Meddler()) == []  # no crash; nothing is left to send
    assert len(s) == 0


def test_delta_skips_stale_records(table: ModuleType) -> None:
    s = table.GossipState()
    for i in range(100):
        s.set("hot", i, i + 1, "a" if i % 3 else "b", i + 1)
        s.set(f"cold{i % 5}", i, i + 1, "c", i + 1)
    wm = {"a": 50, "b": 50, "c": 97}
    assert [e.astuple() for e in s.delta(wm)] == brute_delta(s, wm)
    assert [e.astuple() for e in s.delta({})] == brute_delta(s, {})
    assert len(s.delta({})) == 6


def test_delta_out_of_order_stamps(table: ModuleType) -> None:
    import random

    rnd = random.Random(5)
    s = table.GossipState()
    stamps = list(range(1, 400))
    rnd.shuffle(stamps)
    for i, st in enumerate(stamps):
        s.set(f"k{rnd.randrange(150)}", i, rnd.randrange(1, 1000), rnd.choice("ab"), st)
        if i % 37 == 0:
            wm = {"a": rnd.randrange(400), "b": rnd.randrange(400)}
            assert [e.astuple() for e in s.delta(wm)] == brute_delta(s, wm)
            assert [e.astuple() for e in s.delta(wm, limit=7)] == brute_delta(s, wm, 7)


def test_delta_brings_a_peer_up_to_date(table: ModuleType) -> None:
    a, b = table.GossipState(), table.GossipState()
    for i in range(30):
        a.set(f"k{i}", i, 100 + i, "A", 100 + i)
    for i in range(0, 30, 2):
        b.set(f"k{i}", -i + 1000, 50 + i, "B", 50 + i)  # older versions: A wins those
    b.set("only-b", 1, 1, "B", 1)
    b.merge(a.delta(b.watermarks()))
    for e in a:
        assert b.get(e.key) == a.get(e.key)
    assert b.get("only-b") == (1, 1)
    assert a.delta(b.watermarks()) == []


def test_repeated_limited_pulls_converge(table: ModuleType) -> None:
    import random

    rnd = random.Random(7)
    nodes = [table.GossipState() for _ in range(4)]
    clocks = [0] * 4
    for step in range(300):
        i = rnd.randrange(4)
        clocks[i] += 1
        nodes[i].set(
            f"k{rnd.randrange(40)}", rnd.randrange(5), rnd.randrange(1, 20), f"n{i}", clocks[i]
        )
        if step % 3 == 0:
            src, dst = rnd.sample(range(4), 2)
            nodes[dst].merge(nodes[src].delta(nodes[dst].watermarks(), limit=3))
    for _ in range(200):
        moved = 0
        for src in range(4):
            for dst in range(4):
                if src != dst:
                    moved += len(
                        nodes[dst].merge(nodes[src].delta(nodes[dst].watermarks(), limit=2))
                    )
        if not moved and all(
            not nodes[s].delta(nodes[d].watermarks()) for s in range(4) for d in range(4)
        ):
            break
    final = [{e.key: e.astuple()[:4] for e in n} for n in nodes]
    assert all(f == final[0] for f in final)
    everything = table.GossipState()
    for n in nodes:
        everything.merge(list(n))
    assert final[0] == {e.key: e.astuple()[:4] for e in everything}


def test_compaction_keeps_deltas_right(table: ModuleType) -> None:
    s = table.GossipState()
    # one key rewritten many times by alternating origins: logs fill with stale records
    for i in range(2000):
        s.set(f"k{i % 3}", i, i + 1, "ab"[i % 2], i + 1)
    for wm in ({}, {"a": 1990, "b": 1995}, {"a": 5000}):
        assert [e.astuple() for e in s.delta(wm)] == brute_delta(s, wm)
    # a slot taking back an (origin, stamp) it had before is not listed twice
    t = table.GossipState()
    t.set("k", 1, 1, "a", 5)
    t.set("k", 1, 2, "b", 3)
    t.set("k", 1, 3, "a", 5)
    assert [e.astuple() for e in t.delta({})] == [("k", 1, 3, "a", 5)]


# -- delta_frames --------------------------------------------------------------------


def _decode_batch(frame: bytes) -> Tuple[str, List[tuple]]:
    """A minimal GossipBatch reader for checking delta_frames' layout."""
    (length,) = struct.unpack_from(">I", frame)
    assert length == len(frame) - 4 and frame[4:6] == b"\x01\x06"
    pos = 6

    def rd_str() -> str:
        nonlocal pos
        (n,) = struct.unpack_from(">H", frame, pos)
        pos += 2 + n
        return frame[pos - n : pos].decode("utf-8")

    sender = rd_str()
    (n_origins,) = struct.unpack_from(">H", frame, pos)
    pos += 2
    origins = [rd_str() for _ in range(n_origins)]
    (count,) = struct.unpack_from(">I", frame, pos)
    pos += 4
    out = []
    for _ in range(count):
        key = rd_str()
        idx, version, stamp, tag = struct.unpack_from(">HQQB", frame, pos)
        pos += 19
        if tag == 0:
            (value,) = struct.unpack_from(">Q", frame, pos)
            pos += 8
        else:
            (n,) = struct.unpack_from(">I", frame, pos)
            value = frame[pos + 4 : pos + 4 + n]
            pos += 4 + n
        out.append((key, value, version, origins[idx], stamp))
    assert pos == len(frame)
    # origin table: each distinct origin once, in order of first appearance
    firsts: List[str] = []
    for e in out:
        if e[3] not in firsts:
            firsts.append(e[3])
    assert origins == firsts
    return sender, out


def _filled(mod: ModuleType, n: int = 200) -> Any:
    s = mod.GossipState()
    for i in range(n):
        value = i if i % 3 else bytes(range(i % 50))
        s.set(f"key-{i}", value, 1000 + i, f"origin-{i % 4}", 1000 + (i * 7) % n)
    return s


def test_delta_frames_decode_to_the_delta(table: ModuleType) -> None:
    s = _filled(table)
    for wm in ({}, {"origin-1": 1100, "origin-2": 10**6}):
        frames = s.delta_frames("me", wm, max_frame_size=500)
        assert len(frames) > 5
        decoded = []
        for f in frames:
            assert len(f) <= 500
            sender, entries = _decode_batch(f)
            assert sender == "me"
            decoded += entries
        assert decoded == [e.astuple() for e in s.delta(wm)]
        t = table.GossipState()
        assert sum(t.merge_frame(f) for f in frames) == len(decoded)


def test_codec_frames_round_trip(table: ModuleType) -> None:
    codec = load("codec", "cython" if table.__name__.endswith("_c") else "python")
    entries = [codec.Entry(*e) for e in ENTRIES]
    frame = codec.encode(codec.GossipBatch("sender", entries))
    assert frame == batch_frame("sender", ENTRIES)
    a, b = table.GossipState(), table.GossipState()
    assert b.merge_frame(frame) == len(a.merge(entries))
    assert snapshot(a) == snapshot(b)
    assert b.merge_frame(codec.encode(codec.Gossip("s", "new", b"v", 99, "o"))) == 1
    assert b.get_entry("new").astuple() == ("new", b"v", 99, "o", 99)
    # delta_frames decode (with the codec) to the delta
    s = _filled(table)
    for wm in ({}, {"origin-0": 1100}):
        frames = s.delta_frames("me", wm, max_frame_size=700)
        msgs = [codec.decode(f) for f in frames]
        assert all(type(m) is codec.GossipBatch and m.sender_id == "me" for m in msgs)
        assert [e.astuple() for m in msgs for e in m.entries] == [e.astuple() for e in s.delta(wm)]
        assert all(codec.encode(m) == f for m, f in zip(msgs, frames))


def test_delta_frames_one_frame_by_default(table: ModuleType) -> None:
    s = _filled(table)
    (frame,) = s.delta_frames("me", {})
    assert _decode_batch(frame)[1] == [e.astuple() for e in s.delta({})]


def test_delta_frames_max_bytes(table: ModuleType) -> None:
    s = _filled(table)
    full = s.delta({})
    for max_bytes in (0, 1, 60, 300, 1000, 5000):
        frames = s.delta_frames("me", {}, max_frame_size=400, max_bytes=max_bytes)
        total = sum(len(f) for f in frames)
        entries = [e for f in frames for e in _decode_batch(f)[1]]
        assert len(entries) >= 1  # at least one entry, whatever the budget
        if len(entries) > 1:
            assert total <= max_bytes
        assert entries == [e.astuple() for e in full[: len(entries)]]
        # the next entry would not have fitted the budget (no group cut here: stamps unique)
        if len(entries) < len(full):
            more = s.delta_frames("me", {}, max_frame_size=400, max_bytes=total)
            assert sum(len(f) for f in more) == total


def test_delta_frames_back_off_to_a_group_boundary(table: ModuleType) -> None:
    s = table.GossipState()
    s.set("p", 1, 1, "a", 1)
    for k in "xyz":
        s.set(k, 1, 1, "a", 2)
    one = len(s.delta_frames("me", {"a": 0}, max_bytes=0)[0])
    frames = s.delta_frames("me", {}, max_bytes=one + 2 * 30)  # room for p, x, y but not z
    assert [e[0] for f in frames for e in _decode_batch(f)[1]] == ["p"]


def test_delta_frames_oversized_entry(table: ModuleType) -> None:
    s = table.GossipState()
    s.set("small", 1, 1, "", 1)
    s.set("big", b"x" * 1000, 2, "", 2)
    s.set("after", 1, 3, "", 3)
    # an entry no frame can hold is skipped and counted; the others still go
    frames = s.delta_frames("me", {}, max_frame_size=200)
    assert [e[0] for f in frames for e in _decode_batch(f)[1]] == ["small", "after"]
    assert s.refusals()["unrelayable"] == 1
    # ...also when it is the first due: never a ValueError
    frames = s.delta_frames("me", {"": 1}, max_frame_size=200)
    assert [e[0] for f in frames for e in _decode_batch(f)[1]] == ["after"]
    assert s.refusals()["unrelayable"] == 2
    assert len(s.delta_frames("me", {}, max_frame_size=1046)) == 3
    assert len(s.delta_frames("me", {}, max_frame_size=1045)) == 1
    assert s.refusals()["unrelayable"] == 3


def test_delta_frames_arguments(table: ModuleType) -> None:
    s = _filled(table, 5)
    with pytest.raises(TypeError, match="sender_id must be str, not int"):
        s.delta_frames(1, {})
    with pytest.raises(TypeError, match="max_frame_size must be int, not NoneType"):
        s.delta_frames("me", {}, None)
    with pytest.raises(ValueError, match="max_bytes must be >= 0, not -2"):
        s.delta_frames("me", {}, max_bytes=-2)
    assert s.delta_frames("me", s.watermarks()) == []


def test_delta_frames_identical_across_implementations() -> None:
    c, p = both()
    tables = [_filled(mod, 300) for mod in (c, p)]
    for args in [
        ("me", {}),
        ("me", {"origin-0": 1100}, 600),
        ("é", {}, 700, 3000),
        ("x", {"origin-3": -1}, 10**9, 1),
    ]:
        assert tables[0].delta_frames(*args) == tables[1].delta_frames(*args)


# -- memory --------------------------------------------------------------------------


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_compiled_table_frees_its_memory() -> None:
    c = load("table", "cython")
    src = c.GossipState()
    for i in range(200_000):
        src.set(f"key-{i:011d}", i, i + 1, f"o{i % 3}")
    frames = src.delta_frames("s", {})
    del src
    gc.collect()

    def cycle() -> None:
        t = c.GossipState()
        for f in frames:
            t.merge_frame(f)
        assert len(t) == 200_000
        t.delta({"o0": 5})

    cycle()
    base = _rss()
    for _ in range(8):
        cycle()
    gc.collect()
    grown = _rss() - base
    # one table of 200k entries is ~20 MB: eight leaked ones would be far above this
    assert grown < 8 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 8 tables"


def test_changes_counts_every_set_merge_restamp_and_clear(table: ModuleType) -> None:
    """The core reuses its encoded digest while ``changes`` has not moved, so it
    must move on anything that can move a watermark or an origin's counts:
    a losing merge too, and a refused one must not."""
    from fastgossip import Entry

    s = table.GossipState()
    seen = [s.changes]

    def moved() -> bool:
        seen.append(s.changes)
        return seen[-1] > seen[-2]

    s.set("k", 1, 10, "a#1", 10)
    assert moved()
    assert s.get("k") == (1, 10)
    s.merge([Entry("k", 0, 5, "b#1", 7)])  # loses, yet b's watermark is new
    assert moved() and s.watermarks()["b#1"] == 7
    s.merge([Entry("k", 0, 5, "b#1", 2**64 - 1)], max_stamp=100)  # refused
    assert not moved()
    s.restamp("a#1", 50)
    assert moved()
    s.clear()
    assert moved()
