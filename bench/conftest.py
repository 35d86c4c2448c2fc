"""Shared fixtures for the benchmarks.

``run_case(group, variant)`` times one row of a comparison table with
pytest-benchmark and asserts its result, so ``pytest bench/ --benchmark-disable``
is a correctness smoke test. A row whose module is missing (msgpack, orjson, an
unbuilt extension) is skipped with the reason.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Callable, Dict

import pytest

from bench import workloads
from bench.workloads import GROUPS, build

STATEFUL_ROUNDS = 100  # timed calls of a merge; each gets a fresh batch


def _require(modules: tuple, who: str) -> None:
    for name in modules:
        pytest.importorskip(name, reason=f"{who} needs {name}")


@pytest.fixture
def run_case(benchmark: Any) -> Callable[[str, str], Any]:
    """Time ``GROUPS[group][variant]`` and check its result; returns the result."""

    def run(group: str, variant: str) -> Any:
        _require(GROUPS[group][variant].requires, variant)
        case = build(group, variant)
        benchmark.group = group
        benchmark.extra_info.update(variant=variant, units=case.units, unit=case.unit)
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
