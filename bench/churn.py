"""Set/delete churn: memory stays flat and the cluster converges.

The issue's target: "10,000 set/delete cycles per second for 10 minutes on a
3-node cluster: memory flat (tombstones collected), every node converges to
the same table."

* ``--nodes`` (3) node processes on 127.0.0.1 (``python -m bench.churn
  --child``), one node each: n0 first, the others join through it
  (``seeds=[n0]``); gossip interval ``--interval`` (0.2 s), ``tombstone_grace``
  ``--grace``, every other setting the default.
* Once every node lists every node alive, each node writes ``--rate / nodes``
  cycles per second for ``--minutes``: a cycle is ``set(key, value)`` then
  ``delete(key)`` of a fresh key ``c/<node>/<i>``, so every cycle leaves one
  tombstone that every node holds until it collects it. Every tenth cycle
  also writes one of 64 shared live keys ``live/<j>`` (every eighth of those
  writes deletes it instead): all nodes write them concurrently, so the live
  table has values to agree on. The writer follows a schedule from a common
  start: each loop turn writes the cycles due (at most ``MAX_BATCH``), then
  sleeps until the next one is due, or only yields when behind; the rate
  achieved and the largest backlog are reported.
* Every ``--sample-every`` (5) s, per node: RSS (/proc), CPU, tombstones held,
  ``entry_count``, ``len(table)``, ``tombstones_collected``, bytes and frames
  sent and received, the writer's backlog and the event loop's worst lateness.
* After the window: writing stops; every node's live table (``items()``) is
  polled until all are equal (twice in a row), which gives the time to
  converge; then until every node holds no tombstone (one grace later), after
  which the tables are compared once more.
* Beside the cluster, one more process measures what a held tombstone costs:
  ``--cost-tombstones`` cycles on a lone node that collects nothing, RSS before
  and after.

With the default ``tombstone_grace`` of 300 s a node would hold rate x 300 x
9/8 tombstones at the peak (3.4 M at 10,000/s, reached after ~5.6 min): the
run uses ``--grace 30`` so the plateau is reached within a minute and held
for nine, and the memory at 300 s is estimated from the measured cost per
tombstone (the JSON says so).

    python -m bench.churn [--minutes 10] [--rate 10000] [--grace 30]
                          [--nodes 3] [--interval 0.2] [--sample-every 5]
                          [--profile-node K [--profile-seconds 20]]
                          [--out bench/results/churn.json] [--json] [--quick]

``--quick`` (the smoke test): 5 s at 500 cycles/s, grace 1 s, samples every
0.5 s. ``--profile-node K`` runs node K under cProfile for
``--profile-seconds`` from the middle of the window and reports its top
functions (that node then also pays the profiler).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

if __package__ in (None, ""):  # run as a script: bench/ is importable from the repo root
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._meta import ROOT, machine, run_and_emit  # noqa: E402
from bench._procs import (  # noqa: E402
    ChildPipes,
    child_env,
    profile_off,
    profile_on,
    say,
    show_tail,
    tail,
)
from bench.idle import CLK_TCK, cpu_ticks, stop_all, top_functions  # noqa: E402

DEFAULT_OUT = os.path.join(ROOT, "bench", "results", "churn.json")
MIB = 1 << 20

START_TIMEOUT = 60.0  # a child process prints its address
JOIN_TIMEOUT = 60.0  # every node lists every node alive
ASK_TIMEOUT = 30.0  # a child answers a command (its loop may be busy writing)
CONVERGE_TIMEOUT = 120.0  # live tables equal after the writes stop
COLLECT_MARGIN = 60.0  # all tombstones collected: 9/8 grace + a sweep + this
EXIT_TIMEOUT = 15.0  # children shut down when asked
LIFETIME_MARGIN = 600.0  # a child exits by itself this long after the run should have ended
COST_TIMEOUT = 300.0  # the tombstone-cost process

MAX_BATCH = 500  # cycles per writer loop turn at most (then the loop runs)
TICK_MAX = 0.005  # the writer sleeps at most this long when on schedule
LIVE_KEYS = 64  # shared live keys
LIVE_EVERY = 10  # every tenth cycle also writes a live key ...
LIVE_DELETE_EVERY = 8  # ... and every eighth of those writes deletes it
LAG_EVERY = 0.05  # the children's loop-lag timer
CONVERGE_POLL = 0.1
COLLECT_POLL = 0.5
VALUE_BYTES = 16

_T0 = time.monotonic()


def progress(text: str) -> None:
    print(f"[churn {time.monotonic() - _T0:6.1f}s] {text}", file=sys.stderr, flush=True)


def rss_kib(pid: int) -> Tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB; (0, 0) when it is gone."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def _r(x: Optional[float], digits: int = 2) -> Optional[float]:
    return None if x is None else round(x, digits)


def slope(points: Sequence[Tuple[float, float]]) -> Optional[float]:
    """Least-squares slope of (x, y) points; None with fewer than two x values."""
    n = len(points)
    if n < 2:
        return None
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / sxx


# -- the child: one node, one writer -------------------------------------------
class _Writer:
    """Set/delete cycles on a schedule: ``rate`` per second from ``start``
    (loop time) for ``seconds``; the cycles due are written each loop turn, at
    most MAX_BATCH, so gossip and commands run between batches."""

    def __init__(self, node: Any, index: int, rate: float, start: float, seconds: float) -> None:
        self.node = node
        self.index = index
        self.rate = rate
        self.start = start
        self.seconds = seconds
        self.total = int(rate * seconds)
        self.done = 0
        self.live_sets = 0
        self.live_deletes = 0
        self.backlog_max = 0
        self.behind_turns = 0
        self.turns = 0
        self.t_first: Optional[float] = None  # wall time of the first and last write
        self.t_last: Optional[float] = None
        self.elapsed = 0.0
        self.stopped = False

    def due(self, now: float) -> int:
        return max(0, min(self.total, int((now - self.start) * self.rate) + 1))

    def _cycles(self, first: int, count: int) -> None:
        node = self.node
        prefix = f"c/n{self.index}/"
        tag = f"n{self.index}:"
        for i in range(first, first + count):
            key = prefix + str(i)
            node.set(key, b"%016d" % i)
            node.delete(key)
            if i % LIVE_EVERY == 0:
                j = i // LIVE_EVERY
                live = f"live/{j % LIVE_KEYS}"
                if j % LIVE_DELETE_EVERY == LIVE_DELETE_EVERY - 1:
                    node.delete(live)
                    self.live_deletes += 1
                else:
                    node.set(live, (tag + str(i)).encode())
                    self.live_sets += 1

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        end = self.start + self.seconds
        await asyncio.sleep(max(0.0, self.start - loop.time()))
        # each turn writes at least one cycle or sleeps until one is due
        max_turns = self.total + int(self.seconds / 0.001) + 1000
        while self.turns < max_turns and not self.stopped:
            self.turns += 1
            now = loop.time()
            if now >= end or self.done >= self.total:
                break
            due = self.due(now)
            n = min(due - self.done, MAX_BATCH)
            if n > 0:
                if self.t_first is None:
                    self.t_first = time.time()
                self._cycles(self.done, n)
                self.done += n
                self.t_last = time.time()
                backlog = due - self.done
                if backlog > self.backlog_max:
                    self.backlog_max = backlog
                if backlog > 0:
                    self.behind_turns += 1
                    await asyncio.sleep(0)  # behind: let gossip run, then catch up
                    continue
            wait = self.start + (self.done + 1) / self.rate - loop.time()
            await asyncio.sleep(min(TICK_MAX, max(0.0, wait)))
        self.elapsed = min(loop.time(), end) - self.start

    def report(self) -> Dict[str, Any]:
        return {
            "target_cycles": self.total,
            "cycles": self.done,
            "live_sets": self.live_sets,
            "live_deletes": self.live_deletes,
            "window_s": round(self.elapsed, 3),
            "rate": round(self.done / self.elapsed, 1) if self.elapsed > 0 else None,
            "backlog_max": self.backlog_max,
            "behind_turns": self.behind_turns,
            "turns": self.turns,
            "t_first": self.t_first,
            "t_last": self.t_last,
        }


class _Lag:
    """A timer every LAG_EVERY s; the worst lateness since the last read."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.worst = 0.0
        self.over_100ms = 0
        self._due = loop.time() + LAG_EVERY
        self._handle = loop.call_at(self._due, self._fire)

    def _fire(self) -> None:
        now = self.loop.time()
        late = now - self._due
        if late > self.worst:
            self.worst = late
        if late > 0.1:
            self.over_100ms += 1
        self._due = now + LAG_EVERY
        self._handle = self.loop.call_at(self._due, self._fire)

    def take(self) -> Dict[str, Any]:
        out = {"lag_max_ms": round(self.worst * 1000, 1), "lag_over_100ms": self.over_100ms}
        self.worst = 0.0
        self.over_100ms = 0
        return out

    def stop(self) -> None:
        self._handle.cancel()


def _node_stats(node: Any) -> Dict[str, Any]:
    st = node._core.state
    s = node.stats
    return {
        "t": time.time(),
        "tombstones": st.tombstones,
        "entry_count": st.entry_count,
        "len": len(st),
        "collected": s.tombstones_collected,
        "bytes_sent": s.bytes_sent,
        "bytes_received": s.bytes_received,
        "frames_sent": s.frames_sent,
        "frames_received": s.frames_received,
        "entries_merged": s.entries_merged,
        "entries_refused": s.entries_refused,
        "rounds": s.rounds,
        "sends_dropped": s.sends_dropped,
        "exchanges_throttled": s.exchanges_throttled,
        "resets_sent": s.resets_sent,
        "resets_received": s.resets_received,
        "reset_drops": s.reset_drops,
    }


def _digest(node: Any) -> Dict[str, Any]:
    """The live table, hashed: equal hashes on every node is convergence."""
    items = node.items()
    h = hashlib.blake2b(digest_size=16)
    for key in sorted(items):
        h.update(repr((key, items[key])).encode())
        h.update(b"\0")
    stray = [k for k in items if not k.startswith("live/")]
    st = node._core.state
    return {
        "t": time.time(),
        "hash": h.hexdigest(),
        "live_keys": len(items),
        "stray_keys": len(stray),
        "stray_sample": sorted(stray)[:5],
        "tombstones": st.tombstones,
        "entry_count": st.entry_count,
        "collected": node.stats.tombstones_collected,
    }


def child_main(
    index: int, seed: Optional[str], grace: float, interval: float, lifetime: float
) -> int:
    from fastgossip import GossipNode, NodeConfig

    async def main() -> None:
        loop = asyncio.get_running_loop()
        config = NodeConfig(
            f"n{index}",
            bind=("127.0.0.1", 0),
            seeds=[seed] if seed else [],
            tombstone_grace=grace,
            gossip_interval=interval,
        )
        node = await GossipNode.start(config)
        lag = _Lag(loop)
        say(
            {
                "id": 0,
                "addr": f"{node.addr[0]}:{node.addr[1]}",
                "implementation": node.implementation,
                "origin": node.origin,
                "pid": os.getpid(),
            }
        )
        done = loop.create_future()
        loop.call_later(lifetime, lambda: done.done() or done.set_result("lifetime"))
        writer: Optional[_Writer] = None
        writer_task: Optional[asyncio.Task] = None
        prof: Any = None
        pending = b""
        tasks: List[asyncio.Task] = []

        async def answer_result(rid: int) -> None:
            if writer_task is not None:
                await writer_task
            say({"id": rid, **(writer.report() if writer else {}), **_node_stats(node)})

        def on_command(req: Dict[str, Any]) -> None:
            nonlocal writer, writer_task, prof
            rid, cmd = req["id"], req["cmd"]
            if cmd == "members":
                alive = [m.node_id for m in node.members() if m.status == "alive"]
                say({"id": rid, "alive": alive})
            elif cmd == "write":
                start = loop.time() + (req["start_wall"] - time.time())
                writer = _Writer(node, index, req["rate"], start, req["seconds"])
                writer_task = loop.create_task(writer.run())
                say({"id": rid, "ok": True, "target_cycles": writer.total})
            elif cmd == "sample":
                row = _node_stats(node)
                if writer is not None:
                    row["cycles"] = writer.done
                    row["backlog"] = max(0, writer.due(loop.time()) - writer.done)
                row.update(lag.take())
                cpu = os.times()
                row["cpu_s"] = round(cpu.user + cpu.system, 2)
                say({"id": rid, **row})
            elif cmd == "result":
                tasks.append(loop.create_task(answer_result(rid)))
            elif cmd == "digest":
                say({"id": rid, **_digest(node)})
            elif cmd == "prof-on":
                prof = profile_on()
                say({"id": rid, "ok": True})
            elif cmd == "prof-off":
                say({"id": rid, "ok": profile_off(prof, req["path"])})
                prof = None
            elif cmd == "exit":
                if writer is not None:
                    writer.stopped = True
                say({"id": rid, "ok": True})
                if not done.done():
                    done.set_result("exit")
            else:
                say({"id": rid, "error": f"unknown command {cmd!r}"})

        def on_stdin() -> None:
            nonlocal pending
            data = os.read(0, 65536)
            if not data:  # the parent went away
                if not done.done():
                    done.set_result("eof")
                return
            pending += data
            while b"\n" in pending:
                raw, _, pending = pending.partition(b"\n")
                if raw.strip():
                    on_command(json.loads(raw))

        loop.add_reader(0, on_stdin)
        try:
            await done
        finally:
            loop.remove_reader(0)
            lag.stop()
            if writer is not None:
                writer.stopped = True
            for t in tasks + ([writer_task] if writer_task else []):
                t.cancel()
            await node.shutdown()

    asyncio.run(main())
    return 0


def cost_main(count: int) -> int:
    """What a held tombstone costs: ``count`` cycles on a lone node whose grace
    outlasts the run (nothing is collected); RSS before and after."""
    from fastgossip import GossipNode, NodeConfig

    async def main() -> Dict[str, Any]:
        node = await GossipNode.start(NodeConfig("n0", tombstone_grace=3600.0))
        try:
            prefix = "c/n0/"
            for i in range(1000):  # warm-up: first allocations, interned names
                node.set(f"warm/{i}", b"%016d" % i)
                node.delete(f"warm/{i}")
            await asyncio.sleep(0.05)
            rss0, _ = rss_kib(os.getpid())
            t0 = time.perf_counter()
            for i in range(count):
                key = prefix + str(i)
                node.set(key, b"%016d" % i)
                node.delete(key)
                if i % 5000 == 4999:
                    await asyncio.sleep(0)  # let the node's own rounds run
            elapsed = time.perf_counter() - t0
            rss1, hwm = rss_kib(os.getpid())
            held = node._core.state.tombstones
            return {
                "cycles": count,
                "tombstones_held": held,
                "rss_before_mib": round(rss0 / 1024, 2),
                "rss_after_mib": round(rss1 / 1024, 2),
                "rss_peak_mib": round(hwm / 1024, 2),
                "bytes_per_tombstone": round((rss1 - rss0) * 1024 / max(1, held - 1000), 1),
                "cycle_us": round(elapsed / count * 1e6, 2),
                "cycles_per_s_alone": round(count / elapsed),
            }
        finally:
            await node.shutdown()

    print(json.dumps(asyncio.run(main())), flush=True)
    return 0


# -- the parent ------------------------------------------------------------------
class _Fleet(ChildPipes):
    """The node processes, spoken to in JSON lines (a request id each)."""

    def __init__(self, errlog: str) -> None:
        super().__init__()
        self.lines: List[List[Dict[str, Any]]] = []
        self.errlog = errlog
        self.seq = 0

    def spawn(self, argv: List[str]) -> int:
        with open(self.errlog, "ab") as err:
            p = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=child_env(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        self.lines.append([])
        return self.add(p)

    def _read(self, timeout: float) -> None:
        for i, line in self.read(timeout):
            self.lines[i].append(json.loads(line))

    def collect(self, which: Sequence[int], rid: int, timeout: float) -> Dict[int, Any]:
        """The answer with id ``rid`` from each of ``which`` (older ones dropped)."""
        got: Dict[int, Any] = {}
        deadline = time.monotonic() + timeout
        while True:  # bounded by timeout
            for i in which:
                while i not in got and self.lines[i]:
                    line = self.lines[i].pop(0)
                    if line.get("id") == rid:
                        got[i] = line
            if len(got) == len(which):
                return got
            dead = [i for i in which if i not in got and self.procs[i].poll() is not None]
            if dead:
                raise RuntimeError(
                    f"node processes {dead} exited ({[self.procs[i].poll() for i in dead]})"
                    f"; stderr:\n{tail(self.errlog)}"
                )
            left = deadline - time.monotonic()
            if left <= 0:
                missing = sorted(set(which) - set(got))
                raise RuntimeError(
                    f"no answer to request {rid} within {timeout:.0f} s from nodes {missing}"
                )
            self._read(min(left, 0.5))

    def ask(
        self, which: Sequence[int], cmd: str, timeout: float = ASK_TIMEOUT, **kw: Any
    ) -> Dict[int, Any]:
        self.seq += 1
        self.send(which, json.dumps({"id": self.seq, "cmd": cmd, **kw}))
        return self.collect(which, self.seq, timeout)


def _row(t: float, fleet: _Fleet, answers: Dict[int, Any]) -> Dict[str, Any]:
    nodes = []
    for i in sorted(answers):
        a = dict(answers[i])
        rss, hwm = rss_kib(fleet.procs[i].pid)
        a["rss_mib"] = round(rss / 1024, 2)
        a["hwm_mib"] = round(hwm / 1024, 2)
        try:
            u, s = cpu_ticks(fleet.procs[i].pid)
            a["cpu_s"] = round((u + s) / CLK_TCK, 2)
        except OSError:
            pass
        a.pop("id", None)
        a.pop("t", None)
        nodes.append(a)
    return {"t": round(t, 2), "nodes": nodes}


def _wait_joined(fleet: _Fleet, n: int, timeout: float) -> float:
    everyone = list(range(n))
    started = time.monotonic()
    while True:  # bounded by timeout
        answers = fleet.ask(everyone, "members")
        if all(len(a["alive"]) == n for a in answers.values()):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"cluster not formed after {timeout:.0f} s: {answers}")
        time.sleep(0.2)


def _poll_converged(fleet: _Fleet, n: int, t_stop: float, timeout: float) -> Dict[str, Any]:
    """Poll every node's live table until all are equal twice in a row."""
    everyone = list(range(n))
    started = time.monotonic()
    polls = 0
    first_equal: Optional[float] = None
    last: Dict[int, Any] = {}
    max_polls = int(timeout / CONVERGE_POLL) + 10
    while polls < max_polls:
        polls += 1
        last = fleet.ask(everyone, "digest")
        t_answer = time.time()
        equal = len({a["hash"] for a in last.values()}) == 1
        if equal and first_equal is not None:
            break
        first_equal = t_answer if equal else None
        if time.monotonic() - started > timeout:
            break
        time.sleep(CONVERGE_POLL)
    converged = first_equal is not None and len({a["hash"] for a in last.values()}) == 1
    return {
        "converged": converged,
        "seconds_after_last_write": _r(first_equal - t_stop, 3) if converged else None,
        "poll_every_s": CONVERGE_POLL,
        "polls": polls,
        "live_keys": [last[i]["live_keys"] for i in everyone],
        "stray_keys": [last[i]["stray_keys"] for i in everyone],
        "stray_sample": [last[i]["stray_sample"] for i in everyone],
        "hashes": [last[i]["hash"] for i in everyone],
        "tombstones_then": [last[i]["tombstones"] for i in everyone],
        "entry_count_then": [last[i]["entry_count"] for i in everyone],
    }


def _poll_collected(fleet: _Fleet, n: int, t_stop: float, timeout: float) -> Dict[str, Any]:
    """Poll until no node holds a tombstone."""
    everyone = list(range(n))
    started = time.monotonic()
    polls = 0
    answers: Dict[int, Any] = {}
    done_at: Optional[float] = None
    max_polls = int(timeout / COLLECT_POLL) + 10
    while polls < max_polls:
        polls += 1
        answers = fleet.ask(everyone, "sample")
        if all(a["tombstones"] == 0 for a in answers.values()):
            done_at = time.time()
            break
        if time.monotonic() - started > timeout:
            break
        time.sleep(COLLECT_POLL)
    return {
        "all_collected": done_at is not None,
        "seconds_after_last_write": _r(done_at - t_stop, 2) if done_at else None,
        "poll_every_s": COLLECT_POLL,
        "tombstones_left": [answers[i]["tombstones"] for i in everyone],
        "collected": [answers[i]["collected"] for i in everyone],
        "entry_count": [answers[i]["entry_count"] for i in everyone],
        "len": [answers[i]["len"] for i in everyone],
    }


def run_cost(count: int) -> Dict[str, Any]:
    """The tombstone-cost process (its own, so nothing else is in its RSS)."""
    cmd = [sys.executable, "-m", "bench.churn", "--cost-child", str(count)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, text=True)
    try:
        out, _ = proc.communicate(timeout=COST_TIMEOUT)
    except subprocess.TimeoutExpired:
        return {"error": f"no answer within {COST_TIMEOUT:.0f} s"}
    finally:
        stop_all([proc])
    if proc.returncode != 0 or not out.strip():
        return {"error": f"exited {proc.returncode}"}
    return json.loads(out.strip().splitlines()[-1])


def run_cluster(args: argparse.Namespace) -> Dict[str, Any]:
    n = args.nodes
    seconds = args.minutes * 60.0
    grace = args.grace
    tmp = tempfile.mkdtemp(prefix="fastgossip-churn-")
    errlog = os.path.join(tmp, "stderr.log")
    fleet = _Fleet(errlog)
    everyone = list(range(n))
    result: Dict[str, Any] = {}
    lifetime = seconds + grace * 2 + CONVERGE_TIMEOUT + COLLECT_MARGIN + LIFETIME_MARGIN
    wall0 = time.monotonic()
    try:
        seed: Optional[str] = None
        for i in range(n):
            argv = [sys.executable, "-m", "bench.churn", "--child", str(i)]
            argv += ["--grace", str(grace), "--interval", str(args.interval)]
            argv += ["--lifetime", str(lifetime)]
            if seed:
                argv += ["--seed", seed]
            fleet.spawn(argv)
            ready = fleet.collect([i], 0, START_TIMEOUT)[i]
            if seed is None:
                seed = ready["addr"]
            result.setdefault("pids", []).append(ready["pid"])
            result.setdefault("addrs", []).append(ready["addr"])
            result["implementation"] = ready["implementation"]
        result["join_s"] = _r(_wait_joined(fleet, n, JOIN_TIMEOUT), 2)
        progress(f"{n} nodes joined in {result['join_s']} s; writing for {seconds:g} s")

        per_node = args.rate / n
        start_wall = time.time() + 1.0
        fleet.ask(everyone, "write", start_wall=start_wall, rate=per_node, seconds=seconds)
        samples: List[Dict[str, Any]] = [_row(0.0, fleet, fleet.ask(everyone, "sample"))]
        end_wall = start_wall + seconds
        prof_at = start_wall + seconds / 2 if args.profile_node is not None else None
        prof_path = os.path.join(tmp, "node.prof")
        prof_state = "off"
        next_at = start_wall + args.sample_every
        max_samples = int(seconds / args.sample_every) + 10
        while len(samples) < max_samples:  # bounded by the window, too
            now = time.time()
            if prof_at is not None and prof_state == "off" and now >= prof_at:
                fleet.ask([args.profile_node], "prof-on")
                prof_state = "on"
            if prof_state == "on" and now >= prof_at + args.profile_seconds:  # type: ignore[operator]
                fleet.ask([args.profile_node], "prof-off", path=prof_path, timeout=60.0)
                prof_state = "done"
            if now >= end_wall:
                break
            time.sleep(max(0.0, min(next_at, end_wall) - now))
            if time.time() < next_at:
                continue
            row = _row(time.time() - start_wall, fleet, fleet.ask(everyone, "sample"))
            samples.append(row)
            next_at += args.sample_every
            if len(samples) % max(1, int(60 / args.sample_every)) == 0:
                tomb = [x["tombstones"] for x in row["nodes"]]
                rss = [x["rss_mib"] for x in row["nodes"]]
                cyc = sum(x.get("cycles", 0) for x in row["nodes"])
                progress(
                    f"t={row['t']:.0f} s: {cyc:,} cycles ({cyc / max(row['t'], 1e-9):,.0f}/s), "
                    f"tombstones held {tomb}, RSS MiB {rss}"
                )
        if prof_state == "on":
            fleet.ask([args.profile_node], "prof-off", path=prof_path, timeout=60.0)
            prof_state = "done"
        if prof_state == "done":
            result["profile"] = {
                "node": args.profile_node,
                "seconds": args.profile_seconds,
                "top": top_functions(prof_path, 30),
            }
        writes = fleet.ask(everyone, "result", timeout=seconds + ASK_TIMEOUT)
        t_stop = max(w["t_last"] or start_wall for w in writes.values())
        samples.append(_row(t_stop - start_wall, fleet, fleet.ask(everyone, "sample")))
        result["samples"] = samples
        result["writes"] = [
            {k: v for k, v in writes[i].items() if k != "id"} for i in everyone
        ]  # fmt: skip
        progress(
            "writes done: "
            f"{sum(w['cycles'] for w in writes.values()):,} cycles; waiting for convergence"
        )
        result["convergence"] = _poll_converged(fleet, n, t_stop, CONVERGE_TIMEOUT)
        conv = result["convergence"]
        progress(
            f"converged: {conv['converged']} after {conv['seconds_after_last_write']} s; "
            f"waiting for the tombstones to be collected (grace {grace:g} s)"
        )
        collect_timeout = grace * 9 / 8 + max(args.interval, grace / 8) + COLLECT_MARGIN
        result["collection"] = _poll_collected(fleet, n, t_stop, collect_timeout)
        final = fleet.ask(everyone, "digest")
        result["final"] = {
            "equal": len({a["hash"] for a in final.values()}) == 1,
            "live_keys": [final[i]["live_keys"] for i in everyone],
            "stray_keys": [final[i]["stray_keys"] for i in everyone],
            "tombstones": [final[i]["tombstones"] for i in everyone],
            "entry_count": [final[i]["entry_count"] for i in everyone],
            "collected": [final[i]["collected"] for i in everyone],
        }
        samples_after = _row(time.time() - start_wall, fleet, fleet.ask(everyone, "sample"))
        result["after_collection"] = samples_after
        progress(
            f"collection: {result['collection']['all_collected']} after "
            f"{result['collection']['seconds_after_last_write']} s; final tables equal: "
            f"{result['final']['equal']}"
        )
        result["start_wall"] = start_wall
        result["t_stop_wall"] = t_stop
        try:
            fleet.ask(everyone, "exit", timeout=EXIT_TIMEOUT)
        except RuntimeError:
            pass
        return result
    except Exception:
        show_tail(errlog, "node stderr")
        raise
    finally:
        fleet.close()
        stop_all(fleet.procs)
        result["cluster_wall_s"] = round(time.monotonic() - wall0, 1)
        shutil.rmtree(tmp, ignore_errors=True)


# -- figures -----------------------------------------------------------------------
def summarise(args: argparse.Namespace, run: Dict[str, Any], cost: Dict[str, Any]) -> Dict:
    n = args.nodes
    grace = args.grace
    samples = run["samples"]
    writes = run["writes"]
    window = max(w["window_s"] for w in writes)
    cycles = sum(w["cycles"] for w in writes)
    achieved = cycles / window if window > 0 else 0.0
    plateau_from = grace * 9 / 8 + max(args.interval, grace / 8)  # one sweep after the peak
    end_t = samples[-1]["t"]
    plateau = [s for s in samples if s["t"] >= plateau_from]
    second_half = [s for s in samples if s["t"] >= end_t / 2]
    base = samples[0]
    out: Dict[str, Any] = {}

    out["rate"] = {
        "target_cycles_per_s": args.rate,
        "achieved_cycles_per_s": round(achieved, 1),
        "achieved_share": round(achieved / args.rate, 4) if args.rate else None,
        "cycles": cycles,
        "window_s": window,
        "per_node_cycles_per_s": [w["rate"] for w in writes],
        "per_node_backlog_max": [w["backlog_max"] for w in writes],
        "live_sets": sum(w["live_sets"] for w in writes),
        "live_deletes": sum(w["live_deletes"] for w in writes),
        "operations_per_s": round(
            (2 * cycles + sum(w["live_sets"] + w["live_deletes"] for w in writes)) / window, 1
        ),
    }
    # CPU of the node processes over the window
    cpu = []
    for i in range(n):
        c0 = base["nodes"][i].get("cpu_s")
        c1 = samples[-1]["nodes"][i].get("cpu_s")
        cpu.append(round((c1 - c0) / end_t, 3) if c0 is not None and c1 is not None else None)
    out["cpu_core_share_per_node"] = cpu
    out["cpu_cores_total"] = round(sum(c for c in cpu if c is not None), 3)
    out["loop_lag_max_ms_per_node"] = [
        max((s["nodes"][i].get("lag_max_ms", 0) for s in samples[1:]), default=None)
        for i in range(n)
    ]

    mem: Dict[str, Any] = {"per_node": []}
    for i in range(n):
        rss = [(s["t"], s["nodes"][i]["rss_mib"]) for s in samples]
        pl = [(t, r) for t, r in rss if t >= plateau_from]
        half = [(t / 60.0, s["nodes"][i]["rss_mib"]) for s in second_half for t in [s["t"]]]
        sl = slope(half)
        held_pl = [s["nodes"][i]["tombstones"] for s in plateau]
        row = {
            "rss_start_mib": base["nodes"][i]["rss_mib"],
            "rss_plateau_start_mib": pl[0][1] if pl else None,
            "plateau_start_t": pl[0][0] if pl else None,
            "rss_end_of_writes_mib": samples[-1]["nodes"][i]["rss_mib"],
            "rss_max_mib": max(r for _, r in rss),
            "rss_after_collection_mib": run["after_collection"]["nodes"][i]["rss_mib"],
            "peak_rss_mib": run["after_collection"]["nodes"][i]["hwm_mib"],
            "slope_second_half_mib_per_min": _r(sl, 3),
            "growth_plateau_to_end_mib": _r(samples[-1]["nodes"][i]["rss_mib"] - pl[0][1])
            if pl
            else None,
            "tombstones_held_plateau_min": min(held_pl) if held_pl else None,
            "tombstones_held_plateau_max": max(held_pl) if held_pl else None,
            "tombstones_held_plateau_mean": round(sum(held_pl) / len(held_pl)) if held_pl else None,
        }
        max_held = max(s["nodes"][i]["tombstones"] for s in samples)
        row["tombstones_held_max"] = max_held
        if pl and max_held:
            row["bytes_per_tombstone_in_run"] = round(
                (max(r for _, r in pl) - base["nodes"][i]["rss_mib"]) * MIB / max_held, 1
            )
        mem["per_node"].append(row)
    slopes = [r["slope_second_half_mib_per_min"] for r in mem["per_node"]]
    mem["slope_max_mib_per_min"] = max((s for s in slopes if s is not None), default=None)
    mem["expected_held_low"] = round(achieved * grace)
    mem["expected_held_peak"] = round(achieved * grace * 9 / 8)
    mem["plateau_from_t"] = round(plateau_from, 2)
    per_tomb = cost.get("bytes_per_tombstone")
    in_run = [r.get("bytes_per_tombstone_in_run") for r in mem["per_node"]]
    in_run = [x for x in in_run if x is not None]
    mem["bytes_per_tombstone_alone"] = per_tomb
    mem["bytes_per_tombstone_in_run_mean"] = round(sum(in_run) / len(in_run), 1) if in_run else None
    default_grace = 300.0
    held_300 = args.rate * default_grace * 9 / 8
    est: Dict[str, Any] = {
        "what": "tombstones held at the peak with the default tombstone_grace (300 s) at the "
        "target rate, and what they cost on top of the node's baseline RSS; not run",
        "grace_s": default_grace,
        "rate": args.rate,
        "tombstones_held_peak": round(held_300),
        "reached_after_s": default_grace * 9 / 8,
        "baseline_rss_mib": base["nodes"][0]["rss_mib"],
    }
    for name, b in (("alone", per_tomb), ("in_run", mem["bytes_per_tombstone_in_run_mean"])):
        if b:
            est[f"extra_mib_{name}"] = round(held_300 * b / MIB, 1)
            est[f"rss_mib_{name}"] = round(base["nodes"][0]["rss_mib"] + held_300 * b / MIB, 1)
    mem["default_grace_estimate"] = est
    mem["series"] = {  # for a plot: per sample, per node
        "t": [s["t"] for s in samples],
        "rss_mib": [[s["nodes"][i]["rss_mib"] for s in samples] for i in range(n)],
        "tombstones": [[s["nodes"][i]["tombstones"] for s in samples] for i in range(n)],
        "entry_count": [[s["nodes"][i]["entry_count"] for s in samples] for i in range(n)],
    }
    out["memory"] = mem

    traffic = []
    for i in range(n):
        a, b = base["nodes"][i], samples[-1]["nodes"][i]
        traffic.append(
            {
                "bytes_sent_per_s": round((b["bytes_sent"] - a["bytes_sent"]) / end_t),
                "bytes_received_per_s": round((b["bytes_received"] - a["bytes_received"]) / end_t),
                "frames_sent_per_s": round((b["frames_sent"] - a["frames_sent"]) / end_t, 1),
                "entries_merged_per_s": round(
                    (b["entries_merged"] - a["entries_merged"]) / end_t, 1
                ),
                "bytes_sent_per_cycle": round(
                    (b["bytes_sent"] - a["bytes_sent"]) / max(1, cycles), 2
                ),
            }
        )
    out["traffic_per_node"] = traffic

    col = run["collection"]
    expected_min = cycles  # every node collects every cycle's tombstone (live deletes on top)
    out["collected_check"] = {
        "cycles_cluster_wide": cycles,
        "live_deletes_cluster_wide": out["rate"]["live_deletes"],
        "collected_per_node": col["collected"],
        "every_cycle_collected_on_every_node": all(c >= expected_min for c in col["collected"]),
        "at_most_cycles_plus_live_deletes": all(
            c <= cycles + out["rate"]["live_deletes"] for c in col["collected"]
        ),
    }
    conv = run["convergence"]
    fin = run["final"]
    held_max = max(r["tombstones_held_max"] for r in mem["per_node"])
    targets = [
        {
            "what": f"set/delete cycles per second, {n} nodes together",
            "target": args.rate,
            "measured": round(achieved, 1),
            "pass": achieved >= 0.98 * args.rate,
        },
        {
            "what": "RSS slope over the second half of the window, MiB/min, worst node "
            "(flat: <= 1)",
            "target": 1.0,
            "measured": mem["slope_max_mib_per_min"],
            "pass": mem["slope_max_mib_per_min"] is not None
            and mem["slope_max_mib_per_min"] <= 1.0,
        },
        {
            "what": "tombstones held at most, all nodes (<= 1.2 x achieved rate x grace x 9/8)",
            "target": round(1.2 * mem["expected_held_peak"]),
            "measured": held_max,
            "pass": held_max <= 1.2 * mem["expected_held_peak"],
        },
        {
            "what": "live tables equal on every node after the writes stop, seconds",
            "target": CONVERGE_TIMEOUT,
            "measured": conv["seconds_after_last_write"],
            "pass": bool(conv["converged"]) and sum(conv["stray_keys"]) == 0,
        },
        {
            "what": "every tombstone collected on every node within 9/8 grace + a sweep + "
            f"{COLLECT_MARGIN:g} s of the last write; tables still equal",
            "target": 0,
            "measured": sum(col["tombstones_left"]),
            "pass": bool(col["all_collected"])
            and fin["equal"]
            and out["collected_check"]["every_cycle_collected_on_every_node"],
        },
    ]
    out["targets"] = targets
    return out


def run(args: argparse.Namespace) -> Dict[str, Any]:
    started = time.monotonic()
    result: Dict[str, Any] = {"benchmark": "churn", "machine": machine()}
    result["settings"] = {
        "nodes": args.nodes,
        "minutes": args.minutes,
        "rate": args.rate,
        "grace_s": args.grace,
        "interval_s": args.interval,
        "sample_every_s": args.sample_every,
        "cost_tombstones": args.cost_tombstones,
        "quick": args.quick,
        "max_batch": MAX_BATCH,
        "live_keys": LIVE_KEYS,
        "live_every": LIVE_EVERY,
        "live_delete_every": LIVE_DELETE_EVERY,
        "value_bytes": VALUE_BYTES,
    }
    result["notes"] = [
        f"tombstone_grace={args.grace:g} s, not the default 300 s, so that the plateau of "
        "tombstones held (between rate x grace and rate x grace x 9/8: a collection pass runs "
        "every grace/8 and takes what is older than the grace) is reached within "
        f"{args.grace * 9 / 8 + args.grace / 8:g} s and held for the rest of the window; at "
        "300 s it would take ~5.6 min and ~3.4 M tombstones at 10,000/s: see "
        "memory.default_grace_estimate, computed from the measured cost per tombstone",
        "a cycle is node.set(k, 16-byte value) then node.delete(k) of a fresh key "
        "c/<node>/<i>; every node holds every node's tombstones",
        "every 10th cycle also writes (1 in 8: deletes) one of 64 shared keys live/<j>, "
        "written concurrently by all nodes: the live table that must converge",
        "RSS from /proc/<pid>/status of each node process; bytes from node.stats",
    ]
    progress(
        f"{args.nodes} nodes, {args.rate:g} cycles/s, {args.minutes:g} min, grace {args.grace:g} s"
    )
    cluster = run_cluster(args)
    result["run"] = cluster
    progress(f"tombstone cost: {args.cost_tombstones:,} cycles on a lone node")
    cost = run_cost(args.cost_tombstones)
    result["tombstone_cost"] = cost
    result.update(summarise(args, cluster, cost))
    result["target"] = {
        "what": "the issue's target: all of targets[] pass",
        "pass": all(t["pass"] for t in result["targets"]),
    }
    result["wall_s"] = round(time.monotonic() - started, 1)
    return result


def render(result: Dict[str, Any]) -> str:
    s = result["settings"]
    r = result["rate"]
    m = result["memory"]
    lines = [
        f"churn: {s['nodes']} node processes, target {s['rate']:,} cycles/s for "
        f"{s['minutes']:g} min, grace {s['grace_s']:g} s ({result['machine']['cores']} cores, "
        f"load at start {result['machine']['load_average_1_5_15']})",
        f"  achieved {r['achieved_cycles_per_s']:,.0f} cycles/s ({r['achieved_share']:.1%}), "
        f"per node {r['per_node_cycles_per_s']}, backlog max {r['per_node_backlog_max']}; "
        f"CPU cores per node {result['cpu_core_share_per_node']}",
        f"  {'node':5} {'RSS0':>7} {'plat.':>7} {'end':>7} {'max':>7} {'slope/min':>9} "
        f"{'held min':>9} {'held max':>9} {'B/tomb':>7} {'sent B/s':>10} {'recv B/s':>10}",
    ]
    for i, row in enumerate(m["per_node"]):
        tr = result["traffic_per_node"][i]
        lines.append(
            f"  n{i:<4} {row['rss_start_mib']:>7} {row['rss_plateau_start_mib']!s:>7} "
            f"{row['rss_end_of_writes_mib']:>7} {row['rss_max_mib']:>7} "
            f"{row['slope_second_half_mib_per_min']!s:>9} "
            f"{row['tombstones_held_plateau_min']!s:>9} {row['tombstones_held_plateau_max']!s:>9} "
            f"{row.get('bytes_per_tombstone_in_run')!s:>7} {tr['bytes_sent_per_s']:>10,} "
            f"{tr['bytes_received_per_s']:>10,}"
        )
    lines.append(
        f"  expected held: {m['expected_held_low']:,} .. {m['expected_held_peak']:,}; cost "
        f"alone {m['bytes_per_tombstone_alone']} B/tombstone; at grace 300 s: "
        f"{m['default_grace_estimate'].get('extra_mib_alone')} MiB more"
    )
    conv = result["run"]["convergence"]
    col = result["run"]["collection"]
    lines.append(
        f"  converged {conv['converged']} {conv['seconds_after_last_write']} s after the last "
        f"write; all collected {col['all_collected']} after {col['seconds_after_last_write']} s "
        f"(collected {col['collected']})"
    )
    for t in result["targets"]:
        mark = "pass" if t["pass"] else "FAIL"
        lines.append(f"  [{mark}] {t['what']}: target {t['target']}, measured {t['measured']}")
    lines.append(f"whole run {result['wall_s']} s")
    return "\n".join(lines)


QUICK = {"minutes": 5 / 60, "rate": 500.0, "grace": 1.0, "sample_every": 0.5, "cost": 20_000}
FULL = {"minutes": 10.0, "rate": 10_000.0, "grace": 30.0, "sample_every": 5.0, "cost": 300_000}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=None, help="write window (10)")
    parser.add_argument("--rate", type=float, default=None, help="cycles/s, all nodes (10000)")
    parser.add_argument("--grace", type=float, default=None, help="tombstone_grace, s (30)")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--interval", type=float, default=0.2, help="gossip interval")
    parser.add_argument("--sample-every", type=float, default=None, help="seconds (5)")
    parser.add_argument(
        "--cost-tombstones", type=int, default=None, help="cycles of the cost process (300000)"
    )
    parser.add_argument("--quick", action="store_true", help="5 s at 500/s, grace 1 s")
    parser.add_argument("--profile-node", type=int, default=None)
    parser.add_argument("--profile-seconds", type=float, default=20.0)
    parser.add_argument("--out", default=DEFAULT_OUT, help="the JSON result ('': none)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seed", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--lifetime", type=float, default=3600.0, help=argparse.SUPPRESS)
    parser.add_argument("--cost-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cost_child is not None:
        return cost_main(args.cost_child)
    preset = QUICK if args.quick else FULL
    for name in ("minutes", "rate", "grace", "sample_every"):
        if getattr(args, name) is None:
            setattr(args, name, preset[name])
    if args.cost_tombstones is None:
        args.cost_tombstones = preset["cost"]
    if args.child is not None:
        return child_main(args.child, args.seed, args.grace, args.interval, args.lifetime)
    if args.nodes < 2 or args.minutes <= 0 or args.rate <= 0 or args.grace <= 0:
        parser.error("need --nodes >= 2 and --minutes, --rate, --grace > 0")
    if args.sample_every <= 0 or args.interval <= 0 or args.cost_tombstones < 1000:
        parser.error("need --sample-every, --interval > 0 and --cost-tombstones >= 1000")
    if args.profile_node is not None and not 0 <= args.profile_node < args.nodes:
        parser.error("--profile-node must name a node (0 .. nodes-1)")
    return run_and_emit("churn", run, args, render)


if __name__ == "__main__":
    sys.exit(main())
