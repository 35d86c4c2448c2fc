"""bench.sim_members, smallest: 30-node clusters through the same functions as
the benchmark (formation, idle traffic, a join, a silent failure, crashes under
5 % loss), then the command line into a JSON file, and one row in its own
process as ``--row`` replays it. Loose bounds only (join within 5 rounds, no
false dead verdict, every crash seen dead); never timings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

from bench import sim_members as sm

NODES = 30


def _no_false_dead(formation: Dict[str, Any]) -> None:
    assert formation["stable_s"] is not None, formation
    assert formation["dead_pairs"] == 0, formation["dead_examples"]


def test_cluster_row_measures_idle_join_and_a_silent_failure() -> None:
    r = sm.cluster_row(NODES, ["idle", "join", "silent"], seed=1, keys=100)
    assert "error" not in r, r["error"]
    _no_false_dead(r["formation"])

    idle = r["idle"]
    assert idle["nodes"] == NODES and idle["window_rounds"] >= 50
    assert idle["bytes_per_node_round"] > 0
    assert idle["bytes_per_member_round"] == round(idle["bytes_per_node_round"] / NODES, 2)
    assert idle["member_events_in_window"] == {}

    assert r["table"]["converged_s"] is not None
    join = r["join"]
    assert join["members"] == NODES and join["keys"] == 100
    assert join["rounds"] is not None and join["rounds"] <= 5, join
    assert join["members_listing_joiner"] == NODES
    assert "dead" not in join["joiner_verdicts"] and "dead" not in join["other_verdicts"]

    silent = r["silent"]
    assert silent["observers"] == NODES  # the joiner watches too
    assert silent["missed"] == 0 and silent["dead_s"]["max"] is not None
    assert silent["recovered_s"] is not None, "views never whole again after the heal"
    assert "dead" not in silent["collateral_verdicts"], silent["collateral_examples"]
    assert r["peak_rss_mib"] > 0 and r["wall_s"] >= 0


def test_loss_row_sees_every_crash_and_no_false_dead() -> None:
    r = sm.loss_row(NODES, loss=0.05, seed=1, crashes=2, virtual_s=30.0)
    assert "error" not in r, r["error"]
    assert r["stopped"] == "window done" and r["virtual_s"] == 30.0
    assert r["false_dead"] == 0, r["false_dead_examples"]
    assert len(r["crashes"]) == 2 and r["missed"] == 0
    for v in r["crashes"].values():
        assert v["observers"] == NODES - 2 and v["dead_s"]["n"] == NODES - 2
        assert 0 <= v["dead_s"]["max"] <= 10.0, v
    assert r["detection_s"]["n"] == 2 * (NODES - 2)


def test_command_line_writes_the_json_shape(tmp_path: Path) -> None:
    out = tmp_path / "sim_members.json"
    argv = ["--idle", "20,30", "--join", "20", "--silent", "20", "--keys", "50"]
    argv += ["--loss-nodes", "20", "--loss-seconds", "25", "--loss-budget-min", "1"]
    argv += ["--in-process", "--out", str(out)]
    assert sm.main(argv) == 0
    result = json.loads(out.read_text())
    sm.validate(result)
    assert [r["nodes"] for r in result["idle"]] == [20, 30]
    assert [j["members"] for j in result["join"]] == [20]
    assert result["loss"]["nodes"] == 20 and result["loss"]["false_dead"] == 0
    fit = result["idle_extrapolation"]
    assert fit is not None and fit["at"] == 10_000 and len(fit["measured"]) == 2
    whats = [t["what"] for t in result["targets"]]
    assert "join at 100 members" in whats and any("false dead" in w for w in whats)
    text = sm.render(result)
    assert "1. join" in text and "2. idle traffic" in text and "targets" in text


def test_a_row_replays_in_its_own_process() -> None:
    spec = {"kind": "cluster", "nodes": 12, "phases": ["idle"], "seed": 2, "keys": 10}
    r = sm.run_in_child(spec, mem_cap_gib=None)
    assert "error" not in r, r
    assert r["idle"]["nodes"] == 12 and r["peak_rss_mib"] > 0
    assert "--row" in sm.replay_command(spec)


def test_whole_periods_and_the_rss_prediction() -> None:
    assert sm.whole_periods(0.5, 50, 2) == 50  # 20 periods of 2.5 rounds
    assert sm.whole_periods(4.0, 50, 2) == 60  # 3 periods of 20 rounds
    assert sm.whole_periods(8.0, 50, 2) == 80
    assert sm.heartbeat_period_for(100) == 1.0 and sm.heartbeat_period_for(10_000) == 128.0
    guess = sm.predict_rss([(500, 1000.0), (1000, 8000.0)], 2000)
    assert guess is not None and guess["exponent"] == 3.0 and round(guess["mib"]) == 64000
