"""Idle CPU per node, fastgossip against serf, one OS process per node.

Part 3 of the architecture issue: at 100 nodes, fanout 3, a gossip interval of
0.2 s and no writes, fastgossip's idle CPU should be at most 1.5x serf's
measured in the same run (moonshot: below it).

* fastgossip: ``--nodes`` processes (``python -m bench.idle --child``), one node
  each on 127.0.0.1, on ports picked up front. fastgossip has no membership
  yet, so every node is given every other node as a peer (serf agents are
  given one seed and learn the rest). Each writes one key; once every node
  holds all N keys, has links open to ``--warm-links`` (0.98) of its peers on
  average (links open as rounds first pick a peer, and dialling is not idle
  cost) and ``--settle`` more seconds have passed, the CPU of all the node
  processes is read over ``--seconds`` of idle time.
* serf (when ``serf`` is on PATH and ``--skip-serf`` is not given): as many
  ``serf agent`` processes on loopback (LAN profile: gossip to 3 nodes every
  200 ms, probe every 1 s), each joining the first; once ``serf members`` on
  the first agent lists N alive and ``--settle`` seconds have passed, the same
  measurement.

CPU is utime + stime from /proc/<pid>/stat (10 ms ticks), summed over the node
processes; the on-CPU nanoseconds of /proc/<pid>/task/*/schedstat are reported
beside it. CPU-seconds, not wall time, is the figure: the machine may be shared.
Each run measures fastgossip, then serf; the ratio is taken within a run.

    python -m bench.idle [--nodes 100] [--seconds 30] [--runs 1] [--fanout 3]
                         [--interval 0.2] [--skip-serf] [--json] [--out PATH]
                         [--profile-node K [--profile-out PATH]]

``--profile-node K`` runs node K under cProfile (CPU-time clock) through the
measurement window of the first run and prints its top functions by own time;
that node's CPU then includes the profiler's overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from bench._procs import ChildPipes, child_env, profile_off, profile_on, say, show_tail

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGET_RATIO = 1.5

START_TIMEOUT = 60.0  # all processes listening
WARM_TIMEOUT = 120.0  # every node holds every key / serf lists N alive
STOP_GRACE = 5.0  # SIGTERM, then SIGKILL


# -- /proc -------------------------------------------------------------------
def cpu_ticks(pid: int) -> Tuple[int, int]:
    """(utime, stime) of a process, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5)


def cpu_ns(pid: int) -> Optional[int]:
    """Nanoseconds on CPU of the process's live threads (schedstat is per
    thread; a thread that exited is not counted), or None where the kernel
    does not say."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_snapshot(pids: Sequence[int]) -> Dict[str, Any]:
    ns = [cpu_ns(p) for p in pids]
    ticks = [cpu_ticks(p) for p in pids]
    return {
        "ticks": sum(u + s for u, s in ticks),
        "sys_ticks": sum(s for _, s in ticks),
        "ns": None if any(v is None for v in ns) else sum(v for v in ns if v is not None),
        "at": time.monotonic(),
    }


def free_ports(count: int) -> List[int]:
    """``count`` distinct loopback TCP ports the OS had free (bound, recorded, closed)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# -- processes ---------------------------------------------------------------
def stop_all(procs: Sequence[subprocess.Popen], grace: float = STOP_GRACE) -> None:
    """SIGTERM every process, SIGKILL those still alive after ``grace`` s, reap all."""
    for p in procs:
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in procs:
        if p.poll() is None:
            try:
                p.kill()
            except ProcessLookupError:
                pass
            try:
                p.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:  # pragma: no cover - unkillable
                pass
    for p in procs:
        for stream in (p.stdin, p.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


def _dead(procs: Sequence[subprocess.Popen]) -> List[int]:
    return [i for i, p in enumerate(procs) if p.poll() is not None]


class _Children(ChildPipes):
    """Line-oriented request/answer with the fastgossip child processes."""

    def __init__(self, procs: List[subprocess.Popen]) -> None:
        super().__init__()
        for p in procs:
            self.add(p)

    def collect(self, which: Sequence[int], timeout: float) -> Dict[int, Any]:
        """One JSON line from each of ``which``, within ``timeout`` seconds."""
        want = set(which)
        got: Dict[int, Any] = {}
        deadline = time.monotonic() + timeout
        while want - set(got):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for i, line in self.read(min(left, 1.0)):
                if i in want and i not in got:
                    got[i] = json.loads(line)
            dead = [i for i in _dead(self.procs) if i in want and i not in got]
            if dead:
                raise RuntimeError(f"node processes {dead[:10]} exited")
        missing = sorted(want - set(got))
        if missing:
            raise RuntimeError(f"no answer within {timeout:.0f} s from nodes {missing[:10]}")
        return got

    def ask(self, which: Sequence[int], line: str, timeout: float = 10.0) -> Dict[int, Any]:
        self.send(which, line)
        return self.collect(which, timeout)


def _window(pids: List[int], seconds: float, procs: Sequence[subprocess.Popen]) -> Dict[str, Any]:
    before = cpu_snapshot(pids)
    end = before["at"] + seconds
    while True:  # sleeps of at most 1 s: a dead process is noticed
        left = end - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(left, 1.0))
        dead = _dead(procs)
        if dead:
            raise RuntimeError(f"processes {dead[:10]} exited during the measurement")
    after = cpu_snapshot(pids)
    elapsed = after["at"] - before["at"]
    cpu_s = (after["ticks"] - before["ticks"]) / CLK_TCK
    out = {
        "window_s": round(elapsed, 3),
        "cpu_s": round(cpu_s, 2),
        "cpu_s_schedstat": None,
        "sys_share": round((after["sys_ticks"] - before["sys_ticks"]) / CLK_TCK / cpu_s, 2)
        if cpu_s
        else None,
        "cpu_ms_per_node_s": round(1000 * cpu_s / len(pids) / elapsed, 3),
    }
    if before["ns"] is not None and after["ns"] is not None:
        out["cpu_s_schedstat"] = round((after["ns"] - before["ns"]) / 1e9, 2)
    rss = [rss_bytes(p) for p in pids]
    out["rss_mb_mean"] = round(sum(rss) / len(rss) / 1e6, 1)
    out["rss_mb_max"] = round(max(rss) / 1e6, 1)
    return out


# -- fastgossip ----------------------------------------------------------------
def run_fastgossip(
    nodes: int,
    seconds: float,
    fanout: str = "3",
    interval: float = 0.2,
    settle: float = 5.0,
    warm_links: float = 0.98,
    profile_node: Optional[int] = None,
    profile_out: Optional[str] = None,
) -> Dict[str, Any]:
    """N node processes in a full mesh, idle; their CPU over ``seconds``, from
    ``settle`` seconds after every node holds every key and has links open to
    ``warm_links`` of its peers on average."""
    ports = free_ports(nodes)
    env = child_env()
    procs: List[subprocess.Popen] = []
    children: Optional[_Children] = None
    tmp = tempfile.mkdtemp(prefix="fastgossip-idle-")
    errlog = os.path.join(tmp, "stderr.log")
    result: Dict[str, Any] = {"system": "fastgossip", "nodes": nodes, "fanout": fanout}
    result["peers"] = "full list: every node add_peer()s the other N-1 (and runs membership)"
    try:
        with open(os.path.join(tmp, "ports"), "w") as f:
            f.write(",".join(map(str, ports)))
        with open(errlog, "ab") as err:
            for i in range(nodes):
                cmd = [sys.executable, "-m", "bench.idle", "--child", str(i)]
                cmd += ["--ports-file", os.path.join(tmp, "ports")]
                cmd += ["--fanout", fanout, "--interval", str(interval)]
                procs.append(
                    subprocess.Popen(
                        cmd, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                        stderr=err,
                    )
                )  # fmt: skip
        result["pids"] = [p.pid for p in procs]
        children = _Children(procs)
        everyone = list(range(nodes))
        ready = children.collect(everyone, START_TIMEOUT)
        result["implementation"] = sorted({r["implementation"] for r in ready.values()})
        started = time.monotonic()
        while True:  # bounded by WARM_TIMEOUT
            held = children.ask(everyone, "stats")
            if all(s["state_len"] >= nodes for s in held.values()):
                break
            if time.monotonic() - started > WARM_TIMEOUT:
                short = sum(s["state_len"] < nodes for s in held.values())
                raise RuntimeError(f"{short} nodes still lack keys after {WARM_TIMEOUT:.0f} s")
            time.sleep(0.5)
        result["converged_s"] = round(time.monotonic() - started, 2)
        # Links open as rounds first pick each peer (fanout k of N-1 a round):
        # wait until nearly all are open, or dialling inflates the figure.
        want = warm_links * (nodes - 1)
        while True:  # bounded by WARM_TIMEOUT
            links = sum(s["links"] for s in held.values()) / nodes
            if links >= want or time.monotonic() - started > WARM_TIMEOUT:
                break
            time.sleep(1.0)
            held = children.ask(everyone, "stats")
        result["linked_s"] = round(time.monotonic() - started, 2)
        result["links_at_start_mean"] = round(links, 1)
        time.sleep(settle)
        stats0 = children.ask(everyone, "stats")
        if profile_node is not None:
            children.ask([profile_node], "prof-on")
        pids = [p.pid for p in procs]
        result.update(_window(pids, seconds, procs))
        if profile_node is not None:
            out = profile_out or os.path.join(tmp, f"node{profile_node}.prof")
            children.ask([profile_node], f"prof-off {out}", timeout=30.0)
            result["profile"] = {
                "node": profile_node,
                "path": profile_out,
                "top": top_functions(out),
            }
        stats1 = children.ask(everyone, "stats")
        result.update(_traffic(stats0, stats1, result["window_s"], nodes))
        return result
    except Exception:
        show_tail(errlog, "fastgossip node stderr")
        raise
    finally:
        if children is not None:
            children.close()
        stop_all(procs)
        shutil.rmtree(tmp, ignore_errors=True)


def _traffic(s0: Dict[int, Any], s1: Dict[int, Any], window: float, nodes: int) -> Dict[str, Any]:
    def delta(name: str) -> int:
        return sum(s1[i][name] - s0[i][name] for i in s0)

    rounds = max(1, delta("rounds"))
    return {
        "rounds_per_node_s": round(rounds / nodes / window, 2),
        "frames_received_per_round": round(delta("frames_received") / rounds, 2),
        "bytes_sent_per_round": round(delta("bytes_sent") / rounds),
        "connections_opened_in_window": delta("connections_opened"),
        "links_at_end_mean": round(sum(s["links"] for s in s1.values()) / nodes, 1),
    }


def top_functions(path: str, limit: int = 25) -> List[Dict[str, Any]]:
    import pstats

    st = pstats.Stats(path)
    total = st.total_tt or 1e-12  # type: ignore[attr-defined]
    rows = []
    for (file, line, name), (_cc, ncalls, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        where = f"{os.path.basename(file)}:{line}({name})" if file != "~" else name
        rows.append(
            {
                "function": where,
                "calls": ncalls,
                "tottime_s": round(tt, 4),
                "cumtime_s": round(ct, 4),
                "share": round(tt / total, 3),
            }
        )
    rows.sort(key=lambda r: -r["tottime_s"])
    return rows[:limit]


# -- the child: one fastgossip node -----------------------------------------
def child_main(index: int, ports_file: str, fanout: str, interval: float) -> int:
    import asyncio

    from fastgossip import Fanout, GossipNode, NodeConfig

    with open(ports_file) as f:
        ports = [int(p) for p in f.read().split(",")]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        config = NodeConfig.localhost(
            f"n{index}",
            port=ports[index],
            fanout=None if fanout == "default" else Fanout.parse(fanout),
            gossip_interval=interval,
        )
        node = await GossipNode.start(config)
        for j, port in enumerate(ports):
            if j != index:
                node.add_peer(("127.0.0.1", port))
        node.set(f"key-{index}", b"v")
        say({"ready": index, "implementation": node.implementation})
        done = loop.create_future()
        prof: Any = None
        pending = b""

        def on_stdin() -> None:
            nonlocal pending, prof
            data = os.read(0, 4096)
            if not data:  # the parent went away
                if not done.done():
                    done.set_result(None)
                return
            pending += data
            while b"\n" in pending:
                raw, _, pending = pending.partition(b"\n")
                cmd, _, arg = raw.decode().partition(" ")
                if cmd == "stats":
                    s = node.stats
                    links = node._transport.links.values()
                    say(
                        {
                            "state_len": node.state_len(),
                            "rounds": s.rounds,
                            "bytes_sent": s.bytes_sent,
                            "frames_received": s.frames_received,
                            "connections_opened": s.connections_opened,
                            "links": sum(1 for lk in links if lk.connected),
                        }
                    )
                elif cmd == "prof-on":
                    prof = profile_on()
                    say({"ok": True})
                elif cmd == "prof-off":
                    say({"ok": profile_off(prof, arg)})

        loop.add_reader(0, on_stdin)
        try:
            await done
        finally:
            loop.remove_reader(0)
            await node.shutdown()

    asyncio.run(main())
    return 0


# -- serf ----------------------------------------------------------------------
def _serf_alive(serf: str, rpc_port: int) -> Optional[int]:
    try:
        out = subprocess.run(
            [serf, "members", f"-rpc-addr=127.0.0.1:{rpc_port}", "-status=alive", "-format=json"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except subprocess.TimeoutExpired:
        return None
    if out.returncode != 0:
        return None
    try:
        return len(json.loads(out.stdout).get("members", []))
    except ValueError:
        return None


def run_serf(nodes: int, seconds: float, settle: float = 5.0) -> Dict[str, Any]:
    """N serf agents on loopback joined through the first; their CPU over ``seconds``."""
    serf = shutil.which("serf")
    if serf is None:
        raise FileNotFoundError("serf")
    ports = free_ports(2 * nodes)
    bind, rpc = ports[:nodes], ports[nodes:]
    procs: List[subprocess.Popen] = []
    tmp = tempfile.mkdtemp(prefix="serf-idle-")
    logpath = os.path.join(tmp, "serf.log")
    result: Dict[str, Any] = {"system": "serf", "nodes": nodes}
    result["peers"] = "each agent -join's the first; LAN profile (gossip 3 nodes/200 ms, probe 1 s)"
    try:
        with open(logpath, "ab") as logf:

            def start(i: int) -> None:
                cmd = [serf, "agent", f"-node=s{i}", f"-bind=127.0.0.1:{bind[i]}"]
                cmd += [f"-rpc-addr=127.0.0.1:{rpc[i]}", "-log-level=err"]
                if i:
                    cmd.append(f"-join=127.0.0.1:{bind[0]}")
                procs.append(
                    subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
                )

            start(0)
            deadline = time.monotonic() + START_TIMEOUT
            while _serf_alive(serf, rpc[0]) is None:  # bounded by START_TIMEOUT
                if procs[0].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the first serf agent did not come up")
                time.sleep(0.2)
            for i in range(1, nodes):
                start(i)
        started = time.monotonic()
        while True:  # bounded by WARM_TIMEOUT
            dead = _dead(procs)
            if dead:
                raise RuntimeError(f"serf agents {dead[:10]} exited")
            alive = _serf_alive(serf, rpc[0]) or 0
            if alive >= nodes:
                break
            if time.monotonic() - started > WARM_TIMEOUT:
                raise RuntimeError(f"only {alive} of {nodes} serf members alive")
            time.sleep(1.0)
        result["converged_s"] = round(time.monotonic() - started, 2)
        result["version"] = subprocess.run(
            [serf, "version"], capture_output=True, text=True, timeout=10
        ).stdout.split("\n")[0]
        time.sleep(settle)
        result.update(_window([p.pid for p in procs], seconds, procs))
        result["pids"] = [p.pid for p in procs]
        return result
    except Exception:
        show_tail(logpath, "serf log")
        raise
    finally:
        stop_all(procs)
        shutil.rmtree(tmp, ignore_errors=True)


# -- the runner ----------------------------------------------------------------
def run(args: argparse.Namespace) -> Dict[str, Any]:
    from bench._meta import machine

    meta = machine()
    result: Dict[str, Any] = {
        "machine": meta,
        "settings": {
            "nodes": args.nodes,
            "seconds": args.seconds,
            "runs": args.runs,
            "fanout": args.fanout,
            "interval": args.interval,
            "settle": args.settle,
            "warm_links": args.warm_links,
        },
        "runs": [],
        "serf_skipped": None,
    }
    serf = None if args.skip_serf else shutil.which("serf")
    if args.skip_serf:
        result["serf_skipped"] = "--skip-serf"
    elif serf is None:
        result["serf_skipped"] = "serf is not installed (apt-get install serf): not measured"
    if args.interval != 0.2 or args.fanout != "3":
        note = "serf runs its LAN profile (3 nodes / 200 ms) whatever --fanout/--interval say"
        result["settings"]["note"] = note
    for r in range(args.runs):
        row: Dict[str, Any] = {"run": r + 1, "load_average_at_start": list(os.getloadavg())}
        row["fastgossip"] = run_fastgossip(
            args.nodes,
            args.seconds,
            args.fanout,
            args.interval,
            args.settle,
            args.warm_links,
            profile_node=args.profile_node if r == 0 else None,
            profile_out=args.profile_out,
        )
        if serf is not None:
            row["serf"] = run_serf(args.nodes, args.seconds, args.settle)
            row["ratio"] = round(row["fastgossip"]["cpu_s"] / max(row["serf"]["cpu_s"], 1e-9), 2)
        result["runs"].append(row)
    ratios = [row["ratio"] for row in result["runs"] if "ratio" in row]
    result["target"] = {
        "what": f"idle CPU fastgossip/serf at {args.nodes} nodes, same run",
        "target": TARGET_RATIO,
        "measured_worst": max(ratios) if ratios else None,
        "pass": (max(ratios) <= TARGET_RATIO) if ratios else None,
    }
    return result


def render(result: Dict[str, Any]) -> str:
    s = result["settings"]
    lines = [
        f"idle CPU, {s['nodes']} nodes, one process each, loopback; fanout {s['fanout']}, "
        f"interval {s['interval']} s, {s['seconds']} s window after {s['settle']} s settle",
        f"machine: {result['machine']['cores']} cores, load average at start "
        f"{result['machine']['load_average_1_5_15']}; fastgossip peers: full list "
        "(and membership), serf: one seed",
    ]
    if result["serf_skipped"]:
        lines.append(f"serf skipped: {result['serf_skipped']}")
    for row in result["runs"]:
        lines.append(
            f"run {row['run']} (load {[round(x, 2) for x in row['load_average_at_start']]})"
        )
        for name in ("fastgossip", "serf"):
            m = row.get(name)
            if m is None:
                continue
            lines.append(
                f"  {name:10} CPU {m['cpu_s']:7.2f} s (schedstat {m['cpu_s_schedstat']}) "
                f"over {m['window_s']:.1f} s = {m['cpu_ms_per_node_s']:.2f} ms per node per s "
                f"({m['sys_share']} in the kernel); "
                f"RSS per node {m['rss_mb_mean']} MB (max {m['rss_mb_max']})"
            )
            if name == "fastgossip":
                lines.append(
                    f"  {'':10} {m['rounds_per_node_s']} rounds/node/s, "
                    f"{m['frames_received_per_round']} frames in and "
                    f"{m['bytes_sent_per_round']} B out per round, "
                    f"{m['connections_opened_in_window']} links opened in the window, "
                    f"links per node {m['links_at_start_mean']} at start, "
                    f"{m['links_at_end_mean']} at end"
                )
        if "ratio" in row:
            lines.append(f"  ratio fastgossip/serf {row['ratio']:.2f} (target <= {TARGET_RATIO})")
    prof = result["runs"][0]["fastgossip"].get("profile") if result["runs"] else None
    if prof:
        lines.append(f"profile of node {prof['node']} (cProfile, CPU clock) top by own time:")
        for r in prof["top"]:
            lines.append(
                f"  {r['share'] * 100:5.1f}%  {r['tottime_s']:8.4f} s  {r['calls']:8d}  "
                f"{r['function']}"
            )
    t = result["target"]
    if t["pass"] is not None:
        mark = "pass" if t["pass"] else "FAIL"
        lines.append(f"target: {t['what']} <= {t['target']}: {mark} (worst {t['measured_worst']})")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--fanout", default="3", help="k, 'sqrt', 'all' or 'default'")
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--settle", type=float, default=5.0, help="idle seconds before the window")
    parser.add_argument(
        "--warm-links",
        type=float,
        default=0.98,
        help="fastgossip: measure once nodes have links open to this share of peers",
    )
    parser.add_argument("--skip-serf", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--out", help="also write the JSON result to this file")
    parser.add_argument("--profile-node", type=int, help="cProfile this node in the first run")
    parser.add_argument("--profile-out", help="where the profile goes (kept)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ports-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        return child_main(args.child, args.ports_file, args.fanout, args.interval)
    if args.nodes < 2 or args.runs < 1 or args.seconds <= 0:
        parser.error("need --nodes >= 2, --runs >= 1, --seconds > 0")
    if args.profile_node is not None and not 0 <= args.profile_node < args.nodes:
        parser.error("--profile-node must be a node index")
    from bench._meta import emit

    return emit(run(args), args.out, args.json, render)


if __name__ == "__main__":
    sys.exit(main())
