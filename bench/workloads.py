"""The microbenchmark workloads, shared by the pytest-benchmark modules and ``bench.ratios``.

A workload is a :class:`Case`: one function called with one argument, a check
that the result is right, and how many units (entries, frames) one call
handles. ``build(group, variant)`` makes the case for one row of one
comparison table; :data:`GROUPS` lists every table and its rows. The pytest
modules time a case with pytest-benchmark, ``python -m bench.ratios`` times the
same case with ``timeit`` in one process, so both report the same workloads.

Every alternative names the modules it needs (``Variant.requires``); a missing
module means the row is skipped, never failed.
"""

from __future__ import annotations

import importlib
import itertools
import json
import random
from dataclasses import dataclass, field
from functools import cache
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Tuple

from bench.alternatives import (  # noqa: F401 (struct_encode_gossip: used by the tests)
    StructSplitter,
    _stdlib_dumps,
    make_json_codec,
    make_msgpack_codec,
    make_struct_decode_batch,
    make_struct_decode_gossip,
    struct_encode_batch,
    struct_encode_gossip,
)

__all__ = [
    "Case",
    "Variant",
    "GROUPS",
    "Unavailable",
    "build",
    "variants",
    "gossip_message",
    "gossip_batch",
    "stream_messages",
]

# -- sample data -------------------------------------------------------------------

SENDER = "node-017"  # 8 characters
KEY = "service/web-00042"  # 17 characters
VALUE = 1_234_567
VERSION = (1_700_000_000_000 << 16) | 7  # a hybrid-logical-clock reading
BATCH_SIZE = 64
STREAM_BYTES = 1 << 20  # 1 MiB of frames
CHUNK = 4096  # fed in 4 KiB chunks
MERGE_BATCH = 1000  # entries per merged batch: half newer, half older
TABLE_SIZES = (10_000, 100_000)
PEERS = 1000
SAMPLE_KS = (3, 31)

# The codec and sampler rows take 25 ns to a few µs: the pytest-benchmark
# harness times them FAST_BATCH operations per call (Case.batched) and reports
# per operation (bench/conftest.py).
FAST_BATCH = 100

C_NAME = "fastgossip-c"
PY_NAME = "fastgossip-py"


class Unavailable(Exception):
    """A variant's module is missing (the row is skipped, not failed)."""


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise Unavailable(f"{name} is not importable ({exc})") from exc


def fg(kind: str, impl: str) -> ModuleType:
    """``fastgossip._<kind>_c`` (impl "c") or ``fastgossip._<kind>_py`` (impl "py")."""
    return _import(f"fastgossip._{kind}_{impl}")


def message_module() -> ModuleType:
    """Where the alternatives get their message classes: the compiled codec when
    built (so every row produces the same objects), else the twin."""
    try:
        return fg("codec", "c")
    except Unavailable:
        return fg("codec", "py")


def gossip_message(mod: Optional[ModuleType] = None) -> Any:
    """One Gossip: 8-char sender id, 17-char key, int value."""
    mod = mod or message_module()
    return mod.Gossip(SENDER, KEY, VALUE, VERSION)


def batch_entries(mod: ModuleType, n: int = BATCH_SIZE) -> List[Any]:
    """n entries with 17-char keys, int values, four origins."""
    return [
        mod.Entry(f"service/web-{i:05d}", 1000 + i, VERSION + i, f"node-{i % 4:03d}", VERSION + i)
        for i in range(n)
    ]


def gossip_batch(mod: Optional[ModuleType] = None, n: int = BATCH_SIZE) -> Any:
    mod = mod or message_module()
    return mod.GossipBatch(SENDER, batch_entries(mod, n))


def stream_messages(mod: ModuleType) -> List[Any]:
    """Gossip messages whose frames (54 bytes each) fill ``STREAM_BYTES``."""
    frame_size = len(struct_encode_gossip(gossip_message(mod)))
    count = STREAM_BYTES // frame_size
    return [
        mod.Gossip(SENDER, f"service/web-{i % 100_000:05d}", i, VERSION + i) for i in range(count)
    ]


def chunked(data: bytes, size: int = CHUNK) -> List[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# -- cases ------------------------------------------------------------------------------


@dataclass
class Case:
    """One row of one comparison: ``fn(arg)`` timed, ``check(result, arg)`` asserted.

    Stateless cases pass the same ``arg`` every call. Stateful ones (a merge
    changes the table) give ``make_arg``, called once per timed call outside
    the timing, so every call does the same work.
    """

    group: str
    variant: str
    fn: Callable[[Any], Any]
    check: Callable[[Any, Any], None]
    arg: Any = None
    make_arg: Optional[Callable[[], Any]] = None
    units: int = 1
    unit: str = "op"
    #: the same call as an expression over ``arg`` and ``names``, for timeit: it
    #: spares tiny calls the ~40 ns of the Python wrapper ``fn`` would add
    expr: Optional[str] = None
    names: Dict[str, Any] = field(default_factory=dict)
    #: operations per timed call in the pytest-benchmark harness (see batched())
    batch: int = 1

    def batched(self) -> Callable[[Any], Any]:
        """``fn(arg)`` run ``batch`` times in one call, the way timeit runs it
        (``expr`` inline, every name a local, an ``itertools.repeat`` loop);
        returns the last result. pytest-benchmark adds a few hundred ns per
        timed call of its own: batching the fast rows spreads that over
        ``batch`` operations, so its tables show what ``bench.ratios`` shows."""
        names = {"fn": self.fn, **self.names}
        params = "".join(f", {name}=_g[{name!r}]" for name in names)
        src = (
            f"def batched(arg, _repeat=_repeat{params}):\n"
            f"    for _ in _repeat(None, {self.batch}):\n"
            f"        result = {self.expr or 'fn(arg)'}\n"
            f"    return result\n"
        )
        scope: Dict[str, Any] = {"_g": names, "_repeat": itertools.repeat}
        exec(src, scope)
        return scope["batched"]  # type: ignore[no-any-return]

    def next_arg(self) -> Any:
        return self.make_arg() if self.make_arg is not None else self.arg

    def run_checked(self) -> Any:
        """Call once and assert the result (what ``--benchmark-disable`` amounts to)."""
        arg = self.next_arg()
        result = self.fn(arg)
        self.check(result, arg)
        return result


@dataclass(frozen=True)
class Variant:
    name: str
    requires: Tuple[str, ...]
    builder: Callable[[], Case] = field(compare=False)


def _eq(expected: Any) -> Callable[[Any, Any], None]:
    def check(result: Any, _arg: Any) -> None:
        assert result == expected, f"got {result!r}, expected {expected!r}"

    return check


def _decodes_to(decode: Callable[[bytes], Any], expected: Any) -> Callable[[Any, Any], None]:
    def check(result: Any, _arg: Any) -> None:
        assert isinstance(result, (bytes, bytearray)), type(result)
        assert decode(result) == expected

    return check


GROUPS: Dict[str, Dict[str, Variant]] = {}


def _register(group: str, name: str, requires: Tuple[str, ...]):
    def deco(builder: Callable[[], Case]) -> Callable[[], Case]:
        GROUPS.setdefault(group, {})[name] = Variant(name, requires, builder)
        return builder

    return deco


def variants(group: str) -> List[str]:
    return list(GROUPS[group])


def build(group: str, variant: str) -> Case:
    """The case for one row; raises :class:`Unavailable` when a module is missing."""
    v = GROUPS[group][variant]
    for mod in v.requires:
        _import(mod)
    case = v.builder()
    case.group, case.variant = group, variant
    return case


# codec: one Gossip, one 64-entry batch ---------------------------------------------------

G_ENC = "codec: Gossip encode"
G_DEC = "codec: Gossip decode"
G_RT = "codec: Gossip round trip"
B_ENC = "codec: 64-entry GossipBatch encode"
B_DEC = "codec: 64-entry GossipBatch decode"
B_RT = "codec: 64-entry GossipBatch round trip"
B_READ = "codec: 64-entry GossipBatch decode, then read every field of every entry"

_MSGPACK = ("msgpack",)
_ORJSON = ("orjson",)
_CODEC_C = ("fastgossip._codec_c",)
_CODEC_PY = ("fastgossip._codec_py",)


def _alternative_codecs() -> Dict[str, Tuple[Tuple[str, ...], Callable[[ModuleType], tuple]]]:
    """name -> (modules needed, factory(message module) -> 4 functions)."""

    def orjson_codec(mod: ModuleType) -> tuple:
        orjson = _import("orjson")
        return make_json_codec(orjson.dumps, orjson.loads, mod)

    def struct_codec(mod: ModuleType) -> tuple:
        return (
            struct_encode_gossip,
            make_struct_decode_gossip(mod),
            struct_encode_batch,
            make_struct_decode_batch(mod),
        )

    return {
        "msgpack": (_MSGPACK, make_msgpack_codec),
        "orjson (reference frames)": (_ORJSON, orjson_codec),
        "json (reference frames)": (
            (),
            lambda mod: make_json_codec(_stdlib_dumps, json.loads, mod),
        ),
        "struct": ((), struct_codec),
    }


def _register_codec_groups() -> None:
    for impl, name, requires in (("c", C_NAME, _CODEC_C), ("py", PY_NAME, _CODEC_PY)):

        def fastgossip_cases(impl: str = impl):
            mod = fg("codec", impl)
            return mod.encode, mod.decode, mod.encode, mod.decode, mod

        _register_codec_variant(name, requires, fastgossip_cases, expect_spec_bytes=True)

    for name, (requires, factory) in _alternative_codecs().items():

        def alt_cases(factory=factory):
            mod = message_module()
            return (*factory(mod), mod)

        _register_codec_variant(name, requires, alt_cases, expect_spec_bytes=False)


def _register_codec_variant(
    name: str, requires: Tuple[str, ...], make: Callable[[], tuple], expect_spec_bytes: bool
) -> None:
    """Six rows for one codec: Gossip and batch, encode / decode / round trip."""

    def encode_case(single: bool) -> Case:
        enc_g, dec_g, enc_b, dec_b, mod = make()
        msg = gossip_message(mod) if single else gossip_batch(mod)
        enc, dec = (enc_g, dec_g) if single else (enc_b, dec_b)
        if expect_spec_bytes:  # byte for byte what docs/PROTOCOL.md says
            spec = struct_encode_gossip(msg) if single else struct_encode_batch(msg)
            check = _eq(spec)
        else:
            check = _decodes_to(dec, msg)
        units = 1 if single else BATCH_SIZE
        unit = "msg" if single else "entry"
        return Case("", "", enc, check, arg=msg, units=units, unit=unit, batch=FAST_BATCH)

    def decode_case(single: bool) -> Case:
        enc_g, dec_g, enc_b, dec_b, mod = make()
        msg = gossip_message(mod) if single else gossip_batch(mod)
        enc, dec = (enc_g, dec_g) if single else (enc_b, dec_b)
        units = 1 if single else BATCH_SIZE
        return Case(
            "",
            "",
            dec,
            _eq(msg),
            arg=enc(msg),
            units=units,
            unit="msg" if single else "entry",
            batch=FAST_BATCH,
        )

    def decode_read_case(single: bool) -> Case:
        # The compiled Entry makes its int objects when they are read; this
        # row charges that to decoding, as a consumer of every field sees it.
        enc_g, dec_g, enc_b, dec_b, mod = make()
        msg = gossip_batch(mod)

        def decode_read(frame: bytes) -> List[tuple]:
            return [(e.key, e.value, e.version, e.origin, e.stamp) for e in dec_b(frame).entries]

        expected = [(e.key, e.value, e.version, e.origin, e.stamp) for e in msg.entries]
        return Case(
            "",
            "",
            decode_read,
            _eq(expected),
            arg=enc_b(msg),
            units=BATCH_SIZE,
            unit="entry",
            batch=FAST_BATCH,
        )

    def round_trip_case(single: bool) -> Case:
        enc_g, dec_g, enc_b, dec_b, mod = make()
        msg = gossip_message(mod) if single else gossip_batch(mod)
        enc, dec = (enc_g, dec_g) if single else (enc_b, dec_b)

        def round_trip(m: Any) -> Any:
            return dec(enc(m))

        units = 1 if single else BATCH_SIZE
        return Case(
            "",
            "",
            round_trip,
            _eq(msg),
            arg=msg,
            units=units,
            unit="msg" if single else "entry",
            expr="dec(enc(arg))",
            names={"dec": dec, "enc": enc},
            batch=FAST_BATCH,
        )

    for group, maker, single in (
        (G_ENC, encode_case, True),
        (G_DEC, decode_case, True),
        (G_RT, round_trip_case, True),
        (B_ENC, encode_case, False),
        (B_DEC, decode_case, False),
        (B_RT, round_trip_case, False),
        (B_READ, decode_read_case, False),
    ):
        _register(group, name, requires)(lambda maker=maker, single=single: maker(single))


_register_codec_groups()


# stream: 1 MiB of ~54-byte frames in 4 KiB chunks -------------------------------------------
#
# Two ways to consume the stream, each its own table:
#  * STREAM: each chunk's messages are handled and dropped before the next chunk
#    arrives, as GossipProtocol.data_received does. This is the decoder's cost.
#  * STREAM_KEPT: every message of the 1 MiB is kept in one list. The ~19k live
#    objects (~3 MB) then go through the allocator at once: CPython's pymalloc
#    returns its emptied arenas to the OS after each call and the next call
#    page-faults them back, which perf shows as ~45% kernel time.

STREAM = "stream: decode 1 MiB of Gossip frames fed in 4 KiB chunks, handled per chunk"
STREAM_KEPT = "stream: decode 1 MiB of Gossip frames fed in 4 KiB chunks, all kept"


@cache
def _stream_data(impl: str) -> Tuple[List[Any], bytes]:
    mod = fg("codec", impl) if impl in ("c", "py") else message_module()
    msgs = stream_messages(mod)
    return msgs, b"".join(struct_encode_gossip(m) for m in msgs)


def _stream_check(expected: List[Any], kept: bool) -> Callable[[Any, Any], None]:
    """Kept: the whole list. Per chunk: the count, and the last chunk's items."""

    def check(result: Any, _arg: Any) -> None:
        if kept:
            assert len(result) == len(expected), (len(result), len(expected))
            assert result == expected
            return
        count, last = result
        assert count == len(expected), (count, len(expected))
        assert last and last == expected[-len(last) :]

    return check


def _stream_runner(
    start: Callable[[], Callable[[bytes], List[Any]]], kept: bool
) -> Callable[[List[bytes]], Any]:
    """Feed every chunk to a fresh ``feed = start()``; keep or drop what it returns."""
    if kept:

        def run_kept(parts: List[bytes]) -> List[Any]:
            feed = start()
            out: List[Any] = []
            for part in parts:
                out += feed(part)
            return out

        return run_kept

    def run_per_chunk(parts: List[bytes]) -> Tuple[int, List[Any]]:
        feed = start()
        count = 0
        last: List[Any] = []
        for part in parts:
            last = feed(part)  # the previous chunk's items are released here
            count += len(last)
        return count, last

    return run_per_chunk


def _stream_case(
    impl: str, start: Callable[[], Callable[[bytes], List[Any]]], expected: Any, kept: bool
) -> Case:
    msgs, data = _stream_data(impl)
    return Case(
        "",
        "",
        _stream_runner(start, kept),
        _stream_check(expected if expected is not None else msgs, kept),
        arg=chunked(data),
        units=len(msgs),
        unit="frame",
    )


def _register_stream(group: str, kept: bool) -> None:
    for impl, name, requires in (("c", C_NAME, _CODEC_C), ("py", PY_NAME, _CODEC_PY)):

        def feed_case(impl: str = impl) -> Case:
            decoder_cls = fg("codec", impl).FrameDecoder
            return _stream_case(impl, lambda: decoder_cls(1 << 20).feed, None, kept)

        def feed_frames_case(impl: str = impl) -> Case:
            decoder_cls = fg("codec", impl).FrameDecoder
            frames = [struct_encode_gossip(m) for m in _stream_data(impl)[0]]
            return _stream_case(impl, lambda: decoder_cls(1 << 20).feed_frames, frames, kept)

        _register(group, f"{name} feed (messages)", requires)(feed_case)
        _register(group, f"{name} feed_frames (bytes)", requires)(feed_frames_case)

    def msgpack_case() -> Case:
        msgpack = _import("msgpack")
        msgs, _ = _stream_data("best")
        packb = msgpack.packb
        data = b"".join(packb([m.sender_id, m.key, m.value, m.version, m.origin]) for m in msgs)
        gossip = message_module().Gossip

        def start() -> Callable[[bytes], List[Any]]:
            unpacker = msgpack.Unpacker(use_list=False, max_buffer_size=1 << 20)

            def feed(part: bytes) -> List[Any]:
                unpacker.feed(part)
                return list(itertools.starmap(gossip, unpacker))

            return feed

        return Case(
            "",
            "",
            _stream_runner(start, kept),
            _stream_check(msgs, kept),
            arg=chunked(data),
            units=len(msgs),
            unit="frame",
        )

    def struct_case() -> Case:
        frames = [struct_encode_gossip(m) for m in _stream_data("best")[0]]
        return _stream_case("best", lambda: StructSplitter(1 << 20).feed, frames, kept)

    _register(group, "msgpack Unpacker.feed (messages)", _MSGPACK)(msgpack_case)
    _register(group, "struct splitter (bytes)", ())(struct_case)


_register_stream(STREAM, kept=False)
_register_stream(STREAM_KEPT, kept=True)


# table: LWW merge of a 1000-entry batch, half newer and half older ----------------------------

_TABLE_C = ("fastgossip._table_c", "fastgossip._codec_c")
_TABLE_PY = ("fastgossip._table_py", "fastgossip._codec_py")
V0 = VERSION
ORIGINS = tuple(f"node-{i:03d}" for i in range(8))


def table_key(i: int) -> str:
    """16-character keys."""
    return f"key-{i:012d}"


def merge_group(n: int) -> str:
    return f"table: merge({MERGE_BATCH} entries) into {n // 1000}k keys"


def decode_merge_group(n: int) -> str:
    return f"table: decode+merge a {MERGE_BATCH}-entry frame into {n // 1000}k keys"


class _Table:
    """A filled table and a source of batches that always do the same work.

    Every batch holds ``MERGE_BATCH`` distinct keys of the table: the first half
    with a version above anything stored so far (they win), the second half
    with a version below everything (they lose). Each batch gets a higher
    "newer" version than the last, so repeating the call repeats the work.
    """

    def __init__(self, n: int, store: Any, entry_cls: Any) -> None:
        self.n = n
        self.store = store
        self.entry = entry_cls
        rng = random.Random(n)
        picked = rng.sample(range(n), MERGE_BATCH)
        self.keys = [table_key(i) for i in picked]
        self.origins = [ORIGINS[i % len(ORIGINS)] for i in picked]
        self.round = 0

    def next_entries(self) -> List[Any]:
        self.round += 1
        newer = V0 + self.round
        entry, half = self.entry, MERGE_BATCH // 2
        out = []
        for j, (key, origin) in enumerate(zip(self.keys, self.origins)):
            if j < half:
                out.append(entry(key, self.round, newer, origin, newer))
            else:
                out.append(entry(key, 0, V0 - 1, origin, V0 - 1))
        return out


def _fill(setter: Callable[..., Any], n: int) -> None:
    origins = ORIGINS
    for i in range(n):
        setter(table_key(i), i, V0, origins[i % 8], V0)


@cache
def _fastgossip_table(impl: str, n: int) -> _Table:
    table_mod, codec_mod = fg("table", impl), fg("codec", impl)
    state = table_mod.GossipState()
    _fill(state.set, n)
    return _Table(n, state, codec_mod.Entry)


def dict_merge(d: Dict[str, tuple], entries: Any) -> int:
    """The LWW merge a user would write: a dict of (version, origin, value, stamp)."""
    changed = 0
    get = d.get
    for e in entries:
        new = (e.version, e.origin, e.value, e.stamp)
        cur = get(e.key)
        if cur is None or new > cur:
            d[e.key] = new
            changed += 1
    return changed


def dict_merge_tuples(d: Dict[str, tuple], entries: Any) -> int:
    """The same over (key, value, version, origin, stamp) tuples (msgpack's output)."""
    changed = 0
    get = d.get
    for key, value, version, origin, stamp in entries:
        new = (version, origin, value, stamp)
        cur = get(key)
        if cur is None or new > cur:
            d[key] = new
            changed += 1
    return changed


@cache
def _dict_table(n: int, tag: str) -> _Table:
    d: Dict[str, tuple] = {}

    def setter(key: str, value: Any, version: int, origin: str, stamp: int) -> None:
        d[key] = (version, origin, value, stamp)

    _fill(setter, n)
    return _Table(n, d, message_module().Entry)


def _changed_half(result: Any, _arg: Any) -> None:
    got = result if isinstance(result, int) else len(result)
    assert got == MERGE_BATCH // 2, f"{got} entries changed, expected {MERGE_BATCH // 2}"


def _register_tables() -> None:
    for n in TABLE_SIZES:
        for impl, name, requires in (("c", C_NAME, _TABLE_C), ("py", PY_NAME, _TABLE_PY)):

            def merge_case(impl: str = impl, n: int = n) -> Case:
                t = _fastgossip_table(impl, n)

                def check(result: Any, entries: Any) -> None:
                    _changed_half(result, entries)
                    first, last = entries[0], entries[-1]
                    assert t.store.get(first.key) == (first.value, first.version)
                    assert t.store.get(last.key)[1] == V0

                return Case(
                    "",
                    "",
                    t.store.merge,
                    check,
                    make_arg=t.next_entries,
                    units=MERGE_BATCH,
                    unit="entry",
                )

            def decode_merge_case(impl: str = impl, n: int = n) -> Case:
                t = _fastgossip_table(impl, n)
                encode, batch = fg("codec", impl).encode, fg("codec", impl).GossipBatch
                first_key = t.keys[0]

                def make_frame() -> bytes:
                    return encode(batch(SENDER, t.next_entries()))

                def check(result: Any, _frame: bytes) -> None:
                    _changed_half(result, _frame)
                    assert t.store.get(first_key) == (t.round, V0 + t.round)

                return Case(
                    "",
                    "",
                    t.store.merge_frame,
                    check,
                    make_arg=make_frame,
                    units=MERGE_BATCH,
                    unit="entry",
                )

            _register(merge_group(n), name, requires)(merge_case)
            _register(decode_merge_group(n), f"{name} merge_frame", requires)(decode_merge_case)

        def dict_case(n: int = n) -> Case:
            t = _dict_table(n, "merge")
            d = t.store

            def merge(entries: Any) -> int:
                return dict_merge(d, entries)

            return Case(
                "",
                "",
                merge,
                _changed_half,
                make_arg=t.next_entries,
                units=MERGE_BATCH,
                unit="entry",
            )

        def dict_decode_case(n: int = n) -> Case:
            t = _dict_table(n, "decode")
            mod = fg("codec", "c")
            encode, decode, batch = mod.encode, mod.decode, mod.GossipBatch
            d = t.store

            def decode_merge(frame: bytes) -> int:
                return dict_merge(d, decode(frame).entries)

            return Case(
                "",
                "",
                decode_merge,
                _changed_half,
                make_arg=lambda: encode(batch(SENDER, t.next_entries())),
                units=MERGE_BATCH,
                unit="entry",
            )

        def dict_msgpack_case(n: int = n) -> Case:
            msgpack = _import("msgpack")
            t = _dict_table(n, "msgpack")
            packb, unpackb = msgpack.packb, msgpack.unpackb
            d = t.store

            def make_frame() -> bytes:
                return packb(
                    [
                        SENDER,
                        [[e.key, e.value, e.version, e.origin, e.stamp] for e in t.next_entries()],
                    ]
                )

            def decode_merge(frame: bytes) -> int:
                return dict_merge_tuples(d, unpackb(frame, use_list=False)[1])

            return Case(
                "",
                "",
                decode_merge,
                _changed_half,
                make_arg=make_frame,
                units=MERGE_BATCH,
                unit="entry",
            )

        _register(merge_group(n), "dict of tuples", ())(dict_case)
        _register(decode_merge_group(n), "dict of tuples + fastgossip-c decode", _CODEC_C)(
            dict_decode_case
        )
        _register(decode_merge_group(n), "dict of tuples + msgpack", _MSGPACK)(dict_msgpack_case)


_register_tables()


# sampler: k of 1000 peers ------------------------------------------------------------------


def sample_group(k: int) -> str:
    return f"sampler: {k} of {PEERS} peers"


def peers() -> List[Tuple[str, int]]:
    return [("127.0.0.1", 7000 + i) for i in range(PEERS)]


def _sample_check(population: List[Any], k: int) -> Callable[[Any, Any], None]:
    members = set(population)

    def check(result: Any, _arg: Any) -> None:
        assert len(result) == k, len(result)
        assert len(set(result)) == k, "duplicates in the sample"
        assert all(p in members for p in result)

    return check


def _sample_case(sample: Callable[[Any, int], Any], k: int) -> Case:
    """k of the peers drawn by ``sample(population, k)``."""
    population = peers()

    def run(seq: List[Any]) -> Any:
        return sample(seq, k)

    return Case(
        "",
        "",
        run,
        _sample_check(population, k),
        arg=population,
        expr="sample(arg, k)",
        names={"sample": sample, "k": k},
        batch=FAST_BATCH,
    )


def _register_sampler() -> None:
    for k in SAMPLE_KS:
        for impl, name in (("c", C_NAME), ("py", PY_NAME)):

            def xorshift_case(impl: str = impl, k: int = k) -> Case:
                return _sample_case(fg("sampler", impl).XorShift64(12345).sample, k)

            requires = (f"fastgossip._sampler_{impl}",)
            _register(sample_group(k), f"{name} XorShift64.sample", requires)(xorshift_case)

        def random_case(k: int = k) -> Case:
            return _sample_case(random.Random(12345).sample, k)

        _register(sample_group(k), "random.sample", ())(random_case)


_register_sampler()
