"""bench.churn, smallest: ``--quick`` (3 node processes, 5 s at 500 set/delete
cycles/s, tombstone_grace 1 s) through the command line into a JSON file.
Asserts that the cluster converged, that tombstones were collected on every
node and none is left, the result's shape, and that no node process is left
behind; never checks timings or rates."""

from __future__ import annotations

import json
import os
from pathlib import Path

from bench import churn


def test_churn_smoke(tmp_path: Path) -> None:
    out = tmp_path / "churn.json"
    assert churn.main(["--quick", "--out", str(out)]) == 0

    result = json.loads(out.read_text())
    assert result["benchmark"] == "churn"
    s = result["settings"]
    assert s["nodes"] == 3 and s["quick"] is True and s["grace_s"] == 1.0
    run = result["run"]
    assert len(run["pids"]) == 3 and len(run["writes"]) == 3

    # something was written on every node, and every cycle left a tombstone
    assert all(w["cycles"] > 0 for w in run["writes"])
    assert result["rate"]["cycles"] == sum(w["cycles"] for w in run["writes"])
    assert max(x["tombstones"] for row in run["samples"] for x in row["nodes"]) > 0

    # converged: every node's live table equal, no deleted key back
    conv = run["convergence"]
    assert conv["converged"], conv
    assert len(set(conv["hashes"])) == 1
    assert conv["stray_keys"] == [0, 0, 0]
    assert all(0 < k <= churn.LIVE_KEYS for k in conv["live_keys"])

    # collected: every node collected every cycle's tombstone, none is left
    col = run["collection"]
    assert col["all_collected"], col
    assert col["tombstones_left"] == [0, 0, 0]
    assert all(c > 0 for c in col["collected"])
    assert result["collected_check"]["every_cycle_collected_on_every_node"]
    assert run["final"]["equal"] and run["final"]["tombstones"] == [0, 0, 0]

    # the figures are there (not checked: timings)
    mem = result["memory"]
    assert len(mem["per_node"]) == 3
    assert all(r["rss_start_mib"] > 0 for r in mem["per_node"])
    assert result["tombstone_cost"]["tombstones_held"] >= s["cost_tombstones"]
    assert len(result["traffic_per_node"]) == 3
    assert {t["what"] for t in result["targets"]}
    assert "converged" in churn.render(result)

    for pid in run["pids"]:  # stopped and reaped: no zombie, no orphan
        assert not os.path.exists(f"/proc/{pid}"), f"node process {pid} left behind"
