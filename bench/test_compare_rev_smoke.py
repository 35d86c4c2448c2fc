"""bench.compare_rev, smallest: the frames, the git export, and the whole
comparison with the working tree on both sides (300-entry frames, two rounds
of one measurement each: a few child processes). Building a revision's
extensions takes half a minute to 2 minutes, so the test that does is skipped
unless FASTGOSSIP_BENCH_BUILD=1. Never checks timings."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from bench import compare_rev as cr

ENTRIES = 300
TINY = ["--rounds", "2", "--repeats", "1", "--calls", "1", "--entries", str(ENTRIES)]


def _working_tree_built() -> None:
    try:
        cr.check_built(cr.ROOT)
    except SystemExit as exc:
        pytest.skip(f"the working tree's extensions cannot be measured: {exc}")


def _git_head() -> str:
    try:
        return cr.resolve_rev("HEAD")
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"no git repository at {cr.ROOT}: {exc}")


def test_frames_and_manifest(tmp_path: Path) -> None:
    from fastgossip._codec import decode

    workloads = cr.make_workloads(ENTRIES)
    assert [w["name"] for w in workloads] == list(cr.WORKLOADS)
    for w in workloads:
        assert len(decode(w["frame"]).entries) == ENTRIES
        assert w["changed"] == (ENTRIES // 2 if w["name"] == cr.INT_HALF else ENTRIES)
    cr.write_frames(workloads, ENTRIES, str(tmp_path))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [m["base"] is None for m in manifest] == [True, False, True, False, False]
    assert all((tmp_path / m["frame"]).is_file() for m in manifest)


def test_sources_of_an_extension() -> None:
    pkg = os.path.join(cr.ROOT, "src", "fastgossip")
    table = cr.sources_of(pkg, "_table_c")
    assert "_table_c.pyx" in table and "_wire.pxd" in table and "_codec_c.pxd" in table
    assert "_codec_encode.pxi" in cr.sources_of(pkg, "_codec_c")


def test_export_rev(tmp_path: Path) -> None:
    head = _git_head()
    cr.export_rev(head, str(tmp_path))
    assert (tmp_path / "setup.py").is_file()
    assert (tmp_path / "src" / "fastgossip" / "_table_c.pyx").is_file()


def test_working_tree_against_itself(tmp_path: Path) -> None:
    _working_tree_built()
    out = tmp_path / "merge_vs_rev.json"
    assert cr.main(TINY + ["--old-tree", cr.ROOT, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["old"]["label"] == result["new"]["label"] == "working tree"
    rows = result["summary"]["rows"]
    assert [r["workload"] for r in rows] == list(cr.WORKLOADS)
    for r in rows:
        assert r["old_ns_per_entry"] > 0 and r["new_ns_per_entry"] > 0
        assert r["ratio_min"] <= r["ratio_median"] <= r["ratio_max"]
        assert len(r["new_ns_per_entry_rounds"]) == 2
    assert len(result["targets"]) == len(cr.WORKLOADS)


@pytest.mark.skipif(
    os.environ.get("FASTGOSSIP_BENCH_BUILD") != "1",
    reason="exports and builds a git revision (0.5-2 min): set FASTGOSSIP_BENCH_BUILD=1",
)
def test_a_revision_exported_and_built() -> None:
    _working_tree_built()
    result = cr.run(cr.DEFAULT_REV, 1, 1, 1, ENTRIES, log=lambda _: None)
    assert result["old"]["commit"].startswith(cr.DEFAULT_REV)
    assert result["old"]["build_s"] > 0
