"""Durable mode: a data directory that keeps a node's table, clock and identity
across crashes (``NodeConfig(data_dir=..., fsync=...)``).

Layout of a data directory::

    LOCK       held (flock) by the one process that has the directory open
    snapshot   the whole table at some moment: a meta record, then batch records
    log        what the node applied since that snapshot, appended

Both files are sequences of **records**::

    u32 length (of what follows the crc)   u32 crc32 (zlib) of it   u8 kind   body

``kind`` ``B``: ``body`` is one complete GossipBatch frame, length prefix
included, as the wire carries it: a batch a peer sent and this node merged
(replayed with the guards it met live; its sender field, the peer's word,
decides nothing). ``O``: a batch of this node's own writes. ``M``: ``body`` is JSON: ``node_id``,
``origin`` (the life the node resumes), ``version_floor`` and ``stamp_floor``
(the node's clocks restart past them) and, in a snapshot, ``watermarks``.

Recovery reads the snapshot (every record must be whole: it was synced
before it replaced the last one), then the log through the table's compiled
``merge_frame``, a peer's batch with the guards it met live (nothing under
this node's own origin, no stamp or version beyond the clock-skew bounds). A
log that ends in a record cut short or failing its crc (a write torn by a
crash) is cut there, with a warning, and never replayed as data. A bad
record *followed by good ones* (an unsynced write half lost to a power cut,
or a failing disk) is cut there too, with an ERROR, and the rest is kept in
``log.damaged.<ms>``: never replayed past a hole (watermarks would claim what
is missing), never dropped silently. Each snapshot names a generation and the
log starts with a record naming the same one: a log older than its snapshot
(a crash between the snapshot's rename and the log's truncation) is dropped.
Merging is idempotent and commutative (last writer wins, watermarks are
per-origin maxima), so replaying a record twice changes nothing.

The log grows until it holds as many bytes as the last snapshot (at least 256
KiB); the next flush then writes a new snapshot and empties the log, so the
log stays within the live data's size (plus one flush) and the two files
within about twice it. Applying a Reset or
collecting tombstones drops entries, which a replay would bring back: such a
change makes the next flush a snapshot.

This module is I/O only; the node decides when to flush (``node.py``). Its
file operations are blocking and run in a worker thread.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .errors import NodeError

__all__ = ["DataDir", "DataDirError", "DurabilityError", "FSYNC_POLICIES", "Journal", "Recovered"]

log = logging.getLogger("fastgossip")

FSYNC_POLICIES = ("always", "interval", "never")
KIND_BATCH = 0x42  # "B": a batch a peer sent (replayed with the live guards)
KIND_OWN = 0x4F  # "O": a batch of this node's own writes
KIND_META = 0x4D  # "M"
_HEAD = struct.Struct(">II")
MIN_LOG_BEFORE_SNAPSHOT = 256 << 10
# a record's length is at most a frame (4 GiB) plus its kind byte
_MAX_RECORD = 0xFFFFFFFF


class DataDirError(NodeError):
    """A data directory that cannot be used: held by another process, not
    writable, corrupted, or another node's."""


class DurabilityError(NodeError, OSError):
    """Writes could not be made durable (the disk failed: ENOSPC, EIO, a
    read-only file system). The node keeps running, in memory."""


def record(kind: int, body: bytes) -> bytes:
    """One record: length, crc32, kind, body."""
    payload = bytes((kind,)) + body
    return _HEAD.pack(len(payload), zlib.crc32(payload)) + payload


def read_records(data: bytes) -> Tuple[List[Tuple[int, bytes]], int, bool]:
    """The whole records at the start of ``data``; where they end; and whether
    what follows (if anything) is a torn tail (True) or corruption (False: a
    bad record with a whole, valid one after it)."""
    out: List[Tuple[int, bytes]] = []
    pos, size = 0, len(data)
    while pos < size:
        if size - pos < _HEAD.size:
            return out, pos, True
        length, crc = _HEAD.unpack_from(data, pos)
        end = pos + _HEAD.size + length
        if length == 0 or end > size:
            return out, pos, _nothing_valid_after(data, pos + 1)
        payload = data[pos + _HEAD.size : end]
        if zlib.crc32(payload) != crc:
            return out, pos, _nothing_valid_after(data, pos + 1)
        out.append((payload[0], payload[1:]))
        pos = end
    return out, pos, True


def _nothing_valid_after(data: bytes, start: int) -> bool:
    """No whole record with a good crc starts anywhere after ``start`` (so a
    bad record there is the torn end of the last write, not damage in the
    middle). Scans byte by byte: only run on a damaged file."""
    size = len(data)
    for pos in range(start, size - _HEAD.size):
        length, crc = _HEAD.unpack_from(data, pos)
        if 0 < length <= size - pos - _HEAD.size and data[pos + _HEAD.size] in (
            KIND_BATCH,
            KIND_OWN,
            KIND_META,
        ):
            if zlib.crc32(data[pos + _HEAD.size : pos + _HEAD.size + length]) == crc:
                return False
    return True


@dataclass
class Recovered:
    """What a data directory held."""

    origin: Optional[str] = None
    version_floor: int = 0
    stamp_floor: int = 0
    watermarks: Dict[str, int] = field(default_factory=dict)
    entries: int = 0  # merged from the snapshot and the log
    snapshot_bytes: int = 0
    log_bytes: int = 0
    cut_bytes: int = 0  # a torn tail (or damage, or a stale log) cut off the log
    damaged_bytes: int = 0  # of which damage, kept aside in log.damaged.<ms>
    seconds: float = 0.0


class Journal:
    """What the core applied since the last flush (the core appends, the node
    flushes): this node's own writes as tuples, merged batch frames as they
    came, and whether entries were dropped (a snapshot is then owed)."""

    __slots__ = ("entries", "frames", "frame_bytes", "reshaped")

    # held for a flush at most; beyond it (a disk stuck in a write) what is
    # held is let go and the next flush writes a whole snapshot instead
    MAX_BYTES = 64 << 20
    MAX_ENTRIES = 1_000_000

    def __init__(self) -> None:
        self.entries: List[Tuple[Any, ...]] = []
        self.frames: List[bytes] = []
        self.frame_bytes = 0
        self.reshaped = False

    def entry(
        self, key: str, value: Any, version: int, origin: str, stamp: int, expires: int
    ) -> None:
        entries = self.entries
        entries.append((key, value, version, origin, stamp, expires))
        if len(entries) > self.MAX_ENTRIES:
            self._let_go()

    def frame(self, frame: bytes) -> None:
        self.frames.append(frame)
        self.frame_bytes += len(frame)
        if self.frame_bytes > self.MAX_BYTES:
            self._let_go()

    def _let_go(self) -> None:
        self.entries, self.frames, self.frame_bytes = [], [], 0
        self.reshaped = True

    def reshape(self) -> None:
        self.reshaped = True

    def __bool__(self) -> bool:
        return bool(self.entries or self.frames or self.reshaped)

    def take(self) -> Tuple[List[Tuple[Any, ...]], List[bytes], bool]:
        out = (self.entries, self.frames, self.reshaped)
        self.entries, self.frames, self.frame_bytes, self.reshaped = [], [], 0, False
        return out


class DataDir:
    """One open data directory (see the module docstring)."""

    def __init__(self, path: str, node_id: str) -> None:
        self.path = os.path.abspath(path)
        self.node_id = node_id
        self.snapshot_bytes = 0
        self.log_bytes = 0
        self.generation = 0  # of the snapshot (and of the log that follows it)
        self._lock_fd: Optional[int] = None
        self._log_fd: Optional[int] = None
        try:
            os.makedirs(self.path, exist_ok=True)
            fd = os.open(os.path.join(self.path, "LOCK"), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise DataDirError(
                f"cannot open data directory {self.path}: {exc.strerror or exc}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise DataDirError(
                    f"data directory {self.path} is in use by another process (pid {holder})"
                ) from None
            raise DataDirError(f"cannot lock {self.path}: {exc.strerror or exc}") from exc
        self._lock_fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # (the pid is a courtesy to whoever finds the lock held)

    # -- recovery ------------------------------------------------------------------
    def recover(
        self,
        state: Any,
        max_frame_size: int,
        max_stamp: int = (1 << 64) - 1,
        max_version: int = (1 << 64) - 1,
    ) -> Recovered:
        """Merge the snapshot and the log into ``state`` (a fresh table, before
        the core owns it) and open the log for appending. Batches a peer sent
        are merged with the guards they met when they came (stamps and
        versions at most ``max_stamp``/``max_version``, nothing under this
        node's own origin): a logged frame is the whole frame, entries it had
        refused included."""
        started = time.perf_counter()
        got = Recovered()
        snap = self._read("snapshot")
        snap_records: List[Tuple[int, bytes]] = []
        snap_gen: Optional[int] = None
        if snap:
            snap_records, end, _ = read_records(snap)
            if end != len(snap):
                raise DataDirError(
                    f"{os.path.join(self.path, 'snapshot')} is damaged at byte {end} of "
                    f"{len(snap)} (a snapshot is synced before it replaces the last one: "
                    "this is the disk failing); move it away to start from the log alone"
                )
            snap_gen = _generation(snap_records)
            got.snapshot_bytes = self.snapshot_bytes = len(snap)
        data = self._read("log")
        records, end, torn = read_records(data)
        if snap_gen is not None and records and _generation(records[:1]) != snap_gen:
            # a log of before the snapshot (a crash between the snapshot's
            # rename and the log's truncation): the snapshot holds it all
            log.info(
                "%s: the log in %s predates its snapshot: not replayed", self.node_id, self.path
            )
            records, end, torn = [], 0, True
            got.cut_bytes = len(data)
        elif end != len(data):
            got.cut_bytes = len(data) - end
            if torn:
                log.warning(
                    "%s: the log of %s ended in %d bytes of a torn write (a crash while "
                    "appending): cut off, not replayed",
                    self.node_id,
                    self.path,
                    got.cut_bytes,
                )
            else:
                kept = self._keep_aside(data[end:])
                got.damaged_bytes = got.cut_bytes
                log.error(
                    "%s: the log of %s is damaged at byte %d with whole records after it "
                    "(an unsynced write lost to a power cut, or the disk failing): the "
                    "node starts from what precedes it; the %d bytes after are kept in %s",
                    self.node_id,
                    self.path,
                    end,
                    got.cut_bytes,
                    kept,
                )
        self.generation = snap_gen or 0
        got.origin = _origin(snap_records) or _origin(records)
        guard = (got.origin, max_stamp, max_version)
        self._apply(snap_records, state, max_frame_size, got, True, guard)
        self._apply(records, state, max_frame_size, got, False, guard)
        try:
            self._log_fd = os.open(
                os.path.join(self.path, "log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
            )
            if got.cut_bytes:
                os.ftruncate(self._log_fd, end)
                os.fsync(self._log_fd)
            if end == 0 and snap_gen is not None:
                # (a log dropped, cut to nothing or missing: it starts again
                # naming its snapshot, or the next recovery drops what follows)
                head = self._head(snap_gen)
                os.write(self._log_fd, head)
                os.fsync(self._log_fd)
                end = len(head)
        except OSError as exc:
            raise DataDirError(
                f"cannot write to data directory {self.path}: {exc.strerror or exc}"
            ) from exc
        got.log_bytes = self.log_bytes = end
        if got.watermarks:
            state.raise_watermarks(got.watermarks)
        got.seconds = time.perf_counter() - started
        return got

    def _keep_aside(self, data: bytes) -> str:
        path = os.path.join(self.path, f"log.damaged.{time.time_ns() // 1_000_000}")
        try:
            with open(path, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise DataDirError(
                f"the log of {self.path} is damaged and its remainder could not be kept "
                f"aside ({exc.strerror or exc}): refusing to drop it"
            ) from exc
        return path

    def _read(self, name: str) -> bytes:
        try:
            with open(os.path.join(self.path, name), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return b""
        except OSError as exc:
            raise DataDirError(f"cannot read {name} in {self.path}: {exc}") from exc

    def _apply(
        self,
        records: List[Tuple[int, bytes]],
        state: Any,
        max_frame_size: int,
        got: Recovered,
        snapshot: bool,
        guard: Tuple[Optional[str], int, int],
    ) -> None:
        merge = state.merge_frame
        origin, max_stamp, max_version = guard
        top = (1 << 64) - 1
        for kind, body in records:
            if kind in (KIND_BATCH, KIND_OWN):
                size = max(max_frame_size, len(body))
                # (a peer's frame may name any sender: only the record's kind,
                # written by this node, says a batch is this node's own)
                if snapshot or kind == KIND_OWN:
                    got.entries += merge(body, size)
                else:  # a peer's batch: the guards it met live
                    state.own_origin = origin
                    try:
                        got.entries += merge(body, size, max_stamp, max_version)
                    finally:
                        state.own_origin = None
            elif kind == KIND_META:
                meta = json.loads(body)
                node = meta.get("node_id")
                if node != self.node_id:
                    raise DataDirError(
                        f"data directory {self.path} belongs to node {node!r}, not {self.node_id!r}"
                    )
                got.version_floor = max(got.version_floor, int(meta.get("version_floor", 0)))
                got.stamp_floor = min(top, max(got.stamp_floor, int(meta.get("stamp_floor", 0))))
                if snapshot and "watermarks" in meta:
                    got.watermarks = {str(o): int(s) for o, s in meta["watermarks"].items()}
            else:
                raise DataDirError(f"unknown record kind {kind:#x} in {self.path}")

    # -- writing (blocking: call from a worker thread) ---------------------------------
    def append(self, data: bytes, sync: bool) -> None:
        """Append whole records to the log (and fsync it when ``sync``)."""
        fd = self._log_fd
        if fd is None:
            raise DurabilityError(errno.EBADF, "the data directory is closed")
        try:
            _write_all(fd, data)
            if sync:
                os.fsync(fd)
        except OSError as exc:
            # a partial append would be a torn record in the middle of later
            # ones: cut the log back to where this one began
            try:
                os.ftruncate(fd, self.log_bytes)
            except OSError:
                pass
            raise DurabilityError(exc.errno, f"cannot write the log: {exc.strerror}") from exc
        self.log_bytes += len(data)

    def write_snapshot(self, data: bytes, sync: bool, generation: int = 0) -> None:
        """Replace the snapshot with ``data`` (whole records, its meta naming
        ``generation``) and start the log again with a record naming the same
        generation (so a log that outlives its snapshot is known: recover)."""
        tmp = os.path.join(self.path, "snapshot.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                _write_all(fd, data)
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, os.path.join(self.path, "snapshot"))
            if sync:
                self._sync_dir()
            head = self._head(generation)
            if self._log_fd is not None:
                os.ftruncate(self._log_fd, 0)
                os.write(self._log_fd, head)
                if sync:
                    os.fsync(self._log_fd)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise DurabilityError(exc.errno, f"cannot write a snapshot: {exc.strerror}") from exc
        self.snapshot_bytes = len(data)
        self.log_bytes = len(head)
        self.generation = generation

    def _head(self, generation: int) -> bytes:
        """The record a log starts with: the generation of its snapshot."""
        meta = {"node_id": self.node_id, "generation": generation}
        return record(KIND_META, json.dumps(meta).encode())

    def _sync_dir(self) -> None:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def snapshot_due(self) -> bool:
        return self.log_bytes >= max(MIN_LOG_BEFORE_SNAPSHOT, self.snapshot_bytes)

    def close(self) -> None:
        for name in ("_log_fd", "_lock_fd"):
            fd = getattr(self, name)
            if fd is not None:
                setattr(self, name, None)
                try:
                    os.close(fd)  # (closing the lock's descriptor releases the flock)
                except OSError:
                    pass


def meta_record(
    node_id: str,
    origin: str,
    version_floor: int,
    stamp_floor: int,
    watermarks: Optional[Dict[str, int]] = None,
    generation: Optional[int] = None,
) -> bytes:
    meta: Dict[str, Any] = {
        "node_id": node_id,
        "origin": origin,
        "version_floor": version_floor,
        "stamp_floor": stamp_floor,
    }
    if generation is not None:
        meta["generation"] = generation
    if watermarks is not None:
        meta["watermarks"] = watermarks
    return record(KIND_META, json.dumps(meta, separators=(",", ":")).encode())


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    written = 0
    while written < len(data):
        written += os.write(fd, view[written:])


def _metas(records: List[Tuple[int, bytes]]) -> Any:
    for kind, body in records:
        if kind == KIND_META:
            yield json.loads(body)


def _generation(records: List[Tuple[int, bytes]]) -> Optional[int]:
    """The generation the first record names (None: it names none)."""
    for meta in _metas(records[:1]):
        gen = meta.get("generation")
        return int(gen) if gen is not None else None
    return None


def _origin(records: List[Tuple[int, bytes]]) -> Optional[str]:
    for meta in _metas(records):
        if meta.get("origin"):
            return str(meta["origin"])
    return None
