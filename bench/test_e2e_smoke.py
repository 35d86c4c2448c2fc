"""The end-to-end runner's smallest pieces, in-process: ingest of 5k keys, a
10-node convergence and the idle traffic of a 100-key table, for each
implementation; then the JSON shape and the report rendered from it.

Checks shapes and that things converge, never timings.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path

from bench import e2e, report
from bench._meta import write_json


def _implementations() -> tuple:
    built = all(
        importlib.util.find_spec(f"fastgossip._{name}_c") is not None
        for name in ("codec", "table", "sampler")
    )
    return e2e.IMPLS if built else ("python",)


def test_e2e_smoke(tmp_path: Path) -> None:
    impls = _implementations()
    result = asyncio.run(asyncio.wait_for(e2e.run(e2e.smoke_plan(), impls, "smoke"), 60))
    e2e.validate(result)
    for impl in impls:
        ingest = result["ingest"][impl]
        assert ingest["complete"] and ingest["keys"] == 5_000
    assert all(row["converged_all"] for row in result["convergence"])
    assert [row["n"] for row in result["convergence"]] == [10] * len(impls)
    for impl in impls:
        (traffic,) = result["traffic"][impl]
        assert traffic["loaded"] and traffic["writes_converged"]
        assert traffic["idle_bytes_per_node_round"] > 0
    if len(impls) == 2:
        assert result["ingest"]["ratio"] > 0

    path = tmp_path / "e2e.json"
    write_json(str(path), result)
    loaded = json.loads(path.read_text())
    text = report.render(None, loaded, [], None)
    assert "## End to end" in text and "### Convergence of a fresh key" in text
