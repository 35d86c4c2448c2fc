"""The agent's status page in a real headless browser (Debian's chromium and
chromedriver, driven by selenium): it loads, shows the three members of a local
three-agent cluster, and updates when a key is written on another agent and
when a member leaves. Skips with one line where no browser is installed.

``FASTGOSSIP_SCREENSHOT=path`` saves the page as it ends (docs/status-page.png
was made so)."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from typing import Any, Callable

import pytest

pytest.importorskip("aiohttp", reason="the agent extra (aiohttp) is not installed")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="no browser: install Debian's chromium and chromium-driver to run the status page test",
)

from tests.test_agent import agents, stop, url  # noqa: E402


def _browser() -> Any:
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM  # type: ignore[assignment]
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1200,800",
    ):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(DRIVER), options=opts)


def _until(driver: Any, what: str, predicate: Callable[[Any], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate(driver):
        if time.monotonic() > deadline:
            raise AssertionError(f"the page did not show {what} within {timeout}s")
        time.sleep(0.05)


def _rows(driver: Any, table: str) -> list:
    """The table's rows' texts, read in the page in one go (the page
    replaces its rows every second: elements found first may be gone)."""
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(r => r.textContent)",
        f"#{table} tbody tr",
    )


def _status(driver: Any, node: str) -> str:
    return driver.execute_script(
        'const r = document.querySelector(`#members tbody tr[data-node="${arguments[0]}"]`);'
        "return r ? r.dataset.status : '';",
        node,
    )


async def test_the_status_page_shows_members_and_live_changes() -> None:
    a, b, c = await agents(3)
    driver = await asyncio.to_thread(_browser)
    try:
        await asyncio.to_thread(driver.get, url(a, "/"))

        def three_alive(d: Any) -> bool:
            return all(_status(d, n) == "alive" for n in ("a0", "a1", "a2"))

        await asyncio.to_thread(_until, driver, "three alive members", three_alive)
        assert len(_rows(driver, "members")) == 3
        # a key written on another agent appears, live (no reload)
        b.node.set("app/color", b"blue")  # type: ignore[union-attr]

        def shows_key(d: Any) -> bool:
            return any("app/color" in r and "blue" in r for r in _rows(d, "keys"))

        await asyncio.to_thread(_until, driver, "the key written on a1", shows_key)
        # a member leaves
        await c.stop()
        await asyncio.to_thread(_until, driver, "a2 left", lambda d: _status(d, "a2") == "left")
        shot = os.environ.get("FASTGOSSIP_SCREENSHOT")
        if shot:
            await asyncio.to_thread(driver.save_screenshot, shot)
    finally:
        await asyncio.to_thread(driver.quit)
        await stop(a, b, c)
