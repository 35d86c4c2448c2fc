"""Stream decoding: 1 MiB of ~54-byte Gossip frames fed in 4 KiB chunks.

Two tables: each chunk's messages handled and dropped before the next
(``w.STREAM``, how a protocol consumes a stream), and every message kept in one
list (``w.STREAM_KEPT``, which mostly measures the allocator: see
``bench/workloads.py``). Rows: FrameDecoder.feed (messages) and .feed_frames
(frame bytes), compiled and twin; msgpack.Unpacker.feed over the same messages
packed as lists; a struct-based splitter in Python (frame bytes).
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

from bench import workloads as w


@pytest.mark.parametrize(
    "group, variant", [(g, v) for g in (w.STREAM, w.STREAM_KEPT) for v in w.variants(g)]
)
def test_stream_decode(run_case: Callable[[str, str], Any], group: str, variant: str) -> None:
    run_case(group, variant)
