"""The LWW table: merging a received 1000-entry batch (half newer, half older).

Tables of 10k and 100k keys. ``merge(entries)`` on decoded entries, and decode +
merge as one step (``merge_frame(frame)``); the baseline is a dict of tuples a
user would write by hand (fed by the compiled decoder, or by msgpack).
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

from bench import workloads as w


@pytest.mark.parametrize("n", w.TABLE_SIZES, ids=lambda n: f"{n // 1000}k")
@pytest.mark.parametrize("variant", w.variants(w.merge_group(w.TABLE_SIZES[0])))
def test_merge(run_case: Callable[[str, str], Any], variant: str, n: int) -> None:
    run_case(w.merge_group(n), variant)


@pytest.mark.parametrize("n", w.TABLE_SIZES, ids=lambda n: f"{n // 1000}k")
@pytest.mark.parametrize("variant", w.variants(w.decode_merge_group(w.TABLE_SIZES[0])))
def test_decode_merge(run_case: Callable[[str, str], Any], variant: str, n: int) -> None:
    run_case(w.decode_merge_group(n), variant)
