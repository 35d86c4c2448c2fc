"""What a result was measured on (machine, versions, date), and how a
benchmark's result is written and shown."""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional

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


def machine_line(meta: Dict[str, Any]) -> str:
    """The first words of a benchmark's log: which fastgossip, on what."""
    return (
        f"fastgossip {meta['fastgossip']} on {meta['cpu']} ({meta['cores']} cores), "
        f"Python {meta['python']}"
    )


def log(text: str) -> None:
    """A line of a benchmark's log, on stdout at once."""
    print(text, flush=True)


def write_json(path: str, data: Dict[str, Any]) -> None:
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


def write_timed(
    path: str,
    meta: Dict[str, Any],
    settings: Dict[str, Any],
    data: Dict[str, Any],
    targets: List[Dict[str, Any]],
    started: float,
    log: Callable[[str], None] = log,
) -> None:
    """Logs the targets, then writes ``{meta, settings, **data, targets}`` to
    ``path``, the settings closed by ``elapsed_s`` (since ``started``, a
    ``time.perf_counter()`` reading) and ``load_average_end``, and logs where."""
    log("\n" + format_targets(targets))
    result = {
        "meta": meta,
        "settings": {
            **settings,
            "elapsed_s": time.perf_counter() - started,
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
        },
        **data,
        "targets": targets,
    }
    write_json(path, result)
    log(f"\nwrote {os.path.relpath(path)} in {time.perf_counter() - started:.0f} s")


def emit(
    result: Dict[str, Any], out: Optional[str], as_json: bool, render: Callable[[Dict], str]
) -> int:
    """A benchmark's end: ``result`` written to ``out`` (none when empty), and
    printed, as JSON or rendered; returns the exit status (0)."""
    if out:
        write_json(out, result)
    print(json.dumps(result, indent=1) if as_json else render(result))
    return 0


def run_and_emit(
    name: str,
    run: Callable[[Any], Dict[str, Any]],
    args: Any,
    render: Callable[[Dict], str],
) -> int:
    """``emit(run(args), args.out, args.json, render)``; a Ctrl-C during the run
    (whose processes were stopped on the way out) says so and returns 130."""
    try:
        result = run(args)
    except KeyboardInterrupt:
        sys.stderr.write(f"{name}: interrupted\n")
        return 130
    return emit(result, args.out, args.json, render)
