"""Shared fixtures: every hot-path test body runs against both implementations.

The fixtures ``codec``, ``table`` and ``sampler`` yield the compiled module
(id ``c-extension``) and its pure-Python twin (id ``pure-python``).
"""

from __future__ import annotations

import asyncio
from types import ModuleType

import pytest

from fastgossip._impl import load

IMPLS = ["cython", "python"]
IDS = ["c-extension", "pure-python"]


def _module_fixture(name: str):
    @pytest.fixture(params=IMPLS, ids=IDS)
    def fixture(request: pytest.FixtureRequest) -> ModuleType:
        return load(name, request.param)

    fixture.__name__ = name
    return fixture


codec = _module_fixture("codec")
table = _module_fixture("table")
sampler = _module_fixture("sampler")


@pytest.fixture(params=IMPLS, ids=IDS)
def implementation(request: pytest.FixtureRequest) -> str:
    """The implementation name, for tests that start nodes."""
    return request.param


async def wait_for(predicate, timeout: float = 10.0, interval: float = 0.005) -> None:
    """Poll ``predicate()`` until true; fail the test after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        await asyncio.sleep(interval)
