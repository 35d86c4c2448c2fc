"""bench.sim_gc, smallest: a few schedules on both implementations through
the benchmark's own functions; every one converges with deletes kept."""

from __future__ import annotations

from bench import sim_gc


def test_a_few_schedules_pass_on_both_implementations() -> None:
    for impl in ("cython", "python"):
        row = sim_gc.run(8, impl)
        assert row["passed"] == 8, row["failed"]
        assert row["tombstones_collected"] > 0 and row["resets_received"] > 0
