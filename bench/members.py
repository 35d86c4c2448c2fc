"""Failure detection on real processes over loopback, fastgossip against serf.

Each scenario runs on a fresh cluster of ``--nodes`` OS processes per system,
fastgossip first, then serf, back to back (the machine may be shared: the two
are compared within a run):

* ``kill``:  once every node lists every node alive, SIGKILL one (not the seed,
  node 0); per surviving observer, the time from the signal to that observer
  marking the victim dead.
* ``stop``:  the same with SIGSTOP, a silent failure (the process keeps its
  sockets: no reset, no refusal; the kernel may still accept connections into
  the backlog). The victim is SIGKILLed (then SIGCONTed) after the measurement.
* ``leave``: a graceful leave (fastgossip: SIGUSR1, on which the child calls
  ``node.leave()`` and exits 0; serf: ``serf leave``); the time until each
  observer shows the victim left.

``--repeat`` victims per scenario (distinct, picked with ``--seed``) on the same
cluster, one after the other; the cluster is checked stable before each one.
The observations of all repeats are pooled (median, p90, max over observers).

fastgossip: ``python -m bench.members --child`` processes, one node each (the
compiled build unless ``--implementation`` says otherwise), seeded with node
0's address, ``--interval`` between gossip rounds. Each prints one JSON line
per member event (the time is the event's own ``at``, the child's wall clock).
serf: ``serf agent`` processes (default LAN profile: probe every 1 s, gossip
every 200 ms), each joining the first. Events are the agents' own log lines
("serf: EventMemberFailed", "EventMemberLeave", ...) on their stdout, stamped
when the parent reads them: no polling process loads the machine while the
detection runs. After each detection every observer's member list (fastgossip:
``node.members()``; serf: ``serf members -format=json``) is read once and
checked against the events.

    python bench/members.py [--nodes 20] [--repeat 3] [--no-serf]
                            [--scenarios kill,stop,leave] [--out PATH] [--json]

Targets (fastgossip; from the issue): kill -9 dead everywhere <= 2 s median and
<= 4 s worst; silent failure <= 3 s median; leave <= 1 s everywhere.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import random
import re
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

if __package__ in (None, ""):  # run as ``python bench/members.py``
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastgossip  # noqa: E402  (the package the children run, copied)
from bench import idle  # noqa: E402
from bench._meta import RESULTS, format_targets, machine, write_json  # noqa: E402
from bench._procs import say  # noqa: E402

ROOT = idle.ROOT
DEFAULT_OUT = os.path.join(RESULTS, "members.json")
SCENARIOS = ("kill", "stop", "leave")
SYSTEMS = ("fastgossip", "serf")
CLUSTER_ID = "bench"

# What an observer must report about the victim, per scenario.
WANT = {"kill": "dead", "stop": "dead", "leave": "left"}
SIGNAL_NAME = {"kill": "SIGKILL", "stop": "SIGSTOP", "leave": "graceful leave"}
# (scenario, statistic over the pooled observations, limit in seconds)
TARGETS = (
    ("kill", "median_s", 2.0),
    ("kill", "max_s", 4.0),
    ("stop", "median_s", 3.0),
    ("leave", "max_s", 1.0),
)

DETECT_TIMEOUT = 60.0  # per repeat: every observer reports the victim (serf: <= ~31 s)
HOLD = 3.0  # then this long with nothing more said about it (a flap back to alive shows)
FORM_TIMEOUT = 120.0  # every node lists every live node alive
VIEW_TIMEOUT = 10.0  # one member list from each observer
EXIT_TIMEOUT = 15.0  # a leaving node's process exits
POLL = 0.5  # between two checks of the member lists while forming
EXAMPLES = 10  # anomalies kept per kind


# -- events --------------------------------------------------------------------
@dataclass
class Event:
    """What one observer said about one member; ``at`` in time.time() seconds."""

    observer: str
    kind: str  # joined / suspect / alive / dead / left / forgotten / updated
    member: str
    at: float
    received: float


# the kinds that set a member's status (joined/forgotten/updated do not)
STATUS_KINDS = ("alive", "suspect", "dead", "left")


@dataclass
class Seen:
    """What the observers said about one victim, in seconds from the failure."""

    first: Dict[str, float] = field(default_factory=dict)  # first WANT
    settled: Dict[str, float] = field(default_factory=dict)  # last WANT, if it stayed
    suspect: Dict[str, float] = field(default_factory=dict)  # first suspect
    flapped: Set[str] = field(default_factory=set)  # alive again after WANT
    missed: List[str] = field(default_factory=list)  # never said WANT
    unsettled: List[str] = field(default_factory=list)  # last word not WANT
    timeline: Dict[str, List[Tuple[str, float]]] = field(default_factory=dict)


class LineReader:
    """A thread reading lines from many pipes; puts (received, index, line) in
    ``lines``, stamped with time.time() as they arrive; ``eof[index]``: when a
    pipe closed (its process exited)."""

    def __init__(self, streams: Dict[int, IO[bytes]]) -> None:
        self.lines: queue.Queue[Tuple[float, int, bytes]] = queue.Queue()
        self._sel = selectors.DefaultSelector()
        self._buf: Dict[int, bytes] = {}
        self.eof: Dict[int, float] = {}
        for i, stream in streams.items():
            os.set_blocking(stream.fileno(), False)
            self._sel.register(stream, selectors.EVENT_READ, i)
            self._buf[i] = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="members-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and self._sel.get_map():
            for key, _ in self._sel.select(0.1):
                now = time.time()
                i = key.data
                try:
                    chunk = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if not chunk:
                    self._sel.unregister(key.fileobj)
                    self.eof[i] = now
                    continue
                self._buf[i] += chunk
                while b"\n" in self._buf[i]:
                    line, _, self._buf[i] = self._buf[i].partition(b"\n")
                    self.lines.put((now, i, line))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self._sel.close()


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """preexec_fn: the child gets SIGKILL if the parent dies (Linux), so that no
    agent outlives a killed benchmark. Called before any reader thread starts."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class Snapshot:
    """A copy of the fastgossip package this process imported (installed, or
    src/ with its built extensions), taken once: every child of a run imports
    it, so a run measures one build even while the source tree is being edited
    (children start per scenario, minutes apart)."""

    path: str  # the directory holding the copied ``fastgossip`` package
    digest: str  # sha256 over the copied files' names and contents
    files: int

    @classmethod
    def take(cls, into: str) -> Snapshot:
        src = os.path.dirname(os.path.abspath(fastgossip.__file__))
        dst = os.path.join(into, "fastgossip")
        skip = shutil.ignore_patterns("__pycache__", "*.c", "*.html", "*.pyc")
        shutil.copytree(src, dst, ignore=skip)
        h = hashlib.sha256()
        count = 0
        for name in sorted(os.listdir(dst)):
            full = os.path.join(dst, name)
            if os.path.isfile(full):
                with open(full, "rb") as f:
                    h.update(name.encode() + b"\0" + f.read())
                count += 1
        return cls(into, h.hexdigest()[:16], count)

    def env(self) -> Dict[str, str]:
        """bench.idle's convention (ROOT for the bench package; fastgossip the one
        this process imported, never the tree's unbuilt copy), from the copy."""
        env = dict(os.environ)
        parts = [ROOT, self.path] + [p for p in [env.get("PYTHONPATH")] if p]
        env["PYTHONPATH"] = os.pathsep.join(parts)
        return env


# -- a cluster of one system -----------------------------------------------------
class Cluster:
    """N processes of one system; the harness's view of them.

    Subclasses start the processes, turn their output lines into ``Event``s and
    replies, and read an observer's member list.
    """

    system = ""

    def __init__(self, nodes: int, tmp: str) -> None:
        self.nodes = nodes
        self.tmp = tmp
        self.names: List[str] = []
        self.procs: List[subprocess.Popen] = []
        self.events: List[Event] = []
        self.failed: Dict[str, Tuple[str, float]] = {}  # name -> (scenario, t0)
        self.stopped: Set[int] = set()
        self.gone: Set[int] = set()  # killed, stopped or left: no longer observers
        self.reader: Optional[LineReader] = None
        self.info: Dict[str, Any] = {}
        self.started_at = time.time()
        self.closing = False  # teardown: what processes say now is not measured

    # subclass API
    def start(self) -> None:
        raise NotImplementedError

    def _parse(self, received: float, index: int, line: bytes) -> None:
        raise NotImplementedError

    def views(self, which: Sequence[int]) -> Dict[int, Dict[str, str]]:
        """Each observer's member list: name -> status (alive/suspect/dead/left)."""
        raise NotImplementedError

    def leave(self, index: int) -> Callable[[], Dict[str, Any]]:
        """Start a graceful leave of ``index``; returns a function that waits for
        its process to end and says how it ended."""
        raise NotImplementedError

    def stderr_summary(self) -> Dict[str, Any]:
        raise NotImplementedError

    # common
    def live(self) -> List[int]:
        return [i for i in range(self.nodes) if i not in self.gone]

    def pump(self, wait: float) -> None:
        """Parse every line read so far; block up to ``wait`` s for the first."""
        assert self.reader is not None
        try:
            item = self.reader.lines.get(timeout=max(wait, 0.0)) if wait > 0 else None
        except queue.Empty:
            item = None
        while True:
            if item is None:
                try:
                    item = self.reader.lines.get_nowait()
                except queue.Empty:
                    return
            self._parse(*item)
            item = None

    def check_alive(self, which: Sequence[int]) -> None:
        dead = [self.names[i] for i in idle._dead(self.procs) if i in which]
        if dead:
            raise RuntimeError(f"{self.system}: processes of {dead[:10]} exited unexpectedly")

    def wait_formed(self, timeout: float) -> float:
        """Until every live node lists every live node alive; returns the seconds."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        live = self.live()
        want = {self.names[i] for i in live}
        short: Dict[str, int] = {}
        while time.monotonic() < deadline:  # bounded by ``timeout``
            self.check_alive(live)
            views = self.views(live)
            short = {}
            for i in live:
                seen = {m for m, s in views.get(i, {}).items() if s == "alive"}
                lacking = want - seen - {self.names[i]}
                if lacking or i not in views:
                    short[self.names[i]] = len(lacking) if i in views else -1
            if not short:
                return time.monotonic() - t0
            self.pump(POLL)
        raise RuntimeError(
            f"{self.system}: cluster not formed after {timeout:.0f} s; "
            f"nodes lacking members (count, -1 = no answer): {dict(list(short.items())[:10])}"
        )

    def fail(self, index: int, scenario: str) -> Tuple[float, Callable[[], Dict[str, Any]]]:
        """Inject the failure; returns (t0, finish) where finish() cleans up."""
        proc = self.procs[index]
        self.gone.add(index)
        if scenario == "leave":
            t0 = time.time()
            finish = self.leave(index)
        else:
            sig = signal.SIGKILL if scenario == "kill" else signal.SIGSTOP
            if scenario == "stop":
                self.stopped.add(index)
            t0 = time.time()
            os.kill(proc.pid, sig)

            def finish() -> Dict[str, Any]:
                self._reap(index)
                return {"exit_code": proc.returncode}

        self.failed[self.names[index]] = (scenario, t0)
        return t0, finish

    def _exited(self, index: int, t0: float) -> Optional[float]:
        """Seconds from ``t0`` until the process of ``index`` closed its output
        (exited), as the reader saw it; None if it has not."""
        if self.reader is None:
            return None
        end = time.monotonic() + 1.0  # the reader thread may not have looked yet
        while index not in self.reader.eof and time.monotonic() < end:
            time.sleep(0.01)
        at = self.reader.eof.get(index)
        return None if at is None else round(at - t0, 3)

    def _reap(self, index: int) -> None:
        proc = self.procs[index]
        if proc.poll() is None:
            try:
                proc.kill()
                if index in self.stopped:
                    os.kill(proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        try:
            proc.wait(idle.STOP_GRACE)
        except subprocess.TimeoutExpired:  # pragma: no cover - unkillable
            pass
        self.stopped.discard(index)

    def close(self) -> None:
        for i in list(self.stopped):  # a stopped process would sit out SIGTERM
            self._reap(i)
        try:
            if self.reader is not None:
                self.pump(0)
        finally:
            self.closing = True
            idle.stop_all(self.procs)
            if self.reader is not None:
                self.reader.close()
                self.pump(0)

    def anomalies(self) -> Dict[str, Any]:
        """Events that contradict what was done to the cluster.

        false_suspect / false_dead / false_left: about a member nobody failed (or
        before it was failed); wrong_kind: a victim reported in a way that does
        not match its failure (dead after a graceful leave, left after a kill);
        back_alive: a failed member reported alive again afterwards.
        """
        out: Dict[str, Any] = {"counts": {}, "examples": {}}

        def note(kind: str, ev: Event) -> None:
            out["counts"][kind] = out["counts"].get(kind, 0) + 1
            ex = out["examples"].setdefault(kind, [])
            if len(ex) < EXAMPLES:
                ex.append(
                    {
                        "observer": ev.observer,
                        "kind": ev.kind,
                        "member": ev.member,
                        "at_s": round(ev.at - self.started_at, 3),
                    }
                )

        for ev in self.events:
            fail = self.failed.get(ev.member)
            failed_before = fail is not None and ev.at >= fail[1]
            if ev.kind in ("suspect", "dead", "left") and not failed_before:
                note(f"false_{ev.kind}", ev)
            elif failed_before and fail is not None:
                if ev.kind == "alive":
                    note("back_alive", ev)
                elif ev.kind in ("dead", "left") and ev.kind != WANT[fail[0]]:
                    note("wrong_kind", ev)
        out["event_counts"] = {}
        for ev in self.events:
            out["event_counts"][ev.kind] = out["event_counts"].get(ev.kind, 0) + 1
        return out

    def detection(self, victim: int, scenario: str, t0: float, timeout: float, hold: float) -> Seen:
        """Watch what the live observers say about the victim from ``t0`` on,
        until every one's latest word is WANT[scenario] and nothing more has
        been said for ``hold`` seconds (a victim seen alive again shows), or
        ``timeout`` seconds have passed."""
        name = self.names[victim]
        want = WANT[scenario]
        observers = {self.names[i] for i in self.live()}
        seen = Seen()
        latest: Dict[str, str] = {}
        last_word = t0
        done = len(self.events)
        deadline = time.monotonic() + timeout
        while True:  # bounded by ``timeout``
            self.pump(0.05)
            for ev in self.events[done:]:
                if ev.member != name or ev.at < t0 or ev.observer not in observers:
                    continue
                t = ev.at - t0
                seen.timeline.setdefault(ev.observer, []).append((ev.kind, round(t, 3)))
                if ev.kind not in STATUS_KINDS:
                    continue
                if ev.kind == "suspect" and latest.get(ev.observer) in ("dead", "left"):
                    continue  # weaker, not a contradiction (serf: a probe begun before)
                last_word = max(last_word, ev.at)
                if ev.kind == want:
                    seen.first.setdefault(ev.observer, t)
                    seen.settled[ev.observer] = t
                elif ev.kind == "suspect":
                    seen.suspect.setdefault(ev.observer, t)
                if ev.kind == "alive" and ev.observer in seen.first:
                    seen.flapped.add(ev.observer)
                latest[ev.observer] = ev.kind
            done = len(self.events)
            settled = all(latest.get(o) == want for o in observers)
            if settled and time.time() - last_word >= hold:
                break
            if time.monotonic() > deadline:
                break
            self.check_alive(self.live())
        for o in observers:
            if latest.get(o) != want:
                seen.settled.pop(o, None)
        seen.missed = sorted(observers - set(seen.first))
        seen.unsettled = sorted(observers - set(seen.settled))
        return seen


class FastgossipCluster(Cluster):
    system = "fastgossip"

    def __init__(
        self, nodes: int, tmp: str, interval: float, implementation: str, snapshot: Snapshot
    ) -> None:
        super().__init__(nodes, tmp)
        self.snapshot = snapshot
        self.interval = interval
        self.implementation = implementation
        self.errlog = os.path.join(tmp, "fastgossip-stderr.log")
        self.replies: Dict[int, Any] = {}
        self.ready: Dict[int, Any] = {}
        self.leave_s: Dict[int, float] = {}  # how long node.leave() took in the child
        self.bad_lines: List[str] = []

    def start(self) -> None:
        ports = idle.free_ports(self.nodes)
        env = self.snapshot.env()
        self.names = [f"n{i}" for i in range(self.nodes)]
        seed = f"127.0.0.1:{ports[0]}"
        with open(self.errlog, "ab") as err:
            for i in range(self.nodes):
                cmd = [sys.executable, "-m", "bench.members", "--child", self.names[i]]
                cmd += ["--port", str(ports[i]), "--interval", str(self.interval)]
                cmd += ["--implementation", self.implementation]
                if i:
                    cmd += ["--seed-addr", seed]
                self.procs.append(
                    subprocess.Popen(
                        cmd, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                        stderr=err, preexec_fn=_die_with_parent,
                    )
                )  # fmt: skip
        self.reader = LineReader({i: p.stdout for i, p in enumerate(self.procs) if p.stdout})
        deadline = time.monotonic() + idle.START_TIMEOUT
        while len(self.ready) < self.nodes:  # bounded by START_TIMEOUT
            if time.monotonic() > deadline:
                missing = [self.names[i] for i in range(self.nodes) if i not in self.ready]
                raise RuntimeError(f"fastgossip nodes not started: {missing[:10]}")
            self.check_alive(range(self.nodes))
            self.pump(0.2)
        self.info["implementation"] = sorted({r["implementation"] for r in self.ready.values()})
        self.info["loaded_from"] = sorted({r["loaded_from"] for r in self.ready.values()})
        self.info["snapshot_digest"] = self.snapshot.digest

    def _parse(self, received: float, index: int, line: bytes) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            if len(self.bad_lines) < EXAMPLES:
                self.bad_lines.append(line.decode(errors="replace")[:200])
            return
        if "kind" in msg:
            self.events.append(
                Event(msg["node"], msg["kind"], msg["member"], float(msg["at"]), received)
            )
        elif "ready" in msg:
            self.ready[index] = msg
        elif msg.get("reply") == "left":
            self.leave_s[index] = msg["leave_s"]
        elif "reply" in msg:
            self.replies[index] = msg

    def views(self, which: Sequence[int]) -> Dict[int, Dict[str, str]]:
        for i in which:
            self.replies.pop(i, None)
            stdin = self.procs[i].stdin
            assert stdin is not None
            try:
                stdin.write(b"members\n")
                stdin.flush()
            except BrokenPipeError:
                pass
        deadline = time.monotonic() + VIEW_TIMEOUT
        while not all(i in self.replies for i in which):  # bounded by VIEW_TIMEOUT
            if time.monotonic() > deadline:
                break
            self.check_alive(which)
            self.pump(0.05)
        return {i: self.replies[i]["members"] for i in which if i in self.replies}

    def leave(self, index: int) -> Callable[[], Dict[str, Any]]:
        proc = self.procs[index]
        t0 = time.time()
        os.kill(proc.pid, signal.SIGUSR1)

        def finish() -> Dict[str, Any]:
            try:
                code: Optional[int] = proc.wait(EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                code = None
            self._reap(index)
            self.pump(0)
            out = {"exit_code": code, "exited_after_s": self._exited(index, t0)}
            out["leave_s"] = self.leave_s.get(index)  # node.leave() in the child
            return out

        return finish

    def stderr_summary(self) -> Dict[str, Any]:
        return _log_summary(self.errlog, r"Traceback|Error|Exception|Warning")


# serf's own log lines: "    2026/11/29 17:23:48 [INFO] serf: EventMemberFailed: c 127.0.0.1"
_SERF_EVENT = re.compile(rb"serf: EventMember(Join|Failed|Leave|Update|Reap): (\S+)")
_SERF_SUSPECT = re.compile(rb"memberlist: Suspect (\S+) has failed")
_SERF_KIND = {
    b"Join": "joined",
    b"Failed": "dead",
    b"Leave": "left",
    b"Update": "updated",
    b"Reap": "forgotten",
}
_SERF_STATUS = {"failed": "dead"}  # serf members' status -> ours (alive, leaving, left)


class SerfCluster(Cluster):
    system = "serf"

    def __init__(self, nodes: int, tmp: str, serf: str) -> None:
        super().__init__(nodes, tmp)
        self.serf = serf
        self.rpc: List[int] = []
        self.log = os.path.join(tmp, "serf-warnings.log")
        self.warnings: List[str] = []
        self.warning_count = 0

    def start(self) -> None:
        ports = idle.free_ports(2 * self.nodes)
        bind, self.rpc = ports[: self.nodes], ports[self.nodes :]
        self.names = [f"s{i}" for i in range(self.nodes)]
        for i in range(self.nodes):
            cmd = [self.serf, "agent", f"-node={self.names[i]}", f"-bind=127.0.0.1:{bind[i]}"]
            cmd += [f"-rpc-addr=127.0.0.1:{self.rpc[i]}", "-log-level=info"]
            if i:
                cmd.append(f"-join=127.0.0.1:{bind[0]}")
            self.procs.append(
                subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
                )
            )  # fmt: skip
            if i == 0:  # the others join it: it must be up
                deadline = time.monotonic() + idle.START_TIMEOUT
                while idle._serf_alive(self.serf, self.rpc[0]) is None:  # bounded
                    if self.procs[0].poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("the first serf agent did not come up")
                    time.sleep(0.2)
        self.reader = LineReader({i: p.stdout for i, p in enumerate(self.procs) if p.stdout})
        self.info["version"] = subprocess.run(
            [self.serf, "version"], capture_output=True, text=True, timeout=10
        ).stdout.split("\n")[0]

    def _parse(self, received: float, index: int, line: bytes) -> None:
        m = _SERF_EVENT.search(line)
        if m:
            kind = _SERF_KIND[m.group(1)]
            self.events.append(
                Event(self.names[index], kind, m.group(2).decode(), received, received)
            )
            return
        m = _SERF_SUSPECT.search(line)
        if m:  # only the prober logs it, at INFO
            self.events.append(
                Event(self.names[index], "suspect", m.group(1).decode(), received, received)
            )
            return
        if (b"[ERR]" in line or b"[WARN]" in line) and not self.closing:
            self.warning_count += 1
            if len(self.warnings) < 40:
                self.warnings.append(f"{self.names[index]}: {line.decode(errors='replace')}")

    def _members(self, index: int) -> Optional[Dict[str, str]]:
        try:
            out = subprocess.run(
                [self.serf, "members", f"-rpc-addr=127.0.0.1:{self.rpc[index]}", "-format=json"],
                capture_output=True,
                text=True,
                timeout=VIEW_TIMEOUT,
            )
            members = json.loads(out.stdout)["members"] if out.returncode == 0 else None
        except (subprocess.TimeoutExpired, ValueError, KeyError):
            return None
        if members is None:
            return None
        return {m["name"]: _SERF_STATUS.get(m["status"], m["status"]) for m in members}

    def views(self, which: Sequence[int]) -> Dict[int, Dict[str, str]]:
        out = {}
        for i in which:
            view = self._members(i)
            if view is not None:
                out[i] = view
        return out

    def leave(self, index: int) -> Callable[[], Dict[str, Any]]:
        proc = self.procs[index]
        t0 = time.time()
        cli = subprocess.Popen(
            [self.serf, "leave", f"-rpc-addr=127.0.0.1:{self.rpc[index]}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def finish() -> Dict[str, Any]:
            try:
                cli.wait(EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                cli.kill()
                cli.wait()
            try:
                code: Optional[int] = proc.wait(EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                code = None
            self._reap(index)
            out = {"exit_code": code, "exited_after_s": self._exited(index, t0)}
            out["cli_exit_code"] = cli.returncode
            return out

        return finish

    def stderr_summary(self) -> Dict[str, Any]:
        return {"lines": self.warning_count, "matches": self.warning_count, "tail": self.warnings}


def _log_summary(path: str, pattern: str) -> Dict[str, Any]:
    try:
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    hits = [ln for ln in lines if re.search(pattern, ln)]
    return {"lines": len(lines), "matches": len(hits), "tail": lines[-40:]}


# -- statistics ----------------------------------------------------------------
def _summary(values: Sequence[float], missed: int = 0) -> Dict[str, Any]:
    """Median, p90 and max of ``values`` (seconds), and how many were missed
    (never reported within the timeout: the max is then None, i.e. not met)."""
    if not values:
        return {"n": 0, "missed": missed, "median_s": None, "p90_s": None, "max_s": None}
    s = sorted(values)
    p90 = s[min(len(s) - 1, int(0.9 * len(s)))]
    return {
        "n": len(s),
        "missed": missed,
        "median_s": round(statistics.median(s), 3),
        "p90_s": round(p90, 3),
        "max_s": None if missed else round(s[-1], 3),
        "max_reported_s": round(s[-1], 3),
        "min_s": round(s[0], 3),
    }


# -- one scenario on one system -------------------------------------------------
def run_scenario(
    system: str,
    scenario: str,
    nodes: int,
    repeat: int,
    *,
    interval: float = 0.2,
    implementation: str = "cython",
    timeout: float = DETECT_TIMEOUT,
    form_timeout: float = FORM_TIMEOUT,
    settle: float = 2.0,
    hold: float = HOLD,
    seed: int = 1,
    serf: Optional[str] = None,
    snapshot: Optional[Snapshot] = None,
) -> Dict[str, Any]:
    """A fresh cluster of ``nodes`` processes; ``repeat`` victims one after the
    other, each once the cluster is stable; every process ended on the way out.
    ``hold``: seconds of quiet about a victim, once all observers agree, before
    the next one (a victim that comes back alive in them is seen). ``snapshot``:
    the fastgossip copy the nodes import (None: one taken for this cluster)."""
    if not 1 <= repeat <= nodes - 3:
        raise ValueError("need 1 <= repeat <= nodes - 3 (two observers besides the seed)")
    tmp = tempfile.mkdtemp(prefix=f"fastgossip-members-{system}-")
    cluster: Cluster
    if system == "fastgossip":
        snapshot = snapshot or Snapshot.take(tmp)
        cluster = FastgossipCluster(nodes, tmp, interval, implementation, snapshot)
    else:
        cluster = SerfCluster(nodes, tmp, serf or "serf")
    victims = random.Random(f"{seed}-{scenario}").sample(range(1, nodes), repeat)
    result: Dict[str, Any] = {
        "system": system,
        "scenario": scenario,
        "failure": SIGNAL_NAME[scenario],
        "want": WANT[scenario],
        "nodes": nodes,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "repeats": [],
    }
    try:
        cluster.start()
        result["pids"] = [p.pid for p in cluster.procs]
        result["formed_s"] = round(cluster.wait_formed(form_timeout), 2)
        for victim in victims:
            rec: Dict[str, Any] = {"victim": cluster.names[victim]}
            rec["formed_s"] = round(cluster.wait_formed(form_timeout), 2)
            _settle(cluster, settle)
            rec["observers"] = len(cluster.live()) - 1
            rec["load_average"] = round(os.getloadavg()[0], 2)
            t0, finish = cluster.fail(victim, scenario)
            try:
                seen = cluster.detection(victim, scenario, t0, timeout, hold)
                rec["latency_s"] = {k: round(v, 3) for k, v in sorted(seen.first.items())}
                rec["missed_by"] = seen.missed
                rec.update(_summary(list(seen.first.values()), len(seen.missed)))
                last = _summary(list(seen.settled.values()), len(seen.unsettled))
                rec["settled"] = {
                    "median_s": last["median_s"],
                    "max_s": last["max_s"],
                    "unsettled": seen.unsettled,
                    "latency_s": {k: round(v, 3) for k, v in sorted(seen.settled.items())},
                }
                rec["flapped"] = sorted(seen.flapped)
                if seen.suspect:
                    rec["first_suspect_s"] = round(min(seen.suspect.values()), 3)
                    rec["suspect_median_s"] = round(statistics.median(seen.suspect.values()), 3)
                rec["views_agree"] = _cross_check(cluster, victim, scenario)
                rec["timeline"] = {o: seen.timeline[o] for o in sorted(seen.timeline)}
            finally:
                rec.update(finish())
            lags = [e.received - e.at for e in cluster.events if e.at >= t0]
            if lags and system == "fastgossip":
                rec["event_delivery_lag_median_s"] = round(statistics.median(lags), 4)
            result["repeats"].append(rec)
        pooled = [v for r in result["repeats"] for v in r["latency_s"].values()]
        result["pooled"] = _summary(pooled, sum(len(r["missed_by"]) for r in result["repeats"]))
        worst = [r["max_s"] for r in result["repeats"]]
        result["pooled"]["everywhere_s"] = worst
        result["pooled"]["everywhere_worst_s"] = None if None in worst else max(worst)
        good = [v for r in result["repeats"] for v in r["settled"]["latency_s"].values()]
        result["pooled"]["settled_median_s"] = _summary(good)["median_s"]
        for_good = [r["settled"]["max_s"] for r in result["repeats"]]
        result["pooled"]["settled_everywhere_s"] = for_good
        result["pooled"]["settled_worst_s"] = None if None in for_good else max(for_good)
        result["pooled"]["flapped"] = sum(len(r["flapped"]) for r in result["repeats"])
        return result
    except Exception:
        tail = cluster.stderr_summary()["tail"][-15:]  # as bench.idle does
        if tail:
            sys.stderr.write(f"{system} stderr (last lines):\n" + "\n".join(tail) + "\n")
        raise
    finally:
        try:
            cluster.close()
        finally:
            result.update(cluster.info)
            result["anomalies"] = cluster.anomalies()
            result["stderr"] = cluster.stderr_summary()
            if isinstance(cluster, FastgossipCluster) and cluster.bad_lines:
                result["stdout_not_json"] = cluster.bad_lines
            shutil.rmtree(tmp, ignore_errors=True)


def _settle(cluster: Cluster, seconds: float) -> None:
    """Idle ``seconds`` (reading events) so that probing is in its steady state."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:  # bounded by ``seconds``
        cluster.pump(min(0.2, max(0.0, end - time.monotonic())))
        cluster.check_alive(cluster.live())


def _cross_check(cluster: Cluster, victim: int, scenario: str) -> Dict[str, Any]:
    """Each observer's member list, read once after the events: how many list
    the victim as the events said."""
    name = cluster.names[victim]
    views = cluster.views(cluster.live())
    statuses: Dict[str, int] = {}
    for view in views.values():
        s = view.get(name, "absent")
        statuses[s] = statuses.get(s, 0) + 1
    return {
        "observers_read": len(views),
        "as_wanted": statuses.get(WANT[scenario], 0),
        "statuses": statuses,
    }


# -- the runner ----------------------------------------------------------------
def run(args: argparse.Namespace) -> Dict[str, Any]:
    scenarios = [s for s in args.scenarios.split(",") if s]
    serf = None if args.no_serf else shutil.which("serf")
    result: Dict[str, Any] = {
        "machine": machine(),
        "settings": {
            "nodes": args.nodes,
            "repeat": args.repeat,
            "scenarios": scenarios,
            "interval": args.interval,
            "implementation": args.implementation,
            "timeout": args.timeout,
            "settle": args.settle,
            "hold": args.hold,
            "seed": args.seed,
            "serf_profile": "lan (serf defaults: probe 1 s, gossip 200 ms, suspicion mult 4)",
            "serf_events": "agent log lines (EventMemberFailed/Leave), stamped on arrival",
            "fastgossip_events": "member_events() in each child, stamped with the event's at",
        },
        "serf_skipped": None,
        "scenarios": {},
    }
    if args.no_serf:
        result["serf_skipped"] = "--no-serf"
    elif serf is None:
        result["serf_skipped"] = "serf is not installed (apt-get install serf): not measured"
    held = tempfile.mkdtemp(prefix="fastgossip-members-pkg-")
    try:
        snapshot = Snapshot.take(held)
        result["fastgossip_snapshot"] = {
            "copied_from": os.path.dirname(os.path.abspath(fastgossip.__file__)),
            "digest": snapshot.digest,
            "files": snapshot.files,
            "note": "every fastgossip node of this run imported this copy, taken at the start",
        }
        _run_scenarios(args, scenarios, serf, snapshot, result)
    finally:
        shutil.rmtree(held, ignore_errors=True)
    result["targets"] = targets(result)
    return result


def _run_scenarios(
    args: argparse.Namespace,
    scenarios: Sequence[str],
    serf: Optional[str],
    snapshot: Snapshot,
    result: Dict[str, Any],
) -> None:
    for scenario in scenarios:
        row: Dict[str, Any] = {}
        for system in SYSTEMS:
            if system == "serf" and serf is None:
                continue
            if not args.quiet:
                print(f"-- {scenario}: {system} ...", file=sys.stderr, flush=True)
            row[system] = run_scenario(
                system,
                scenario,
                args.nodes,
                args.repeat,
                interval=args.interval,
                implementation=args.implementation,
                timeout=args.timeout,
                form_timeout=args.form_timeout,
                settle=args.settle,
                hold=args.hold,
                seed=args.seed,
                serf=serf,
                snapshot=snapshot,
            )
        result["scenarios"][scenario] = row


def targets(result: Dict[str, Any]) -> List[Dict[str, Any]]:
    out = []
    for scenario, stat, limit in TARGETS:
        row = result["scenarios"].get(scenario, {})
        fg = row.get("fastgossip")
        if fg is None:
            continue
        measured = fg["pooled"][stat]
        serf = row.get("serf", {}).get("pooled", {}).get(stat)
        word = "median" if stat == "median_s" else "worst"
        out.append(
            {
                "what": f"{SIGNAL_NAME[scenario]}: {WANT[scenario]} at every observer, {word}",
                "target": f"<= {limit:g} s",
                "limit_s": limit,
                "measured": measured,
                "unit": "s",
                "serf": serf,
                "pass": measured is not None and measured <= limit,
            }
        )
    return out


def _cell(value: Optional[float]) -> str:
    return "  -  " if value is None else f"{value:5.2f}"


def render(result: Dict[str, Any]) -> str:
    s = result["settings"]
    m = result["machine"]
    lines = [
        f"failure detection, {s['nodes']} processes on loopback per system, "
        f"{s['repeat']} victims per scenario pooled; fastgossip interval {s['interval']} s "
        f"({s['implementation']}), serf LAN defaults",
        f"machine: {m['cores']} cores, load average at start {m['load_average_1_5_15']}",
    ]
    if result["serf_skipped"]:
        lines.append(f"serf skipped: {result['serf_skipped']}")
    lines.append(
        f"  {'failure':15} {'system':10} {'obs':>4} {'miss':>4} {'median':>6} {'p90':>6} "
        f"{'max':>6} {'for good':>13} {'flaps':>5} {'suspect':>7}  anomalies"
    )
    for scenario, system, r in _walk(result):
        p = r["pooled"]
        sus = [x["first_suspect_s"] for x in r["repeats"] if "first_suspect_s" in x]
        anom = r["anomalies"]["counts"]
        lines.append(
            f"  {SIGNAL_NAME[scenario]:15} {system:10} {p['n']:4d} {p['missed']:4d} "
            f"{_cell(p['median_s']):>6} {_cell(p['p90_s']):>6} {_cell(p['max_s']):>6} "
            f"{_cell(p['settled_median_s'])} /{_cell(p['settled_worst_s'])} {p['flapped']:5d} "
            f"{_cell(statistics.median(sus) if sus else None):>7}  "
            + (", ".join(f"{k} {v}" for k, v in sorted(anom.items())) or "none")
        )
        if system == "fastgossip" and r["stderr"]["matches"]:
            lines.append(
                f"  {'':15} {system:10} stderr: {r['stderr']['matches']} suspicious lines "
                f"(of {r['stderr']['lines']}), e.g. {r['stderr']['tail'][-1][:80]!r}"
            )
    lines += [
        "  seconds from the failure to each observer's first word (dead / left), pooled;",
        "  for good: median / max of the word after which the observer never said alive",
        "  again; flaps: observers that said alive again after dead / left; suspect: median",
        "  over victims of the first observer's suspicion (serf logs it on the prober only)",
    ]
    if result["targets"]:
        lines.append(format_targets(result["targets"]))
    return "\n".join(lines)


# -- the child: one fastgossip node ---------------------------------------------
def child_main(name: str, port: int, seed: Optional[str], interval: float, impl: str) -> int:
    import asyncio

    from fastgossip import GossipNode, NodeConfig

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C: the parent stops us in order

    async def main() -> int:
        loop = asyncio.get_running_loop()
        config = NodeConfig(
            node_id=name,
            bind=("127.0.0.1", port),
            seeds=[seed] if seed else [],
            gossip_interval=interval,
            cluster_id=CLUSTER_ID,
            implementation=None if impl == "default" else impl,
        )
        node = await GossipNode.start(config)
        done: asyncio.Future[int] = loop.create_future()

        async def events() -> None:
            async for ev in node.member_events():  # MemberEvent(kind, member, at)
                say({"node": name, "kind": ev.kind, "member": ev.member.node_id, "at": ev.at})

        def finish(task: asyncio.Task) -> None:
            if not task.cancelled() and task.exception() is not None and not done.done():
                done.set_exception(task.exception())  # type: ignore[arg-type]

        pump = asyncio.create_task(events())
        pump.add_done_callback(finish)
        pending = b""

        def on_stdin() -> None:
            nonlocal pending
            data = os.read(0, 4096)
            if not data:  # the parent went away
                if not done.done():
                    done.set_result(0)
                return
            pending += data
            while b"\n" in pending:
                raw, _, pending = pending.partition(b"\n")
                if raw.strip() == b"members":
                    view = {m.node_id: m.status for m in node.members()}
                    say({"reply": "members", "node": name, "members": view})

        leaving: List[asyncio.Task] = []

        async def leave() -> None:
            t = time.time()
            try:
                await node.leave()
            except Exception as exc:  # the child ends with it (stderr, exit 1)
                if not done.done():
                    done.set_exception(exc)
                return
            say({"reply": "left", "node": name, "leave_s": round(time.time() - t, 4)})
            if not done.done():
                done.set_result(0)

        def on_usr1() -> None:
            if not leaving:
                leaving.append(asyncio.create_task(leave()))

        loop.add_reader(0, on_stdin)
        loop.add_signal_handler(signal.SIGUSR1, on_usr1)
        say(
            {
                "ready": name,
                "implementation": node.implementation,
                "pid": os.getpid(),
                "loaded_from": os.path.dirname(os.path.abspath(fastgossip.__file__)),
            }
        )
        try:
            return await done
        finally:
            loop.remove_reader(0)
            pump.cancel()
            await node.shutdown()

    return asyncio.run(main())


# -- command line ----------------------------------------------------------------
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3, help="victims per scenario")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="of kill,stop,leave")
    parser.add_argument("--no-serf", action="store_true", help="fastgossip only")
    parser.add_argument("--interval", type=float, default=0.2, help="fastgossip gossip_interval")
    parser.add_argument(
        "--implementation",
        default="cython",
        choices=("cython", "python", "default"),
        help="the fastgossip build the nodes run ('default': the process default)",
    )
    parser.add_argument("--timeout", type=float, default=DETECT_TIMEOUT, help="per victim")
    parser.add_argument("--form-timeout", type=float, default=FORM_TIMEOUT)
    parser.add_argument("--settle", type=float, default=2.0, help="idle s before each failure")
    parser.add_argument(
        "--hold", type=float, default=HOLD, help="quiet s about a victim before the next"
    )
    parser.add_argument("--seed", type=int, default=1, help="picks the victims")
    parser.add_argument("--out", default=DEFAULT_OUT, help="the JSON result ('-': none)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seed-addr", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        return child_main(args.child, args.port, args.seed_addr, args.interval, args.implementation)
    bad = [s for s in args.scenarios.split(",") if s and s not in SCENARIOS]
    if bad or not args.scenarios.strip(","):
        parser.error(f"--scenarios: pick from {','.join(SCENARIOS)}")
    if args.nodes < 4 or not 1 <= args.repeat <= args.nodes - 3:
        parser.error("need --nodes >= 4 and 1 <= --repeat <= nodes - 3")
    if args.timeout <= 0 or args.interval <= 0 or args.settle < 0 or args.hold < 0:
        parser.error("--timeout and --interval must be > 0, --settle and --hold >= 0")
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread():  # SIGTERM cleans up too

        def on_term(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, on_term)
    try:
        result = run(args)
    except KeyboardInterrupt:
        print("interrupted: every process started was stopped", file=sys.stderr)
        return 130
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)
    if args.out != "-":
        write_json(args.out, result)
    print(json.dumps(result, indent=1) if args.json else render(result))
    return 0


def _walk(result: Dict[str, Any]) -> Iterator[Tuple[str, str, Dict[str, Any]]]:
    """(scenario, system, measurement) for every measurement in a result."""
    for scenario, row in result["scenarios"].items():
        for system, r in row.items():
            yield scenario, system, r


def validate(result: Dict[str, Any]) -> None:
    """Raises AssertionError unless ``result`` has the shape ``run`` writes."""
    for key in ("machine", "settings", "scenarios", "targets", "serf_skipped"):
        assert key in result, key
    for scenario, system, r in _walk(result):
        assert scenario in SCENARIOS and system in SYSTEMS, (scenario, system)
        for key in ("pooled", "repeats", "anomalies", "stderr", "pids", "formed_s"):
            assert key in r, (scenario, system, key)
        for key in ("n", "missed", "median_s", "p90_s", "max_s", "everywhere_s", "flapped"):
            assert key in r["pooled"], (scenario, system, key)
        for rep in r["repeats"]:
            for key in ("victim", "observers", "latency_s", "missed_by", "views_agree", "settled"):
                assert key in rep, (scenario, system, key)
            assert rep["observers"] == len(rep["latency_s"]) + len(rep["missed_by"])
    for t in result["targets"]:
        for key in ("what", "target", "measured", "unit", "pass"):
            assert key in t, key


if __name__ == "__main__":
    sys.exit(main())
