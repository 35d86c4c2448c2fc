"""Pure-Python frame codec: the twin of _codec_c.pyx (docs/PROTOCOL.md).

Same names, same results, same exceptions with the same messages and offsets:
tests/test_codec_fuzz.py compares the two on random and mutated frames. The
checks below run in exactly the order of the compiled readers in _wire.pxd.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Iterable, List, Optional, Tuple, Union

from ._messages_py import (
    Digest,
    Entry,
    Gossip,
    GossipBatch,
    Message,
    Ping,
    Pong,
    Replicate,
    ReplicateAck,
)
from .errors import FrameError

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "PROTOCOL_VERSION",
    "T_DIGEST",
    "T_GOSSIP",
    "T_GOSSIP_BATCH",
    "T_PING",
    "T_PONG",
    "T_REPLICATE",
    "T_REPLICATE_ACK",
    "Digest",
    "Entry",
    "FrameDecoder",
    "Gossip",
    "GossipBatch",
    "Message",
    "Ping",
    "Pong",
    "Replicate",
    "ReplicateAck",
    "decode",
    "digest_frames",
    "encode",
    "encode_many",
    "frame_type",
]

from ._wire import (
    DEFAULT_MAX_FRAME_SIZE,
    PROTOCOL_VERSION,
    T_DIGEST,
    T_GOSSIP,
    T_GOSSIP_BATCH,
    T_PING,
    T_PONG,
    T_REPLICATE,
    T_REPLICATE_ACK,
)
from ._wire import DIGEST_DELTA as _DIGEST_DELTA
from ._wire import DIGEST_MORE as _DIGEST_MORE
from ._wire import DIGEST_REPLY as _DIGEST_REPLY
from ._wire import HEADER_SIZE as _HEADER_SIZE
from ._wire import MAX_ORIGINS as _MAX_ORIGINS
from ._wire import MAX_STR_SIZE as _MAX_STR_SIZE
from ._wire import MIN_ENTRY_SIZE as _MIN_ENTRY_SIZE
from ._wire import MIN_FRAME_LENGTH as _MIN_FRAME_LENGTH
from ._wire import MIN_ORIGIN_SIZE as _MIN_ORIGIN_SIZE
from ._wire import MIN_WATERMARK_SIZE as _MIN_WATERMARK_SIZE
from ._wire import PREFIX_SIZE as _PREFIX_SIZE
from ._wire import V_BYTES as _V_BYTES
from ._wire import V_EXPIRES as _V_EXPIRES
from ._wire import V_INT as _V_INT
from ._wire import V_TOMBSTONE as _V_TOMBSTONE

_U32_MAX = 0xFFFFFFFF
_U64_LIMIT = 1 << 64

_HEADER = struct.Struct(">IBB")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_pack_header = _HEADER.pack
_pack_u16 = _U16.pack
_pack_u32 = _U32.pack
_pack_u64 = _U64.pack
_unpack_u32 = _U32.unpack_from
_unpack_u64 = _U64.unpack_from
_pack_value_int = struct.Struct(">BQ").pack
_pack_value_bytes_head = struct.Struct(">BI").pack
_TOMBSTONE_FIELD = bytes([_V_TOMBSTONE])
_pack_entry_fixed = struct.Struct(">HQQ").pack

Value = Union[int, bytes, None]
AnyMessage = Union[Gossip, Ping, Pong, Replicate, ReplicateAck, GossipBatch, Digest]

# ---------------------------------------------------------------------------
# Encode-time validation. "where" names the field: "Gossip.key",
# "GossipBatch.entries[3].origin".


def _where(cls: str, field: str, index: int = -1, sub: Optional[str] = None) -> str:
    w = f"{cls}.{field}"
    if index >= 0:
        w = f"{w}[{index}]"
    if sub is not None:
        w = f"{w}.{sub}"
    return w


def _type_error(
    v: object, expected: str, cls: str, field: str, index: int = -1, sub: Optional[str] = None
) -> TypeError:
    return TypeError(f"{_where(cls, field, index, sub)} must be {expected}, not {type(v).__name__}")


def _range_error(
    v: int, cls: str, field: str, index: int = -1, sub: Optional[str] = None
) -> ValueError:
    bits = int.bit_length(v)
    text = int.__repr__(v) if bits <= 128 else f"an int of {bits} bits"
    return ValueError(f"{_where(cls, field, index, sub)} must be in range [0, 2**64), got {text}")


def _utf8(s: object, cls: str, field: str, index: int = -1, sub: Optional[str] = None) -> bytes:
    """The UTF-8 bytes of a str field, validated."""
    if not isinstance(s, str):
        raise _type_error(s, "str", cls, field, index, sub)
    try:
        b = str.encode(s, "utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{_where(cls, field, index, sub)} cannot be encoded as UTF-8: {exc}"
        ) from None
    if len(b) > _MAX_STR_SIZE:
        raise ValueError(
            f"{_where(cls, field, index, sub)} is {len(b)} bytes in UTF-8, more "
            "than the 65535 a str field holds"
        )
    return b


def _u64(v: object, cls: str, field: str, index: int = -1, sub: Optional[str] = None) -> int:
    """An int field in [0, 2**64) (bool refused)."""
    if type(v) is not int:
        if type(v) is bool or not isinstance(v, int):
            raise _type_error(v, "int", cls, field, index, sub)
        v = int.__index__(v)
    if 0 <= v < _U64_LIMIT:  # type: ignore[operator]
        return v  # type: ignore[return-value]
    raise _range_error(v, cls, field, index, sub)  # type: ignore[arg-type]


def _value(v: object, cls: str, field: str, index: int = -1, sub: Optional[str] = None) -> bytes:
    """The encoded value field: tag + u64, tag + bytes32, or the tag alone
    for None (a tombstone)."""
    if isinstance(v, int) and type(v) is not bool:
        return _pack_value_int(_V_INT, _u64(v, cls, field, index, sub))
    if isinstance(v, bytes):
        # (a length above u32 is refused later, as the frame's own length)
        return _pack_value_bytes_head(_V_BYTES, len(v) & _U32_MAX) + v
    if v is None:
        return _TOMBSTONE_FIELD
    raise _type_error(v, "int, bytes or None", cls, field, index, sub)


def _str16(b: bytes) -> bytes:
    return _pack_u16(len(b)) + b


def _frame(mtype: int, cls: str, parts: List[bytes]) -> bytes:
    payload = b"".join(parts)
    length = len(payload) + 2
    if length > _U32_MAX:
        raise ValueError(
            f"{cls} frame would be {length + _PREFIX_SIZE} bytes; a u32 length "
            f"prefix allows at most {_U32_MAX + _PREFIX_SIZE}"
        )
    return _pack_header(length, PROTOCOL_VERSION, mtype) + payload


def _ascii16(s: object) -> Optional[bytes]:
    """Fast path of _utf8: the bytes of a short ASCII str, else None."""
    if type(s) is str and s.isascii() and len(s) <= _MAX_STR_SIZE:
        return s.encode()
    return None


def _e_gossip(m: Gossip) -> bytes:
    sender = _ascii16(m.sender_id) or _utf8(m.sender_id, "Gossip", "sender_id")
    key = _ascii16(m.key) or _utf8(m.key, "Gossip", "key")
    v = m.value
    if type(v) is int and 0 <= v < _U64_LIMIT:
        value = _pack_value_int(_V_INT, v)
    else:
        value = _value(v, "Gossip", "value")
    version = m.version
    if type(version) is not int or not 0 <= version < _U64_LIMIT:
        version = _u64(version, "Gossip", "version")
    origin = _ascii16(m.origin) or _utf8(m.origin, "Gossip", "origin")
    return _frame(
        T_GOSSIP,
        "Gossip",
        [
            _pack_u16(len(sender)),
            sender,
            _pack_u16(len(key)),
            key,
            value,
            _pack_u64(version),
            _pack_u16(len(origin)),
            origin,
        ],
    )


def _e_ping(m: Union[Ping, Pong], mtype: int, cls: str) -> bytes:
    sender = _ascii16(m.sender_id) or _utf8(m.sender_id, cls, "sender_id")
    seq = m.seq
    if type(seq) is not int or not 0 <= seq < _U64_LIMIT:
        seq = _u64(seq, cls, "seq")
    return _frame(mtype, cls, [_pack_u16(len(sender)), sender, _pack_u64(seq)])


def _e_replicate(m: Replicate) -> bytes:
    leader = _utf8(m.leader_id, "Replicate", "leader_id")
    index = _u64(m.index, "Replicate", "index")
    term = _u64(m.term, "Replicate", "term")
    checksum = _u64(m.checksum, "Replicate", "checksum")
    payload = m.payload
    if not isinstance(payload, bytes):
        raise _type_error(payload, "bytes", "Replicate", "payload")
    return _frame(
        T_REPLICATE,
        "Replicate",
        [
            _str16(leader),
            _pack_u64(index),
            _pack_u64(term),
            _pack_u64(checksum),
            _pack_u32(len(payload) & _U32_MAX),
            payload,
        ],
    )


def _e_ack(m: ReplicateAck) -> bytes:
    follower = _utf8(m.follower_id, "ReplicateAck", "follower_id")
    index = _u64(m.index, "ReplicateAck", "index")
    return _frame(
        T_REPLICATE_ACK,
        "ReplicateAck",
        [
            _str16(follower),
            _pack_u64(index),
            b"\x01" if m.success else b"\x00",
        ],
    )


_NO_ORIGIN = object()


def _e_batch(m: GossipBatch) -> bytes:
    sender = _utf8(m.sender_id, "GossipBatch", "sender_id")
    index_of: dict = {}  # origin UTF-8 -> index in the origin table
    table: List[bytes] = []
    parts: List[bytes] = []
    append = parts.append
    last: Any = _NO_ORIGIN
    last_idx = 0
    for i, e in enumerate(m.entries):
        if not isinstance(e, Entry):
            raise TypeError(f"GossipBatch.entries[{i}] must be Entry, not {type(e).__name__}")
        key = _ascii16(e.key) or _utf8(e.key, "GossipBatch", "entries", i, "key")
        origin = e.origin
        if origin is last:
            idx = last_idx
        else:
            ob = _ascii16(origin) or _utf8(origin, "GossipBatch", "entries", i, "origin")
            idx = index_of.get(ob, -1)
            if idx < 0:
                if len(table) >= _MAX_ORIGINS:
                    raise ValueError(f"GossipBatch has more than {_MAX_ORIGINS} distinct origins")
                idx = index_of[ob] = len(table)
                table.append(ob)
            last = origin
            last_idx = idx
        version = e.version
        if type(version) is not int or not 0 <= version < _U64_LIMIT:
            version = _u64(version, "GossipBatch", "entries", i, "version")
        stamp = e.stamp
        if stamp is e.version:
            stamp = version
        elif type(stamp) is not int or not 0 <= stamp < _U64_LIMIT:
            stamp = _u64(stamp, "GossipBatch", "entries", i, "stamp")
        v = e.value
        if type(v) is int and 0 <= v < _U64_LIMIT:
            value = _pack_value_int(_V_INT, v)
        else:
            value = _value(v, "GossipBatch", "entries", i, "value")
        if e.expires:
            if v is None:
                raise ValueError(f"GossipBatch.entries[{i}]: a tombstone cannot expire")
            value = bytes((value[0] | _V_EXPIRES,)) + _U64.pack(e.expires) + value[1:]
        append(_pack_u16(len(key)))
        append(key)
        append(_pack_entry_fixed(idx, version, stamp))
        append(value)
    head = [_str16(sender), _pack_u16(len(table))]
    head.extend(_str16(o) for o in table)
    head.append(_pack_u32(len(m.entries)))
    return _frame(T_GOSSIP_BATCH, "GossipBatch", head + parts)


def _e_digest(m: Digest) -> bytes:
    sender = _utf8(m.sender_id, "Digest", "sender_id")
    flags = (
        (_DIGEST_REPLY if m.reply else 0)
        | (_DIGEST_MORE if m.more else 0)
        | (_DIGEST_DELTA if m.delta else 0)
    )
    parts = [_str16(sender), bytes((flags,)), _pack_u32(len(m.watermarks))]
    for i, w in enumerate(m.watermarks):
        if type(w) is not tuple or len(w) != 2:
            raise ValueError(f"Digest.watermarks[{i}] must be an (origin, stamp) pair")
        parts.append(_str16(_utf8(w[0], "Digest", "watermarks", i, "origin")))
        parts.append(_pack_u64(_u64(w[1], "Digest", "watermarks", i, "stamp")))
    return _frame(T_DIGEST, "Digest", parts)


_ENCODERS: dict = {
    Gossip: _e_gossip,
    GossipBatch: _e_batch,
    Digest: _e_digest,
    Ping: lambda m: _e_ping(m, T_PING, "Ping"),
    Pong: lambda m: _e_ping(m, T_PONG, "Pong"),
    Replicate: _e_replicate,
    ReplicateAck: _e_ack,
}


def encode(msg: AnyMessage) -> bytes:
    """Encode one message as a full frame (length prefix included)."""
    enc = _ENCODERS.get(type(msg))
    if enc is None:
        for cls, fn in _ENCODERS.items():
            if isinstance(msg, cls):
                enc = fn
                break
        else:
            raise TypeError(f"cannot encode {type(msg).__name__}: not a fastgossip message")
    return enc(msg)


def encode_many(msgs: Iterable[AnyMessage]) -> bytes:
    """Encode messages as concatenated frames."""
    return b"".join([encode(m) for m in msgs])


# ---------------------------------------------------------------------------
# Decoding. `buf` is bytes; the frame is buf[base:end]; `pos` is absolute and
# error offsets are pos - base. `item` is None or (group, index) while reading
# list items, naming fields "entries[3].key" ("origins[0]" for field "").


def _name(field: str, item: Optional[Tuple[str, int]]) -> str:
    if item is None:
        return field
    return f"{item[0]}[{item[1]}]{'.' if field else ''}{field}"


def _fail(text: str, offset: int) -> FrameError:
    return FrameError(f"{text} at offset {offset}", offset)


def _truncated(
    field: str, need: int, left: int, offset: int, item: Optional[Tuple[str, int]] = None
) -> FrameError:
    return _fail(f"truncated {_name(field, item)}: {left} of {need} bytes present", offset)


def _overrun(
    field: str, length: int, left: int, offset: int, item: Optional[Tuple[str, int]] = None
) -> FrameError:
    return _fail(
        f"{_name(field, item)} length {length} overruns the frame ({left} bytes left)", offset
    )


def _length_error(length: int, max_frame_size: int) -> Optional[FrameError]:
    """The error for a bad length prefix, or None: the check a stream reader
    makes as soon as it has the 4 prefix bytes (used by streams.py too).
    ``max_frame_size`` bounds the whole frame, the 4 prefix bytes included."""
    if length < _MIN_FRAME_LENGTH:
        return _fail(f"frame length {length} is below the minimum of 2", 0)
    if length + _PREFIX_SIZE > max_frame_size:
        return _fail(
            f"frame of {length + _PREFIX_SIZE} bytes exceeds max_frame_size {max_frame_size}", 0
        )
    return None


def _str_at(
    buf: bytes, base: int, pos: int, end: int, field: str, item: Optional[Tuple[str, int]] = None
) -> int:
    """Check a str16 field at pos; return its length (data at pos + 2)."""
    if end - pos < 2:
        raise _truncated(field, 2, end - pos, pos - base, item)
    n = (buf[pos] << 8) | buf[pos + 1]
    if end - pos - 2 < n:
        raise _overrun(field, n, end - pos - 2, pos - base, item)
    return n


def _text(
    buf: bytes, base: int, start: int, n: int, field: str, item: Optional[Tuple[str, int]] = None
) -> str:
    if not n:
        return ""
    try:
        return buf[start : start + n].decode()
    except UnicodeDecodeError as exc:
        offset = start - base + exc.start
        raise _fail(f"invalid UTF-8 in {_name(field, item)}", offset) from None


def _u64_at(
    buf: bytes, base: int, pos: int, end: int, field: str, item: Optional[Tuple[str, int]] = None
) -> int:
    if end - pos < 8:
        raise _truncated(field, 8, end - pos, pos - base, item)
    return _unpack_u64(buf, pos)[0]


def _bool_at(buf: bytes, base: int, pos: int, end: int, field: str) -> bool:
    if end - pos < 1:
        raise _truncated(field, 1, end - pos, pos - base)
    b = buf[pos]
    if b > 1:
        raise _fail(f"invalid bool byte {b} in {field}", pos - base)
    return b == 1


def _value_at(
    buf: bytes, base: int, pos: int, end: int, field: str, item: Optional[Tuple[str, int]] = None
) -> Tuple[Value, int]:
    """Read a value field; return (value, position after it)."""
    if end - pos < 1:
        raise _truncated(field, 1, end - pos, pos - base, item)
    tag = buf[pos]
    pos += 1
    if tag == _V_INT:
        if end - pos < 8:
            raise _truncated(field, 8, end - pos, pos - base, item)
        return _unpack_u64(buf, pos)[0], pos + 8
    if tag == _V_BYTES:
        if end - pos < 4:
            raise _truncated(field, 4, end - pos, pos - base, item)
        n = _unpack_u32(buf, pos)[0]
        if end - pos - 4 < n:
            raise _overrun(field, n, end - pos - 4, pos - base, item)
        return buf[pos + 4 : pos + 4 + n], pos + 4 + n
    if tag == _V_TOMBSTONE:
        return None, pos
    raise _fail(f"unknown value tag {tag} in {_name(field, item)}", pos - 1 - base)


def _count_check(field: str, count: int, min_size: int, left: int, offset: int) -> None:
    if count * min_size > left:
        raise _fail(f"{field} {count} needs at least {count * min_size} bytes, {left} left", offset)


def _end_check(pos: int, end: int, base: int, cls: str) -> None:
    if pos != end:
        raise _fail(f"{end - pos} trailing bytes after the {cls} payload", pos - base)


_new = object.__new__
_Setter = Callable[[Any, Any], None]


def _setters(cls: type, *names: str) -> List[_Setter]:
    """The slot descriptors' setters of ``cls``, to fill a decoded message
    past its constructor's checks."""
    return [vars(cls)[name].__set__ for name in names]


_set_gossip = _setters(Gossip, "sender_id", "key", "value", "version", "origin")


def _new_gossip(sender: str, key: str, value: Value, version: int, origin: str) -> Any:
    """A decoded Gossip, its fields set past the constructor's checks."""
    g = _new(Gossip)
    s = _set_gossip
    s[0](g, sender)
    s[1](g, key)
    s[2](g, value)
    s[3](g, version)
    s[4](g, origin)
    return g


_set_ping_sender, _set_ping_seq = _setters(Ping, "sender_id", "seq")
_set_pong_sender, _set_pong_seq = _setters(Pong, "sender_id", "seq")
_set_entry = _setters(Entry, "key", "value", "version", "origin", "stamp", "expires")
_oset = object.__setattr__


def _sender_at(buf: bytes, base: int, pos: int, end: int, field: str) -> Tuple[str, int, int]:
    """Read the leading str field: (text, its length, position after it)."""
    n = _str_at(buf, base, pos, end, field)
    return _text(buf, base, pos + 2, n, field), n, pos + 2 + n


def _d_gossip(buf: bytes, base: int, pos: int, end: int) -> Gossip:
    sender, sn, pos = _sender_at(buf, base, pos, end, "sender_id")
    sstart = pos - sn
    n = _str_at(buf, base, pos, end, "key")
    key = _text(buf, base, pos + 2, n, "key")
    pos += 2 + n
    value, pos = _value_at(buf, base, pos, end, "value")
    version = _u64_at(buf, base, pos, end, "version")
    pos += 8
    n = _str_at(buf, base, pos, end, "origin")
    if n == sn and buf[pos + 2 : pos + 2 + n] == buf[sstart : sstart + sn]:
        origin = sender
    else:
        origin = _text(buf, base, pos + 2, n, "origin")
    pos += 2 + n
    _end_check(pos, end, base, "Gossip")
    return _new_gossip(sender, key, value, version, origin)


def _d_sender_seq(cls: type, set_sender: Any, set_seq: Any) -> Any:
    """The exact reader for the (sender_id, seq) messages: Ping and Pong."""
    name = cls.__name__

    def read(buf: bytes, base: int, pos: int, end: int) -> Any:
        sender, _, pos = _sender_at(buf, base, pos, end, "sender_id")
        seq = _u64_at(buf, base, pos, end, "seq")
        _end_check(pos + 8, end, base, name)
        m: Any = _new(cls)
        set_sender(m, sender)
        set_seq(m, seq)
        return m

    return read


_d_ping = _d_sender_seq(Ping, _set_ping_sender, _set_ping_seq)
_d_pong = _d_sender_seq(Pong, _set_pong_sender, _set_pong_seq)


def _d_replicate(buf: bytes, base: int, pos: int, end: int) -> Replicate:
    leader, _, pos = _sender_at(buf, base, pos, end, "leader_id")
    index = _u64_at(buf, base, pos, end, "index")
    term = _u64_at(buf, base, pos + 8, end, "term")
    checksum = _u64_at(buf, base, pos + 16, end, "checksum")
    pos += 24
    if end - pos < 4:
        raise _truncated("payload", 4, end - pos, pos - base)
    n = _unpack_u32(buf, pos)[0]
    if end - pos - 4 < n:
        raise _overrun("payload", n, end - pos - 4, pos - base)
    payload = buf[pos + 4 : pos + 4 + n]
    _end_check(pos + 4 + n, end, base, "Replicate")
    m = _new(Replicate)
    for name, v in zip(Replicate._fields, (leader, index, term, checksum, payload)):
        _oset(m, name, v)
    return m


def _d_ack(buf: bytes, base: int, pos: int, end: int) -> ReplicateAck:
    follower, _, pos = _sender_at(buf, base, pos, end, "follower_id")
    index = _u64_at(buf, base, pos, end, "index")
    success = _bool_at(buf, base, pos + 8, end, "success")
    _end_check(pos + 9, end, base, "ReplicateAck")
    m = _new(ReplicateAck)
    for name, v in zip(ReplicateAck._fields, (follower, index, success)):
        _oset(m, name, v)
    return m


def _d_batch(buf: bytes, base: int, pos: int, end: int) -> GossipBatch:
    sender, sn, pos = _sender_at(buf, base, pos, end, "sender_id")
    sbytes = buf[pos - sn : pos]
    at = pos
    if end - pos < 2:
        raise _truncated("n_origins", 2, end - pos, pos - base)
    n_origins = (buf[pos] << 8) | buf[pos + 1]
    pos += 2
    _count_check("n_origins", n_origins, _MIN_ORIGIN_SIZE, end - pos, at - base)
    origins = []
    for i in range(n_origins):
        item = ("origins", i)
        n = _str_at(buf, base, pos, end, "", item)
        if n == sn and buf[pos + 2 : pos + 2 + n] == sbytes:
            origins.append(sender)
        else:
            origins.append(_text(buf, base, pos + 2, n, "", item))
        pos += 2 + n
    at = pos
    if end - pos < 4:
        raise _truncated("n_entries", 4, end - pos, pos - base)
    n_entries = _unpack_u32(buf, pos)[0]
    pos += 4
    _count_check("n_entries", n_entries, _MIN_ENTRY_SIZE, end - pos, at - base)
    entries: List[Any] = []
    append = entries.append
    s_key, s_value, s_version, s_origin, s_stamp, s_expires = _set_entry
    for i in range(n_entries):
        # structure first (as rd_entry does), then the key's UTF-8
        if end - pos < 2:
            raise _truncated("key", 2, end - pos, pos - base, ("entries", i))
        n = (buf[pos] << 8) | buf[pos + 1]
        if end - pos - 2 < n:
            raise _overrun("key", n, end - pos - 2, pos - base, ("entries", i))
        kstart = pos + 2
        pos = kstart + n
        if end - pos < 2:
            raise _truncated("origin_index", 2, end - pos, pos - base, ("entries", i))
        oi = (buf[pos] << 8) | buf[pos + 1]
        if oi >= n_origins:
            raise _fail(
                f"entries[{i}].origin_index {oi} out of range ({n_origins} origins)", pos - base
            )
        pos += 2
        if end - pos < 8:
            raise _truncated("version", 8, end - pos, pos - base, ("entries", i))
        version = _unpack_u64(buf, pos)[0]
        pos += 8
        if end - pos < 8:
            raise _truncated("stamp", 8, end - pos, pos - base, ("entries", i))
        stamp = _unpack_u64(buf, pos)[0]
        pos += 8
        expires = 0
        if pos < end and buf[pos] in (_V_INT | _V_EXPIRES, _V_BYTES | _V_EXPIRES):
            value, expires, pos = _expiring_at(buf, base, pos, end, ("entries", i))
        else:
            value, pos = _value_at(buf, base, pos, end, "value", ("entries", i))
        key = _text(buf, base, kstart, n, "key", ("entries", i))
        e = _new(Entry)
        s_key(e, key)
        s_expires(e, expires)
        s_value(e, value)
        s_version(e, version)
        s_origin(e, origins[oi])
        s_stamp(e, version if stamp == version else stamp)
        append(e)
    _end_check(pos, end, base, "GossipBatch")
    m = _new(GossipBatch)
    _oset(m, "sender_id", sender)
    _oset(m, "entries", tuple(entries))
    return m


def _d_digest(buf: bytes, base: int, pos: int, end: int) -> Digest:
    sender, _, pos = _sender_at(buf, base, pos, end, "sender_id")
    if end - pos < 1:
        raise _truncated("flags", 1, end - pos, pos - base)
    flags = buf[pos]
    if flags & ~(_DIGEST_REPLY | _DIGEST_MORE | _DIGEST_DELTA):
        raise _fail(f"unknown digest flags {flags}", pos - base)
    pos += 1
    at = pos
    if end - pos < 4:
        raise _truncated("n_watermarks", 4, end - pos, pos - base)
    count = _unpack_u32(buf, pos)[0]
    pos += 4
    _count_check("n_watermarks", count, _MIN_WATERMARK_SIZE, end - pos, at - base)
    wms = []
    for i in range(count):
        item = ("watermarks", i)
        n = _str_at(buf, base, pos, end, "origin", item)
        origin = _text(buf, base, pos + 2, n, "origin", item)
        pos += 2 + n
        stamp = _u64_at(buf, base, pos, end, "stamp", item)
        pos += 8
        wms.append((origin, stamp))
    _end_check(pos, end, base, "Digest")
    m = _new(Digest)
    _oset(m, "sender_id", sender)
    _oset(m, "watermarks", tuple(wms))
    _oset(m, "reply", bool(flags & _DIGEST_REPLY))
    _oset(m, "more", bool(flags & _DIGEST_MORE))
    _oset(m, "delta", bool(flags & _DIGEST_DELTA))
    return m


_DECODERS = (None, _d_gossip, _d_ping, _d_pong, _d_replicate, _d_ack, _d_batch, _d_digest)


def _expiring_at(
    buf: bytes, base: int, pos: int, end: int, item: Tuple[str, int]
) -> Tuple[Value, int, int]:
    """Read an expiring entry value (tag with V_EXPIRES, u64 expiry, payload);
    return (value, expires, position after it)."""
    tag = buf[pos] & ~_V_EXPIRES
    if end - pos < 9:
        raise _truncated("value", 8, end - pos - 1, pos + 1 - base, item)
    expires = _unpack_u64(buf, pos + 1)[0]
    pos += 9
    if tag == _V_INT:
        if end - pos < 8:
            raise _truncated("value", 8, end - pos, pos - base, item)
        return _unpack_u64(buf, pos)[0], expires, pos + 8
    if end - pos < 4:
        raise _truncated("value", 4, end - pos, pos - base, item)
    n = _unpack_u32(buf, pos)[0]
    if end - pos - 4 < n:
        raise _overrun("value", n, end - pos - 4, pos - base, item)
    return buf[pos + 4 : pos + 4 + n], expires, pos + 4 + n


# Optimistic readers for the common types: no bounds checks field by field,
# only at the end (positions only grow, so pos == end proves every read was
# inside the frame). Anything irregular (an exception, a bad tag, pos != end)
# sends the frame to the careful readers above, which produce the exact
# FrameError; they return the same message for any frame these accept.

_unpack_u16 = _U16.unpack_from
_unpack_tag_u64_u64 = struct.Struct(">BQQ").unpack_from
_unpack_entry_fixed = struct.Struct(">HQQB").unpack_from


class _Irregular(Exception):
    pass


def _f_gossip(buf: bytes, pos: int, end: int) -> Gossip:
    n = (buf[pos] << 8) | buf[pos + 1]
    pos += 2
    sbytes = buf[pos : pos + n]
    sender = sbytes.decode()
    pos += n
    n = (buf[pos] << 8) | buf[pos + 1]
    pos += 2
    key = buf[pos : pos + n].decode()
    pos += n
    tag = buf[pos]
    if tag == _V_INT:
        tag, value, version = _unpack_tag_u64_u64(buf, pos)
        pos += 17
    elif tag == _V_BYTES:
        n = _unpack_u32(buf, pos + 1)[0]
        pos += 5
        value = buf[pos : pos + n]
        pos += n
        version = _unpack_u64(buf, pos)[0]
        pos += 8
    else:
        raise _Irregular
    n = (buf[pos] << 8) | buf[pos + 1]
    pos += 2
    obytes = buf[pos : pos + n]
    origin = sender if obytes == sbytes else obytes.decode()
    if pos + n != end:
        raise _Irregular
    return _new_gossip(sender, key, value, version, origin)


def _f_sender_seq(cls: type, set_sender: Any, set_seq: Any) -> Any:
    """A fast reader for the (sender_id, seq) messages: Ping and Pong."""

    def read(buf: bytes, pos: int, end: int) -> Any:
        n = (buf[pos] << 8) | buf[pos + 1]
        pos += 2
        if pos + n + 8 != end:
            raise _Irregular
        m: Any = _new(cls)
        set_sender(m, buf[pos : pos + n].decode())
        set_seq(m, _unpack_u64(buf, pos + n)[0])
        return m

    return read


_f_ping = _f_sender_seq(Ping, _set_ping_sender, _set_ping_seq)
_f_pong = _f_sender_seq(Pong, _set_pong_sender, _set_pong_seq)


def _f_batch(buf: bytes, pos: int, end: int) -> GossipBatch:
    n = (buf[pos] << 8) | buf[pos + 1]
    pos += 2
    sbytes = buf[pos : pos + n]
    sender = sbytes.decode()
    pos += n
    n_origins = (buf[pos] << 8) | buf[pos + 1]
    pos += 2
    if n_origins * _MIN_ORIGIN_SIZE > end - pos:
        raise _Irregular
    origins = []
    for _ in range(n_origins):
        n = (buf[pos] << 8) | buf[pos + 1]
        pos += 2
        ob = buf[pos : pos + n]
        origins.append(sender if ob == sbytes else ob.decode())
        pos += n
    n_entries = _unpack_u32(buf, pos)[0]
    pos += 4
    if n_entries * _MIN_ENTRY_SIZE > end - pos:
        raise _Irregular
    entries: List[Any] = []
    append = entries.append
    s_key, s_value, s_version, s_origin, s_stamp, s_expires = _set_entry
    for _ in range(n_entries):
        klen = (buf[pos] << 8) | buf[pos + 1]
        kstart = pos + 2
        pos = kstart + klen
        oi, version, stamp, tag = _unpack_entry_fixed(buf, pos)
        pos += 19
        if tag == _V_INT:
            value = _unpack_u64(buf, pos)[0]
            pos += 8
        elif tag == _V_BYTES:
            n = _unpack_u32(buf, pos)[0]
            value = buf[pos + 4 : pos + 4 + n]
            pos += 4 + n
        elif tag == _V_TOMBSTONE:
            value = None
        else:
            raise _Irregular
        e = _new(Entry)
        s_key(e, buf[kstart : kstart + klen].decode())
        s_expires(e, 0)
        s_value(e, value)
        s_version(e, version)
        s_origin(e, origins[oi])
        s_stamp(e, version if stamp == version else stamp)
        append(e)
    if pos != end:
        raise _Irregular
    m = _new(GossipBatch)
    _oset(m, "sender_id", sender)
    _oset(m, "entries", tuple(entries))
    return m


_FAST = (None, _f_gossip, _f_ping, _f_pong, None, None, _f_batch, None)


def _decode_body(buf: bytes, base: int, end: int) -> AnyMessage:
    """Decode buf[base:end], a whole frame whose length prefix is known good."""
    version = buf[base + 4]
    if version != PROTOCOL_VERSION:
        raise _fail(f"unknown protocol version {version}", 4)
    mtype = buf[base + 5]
    if not T_GOSSIP <= mtype <= T_DIGEST:
        raise _fail(f"unknown message type {mtype}", 5)
    fast = _FAST[mtype]
    if fast is not None:
        try:
            return fast(buf, base + _HEADER_SIZE, end)
        except Exception:
            pass
    return _DECODERS[mtype](buf, base, base + _HEADER_SIZE, end)  # type: ignore[misc]


def _decode_at(buf: bytes, base: int, end: int, max_frame_size: int) -> AnyMessage:
    """Decode the frame buf[base:end]."""
    n = end - base
    if n < _PREFIX_SIZE:
        raise _truncated("length prefix", _PREFIX_SIZE, n, 0)
    length = _unpack_u32(buf, base)[0]
    if length < _MIN_FRAME_LENGTH or length + _PREFIX_SIZE > max_frame_size:
        raise _length_error(length, max_frame_size)  # type: ignore[misc]
    if length != n - _PREFIX_SIZE:
        raise _fail(
            f"length prefix says {length} bytes follow but the frame holds {n - _PREFIX_SIZE}", 0
        )
    return _decode_body(buf, base, end)


def _as_bytes(data: Any, what: str) -> bytes:
    if type(data) is bytes:
        return data
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(f"{what}() needs a bytes-like object, not {type(data).__name__}") from None
    with view:
        return view.tobytes()


def _check_max(max_frame_size: object) -> int:
    if type(max_frame_size) is bool or not isinstance(max_frame_size, int):
        raise TypeError(f"max_frame_size must be int, not {type(max_frame_size).__name__}")
    if not _MIN_FRAME_LENGTH <= max_frame_size <= _U32_MAX:
        raise ValueError(
            f"max_frame_size must be in [2, 4294967295], got {int.__int__(max_frame_size)}"
        )
    return int.__index__(max_frame_size)


def decode(frame: Any, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> AnyMessage:
    """Decode exactly one full frame (length prefix included) from any buffer.

    Raises FrameError (a ValueError) for anything malformed.
    """
    if max_frame_size is not DEFAULT_MAX_FRAME_SIZE:
        max_frame_size = _check_max(max_frame_size)
    buf = frame if type(frame) is bytes else _as_bytes(frame, "decode")
    return _decode_at(buf, 0, len(buf), max_frame_size)


def digest_frames(
    sender_id: str, watermarks: Any, reply: bool, max_frame_size: int, delta: bool = False
) -> List[bytes]:
    """The Digest of ``watermarks`` (a dict or (origin, stamp) pairs) as encoded
    frames of at most ``max_frame_size`` bytes each (prefix included): one
    frame when it fits (one encode call), else parts in order, every one but
    the last with ``more=True``, each with ``reply`` and ``delta``. ValueError
    when one watermark alone cannot fit a frame.
    """
    limit = _check_max(max_frame_size)
    msg = Digest(sender_id, watermarks, reply, False, delta)
    frame = encode(msg)
    if len(frame) <= limit:
        return [frame]
    base = 13 + ((frame[6] << 8) | frame[7])  # header, sender, flags, count
    if base > limit:
        raise ValueError(
            f"a Digest from {msg.sender_id!r} needs a {base}-byte frame, more than "
            f"max_frame_size {limit}"
        )
    parts: List[list] = []
    part: list = []
    size = base
    for pair in msg.watermarks:
        item = 10 + len(pair[0].encode("utf-8"))
        if base + item > limit:
            raise ValueError(
                f"the watermark of origin {pair[0]!r} needs a {base + item}-byte Digest frame, "
                f"more than max_frame_size {limit}"
            )
        if size + item > limit:
            parts.append(part)
            part = []
            size = base
        part.append(pair)
        size += item
    parts.append(part)
    last = len(parts) - 1
    return [encode(Digest(msg.sender_id, p, reply, i < last, delta)) for i, p in enumerate(parts)]


def frame_type(frame: Any) -> int:
    """The type byte of a full frame (FrameError if it is too short to hold one)."""
    buf = frame if type(frame) is bytes else _as_bytes(frame, "frame_type")
    n = len(buf)
    if n < _HEADER_SIZE:
        if n < _PREFIX_SIZE:
            raise _truncated("length prefix", _PREFIX_SIZE, n, 0)
        if n < 5:
            raise _truncated("version", 1, 0, 4)
        raise _truncated("type", 1, 0, 5)
    return buf[5]


class FrameDecoder:
    """Incremental decoder for a byte stream of frames.

    feed(data) takes any buffer, cut at any byte boundary, and returns the
    messages completed by it; feed_frames(data) returns the completed raw frames
    (bytes, prefix included) after checking only their length prefix. A prefix
    announcing a frame (prefix included) above max_frame_size raises
    FrameError as soon as its 4 bytes are seen.
    After a FrameError the decoder stays failed. It holds at most one
    incomplete frame (never more than max_frame_size bytes, prefix included).
    """

    __slots__ = ("_buf", "_max", "_error", "_busy")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self._max = _check_max(max_frame_size)
        self._buf = bytearray()
        self._error: Optional[FrameError] = None
        self._busy = False

    @property
    def buffered(self) -> int:
        """Bytes held: the start of an incomplete frame."""
        return len(self._buf)

    @property
    def max_frame_size(self) -> int:
        return self._max

    def feed(self, data: Any) -> List[AnyMessage]:
        """Add bytes; return the messages they complete, in order."""
        return self._feed(data, False, "feed")

    def feed_frames(self, data: Any) -> List[bytes]:
        """Add bytes; return the raw frames they complete (bytes incl. prefix)."""
        return self._feed(data, True, "feed_frames")

    def _feed(self, data: Any, raw: bool, what: str) -> list:
        error = self._error
        if error is not None:
            raise FrameError(f"decoder failed earlier: {error}", error.offset)
        if type(data) is not bytes:
            data = _as_bytes(data, what)
        if self._busy:
            raise RuntimeError("FrameDecoder is already feeding (re-entrant call)")
        self._busy = True
        out: list = []
        try:
            self._run(data, out, raw)
        except FrameError as exc:
            self._error = exc
            self._buf = bytearray()
            raise
        finally:
            self._busy = False
        return out

    def _run(self, data: bytes, out: list, raw: bool) -> None:
        buf = self._buf
        limit = self._max
        n = len(data)
        i = 0
        if buf:
            # finish the frame started by an earlier chunk
            held = len(buf)
            if held < _PREFIX_SIZE:
                i = min(_PREFIX_SIZE - held, n)
                buf += data[:i]
                if len(buf) < _PREFIX_SIZE:
                    return
                length = _unpack_u32(buf, 0)[0]
                if length < _MIN_FRAME_LENGTH or length + _PREFIX_SIZE > limit:
                    raise _length_error(length, limit)  # type: ignore[misc]
            flen = _unpack_u32(buf, 0)[0] + _PREFIX_SIZE
            take = min(flen - len(buf), n - i)
            buf += data[i : i + take]
            i += take
            if len(buf) < flen:
                return
            frame = bytes(buf)
            buf.clear()
            out.append(frame if raw else _decode_body(frame, 0, flen))
        # whole frames straight from data
        while n - i >= _PREFIX_SIZE:
            length = _unpack_u32(data, i)[0]
            if length < _MIN_FRAME_LENGTH or length + _PREFIX_SIZE > limit:
                raise _length_error(length, limit)  # type: ignore[misc]
            j = i + length + _PREFIX_SIZE
            if j > n:
                break
            out.append(data[i:j] if raw else _decode_body(data, i, j))
            i = j
        if i < n:
            buf += data[i:]
