"""The fault suite runs where network namespaces work (root on Linux with
iproute2 and nftables, as in CI) and skips with one line saying why elsewhere."""

from __future__ import annotations

import json
import os
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
        out = os.environ.get("FASTGOSSIP_FAULTS_RESULTS")
        if out and RESULTS:
            with open(out, "w") as f:
                json.dump(RESULTS, f, indent=1)


@pytest.fixture
def record(request: pytest.FixtureRequest):
    """Keep a scenario's figures (FASTGOSSIP_FAULTS_RESULTS=path writes them)."""

    def put(**figures: Any) -> None:
        RESULTS[request.node.name] = figures
        print(f"\n{request.node.name}: {figures}")

    return put
