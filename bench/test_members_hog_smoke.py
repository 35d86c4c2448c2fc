"""bench.members_hog, smallest: 10 nodes in one process, one CPU hog, 10 s, no
baseline, through the command line into a JSON file. Asserts no member was
declared dead, the result's shape, and that no hog is left behind; never
checks timings."""

from __future__ import annotations

import json
import os
from pathlib import Path

from bench import members_hog

NODES = 10
SECONDS = 10.0

RUN_KEYS = {
    "nodes",
    "seconds",
    "hogs",
    "implementation",
    "join_s",
    "hog_pids",
    "window_s",
    "wall_s",
    "dead_verdicts",
    "suspect_verdicts",
    "alive_again",
    "events_by_kind",
    "members_dead",
    "observers_with_dead",
    "loop_lag",
    "phi",
    "rounds",
    "stall_s",
    "cpu",
    "dead",
    "suspects",
    "events",
}


def test_members_hog_smoke(tmp_path: Path) -> None:
    out = tmp_path / "members_hog.json"
    argv = ["--nodes", str(NODES), "--seconds", str(SECONDS), "--hogs", "1"]
    argv += ["--baseline-seconds", "0", "--out", str(out)]
    assert members_hog.main(argv) == 0

    result = json.loads(out.read_text())
    assert result["benchmark"] == "members_hog"
    assert result["settings"]["nodes"] == NODES and result["settings"]["hogs"] == 1
    assert list(result["runs"]) == ["hog"]  # --baseline-seconds 0: no baseline
    r = result["runs"]["hog"]
    assert RUN_KEYS <= set(r), RUN_KEYS - set(r)
    assert r["nodes"] == NODES and r["hogs"] == 1 and len(r["hog_pids"]) == 1

    # the target: nobody declared dead (and the verdict lists agree with the count)
    assert r["dead_verdicts"] == 0, r["dead"]
    assert r["dead"] == [] and r["members_dead"] == [] and r["observers_with_dead"] == []
    assert result["target"] == {
        "what": result["target"]["what"],
        "target": 0,
        "measured": 0,
        "pass": True,
    }
    # every node met every other one while the cluster formed
    assert r["events_by_kind"]["join"]["joined"] == NODES * (NODES - 1)
    assert all(e["phase"] == "run" for e in r["events"])

    assert SECONDS <= r["window_s"] < SECONDS + 5
    assert r["wall_s"] >= r["window_s"]
    assert result["wall_s"] >= r["wall_s"]
    lag = r["loop_lag"]
    assert lag["samples"] > 0
    assert 0 <= lag["p50_ms"] <= lag["p99_ms"] <= lag["max_ms"]
    phi = r["phi"]
    assert phi["samples"] == phi["sample_passes"] * NODES * (NODES - 1) > 0
    assert 0 <= phi["p99"] <= phi["max"]
    assert len(phi["per_node_max"]) == NODES
    rounds = r["rounds"]
    assert rounds["expected_per_node"] > 0
    assert 0 < rounds["min"] <= rounds["median"] <= rounds["max"]
    assert r["cpu"]["process_cpu_s"] >= 0 and len(r["cpu"]["hog_cpu_s"]) == 1

    for pid in r["hog_pids"]:  # stopped and reaped: no zombie, no orphan
        assert not os.path.exists(f"/proc/{pid}"), f"hog process {pid} left behind"
    assert "target:" in members_hog.render(result)
