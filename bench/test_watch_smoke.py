"""bench.watch, smallest: 16 KiB frames (~250 entries), a repeat or two per
row, on both implementations, then the command line into a JSON file. Checks
the frames, what each row did (every entry changed, captured or not) and the
result's shape; never timings."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from bench import watch

FRAME = 16 * 1024
COMPILED = importlib.util.find_spec("fastgossip._table_c") is not None


def test_frames_overwrite_the_same_keys() -> None:
    old, new, entries = watch.make_frames(FRAME)
    assert 100 < entries < FRAME // 30
    assert old != new and len(old) == len(new) <= FRAME
    assert len(watch.key(entries)) == 29
    assert 8 <= len(watch.value(entries, True)) <= 16


@pytest.mark.parametrize(
    "impl",
    [
        pytest.param(
            "cython",
            marks=pytest.mark.skipif(not COMPILED, reason="the compiled table is not built"),
        ),
        "python",
    ],
)
def test_every_row_on_one_implementation(impl: str) -> None:
    frames = watch.make_frames(FRAME)
    lines = []
    result = watch.measure_impl(impl, frames, repeats=2, calls=1, log=lines.append)
    assert [r["variant"] for r in result["rows"]] == list(watch.ROWS)
    for row in result["rows"]:
        assert row["ns_per_entry"] > 0 and len(row["ns_per_frame_all"]) == 2
    assert set(result["extra_ns_per_entry"]) == {
        watch.MISS_FIRST,
        watch.MISS_LATE,
        watch.CAPTURE,
        watch.NODE,
    }
    assert "extra ns per entry" in lines[0]


def test_command_line_writes_the_json_shape(tmp_path: Path) -> None:
    out = tmp_path / "watch.json"
    argv = ["--frame-size", str(FRAME), "--repeats", "2", "--calls", "1"]
    argv += ["--py-repeats", "1", "--py-calls", "1", "--out", str(out)]
    assert watch.main(argv) == 0
    result = json.loads(out.read_text())
    impls = [r["implementation"] for r in result["results"]]
    assert impls == (["cython", "python"] if COMPILED else ["python"])
    assert result["settings"]["entries_per_frame"] == result["results"][0]["entries_per_frame"]
    assert len(result["targets"]) == 3
    assert all((t["measured"] is None) == (not COMPILED) for t in result["targets"])
