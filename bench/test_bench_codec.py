"""The frame codec: one Gossip and one 64-entry GossipBatch, encode / decode / round trip,
and a batch decoded with every field then read.

Rows: fastgossip compiled and twin, msgpack (the same fields as a list),
orjson and stdlib json in the reference's frames (u32 length + JSON), and a
hand-written struct codec in fastgossip's own wire format.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

from bench import workloads as w
from bench.conftest import PER_OP

# timed FAST_BATCH operations per call, reported per operation (bench/conftest.py)
pytestmark = PER_OP


@pytest.mark.parametrize("variant", w.variants(w.G_ENC))
def test_gossip_encode(run_case: Callable[[str, str], Any], variant: str) -> None:
    run_case(w.G_ENC, variant)


@pytest.mark.parametrize("variant", w.variants(w.G_DEC))
def test_gossip_decode(run_case: Callable[[str, str], Any], variant: str) -> None:
    run_case(w.G_DEC, variant)


@pytest.mark.parametrize("variant", w.variants(w.G_RT))
def test_gossip_round_trip(run_case: Callable[[str, str], Any], variant: str) -> None:
    run_case(w.G_RT, variant)


@pytest.mark.parametrize("variant", w.variants(w.B_ENC))
def test_batch_encode(run_case: Callable[[str, str], Any], variant: str) -> None:
    run_case(w.B_ENC, variant)


@pytest.mark.parametrize("variant", w.variants(w.B_DEC))
def test_batch_decode(run_case: Callable[[str, str], Any], variant: str) -> None:
    run_case(w.B_DEC, variant)


@pytest.mark.parametrize("variant", w.variants(w.B_RT))
def test_batch_round_trip(run_case: Callable[[str, str], Any], variant: str) -> None:
    run_case(w.B_RT, variant)


@pytest.mark.parametrize("variant", w.variants(w.B_READ))
def test_batch_decode_read(run_case: Callable[[str, str], Any], variant: str) -> None:
    run_case(w.B_READ, variant)


def test_sample_shapes(gossip_msg: Any, gossip_batch64: Any) -> None:
    """The workload is what the docs say: 8-char sender, 17-char key, ~50-byte frame."""
    assert len(gossip_msg.sender_id) == 8 and len(gossip_msg.key) == 17
    assert isinstance(gossip_msg.value, int)
    assert len(w.struct_encode_gossip(gossip_msg)) == 54
    assert len(gossip_batch64.entries) == 64
