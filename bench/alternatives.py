"""The codecs fastgossip's are compared with, in the benchmarks' tables.

* a hand-written ``struct`` codec in fastgossip's own wire format;
* the reference's JSON frames (the Rust oxirs-cluster: u32 length + JSON), with
  orjson and with the standard library;
* msgpack, the same fields as a list.

Each ``make_*`` takes the message module the decoded messages are built with.
bench/workloads.py turns them into the rows of its comparisons.
"""

from __future__ import annotations

import json
import struct
from types import ModuleType
from typing import Any, Callable, Dict, List, Tuple

# -- a hand-written struct codec, in fastgossip's own wire format (docs/PROTOCOL.md) --
#
# What a user would write with the struct module: fixed fields packed by
# precompiled Structs, strings by their length. It doubles as an independent
# reading of the spec: the compiled codec's bytes must equal these.

_HDR = struct.Struct(">IBB")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_INT_TAIL = struct.Struct(">BQQ")  # value tag 0, u64 value, u64 version
_BYTES_HDR = struct.Struct(">BI")
_ENTRY_FIXED = struct.Struct(">HQQ")  # origin index, version, stamp
_INT_VALUE = struct.Struct(">BQ")
T_GOSSIP = 1
T_GOSSIP_BATCH = 6


def _str16(s: str) -> bytes:
    b = s.encode()
    return _U16.pack(len(b)) + b


def _value(v: Any) -> bytes:
    if v.__class__ is int:
        return _INT_VALUE.pack(0, v)
    return _BYTES_HDR.pack(1, len(v)) + v


def struct_encode_gossip(m: Any) -> bytes:
    s = m.sender_id.encode()
    k = m.key.encode()
    o = m.origin.encode()
    v = m.value
    if v.__class__ is int:
        mid = _INT_TAIL.pack(0, v, m.version)
    else:
        mid = _BYTES_HDR.pack(1, len(v)) + v + _U64.pack(m.version)
    body = b"".join((_U16.pack(len(s)), s, _U16.pack(len(k)), k, mid, _U16.pack(len(o)), o))
    return _HDR.pack(len(body) + 2, 1, T_GOSSIP) + body


def _check_header(frame: bytes, mtype: int) -> None:
    length, version, kind = _HDR.unpack_from(frame, 0)
    if length != len(frame) - 4 or version != 1 or kind != mtype:
        raise ValueError("bad frame header")


def _read_str(frame: bytes, pos: int) -> Tuple[str, int]:
    (n,) = _U16.unpack_from(frame, pos)
    pos += 2
    return frame[pos : pos + n].decode(), pos + n


def _read_value(frame: bytes, pos: int) -> Tuple[Any, int]:
    tag = frame[pos]
    if tag == 0:
        return _U64.unpack_from(frame, pos + 1)[0], pos + 9
    if tag == 1:
        (n,) = _U32.unpack_from(frame, pos + 1)
        pos += 5
        return frame[pos : pos + n], pos + n
    raise ValueError("bad value tag")


def make_struct_decode_gossip(mod: ModuleType) -> Callable[[bytes], Any]:
    gossip = mod.Gossip

    def decode(frame: bytes) -> Any:
        _check_header(frame, T_GOSSIP)
        sender, pos = _read_str(frame, 6)
        key, pos = _read_str(frame, pos)
        value, pos = _read_value(frame, pos)
        (version,) = _U64.unpack_from(frame, pos)
        origin, pos = _read_str(frame, pos + 8)
        if pos != len(frame):
            raise ValueError("trailing bytes")
        return gossip(sender, key, value, version, origin)

    return decode


def struct_encode_batch(b: Any) -> bytes:
    origins: Dict[str, int] = {}
    parts: List[bytes] = []
    append = parts.append
    for e in b.entries:
        idx = origins.get(e.origin)
        if idx is None:
            idx = origins[e.origin] = len(origins)
        k = e.key.encode()
        append(_U16.pack(len(k)))
        append(k)
        append(_ENTRY_FIXED.pack(idx, e.version, e.stamp))
        append(_value(e.value))
    head = [_str16(b.sender_id), _U16.pack(len(origins))]
    head += [_str16(o) for o in origins]
    head.append(_U32.pack(len(b.entries)))
    body = b"".join(head + parts)
    return _HDR.pack(len(body) + 2, 1, T_GOSSIP_BATCH) + body


def make_struct_decode_batch(mod: ModuleType) -> Callable[[bytes], Any]:
    entry, batch = mod.Entry, mod.GossipBatch
    unpack_fixed = _ENTRY_FIXED.unpack_from

    def decode(frame: bytes) -> Any:
        _check_header(frame, T_GOSSIP_BATCH)
        sender, pos = _read_str(frame, 6)
        (n_origins,) = _U16.unpack_from(frame, pos)
        pos += 2
        origins = []
        for _ in range(n_origins):
            origin, pos = _read_str(frame, pos)
            origins.append(origin)
        (n,) = _U32.unpack_from(frame, pos)
        pos += 4
        entries = []
        for _ in range(n):
            key, pos = _read_str(frame, pos)
            idx, version, stamp = unpack_fixed(frame, pos)
            value, pos = _read_value(frame, pos + 18)
            entries.append(entry(key, value, version, origins[idx], stamp))
        if pos != len(frame):
            raise ValueError("trailing bytes")
        return batch(sender, entries)

    return decode


class StructSplitter:
    """A stream splitter a user would write: a bytearray and struct.unpack_from."""

    def __init__(self, max_frame_size: int = 1 << 20) -> None:
        self._buf = bytearray()
        self._max = max_frame_size

    def feed(self, data: bytes) -> List[bytes]:
        buf = self._buf
        buf += data
        out = []
        pos = 0
        end_of_data = len(buf)
        unpack = _U32.unpack_from
        while end_of_data - pos >= 4:
            (length,) = unpack(buf, pos)
            if length > self._max:
                raise ValueError("frame too large")
            end = pos + 4 + length
            if end > end_of_data:
                break
            out.append(bytes(buf[pos:end]))
            pos = end
        del buf[:pos]
        return out


# -- the reference's JSON frames (Rust oxirs-cluster): u32 BE length + JSON ----------------

_PREFIX = struct.Struct(">I")


def make_json_codec(dumps: Callable[[Any], Any], loads: Callable[[Any], Any], mod: ModuleType):
    """encode/decode for Gossip and GossipBatch in the reference's frame format.

    Gossip is exactly the reference's ``{"Gossip": {"sender_id", "key", "value",
    "version"}}``; the reference has no batch, so a batch is the same style:
    ``{"GossipBatch": {"sender_id", "entries": [{"key", "value", "version",
    "origin", "stamp"}, ...]}}``.
    """
    gossip, entry, batch = mod.Gossip, mod.Entry, mod.GossipBatch
    pack = _PREFIX.pack

    def frame(obj: Any) -> bytes:
        body = dumps(obj)
        return pack(len(body)) + body

    def payload(data: bytes) -> Any:
        if _PREFIX.unpack_from(data)[0] != len(data) - 4:
            raise ValueError("bad length prefix")
        return loads(data[4:])

    def encode_gossip(m: Any) -> bytes:
        return frame(
            {
                "Gossip": {
                    "sender_id": m.sender_id,
                    "key": m.key,
                    "value": m.value,
                    "version": m.version,
                }
            }
        )

    def decode_gossip(data: bytes) -> Any:
        g = payload(data)["Gossip"]
        return gossip(g["sender_id"], g["key"], g["value"], g["version"])

    def encode_batch(b: Any) -> bytes:
        entries = [
            {
                "key": e.key,
                "value": e.value,
                "version": e.version,
                "origin": e.origin,
                "stamp": e.stamp,
            }
            for e in b.entries
        ]
        return frame({"GossipBatch": {"sender_id": b.sender_id, "entries": entries}})

    def decode_batch(data: bytes) -> Any:
        g = payload(data)["GossipBatch"]
        return batch(
            g["sender_id"],
            [
                entry(e["key"], e["value"], e["version"], e["origin"], e["stamp"])
                for e in g["entries"]
            ],
        )

    return encode_gossip, decode_gossip, encode_batch, decode_batch


def _stdlib_dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


# -- msgpack: the same fields as a list ----------------------------------------------------


def make_msgpack_codec(mod: ModuleType):
    import msgpack  # the caller skips this row when msgpack is missing

    packb, unpackb = msgpack.packb, msgpack.unpackb
    gossip, entry, batch = mod.Gossip, mod.Entry, mod.GossipBatch

    def encode_gossip(m: Any) -> bytes:
        return packb([m.sender_id, m.key, m.value, m.version, m.origin])

    def decode_gossip(data: bytes) -> Any:
        return gossip(*unpackb(data, use_list=False))

    def encode_batch(b: Any) -> bytes:
        return packb(
            [b.sender_id, [[e.key, e.value, e.version, e.origin, e.stamp] for e in b.entries]]
        )

    def decode_batch(data: bytes) -> Any:
        sender, entries = unpackb(data, use_list=False)
        return batch(sender, [entry(*t) for t in entries])

    return encode_gossip, decode_gossip, encode_batch, decode_batch
