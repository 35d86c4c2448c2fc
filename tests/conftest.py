"""Shared fixtures: every hot-path test body runs against both implementations.

The fixtures ``codec``, ``table`` and ``sampler`` yield the compiled module
(id ``c-extension``) and its pure-Python twin (id ``pure-python``).
"""

from __future__ import annotations

import asyncio
import os
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


def _run_strict(coro_fn, kwargs: dict) -> None:
    """Run an async test on a fresh loop; fail it if the loop's exception
    handler is ever reached (an exception nobody awaited, a callback that
    raised), as uvloop's test base does."""
    errors: list[dict] = []
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    try:
        loop.run_until_complete(asyncio.wait_for(coro_fn(**kwargs), timeout=120))
        # let transports close and callbacks run before judging
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        try:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
    if errors:
        raise AssertionError(f"event loop exception handler was called: {errors!r}")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function):
    """Run ``async def`` tests without needing a plugin."""
    fn = pyfuncitem.obj
    if asyncio.iscoroutinefunction(fn):
        names = pyfuncitem._fixtureinfo.argnames
        _run_strict(fn, {n: pyfuncitem.funcargs[n] for n in names})
        return True
    return None


def child_env() -> dict:
    """This environment, with PYTHONPATH such that a child process imports the
    fastgossip this process imported (installed, or src/ through PYTHONPATH):
    a clean clone has no compiled modules in its src/."""
    import fastgossip

    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.abspath(fastgossip.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([here] + [p for p in [env.get("PYTHONPATH")] if p])
    return env
