"""The implementation switch: FASTGOSSIP_NO_EXTENSIONS selects the twins."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

import fastgossip
from fastgossip._impl import load

PROBE = """
import asyncio, fastgossip
from fastgossip import _codec_py, _table_py, _sampler_py
assert fastgossip.encode is _codec_py.encode
assert fastgossip.GossipState is _table_py.GossipState
assert fastgossip.XorShift64 is _sampler_py.XorShift64
async def main():
    node = await fastgossip.GossipNode.start(fastgossip.NodeConfig.localhost("p"))
    async with node:
        return node.implementation
print(fastgossip.IMPLEMENTATION, asyncio.run(main()))
"""


@pytest.mark.parametrize("value, expected", [("1", "python"), ("", "cython"), ("0", "cython")])
def test_switch_selects_the_implementation(value: str, expected: str) -> None:
    env = dict(os.environ, FASTGOSSIP_NO_EXTENSIONS=value)
    probe = PROBE if expected == "python" else "import fastgossip; print(fastgossip.IMPLEMENTATION)"
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == expected
    if expected == "python":
        assert out.stdout.split() == ["python", "python"]


def test_compiled_modules_are_live_by_default() -> None:
    if os.environ.get("FASTGOSSIP_NO_EXTENSIONS", "") not in ("", "0"):
        pytest.skip("this run forces the pure-Python twins")
    assert fastgossip.IMPLEMENTATION == "cython"
    assert type(fastgossip.encode).__name__ == "builtin_function_or_method"
    assert load("table").__name__ == "fastgossip._table_c"


def test_unknown_implementation_is_refused() -> None:
    with pytest.raises(ValueError, match="'cython' or 'python'"):
        load("codec", "rust")
    with pytest.raises(ValueError, match="'cython', 'python' or None"):
        fastgossip.NodeConfig("n", implementation="rust")


@pytest.mark.parametrize("name", ["codec", "table", "sampler"])
def test_switch_modules_name_every_public_name_of_the_live_module(name: str) -> None:
    """_codec.py & co. import each name explicitly (so type checkers see them):
    they must list all of the implementation's public names, and be them."""
    switch = importlib.import_module(f"fastgossip._{name}")
    live = load(name)
    assert sorted(switch.__all__) == sorted(live.__all__)
    for attr in live.__all__:
        assert getattr(switch, attr) is getattr(live, attr), attr


@pytest.mark.parametrize(
    "name, home",
    [
        ("ClusterNetwork", "fastgossip.testing"),
        ("NetworkStats", "fastgossip.testing"),
        ("ReplicationLog", "fastgossip.replication"),
        ("LogEntry", "fastgossip.replication"),
    ],
)
def test_moved_names_still_work_with_a_deprecation_warning(name: str, home: str) -> None:
    assert name not in fastgossip.__all__
    with pytest.warns(DeprecationWarning, match=f"import it from {home}"):
        obj = getattr(fastgossip, name)
    assert obj is getattr(importlib.import_module(home), name)


def test_network_module_still_exports_the_test_harness() -> None:
    from fastgossip import network, testing

    assert network.ClusterNetwork is testing.ClusterNetwork
    assert network.NetworkStats is testing.NetworkStats


def test_unknown_top_level_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Gosip'"):
        fastgossip.Gosip  # noqa: B018
