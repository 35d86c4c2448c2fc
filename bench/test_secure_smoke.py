"""bench.secure, smallest: ingest of 2k keys in each mode, a few new-connection
pings direct and through the delaying relay, two 3-node clusters idle for 1 s,
the sealing path on 300 kB; then the JSON shape and the report rendered from
it.

Checks shapes and structure, never timings: the bytes sealing adds per frame
and the handshake's flights are counts, not clocks, so they are asserted.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from bench import report, secure

COMPILED = importlib.util.find_spec("fastgossip._table_c") is not None


def test_secure_smoke(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "secure.json"
    impl = "cython" if COMPILED else "python"
    secure.run(secure.Plan.smoke(), impl, "smoke", str(out))
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    secure.validate(result)
    assert result["settings"]["implementation"] == impl
    assert "elapsed_s" in result["settings"]

    ingest = result["ingest"]
    assert set(ingest["modes"]) == set(secure.MODES)
    for row in ingest["modes"].values():
        assert row["complete"] and row["runs"][0]["entries"] == 2_000
    assert ingest["ratio_of_medians"][secure.KEY] > 0

    hs = result["handshake"]["modes"]
    for mode, row in hs.items():
        # every sample opened a connection of its own and left no peer behind
        assert row["samples"] + row["unanswered"] == secure.Plan.smoke().ping_samples
        assert row["new_connections"] >= row["samples"]
        assert row["pinger_peers_after"] == 0
        assert row["auth_failures"] == 0 or mode == secure.TLS
    # the flights through the relay: plaintext C | S (the Ping, its Pong);
    # the cluster key C hello(48) | S hello + mac(80) | C finish(32) + Ping | S Pong
    plain, key = hs[secure.PLAIN], hs[secure.KEY]
    assert [side for side, _ in plain["flights"]] == ["C", "S"]
    assert [side for side, _ in key["flights"]] == ["C", "S", "C", "S"]
    assert key["flights"][0][1] == 48 and key["flights"][1][1] == 80
    sealed_ping = plain["flights"][0][1] + secure.RECORD_OVERHEAD
    assert key["flights"][2][1] == 32 + sealed_ping
    assert result["handshake"]["added"][secure.KEY]["flight_round_trips"] == 1

    idle = result["idle"]["modes"]
    for row in idle.values():
        assert row["frames_sent"] > 0 and row["bytes_per_frame"] > 0
    keyed = idle[secure.KEY]
    assert keyed["records"] > 0 and keyed["seal_calls"] == keyed["records"]
    assert keyed["overhead_bytes_per_record"] == secure.RECORD_OVERHEAD
    assert 0 < keyed["overhead_bytes_per_frame"] <= secure.AEAD_BOUND
    assert keyed["frames_per_record"] >= 1

    for state in ("fresh_process", "warm"):
        sealing = result["sealing"][state]
        for name in secure.SEALING_ROWS:
            assert sealing[name]["ms_median"] > 0 and sealing[name]["page_faults_median"] >= 0

    targets = {t["what"].split(" ")[0]: t for t in result["targets"]}
    assert targets["idle"]["pass"] is True  # bytes, not time

    text = report.render(None, None, [], None, result)
    assert "## Security" in text and "### A new connection: the handshake" in text
    assert "security: idle traffic" in text
    assert "sealing adds" in printed and "wrote" in printed
