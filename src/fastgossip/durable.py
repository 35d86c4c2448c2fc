"""Durable mode: a data directory that keeps a node's table, clock and identity
across crashes (``NodeConfig(data_dir=..., fsync=...)``).

Layout of a data directory::

    LOCK       held (flock) by the one process that has the directory open
    snapshot   the whole table at some moment: a meta record, then batch records
    log        what the node applied since that snapshot, appended

Both files are sequences of **records**::

    u32 length (of what follows the crc)   u32 crc32 (zlib) of it   u8 kind   body

``kind`` ``B``: ``body`` is one complete GossipBatch frame, length prefix
included, as the wire carries it (a batch a peer sent and this node merged, or
a batch of this node's own writes). ``M``: ``body`` is JSON: ``node_id``,
``origin`` (the life the node resumes), ``version_floor`` and ``stamp_floor``
(the node's clocks restart past them) and, in a snapshot, ``watermarks``.

Recovery reads the snapshot (every record must be whole: it was written to a
temporary file, synced and renamed), then the log through the table's compiled
``merge_frame``. A log that ends in a record cut short or failing its crc (a
write torn by a crash) is cut there, with a warning, and never replayed as
data; a bad record *followed by good ones* is corruption, not a torn tail: the
directory is refused with ``DataDirError`` rather than silently losing what
follows. Merging is idempotent and commutative (last writer wins, watermarks
are per-origin maxima), so replaying a record twice, or a log over the
snapshot that already holds it, changes nothing.

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
import zlib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .errors import NodeError

__all__ = ["DataDir", "DataDirError", "DurabilityError", "FSYNC_POLICIES", "Journal", "Recovered"]

log = logging.getLogger("fastgossip")

FSYNC_POLICIES = ("always", "interval", "never")
KIND_BATCH = 0x42  # "B"
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
    cut_bytes: int = 0  # a torn tail cut off the log
    seconds: float = 0.0


class Journal:
    """What the core applied since the last flush (the core appends, the node
    flushes): this node's own writes as tuples, merged batch frames as they
    came, and whether entries were dropped (a snapshot is then owed)."""

    __slots__ = ("entries", "frames", "frame_bytes", "reshaped")

    def __init__(self) -> None:
        self.entries: List[Tuple[Any, ...]] = []
        self.frames: List[bytes] = []
        self.frame_bytes = 0
        self.reshaped = False

    def entry(
        self, key: str, value: Any, version: int, origin: str, stamp: int, expires: int
    ) -> None:
        self.entries.append((key, value, version, origin, stamp, expires))

    def frame(self, frame: bytes) -> None:
        self.frames.append(frame)
        self.frame_bytes += len(frame)

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
    def recover(self, state: Any, max_frame_size: int) -> Recovered:
        """Merge the snapshot and the log into ``state`` (a fresh table, before
        the core owns it: its own-origin guard would refuse this node's own
        entries) and open the log for appending."""
        import time

        started = time.perf_counter()
        got = Recovered()
        snap = self._read("snapshot")
        if snap:
            records, end, torn = read_records(snap)
            if end != len(snap):
                raise DataDirError(
                    f"{os.path.join(self.path, 'snapshot')} is damaged at byte {end} of "
                    f"{len(snap)} (a snapshot is written whole and renamed: this is not a "
                    "crash's torn write); move it away to start from the log alone"
                )
            self._apply(records, state, max_frame_size, got, snapshot=True)
            got.snapshot_bytes = self.snapshot_bytes = len(snap)
        data = self._read("log")
        records, end, torn = read_records(data)
        if end != len(data):
            if not torn:
                raise DataDirError(
                    f"{os.path.join(self.path, 'log')} is damaged at byte {end} of {len(data)} "
                    "with whole records after the damage (not a torn tail): refusing to "
                    "drop them; copy the directory away and inspect it"
                )
            got.cut_bytes = len(data) - end
            log.warning(
                "%s: the log of %s ended in %d bytes of a torn write (a crash while "
                "appending): cut off, not replayed",
                self.node_id,
                self.path,
                got.cut_bytes,
            )
        self._apply(records, state, max_frame_size, got, snapshot=False)
        try:
            self._log_fd = os.open(
                os.path.join(self.path, "log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
            )
            if got.cut_bytes:
                os.ftruncate(self._log_fd, end)
                os.fsync(self._log_fd)
        except OSError as exc:
            raise DataDirError(
                f"cannot write to data directory {self.path}: {exc.strerror or exc}"
            ) from exc
        got.log_bytes = self.log_bytes = end
        if got.watermarks:
            state.raise_watermarks(got.watermarks)
        got.seconds = time.perf_counter() - started
        return got

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
    ) -> None:
        merge = state.merge_frame
        for kind, body in records:
            if kind == KIND_BATCH:
                got.entries += merge(body, max(max_frame_size, len(body)))
            elif kind == KIND_META:
                meta = json.loads(body)
                node = meta.get("node_id")
                if node != self.node_id:
                    raise DataDirError(
                        f"data directory {self.path} belongs to node {node!r}, not {self.node_id!r}"
                    )
                got.origin = meta.get("origin") or got.origin
                got.version_floor = max(got.version_floor, int(meta.get("version_floor", 0)))
                got.stamp_floor = max(got.stamp_floor, int(meta.get("stamp_floor", 0)))
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
        view = memoryview(data)
        written = 0
        try:
            while written < len(data):
                written += os.write(fd, view[written:])
            if sync:
                os.fsync(fd)
        except OSError as exc:
            # a partial append would be a torn record in the middle of later
            # ones: cut the log back to where this one began
            if written:
                try:
                    os.ftruncate(fd, self.log_bytes)
                except OSError:
                    pass
            raise DurabilityError(exc.errno, f"cannot write the log: {exc.strerror}") from exc
        self.log_bytes += len(data)

    def write_snapshot(self, data: bytes, sync: bool) -> None:
        """Replace the snapshot with ``data`` (whole records) and empty the log."""
        tmp = os.path.join(self.path, "snapshot.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                view = memoryview(data)
                written = 0
                while written < len(data):
                    written += os.write(fd, view[written:])
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, os.path.join(self.path, "snapshot"))
            if sync:
                self._sync_dir()
            if self._log_fd is not None:
                os.ftruncate(self._log_fd, 0)
                if sync:
                    os.fsync(self._log_fd)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise DurabilityError(exc.errno, f"cannot write a snapshot: {exc.strerror}") from exc
        self.snapshot_bytes = len(data)
        self.log_bytes = 0

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
) -> bytes:
    meta: Dict[str, Any] = {
        "node_id": node_id,
        "origin": origin,
        "version_floor": version_floor,
        "stamp_floor": stamp_floor,
    }
    if watermarks is not None:
        meta["watermarks"] = watermarks
    return record(KIND_META, json.dumps(meta, separators=(",", ":")).encode())
