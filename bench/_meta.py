"""What a result was measured on: machine, versions, date."""

from __future__ import annotations

import datetime as _dt
import importlib
import os
import platform
import subprocess
import sys
from typing import Any, Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> Optional[str]:
    try:
        return str(getattr(importlib.import_module(module), "__version__", "?"))
    except ImportError:
        return None


def _git(*args: str) -> Optional[str]:
    """What ``git -C ROOT <args>`` prints, or None without git or a repository."""
    try:
        out = subprocess.run(
            ["git", "-C", ROOT, *args], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def _git_commit() -> Optional[str]:
    out = _git("rev-parse", "--short", "HEAD")
    return None if out is None else out.strip() or None


def _dirty_sources() -> Optional[list]:
    """Files under src/ that differ from the commit (what was measured is not it)."""
    out = _git("status", "--porcelain", "--", "src")
    return None if out is None else [line[3:] for line in out.splitlines() if line.strip()]


def machine() -> Dict[str, Any]:
    import fastgossip

    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_impl": platform.python_implementation(),
        "fastgossip": fastgossip.__version__,
        "fastgossip_default_implementation": fastgossip.IMPLEMENTATION,
        "cython": _version("Cython"),
        "msgpack": _version("msgpack"),
        "orjson": _version("orjson"),
        "pytest_benchmark": _version("pytest_benchmark"),
        "git_commit": _git_commit(),
        "uncommitted_sources": _dirty_sources(),
        # other work on the machine skews every figure: say how busy it was
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def write_json(path: str, data: Dict[str, Any]) -> None:
    import json

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def format_targets(targets: List[Dict[str, Any]]) -> str:
    """Each target as a console line: pass mark, what, target, measured.

    A target with a ``hot_path`` (from ``bench.ratios``) is prefixed by it.
    """
    lines = ["targets"]
    for t in targets:
        mark = {True: "✅", False: "❌", None: "–"}[t["pass"]]
        got = "n/a" if t["measured"] is None else f"{t['measured']:.2f} {t['unit']}"
        what = f"{t['hot_path']:8} {t['what']}" if "hot_path" in t else t["what"]
        lines.append(f"  {mark} {what:75} {t['target']:>16}  {got}")
    return "\n".join(lines)
