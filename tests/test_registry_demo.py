"""``fastgossip registry``: real service processes publish ephemeral keys; the
watcher sees each appear, and disappear when its process leaves or is killed."""

from __future__ import annotations

import io

from fastgossip.registry_demo import run_registry


async def test_the_registry_demo_shows_services_come_and_go() -> None:
    out = io.StringIO()
    assert await run_registry(out=out, timeout=60.0), out.getvalue()
    lines = [line.split()[:2] for line in out.getvalue().splitlines() if line[:1] in "+-"]
    for name in ("api", "web", "db", "cache"):
        assert ["+", f"svc/{name}"] in lines, out.getvalue()
    assert lines.index(["-", "svc/web"]) > lines.index(["+", "svc/web"])
    assert lines.index(["-", "svc/db"]) > lines.index(["+", "svc/db"])
    assert ["-", "svc/api"] not in lines and ["-", "svc/cache"] not in lines
    assert "registry now: ['svc/api', 'svc/cache']" in out.getvalue()
