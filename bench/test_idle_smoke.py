"""bench.idle's fastgossip side, smallest: 3 node processes, a 1 s window, no
serf. Checks that it measures something and leaves no process behind; never
checks timings."""

from __future__ import annotations

import os

from bench import idle


def test_idle_smoke() -> None:
    result = idle.run_fastgossip(nodes=3, seconds=1.0, settle=0.0)
    assert result["cpu_s"] > 0 or (result["cpu_s_schedstat"] or 0) > 0
    assert result["cpu_ms_per_node_s"] >= 0
    assert result["rss_mb_mean"] > 0
    assert result["rounds_per_node_s"] > 0
    assert len(result["pids"]) == 3
    for pid in result["pids"]:  # stopped and reaped: no zombie, no orphan
        assert not os.path.exists(f"/proc/{pid}"), f"node process {pid} left behind"
