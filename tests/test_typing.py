"""Type checking: the package is mypy-clean, users see real types, stubs are true.

Runs ``python -m mypy`` in a subprocess; skipped when mypy is not installed
(``pip install '.[test]'`` installs it).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Optional

import pytest

import fastgossip

if importlib.util.find_spec("mypy") is None:
    pytest.skip("mypy is not installed (pip install '.[test]')", allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = Path(fastgossip.__file__).resolve().parent

ERROR = re.compile(r"^(?P<path>[^:\n]+\.pyi?):(?P<line>\d+): error: (?P<text>.*)$", re.M)


def run_mypy(*args: str, cwd: Path, env: Optional[Dict[str, str]] = None) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "mypy", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if out.returncode not in (0, 1):  # 2: mypy itself failed (bad config, crash)
        raise AssertionError(f"mypy failed to run:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def errors_in(output: str) -> List[re.Match]:
    return list(ERROR.finditer(output))


def test_package_is_mypy_clean() -> None:
    if not (ROOT / "pyproject.toml").exists() or not (ROOT / "src" / "fastgossip").exists():
        pytest.skip("needs the source tree (pyproject.toml's [tool.mypy])")
    output = run_mypy(cwd=ROOT)  # files and options from pyproject.toml
    errors = [m.group(0) for m in errors_in(output)]
    assert not errors, "mypy errors:\n" + "\n".join(errors)


USER_SCRIPT = """\
from fastgossip import Entry, Gossip, GossipState, XorShift64, decode, encode

frame = encode(Gossip("a", "k", b"v", 1))
reveal_type(frame)
msg = decode(frame)
if isinstance(msg, Gossip):
    reveal_type(msg.version)
state = GossipState()
reveal_type(state.get("k"))
entry = state.get_entry("k")
reveal_type(entry)
reveal_type(Entry("k", 1, 2).value)
reveal_type(XorShift64(1).sample(["a", "b", "c"], 2))
"""

EXPECTED = [
    "builtins.bytes",
    "builtins.int",
    "tuple[int | bytes, int] | None",
    "fastgossip._messages.Entry | None",
    "int | bytes | None",  # None: a tombstone
    "builtins.list[builtins.str]",
]


def _normalise(revealed: str) -> str:
    # mypy versions spell these differently: Union[int, bytes] / int | bytes,
    # Tuple[...] / tuple[...]; some qualify builtins, some do not
    revealed = revealed.replace("builtins.", "")
    union = re.compile(r"Union\[([^\[\]]*)\]")
    while union.search(revealed):
        revealed = union.sub(lambda m: " | ".join(m.group(1).split(", ")), revealed)
    revealed = re.sub(r"Optional\[(.*)\]$", r"\1 | None", revealed)
    return revealed.replace("Tuple[", "tuple[").replace("List[", "list[")


def test_user_script_sees_real_types(tmp_path: Path) -> None:
    """What ``mypy --strict`` says of a user's script: real types, not Any
    (the switch modules used to fill their namespace at run time)."""
    script = tmp_path / "user.py"
    script.write_text(textwrap.dedent(USER_SCRIPT))
    env = dict(os.environ)
    env.pop("MYPYPATH", None)
    parent = PACKAGE_DIR.parent
    if parent.name not in ("site-packages", "dist-packages"):
        env["MYPYPATH"] = str(parent)  # a source tree (an installed package is found)
    output = run_mypy(
        "--strict",
        "--follow-imports=silent",  # the package's own errors are the other test's
        "--cache-dir",
        str(tmp_path / "cache"),
        str(script),
        cwd=tmp_path,
        env=env,
    )
    assert not errors_in(output), output
    revealed = re.findall(r'Revealed type is "(.*)"', output)
    assert [_normalise(r) for r in revealed] == [_normalise(e) for e in EXPECTED], output


def test_stubs_agree_with_the_compiled_modules(tmp_path: Path) -> None:
    """mypy's stubtest compares _codec_c.pyi, _table_c.pyi and _sampler_c.pyi
    with the compiled modules themselves."""
    modules = ["fastgossip._codec_c", "fastgossip._table_c", "fastgossip._sampler_c"]
    for name in modules:
        pytest.importorskip(name, reason=f"{name} is not built")
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\n")
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_DIR.parent), MYPYPATH="")
    args = [sys.executable, "-m", "mypy.stubtest", "--mypy-config-file", str(config)]
    # PEP 800's disjoint bases (every cdef class is one) need typing_extensions
    # in the stubs; not marked
    flag = ["--ignore-disjoint-bases"]
    out = subprocess.run(
        args + flag + modules, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    if out.returncode == 2 and "unrecognized arguments" in out.stderr:  # an older mypy
        out = subprocess.run(
            args + modules, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
    assert out.returncode == 0, out.stdout + out.stderr
