"""bench/secure_fuzz.py, small: the rules it checks hold on both implementations."""

from __future__ import annotations

import pytest

from bench.secure_fuzz import KINDS, run


@pytest.mark.parametrize("implementation", ["cython", "python"])
def test_the_fuzz_finds_nothing_and_covers_every_kind(implementation: str) -> None:
    r = run(inputs=1600, seed=5, implementation=implementation)
    assert set(r["kinds"]) == set(KINDS) and all(v == 200 for v in r["kinds"].values())
    # every replayed or reordered stream is refused; truncations never are
    assert r["refused"]["replay"] == r["refused"]["reorder"] == 200
    assert r["refused"]["truncate"] == 0
    assert r["refused"]["flip"] >= 190 and r["yielded_genuine_prefix"] > 0
