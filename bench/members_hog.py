"""No false dead verdicts under CPU starvation: N nodes in one process, CPU hogs beside it.

The issue's target: "a 50-node cluster in one process, with a CPU hog busy on
both cores, runs 5 minutes with zero members declared dead."

* ``--nodes`` fastgossip nodes in one asyncio event loop (one OS process) on
  127.0.0.1; node 0 is the seed of all the others; ``--interval`` (0.2 s)
  between gossip rounds, every other setting the default.
* Once every node lists every other node ``alive`` (within ``--join-timeout``),
  ``--hogs`` CPU hog processes are started (each spins a busy loop: one per core
  by default) and the cluster runs for ``--seconds``. A hog stops by itself
  when its parent goes away or after the run's length plus a margin, so not
  even a SIGKILL of this script leaves one spinning.
* Every member event of every node is recorded. A ``dead`` or ``suspect``
  verdict also records, at the moment it is made, the observer's detector
  state: the last arrival gaps of the member's heartbeats, their mean and
  deviation, the silence, the observer's stall total ("local health") and the
  event loop's lag in the seconds before.
* Beside it: the event loop's lag (a timer every ``--lag-every`` s, 50 ms, and
  how late it fires), each node's largest phi as ``members()`` shows it
  (sampled every ``--sample-every`` s, 1 s; what each sampling pass cost the
  loop is reported: a pass that a process stall interrupts shows that stall
  as silence until the nodes' next rounds count it), gossip rounds done per
  node against ``window / interval``, each node's stall total (the time its
  own rounds ran late, by more than half an interval, which the detector does
  not count as silence), the process's and the hogs' CPU, and wall times.
  Verdict counts come from the events (every one); phi between samples is not
  seen.

The same is run first without a hog for ``--baseline-seconds`` (30 s; 0 skips
it) for comparison. Results go to ``--out`` (JSON) and a short table is printed.

    python bench/members_hog.py [--nodes 50] [--seconds 300] [--hogs 2]
                                [--baseline-seconds 30] [--interval 0.2]
                                [--out bench/results/members_hog.json] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

if __package__ in (None, ""):  # run as a script: bench/ is importable from the repo root
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._meta import ROOT, run_and_emit  # noqa: E402
from bench.idle import stop_all  # noqa: E402 (SIGTERM, then SIGKILL after STOP_GRACE)
from fastgossip import GossipNode, NodeConfig  # noqa: E402
from fastgossip.membership import MemberEvent  # noqa: E402

DEFAULT_OUT = os.path.join(ROOT, "bench", "results", "members_hog.json")

JOIN_TIMEOUT = 120.0  # every node lists every other node alive
SHUTDOWN_TIMEOUT = 30.0  # all nodes shut down
HOG_MARGIN = 120.0  # a hog stops by itself this long after the run should have ended
LAG_WINDOW = 5.0  # seconds of loop lag reported before a verdict
MAX_DETAILS = 200  # verdict details kept per kind (all are counted)
MAX_EVENTS = 5000  # run-phase events kept in the JSON (all are counted)

# A busy loop that checks every ~20 ms whether its parent is gone or its time is up.
HOG_CODE = """
import os, sys, time
parent, end = os.getppid(), time.monotonic() + float(sys.argv[1])
while True:
    for _ in range(500_000):
        pass
    if os.getppid() != parent or time.monotonic() > end:
        break
"""


# -- hogs ----------------------------------------------------------------------
def start_hogs(count: int, lifetime: float) -> List[subprocess.Popen]:
    """``count`` busy-loop processes, each alive at most ``lifetime`` seconds."""
    procs: List[subprocess.Popen] = []
    try:
        for _ in range(count):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", HOG_CODE, str(lifetime)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                )
            )
    except BaseException:
        stop_all(procs)
        raise
    return procs


def proc_cpu_s(pid: int) -> Optional[float]:
    """utime + stime of a process (children not included), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- figures -------------------------------------------------------------------
def quantile(values: Sequence[float], q: float) -> Optional[float]:
    """The ``q`` quantile (nearest rank) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _r(x: Optional[float], digits: int = 3) -> Optional[float]:
    return None if x is None else round(x, digits)


class LagMonitor:
    """A timer every ``every`` seconds on the loop; how late each one fires."""

    def __init__(self, loop: asyncio.AbstractEventLoop, every: float) -> None:
        self.loop = loop
        self.every = every
        self.samples: List[Tuple[float, float]] = []  # (loop time when due, lateness)
        self._handle: Optional[asyncio.TimerHandle] = None
        self._due = 0.0

    def start(self) -> None:
        self._due = self.loop.time() + self.every
        self._handle = self.loop.call_at(self._due, self._fire)

    def _fire(self) -> None:
        now = self.loop.time()
        self.samples.append((self._due, now - self._due))
        self._due = now + self.every
        self._handle = self.loop.call_at(self._due, self._fire)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def recent(self, at: float, window: float) -> Dict[str, Any]:
        """Lag over the ``window`` seconds (loop time) before ``at``."""
        lags = [lag for due, lag in self.samples if at - window <= due <= at]
        return {
            "window_s": window,
            "samples": len(lags),
            "max_ms": _r(max(lags) * 1000, 1) if lags else None,
            "sum_ms": _r(sum(lags) * 1000, 1),
        }

    def summary(self, since: float) -> Dict[str, Any]:
        lags = [lag for due, lag in self.samples if due >= since]
        out: Dict[str, Any] = {"every_ms": self.every * 1000, "samples": len(lags)}
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)):
            v = quantile(lags, q)
            out[f"{name}_ms"] = _r(None if v is None else v * 1000, 1)
        out["max_ms"] = _r(max(lags) * 1000, 1) if lags else None
        out["over_100ms"] = sum(1 for v in lags if v > 0.1)
        out["over_250ms"] = sum(1 for v in lags if v > 0.25)
        out["over_500ms"] = sum(1 for v in lags if v > 0.5)
        return out


def _diagnosis(node: GossipNode, member_id: str, now: float) -> Dict[str, Any]:
    """The observer's detector state for ``member_id`` now (private fields,
    read defensively: a diagnosis, not an API)."""
    out: Dict[str, Any] = {}
    try:
        ms: Any = node._core.membership
        m = ms.members.get(member_id)
        out["observer_stall_s"] = _r(ms._stall)
        out["heartbeat_period_s"] = _r(ms.heartbeat_period())  # the observer's own
        if m is None:
            return out
        out["member_period_s"] = _r(getattr(m, "period", None))  # what its record states
        out["since_heard_s"] = _r(now - m.heard)
        out["stall_since_heard_s"] = _r(ms._stall - m.stall_at_heard)
        out["silence_s"] = _r(ms._silence(m, now))
        det = m.detector
        if det is not None:
            mean, std = det.mean_std()
            out["mean_gap_s"] = _r(mean)
            out["std_gap_s"] = _r(std)
            out["window"] = len(det.intervals)
            out["last_gaps_s"] = [round(g, 3) for g in list(det.intervals)[-16:]]
            out["max_gap_in_window_s"] = _r(max(det.intervals))
            out["suspect_after_s"] = _r(det.silence_for(ms._z_suspect))
            out["dead_after_s"] = _r(det.silence_for(ms._z_dead))
    except Exception as exc:  # internals moved: say so, do not fail the run
        out["error"] = repr(exc)
    return out


# -- one run -------------------------------------------------------------------
async def _wait_all_alive(nodes: List[GossipNode], timeout: float) -> float:
    ids = {n.node_id for n in nodes}
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:  # bounded by timeout
        missing = 0
        for n in nodes:
            alive = {m.node_id for m in n.members() if m.status == "alive"}
            missing += len(ids - alive)
        if missing == 0:
            return loop.time() - started
        if loop.time() - started > timeout:
            raise RuntimeError(
                f"cluster not formed after {timeout:.0f} s: {missing} (observer, member) "
                "pairs not alive"
            )
        await asyncio.sleep(0.25)


async def _shutdown_all(nodes: List[GossipNode]) -> None:
    if not nodes:
        return
    try:
        await asyncio.wait_for(
            asyncio.gather(*(n.shutdown() for n in nodes), return_exceptions=True),
            SHUTDOWN_TIMEOUT,
        )
    except asyncio.TimeoutError:
        sys.stderr.write(f"members_hog: nodes not shut down within {SHUTDOWN_TIMEOUT:.0f} s\n")


async def _run(
    nodes_n: int,
    seconds: float,
    hogs_n: int,
    interval: float,
    lag_every: float,
    sample_every: float,
    join_timeout: float,
    implementation: Optional[str],
    hogs: List[subprocess.Popen],
) -> Dict[str, Any]:
    loop = asyncio.get_running_loop()
    wall0 = time.monotonic()
    lag = LagMonitor(loop, lag_every)
    nodes: List[GossipNode] = []
    events: List[Dict[str, Any]] = []
    phase = {"name": "join"}
    counts: Dict[str, Dict[str, int]] = {}
    details: Dict[str, List[Dict[str, Any]]] = {"dead": [], "suspect": []}
    t0 = time.time()

    def recorder(node: GossipNode) -> Any:
        def on_event(ev: MemberEvent) -> None:
            kind = ev.kind
            by_kind = counts.setdefault(phase["name"], {})
            by_kind[kind] = by_kind.get(kind, 0) + 1
            row: Dict[str, Any] = {
                "t": round(ev.at - t0, 3),
                "phase": phase["name"],
                "observer": node.node_id,
                "kind": kind,
                "member": ev.member.node_id,
                "phi": ev.member.phi,
            }
            events.append(row)
            if kind in details and phase["name"] == "run" and len(details[kind]) < MAX_DETAILS:
                d = dict(row)
                d["detector"] = _diagnosis(node, ev.member.node_id, ev.at)
                d["loop_lag_before"] = lag.recent(loop.time(), LAG_WINDOW)
                details[kind].append(d)

        return on_event

    result: Dict[str, Any] = {"nodes": nodes_n, "seconds": seconds, "hogs": hogs_n}
    try:
        lag.start()
        kw: Dict[str, Any] = {"gossip_interval": interval, "implementation": implementation}
        first = await GossipNode.start(NodeConfig("n0", bind=("127.0.0.1", 0), **kw))
        nodes.append(first)
        first.subscribe_members(recorder(first))
        for i in range(1, nodes_n):
            cfg = NodeConfig(f"n{i}", bind=("127.0.0.1", 0), seeds=[first.addr], **kw)
            node = await GossipNode.start(cfg)
            nodes.append(node)
            node.subscribe_members(recorder(node))
        result["implementation"] = first.implementation
        result["join_s"] = _r(await _wait_all_alive(nodes, join_timeout), 2)

        if hogs_n:
            hogs.extend(start_hogs(hogs_n, seconds + HOG_MARGIN))
            result["hog_pids"] = [p.pid for p in hogs]
        phase["name"] = "run"
        run_t = loop.time()
        rounds0 = [n.stats.rounds for n in nodes]
        cpu0 = os.times()
        hog_cpu0 = [proc_cpu_s(p.pid) for p in hogs]
        max_phi = [0.0] * nodes_n
        pair_max: Dict[Tuple[str, str], float] = {}
        phi_samples: List[float] = []
        not_alive_samples = 0
        pass_s: List[float] = []  # what each sampling pass cost the loop
        sampled = 0
        end = run_t + seconds
        while True:  # bounded by --seconds
            left = end - loop.time()
            if left <= 0:
                break
            await asyncio.sleep(min(sample_every, left))
            sampled += 1
            pass_t = time.perf_counter()
            for i, n in enumerate(nodes):
                for m in n.members():
                    if m.node_id == n.node_id:
                        continue
                    phi_samples.append(m.phi)
                    if m.phi > max_phi[i]:
                        max_phi[i] = m.phi
                    key = (n.node_id, m.node_id)
                    if m.phi > pair_max.get(key, 0.0):
                        pair_max[key] = m.phi
                    if m.status != "alive":
                        not_alive_samples += 1
            pass_s.append(time.perf_counter() - pass_t)
            dead_hogs = [p.pid for p in hogs if p.poll() is not None]
            if dead_hogs:
                raise RuntimeError(f"hog processes {dead_hogs} exited during the run")
        window = loop.time() - run_t
        cpu1 = os.times()
        rounds = [n.stats.rounds - r0 for n, r0 in zip(nodes, rounds0)]
        hog_cpu1 = [proc_cpu_s(p.pid) for p in hogs]
        phase["name"] = "end"

        run_counts = counts.get("run", {})
        expected = window / interval
        ratios = [r / expected for r in rounds]
        worst = sorted(pair_max.items(), key=lambda kv: -kv[1])[:5]
        stalls = []
        for n in nodes:
            try:
                stalls.append(float(n._core.membership._stall))  # type: ignore[union-attr]
            except AttributeError:
                pass
        cpu_s = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
        hog_cpu = [
            None if a is None or b is None else round(b - a, 2) for a, b in zip(hog_cpu0, hog_cpu1)
        ]
        result.update(
            {
                "window_s": _r(window, 2),
                "dead_verdicts": run_counts.get("dead", 0),
                "suspect_verdicts": run_counts.get("suspect", 0),
                "alive_again": run_counts.get("alive", 0),
                "events_by_kind": {k: dict(sorted(v.items())) for k, v in counts.items()},
                "members_dead": sorted({d["member"] for d in details["dead"]}),
                "observers_with_dead": sorted({d["observer"] for d in details["dead"]}),
                "loop_lag": lag.summary(run_t),
                "phi": {
                    "samples": len(phi_samples),
                    "sample_every_s": sample_every,
                    "sample_passes": sampled,
                    "max": _r(max(max_phi) if max_phi else 0.0),
                    "p99": _r(quantile(phi_samples, 0.99)),
                    "p999": _r(quantile(phi_samples, 0.999)),
                    "node_max_median": _r(statistics.median(max_phi) if max_phi else 0.0),
                    "per_node_max": {n.node_id: _r(v) for n, v in zip(nodes, max_phi)},
                    "worst_pairs": [
                        {"observer": o, "member": m, "phi": _r(v)} for (o, m), v in worst
                    ],
                    "sampled_not_alive": not_alive_samples,
                    "pass_ms_mean": _r(1000 * statistics.mean(pass_s), 2) if pass_s else None,
                    "pass_ms_max": _r(1000 * max(pass_s), 2) if pass_s else None,
                },
                "rounds": {
                    "expected_per_node": _r(expected, 1),
                    "min": min(rounds),
                    "median": statistics.median(rounds),
                    "max": max(rounds),
                    "ratio_min": _r(min(ratios)),
                    "ratio_median": _r(statistics.median(ratios)),
                },
                "stall_s": {
                    "what": "each node's own late rounds, discounted from silence",
                    "min": _r(min(stalls)) if stalls else None,
                    "max": _r(max(stalls)) if stalls else None,
                },
                "cpu": {
                    "process_cpu_s": round(cpu_s, 2),
                    "process_core_share": round(cpu_s / window, 3) if window else None,
                    "hog_cpu_s": hog_cpu,
                },
                "dead": details["dead"],
                "suspects": details["suspect"],
                "events": [e for e in events if e["phase"] == "run"][:MAX_EVENTS],
            }
        )
        return result
    finally:
        lag.stop()
        stop_all(hogs)
        await _shutdown_all(nodes)
        result["wall_s"] = round(time.monotonic() - wall0, 2)


def run_once(
    nodes: int,
    seconds: float,
    hogs: int,
    interval: float = 0.2,
    lag_every: float = 0.05,
    sample_every: float = 1.0,
    join_timeout: float = JOIN_TIMEOUT,
    implementation: Optional[str] = None,
) -> Dict[str, Any]:
    """One cluster: form it, start ``hogs`` hogs, run ``seconds``, tear all down."""
    procs: List[subprocess.Popen] = []
    try:
        return asyncio.run(
            _run(
                nodes,
                seconds,
                hogs,
                interval,
                lag_every,
                sample_every,
                join_timeout,
                implementation,
                procs,
            )
        )
    finally:  # (also on Ctrl-C: asyncio.run cancels the run, then this runs)
        stop_all(procs)


# -- the whole benchmark ---------------------------------------------------------
def run(args: argparse.Namespace) -> Dict[str, Any]:
    from bench._meta import machine

    started = time.monotonic()
    result: Dict[str, Any] = {
        "benchmark": "members_hog",
        "machine": machine(),
        "settings": {
            "nodes": args.nodes,
            "seconds": args.seconds,
            "hogs": args.hogs,
            "baseline_seconds": args.baseline_seconds,
            "interval": args.interval,
            "lag_every_s": args.lag_every,
            "sample_every_s": args.sample_every,
            "implementation": args.implementation,
        },
        "runs": {},
    }
    common = {
        "interval": args.interval,
        "lag_every": args.lag_every,
        "sample_every": args.sample_every,
        "join_timeout": args.join_timeout,
        "implementation": args.implementation,
    }
    if args.baseline_seconds > 0:
        result["runs"]["baseline"] = run_once(args.nodes, args.baseline_seconds, 0, **common)
    result["runs"]["hog"] = run_once(args.nodes, args.seconds, args.hogs, **common)
    hog = result["runs"]["hog"]
    result["target"] = {
        "what": f"{args.nodes} nodes in one process, {args.hogs} CPU hogs, "
        f"{args.seconds:g} s: members declared dead",
        "target": 0,
        "measured": hog["dead_verdicts"],
        "pass": hog["dead_verdicts"] == 0,
    }
    result["wall_s"] = round(time.monotonic() - started, 2)
    return result


def render(result: Dict[str, Any]) -> str:
    s = result["settings"]
    mach = result["machine"]
    lines = [
        f"members under CPU starvation: {s['nodes']} nodes in one process, interval "
        f"{s['interval']} s; {mach['cores']} cores, load at start {mach['load_average_1_5_15']}",
        f"{'run':9} {'hogs':>4} {'secs':>6} {'dead':>5} {'susp':>5} {'lag p50':>8} "
        f"{'p99':>7} {'max ms':>8} {'phi max':>8} {'rounds':>7} {'cpu':>5} {'wall s':>7}",
    ]
    for name, r in result["runs"].items():
        lag, ph, rd = r["loop_lag"], r["phi"], r["rounds"]
        lines.append(
            f"{name:9} {r['hogs']:>4} {r['window_s']:>6.0f} {r['dead_verdicts']:>5} "
            f"{r['suspect_verdicts']:>5} {lag['p50_ms']:>8} {lag['p99_ms']:>7} "
            f"{lag['max_ms']:>8} {ph['max']:>8} {rd['ratio_median']:>7} "
            f"{r['cpu']['process_core_share']:>5} {r['wall_s']:>7}"
        )
    lines.append(
        "  (rounds: median rounds per node / (window / interval); cpu: the node "
        "process's CPU-seconds per second)"
    )
    for name, r in result["runs"].items():
        for d in r["dead"][:5]:
            det = d["detector"]
            lines.append(
                f"  {name}: t={d['t']} s {d['observer']} declared {d['member']} dead, phi "
                f"{d['phi']}, silence {det.get('silence_s')} s (mean gap "
                f"{det.get('mean_gap_s')}, std {det.get('std_gap_s')}, dead after "
                f"{det.get('dead_after_s')}), stall {det.get('stall_since_heard_s')} s, "
                f"loop lag max {d['loop_lag_before']['max_ms']} ms in the {LAG_WINDOW:g} s before"
            )
    t = result["target"]
    lines.append(
        f"target: {t['what']} = {t['target']}: {'pass' if t['pass'] else 'FAIL'} "
        f"(measured {t['measured']}); whole run {result['wall_s']} s"
    )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--hogs", type=int, default=2, help="busy-loop processes (one per core)")
    parser.add_argument(
        "--baseline-seconds", type=float, default=30.0, help="the run without hogs first (0: skip)"
    )
    parser.add_argument("--interval", type=float, default=0.2, help="gossip interval")
    parser.add_argument("--lag-every", type=float, default=0.05, help="loop lag timer period")
    parser.add_argument("--sample-every", type=float, default=1.0, help="members() sampling")
    parser.add_argument("--join-timeout", type=float, default=JOIN_TIMEOUT)
    parser.add_argument("--implementation", choices=["cython", "python"], default=None)
    parser.add_argument("--out", default=DEFAULT_OUT, help="the JSON result ('' : none)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if args.nodes < 2 or args.seconds <= 0 or args.hogs < 0 or args.baseline_seconds < 0:
        parser.error("need --nodes >= 2, --seconds > 0, --hogs >= 0, --baseline-seconds >= 0")
    if args.lag_every <= 0 or args.sample_every <= 0 or args.interval <= 0:
        parser.error("--lag-every, --sample-every and --interval must be > 0")
    # on a Ctrl-C, the hogs and nodes were stopped on the way out
    return run_and_emit("members_hog", run, args, render)


if __name__ == "__main__":
    sys.exit(main())
