"""Laws of the LWW table, by hypothesis: merge is a join (commutative,
associative, idempotent), deltas bring peers together, and the compiled table
agrees with its pure-Python twin on every sequence of operations."""

from __future__ import annotations

import struct
from types import ModuleType
from typing import Any, Dict, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastgossip._impl import load
from fastgossip._table_py import fnv1a
from fastgossip.errors import FrameError
from tests.test_table import batch_frame, brute_delta

LAWS = settings(
    max_examples=75, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

keys = st.sampled_from(["a", "b", "c", "é", "", "a longer key, past eight bytes", "\U0001f600"])
origins = st.sampled_from(["", "n1", "n2", "é", "n10", "n1.e", "n2.e"])
values = st.one_of(
    st.integers(0, 3),
    st.just(2**64 - 1),
    st.sampled_from([b"", b"a", b"b", b"a\x00", b"\xff" * 9]),
    st.none(),  # a tombstone
)
versions = st.integers(0, 4)
stamps = st.one_of(st.none(), st.integers(0, 6))
expiries = st.sampled_from([0, 0, 0, 3, 5])  # (a tombstone with one: refused alike)
EntryTuple = Tuple[str, Any, int, str, Optional[int], int]
entries = st.tuples(keys, values, versions, origins, stamps, expiries)


def make(mod: ModuleType, e: EntryTuple) -> Any:
    return mod.Entry(*e[:5], expires=e[5] if e[1] is not None else 0)


def content(state: Any) -> Dict[str, tuple]:
    """What LWW decides: per key (value, version, origin, expires), tombstones
    (value None) included. Insertion order and the stamp of equal (version,
    origin, value) triples depend on arrival order."""
    return {e.key: (e.value, e.version, e.origin, e.expires) for e in state.entries()}


def merged(mod: ModuleType, items: List[EntryTuple]) -> Any:
    s = mod.GossipState()
    s.merge([make(mod, e) for e in items])
    return s


@LAWS
@given(st.lists(entries, max_size=25), st.randoms(use_true_random=False))
def test_merge_is_commutative(table: ModuleType, items: List[EntryTuple], rnd: Any) -> None:
    shuffled = list(items)
    rnd.shuffle(shuffled)
    a, b = merged(table, items), merged(table, shuffled)
    assert content(a) == content(b)
    assert a.watermarks() == b.watermarks()
    assert a.max_version == b.max_version


@LAWS
@given(st.lists(entries, max_size=25), st.lists(st.integers(0, 25), max_size=4))
def test_merge_is_associative(table: ModuleType, items: List[EntryTuple], cuts: List[int]) -> None:
    bounds = [0] + sorted(c % (len(items) + 1) for c in cuts) + [len(items)]
    parts = [items[lo:hi] for lo, hi in zip(bounds, bounds[1:])]
    whole = merged(table, items)
    # merge each part on its own, then merge the parts' tables, right to left
    acc = table.GossipState()
    for part in reversed(parts):
        acc.merge(list(merged(table, part).entries()))
    assert content(acc) == content(whole)


@LAWS
@given(st.lists(entries, max_size=25))
def test_merge_is_idempotent(table: ModuleType, items: List[EntryTuple]) -> None:
    s = merged(table, items)
    before = ([e.astuple() for e in s.entries()], s.watermarks(), s.max_version)
    assert s.merge([make(table, e) for e in items]) == []
    assert s.merge(list(s.entries())) == []
    assert ([e.astuple() for e in s.entries()], s.watermarks(), s.max_version) == before


@LAWS
@given(st.lists(entries, max_size=25))
def test_merge_frame_is_merge(table: ModuleType, items: List[EntryTuple]) -> None:
    a = merged(table, items)
    b = table.GossipState()
    frame = _frame_of(items)
    assert b.merge_frame(frame) == len(table.GossipState().merge([make(table, e) for e in items]))
    assert list(a.entries()) == list(b.entries())  # (expiries included)
    assert a.watermarks() == b.watermarks() and a.max_version == b.max_version
    assert a.origin_stats() == b.origin_stats()


@LAWS
@given(
    st.lists(entries, max_size=30),
    st.dictionaries(origins, st.integers(-1, 7)),
    st.one_of(st.none(), st.integers(0, 8)),
)
def test_delta_matches_its_definition(
    table: ModuleType, items: List[EntryTuple], wm: Dict[str, int], limit: Optional[int]
) -> None:
    s = merged(table, items)
    assert [e.astuple() for e in s.delta(wm, limit)] == brute_delta(s, wm, limit)


# -- convergence by pulling deltas -----------------------------------------------------

writes = st.lists(st.tuples(st.integers(0, 2), keys, values, versions), max_size=40)


@LAWS
@given(
    writes,
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), max_size=30),
    st.integers(1, 4),
    st.booleans(),
)
def test_limited_pulls_converge(
    table: ModuleType,
    script: List[tuple],
    early: List[Tuple[int, int]],
    limit: int,
    as_frames: bool,
) -> None:
    """Replicas write with their own increasing stamps (as the node's clock does),
    pull limited deltas in between, then pull until quiet: all end equal to the
    join of everything written."""
    nodes = [table.GossipState() for _ in range(3)]
    clocks = [0, 0, 0]
    written = []

    def pull(src: int, dst: int) -> int:
        if as_frames:
            frames = nodes[src].delta_frames(
                f"n{src}", nodes[dst].watermarks(), max_frame_size=200, max_bytes=limit * 60
            )
            return sum(nodes[dst].merge_frame(f) for f in frames)
        return len(nodes[dst].merge(nodes[src].delta(nodes[dst].watermarks(), limit)))

    for i, (node, key, value, version) in enumerate(script):
        clocks[node] += 1
        nodes[node].set(key, value, version, f"n{node}", clocks[node])
        written.append((key, value, version, f"n{node}", clocks[node], 0))
        if i < len(early):
            src, dst = early[i]
            if src != dst:
                pull(src, dst)
    for _ in range(100):
        moved = sum(pull(src, dst) for src in range(3) for dst in range(3) if src != dst)
        if not moved and all(
            not nodes[s].delta(nodes[d].watermarks()) for s in range(3) for d in range(3)
        ):
            break
    everything = merged(table, written)
    for n in nodes:
        assert content(n) == content(everything)


# -- the compiled table and its twin agree ----------------------------------------------

wm_strategy = st.dictionaries(origins, st.integers(-1, 7), max_size=4)
ops = st.one_of(
    st.tuples(st.just("set"), entries),
    st.tuples(st.just("merge"), st.lists(entries, max_size=6)),
    st.tuples(st.just("merge_frame"), st.lists(entries, max_size=6)),
    st.tuples(
        st.just("bad_frame"),
        st.lists(entries, min_size=1, max_size=4),
        st.integers(0, 10**6),
        st.integers(0, 255),
    ),
    st.tuples(st.just("delta"), wm_strategy, st.one_of(st.none(), st.integers(0, 5))),
    st.tuples(
        st.just("delta_frames"),
        wm_strategy,
        st.integers(30, 300),
        st.one_of(st.none(), st.integers(0, 400)),
    ),
    st.tuples(st.just("collect"), st.integers(0, 5), st.integers(0, 6)),
    st.tuples(st.just("expire"), st.integers(0, 6)),
    st.tuples(st.just("key_hashes")),
    st.tuples(st.just("drop_unheld"), st.lists(keys, max_size=4), wm_strategy),
    st.tuples(st.just("raise_watermarks"), st.dictionaries(origins, st.integers(0, 7))),
    st.tuples(
        st.just("set_ephemeral_live"),
        st.one_of(st.none(), st.lists(st.sampled_from(["n1.e", "n2.e"]), max_size=2)),
    ),
    st.tuples(st.just("drop_origins"), st.lists(origins, max_size=2)),
    st.tuples(st.just("capture"), st.lists(keys, max_size=2)),
    st.tuples(st.just("now_ms"), st.integers(0, 6)),
    st.tuples(st.just("set_origin_live"), st.sampled_from(["n1.e", "n2.e"]), st.booleans()),
    st.tuples(st.just("reset_watermark"), origins),
)


def _run(mod: ModuleType, state: Any, op: tuple) -> Any:
    """Apply one operation; its result, or the exception it raised, as plain data."""
    kind = op[0]
    try:
        if kind == "set":
            return state.set(*op[1])
        if kind == "merge":
            return [e.astuple() for e in state.merge([make(mod, e) for e in op[1]])]
        if kind == "merge_frame":
            return state.merge_frame(_frame_of(op[1]))
        if kind == "bad_frame":
            frame = bytearray(_frame_of(op[1]))
            pos = op[2] % len(frame)
            if op[3] % 2:
                frame[pos] = op[3]  # flip a byte
                return state.merge_frame(bytes(frame))
            body = bytes(frame[4 : max(pos, 6)])  # cut short, with a consistent prefix
            return state.merge_frame(struct.pack(">I", len(body)) + body)
        if kind == "delta":
            return [e.astuple() for e in state.delta(op[1], op[2])]
        if kind == "delta_frames":
            frames = state.delta_frames("me", op[1], op[2], op[3])
            return (frames, state.delta_cut, state.delta_top)
        if kind == "collect":
            return state.collect(op[1], op[2])
        if kind == "expire":
            return (state.expire(op[1]), state.next_expiry, state.now_ms)
        if kind == "key_hashes":
            return state.key_hashes()
        if kind == "drop_unheld":
            held = b"".join(fnv1a(k.encode()).to_bytes(8, "big") for k in op[1])
            return state.drop_unheld(held, {o: max(w, 0) for o, w in op[2].items()})
        if kind == "raise_watermarks":
            return state.raise_watermarks(op[1])
        if kind == "set_ephemeral_live":
            return state.set_ephemeral_live(op[1])
        if kind == "drop_origins":
            return state.drop_origins(op[1])
        if kind == "now_ms":
            state.now_ms = op[1]
            return state.now_ms
        if kind == "set_origin_live":
            return state.set_origin_live(op[1], op[2])
        if kind == "reset_watermark":
            return state.reset_watermark(op[1])
        if kind == "capture":
            got = [e.astuple() for e in state.take_captured()]
            state.set_capture(op[1])
            return got
    except (ValueError, TypeError) as exc:  # FrameError is a ValueError
        return (type(exc).__name__, str(exc), getattr(exc, "offset", None))
    raise AssertionError(kind)


def _frame_of(items: List[EntryTuple]) -> bytes:
    return batch_frame(
        "s",
        [
            (k, v, ver, o, ver if s is None else s, x if v is not None else 0)
            for k, v, ver, o, s, x in items
        ],
    )


@settings(max_examples=150, deadline=None)
@given(st.lists(ops, max_size=25))
def test_compiled_and_python_tables_agree(script: List[tuple]) -> None:
    c, p = load("table", "cython"), load("table", "python")
    sc, sp = c.GossipState(), p.GossipState()
    for op in script:
        assert _run(c, sc, op) == _run(p, sp, op), op
        assert [e.astuple() for e in sc.entries()] == [e.astuple() for e in sp.entries()]
        assert sc.watermarks() == sp.watermarks()
        assert list(sc.watermarks()) == list(sp.watermarks())  # same first-seen order
        assert sc.origin_stats() == sp.origin_stats()
        assert sc.max_version == sp.max_version
        assert len(sc) == len(sp) and sc.keys() == sp.keys()
        assert sc.tombstones == sp.tombstones and sc.bytes_held == sp.bytes_held
        assert sc.entry_count == sp.entry_count
    for key in ["a", "zz", "é"]:
        ec, ep = sc.get_entry(key), sp.get_entry(key)
        assert (ec is None and ep is None) or ec.astuple() == ep.astuple()
        assert sc.get(key) == sp.get(key)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=80), st.integers(0, 100))
def test_random_bytes_fail_alike(junk: bytes, max_frame_size: int) -> None:
    c, p = load("table", "cython"), load("table", "python")
    for frame in (
        junk,
        struct.pack(">I", len(junk) + 2) + b"\x01\x06" + junk,
        struct.pack(">I", len(junk) + 2) + b"\x01\x01" + junk,
    ):
        results = []
        for mod in (c, p):
            s = mod.GossipState()
            try:
                results.append(
                    (
                        "ok",
                        s.merge_frame(frame, max_frame_size=max_frame_size + 30),
                        [e.astuple() for e in s.entries()],
                    )
                )
            except FrameError as exc:
                results.append(("error", str(exc), exc.offset))
                assert len(s) == 0 and s.watermarks() == {}
        assert results[0] == results[1]


@pytest.mark.parametrize("n", [1, 3, 40])
def test_utf8_validation_agrees_with_python(n: int) -> None:
    """The C table's UTF-8 check accepts exactly what Python's strict decoder does."""
    import random

    rnd = random.Random(n)
    c = load("table", "cython")
    pieces = [
        b"a",
        b"\x7f",
        b"\x80",
        b"\xc2\x80",
        b"\xdf\xbf",
        b"\xe0\xa0\x80",
        b"\xe0\x9f\xbf",
        b"\xed\x9f\xbf",
        b"\xed\xa0\x80",
        b"\xef\xbf\xbf",
        b"\xf0\x90\x80\x80",
        b"\xf0\x8f\xbf\xbf",
        b"\xf4\x8f\xbf\xbf",
        b"\xf4\x90\x80\x80",
        b"\xf5\x80\x80\x80",
        b"\xc0\xaf",
        b"\xc1\xbf",
        b"\xe2\x82",
        b"\xff",
        b"abcdefgh",
    ]
    for _ in range(400):
        raw = b"".join(rnd.choice(pieces) for _ in range(rnd.randrange(n + 1)))
        try:
            raw.decode("utf-8")
            valid = True
        except UnicodeDecodeError:
            valid = False
        payload = (
            struct.pack(">H", 1)
            + b"s"
            + struct.pack(">H", 1)
            + b"\x00\x01o"
            + struct.pack(">I", 1)
            + struct.pack(">H", len(raw))
            + raw
            + struct.pack(">HQQ", 0, 1, 1)
            + b"\x00"
            + bytes(8)
        )
        frame = struct.pack(">I", len(payload) + 2) + b"\x01\x06" + payload
        s = c.GossipState()
        try:
            s.merge_frame(frame)
            accepted = True
        except FrameError:
            accepted = False
        assert accepted == valid, raw
