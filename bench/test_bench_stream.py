"""Stream decoding: 1 MiB of ~54-byte Gossip frames fed in 4 KiB chunks.

Rows: FrameDecoder.feed (messages) and .feed_frames (frame bytes), compiled
and twin; msgpack.Unpacker.feed over the same messages packed as lists; a
struct-based splitter in Python (frame bytes).
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

from bench import workloads as w


@pytest.mark.parametrize("variant", w.variants(w.STREAM))
def test_stream_decode(run_case: Callable[[str, str], Any], variant: str) -> None:
    run_case(w.STREAM, variant)
