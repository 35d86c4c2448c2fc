"""Property tests and fuzzing of the frame codec.

Every message built from the same description must encode to the same bytes in
both implementations and decode back; random and mutated frames must give a
message or a FrameError, and the compiled and pure-Python decoders must agree
exactly (same message, or same error text and offset).
"""

from __future__ import annotations

from types import ModuleType

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastgossip._impl import load
from fastgossip.errors import FrameError

C = load("codec", "cython")
P = load("codec", "python")

SETTINGS = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

texts = st.text(max_size=12)
u64s = st.one_of(st.integers(0, 300), st.integers(0, 2**64 - 1), st.just(2**64 - 1))
values = st.one_of(u64s, st.binary(max_size=24))
origins = st.one_of(st.sampled_from(["", "a", "node-1", "ß", "🙂"]), texts)
entry_specs = st.tuples(texts, values, u64s, origins, st.one_of(st.none(), u64s))
message_specs = st.one_of(
    st.tuples(st.just("Gossip"), texts, texts, values, u64s, origins),
    st.tuples(st.just("Ping"), texts, u64s),
    st.tuples(st.just("Pong"), texts, u64s),
    st.tuples(st.just("Replicate"), texts, u64s, u64s, u64s, st.binary(max_size=40)),
    st.tuples(st.just("ReplicateAck"), texts, u64s, st.booleans()),
    st.tuples(st.just("GossipBatch"), texts, st.lists(entry_specs, max_size=8)),
    st.tuples(
        st.just("Digest"),
        texts,
        st.lists(st.tuples(origins, u64s), max_size=6),
        st.booleans(),
        st.booleans(),
    ),
)


def build(mod: ModuleType, spec: tuple):
    kind = spec[0]
    if kind == "GossipBatch":
        return mod.GossipBatch(spec[1], [mod.Entry(*e) for e in spec[2]])
    return getattr(mod, kind)(*spec[1:])


def outcome(mod: ModuleType, data: bytes) -> tuple:
    """What decode makes of data, comparable across implementations."""
    try:
        msg = mod.decode(data)
    except FrameError as exc:
        assert str(exc).endswith(f" at offset {exc.offset}")
        assert 0 <= exc.offset <= len(data)
        return ("error", str(exc), exc.offset)
    return ("ok", repr(msg))


def stream_outcome(mod: ModuleType, data: bytes, cuts: list, raw: bool) -> list:
    """Feed data cut at `cuts`; the list of results and the first error."""
    dec = mod.FrameDecoder(max_frame_size=4096)
    feed = dec.feed_frames if raw else dec.feed
    out: list = []
    bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    for a, b in zip(bounds, bounds[1:]):
        try:
            got = feed(data[a:b])
        except FrameError as exc:
            out.append(("error", str(exc), exc.offset))
            break
        out.extend(got if raw else [repr(m) for m in got])
        assert dec.buffered <= 4096 + 4
    return out


# ---------------------------------------------------------------------------
# round trips


@SETTINGS
@given(spec=message_specs)
def test_round_trip(codec: ModuleType, spec: tuple) -> None:
    msg = build(codec, spec)
    frame = codec.encode(msg)
    back = codec.decode(frame)
    assert back == msg
    assert type(back) is type(msg)
    assert codec.decode(bytearray(frame)) == msg
    assert codec.frame_type(frame) == frame[5]


@SETTINGS
@given(spec=message_specs)
def test_implementations_encode_identically(spec: tuple) -> None:
    frame = C.encode(build(C, spec))
    assert P.encode(build(P, spec)) == frame
    assert repr(C.decode(frame)) == repr(P.decode(frame))


@SETTINGS
@given(specs=st.lists(message_specs, max_size=6), cuts=st.lists(st.integers(0, 2000), max_size=12))
def test_decoder_any_boundaries(codec: ModuleType, specs: list, cuts: list) -> None:
    msgs = [build(codec, s) for s in specs]
    stream = codec.encode_many(msgs)
    assert stream == b"".join(codec.encode(m) for m in msgs)
    bounds = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    dec = codec.FrameDecoder()
    frames_dec = codec.FrameDecoder()
    got, frames = [], []
    for a, b in zip(bounds, bounds[1:]):
        got.extend(dec.feed(stream[a:b]))
        frames.extend(frames_dec.feed_frames(memoryview(stream)[a:b]))
    assert got == msgs
    assert frames == [codec.encode(m) for m in msgs]
    assert dec.buffered == 0 and frames_dec.buffered == 0


# ---------------------------------------------------------------------------
# invalid messages: both implementations refuse them with the same words

anything = st.one_of(
    st.integers(-(2**70), 2**70),
    st.integers(2**64 - 2, 2**64 + 2),
    st.booleans(),
    st.floats(allow_nan=False),
    st.none(),
    st.binary(max_size=4),
    st.text(max_size=3),
)
surrogates = st.text(
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=2
)
any_text = st.one_of(texts, surrogates, st.just("x" * 65536))
bad_specs = st.one_of(
    st.tuples(st.just("Gossip"), any_text, any_text, anything, anything, any_text),
    st.tuples(st.just("Ping"), any_text, anything),
    st.tuples(st.just("Replicate"), any_text, anything, anything, anything),
    st.tuples(st.just("ReplicateAck"), any_text, anything, st.booleans()),
    st.tuples(
        st.just("GossipBatch"),
        any_text,
        st.lists(st.tuples(any_text, anything, anything, any_text, anything), max_size=4),
    ),
    st.tuples(st.just("Digest"), any_text, st.lists(st.tuples(any_text, anything), max_size=3)),
)


def encode_outcome(mod: ModuleType, spec: tuple) -> tuple:
    try:
        return ("ok", mod.encode(build(mod, spec)))
    except (TypeError, ValueError) as exc:
        return (type(exc), str(exc))


@SETTINGS
@given(spec=bad_specs)
def test_encode_errors_agree(spec: tuple) -> None:
    assert encode_outcome(C, spec) == encode_outcome(P, spec)


# ---------------------------------------------------------------------------
# fuzzing the decoders


@SETTINGS
@given(data=st.binary(max_size=120))
def test_random_bytes(data: bytes) -> None:
    assert outcome(C, data) == outcome(P, data)


@SETTINGS
@given(body=st.binary(max_size=120), mtype=st.integers(0, 9), version=st.sampled_from([1, 1, 2]))
def test_random_payloads(body: bytes, mtype: int, version: int) -> None:
    # a well-formed header so that the payload readers see the random bytes
    data = (len(body) + 2).to_bytes(4, "big") + bytes([version, mtype]) + body
    assert outcome(C, data) == outcome(P, data)


mutations = st.lists(
    st.tuples(
        st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
        st.integers(0, 10**6),
        st.integers(0, 255),
    ),  # fmt: skip
    min_size=1,
    max_size=4,
)


def mutate(frame: bytes, ops: list, fix_prefix: bool) -> bytes:
    data = bytearray(frame)
    for op, where, byte in ops:
        i = where % (len(data) + 1)
        if op == "insert":
            data.insert(i, byte)
        elif op == "truncate":
            del data[i:]
        elif data and i < len(data):
            if op == "flip":
                data[i] ^= 1 << (byte % 8)
            elif op == "set":
                data[i] = byte
            else:
                del data[i]
    if fix_prefix and len(data) >= 4:
        data[:4] = (len(data) - 4).to_bytes(4, "big")
    return bytes(data)


@SETTINGS
@given(spec=message_specs, ops=mutations, fix_prefix=st.booleans())
def test_mutated_frames(spec: tuple, ops: list, fix_prefix: bool) -> None:
    frame = C.encode(build(C, spec))
    data = mutate(frame, ops, fix_prefix)
    assert outcome(C, data) == outcome(P, data)


@SETTINGS
@given(
    specs=st.lists(message_specs, min_size=1, max_size=4),
    ops=mutations,
    cuts=st.lists(st.integers(0, 600), max_size=8),
    raw=st.booleans(),
)
def test_mutated_streams(specs: list, ops: list, cuts: list, raw: bool) -> None:
    stream = C.encode_many([build(C, s) for s in specs])
    data = mutate(stream, ops, fix_prefix=False)
    assert stream_outcome(C, data, cuts, raw) == stream_outcome(P, data, cuts, raw)
