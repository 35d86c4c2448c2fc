"""The wire constants have two homes, one per language: the C enum of
_wire.pxd (compile time) and _wire.py. They must agree, name by name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fastgossip import _wire

PXD = Path(_wire.__file__).with_suffix(".pxd")


def test_the_c_and_python_wire_constants_agree() -> None:
    if not PXD.exists():
        pytest.skip("_wire.pxd is not installed next to the package")
    text = PXD.read_text()
    enum = text[text.index("cdef enum:") :]
    enum = enum[: enum.index("\n\n")]
    c_values = {
        name: int(value, 0)
        for name, value in re.findall(r"^\s+([A-Z][A-Z0-9_]*) = (\w+)", enum, re.M)
    }
    py_values = {n: v for n, v in vars(_wire).items() if n.isupper()}
    assert c_values == py_values


def test_the_compiled_codec_exports_the_same_values() -> None:
    codec = pytest.importorskip("fastgossip._codec_c")
    for name in ("PROTOCOL_VERSION", "DEFAULT_MAX_FRAME_SIZE", "T_GOSSIP", "T_DIGEST"):
        assert getattr(codec, name) == getattr(_wire, name), name
