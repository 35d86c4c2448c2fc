"""End-to-end benchmarks: real nodes gossiping over 127.0.0.1.

    python -m bench.e2e [--quick] [--impl cython|python|both] [--out bench/results/e2e.json]

Through the public node API (``GossipNode``, ``NodeConfig``, ``ClusterNetwork``,
``node.stats``, ``wait_converged``), on loopback only, each loop bounded in
count and in time, one progress line per step (on stderr):

1. **ingest** - a fresh peer catching up on K keys from one node: start A,
   write K keys, start B with a long gossip interval, ``B.add_peer(A.addr)``,
   ``B.gossip_round()``, time until ``B.state_len() == K``. Entries/s.
2. **convergence** - rounds and time for a fresh key to reach every node of a
   cluster (``wait_converged``), N = 10 and 100 in this process, and N = 1000
   spread over worker processes (``--worker``, each its own event loop and
   nodes, peers the full address list across processes). Bytes sent per node.
3. **traffic** - with no writes, bytes per node per round for tables of 100,
   10k and 100k keys; then bytes per delivered update while writing.
4. all of it for each implementation, so every figure has its ratio.

Writes JSON for ``python -m bench.report``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import queue
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from bench._meta import RESULTS, ROOT, format_targets, machine, write_json
from fastgossip.fanout import Fanout
from fastgossip.node import GossipNode, NodeConfig
from fastgossip.testing import ClusterNetwork

IMPLS = ("cython", "python")
LONG_INTERVAL = 3600.0  # "never" for a node whose rounds we drive by hand
_T0 = time.perf_counter()


def progress(text: str) -> None:
    print(f"[e2e {time.perf_counter() - _T0:6.1f}s] {text}", file=sys.stderr, flush=True)


def key_of(i: int) -> str:
    return f"key-{i:012d}"  # 16 bytes


def bound_rounds(n: int) -> int:
    """The convergence target: ceil(log2 N) + 3 rounds."""
    return math.ceil(math.log2(n)) + 3 if n > 1 else 1


def raise_fd_limit() -> int:
    """Lift the soft open-file limit to the hard one (every connection is a socket)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


@dataclass
class Plan:
    """What one run measures; ``quick()`` and ``full()`` are the two presets."""

    ingest_keys: int = 100_000
    ingest_repeats: int = 5
    sizes: Tuple[int, ...] = (10, 100)
    fanouts: Tuple[str, ...] = ("3", "sqrt")
    interval: float = 0.1
    trials: int = 3
    #: (N, processes, fanout, interval) of the runs spread over worker processes
    multi: Tuple[Tuple[int, int, str, float], ...] = (
        (1000, 8, "3", 1.0),
        (1000, 8, "3", 0.1),
    )
    multi_trials: int = 2
    traffic_nodes: int = 10
    traffic_keys: Tuple[int, ...] = (100, 10_000, 100_000)
    traffic_window_rounds: int = 20
    writes_per_round: int = 10
    write_rounds: int = 20
    timeout: float = 60.0
    notes: List[str] = field(default_factory=list)

    @classmethod
    def full(cls) -> Plan:
        return cls()

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            ingest_keys=20_000,
            ingest_repeats=1,
            sizes=(10, 50),
            fanouts=("3",),
            trials=1,
            multi=((100, 2, "3", 0.1),),
            multi_trials=1,
            traffic_keys=(100, 10_000),
            traffic_window_rounds=10,
            writes_per_round=5,
            write_rounds=5,
            timeout=20.0,
        )


def smoke_plan() -> Plan:
    """The smallest pieces, for ``bench/test_e2e_smoke.py`` (a few seconds)."""
    return Plan(
        ingest_keys=5_000,
        ingest_repeats=1,
        sizes=(10,),
        fanouts=("3",),
        trials=1,
        multi=(),
        traffic_keys=(100,),
        traffic_window_rounds=5,
        writes_per_round=3,
        write_rounds=2,
        timeout=10.0,
    )


# -- 1. ingest ---------------------------------------------------------------------------


async def measure_ingest(impl: str, keys: int, repeats: int, timeout: float) -> Dict[str, Any]:
    """A fresh peer receiving ``keys`` entries from one node in one exchange."""
    # Five fresh peers in a second ask for everything: more than the answer
    # budget for strangers allows (max_round_bytes per round), which is not
    # what this measures, so it is lifted here
    a = await GossipNode.start(
        NodeConfig.localhost(
            "ingest-a",
            implementation=impl,
            gossip_interval=LONG_INTERVAL,
            max_round_bytes=1 << 40,
        )
    )
    runs = []
    try:
        t_fill = time.perf_counter()
        for i in range(keys):
            a.set(key_of(i), i)
        progress(f"ingest {impl}: wrote {keys:,} keys on A in {time.perf_counter() - t_fill:.2f} s")
        for r in range(repeats):
            b = await GossipNode.start(
                NodeConfig.localhost(
                    f"ingest-b{r}", implementation=impl, gossip_interval=LONG_INTERVAL
                )
            )
            try:
                b.add_peer(a.addr)
                t0 = time.perf_counter()
                b.gossip_round()
                deadline = t0 + timeout
                while b.state_len() < keys and time.perf_counter() < deadline:
                    await asyncio.sleep(0)
                elapsed = time.perf_counter() - t0
                got = b.state_len()
                runs.append(
                    {
                        "seconds": elapsed,
                        "entries": got,
                        "complete": got == keys,
                        "entries_per_s": got / elapsed,
                        "bytes_received": b.stats.bytes_received,
                        "frames_received": b.stats.frames_received,
                    }
                )
                progress(
                    f"ingest {impl}: run {r + 1}/{repeats}: {got:,} entries in "
                    f"{elapsed * 1000:.1f} ms = {got / elapsed / 1e6:.2f} M entries/s "
                    f"({b.stats.bytes_received / max(got, 1):.1f} B/entry on the wire)"
                )
            finally:
                await b.shutdown()
    finally:
        await a.shutdown()
    done = [run for run in runs if run["complete"]]
    best = max(done, key=lambda run: run["entries_per_s"]) if done else None
    return {
        "implementation": impl,
        "keys": keys,
        "runs": runs,
        "complete": bool(done) and len(done) == len(runs),
        "entries_per_s": best["entries_per_s"] if best else None,
        "entries_per_s_median": statistics.median(r["entries_per_s"] for r in done)
        if done
        else None,
        "seconds": best["seconds"] if best else None,
        "wire_bytes_per_entry": best["bytes_received"] / keys if best else None,
    }


# -- 2. convergence, one process ------------------------------------------------------------


def _summarise_trials(trials: List[Dict[str, Any]], n: int) -> Dict[str, Any]:
    ok = [t for t in trials if t["converged"]]
    rounds = [t["rounds"] for t in ok]
    per_round = [t["time_ms"] / t["rounds"] for t in ok if t["rounds"]]
    return {
        "converged_all": len(ok) == len(trials) and bool(trials),
        "ms_per_round_median": statistics.median(per_round) if per_round else None,
        "rounds_median": statistics.median(rounds) if rounds else None,
        "rounds_max": max(rounds) if rounds else None,
        "time_ms_median": statistics.median(t["time_ms"] for t in ok) if ok else None,
        "bytes_per_node_median": statistics.median(t["bytes_per_node"] for t in ok) if ok else None,
        "bound": bound_rounds(n),
        "within_bound": (statistics.median(rounds) <= bound_rounds(n)) if rounds else False,
    }


async def measure_convergence(
    impl: str, n: int, fanout_text: str, interval: float, trials: int, timeout: float
) -> Dict[str, Any]:
    """Rounds and time for a fresh key to reach all ``n`` nodes of one process."""
    fanout = Fanout.parse(fanout_text)
    t_spawn = time.perf_counter()
    cluster = await ClusterNetwork.spawn(
        n, fanout=fanout, gossip_interval=interval, implementation=impl, prefix=f"n{n}"
    )
    spawn_s = time.perf_counter() - t_spawn
    label = f"convergence {impl} N={n} fanout={fanout}"
    results: List[Dict[str, Any]] = []
    try:
        # warm-up: one key everywhere, so that the first measured trial does not
        # also pay for opening the first connections
        cluster.set_on(0, "warm-up", 1)
        warm = await cluster.wait_converged("warm-up", 1, timeout)
        progress(
            f"{label}: spawned in {spawn_s:.1f} s, warm-up "
            f"{warm.rounds_to_converge} rounds / {warm.total_time_ms:.0f} ms"
        )
        for t in range(trials):
            writer = (t * 7919) % n
            key, value = f"fresh-{t}", 1000 + t
            sent0 = cluster.total_stats()["bytes_sent"]
            cluster.set_on(writer, key, value)
            stats = await cluster.wait_converged(key, value, timeout)
            sent = cluster.total_stats()["bytes_sent"] - sent0
            results.append(
                {
                    "converged": stats.converged,
                    "rounds": stats.rounds_to_converge,
                    "time_ms": stats.total_time_ms,
                    "bytes_per_node": sent / n,
                }
            )
            progress(
                f"{label}: trial {t + 1}/{trials}: "
                f"{'converged' if stats.converged else 'NOT converged'} in "
                f"{stats.rounds_to_converge} rounds, {stats.total_time_ms:.0f} ms, "
                f"{sent / n:,.0f} B sent per node (target <= {bound_rounds(n)} rounds)"
            )
        totals = cluster.total_stats()
    finally:
        await cluster.shutdown_all()
    return {
        "implementation": impl,
        "n": n,
        "fanout": str(fanout),
        "interval": interval,
        "processes": 1,
        "trials": results,
        "connections_opened": totals["connections_opened"],
        "connect_failures": totals["connect_failures"],
        **_summarise_trials(results, n),
    }


# -- 2b. convergence across processes ---------------------------------------------------------


class _Worker:
    """A worker subprocess, spoken to in JSON lines."""

    def __init__(self, args: List[str], env: Dict[str, str]) -> None:
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            cwd=ROOT,
            env=env,
            bufsize=1,
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def send(self, obj: Dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()

    def recv(self, timeout: float) -> Dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"worker silent for {timeout:.0f} s{self._tail()}") from None
        if line is None:
            raise RuntimeError(f"worker exited ({self.proc.poll()}){self._tail()}")
        return json.loads(line)

    def _tail(self) -> str:
        self.stderr.seek(0)
        tail = self.stderr.read().decode(errors="replace").strip().splitlines()[-5:]
        return (": " + " | ".join(tail)) if tail else ""

    def ask_exit(self) -> None:
        try:
            self.send({"cmd": "exit"})
        except (OSError, ValueError):
            pass

    def stop(self, timeout: float = 20.0) -> str:
        """Wait for the worker to exit (after ``ask_exit``), killing it after ``timeout``."""
        self.ask_exit()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        tail = self._tail()
        self.stderr.close()
        return tail


def _worker_env() -> Dict[str, str]:
    import fastgossip

    src = os.path.dirname(os.path.dirname(os.path.abspath(fastgossip.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, ROOT, env.get("PYTHONPATH", "")) if p)
    return env


def _fleet_trial(
    impl: str, n: int, procs: int, fanout_text: str, interval: float, timeout: float, trial: int
) -> Dict[str, Any]:
    """One fresh fleet of worker processes, one fresh key; the fleet is torn down after.

    A fresh fleet per trial because connections are persistent: with every node
    knowing all N-1 others, each round opens new ones, and a process may hold
    at most its open-file limit of sockets.
    """
    sizes = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
    env = _worker_env()
    workers = [
        _Worker(
            [
                sys.executable,
                "-m",
                "bench.e2e",
                "--worker",
                "--index",
                str(i),
                "--nodes",
                str(size),
                "--impl",
                impl,
                "--fanout",
                fanout_text,
                "--interval",
                str(interval),
            ],
            env,
        )
        for i, size in enumerate(sizes)
    ]
    errors = ""
    try:
        addrs: List[List[Any]] = []
        for wk in workers:
            addrs += wk.recv(120)["addrs"]
        for wk in workers:
            wk.send({"cmd": "peers", "peers": addrs})
        for wk in workers:
            wk.recv(120)
        key, value = f"fresh-{trial}", 1000 + trial
        for wk in workers:
            wk.send({"cmd": "watch", "key": key, "value": value, "timeout": timeout})
        for wk in workers:
            wk.recv(60)
        workers[0].send({"cmd": "write", "key": key, "value": value})
        t_write = workers[0].recv(60)["t_write"]
        reports = [wk.recv(timeout + 60) for wk in workers]
        converged = all(r["converged"] for r in reports)
        t_end = max(r["t"] for r in reports)
        for wk in workers:
            wk.send({"cmd": "at", "t": t_end})
        at = [wk.recv(60) for wk in workers]
        return {
            "converged": converged,
            "rounds": max(a["rounds"] for a in at),
            "time_ms": (t_end - t_write) * 1000.0,
            "bytes_per_node": sum(a["bytes_sent"] for a in at) / n,
            "connect_failures": sum(a["connect_failures"] for a in at),
            "connections_opened": sum(a["connections_opened"] for a in at),
            "max_open_fds": max(a["open_fds"] for a in at),
        }
    finally:
        for wk in workers:  # all at once: a worker left gossiping slows the others' exit
            wk.ask_exit()
        for wk in workers:
            tail = wk.stop()
            if tail and not errors:
                errors = tail
        if errors:
            progress(f"  worker stderr{errors}")


def measure_convergence_multiproc(
    impl: str,
    n: int,
    procs: int,
    fanout_text: str,
    interval: float,
    trials: int,
    timeout: float,
) -> Dict[str, Any]:
    label = f"convergence {impl} N={n} over {procs} processes fanout={fanout_text}"
    results = []
    for t in range(trials):
        t0 = time.perf_counter()
        try:
            trial = _fleet_trial(impl, n, procs, fanout_text, interval, timeout, t)
        except (TimeoutError, RuntimeError) as exc:
            progress(f"{label}: trial {t + 1}/{trials} failed: {exc}")
            results.append(
                {
                    "converged": False,
                    "rounds": 0,
                    "time_ms": 0.0,
                    "bytes_per_node": 0.0,
                    "error": str(exc),
                }
            )
            continue
        results.append(trial)
        progress(
            f"{label}: trial {t + 1}/{trials}: "
            f"{'converged' if trial['converged'] else 'NOT converged'} in {trial['rounds']} "
            f"rounds, {trial['time_ms']:.0f} ms, {trial['bytes_per_node']:,.0f} B sent per node, "
            f"{trial['connections_opened']:,} connections, {trial['connect_failures']} connect "
            f"failures, <= {trial['max_open_fds']:,} fds/process "
            f"(whole trial {time.perf_counter() - t0:.1f} s)"
        )
    return {
        "implementation": impl,
        "n": n,
        "fanout": fanout_text,
        "interval": interval,
        "processes": procs,
        "trials": results,
        "connections_opened": sum(r.get("connections_opened", 0) for r in results),
        "connect_failures": sum(r.get("connect_failures", 0) for r in results),
        **_summarise_trials(results, n),
    }


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


async def worker_main(index: int, count: int, impl: str, fanout_text: str, interval: float) -> None:
    """A worker process: ``count`` nodes on its own event loop, driven by stdin commands."""
    raise_fd_limit()
    loop = asyncio.get_running_loop()
    fanout = Fanout.parse(fanout_text)
    nodes = []
    for j in range(count):
        nodes.append(
            await GossipNode.start(
                NodeConfig(
                    f"p{index}-{j}",
                    bind=("127.0.0.1", 0),
                    fanout=fanout,
                    gossip_interval=interval,
                    implementation=impl,
                )
            )
        )
    cluster = ClusterNetwork(nodes)

    def emit(obj: Dict[str, Any]) -> None:
        print(json.dumps(obj), flush=True)

    emit({"addrs": [list(node.addr) for node in nodes]})
    history: List[Tuple[float, int, int]] = []  # (monotonic, max rounds, bytes sent)
    base_rounds: List[int] = []
    base_bytes = 0
    poller: Optional[asyncio.Task] = None

    async def watch(key: str, value: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        reported = False
        while True:
            now = time.monotonic()
            rounds = max(node.stats.rounds - r0 for node, r0 in zip(nodes, base_rounds))
            sent = sum(node.stats.bytes_sent for node in nodes) - base_bytes
            history.append((now, rounds, sent))
            if not reported:
                done = cluster.converged_count(key, value) == len(nodes)
                if done or now > deadline:
                    emit({"converged": done, "t": now})
                    reported = True
            await asyncio.sleep(0.005)

    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            cmd = json.loads(line)
            kind = cmd["cmd"]
            if kind == "peers":
                for node in nodes:
                    for host, port in cmd["peers"]:
                        node.add_peer((host, port))
                emit({"ok": True})
            elif kind == "watch":
                base_rounds = [node.stats.rounds for node in nodes]
                base_bytes = sum(node.stats.bytes_sent for node in nodes)
                history.clear()
                poller = loop.create_task(watch(cmd["key"], cmd["value"], cmd["timeout"]))
                emit({"ok": True})
            elif kind == "write":
                nodes[0].set(cmd["key"], cmd["value"])
                emit({"t_write": time.monotonic()})
            elif kind == "at":
                upto = [h for h in history if h[0] <= cmd["t"] + 0.002] or history[:1]
                last = upto[-1] if upto else (0.0, 0, 0)
                totals = cluster.total_stats()
                emit(
                    {
                        "rounds": last[1],
                        "bytes_sent": last[2],
                        "connect_failures": totals["connect_failures"],
                        "connections_opened": totals["connections_opened"],
                        "open_fds": _open_fds(),
                    }
                )
            elif kind == "exit":
                break
    finally:
        if poller is not None:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
        await cluster.shutdown_all()


# -- 3. traffic -------------------------------------------------------------------------------


def _sum_stat(cluster: ClusterNetwork, name: str) -> int:
    return sum(getattr(node.stats, name) for node in cluster.nodes)


async def _settle(
    cluster: ClusterNetwork, interval: float, timeout: float, window: int = 5
) -> bool:
    """Wait until the cluster is idle: two windows of ``window`` rounds in which
    every node kept pace with its interval and sent the same bytes per round.

    A cluster that just converged on many keys still drains answers to digests
    sent before it converged (a loaded twin for seconds); measuring then would
    count those, not the steady state.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    expected = window * len(cluster.nodes)
    previous: Optional[float] = None
    while loop.time() < deadline:
        b0, r0 = _sum_stat(cluster, "bytes_sent"), _sum_stat(cluster, "rounds")
        await asyncio.sleep(window * interval)
        db, dr = _sum_stat(cluster, "bytes_sent") - b0, _sum_stat(cluster, "rounds") - r0
        rate = db / dr if dr else float("inf")
        paced = dr >= 0.8 * expected
        if paced and previous is not None and abs(rate - previous) <= 0.2 * previous:
            return True
        previous = rate if paced else None
    return False


async def measure_traffic(
    impl: str,
    nodes: int,
    keys: int,
    interval: float,
    window_rounds: int,
    writes_per_round: int,
    write_rounds: int,
    timeout: float,
) -> Dict[str, Any]:
    """Idle bytes per node per round with ``keys`` keys; then bytes per delivered update."""
    cluster = await ClusterNetwork.spawn(
        nodes,
        fanout=Fanout.bounded(3),
        gossip_interval=interval,
        implementation=impl,
        prefix="traffic",  # one node-id length for every table size: digests carry them
    )
    label = f"traffic {impl} {keys:,} keys on {nodes} nodes"
    try:
        t0 = time.perf_counter()
        for i in range(keys):  # spread over every node: every node is an origin
            cluster.nodes[i % nodes].set(key_of(i), i)
        filled = await cluster.wait_until(
            lambda: all(node.state_len() == keys for node in cluster.nodes), timeout * 3
        )
        progress(
            f"{label}: loaded and converged in {time.perf_counter() - t0:.1f} s "
            f"({'ok' if filled.converged else 'NOT converged'})"
        )
        t_settle = time.perf_counter()
        settled = await _settle(cluster, interval, timeout)
        settle_s = time.perf_counter() - t_settle
        progress(f"{label}: {'idle' if settled else 'NOT idle'} after {settle_s:.1f} s")
        b0, r0 = _sum_stat(cluster, "bytes_sent"), _sum_stat(cluster, "rounds")
        await asyncio.sleep(window_rounds * interval)
        db, dr = _sum_stat(cluster, "bytes_sent") - b0, _sum_stat(cluster, "rounds") - r0
        idle = db / dr if dr else None
        progress(f"{label}: idle {idle or 0:,.0f} B per node per round ({dr} node-rounds)")
        result: Dict[str, Any] = {
            "implementation": impl,
            "keys": keys,
            "nodes": nodes,
            "loaded": filled.converged,
            "settled": settled,
            "settle_s": settle_s,
            "idle_bytes_per_node_round": idle,
            "idle_node_rounds": dr,
            "idle_expected_node_rounds": window_rounds * nodes,
        }
        if writes_per_round:
            b0, r0 = _sum_stat(cluster, "bytes_sent"), _sum_stat(cluster, "rounds")
            expected = {}
            u = 0
            for _ in range(write_rounds):
                for _ in range(writes_per_round):
                    k = f"update-{u:06d}"
                    cluster.nodes[u % nodes].set(k, u)
                    expected[k] = u
                    u += 1
                await asyncio.sleep(interval)
            done = await cluster.wait_until(
                lambda: all(
                    node.get(k) == v for node in cluster.nodes for k, v in expected.items()
                ),
                timeout,
            )
            db, dr = _sum_stat(cluster, "bytes_sent") - b0, _sum_stat(cluster, "rounds") - r0
            deliveries = len(expected) * (nodes - 1)
            net = db - (idle or 0) * dr
            result.update(
                updates=len(expected),
                deliveries=deliveries,
                writes_converged=done.converged,
                bytes_per_delivered_update=db / deliveries,
                bytes_per_delivered_update_net_of_idle=net / deliveries,
            )
            progress(
                f"{label}: writing {len(expected)} updates: {db / deliveries:,.1f} B per "
                f"delivered update ({net / deliveries:,.1f} B net of idle digests)"
            )
        return result
    finally:
        await cluster.shutdown_all()


# -- the run ------------------------------------------------------------------------------------


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if not a or not b else a / b


def evaluate_targets(result: Dict[str, Any]) -> List[Dict[str, Any]]:
    targets: List[Dict[str, Any]] = []

    def add(what: str, goal: str, measured: Optional[float], unit: str, ok: Optional[bool]) -> None:
        targets.append(
            {"what": what, "target": goal, "measured": measured, "unit": unit, "pass": ok}
        )

    ing = result.get("ingest", {})
    c, p = ing.get("cython", {}), ing.get("python", {})
    if c:
        rate = c.get("entries_per_s")
        m = None if rate is None else rate / 1e6
        add(
            f"ingest of {c['keys']:,} keys, compiled",
            "≥ 4 M entries/s",
            m,
            "M entries/s",
            None if m is None else m >= 4,
        )
    if c and p:
        r = _ratio(c.get("entries_per_s"), p.get("entries_per_s"))
        add("ingest, compiled over twin", "≥ 3x", r, "x", None if r is None else r >= 3)
    # convergence: per implementation and N, the worst median over fanouts and intervals
    worst: Dict[Tuple[str, int], Dict[str, Any]] = {}
    for row in result.get("convergence", []):
        key = (row["implementation"], row["n"])
        bad = not row["converged_all"] or row["rounds_median"] is None
        score = float("inf") if bad else row["rounds_median"]
        held = worst.get(key)
        if held is None or score > held["score"]:
            worst[key] = {"score": score, "row": row}
    for (impl, n), held in sorted(worst.items()):
        row = held["row"]
        add(
            f"convergence of a fresh key, {impl}, N={n} (median rounds; worst of fanouts "
            "and intervals)",
            f"≤ {row['bound']} rounds",
            row["rounds_median"],
            "rounds",
            row["within_bound"] if row["converged_all"] else False,
        )
    for impl, rows in result.get("traffic", {}).items():
        by_keys = {r["keys"]: r for r in rows}
        small, big = by_keys.get(100), by_keys.get(10_000)
        if small and big and small["idle_bytes_per_node_round"]:
            r = big["idle_bytes_per_node_round"] / small["idle_bytes_per_node_round"]
            add(f"idle traffic {impl}, 10k keys over 100 keys", "≤ 2x", r, "x", r <= 2)
    return targets


def validate(result: Dict[str, Any]) -> None:
    """Assert the JSON shape ``bench.report`` reads (the smoke test calls this)."""
    assert {"meta", "settings", "ingest", "convergence", "traffic", "targets"} <= set(result)
    for impl, row in result["ingest"].items():
        if impl == "ratio":
            continue
        assert impl in IMPLS and row["keys"] > 0 and isinstance(row["runs"], list)
        assert row["entries_per_s"] is None or row["entries_per_s"] > 0
    for row in result["convergence"]:
        for name in (
            "implementation",
            "n",
            "fanout",
            "interval",
            "processes",
            "trials",
            "rounds_median",
            "bound",
            "converged_all",
            "bytes_per_node_median",
        ):
            assert name in row, name
        assert row["bound"] == bound_rounds(row["n"])
    for impl, rows in result["traffic"].items():
        assert impl in IMPLS
        for row in rows:
            assert row["keys"] > 0 and "idle_bytes_per_node_round" in row
    for t in result["targets"]:
        assert {"what", "target", "measured", "unit", "pass"} <= set(t)
    json.dumps(result)  # serialisable


async def run(plan: Plan, impls: Sequence[str], mode: str) -> Dict[str, Any]:
    fd_limit = raise_fd_limit()
    progress(f"mode {mode}, implementations {', '.join(impls)}, open-file limit {fd_limit}")
    result: Dict[str, Any] = {
        "meta": machine(),
        "settings": {
            "mode": mode,
            "implementations": list(impls),
            "fd_limit": fd_limit,
            "plan": {k: v for k, v in vars(plan).items() if k != "notes"},
        },
        "ingest": {},
        "convergence": [],
        "traffic": {},
    }
    started = time.perf_counter()
    for impl in impls:
        result["ingest"][impl] = await measure_ingest(
            impl, plan.ingest_keys, plan.ingest_repeats, plan.timeout
        )
    if len(impls) == 2:
        result["ingest"]["ratio"] = _ratio(
            result["ingest"]["cython"]["entries_per_s"], result["ingest"]["python"]["entries_per_s"]
        )
    for impl in impls:
        for n in plan.sizes:
            for fanout in plan.fanouts:
                result["convergence"].append(
                    await measure_convergence(
                        impl, n, fanout, plan.interval, plan.trials, plan.timeout
                    )
                )
    for impl in impls:
        for n, procs, fanout, interval in plan.multi:
            result["convergence"].append(
                await asyncio.get_running_loop().run_in_executor(
                    None,
                    measure_convergence_multiproc,
                    impl,
                    n,
                    procs,
                    fanout,
                    interval,
                    plan.multi_trials,
                    plan.timeout,
                )
            )
    for impl in impls:
        rows = []
        for j, keys in enumerate(plan.traffic_keys):
            rows.append(
                await measure_traffic(
                    impl,
                    plan.traffic_nodes,
                    keys,
                    plan.interval,
                    plan.traffic_window_rounds,
                    plan.writes_per_round if j == 0 else 0,
                    plan.write_rounds,
                    plan.timeout,
                )
            )
        result["traffic"][impl] = rows
    result["settings"]["elapsed_s"] = time.perf_counter() - started
    result["settings"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    result["targets"] = evaluate_targets(result)
    result["notes"] = plan.notes
    return result


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, about a minute")
    parser.add_argument("--impl", choices=["cython", "python", "both"], default="both")
    parser.add_argument(
        "--out",
        default=None,
        help="JSON file (default bench/results/e2e.json; e2e-quick.json in quick)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--nodes", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--fanout", default="3", help=argparse.SUPPRESS)
    parser.add_argument("--interval", type=float, default=0.1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        asyncio.run(worker_main(args.index, args.nodes, args.impl, args.fanout, args.interval))
        return 0
    impls = IMPLS if args.impl == "both" else (args.impl,)
    plan = Plan.quick() if args.quick else Plan.full()
    mode = "quick" if args.quick else "full"
    out = args.out or os.path.join(RESULTS, "e2e-quick.json" if args.quick else "e2e.json")
    result = asyncio.run(run(plan, impls, mode))
    print(format_targets(result["targets"]))
    write_json(out, result)
    progress(f"wrote {os.path.relpath(out)} ({result['settings']['elapsed_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
