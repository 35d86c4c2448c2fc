"""Chooses between the compiled modules and their pure-Python twins.

``FASTGOSSIP_NO_EXTENSIONS=1`` (read once, at import) selects the twins. Without
it the compiled modules must be importable: a missing build is an error that
says how to fix it, never a silent fallback to slow code.

The switch modules (_codec.py, _table.py, _sampler.py) import the chosen
module's names statically, so that type checkers see them (from the stubs
_<name>_c.pyi); ``load`` picks a module at run time, for a node that runs on
the other implementation (``NodeConfig(implementation="python")``) and tests.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

NO_EXTENSIONS: bool = os.environ.get("FASTGOSSIP_NO_EXTENSIONS", "") not in ("", "0")
IMPLEMENTATION: str = "python" if NO_EXTENSIONS else "cython"


def load(name: str, implementation: str | None = None) -> ModuleType:
    """Import ``fastgossip._<name>_c`` or ``fastgossip._<name>_py``.

    ``implementation`` is "cython", "python" or None for the process default.
    """
    impl = implementation or IMPLEMENTATION
    if impl not in ("cython", "python"):
        raise ValueError(f"implementation must be 'cython' or 'python', not {impl!r}")
    if impl == "python":
        return importlib.import_module(f"fastgossip._{name}_py")
    try:
        return importlib.import_module(f"fastgossip._{name}_c")
    except ImportError as exc:
        raise not_built(name, exc) from exc


def not_built(name: str, exc: ImportError) -> ImportError:
    """The error for a compiled module ``_<name>_c`` that cannot be imported."""
    return ImportError(
        f"fastgossip's compiled module _{name}_c is not built ({exc}). Install with "
        "'pip install .' (needs a C compiler), or set FASTGOSSIP_NO_EXTENSIONS=1 "
        "to run the pure-Python implementation."
    )
