"""Tombstone collection and GC horizons (sans-IO; docs/PROTOCOL.md,
"Tombstone collection").

A delete writes a tombstone, which spreads like any write. A tombstone older
than ``tombstone_grace`` is *collected* (removed from the table). The danger
is a node that missed the tombstone, because it was cut off longer than the
grace: it still holds the deleted key, and would bring it back. So each node
keeps, per origin, its *GC horizon*: the highest stamp of a tombstone of that
origin it collected. A peer whose digest names that origin below the horizon
may have missed a collected tombstone, and is sent a **Reset** after a
complete delta: the sender's watermarks and horizons, and the 64-bit FNV-1a
hashes of every key the sender holds. The peer then drops each entry the
sender has seen (its stamp within the sender's watermark for its origin) but
holds nothing for, raises its watermarks to the sender's and adopts its
horizons. A horizon is forgotten ``tombstone_grace + horizon_keep`` seconds
after its tombstone was written (by the stamp, so at the same time on every
node); a node cut off longer than that may bring deleted keys back.

The Reset's encoding is here, in Python: it is rare (at most once per
connection per horizon change), and its one large part, the hash list, is
bytes that the table reads in one call.
"""

from __future__ import annotations

import struct
from typing import Dict, List, Optional, Tuple

from ._limits import MAX_ORIGIN_BYTES
from ._wire import HEADER_SIZE, PROTOCOL_VERSION
from .errors import FrameError

__all__ = ["T_RESET", "Horizons", "ResetParts", "reset_frames"]

#: The Reset message's type code (docs/PROTOCOL.md).
T_RESET = 8
RESET_MORE = 1  # flags: more parts follow

_HEAD = struct.Struct(">IBB")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_TRIPLE = struct.Struct(">QQ")


def reset_frames(
    sender_id: str,
    origins: List[Tuple[str, int, int]],
    hashes: bytes,
    max_frame_size: int,
) -> List[bytes]:
    """A Reset as frames of at most ``max_frame_size`` bytes: ``origins`` is
    (origin, watermark, horizon) triples, ``hashes`` big-endian u64s."""
    sender = sender_id.encode("utf-8")
    fixed = HEADER_SIZE + 2 + len(sender) + 1 + 4 + 4
    if fixed + 8 > max_frame_size:
        raise ValueError(f"max_frame_size {max_frame_size} cannot hold a Reset")
    frames: List[bytes] = []
    items = [(o.encode("utf-8"), w, h) for o, w, h in origins]
    i = 0
    at = 0
    while True:
        room = max_frame_size - fixed
        body: List[bytes] = []
        n = 0
        while i < len(items) and 2 + len(items[i][0]) + 16 <= room:
            name, w, h = items[i]
            body.append(_U16.pack(len(name)) + name + _TRIPLE.pack(w, h))
            room -= 2 + len(name) + 16
            n += 1
            i += 1
        if i < len(items) and n == 0:
            raise ValueError("an origin does not fit a Reset frame")
        take = min(room // 8, (len(hashes) - at) // 8) * 8 if i == len(items) else 0
        chunk = hashes[at : at + take]
        at += take
        more = i < len(items) or at < len(hashes)
        payload = b"".join(
            [_U16.pack(len(sender)), sender, bytes([RESET_MORE if more else 0]), _U32.pack(n)]
            + body
            + [_U32.pack(take // 8), chunk]
        )
        frames.append(_HEAD.pack(len(payload) + 2, PROTOCOL_VERSION, T_RESET) + payload)
        if not more:
            return frames


class ResetParts:
    """A Reset being received on one connection, part by part; bounded by
    ``max_bytes`` in all."""

    __slots__ = ("origins", "hashes", "size", "max_bytes", "max_origins")

    def __init__(self, max_bytes: int, max_origins: int = 1 << 20) -> None:
        self.origins: Dict[str, Tuple[int, int]] = {}
        self.hashes: List[bytes] = []
        self.size = 0
        self.max_bytes = max_bytes
        self.max_origins = max_origins

    def add(self, frame: bytes) -> bool:
        """Read one Reset frame (already checked for length, version and type:
        the transport's framing); True when it was the last part. FrameError
        for a malformed frame, ValueError past ``max_bytes``."""
        self.size += len(frame)
        if self.size > self.max_bytes:
            raise ValueError(f"a Reset longer than {self.max_bytes} bytes")
        if len(frame) < HEADER_SIZE or frame[4] != PROTOCOL_VERSION:
            raise FrameError("a Reset of another protocol version at offset 4", 4)
        end = len(frame)
        pos = HEADER_SIZE
        try:
            (n,) = _U16.unpack_from(frame, pos)
            pos += 2
            frame[pos : pos + n].decode("utf-8")
            pos += n
            flags = frame[pos]
            pos += 1
            if flags & ~RESET_MORE:
                raise FrameError(f"unknown Reset flags {flags} at offset {pos - 1}", pos - 1)
            (count,) = _U32.unpack_from(frame, pos)
            pos += 4
            if count * 18 > end - pos:
                raise FrameError(
                    f"Reset n_origins {count} overruns the frame at offset {pos - 4}", pos - 4
                )
            for _ in range(count):
                (n,) = _U16.unpack_from(frame, pos)
                pos += 2
                if pos + n + 16 > end:
                    raise FrameError(
                        f"Reset origin overruns the frame at offset {pos - 2}", pos - 2
                    )
                if n > MAX_ORIGIN_BYTES:
                    raise FrameError(f"a Reset origin of {n} bytes at offset {pos - 2}", pos - 2)
                origin = frame[pos : pos + n].decode("utf-8")
                pos += n
                self.origins[origin] = _TRIPLE.unpack_from(frame, pos)
                pos += 16
                if len(self.origins) > self.max_origins:
                    raise ValueError(f"a Reset names over {self.max_origins} origins")
            (count,) = _U32.unpack_from(frame, pos)
            pos += 4
            if count * 8 != end - pos:
                raise FrameError(
                    f"Reset n_hashes {count} does not match the {end - pos} bytes left "
                    f"at offset {pos - 4}",
                    pos - 4,
                )
        except (struct.error, IndexError):
            raise FrameError(f"truncated Reset at offset {pos}", pos) from None
        except UnicodeDecodeError:
            raise FrameError(f"invalid UTF-8 in a Reset at offset {pos}", pos) from None
        self.hashes.append(frame[pos:end])
        return not flags & RESET_MORE


class Horizons:
    """Per origin, the highest stamp of a tombstone of it collected here (or
    adopted from a Reset), and a generation that grows with any change, so
    that a connection is sent one Reset per change.

    A horizon is forgotten once its stamp's time (``stamp >> 16`` ms, the
    origin's clock when it wrote the tombstone) is ``lifetime`` seconds old:
    the same moment on every node, whoever collected or adopted it and when,
    so that no node keeps a horizon the others forgot (and resets them for it,
    over and over). A horizon already that old is not adopted."""

    __slots__ = ("stamps", "generation", "next_sweep")

    def __init__(self) -> None:
        self.stamps: Dict[str, int] = {}
        self.generation = 0
        self.next_sweep = 0.0

    @staticmethod
    def _alive(stamp: int, now: float, lifetime: float) -> bool:
        return now * 1000 - (stamp >> 16) < lifetime * 1000

    def raise_to(self, found: Dict[str, int], now: float, lifetime: float) -> bool:
        """Merge horizons (collected here, or a peer's); True when one grew."""
        grew = False
        for origin, stamp in found.items():
            if stamp > self.stamps.get(origin, 0) and self._alive(stamp, now, lifetime):
                self.stamps[origin] = stamp
                grew = True
        if grew:
            self.generation += 1
        return grew

    def forget_older(self, now: float, lifetime: float) -> None:
        """Forget the horizons ``lifetime`` seconds old (see the class)."""
        old = [o for o, stamp in self.stamps.items() if not self._alive(stamp, now, lifetime)]
        for origin in old:
            del self.stamps[origin]
        if old:
            self.generation += 1

    def behind(self, watermarks: Dict[str, int]) -> Optional[str]:
        """An origin whose horizon is above the peer's watermark for it
        (an origin its digest leaves out counts as 0), or None."""
        for origin, stamp in self.stamps.items():
            if watermarks.get(origin, 0) < stamp:
                return origin
        return None
