"""Helpers for the benchmarks that run fastgossip nodes as child processes
(``bench.idle``, ``bench.churn``, ``bench.members``): the children's
environment, the lines parent and children exchange over the children's
stdin and stdout, a child's profile, and a child's log when a run fails.

Standard library only, and nothing imported up front that the node
processes would not import anyway: the children import this module too, and
some benchmarks report their RSS.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- the parent --------------------------------------------------------------------
def child_env() -> Dict[str, str]:
    """This process's environment, with PYTHONPATH such that a child finds the
    bench package (ROOT) and the fastgossip this process imported (installed,
    or src/ through the caller's PYTHONPATH), never a second copy."""
    import fastgossip

    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.abspath(fastgossip.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([ROOT, here] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def tail(path: str, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file ('' when it cannot be read)."""
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def show_tail(path: str, what: str) -> None:
    """The last lines of the log at ``path`` on stderr, headed ``what``
    (nothing when it is empty): said on the way out of a failed run."""
    text = tail(path)
    if text:
        sys.stderr.write(f"{what} (last lines):\n{text}")


class ChildPipes:
    """The stdin and stdout of child processes, spoken to in lines: a line to
    some children's stdin, and the lines their stdout gave, read without
    blocking (a partial line waits in a buffer for its end)."""

    def __init__(self) -> None:
        self.procs: List[subprocess.Popen] = []
        self.sel = selectors.DefaultSelector()
        self.buf: List[bytes] = []

    def add(self, proc: subprocess.Popen) -> int:
        """Starts listening to ``proc`` (spawned with stdin and stdout pipes);
        returns its index."""
        i = len(self.procs)
        self.procs.append(proc)
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        self.sel.register(proc.stdout, selectors.EVENT_READ, i)
        self.buf.append(b"")
        return i

    def close(self) -> None:
        self.sel.close()

    def send(self, which: Sequence[int], line: str) -> None:
        for i in which:
            stdin = self.procs[i].stdin
            assert stdin is not None
            stdin.write(line.encode() + b"\n")
            stdin.flush()

    def read(self, timeout: float) -> List[Tuple[int, bytes]]:
        """(child, line without its newline) for every whole line the children
        wrote, in order, waiting at most ``timeout`` seconds for the first."""
        lines: List[Tuple[int, bytes]] = []
        for key, _ in self.sel.select(timeout):
            i = key.data
            try:
                chunk = os.read(key.fileobj.fileno(), 1 << 16)  # type: ignore[union-attr]
            except BlockingIOError:
                continue
            if not chunk:
                self.sel.unregister(key.fileobj)
                continue
            self.buf[i] += chunk
            while b"\n" in self.buf[i]:
                line, _, self.buf[i] = self.buf[i].partition(b"\n")
                lines.append((i, line))
        return lines


# -- the child ---------------------------------------------------------------------
def say(obj: Any) -> None:
    """A child's answer to its parent: one JSON line on stdout, flushed."""
    out = sys.stdout
    out.write(json.dumps(obj) + "\n")
    out.flush()


def profile_on() -> Any:
    """A cProfile profiler on the CPU-time clock (not wall), enabled."""
    import cProfile

    prof = cProfile.Profile(time.process_time)
    prof.enable()
    return prof


def profile_off(prof: Optional[Any], path: str) -> bool:
    """Stops ``prof`` and writes its stats to ``path``; False when there was none."""
    if prof is None:
        return False
    prof.disable()
    prof.dump_stats(path)
    return True
