"""Messages over asyncio streams: one frame per message (docs/PROTOCOL.md).

``write_message`` encodes and writes a message, then drains. ``read_message``
reads one frame: it reads the 4-byte length prefix first and checks it against
``max_frame_size`` *before* reading (or buffering) the body, so a peer cannot
make it wait for, or allocate, more than that.

End of stream: a clean EOF between frames raises ``asyncio.IncompleteReadError``
(with ``partial == b""``), which callers can treat as "the peer closed". An EOF
inside a frame is a truncated frame and raises ``FrameError``. Any malformed
frame raises ``FrameError``; the stream is then out of step and should be
closed.

Both take ``codec=``, a codec module (``fastgossip._codec_c`` or
``fastgossip._codec_py``), for tests; by default they use ``fastgossip._codec``,
the implementation the process runs.
"""

from __future__ import annotations

import asyncio
from types import ModuleType
from typing import Optional

from . import _codec
from ._codec import DEFAULT_MAX_FRAME_SIZE
from ._messages import AnyMessage
from ._wire import PREFIX_SIZE as _PREFIX_SIZE
from .errors import FrameError

__all__ = ["read_message", "write_message"]


async def write_message(
    writer: asyncio.StreamWriter, msg: AnyMessage, *, codec: Optional[ModuleType] = None
) -> None:
    """Encode ``msg`` as one frame, write it and wait for the buffer to drain."""
    writer.write((codec or _codec).encode(msg))
    await writer.drain()


async def read_message(
    reader: asyncio.StreamReader,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    *,
    codec: Optional[ModuleType] = None,
) -> AnyMessage:
    """Read and decode one frame.

    Raises ``FrameError`` for a malformed frame (an oversized length prefix is
    refused before any of the body is read) and for an EOF inside a frame;
    ``asyncio.IncompleteReadError`` for a clean EOF before the frame's first
    byte.
    """
    mod = codec or _codec
    try:
        prefix = await reader.readexactly(_PREFIX_SIZE)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise _cut(len(exc.partial), None) from exc
        raise
    # the codec's own check of a length prefix, with its words: a FrameError
    # for a length below the minimum or above max_frame_size
    mod.FrameDecoder(max_frame_size).feed_frames(prefix)
    length = int.from_bytes(prefix, "big")
    try:
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise _cut(_PREFIX_SIZE + len(exc.partial), _PREFIX_SIZE + length) from exc
    msg: AnyMessage = mod.decode(prefix + body, max_frame_size)
    return msg


def _cut(have: int, total: Optional[int]) -> FrameError:
    of = "" if total is None else f" of {total}"
    return FrameError(f"connection closed after {have}{of} bytes of a frame at offset {have}", have)
