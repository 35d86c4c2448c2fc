"""Shared fixtures for the benchmarks.

``run_case(group, variant)`` times one row of a comparison table with
pytest-benchmark and asserts its result, so ``pytest bench/ --benchmark-disable``
is a correctness smoke test. A row whose module is missing (msgpack, orjson, an
unbuilt extension) is skipped with the reason.

The fast rows (codec, sampler: ``Case.batch > 1``) are timed ``batch``
operations per call and reported per operation: pytest-benchmark's own
~250-300 ns per timed call otherwise made a 25 ns encode look 10x slower and
squeezed every ratio of those tables (Gossip round trip against msgpack 4.4x
instead of ~14x). Their modules set ``pytestmark = PER_OP`` (a clock that
counts in units of ``batch`` operations, and GC off during timing as timeit
does); ``run_case`` checks that the marker and the case agree.
"""

from __future__ import annotations

import time
from types import ModuleType
from typing import Any, Callable, Dict

import pytest

from bench import workloads
from bench.workloads import FAST_BATCH, GROUPS, build

STATEFUL_ROUNDS = 100  # timed calls of a merge; each gets a fresh batch
MAX_BATCHED_ROUNDS = 10_000


def per_op_clock() -> float:
    """perf_counter in units of FAST_BATCH operations: a timed call of a
    batched case then reads as the time of one operation."""
    return time.perf_counter() / FAST_BATCH


PER_OP = pytest.mark.benchmark(timer=per_op_clock, disable_gc=True)


def _require(modules: tuple, who: str) -> None:
    for name in modules:
        pytest.importorskip(name, reason=f"{who} needs {name}")


def _per_op_marked(request: pytest.FixtureRequest) -> bool:
    marker = request.node.get_closest_marker("benchmark")
    return marker is not None and marker.kwargs.get("timer") is per_op_clock


def _time_batched(benchmark: Any, config: pytest.Config, case: Any) -> Any:
    """One timed call runs ``case.batch`` operations; as many rounds as fit in
    --benchmark-max-time, at least --benchmark-min-rounds."""
    batched = case.batched()
    t0 = time.perf_counter()
    batched(case.arg)  # a warm-up, and how long a call takes
    once = max(time.perf_counter() - t0, 1e-9)
    max_time = float(config.getoption("benchmark_max_time"))
    min_rounds = int(config.getoption("benchmark_min_rounds"))
    rounds = max(min_rounds, min(int(max_time / once), MAX_BATCHED_ROUNDS))
    return benchmark.pedantic(batched, args=(case.arg,), rounds=rounds)


@pytest.fixture
def run_case(benchmark: Any, request: pytest.FixtureRequest) -> Callable[[str, str], Any]:
    """Time ``GROUPS[group][variant]`` and check its result; returns the result."""

    def run(group: str, variant: str) -> Any:
        _require(GROUPS[group][variant].requires, variant)
        case = build(group, variant)
        benchmark.group = group
        benchmark.extra_info.update(variant=variant, units=case.units, unit=case.unit)
        if (case.batch > 1) != _per_op_marked(request):
            raise AssertionError(
                f"{group}: a case of batch {case.batch} needs its module to set "
                "pytestmark = PER_OP exactly when batch > 1 (else the figures are "
                "per call, not per operation)"
            )
        if case.batch > 1:
            assert case.batch == FAST_BATCH and case.make_arg is None
            benchmark.extra_info.update(ops_per_timed_call=case.batch)
            result = _time_batched(benchmark, request.config, case)
            case.check(result, case.arg)
            return result
        if case.make_arg is None:
            result = benchmark(case.fn, case.arg)
            case.check(result, case.arg)
            return result
        last: Dict[str, Any] = {}

        def setup() -> tuple:
            last["arg"] = case.make_arg()  # type: ignore[misc]
            return (last["arg"],), {}

        result = benchmark.pedantic(case.fn, setup=setup, rounds=STATEFUL_ROUNDS, iterations=1)
        case.check(result, last["arg"])
        return result

    return run


@pytest.fixture(params=["c", "py"], ids=["c-extension", "pure-python"])
def codec(request: pytest.FixtureRequest) -> ModuleType:
    """The compiled codec, then its twin."""
    name = f"fastgossip._codec_{request.param}"
    return pytest.importorskip(name, reason=f"{name} is not built")


@pytest.fixture
def gossip_msg(codec: ModuleType) -> Any:
    """The single message of the codec benchmarks."""
    return workloads.gossip_message(codec)


@pytest.fixture
def gossip_batch64(codec: ModuleType) -> Any:
    """The 64-entry batch of the codec benchmarks."""
    return workloads.gossip_batch(codec)
