"""bench.durable, smallest: each measurement on small sizes, then the JSON
shape and the report's "Durability" section rendered from it. Checks shapes,
never timings."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from bench import durable, report


def test_durable_smoke(tmp_path: Path) -> None:
    async def small() -> dict:
        return {
            "ingest": await durable.measure_ingest(2_000, 1, str(tmp_path)),
            "always": await durable.measure_always(0.3, 20, str(tmp_path)),
            "restart": await durable.measure_restart(5_000, str(tmp_path)),
        }

    result = asyncio.run(small())
    assert result["ingest"]["keys"] == 2_000 and result["ingest"]["ratio_best"] > 0
    assert result["always"]["acked_writes_per_s"] > 0
    assert result["always"]["writes_per_flush"] >= 1
    assert result["restart"]["keys"] == 5_000 and result["restart"]["snapshot_bytes"] > 0
    out = tmp_path / "durable.json"
    out.write_text(json.dumps(result))
    lines = report.durable_section(json.loads(out.read_text()))
    assert any("acknowledged writes/s" in line for line in lines)
    assert list(tmp_path.iterdir()) == [out]  # (every data directory removed)
