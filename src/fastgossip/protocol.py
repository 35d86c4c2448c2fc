"""The asyncio Protocol that carries frames between two nodes.

Thin by design (asyncpg's shape): ``data_received`` feeds the compiled frame
decoder once per chunk, hands each GossipBatch frame to the compiled table in
one call, and dispatches the few other messages to the node. One class serves
both the connections a node opens and those it accepts.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Iterable, Optional

if TYPE_CHECKING:  # pragma: no cover
    from .node import GossipNode

log = logging.getLogger("fastgossip")


class GossipProtocol(asyncio.Protocol):
    """One TCP connection of a node, inbound or outbound."""

    __slots__ = (
        "node",
        "transport",
        "peer",
        "outbound",
        "paused",
        "closed",
        "_decoder",
        "_batch_type",
        "_closed_fut",
        "awaiting_since",
    )

    def __init__(self, node: GossipNode, outbound: bool) -> None:
        self.node = node
        self.outbound = outbound
        self.transport: Optional[asyncio.Transport] = None
        self.peer: Any = None
        self.paused = False
        self.closed = False
        self._decoder = node._codec.FrameDecoder(node.config.max_frame_size)
        self._batch_type = node._codec.T_GOSSIP_BATCH
        self._closed_fut: asyncio.Future[None] = node._loop.create_future()
        # loop time our last Digest(reply=True) went out unanswered, or 0.0
        self.awaiting_since = 0.0

    # -- asyncio callbacks -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peer = transport.get_extra_info("peername")
        high = self.node.config.write_buffer_high
        transport.set_write_buffer_limits(high=high, low=high // 4)
        self.node._connection_made(self)

    def data_received(self, data: bytes) -> None:
        node = self.node
        stats = node.stats
        stats.bytes_received += len(data)
        merged = 0
        try:
            frames = self._decoder.feed_frames(data)
            if not frames:
                return
            stats.frames_received += len(frames)
            batch_type = self._batch_type
            merge_frame = node._state.merge_frame
            max_frame_size = node.config.max_frame_size
            for frame in frames:
                if frame[5] == batch_type:
                    merged += merge_frame(frame, max_frame_size)
                else:
                    node._handle(node._codec.decode(frame), self)
        except (ValueError, TypeError) as exc:  # FrameError is a ValueError
            # a malformed frame, or a well-formed one carrying unusable values
            stats.bad_frames += 1
            log.warning(
                "%s: closing connection from %s: bad frame: %s", node.node_id, self.peer, exc
            )
            self.abort()
        except Exception:  # a bug of ours: lose this connection, never the node
            stats.bad_frames += 1
            log.exception("%s: error handling data from %s", node.node_id, self.peer)
            self.abort()
        finally:
            # entries merged before an error still count and move the clock
            if merged:
                stats.entries_merged += merged
                node._observe_merged()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.closed = True
        if not self._closed_fut.done():
            self._closed_fut.set_result(None)
        self.node._connection_lost(self, exc)

    # -- sending -----------------------------------------------------------
    def send_frames(self, frames: Iterable[bytes]) -> bool:
        """Write already-encoded frames; False (and nothing written) when the
        peer is not reading fast enough or the connection is gone."""
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            return False
        # The buffer size is checked as well as the pause flag: writelines()
        # does not call pause_writing() on some CPython releases (gh-127655).
        if self.paused or transport.get_write_buffer_size() >= self.node.config.write_buffer_high:
            self.node.stats.sends_dropped += 1
            return False
        frames = list(frames)
        if not frames:
            return True
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        stats = self.node.stats
        stats.frames_sent += len(frames)
        stats.bytes_sent += len(data)
        transport.write(data)
        return True

    def ask(self, digest_frame: bytes) -> None:
        """Send an encoded ``Digest(reply=True)`` and note the exchange as
        outstanding until the peer's ``Digest(reply=False)`` arrives."""
        if self.send_frames((digest_frame,)):
            self.awaiting_since = self.node._loop.time()

    def send(self, msg: Any) -> bool:
        return self.send_frames((self.node._codec.encode(msg),))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    async def wait_closed(self) -> None:
        await self._closed_fut
