"""Pure-Python LWW table: the twin of _table_c.pyx, and the reference behaviour.

A ``GossipState`` maps str keys to (value, version) with last-writer-wins
merging (docs/PROTOCOL.md, "Semantics"): an entry replaces the stored one only
when ``(version, origin, value)`` is greater, so merging is a join
(commutative, associative, idempotent).

Besides the entries the table keeps, per origin, the highest stamp it has seen
(its *watermarks*, what a Digest carries) and a log of ``(stamp, key)`` records
so that ``delta`` costs about what changed since a peer's watermarks, not the
size of the table.

Refusals. ``merge`` and ``merge_frame`` skip (and count, see ``refusals()``)
entries that are well formed but not acceptable, checked in this order:
``origin_too_long`` (origin above MAX_ORIGIN_BYTES), ``own_origin`` (the origin
is ``own_origin``), ``future`` (stamp above ``max_stamp`` or version above
``max_version``), ``too_large`` (not storable: ``relay_size`` above the call's
``max_frame_size``), ``table_full`` (see ``GossipState``), ``stale`` (see
``_apply``). A refused entry changes nothing: no value, watermark or
``max_version`` moves, and no origin is interned; a stale one only counts as
*seen* for its origin (``origin_stats``): peers still send that origin.
``delta_frames`` counts as ``unrelayable`` the entries it skips because no
frame of its ``max_frame_size`` holds them.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

from ._codec_py import decode
from ._limits import (
    BATCH_FIXED_BYTES,
    ENTRY_OVERHEAD,
    MAX_LIFE_CHARS,
    MAX_NODE_ID_BYTES,
    MAX_ORIGIN_BYTES,
)
from ._messages_py import Entry, Gossip, GossipBatch
from .errors import FrameError, TableFull

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "ENTRY_OVERHEAD",
    "MAX_LIFE_CHARS",
    "MAX_NODE_ID_BYTES",
    "MAX_ORIGIN_BYTES",
    "REFUSAL_KINDS",
    "Entry",
    "GossipState",
    "TableFull",
    "relay_size",
]

Value = Union[int, bytes, None]  # None: a tombstone

DEFAULT_MAX_FRAME_SIZE = 1 << 20
_U64 = 1 << 64
_U64_MAX = _U64 - 1
# relay_size without the origin, key and value bytes: the batch and a longest sender
_RELAY_FIXED = BATCH_FIXED_BYTES + MAX_NODE_ID_BYTES
#: The keys of GossipState.refusals(), in the order merges check them.
REFUSAL_KINDS = (
    "origin_too_long",
    "own_origin",
    "future",
    "too_large",
    "table_full",
    "unrelayable",
    "stale",
)
_MAX_STR = 0xFFFF
_MAX_BYTES = 0xFFFFFFFF
_MAX_LENGTH = 0xFFFFFFFF  # the u32 length prefix

_TYPE_NAMES = {2: "Ping", 3: "Pong", 4: "Replicate", 5: "ReplicateAck", 7: "Digest"}
# A log is compacted once its stale records outnumber its live ones by this much.
_COMPACT_SLACK = 16

# Stored entry: [value, version, origin, stamp, expires (unix ms, 0: never), expired]
_VALUE, _VERSION, _ORIGIN, _STAMP, _EXPIRES, _EXPIRED = range(6)


# -- validation: the codec encoder's rules and words (_table_c.pyx alike) -------------


def _check_str(name: str, s: object) -> str:
    if not isinstance(s, str):
        raise TypeError(f"{name} must be str, not {type(s).__name__}")
    try:
        n = len(str.encode(s, "utf-8"))
    except UnicodeEncodeError as exc:
        raise ValueError(f"{name} cannot be encoded as UTF-8: {exc}") from None
    if n > _MAX_STR:
        raise ValueError(f"{name} is {n} bytes in UTF-8, more than the 65535 a str field holds")
    return s if type(s) is str else str.__str__(s)


def _range_error(name: str, v: int) -> ValueError:
    bits = int.bit_length(v)
    text = int.__repr__(v) if bits <= 128 else f"an int of {bits} bits"
    return ValueError(f"{name} must be in range [0, 2**64), got {text}")


def _check_u64(name: str, v: object) -> int:
    """An int in [0, 2**64), bool refused."""
    if type(v) is not int and (type(v) is bool or not isinstance(v, int)):
        raise TypeError(f"{name} must be int, not {type(v).__name__}")
    v = int.__index__(v)  # type: ignore[arg-type]
    if not 0 <= v < _U64:
        raise _range_error(name, v)
    return v


def _check_value(v: object) -> Value:
    if isinstance(v, int) and type(v) is not bool:
        v = int.__index__(v)
        if not 0 <= v < _U64:
            raise _range_error("value", v)
        return v
    if isinstance(v, bytes):
        if len(v) > _MAX_BYTES:
            raise ValueError(
                f"value is {len(v)} bytes long, more than the 4294967295 a bytes32 field holds"
            )
        return v if type(v) is bytes else bytes(v)
    if v is None:
        return None
    raise TypeError(f"value must be int, bytes or None, not {type(v).__name__}")


def _check_size(name: str, v: object, minimum: int = 0) -> int:
    if type(v) is bool or not isinstance(v, int):
        raise TypeError(f"{name} must be int, not {type(v).__name__}")
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, not {v}")
    return int(v)


def _check_max_frame_size(v: object) -> int:
    """max_frame_size as the codec checks it."""
    if type(v) is bool or not isinstance(v, int):
        raise TypeError(f"max_frame_size must be int, not {type(v).__name__}")
    if not 2 <= v <= _MAX_LENGTH:
        raise ValueError(f"max_frame_size must be in [2, 4294967295], got {int.__int__(v)}")
    return int(v)


def _lww_key(version: int, origin: str, value: Value, expires: int = 0) -> tuple:
    # ints sort below bytes below a tombstone (the value tags' order); origins
    # compare as str (== UTF-8 bytewise); then the expiry (the same write
    # never differs in it)
    if value is None:
        return (version, origin, (2, 0), expires)
    return (version, origin, (1, value) if type(value) is bytes else (0, value), expires)


def _check_limit(name: str, v: object) -> Optional[int]:
    """A max_keys / max_bytes setting: None or an int >= 0."""
    if v is None:
        return None
    if type(v) is bool or not isinstance(v, int):
        raise TypeError(f"{name} must be int or None, not {type(v).__name__}")
    if v < 0:
        raise ValueError(f"{name} must be >= 0, not {v}")
    return int(v)


def _value_size(value: Value) -> int:
    """A value's bytes as bytes_held counts them (a tombstone: none)."""
    if value is None:
        return 0
    return len(value) if type(value) is bytes else 8


def _value_wire(value: Value) -> int:
    """The bytes of a value field after its tag: u64, bytes32, or none (a tombstone)."""
    if value is None:
        return 0
    return 4 + len(value) if type(value) is bytes else 8


def fnv1a(data: bytes) -> int:
    """64-bit FNV-1a: the key hash a Reset carries (docs/PROTOCOL.md)."""
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def relay_size(key: str, value: Value, origin: str, expires: int = 0) -> int:
    """Bytes of the frame (length prefix included) of a one-entry GossipBatch
    carrying this entry, sent by a sender with a MAX_NODE_ID_BYTES-byte id.

    An entry is *storable* under a max_frame_size when this is <= it: merges
    refuse the others (``too_large``) and a node refuses to write them.
    """
    key = _check_str("key", key)
    value = _check_value(value)
    origin = _check_str("origin", origin)
    expires = _check_u64("expires", expires)
    return _relay_size(len(key.encode("utf-8")), value, len(origin.encode("utf-8")), expires)


def _relay_size(key_len: int, value: Value, origin_len: int, expires: int = 0) -> int:
    return _RELAY_FIXED + origin_len + key_len + _value_wire(value) + (8 if expires else 0)


def _full_error(table: GossipState, key: str, new: bool) -> TableFull:
    return TableFull(
        f"table full: {'adding' if new else 'growing'} key {key!r} would pass "
        f"max_keys={table._max_keys} / max_bytes={table._max_bytes} "
        f"({len(table._keys)} keys, {table._bytes_held} bytes held)"
    )


def _entry_size(key: str, value: Value, expires: int = 0) -> int:
    """Bytes a batch entry takes: str key, u16 origin, u64 version, u64 stamp, value
    (with its expiry)."""
    return 2 + len(key.encode("utf-8")) + 2 + 8 + 8 + 1 + _value_wire(value) + (8 if expires else 0)


class GossipState:
    """Last-writer-wins key/value table with per-origin watermarks and deltas.

    Bounds: ``max_keys`` (keys held) and ``max_bytes`` (``bytes_held``: per
    entry, its key's UTF-8 bytes + its value's bytes, 8 for an int, +
    ENTRY_OVERHEAD), None for no bound; both settable. At a bound, an entry for
    a new key, or one that would replace a held value by a larger one and so
    pass ``max_bytes``, is refused: a merge skips it and counts it as
    ``table_full``, a local ``set`` raises TableFull (a ValueError). Writes
    that fit, and every update that does not grow the bytes held, are always
    accepted. Lowering a bound below what is held removes nothing.

    ``own_origin`` (None, or the origin this process writes under): a merge
    refuses entries under exactly that origin (``own_origin``); ``set`` may
    write under it.
    """

    __slots__ = (
        "_entries",
        "_keys",
        "_watermarks",
        "_logs",
        "_live",
        "_seen",
        "_sorted",
        "_max_version",
        "_bytes_held",
        "_n_tomb",
        "_n_gone",
        "_now_ms",
        "_next_exp",
        "_eph_live",
        "_hidden",
        "_delta_cut",
        "_delta_top",
        "_max_keys",
        "_max_bytes",
        "_own_origin",
        "_refused",
        "_changes",
        "_own_refused_stamp",
        "_refuse_stale",
        "_stale_exempt",
        "_capture",
        "_captured",
    )

    def __init__(self, max_keys: Optional[int] = None, max_bytes: Optional[int] = None) -> None:
        self._max_keys = _check_limit("max_keys", max_keys)
        self._max_bytes = _check_limit("max_bytes", max_bytes)
        self._own_origin: Optional[str] = None
        self._refused: Dict[str, int] = dict.fromkeys(REFUSAL_KINDS, 0)
        self._changes = 0
        self._own_refused_stamp = 0
        self._refuse_stale = False
        self._stale_exempt: frozenset = frozenset()
        self._capture: Tuple[str, ...] = ()
        self._captured: List[Entry] = []
        self._eph_live: Optional[set] = None
        self._now_ms = 0  # the time expiries are judged by (see expire)
        self._reset()

    def _reset(self) -> None:
        self._entries: Dict[str, list] = {}
        self._keys: List[str] = []  # first-insertion order
        self._watermarks: Dict[str, int] = {}  # origin -> highest stamp seen
        self._logs: Dict[str, List[Tuple[int, str]]] = {}  # origin -> [(stamp, key)]
        self._live: Dict[str, int] = {}  # origin -> number of keys it holds
        self._seen: Dict[str, int] = {}  # origin -> entries of it set or merged, won or lost
        self._sorted: Dict[str, int] = {}  # origin -> length of the log's sorted prefix
        self._max_version = 0
        self._bytes_held = 0
        self._n_tomb = 0  # entries that are tombstones
        self._n_gone = 0  # entries with a value not shown: hidden origin, or expired
        self._next_exp = 0  # the earliest expiry not yet judged passed (0: none)
        self._hidden: set = set()  # ephemeral origins not live (see set_ephemeral_live)
        self._delta_cut = False  # the last delta_frames stopped at its budget
        self._delta_top = 0  # the stamp of the last entry it took (0: none)

    # -- settings and counters -------------------------------------------------------

    @property
    def max_keys(self) -> Optional[int]:
        """The most keys held (None: no bound); see the class docstring."""
        return self._max_keys

    @max_keys.setter
    def max_keys(self, value: Optional[int]) -> None:
        self._max_keys = _check_limit("max_keys", value)

    @property
    def max_bytes(self) -> Optional[int]:
        """The most ``bytes_held`` (None: no bound); see the class docstring."""
        return self._max_bytes

    @max_bytes.setter
    def max_bytes(self, value: Optional[int]) -> None:
        self._max_bytes = _check_limit("max_bytes", value)

    @property
    def own_origin(self) -> Optional[str]:
        """The origin merges refuse (this process's own), or None."""
        return self._own_origin

    @own_origin.setter
    def own_origin(self, value: Optional[str]) -> None:
        if value is not None:
            if not isinstance(value, str):
                raise TypeError(f"own_origin must be str or None, not {type(value).__name__}")
            value = _check_str("own_origin", value)
        self._own_origin = value

    def set_capture(self, prefixes: Iterable[str]) -> None:
        """Keep every entry that changes the table (set or merged, and won)
        whose key starts with one of ``prefixes`` (str), in the order applied,
        until ``take_captured()``. Replaces the previous prefixes; an empty
        iterable stops capturing (and drops what was kept)."""
        out = []
        for prefix in prefixes:
            if not isinstance(prefix, str):
                raise TypeError(f"a capture prefix is a str, not {type(prefix).__name__}")
            out.append(prefix)
        self._capture = tuple(out)
        if not out:
            self._captured = []

    def take_captured(self) -> List[Entry]:
        """The entries captured since the last call (see set_capture), in the
        order they were applied; forgets them."""
        out = self._captured
        if out:
            self._captured = []
        return out

    def set_stale_exempt(self, origins: Iterable[str]) -> None:
        """Origins whose entries merges take even when stale: those the node
        has left out of its digests (retired). A peer answers such an origin from
        stamp 0, and that resend is what heals a gap an earlier cut answer may
        have left below the watermark. Replaces the previous set."""
        self._stale_exempt = frozenset(o for o in origins if o in self._watermarks)

    @property
    def refuse_stale(self) -> bool:
        """When true, merges refuse (and count as ``stale``) an entry that would win
        but whose stamp is not above its origin's watermark here. Off by
        default, so that ``merge`` is a join whatever the order of its inputs; a
        node turns it on, since its deltas arrive as stamp-ordered prefixes and
        such an entry is one that no honest peer sends (see _apply)."""
        return self._refuse_stale

    @refuse_stale.setter
    def refuse_stale(self, value: bool) -> None:
        self._refuse_stale = bool(value)

    @property
    def bytes_held(self) -> int:
        """Key bytes + value bytes (8 per int) + ENTRY_OVERHEAD per entry held."""
        return self._bytes_held

    def refusals(self) -> Dict[str, int]:
        """Entries refused so far, by reason (REFUSAL_KINDS; see the module docstring)."""
        return dict(self._refused)

    # -- writing -------------------------------------------------------------------

    def set(
        self,
        key: str,
        value: Value,
        version: int,
        origin: str = "",
        stamp: Optional[int] = None,
        expires: int = 0,
    ) -> bool:
        """Write one entry; True when the table changed (the entry won).
        ``expires``: unix ms after which the entry is expired (0: never).

        Raises ValueError for an origin above MAX_ORIGIN_BYTES and TableFull
        when the entry does not fit ``max_keys`` / ``max_bytes``.
        """
        key = _check_str("key", key)
        value = _check_value(value)
        version = _check_u64("version", version)
        origin = _check_str("origin", origin)
        stamp = version if stamp is None else _check_u64("stamp", stamp)
        n = len(origin.encode("utf-8"))
        if n > MAX_ORIGIN_BYTES:
            raise ValueError(
                f"origin is {n} bytes in UTF-8, more than MAX_ORIGIN_BYTES ({MAX_ORIGIN_BYTES})"
            )
        expires = _check_u64("expires", expires)
        if expires and value is None:
            raise ValueError("a tombstone cannot expire")
        done = self._apply(key, value, version, origin, stamp, False, expires)
        if done == 2:
            raise _full_error(self, key, key not in self._entries)
        return done == 1

    def merge(
        self,
        entries: Iterable[Union[Entry, Gossip]],
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_stamp: int = _U64_MAX,
        max_version: int = _U64_MAX,
    ) -> List[Entry]:
        """Merge entries (or Gossip messages); returns those that changed the table,
        in input order. Every entry is validated before any is merged; entries
        refused (see the module docstring) are counted in ``refusals()``."""
        if max_frame_size is not DEFAULT_MAX_FRAME_SIZE:
            max_frame_size = _check_max_frame_size(max_frame_size)
        if max_stamp is not _U64_MAX:
            max_stamp = _check_u64("max_stamp", max_stamp)
        if max_version is not _U64_MAX:
            max_version = _check_u64("max_version", max_version)
        checked = []
        for e in entries:
            stamp = getattr(e, "stamp", None)
            key, value, version, origin = e.key, e.value, e.version, e.origin
            key = _check_str("key", key)
            value = _check_value(value)
            version = _check_u64("version", version)
            origin = _check_str("origin", origin)
            stamp = version if stamp is None else _check_u64("stamp", stamp)
            expires = _check_u64("expires", getattr(e, "expires", 0))
            if expires and value is None:
                raise ValueError("a tombstone cannot expire")
            checked.append((e, key, value, version, origin, stamp, expires))
        changed = []
        limits = (max_frame_size, max_stamp, max_version)
        for e, key, value, version, origin, stamp, expires in checked:
            if self._merge_one(key, value, version, origin, stamp, limits, expires) == 1:
                if (
                    type(e) is Entry
                    and type(e.key) is str
                    and type(e.origin) is str
                    and type(e.version) is int
                    and type(e.stamp) is int
                    and type(e.value) in (int, bytes)
                ):
                    changed.append(e)
                else:
                    changed.append(Entry(key, value, version, origin, stamp, expires=expires))
        return changed

    def merge_frame(
        self,
        frame: Any,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_stamp: int = _U64_MAX,
        max_version: int = _U64_MAX,
    ) -> int:
        """Merge one complete Gossip or GossipBatch frame (length prefix included).

        The frame is checked as the codec's ``decode`` checks it (same FrameError,
        same message and offset) before anything is merged, so a malformed frame
        leaves the table unchanged; a well-formed frame of another type raises
        FrameError too. Entries of a well-formed frame that are not acceptable
        are skipped and counted (see the module docstring). Returns the number
        of entries that changed the table.
        """
        if max_frame_size is not DEFAULT_MAX_FRAME_SIZE:
            max_frame_size = _check_max_frame_size(max_frame_size)
        if max_stamp is not _U64_MAX:
            max_stamp = _check_u64("max_stamp", max_stamp)
        if max_version is not _U64_MAX:
            max_version = _check_u64("max_version", max_version)
        if type(frame) is not bytes:
            try:
                frame = memoryview(frame).tobytes()
            except TypeError:
                raise TypeError(
                    f"merge_frame() needs a bytes-like object, not {type(frame).__name__}"
                ) from None
        msg = decode(frame, max_frame_size)
        if type(msg) is GossipBatch:
            items = [(e.key, e.value, e.version, e.origin, e.stamp, e.expires) for e in msg.entries]
        elif type(msg) is Gossip:
            items = [(msg.key, msg.value, msg.version, msg.origin, msg.version, 0)]
        else:
            mtype = frame[5]
            raise FrameError(
                f"cannot merge a {type(msg).__name__} frame (type {mtype}) at offset 5", 5
            )
        changed = 0
        limits = (max_frame_size, max_stamp, max_version)
        for key, value, version, origin, stamp, expires in items:
            changed += self._merge_one(key, value, version, origin, stamp, limits, expires) == 1
        return changed

    def _merge_one(
        self,
        key: str,
        value: Value,
        version: int,
        origin: str,
        stamp: int,
        limits: Tuple[int, int, int],
        expires: int = 0,
    ) -> int:
        """Merge an entry that arrived from a peer: _apply, after the refusals."""
        max_frame_size, max_stamp, max_version = limits
        olen = len(origin.encode("utf-8"))
        if olen > MAX_ORIGIN_BYTES:
            kind = "origin_too_long"
        elif self._own_origin is not None and (
            origin == self._own_origin or origin == self._own_origin + ".e"
        ):
            kind = "own_origin"
            if stamp <= max_stamp and stamp > self._own_refused_stamp:
                self._own_refused_stamp = stamp
        elif stamp > max_stamp or version > max_version:
            kind = "future"
        elif _relay_size(len(key.encode("utf-8")), value, olen, expires) > max_frame_size:
            kind = "too_large"
        else:
            done = self._apply(key, value, version, origin, stamp, self._refuse_stale, expires)
            if done < 2:
                return done
            kind = "table_full" if done == 2 else "stale"
        self._refused[kind] += 1
        return 2

    def _apply(
        self,
        key: str,
        value: Value,
        version: int,
        origin: str,
        stamp: int,
        peer: bool = False,
        expires: int = 0,
    ) -> int:
        """1 when the entry changed the table, 0 when it lost (or tied), 2 when it
        does not fit max_keys / max_bytes, 3 when it came from a ``peer``, would
        win, and its stamp is not above its origin's watermark (*stale*: an
        honest delta is a stamp-ordered prefix, so whoever gave this node that
        watermark held something greater for the key; taking it would let one
        forged entry make the nodes disagree for good). Nothing moves on 2 or 3.
        An entry equal to the stored one but with a higher stamp (its origin
        re-stamped it) takes the new stamp, so a re-stamp travels on."""
        cur = self._entries.get(key)
        if cur is None:
            if peer and origin not in self._stale_exempt:
                wm = self._watermarks.get(origin)
                if wm is not None and stamp <= wm:
                    self._seen[origin] += 1  # (still sent: see origin_stats)
                    return 3
            size = len(key.encode("utf-8")) + _value_size(value) + ENTRY_OVERHEAD
            if (self._max_keys is not None and len(self._keys) >= self._max_keys) or (
                self._max_bytes is not None and self._bytes_held + size > self._max_bytes
            ):
                return 2
            self._note(version, origin, stamp)
            cur = self._entries[key] = [
                value,
                version,
                origin,
                stamp,
                expires,
                self._expired(expires),
            ]
            self._keys.append(key)
            self._n_tomb += value is None
            self._n_gone += self._is_gone(cur)
            self._bytes_held += size
            self._live[origin] = self._live.get(origin, 0) + 1
            self._log(origin, stamp, key)
            if self._told(cur):  # (watchers see what is shown)
                self._keep(key)
            return 1
        new, old = (
            _lww_key(version, origin, value, expires),
            _lww_key(cur[_VERSION], cur[_ORIGIN], cur[_VALUE], cur[_EXPIRES]),
        )
        wins = new > old
        if not wins and new == old and stamp > cur[_STAMP]:  # re-stamped by its origin
            self._note(version, origin, stamp)
            cur[_STAMP] = stamp
            self._log(origin, stamp, key)
            return 0
        if wins and peer and origin not in self._stale_exempt:
            wm = self._watermarks.get(origin)
            if wm is not None and stamp <= wm:
                self._seen[origin] += 1
                return 3
        grow = 0
        if wins:
            grow = _value_size(value) - _value_size(cur[_VALUE])
            if (
                grow > 0
                and self._max_bytes is not None
                and self._bytes_held + grow > self._max_bytes
            ):
                return 2
        self._note(version, origin, stamp)
        if not wins:
            return 0
        self._bytes_held += grow
        old_origin, old_stamp = cur[_ORIGIN], cur[_STAMP]
        was_shown = self._told(cur)
        self._n_tomb += (value is None) - (cur[_VALUE] is None)
        self._n_gone -= self._is_gone(cur)
        cur[:] = [value, version, origin, stamp, expires, self._expired(expires)]
        self._n_gone += self._is_gone(cur)
        if old_origin != origin:
            self._live[old_origin] -= 1
            self._live[origin] = self._live.get(origin, 0) + 1
            self._log(origin, stamp, key)
            self._maybe_compact(old_origin)
        elif old_stamp != stamp:
            self._log(origin, stamp, key)
        if was_shown or self._told(cur):
            self._keep(key)
        return 1

    def _note(self, version: int, origin: str, stamp: int) -> None:
        """An entry set or merged (won or lost): its watermark, counts, max version."""
        self._changes += 1
        wm = self._watermarks.get(origin)
        if wm is None:
            self._intern(origin)
        if wm is None or stamp > wm:
            self._watermarks[origin] = stamp
        self._seen[origin] = self._seen.get(origin, 0) + 1
        if version > self._max_version:
            self._max_version = version

    # -- the per-origin logs ----------------------------------------------------------

    def _log(self, origin: str, stamp: int, key: str) -> None:
        log = self._logs.setdefault(origin, [])
        rec = (stamp, key)
        if log and log[-1] == rec:
            return
        if self._sorted.get(origin, 0) == len(log) and (not log or log[-1] < rec):
            self._sorted[origin] = len(log) + 1
        log.append(rec)
        self._maybe_compact(origin)

    def _is_live(self, origin: str, rec: Tuple[int, str]) -> bool:
        cur = self._entries.get(rec[1])  # (None: the key was removed)
        return cur is not None and cur[_ORIGIN] == origin and cur[_STAMP] == rec[0]

    def _sorted_log(self, origin: str) -> List[Tuple[int, str]]:
        log = self._logs[origin]
        if self._sorted[origin] != len(log):
            log.sort()
            self._sorted[origin] = len(log)
        return log

    def _maybe_compact(self, origin: str) -> None:
        log = self._logs[origin]
        live = self._live[origin]
        if len(log) - live <= live + _COMPACT_SLACK:
            return
        kept: List[Tuple[int, str]] = []
        for rec in self._sorted_log(origin):
            if self._is_live(origin, rec) and (not kept or kept[-1] != rec):
                kept.append(rec)
        log[:] = kept
        self._sorted[origin] = len(kept)

    def _due(self, watermarks: Mapping[str, int]) -> Iterator[Tuple[int, str, str]]:
        """(stamp, origin, key) of every entry held whose stamp is above the
        peer's watermark for its origin, in that order."""
        streams = []
        for origin, own in self._watermarks.items():
            theirs = watermarks.get(origin)
            if theirs is None:
                theirs = -1
            elif not isinstance(theirs, int):
                raise TypeError(
                    f"watermark for origin {origin!r} must be int, not {type(theirs).__name__}"
                )
            if own <= theirs or not self._live.get(origin):
                continue
            streams.append(self._origin_due(origin, theirs))
        return heapq.merge(*streams)

    def _origin_due(self, origin: str, after: int) -> Iterator[Tuple[int, str, str]]:
        log = self._sorted_log(origin)
        prev = None
        # (after + 1,) sorts before every record (after + 1, key)
        for i in range(bisect_left(log, (after + 1,)), len(log)):
            rec = log[i]
            if rec != prev and self._is_live(origin, rec):
                yield rec[0], origin, rec[1]
            prev = rec

    def _entry(self, key: str) -> Entry:
        value, version, origin, stamp, expires, _ = self._entries[key]
        return Entry(key, value, version, origin, stamp, expires=expires)

    # -- reading -------------------------------------------------------------------

    def get(self, key: str) -> Optional[Tuple[Union[int, bytes], int]]:
        """(value, version) stored for key, or None (also for a tombstone)."""
        cur = self._entries.get(_check_str("key", key))
        return None if cur is None or not self._shown(cur) else (cur[_VALUE], cur[_VERSION])

    def get_entry(self, key: str) -> Optional[Entry]:
        """The Entry stored for key (a tombstone's value is None), or None."""
        key = _check_str("key", key)
        return self._entry(key) if key in self._entries else None

    def keys(self) -> List[str]:
        """Every key that holds a value (tombstones left out), in first-insertion order."""
        if (
            not self._n_tomb
            and not self._n_gone
            and (not self._next_exp or self._next_exp > self._now_ms)
        ):
            return list(self._keys)
        entries = self._entries
        return [k for k in self._keys if self._shown(entries[k])]

    def __len__(self) -> int:
        """Keys shown: holding a value (not a tombstone), under an origin not hidden."""
        return len(self._keys) - self._n_tomb - self._n_gone

    def __bool__(self) -> bool:
        return len(self._keys) > self._n_tomb + self._n_gone

    @property
    def tombstones(self) -> int:
        """Tombstones held (deleted keys not yet collected)."""
        return self._n_tomb

    @property
    def entry_count(self) -> int:
        """Entries held: keys with a value and tombstones (what max_keys bounds)."""
        return len(self._keys)

    def entries(self) -> Iterator[Entry]:
        """Every entry, tombstones included, in first-insertion order of keys."""
        i = 0
        while i < len(self._keys):
            yield self._entry(self._keys[i])
            i += 1

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        cur = self._entries.get(key)
        return cur is not None and self._shown(cur)

    def __iter__(self) -> Iterator[Entry]:
        """Entries that hold a value (tombstones left out), in first-insertion
        order of keys; keys added meanwhile are included."""
        i = 0
        while i < len(self._keys):
            cur = self._entries[self._keys[i]]
            if self._shown(cur):
                yield self._entry(self._keys[i])
            i += 1

    def __repr__(self) -> str:
        return (
            f"<GossipState: {len(self._keys) - self._n_tomb} entries, {self._n_tomb} "
            f"tombstones, {len(self._watermarks)} origins>"
        )

    @property
    def max_version(self) -> int:
        """The highest version set or merged (losing entries included); 0 when none."""
        return self._max_version

    def origin_stats(self) -> Dict[str, Tuple[int, int, int]]:
        """Per origin: (watermark, keys it holds here, entries of it set or merged
        so far, won or lost). The last count tells whether an origin that holds
        no key is still being sent entries (see GossipNode's digest)."""
        live, seen = self._live, self._seen
        return {o: (w, live.get(o, 0), seen.get(o, 0)) for o, w in self._watermarks.items()}

    def watermarks(self) -> Dict[str, int]:
        """Per origin, the highest stamp seen (whether or not that entry won)."""
        return dict(self._watermarks)

    def clear(self) -> None:
        """Forget every entry, watermark and the max version (the bounds,
        ``own_origin`` and the refusal counts stay)."""
        self._reset()
        self._changes += 1

    def _intern(self, origin: str) -> None:
        """A new origin: hidden when ephemeral and not live."""
        if self._eph_live is not None and origin.endswith(".e") and origin not in self._eph_live:
            self._hidden.add(origin)

    def _told(self, cur: list) -> bool:
        """Shown as far as watchers were told: a value, under an origin not
        hidden, not marked expired by a pass (what captures decide by; the
        pass tells them of expiries)."""
        return cur[_VALUE] is not None and not self._is_gone(cur)

    def _shown(self, cur: list) -> bool:
        """Shown: a value, under an origin not hidden, not expired (by the last
        expiry pass, or by ``now_ms`` already: reads are exact between passes)."""
        if cur[_VALUE] is None or self._is_gone(cur):
            return False
        return not cur[_EXPIRES] or cur[_EXPIRES] > self._now_ms

    def _is_gone(self, cur: list) -> bool:
        """An entry with a value that is not shown (hidden origin, or expired)."""
        return cur[_VALUE] is not None and (cur[_ORIGIN] in self._hidden or cur[_EXPIRED])

    def _expired(self, expires: int) -> bool:
        """Whether an expiry has passed (by ``now_ms``); else it may be the next."""
        if expires and self._now_ms and expires <= self._now_ms:
            return True
        if expires and (not self._next_exp or expires < self._next_exp):
            self._next_exp = expires
        return False

    def expire(self, now_ms: int) -> int:
        """Judge expiries at ``now_ms`` (unix ms): the entries whose expiry has
        passed are no longer shown (watchers see them go: tombstone-shaped
        entries with their expiry). One pass over the table, only when the
        earliest pending expiry has passed (``next_expiry``); returns how many
        expired now. Merges judge arriving entries by the last ``now_ms``."""
        now = _check_u64("now_ms", now_ms)
        if now > self._now_ms:
            self._now_ms = now
        if not self._next_exp or self._next_exp > self._now_ms:
            return 0
        now = self._now_ms
        n = 0
        nxt = 0
        for key in self._keys:
            cur = self._entries[key]
            x = cur[_EXPIRES]
            if not x or cur[_EXPIRED]:
                continue
            if x <= now:
                self._n_gone -= self._is_gone(cur)
                cur[_EXPIRED] = True
                self._n_gone += self._is_gone(cur)
                n += 1
                if cur[_ORIGIN] not in self._hidden:
                    self._keep(key)
            elif not nxt or x < nxt:
                nxt = x
        self._next_exp = nxt
        if n:
            self._changes += 1
        return n

    @property
    def next_expiry(self) -> int:
        """The earliest expiry (unix ms) not yet judged passed; 0: none."""
        return self._next_exp

    @property
    def now_ms(self) -> int:
        """The time (unix ms) expiries are judged by: reads hide what expired
        by it; the pass that tells watchers (expire) runs once a round. Only
        grows."""
        return self._now_ms

    @now_ms.setter
    def now_ms(self, value: int) -> None:
        t = _check_u64("now_ms", value)
        if t > self._now_ms:
            self._now_ms = t

    def reset_watermark(self, origin: str) -> None:
        """Forget an origin's watermark (to 0): its entries are asked for again
        from the start (an ephemeral origin live again after its entries were
        dropped here)."""
        origin = _check_str("origin", origin)
        if self._watermarks.get(origin):
            self._watermarks[origin] = 0
            self._changes += 1

    def set_origin_live(self, origin: str, live: bool) -> None:
        """One ephemeral origin (a name ending with ``".e"``) live or not (see
        set_ephemeral_live, which must have set a live set first): the table is
        visited only when the origin holds entries whose visibility flips."""
        if self._eph_live is None:
            raise ValueError("set_ephemeral_live first")
        origin = _check_str("origin", origin)
        if live:
            self._eph_live.add(origin)
        else:
            self._eph_live.discard(origin)
        if origin not in self._watermarks:
            return
        hide = origin.endswith(".e") and not live
        if hide == (origin in self._hidden):
            return
        keys = [k for k in self._keys if self._entries[k][_ORIGIN] == origin]
        for k in keys:
            self._n_gone -= self._is_gone(self._entries[k])
        if hide:
            self._hidden.add(origin)
        else:
            self._hidden.discard(origin)
        if not keys:
            return
        for k in keys:
            cur = self._entries[k]
            self._n_gone += self._is_gone(cur)
            if cur[_VALUE] is not None and not cur[_EXPIRED]:
                self._keep(k)
        self._changes += 1

    def set_ephemeral_live(self, origins: Optional[Iterable[str]]) -> None:
        """The live ephemeral origins (names ending with ``".e"``, see
        GossipCore): the entries of every other ephemeral origin are kept and
        replicated but not shown (get, keys, len, iteration). None (the
        default): every origin is shown. Watchers see the keys that appear
        (``set``) and disappear (tombstone-shaped entries) by the change."""
        live = None if origins is None else set(origins)  # (set_origin_live edits it)
        self._eph_live = live
        hidden = (
            set()
            if live is None
            else {o for o in self._watermarks if o.endswith(".e") and o not in live}
        )
        flipped = hidden ^ self._hidden
        self._hidden = hidden
        if not flipped:
            return
        self._n_gone = 0
        for key in self._keys:
            cur = self._entries[key]
            if cur[_VALUE] is None:
                continue
            self._n_gone += self._is_gone(cur)
            if cur[_ORIGIN] in flipped and not cur[_EXPIRED]:
                self._keep(key)
        self._changes += 1

    def drop_origins(self, origins: Iterable[str]) -> Dict[str, int]:
        """Remove every entry held under these origins (the ephemeral keys of
        a member gone for good); returns, per origin, the highest stamp removed."""
        doomed = {o for o in [_check_str("origin", o) for o in origins] if self._live.get(o)}
        out: Dict[str, int] = {}
        if doomed:
            entries = self._entries
            self._remove([k for k in self._keys if entries[k][_ORIGIN] in doomed], out)
        return out

    def _keep(self, key: str, gone: bool = False) -> None:
        """For take_captured, when a captured prefix matches: the entry, or a
        tombstone-shaped one when ``gone`` or its origin is hidden."""
        if not (self._capture and key.startswith(self._capture)):
            return
        cur = self._entries[key]
        value, version, origin, stamp, expires, _ = cur
        if gone or self._is_gone(cur):
            self._captured.append(Entry(key, None, version, origin, stamp, expires=expires))
        else:
            self._captured.append(self._entry(key))

    # -- removing entries: tombstone collection and resets --------------------------

    def _remove(self, doomed: List[str], removed_stamps: Dict[str, int]) -> int:
        """Remove these keys' entries (first-insertion order of the others kept);
        per origin, the highest stamp removed goes into ``removed_stamps``."""
        if not doomed:
            return 0
        gone = set(doomed)
        for key in doomed:
            cur = self._entries.pop(key)
            value, origin, stamp = cur[_VALUE], cur[_ORIGIN], cur[_STAMP]
            self._live[origin] -= 1
            self._n_gone -= self._is_gone(cur)
            self._bytes_held -= len(key.encode("utf-8")) + _value_size(value) + ENTRY_OVERHEAD
            self._n_tomb -= value is None
            if removed_stamps.get(origin, -1) < stamp:
                removed_stamps[origin] = stamp
        self._keys = [k for k in self._keys if k not in gone]
        self._changes += 1
        return len(doomed)

    def collect(self, before_version: int, expired_before: int = 0) -> Dict[str, int]:
        """Remove the tombstones whose version is below ``before_version``, and
        the expired entries whose expiry is at most ``expired_before`` (unix
        ms); returns, per origin of a removed entry, the highest stamp removed.
        Removing costs O(entries held), not per entry."""
        before = _check_u64("before_version", before_version)
        exp_before = _check_u64("expired_before", expired_before)
        out: Dict[str, int] = {}
        if self._n_tomb or exp_before:
            doomed = []
            for k in self._keys:
                cur = self._entries[k]
                if (cur[_VALUE] is None and cur[_VERSION] < before) or (
                    cur[_EXPIRED] and cur[_EXPIRES] <= exp_before
                ):
                    doomed.append(k)
            self._remove(doomed, out)
        return out

    def key_hashes(self) -> bytes:
        """The 64-bit FNV-1a hash of every key held (tombstones included), as
        big-endian u64s in first-insertion order (docs/PROTOCOL.md, "Reset")."""
        return b"".join(fnv1a(k.encode("utf-8")).to_bytes(8, "big") for k in self._keys)

    def drop_unheld(self, hashes: bytes, watermarks: Mapping[str, int]) -> int:
        """A reset (docs/PROTOCOL.md, "Tombstone collection"): remove every
        entry that the peer's ``watermarks`` cover (its stamp is at most the
        peer's watermark for its origin) and whose key's hash is not among the
        peer's ``hashes`` (big-endian u64s, key_hashes() of the peer): the peer
        has seen it, holds nothing for its key, so a collected tombstone
        deleted it. Watchers see such keys deleted. Returns how many went."""
        if not isinstance(hashes, bytes):
            raise TypeError(f"hashes must be bytes, not {type(hashes).__name__}")
        if len(hashes) % 8:
            raise ValueError(f"hashes must be whole u64s, got {len(hashes)} bytes")
        if not self._keys:
            return 0
        held = {int.from_bytes(hashes[i : i + 8], "big") for i in range(0, len(hashes), 8)}
        cover = {}
        for origin in self._watermarks:
            theirs = watermarks.get(origin)
            if theirs is not None:
                cover[origin] = _check_u64("watermark", theirs)
        doomed = []
        for key in self._keys:
            value, version, origin, stamp, _, _ = self._entries[key]
            w = cover.get(origin)
            if w is None or stamp > w or fnv1a(key.encode("utf-8")) in held:
                continue
            doomed.append(key)
            if self._told(self._entries[key]):
                self._keep(key, True)
        return self._remove(doomed, {})

    def raise_watermarks(self, watermarks: Mapping[str, int]) -> None:
        """Raise each named origin's watermark to at least the given stamp,
        interning origins not seen yet (after a reset: see drop_unheld)."""
        for origin, value in dict(watermarks).items():
            origin = _check_str("origin", origin)
            stamp = _check_u64("watermark", value)
            n = len(origin.encode("utf-8"))
            if n > MAX_ORIGIN_BYTES:
                raise ValueError(
                    f"origin is {n} bytes in UTF-8, more than MAX_ORIGIN_BYTES ({MAX_ORIGIN_BYTES})"
                )
            if origin not in self._watermarks:  # interned at 0, as the compiled table does
                self._intern(origin)
                self._watermarks[origin] = 0
                self._logs[origin] = []
                self._sorted[origin] = 0
                self._live.setdefault(origin, 0)
                self._seen.setdefault(origin, 0)
            if stamp > self._watermarks[origin]:
                self._watermarks[origin] = stamp
                self._changes += 1

    @property
    def delta_cut(self) -> bool:
        """Whether the last delta_frames call stopped at ``max_bytes`` with
        entries still due (False: it held the whole delta)."""
        return self._delta_cut

    @property
    def delta_top(self) -> int:
        """The stamp of the last entry the last delta_frames call took (0:
        none); with delta_cut, the delta holds every due entry below it."""
        return self._delta_top

    @property
    def own_refused_stamp(self) -> int:
        """The highest stamp, within the horizon, of the entries refused because
        they came under ``own_origin`` (0: none): proof that someone forged an
        entry of this node's origin, which the node then moves its stamps past."""
        return self._own_refused_stamp

    @property
    def changes(self) -> int:
        """A count that grows whenever an entry is set, merged (won or lost) or
        restamped, or the table cleared: when it has not moved, neither have
        the watermarks nor the origins' counts (a digest can be reused)."""
        return self._changes

    def restamp(self, origin: str, first_stamp: int) -> int:
        """Give every entry held under ``origin`` a new stamp, consecutive from
        ``first_stamp`` in their current (stamp, key) order; the origin's
        watermark becomes the last of them if that is higher. Returns how many
        entries were restamped. (A node whose own origin's watermark was forged
        above its clock moves its entries past the forgery this way, so that
        peers fetch them again.)"""
        origin = _check_str("origin", origin)
        first = _check_u64("first_stamp", first_stamp)
        if not self._live.get(origin):
            return 0
        kept: List[Tuple[int, str]] = []
        prev = None
        for rec in self._sorted_log(origin):
            if rec != prev and self._is_live(origin, rec):
                kept.append(rec)
            prev = rec
        n = len(kept)
        if first + n - 1 > _U64_MAX:
            raise ValueError(f"restamp: {n} stamps from {first} pass 2**64 - 1")
        log = self._logs[origin]
        log[:] = [(first + i, key) for i, (_, key) in enumerate(kept)]
        self._sorted[origin] = n
        for stamp, key in log:
            self._entries[key][_STAMP] = stamp
        self._changes += 1
        if first + n - 1 > self._watermarks[origin]:
            self._watermarks[origin] = first + n - 1
        return n

    # -- deltas --------------------------------------------------------------------

    def delta(self, watermarks: Mapping[str, int], limit: Optional[int] = None) -> List[Entry]:
        """Entries held whose stamp is above ``watermarks.get(entry.origin, -1)``,
        sorted by (stamp, origin, key), at most ``limit`` of them.

        A cut never splits the entries one origin wrote with one stamp unless that
        group alone is longer than ``limit``, so that any prefix leaves the
        receiver's watermarks true.
        """
        if limit is not None:
            limit = _check_size("limit", limit)
        due = self._due(watermarks)
        out: List[Tuple[int, str, str]] = []
        for rec in due:
            if limit is not None and len(out) == limit:
                out = out[: _back_off(out, rec)]
                break
            out.append(rec)
        return [self._entry(key) for _, _, key in out]

    def delta_frames(
        self,
        sender_id: str,
        watermarks: Mapping[str, int],
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_bytes: Optional[int] = None,
    ) -> List[bytes]:
        """The delta, encoded as GossipBatch frames of at most ``max_frame_size``
        bytes each (length prefix included), stopping before the frames' total
        would pass ``max_bytes`` (yet with at least one entry when any is due).

        An entry that no frame of ``max_frame_size`` can hold (with this
        sender_id) is skipped and counted as ``unrelayable``: it never raises.
        """
        sender_id = _check_str("sender_id", sender_id)
        max_frame_size = _check_max_frame_size(max_frame_size)
        if max_bytes is not None:
            max_bytes = _check_size("max_bytes", max_bytes)
        sender = sender_id.encode("utf-8")
        base = 4 + 2 + 2 + len(sender) + 2 + 4  # prefix, header, sender, counts
        # Pass 1: how far the byte budget reaches, packing frames greedily.
        picked: List[Tuple[int, str, str]] = []
        total = 0
        packer = _Packer(base, max_frame_size)
        self._delta_cut = False
        self._delta_top = 0
        for rec in self._due(watermarks):
            _, origin, key = rec
            cur = self._entries[key]
            size = _entry_size(key, cur[_VALUE], cur[_EXPIRES])
            if not packer.fits(origin, size):
                self._refused["unrelayable"] += 1
                continue
            grow = packer.add(origin, size, key)
            if max_bytes is not None and picked and total + grow > max_bytes:
                picked = picked[: _back_off(picked, rec)]
                self._delta_cut = True
                break
            total += grow
            picked.append(rec)
        self._delta_top = picked[-1][0] if picked else 0
        # Pass 2: encode; the greedy packing of a prefix is the prefix of the packing.
        frames: List[bytes] = []
        packer = _Packer(base, max_frame_size)
        batch: List[str] = []
        for _, origin, key in picked:
            cur = self._entries[key]
            packer.add(origin, _entry_size(key, cur[_VALUE], cur[_EXPIRES]), key)
            if packer.new_frame and batch:
                frames.append(self._encode_batch(sender, batch))
                batch = []
            batch.append(key)
        if batch:
            frames.append(self._encode_batch(sender, batch))
        return frames

    def _encode_batch(self, sender: bytes, keys: List[str]) -> bytes:
        origins: Dict[str, int] = {}
        body = []
        for key in keys:
            value, version, origin, stamp, expires, _ = self._entries[key]
            index = origins.setdefault(origin, len(origins))
            k = key.encode("utf-8")
            body.append(
                len(k).to_bytes(2, "big")
                + k
                + index.to_bytes(2, "big")
                + version.to_bytes(8, "big")
                + stamp.to_bytes(8, "big")
            )
            # the value tag (with V_EXPIRES and the expiry when it expires)
            exp = b"" if not expires else expires.to_bytes(8, "big")
            flag = 4 if expires else 0
            if type(value) is bytes:
                body.append(bytes((1 | flag,)) + exp + len(value).to_bytes(4, "big") + value)
            elif value is None:
                body.append(b"\x02")
            else:
                body.append(bytes((flag,)) + exp + value.to_bytes(8, "big"))
        head = [
            b"\x01\x06",
            len(sender).to_bytes(2, "big"),
            sender,
            len(origins).to_bytes(2, "big"),
        ]
        for origin in origins:
            o = origin.encode("utf-8")
            head.append(len(o).to_bytes(2, "big") + o)
        head.append(len(keys).to_bytes(4, "big"))
        payload = b"".join(head + body)
        return len(payload).to_bytes(4, "big") + payload


def _back_off(out: List[Tuple[int, str, str]], nxt: Tuple[int, str, str]) -> int:
    """Where to cut ``out`` (a prefix of the due stream) given the record after it:
    not inside a group of one origin's equal stamps, unless the group is all of it."""
    if not out or out[-1][:2] != nxt[:2]:
        return len(out)
    cut = len(out) - 1
    while cut > 0 and out[cut - 1][:2] == nxt[:2]:
        cut -= 1
    return cut or len(out)


class _Packer:
    """Greedy packing of batch entries into frames of at most ``max_frame_size``."""

    __slots__ = ("base", "max_frame_size", "size", "origins", "new_frame")

    def __init__(self, base: int, max_frame_size: int) -> None:
        self.base = base
        self.max_frame_size = max_frame_size
        self.size = 0  # of the open frame; 0 when none is open
        self.origins: Dict[str, None] = {}
        self.new_frame = False

    def fits(self, origin: str, entry_size: int) -> bool:
        """Whether a frame holding only this entry is small enough."""
        return self.base + 2 + len(origin.encode("utf-8")) + entry_size <= self.max_frame_size

    def add(self, origin: str, entry_size: int, key: str) -> int:
        """Place one entry; returns how many bytes the frames grew by."""
        olen = 2 + len(origin.encode("utf-8"))
        alone = self.base + olen + entry_size
        if alone > self.max_frame_size:
            raise ValueError(
                f"entry for key {key!r} needs a {alone}-byte frame, more than "
                f"max_frame_size {self.max_frame_size}"
            )
        grow = entry_size + (0 if origin in self.origins else olen)
        if (
            self.size
            and self.size + grow <= self.max_frame_size
            and (origin in self.origins or len(self.origins) < _MAX_STR)
        ):
            self.size += grow
            self.new_frame = False
        else:
            self.origins = {}
            grow = alone
            self.size = alone
            self.new_frame = True
        self.origins[origin] = None
        return grow
