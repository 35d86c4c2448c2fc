"""The peer sampler: k = 3 and 31 of N = 1000 peers, XorShift64.sample against random.sample."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from bench import workloads as w
from bench.conftest import PER_OP

# timed FAST_BATCH operations per call, reported per operation (bench/conftest.py)
pytestmark = PER_OP


@pytest.mark.parametrize("k", w.SAMPLE_KS)
@pytest.mark.parametrize("variant", w.variants(w.sample_group(w.SAMPLE_KS[0])))
def test_sample(run_case: Callable[[str, str], Any], variant: str, k: int) -> None:
    run_case(w.sample_group(k), variant)
