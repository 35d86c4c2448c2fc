"""The fault suite runs where network namespaces work (root on Linux with
iproute2 and nftables, as in CI) and skips with one line saying why elsewhere."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Dict, Iterator

import pytest

from .lab import Lab, unavailable

WHY = unavailable()
RESULTS: Dict[str, Any] = {}


def pytest_report_header(config: pytest.Config) -> str:
    return (
        f"fault suite: skipped: {WHY}"
        if WHY
        else "fault suite: network namespaces available: running"
    )


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    if WHY:
        pytest.skip(f"fault suite: {WHY}")
    lab = Lab(5)
    lab.open()
    try:
        yield lab
    finally:
        lab.close()
        out = os.environ.get("FASTGOSSIP_FAULTS_RESULTS") or os.path.join(
            tempfile.gettempdir(), "fastgossip-faults.json"
        )
        if RESULTS:
            with open(out, "w") as f:
                json.dump(RESULTS, f, indent=1)


@pytest.fixture
def record(request: pytest.FixtureRequest):
    """Keep a scenario's figures: written as JSON to $FASTGOSSIP_FAULTS_RESULTS
    (default: fastgossip-faults.json in the temporary directory)."""

    def put(**figures: Any) -> None:
        RESULTS[request.node.name] = figures
        print(f"\n{request.node.name}: {figures}")

    return put
