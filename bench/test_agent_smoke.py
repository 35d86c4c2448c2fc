"""bench.agent, smallest: the fixed-rate client against an agent process, the
metrics scrape with made-up members, a short watch; then the report's "Agent"
section rendered. Checks shapes, never timings."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("aiohttp", reason="the agent extra (aiohttp) is not installed")

from bench import agent, report  # noqa: E402


def test_agent_smoke() -> None:
    result = {
        "get_wrk": {"skipped": "smoke"},
        "get_at_rate": agent.measure_rate(200.0, 0.3),
        "watch": agent.measure_watch(3, 0.2),
        "metrics": asyncio.run(agent._metrics_with_members(50, 2)),
        "idle": {
            "seconds": 0,
            "agent_cpu_percent": 0,
            "node_cpu_percent": 0,
            "difference_points": 0,
        },  # fmt: skip
    }
    assert result["get_at_rate"]["sent"] == 60 and result["get_at_rate"]["p99_ms"] > 0
    assert result["watch"]["delivered"] == 3
    assert result["metrics"]["members"] == 50 and result["metrics"]["bytes"] > 0
    lines = report.agent_section(result)
    assert any("/metrics with 50 members" in line for line in lines)
