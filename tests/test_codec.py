"""The frame codec (docs/PROTOCOL.md), both implementations via the `codec` fixture."""

from __future__ import annotations

import array
import asyncio
import pickle
import re
import tracemalloc
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgossip import streams
from fastgossip._impl import load
from fastgossip.errors import FrameError

PROTOCOL_MD = Path(__file__).parents[1] / "docs" / "PROTOCOL.md"
MESSAGE_NAMES = [
    "Entry", "Gossip", "Ping", "Pong", "Replicate", "ReplicateAck", "GossipBatch", "Digest",
]  # fmt: skip
U64_MAX = 2**64 - 1


def sample_messages(c: ModuleType) -> list:
    """One or more messages of every type, with edge values."""
    e = c.Entry
    return [
        c.Gossip("n1", "k", 42, 7),
        c.Gossip("", "", 0, 0, ""),
        c.Gossip("node-a", "clé/ключ/鍵/🙂", b"\x00\xff" * 3, U64_MAX, "node-b"),
        c.Gossip("s", "k", b"", 1, "s"),
        c.Gossip("s" * 65535, "k" * 65535, b"v" * 100_000, U64_MAX, "é" * 32767),
        c.Ping("n1", 0),
        c.Ping("🙂", U64_MAX),
        c.Pong("n1", 1),
        c.Replicate("leader", 5, 2, 0xDEADBEEF, b"abc"),
        c.Replicate("", 0, 0, 0),
        c.Replicate("l", U64_MAX, U64_MAX, U64_MAX, bytes(range(256)) * 10),
        c.ReplicateAck("f1", 5, True),
        c.ReplicateAck("f1", U64_MAX, False),
        c.GossipBatch("n1"),
        c.GossipBatch("n1", [e("a", 1, 10, "n1"), e("b", b"x", 11, "n2", 12), e("c", 2, 13, "n1")]),
        c.GossipBatch("", [e("", 0, 0, "", 0), e("k", b"", U64_MAX, "", U64_MAX)]),
        c.GossipBatch("x", [e(f"key{i}", i, i, f"o{i % 20}", i + 1) for i in range(300)]),
        c.Digest("n1"),
        c.Digest("n1", {"n1": 10, "n2": U64_MAX}, reply=True),
        c.Digest("é", [("", 0), ("🙂", 1), ("", 2)]),
    ]


def encode_error(fn, *args) -> tuple:
    try:
        fn(*args)
    except (TypeError, ValueError) as exc:
        return type(exc), str(exc)
    raise AssertionError("no error")


def frame_error(fn, *args, **kwargs) -> tuple:
    try:
        fn(*args, **kwargs)
    except FrameError as exc:
        return str(exc), exc.offset
    raise AssertionError("no FrameError")


def hexbytes(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# ---------------------------------------------------------------------------
# module surface


def test_both_modules_export_the_same_names() -> None:
    cm, pm = load("codec", "cython"), load("codec", "python")
    assert sorted(cm.__all__) == sorted(pm.__all__)
    for name in cm.__all__:
        assert hasattr(cm, name) and hasattr(pm, name), name
    for name in ["encode", "encode_many", "decode", "frame_type", "FrameDecoder"]:
        assert callable(getattr(cm, name))


def test_constants(codec: ModuleType) -> None:
    assert codec.PROTOCOL_VERSION == 1
    assert codec.DEFAULT_MAX_FRAME_SIZE == 1 << 20
    codes = [codec.T_GOSSIP, codec.T_PING, codec.T_PONG, codec.T_REPLICATE,
             codec.T_REPLICATE_ACK, codec.T_GOSSIP_BATCH, codec.T_DIGEST]  # fmt: skip
    assert codes == [1, 2, 3, 4, 5, 6, 7]
    assert all(type(x) is int for x in codes)


def test_live_codec_module_matches_an_implementation() -> None:
    from fastgossip import _codec

    assert _codec.encode(_codec.Ping("a", 1)) == load("codec", "python").encode(
        load("codec", "python").Ping("a", 1)
    )


# ---------------------------------------------------------------------------
# round trips, equality, hash, repr


def test_round_trip_every_type(codec: ModuleType) -> None:
    for msg in sample_messages(codec):
        frame = codec.encode(msg)
        assert isinstance(frame, bytes)
        assert int.from_bytes(frame[:4], "big") == len(frame) - 4
        assert frame[4] == 1
        back = codec.decode(frame)
        assert type(back) is type(msg)
        assert back == msg
        assert hash(back) == hash(msg)
        assert repr(back) == repr(msg)
        assert codec.frame_type(frame) == frame[5]


def test_value_types_are_preserved(codec: ModuleType) -> None:
    one_int = codec.decode(codec.encode(codec.Gossip("s", "k", 1, 1)))
    one_bytes = codec.decode(codec.encode(codec.Gossip("s", "k", b"\x01", 1)))
    assert type(one_int.value) is int and one_int.value == 1
    assert type(one_bytes.value) is bytes and one_bytes.value == b"\x01"
    assert one_int != one_bytes
    batch = codec.decode(
        codec.encode(codec.GossipBatch("s", [codec.Entry("a", 5, 1), codec.Entry("b", b"5", 1)]))
    )
    assert [type(e.value) for e in batch.entries] == [int, bytes]
    ack = codec.decode(codec.encode(codec.ReplicateAck("f", 1, True)))
    assert ack.success is True


def test_decoded_field_types(codec: ModuleType) -> None:
    msg = codec.decode(codec.encode(codec.GossipBatch("s", [codec.Entry("a", 5, 1, "o", 9)])))
    assert type(msg.entries) is tuple
    (entry,) = msg.entries
    assert type(entry) is codec.Entry
    assert entry.astuple() == ("a", 5, 1, "o", 9)
    digest = codec.decode(codec.encode(codec.Digest("s", {"a": 1}, True)))
    assert digest.watermarks == (("a", 1),) and type(digest.watermarks[0]) is tuple
    assert digest.reply is True and digest.more is False
    digest = codec.decode(codec.encode(codec.Digest("s", {"a": 1}, more=True)))
    assert digest.reply is False and digest.more is True
    assert digest == codec.Digest("s", {"a": 1}, False, True) != codec.Digest("s", {"a": 1})
    assert repr(digest) == (
        "Digest(sender_id='s', watermarks=(('a', 1),), reply=False, more=True, delta=False)"
    )
    digest = codec.decode(codec.encode(codec.Digest("s", {"a": 0}, delta=True)))
    assert digest.delta is True and not digest.reply and not digest.more
    assert digest != codec.Digest("s", {"a": 0})


def test_batch_origin_table(codec: ModuleType) -> None:
    e = codec.Entry
    # equal origins held by different str objects share one table slot
    o1, o2 = "".join(["ori", "gin"]), "".join(["orig", "in"])
    assert o1 is not o2
    entries = [e("a", 1, 1, o1), e("b", 1, 1, "other"), e("c", 1, 1, o2), e("d", 1, 1, "")]
    frame = codec.encode(codec.GossipBatch("s", entries))
    # sender, n_origins = 3: "origin", "other", ""
    assert frame[6:8] == b"\x00\x01" and frame[9:11] == b"\x00\x03"
    back = codec.decode(frame)
    assert [x.origin for x in back.entries] == ["origin", "other", "origin", ""]
    # many origins (beyond the small inline table) keep first-appearance order
    many = [e(f"k{i}", i, i, f"origin-{(i * 7) % 40}") for i in range(200)]
    back = codec.decode(codec.encode(codec.GossipBatch("s", many)))
    assert back.entries == tuple(many)


def test_equality_hash_repr(codec: ModuleType) -> None:
    a = codec.Gossip("n", "k", 1, 2)
    b = codec.Gossip("n", "k", 1, 2, "")
    assert a == b and hash(a) == hash(b)
    assert a != codec.Gossip("n", "k", 1, 3)
    assert a != codec.Ping("n", 1)
    assert repr(a) == "Gossip(sender_id='n', key='k', value=1, version=2, origin='')"
    assert repr(codec.Ping("n", 1)) == "Ping(sender_id='n', seq=1)"
    assert repr(codec.Entry("k", b"v", 3)) == (
        "Entry(key='k', value=b'v', version=3, origin='', stamp=3)"
    )
    assert pickle.loads(pickle.dumps(a)) == a
    assert len({codec.Ping("n", 1), codec.Ping("n", 1), codec.Pong("n", 1)}) == 2


def test_encode_many(codec: ModuleType) -> None:
    msgs = sample_messages(codec)
    joined = codec.encode_many(msgs)
    assert joined == b"".join(codec.encode(m) for m in msgs)
    assert codec.encode_many(iter(msgs[:3])) == b"".join(codec.encode(m) for m in msgs[:3])
    assert codec.encode_many([]) == b""
    assert codec.FrameDecoder(1 << 24).feed(joined) == msgs


def test_decode_accepts_any_buffer(codec: ModuleType) -> None:
    msg = codec.Gossip("node", "key", b"value", 99, "o")
    frame = codec.encode(msg)
    assert codec.decode(bytearray(frame)) == msg
    assert codec.decode(memoryview(frame)) == msg
    assert codec.decode(memoryview(b"xx" + frame)[2:]) == msg
    # a strided (non-contiguous) view and a typed array are read as their bytes
    doubled = bytes(b for x in frame for b in (x, 0))
    assert codec.decode(memoryview(doubled)[::2]) == msg
    key = "k"
    while len(codec.encode(codec.Gossip("node", key, 1, 1))) % 4:
        key += "k"
    aligned = codec.Gossip("node", key, 1, 1)
    words = array.array("I")
    words.frombytes(codec.encode(aligned))
    assert codec.decode(words) == aligned


def test_decode_rejects_non_buffers(codec: ModuleType) -> None:
    for bad in ["text", 5, None]:
        assert encode_error(codec.decode, bad) == (
            TypeError,
            f"decode() needs a bytes-like object, not {type(bad).__name__}",
        )


def test_max_frame_size_argument(codec: ModuleType) -> None:
    frame = codec.encode(codec.Replicate("l", 1, 2, 3, b"x" * 100))
    # max_frame_size bounds the whole frame, its 4-byte length prefix included
    assert codec.decode(frame, max_frame_size=len(frame)) is not None
    assert frame_error(codec.decode, frame, max_frame_size=len(frame) - 1) == (
        f"frame of {len(frame)} bytes exceeds max_frame_size {len(frame) - 1} at offset 0",
        0,
    )
    assert encode_error(codec.decode, frame, 1) == (
        ValueError,
        "max_frame_size must be in [2, 4294967295], got 1",
    )
    assert encode_error(codec.decode, frame, 2.0) == (
        TypeError,
        "max_frame_size must be int, not float",
    )
    assert encode_error(codec.FrameDecoder, True) == (
        TypeError,
        "max_frame_size must be int, not bool",
    )
    assert codec.FrameDecoder(100).max_frame_size == 100


# ---------------------------------------------------------------------------
# PROTOCOL.md test vectors


def _vector_blocks(kind: str) -> list:
    text = PROTOCOL_MD.read_text(encoding="utf-8")
    section = text[text.index("## Test vectors") :]
    blocks = re.findall(r"```text\n(.*?)```", section, flags=re.S)
    out = []
    for block in blocks:
        if kind == "good" and block.startswith("message:"):
            message, hexpart = block[len("message:") :].split("hex:")
            out.append((" ".join(message.split()), hexbytes(hexpart)))
        elif kind == "bad" and block.startswith("frame:"):
            frame, error = block[len("frame:") :].split("error:")
            out.append((hexbytes(frame), error.strip()))
    return out


def test_protocol_vectors_exist() -> None:
    good = _vector_blocks("good")
    names = {message.split("(")[0] for message, _ in good}
    assert names >= {"Gossip", "Ping", "Pong", "Replicate", "ReplicateAck", "GossipBatch", "Digest"}
    assert len(_vector_blocks("bad")) >= 10


def test_protocol_vectors(codec: ModuleType) -> None:
    namespace = {name: getattr(codec, name) for name in MESSAGE_NAMES}
    for literal, frame in _vector_blocks("good"):
        msg = eval(literal, namespace)  # literals from our own doc
        assert codec.encode(msg) == frame, literal
        assert codec.decode(frame) == msg, literal


def test_protocol_malformed_vectors(codec: ModuleType) -> None:
    for frame, error in _vector_blocks("bad"):
        offset = int(error.rsplit(" ", 1)[1])
        assert frame_error(codec.decode, frame) == (error, offset)


# ---------------------------------------------------------------------------
# malformed frames: FrameError with the right words and offset

PING = hexbytes("0000000e 01 02 0002 6e31 0000000000000001")


def with_prefix(body: bytes) -> bytes:
    """Prefix a frame body (version byte onward) with its correct length."""
    return len(body).to_bytes(4, "big") + body


MALFORMED = [
    (b"", "truncated length prefix: 0 of 4 bytes present at offset 0", 0),
    (b"\x00\x00\x00", "truncated length prefix: 3 of 4 bytes present at offset 0", 0),
    (b"\x00\x00\x00\x00", "frame length 0 is below the minimum of 2 at offset 0", 0),
    (b"\x00\x00\x00\x01\x01", "frame length 1 is below the minimum of 2 at offset 0", 0),
    (
        b"\xff\xff\xff\xff",
        "frame of 4294967299 bytes exceeds max_frame_size 1048576 at offset 0",
        0,
    ),
    (b"\x00\x0f\xff\xfd", "frame of 1048577 bytes exceeds max_frame_size 1048576 at offset 0", 0),
    (PING[:-1], "length prefix says 14 bytes follow but the frame holds 13 at offset 0", 0),
    (PING + b"\x00", "length prefix says 14 bytes follow but the frame holds 15 at offset 0", 0),
    (with_prefix(b"\x00\x02"), "unknown protocol version 0 at offset 4", 4),
    (with_prefix(b"\x01\x00"), "unknown message type 0 at offset 5", 5),
    (with_prefix(b"\x01\x08"), "unknown message type 8 at offset 5", 5),
    (with_prefix(b"\x01\x02"), "truncated sender_id: 0 of 2 bytes present at offset 6", 6),
    (with_prefix(b"\x01\x02\x00"), "truncated sender_id: 1 of 2 bytes present at offset 6", 6),
    (
        with_prefix(b"\x01\x02\x00\x05ab"),
        "sender_id length 5 overruns the frame (2 bytes left) at offset 6",
        6,
    ),
    (
        with_prefix(b"\x01\x02\x00\x02ab" + b"\x00" * 7),
        "truncated seq: 7 of 8 bytes present at offset 10",
        10,
    ),
    (
        with_prefix(b"\x01\x02\x00\x02ab" + b"\x00" * 9),
        "1 trailing bytes after the Ping payload at offset 18",
        18,
    ),
    (
        with_prefix(b"\x01\x03\x00\x03a\xc3(" + b"\x00" * 8),
        "invalid UTF-8 in sender_id at offset 9",
        9,
    ),
    # lone surrogate and overlong encodings are invalid UTF-8 too
    (
        with_prefix(b"\x01\x03\x00\x03\xed\xa0\x80" + b"\x00" * 8),
        "invalid UTF-8 in sender_id at offset 8",
        8,
    ),  # fmt: skip
    (
        with_prefix(b"\x01\x03\x00\x02\xc0\x80" + b"\x00" * 8),
        "invalid UTF-8 in sender_id at offset 8",
        8,
    ),  # fmt: skip
    # Gossip: sender "a", key "k", value tag 7
    (
        with_prefix(b"\x01\x01\x00\x01a\x00\x01k\x07" + b"\x00" * 20),
        "unknown value tag 7 in value at offset 12",
        12,
    ),
    (
        with_prefix(b"\x01\x01\x00\x01a\x00\x01k"),
        "truncated value: 0 of 1 bytes present at offset 12",
        12,
    ),  # fmt: skip
    (
        with_prefix(b"\x01\x01\x00\x01a\x00\x01k\x00\x00"),
        "truncated value: 1 of 8 bytes present at offset 13",
        13,
    ),
    (
        with_prefix(b"\x01\x01\x00\x01a\x00\x01k\x01\x00\x00\x01\x00xyz"),
        "value length 256 overruns the frame (3 bytes left) at offset 13",
        13,
    ),
    (
        with_prefix(b"\x01\x01\x00\x01a\x00\x01k\x00" + b"\x00" * 8 + b"\x00" * 8),
        "truncated origin: 0 of 2 bytes present at offset 29",
        29,
    ),
    (
        with_prefix(
            b"\x01\x01\x00\x01a\x00\x01k\x00" + b"\x00" * 8 + b"\x00" * 8 + b"\x00\x01\xff"
        ),
        "invalid UTF-8 in origin at offset 31",
        31,
    ),
    # ReplicateAck: bool byte
    (
        with_prefix(b"\x01\x05\x00\x01f" + b"\x00" * 8 + b"\x02"),
        "invalid bool byte 2 in success at offset 17",
        17,
    ),
    (
        with_prefix(b"\x01\x05\x00\x01f" + b"\x00" * 8 + b"\xff"),
        "invalid bool byte 255 in success at offset 17",
        17,
    ),
    # Replicate: payload overrun
    (
        with_prefix(b"\x01\x04\x00\x01l" + b"\x00" * 24 + b"\xff\xff\xff\xff"),
        "payload length 4294967295 overruns the frame (0 bytes left) at offset 33",
        33,
    ),
    # GossipBatch counts and indices
    (
        with_prefix(b"\x01\x06\x00\x01s\xff\xff"),
        "n_origins 65535 needs at least 131070 bytes, 0 left at offset 9",
        9,
    ),
    (
        with_prefix(b"\x01\x06\x00\x01s\x00\x00\x00\x00\x00\x02" + b"\x00" * 41),
        "n_entries 2 needs at least 42 bytes, 41 left at offset 11",
        11,
    ),
    (
        with_prefix(b"\x01\x06\x00\x01s\x00\x01\x00\x01\xff\x00\x00\x00\x00"),
        "invalid UTF-8 in origins[0] at offset 13",
        13,
    ),
    (
        with_prefix(b"\x01\x06\x00\x01s\x00\x02\x00\x00\x00\x05"),
        "origins[1] length 5 overruns the frame (0 bytes left) at offset 13",
        13,
    ),
    (
        with_prefix(
            b"\x01\x06\x00\x01s\x00\x01\x00\x00\x00\x00\x00\x01"
            + b"\x00\x01k\x00\x01"
            + b"\x00" * 17
            + b"\x00" * 8
        ),
        "entries[0].origin_index 1 out of range (1 origins) at offset 20",
        20,
    ),
    (
        with_prefix(
            b"\x01\x06\x00\x01s\x00\x01\x00\x00\x00\x00\x00\x01"
            + b"\x00\x01\xff\x00\x00"
            + b"\x00" * 16
            + b"\x00"
            + b"\x00" * 8
        ),
        "invalid UTF-8 in entries[0].key at offset 19",
        19,
    ),
    (
        # the entry's structure is read before its key's UTF-8 is checked
        with_prefix(
            b"\x01\x06\x00\x01s\x00\x01\x00\x00\x00\x00\x00\x01"
            + b"\x00\x01\xff\x00\x00"
            + b"\x00" * 16
            + b"\x07"
            + b"\x00" * 8
        ),
        "unknown value tag 7 in entries[0].value at offset 38",
        38,
    ),
    # Digest
    (
        with_prefix(b"\x01\x07\x00\x01s\x08\x00\x00\x00\x00"),
        "unknown digest flags 8 at offset 9",
        9,
    ),
    (
        with_prefix(b"\x01\x07\x00\x01s\xff\x00\x00\x00\x00"),
        "unknown digest flags 255 at offset 9",
        9,
    ),
    (with_prefix(b"\x01\x07\x00\x01s"), "truncated flags: 0 of 1 bytes present at offset 9", 9),
    (
        with_prefix(b"\x01\x07\x00\x01s\x00\x00\x00\x00\x01" + b"\x00" * 9),
        "n_watermarks 1 needs at least 10 bytes, 9 left at offset 10",
        10,
    ),
    (
        with_prefix(
            b"\x01\x07\x00\x01s\x00\x00\x00\x00\x02"
            + b"\x00\x00"
            + b"\x00" * 8
            + b"\x00\x09"
            + b"\x00" * 8
        ),  # fmt: skip
        "watermarks[1].origin length 9 overruns the frame (8 bytes left) at offset 24",
        24,
    ),
    (
        with_prefix(b"\x01\x07\x00\x01s\x00\x00\x00\x00\x01" + b"\x00\x00" + b"\x00" * 8 + b"!"),
        "1 trailing bytes after the Digest payload at offset 24",
        24,
    ),
]


@pytest.mark.parametrize(
    "frame, message, offset", MALFORMED, ids=[m.rsplit(" at ", 1)[0] for _, m, _ in MALFORMED]
)
def test_malformed(codec: ModuleType, frame: bytes, message: str, offset: int) -> None:
    err = frame_error(codec.decode, frame)
    assert err == (message, offset)
    assert message.endswith(f"at offset {offset}")


def test_frame_error_is_a_value_error(codec: ModuleType) -> None:
    with pytest.raises(ValueError):
        codec.decode(b"\x00")


def test_every_truncation_of_every_sample_is_a_frame_error(codec: ModuleType) -> None:
    for msg in sample_messages(codec)[:4] + sample_messages(codec)[5:16]:
        frame = codec.encode(msg)
        for cut in range(len(frame)):
            with pytest.raises(FrameError):
                codec.decode(frame[:cut])
            # with the prefix adjusted to the cut, the payload itself is short
            if cut >= 6:
                fixed = (cut - 4).to_bytes(4, "big") + frame[4:cut]
                with pytest.raises(FrameError):
                    codec.decode(fixed)


def test_huge_counts_are_refused_before_allocating(codec: ModuleType) -> None:
    # n_entries = 2**32 - 1 in a tiny frame: refused by arithmetic, at once
    frame = with_prefix(b"\x01\x06\x00\x01s\x00\x00\xff\xff\xff\xff")
    tracemalloc.start()
    try:
        frame_error(codec.decode, frame)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


def test_frame_type(codec: ModuleType) -> None:
    assert codec.frame_type(PING) == codec.T_PING
    assert codec.frame_type(bytearray(PING)) == 2
    assert codec.frame_type(b"\x00\x00\x00\x00\x01\x09") == 9  # only the byte
    assert frame_error(codec.frame_type, b"\x00\x00") == (
        "truncated length prefix: 2 of 4 bytes present at offset 0",
        0,
    )
    assert frame_error(codec.frame_type, b"\x00\x00\x00\x02") == (
        "truncated version: 0 of 1 bytes present at offset 4",
        4,
    )
    assert frame_error(codec.frame_type, b"\x00\x00\x00\x02\x01") == (
        "truncated type: 0 of 1 bytes present at offset 5",
        5,
    )


# ---------------------------------------------------------------------------
# encode-time validation


def test_encode_type_errors(codec: ModuleType) -> None:
    c = codec
    cases = [
        (c.Gossip("s", "k", True, 1), "Gossip.value must be int, bytes or None, not bool"),
        (c.Gossip("s", "k", 1.5, 1), "Gossip.value must be int, bytes or None, not float"),
        (c.Gossip("s", "k", "text", 1), "Gossip.value must be int, bytes or None, not str"),
        (
            c.Gossip("s", "k", bytearray(b"x"), 1),
            "Gossip.value must be int, bytes or None, not bytearray",
        ),
        (c.Gossip("s", "k", 1, True), "Gossip.version must be int, not bool"),
        (c.Gossip("s", "k", 1, 1.0), "Gossip.version must be int, not float"),
        (c.Gossip("s", "k", 1, "1"), "Gossip.version must be int, not str"),
        (c.Ping("s", None), "Ping.seq must be int, not NoneType"),
        (c.Pong("s", 2.0), "Pong.seq must be int, not float"),
        (c.Replicate("l", 1, 2, False), "Replicate.checksum must be int, not bool"),
        (c.ReplicateAck("f", "1", True), "ReplicateAck.index must be int, not str"),
        (
            c.GossipBatch("s", [c.Entry("k", 1, 1), "nope"]),
            "GossipBatch.entries[1] must be Entry, not str",
        ),
        (
            c.GossipBatch("s", [c.Entry("k", 1, 1, "o", 2.5)]),
            "GossipBatch.entries[0].stamp must be int, not float",
        ),
        (
            c.GossipBatch("s", [c.Entry("k", [1], 1)]),
            "GossipBatch.entries[0].value must be int, bytes or None, not list",
        ),
        (c.Digest("s", [("o", "1")]), "Digest.watermarks[0].stamp must be int, not str"),
        (c.Digest("s", [(1, 1)]), "Digest.watermarks[0].origin must be str, not int"),
    ]
    for msg, text in cases:
        assert encode_error(codec.encode, msg) == (TypeError, text)
        assert encode_error(codec.encode_many, [c.Ping("a", 1), msg]) == (TypeError, text)
    for bad in [None, 5, b"frame", (1, 2), c.Entry("k", 1, 1)]:
        assert encode_error(codec.encode, bad) == (
            TypeError,
            f"cannot encode {type(bad).__name__}: not a fastgossip message",
        )


def test_encode_value_errors(codec: ModuleType) -> None:
    c = codec
    big = 1 << 200
    cases = [
        (c.Gossip("s", "k", -1, 1), "Gossip.value must be in range [0, 2**64), got -1"),
        (c.Gossip("s", "k", 2**64, 1), f"Gossip.value must be in range [0, 2**64), got {2**64}"),
        (
            c.Gossip("s", "k", 1, -(2**70)),
            f"Gossip.version must be in range [0, 2**64), got {-(2**70)}",
        ),  # fmt: skip
        (c.Ping("s", big), "Ping.seq must be in range [0, 2**64), got an int of 201 bits"),
        (c.Replicate("l", 1, 2**64, 3), f"Replicate.term must be in range [0, 2**64), got {2**64}"),
        (
            c.GossipBatch("s", [c.Entry("k", 1, 1), c.Entry("k", 1, 1, "", -5)]),
            "GossipBatch.entries[1].stamp must be in range [0, 2**64), got -5",
        ),
        (
            c.Gossip("s" * 65536, "k", 1, 1),
            "Gossip.sender_id is 65536 bytes in UTF-8, more than the 65535 a str field holds",
        ),
        (
            c.Gossip("s", "é" * 32768, 1, 1),
            "Gossip.key is 65536 bytes in UTF-8, more than the 65535 a str field holds",
        ),
        (
            c.GossipBatch("s", [c.Entry("k", 1, 1, "o" * 70000)]),
            "GossipBatch.entries[0].origin is 70000 bytes in UTF-8, more than the 65535 a str "
            "field holds",
        ),
        (c.Digest("s", [("o", 1, 2)]), "Digest.watermarks[0] must be an (origin, stamp) pair"),
    ]
    for msg, text in cases:
        assert encode_error(codec.encode, msg) == (ValueError, text)


def test_encode_lone_surrogate(codec: ModuleType) -> None:
    for msg, where in [
        (codec.Gossip("s", "a\ud800b", 1, 1), "Gossip.key"),
        (codec.Ping("\udfff", 1), "Ping.sender_id"),
        (
            codec.GossipBatch("s", [codec.Entry("k", 1, 1, "\ud800")]),
            "GossipBatch.entries[0].origin",
        ),
    ]:
        kind, text = encode_error(codec.encode, msg)
        assert kind is ValueError
        assert text.startswith(f"{where} cannot be encoded as UTF-8: 'utf-8' codec can't encode")
        assert "surrogates not allowed" in text


def test_encode_errors_identical_across_implementations() -> None:
    cm, pm = load("codec", "cython"), load("codec", "python")

    def build(c):
        return [
            c.Gossip("s", "k", -1, 1),
            c.Gossip("s", "\ud800", 1, 1),
            c.GossipBatch("s", [c.Entry("k", 1, 1, "o"), c.Entry("k", b"", 1, "o", 2**64)]),
            c.Digest("s", [("o", 1.0)]),
            c.Ping("s", 1 << 300),
        ]

    for a, b in zip(build(cm), build(pm)):
        assert encode_error(cm.encode, a) == encode_error(pm.encode, b)


def test_too_many_origins(codec: ModuleType) -> None:
    e = codec.Entry
    ok = codec.GossipBatch("s", [e("k", 1, 1, f"o{i}") for i in range(65535)])
    back = codec.decode(codec.encode(ok), max_frame_size=1 << 24)
    assert back.entries[-1].origin == "o65534"
    too_many = codec.GossipBatch("s", list(ok.entries) + [e("k", 1, 1, "one more")])
    assert encode_error(codec.encode, too_many) == (
        ValueError,
        "GossipBatch has more than 65535 distinct origins",
    )


def test_int_subclasses_encode_by_value(codec: ModuleType) -> None:
    import enum

    class Seq(enum.IntEnum):
        FIRST = 7
        NEGATIVE = -1

    assert codec.encode(codec.Ping("n1", Seq.FIRST)) == codec.encode(codec.Ping("n1", 7))
    assert encode_error(codec.encode, codec.Ping("n1", Seq.NEGATIVE)) == (
        ValueError,
        "Ping.seq must be in range [0, 2**64), got -1",
    )


def test_fields_return_what_was_given(codec: ModuleType) -> None:
    """The compiled Entry and Gossip hold exact ints unboxed (see _codec_c.pxd);
    reading a field must still give what was passed, whatever it was: an int
    of every size, an int subclass (kept as is), or a value the encoder will
    refuse."""

    class Count(int):
        pass

    sub = Count(5)
    fields = [0, 1, 2**30, 2**60, 2**63, 2**64 - 1, 2**64, -1, sub, True, None, "7", b"", b"xy"]
    for v in fields:
        e = codec.Entry("k", v, v, "o", v)
        g = codec.Gossip("s", "k", v, v)
        for got in (e.value, e.version, e.stamp, g.value, g.version):
            assert got == v and type(got) is type(v)
        assert e.astuple() == ("k", v, v, "o", v)
        assert codec.Entry("k", v, v).stamp == v  # stamp defaults to version
    assert codec.Entry("k", sub, sub).value is sub
    # equal messages built from equal values are equal and hash alike
    assert codec.Entry("k", 2**64 - 1, 3) == codec.Entry("k", (1 << 64) - 1, Count(3), "", 3)
    assert hash(codec.Gossip("s", "k", 9, 2**62)) == hash(codec.Gossip("s", "k", 9, 1 << 62))
    # what decoding gives reads the same as what was encoded
    big = codec.GossipBatch("s", [codec.Entry("k", 2**64 - 1, 2**64 - 2, "o", 2**63)])
    (entry,) = codec.decode(codec.encode(big)).entries
    assert (entry.value, entry.version, entry.stamp) == (2**64 - 1, 2**64 - 2, 2**63)
    assert pickle.loads(pickle.dumps(entry)) == entry


def test_constructor_arguments(codec: ModuleType) -> None:
    """Text fields take str only (a subclass becomes a plain str), never None;
    a made message cannot be initialised again."""

    class Name(str):
        pass

    e = codec.Entry(Name("k"), 1, 1, Name("o"))
    assert type(e.key) is str and type(e.origin) is str and e == codec.Entry("k", 1, 1, "o")
    assert type(codec.Gossip(Name("s"), "k", 1, 1).sender_id) is str
    makers = {
        "key": lambda: codec.Entry(None, 1, 1),
        "origin": lambda: codec.Gossip("s", "k", 1, 1, None),
        "sender_id": lambda: codec.Ping(None, 1),
        "leader_id": lambda: codec.Replicate(b"l", 1, 1, 1),
        "follower_id": lambda: codec.ReplicateAck(7, 1, True),
    }
    for field, make in makers.items():
        with pytest.raises(TypeError, match=f"Argument '{field}' has incorrect type"):
            make()
    with pytest.raises(TypeError, match="expected bytes, got NoneType"):
        codec.Replicate("l", 1, 1, 1, None)
    for msg in sample_messages(codec):
        with pytest.raises(TypeError, match="is immutable"):
            msg.__init__(*msg.astuple())
    assert e == codec.Entry("k", 1, 1, "o")


# ---------------------------------------------------------------------------
# FrameDecoder


def test_decoder_any_chunking(codec: ModuleType) -> None:
    msgs = sample_messages(codec)[:4] + sample_messages(codec)[5:]
    stream = codec.encode_many(msgs)
    for size in [1, 2, 3, 5, 7, 64, 4096, len(stream)]:
        dec = codec.FrameDecoder()
        got = []
        for i in range(0, len(stream), size):
            got.extend(dec.feed(stream[i : i + size]))
        assert got == msgs, size
        assert dec.buffered == 0


def test_decoder_buffered_and_feed_types(codec: ModuleType) -> None:
    frame = codec.encode(codec.Ping("node", 3))
    dec = codec.FrameDecoder()
    assert dec.feed(b"") == []
    assert dec.feed(bytearray(frame[:2])) == [] and dec.buffered == 2
    assert dec.feed(memoryview(frame)[2:9]) == [] and dec.buffered == 9
    assert dec.feed(frame[9:] + frame[:1]) == [codec.Ping("node", 3)]
    assert dec.buffered == 1
    assert dec.feed(frame[1:]) == [codec.Ping("node", 3)]
    assert dec.buffered == 0
    assert encode_error(dec.feed, "str") == (
        TypeError,
        "feed() needs a bytes-like object, not str",
    )
    assert dec.feed(frame) == [codec.Ping("node", 3)]  # a TypeError does not fail it


def test_feed_frames(codec: ModuleType) -> None:
    msgs = [
        codec.Ping("a", 1),
        codec.GossipBatch("b", [codec.Entry("k", 1, 1)]),
        codec.Pong("c", 2),
    ]
    frames = [codec.encode(m) for m in msgs]
    stream = b"".join(frames)
    for size in [1, 3, 10, len(stream)]:
        dec = codec.FrameDecoder()
        got = []
        for i in range(0, len(stream), size):
            got.extend(dec.feed_frames(stream[i : i + size]))
        assert got == frames
        assert all(type(f) is bytes for f in got)
    # only the prefix is checked: a bad version still comes out as a frame
    odd = with_prefix(b"\x09\x09xyz")
    assert codec.FrameDecoder().feed_frames(odd) == [odd]
    assert encode_error(codec.FrameDecoder().feed_frames, 1) == (
        TypeError,
        "feed_frames() needs a bytes-like object, not int",
    )


def test_decoder_can_be_subclassed(codec: ModuleType) -> None:
    class Protocol(codec.FrameDecoder, asyncio.Protocol):
        def __init__(self) -> None:
            super().__init__(max_frame_size=1000)
            self.received: list = []

        def data_received(self, data: bytes) -> None:
            self.received.extend(self.feed(data))

    proto = Protocol()
    proto.data_received(codec.encode(codec.Ping("a", 1)))
    assert proto.received == [codec.Ping("a", 1)]
    assert proto.max_frame_size == 1000


def test_decoder_oversized_prefix_fails_at_once(codec: ModuleType) -> None:
    for feed in ["feed", "feed_frames"]:
        dec = codec.FrameDecoder()
        getattr(dec, feed)(b"\xff\xff")
        assert dec.buffered == 2
        tracemalloc.start()
        try:
            err = frame_error(getattr(dec, feed), b"\xff\xff" + b"\x00" * 100)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert err == ("frame of 4294967299 bytes exceeds max_frame_size 1048576 at offset 0", 0)
        assert peak < 64 * 1024
        assert dec.buffered == 0


def test_decoder_small_limit(codec: ModuleType) -> None:
    dec = codec.FrameDecoder(max_frame_size=17)
    ok = codec.encode(codec.Ping("n", 1))  # 17 bytes, prefix included
    assert dec.feed(ok) == [codec.Ping("n", 1)]
    big = codec.encode(codec.Ping("n" * 2, 1))  # 18 bytes
    assert frame_error(dec.feed, big[:4]) == (
        "frame of 18 bytes exceeds max_frame_size 17 at offset 0",
        0,
    )


def test_decoder_stays_failed(codec: ModuleType) -> None:
    dec = codec.FrameDecoder()
    good = codec.encode(codec.Ping("n", 1))
    bad = with_prefix(b"\x02\x02")
    with pytest.raises(FrameError) as first:
        dec.feed(good + bad + good)
    assert str(first.value) == "unknown protocol version 2 at offset 4"
    for _ in range(2):
        with pytest.raises(FrameError) as later:
            dec.feed(good)
        assert str(later.value) == "decoder failed earlier: unknown protocol version 2 at offset 4"
        assert later.value.offset == 4
        with pytest.raises(FrameError, match="decoder failed earlier"):
            dec.feed_frames(b"")
    assert dec.buffered == 0


def test_decoder_memory_stays_bounded(codec: ModuleType) -> None:
    limit = 64 * 1024
    dec = codec.FrameDecoder(max_frame_size=limit)
    frame = codec.encode(codec.Replicate("l", 1, 1, 1, b"x" * (limit - 100)))
    chunk = 4096
    tracemalloc.start()
    try:
        for _ in range(3):
            for i in range(0, len(frame), chunk):
                dec.feed(frame[i : i + chunk])
                assert dec.buffered <= limit
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # one frame held, one decoded payload, a chunk, and slack
    assert peak < 3 * limit + 64 * 1024
    assert dec.buffered == 0


# ---------------------------------------------------------------------------
# streams.py


async def _start_echo(codec: ModuleType, received: list, max_frame_size: int = 1 << 20):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                msg = await streams.read_message(reader, max_frame_size, codec=codec)
                received.append(msg)
                if isinstance(msg, codec.Ping):
                    await streams.write_message(writer, codec.Pong("server", msg.seq), codec=codec)
        except asyncio.IncompleteReadError:
            pass
        except FrameError as exc:
            received.append(exc)
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_streams_round_trip(codec: ModuleType) -> None:
    received: list = []
    server = await _start_echo(codec, received)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        batch = codec.GossipBatch("client", [codec.Entry(f"k{i}", i, i) for i in range(100)])
        await streams.write_message(writer, batch, codec=codec)
        for seq in range(5):
            await streams.write_message(writer, codec.Ping("client", seq), codec=codec)
            pong = await streams.read_message(reader, codec=codec)
            assert pong == codec.Pong("server", seq)
        assert received[0] == batch
        assert received[1:] == [codec.Ping("client", s) for s in range(5)]
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()


async def test_streams_oversized_prefix(codec: ModuleType) -> None:
    received: list = []
    server = await _start_echo(codec, received, max_frame_size=1000)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"\xff\xff\xff\xff")  # claims 4 GiB; never followed by a body
        await writer.drain()
        assert await reader.read() == b""  # the server gave up and closed
        (err,) = received
        assert isinstance(err, FrameError)
        assert str(err) == "frame of 4294967299 bytes exceeds max_frame_size 1000 at offset 0"
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()


async def test_streams_eof(codec: ModuleType) -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(codec.encode(codec.Ping("a", 1)))
    reader.feed_eof()
    assert await streams.read_message(reader, codec=codec) == codec.Ping("a", 1)
    with pytest.raises(asyncio.IncompleteReadError) as clean:
        await streams.read_message(reader, codec=codec)
    assert clean.value.partial == b""
    # EOF inside a frame is a truncated frame
    reader = asyncio.StreamReader()
    reader.feed_data(codec.encode(codec.Ping("a", 1))[:9])
    reader.feed_eof()
    with pytest.raises(FrameError) as cut:
        await streams.read_message(reader, codec=codec)
    assert str(cut.value) == "connection closed after 9 of 17 bytes of a frame at offset 9"
    assert cut.value.offset == 9


async def test_streams_bad_frame_and_default_codec() -> None:
    from fastgossip import _codec

    reader = asyncio.StreamReader()
    reader.feed_data(with_prefix(b"\x07\x02"))
    with pytest.raises(FrameError, match="unknown protocol version 7 at offset 4"):
        await streams.read_message(reader)
    reader = asyncio.StreamReader()
    reader.feed_data(_codec.encode(_codec.Ping("x", 2)))
    assert await streams.read_message(reader) == _codec.Ping("x", 2)


# ---------------------------------------------------------------------------
# digest_frames: a digest too large for one frame, in parts


def test_digest_frames_one_frame_when_it_fits(codec: ModuleType) -> None:
    wms = {f"n{i}#abc": i for i in range(50)}
    (frame,) = codec.digest_frames("me", wms, True, 1 << 20)
    assert frame == codec.encode(codec.Digest("me", wms, reply=True))
    (frame,) = codec.digest_frames("me", {}, False, 13 + 2)
    assert codec.decode(frame) == codec.Digest("me")


def test_digest_frames_split(codec: ModuleType) -> None:
    wms = {f"origin-{i}": i for i in range(100)}
    whole = len(codec.encode(codec.Digest("me", wms)))
    frames = codec.digest_frames("me", wms, True, 300)
    assert whole > 300 and len(frames) > 1
    parts = [codec.FrameDecoder(300).feed(f)[0] for f in frames]
    assert all(len(f) <= 300 for f in frames)
    assert [p.more for p in parts] == [True] * (len(parts) - 1) + [False]
    assert all(p.reply and p.sender_id == "me" for p in parts)
    assert [w for p in parts for w in p.watermarks] == list(wms.items())
    # greedy: each part but the last could not take the next watermark
    for p, nxt in zip(parts, parts[1:]):
        assert len(codec.encode(p)) + 10 + len(nxt.watermarks[0][0]) > 300


def test_digest_frames_errors(codec: ModuleType) -> None:
    with pytest.raises(ValueError, match="the watermark of origin 'x{40}' needs a 65-byte"):
        codec.digest_frames("me", {"a": 1, "x" * 40: 2}, False, 64)
    with pytest.raises(ValueError, match="a Digest from 'm{60}' needs a 73-byte frame"):
        codec.digest_frames("m" * 60, {}, False, 64)
    with pytest.raises(TypeError, match="Digest.watermarks.0..stamp must be int, not str"):
        codec.digest_frames("me", {"a": "1"}, False, 64)
    with pytest.raises(ValueError, match=r"max_frame_size must be in \[2, 4294967295\], got 1"):
        codec.digest_frames("me", {}, False, 1)


def test_digest_frames_twins_agree() -> None:
    wms = {"é" * i: i for i in range(1, 60)}
    c, py = load("codec", "cython"), load("codec", "python")
    for limit in (200, 333, 1000, 1 << 20):
        assert c.digest_frames("s", wms, False, limit) == py.digest_frames("s", wms, False, limit)


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(st.text(max_size=30), st.integers(0, (1 << 64) - 1), max_size=40),
    st.booleans(),
    st.integers(19 + 10 + 4 * 30, 2000),  # room for the sender and the longest origin
)
def test_digest_frames_round_trip(wms: dict, reply: bool, limit: int) -> None:
    """Splitting a digest, then merging its parts' watermarks, gives it back."""
    for codec in (load("codec", "cython"), load("codec", "python")):
        frames = codec.digest_frames("sender", wms, reply, limit)
        parts = [codec.decode(f, limit) for f in frames]
        assert all(len(f) <= limit for f in frames)
        assert [p.more for p in parts] == [True] * (len(parts) - 1) + [False]
        assert all(p.reply == reply for p in parts)
        merged: dict = {}
        for p in parts:
            merged.update(p.watermarks)
        assert merged == wms
        assert all(p.watermarks for p in parts) or len(parts) == 1
