"""The agent (issue #14): its HTTP API's speed, in one run.

    python -m bench.agent [--quick] [--out bench/results/agent.json]

1. **GET throughput** - ``wrk`` (Debian's package) against ``GET /v1/kv/<a
   small key>`` of one agent process: requests/s (target >= 5,000 on this
   2-core machine; wrk and the agent share it). Skipped where wrk is missing.
2. **latency at 1,000 requests/s** - a fixed-rate client in its own process
   (aiohttp, one request every millisecond, 32 connections): p50/p99 (target
   p99 <= 5 ms).
3. **watch latency** - two agent processes joined; a write on one (PUT), an
   SSE watcher on the other: the time from the PUT's answer to the event
   (target: median <= one gossip interval + 20 ms).
4. **/metrics with 1,000 members** - an agent whose member list holds 1,000
   members (made up: the cost is the exposition's, per member): seconds per
   scrape (target <= 50 ms).
5. **idle CPU** - an agent process and a bare node process, each alone and
   idle for a while: CPU seconds per second (target: the agent within 5
   points of the node).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from bench._meta import RESULTS, machine, write_json
from bench._procs import child_env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AgentProc:
    """One ``fastgossip agent`` process on loopback."""

    def __init__(self, node_id: str, join: Optional[str] = None, interval: float = 0.2) -> None:
        self.gossip, self.http = _free_port(), _free_port()
        cmd = [sys.executable, "-m", "fastgossip", "agent", "--node-id", node_id,
               "--bind", f"127.0.0.1:{self.gossip}", "--http", f"127.0.0.1:{self.http}",
               "--interval", str(interval), "--log-level", "WARNING"]  # fmt: skip
        if join:
            cmd += ["--join", join]
        env = child_env()
        self.proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.http), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"agent {node_id} did not start") from None
                time.sleep(0.05)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _put(base: str, key: str, value: bytes) -> None:
    import urllib.request

    req = urllib.request.Request(f"{base}/v1/kv/{key}", data=value, method="PUT")
    urllib.request.urlopen(req, timeout=5).read()


def measure_wrk(seconds: int) -> Dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        return {"skipped": "wrk is not installed (apt-get install wrk)"}
    a = AgentProc("w1")
    try:
        _put(a.base, "small", b"x" * 16)
        out = subprocess.run(
            [wrk, "-t2", "-c32", f"-d{seconds}s", "--latency", f"{a.base}/v1/kv/small"],
            capture_output=True,
            text=True,
            timeout=seconds + 30,
        ).stdout
    finally:
        a.stop()
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {
        "requests_per_s": round(float(rps.group(1))) if rps else None,
        "p99_ms_at_saturation": round(float(p99.group(1)) * scale[p99.group(2)], 2)
        if p99
        else None,
        "connections": 32,
        "seconds": seconds,
    }


RATE_CLIENT = r"""
import asyncio, json, sys, time, aiohttp
async def main(url, rate, seconds):
    lat = []
    conn = aiohttp.TCPConnector(limit=32)
    async with aiohttp.ClientSession(connector=conn) as s:
        async def one():
            t = time.perf_counter()
            async with s.get(url) as r:
                await r.read()
            lat.append(time.perf_counter() - t)
        for _ in range(50):  # warm the pool
            await one()
        lat.clear()
        tasks = []
        start = time.perf_counter()
        n = int(rate * seconds)
        for i in range(n):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one()))
        await asyncio.gather(*tasks)
        took = time.perf_counter() - start
    lat.sort()
    print(json.dumps({"sent": n, "seconds": took, "p50_ms": 1000 * lat[len(lat) // 2],
                      "p99_ms": 1000 * lat[int(len(lat) * 0.99)], "max_ms": 1000 * lat[-1]}))
asyncio.run(main(sys.argv[1], float(sys.argv[2]), float(sys.argv[3])))
"""


def measure_rate(rate: float, seconds: float) -> Dict[str, Any]:
    a = AgentProc("r1")
    try:
        _put(a.base, "small", b"x" * 16)
        out = subprocess.run(
            [sys.executable, "-c", RATE_CLIENT, f"{a.base}/v1/kv/small", str(rate), str(seconds)],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            env=child_env(),
        )
    finally:
        a.stop()
    got = json.loads(out.stdout)
    return {"rate": rate, **{k: round(v, 3) for k, v in got.items()}}


async def _watch_latency(writer: str, watcher: str, n: int, interval: float) -> List[float]:
    import aiohttp

    lat: List[float] = []
    async with aiohttp.ClientSession() as s:
        r = await s.get(f"{watcher}/v1/watch?prefix=lat/")
        await r.content.readline()
        sent: Dict[str, float] = {}
        for i in range(n):
            key = f"lat/{i}"
            async with s.put(f"{writer}/v1/kv/{key}", data=b"v") as resp:
                await resp.read()
            sent[key] = time.perf_counter()
            deadline = time.perf_counter() + 5
            while time.perf_counter() < deadline:
                line = await asyncio.wait_for(r.content.readline(), 5)
                if line.startswith(b"data: "):
                    ch = json.loads(line[6:])
                    if ch["key"] == key:
                        lat.append(time.perf_counter() - sent[key])
                        break
            await asyncio.sleep(interval * 0.37)  # (writes at varying phases of the rounds)
        r.close()
    return lat


def measure_watch(n: int, interval: float) -> Dict[str, Any]:
    a = AgentProc("s1", interval=interval)
    b = AgentProc("s2", join=f"127.0.0.1:{a.gossip}", interval=interval)
    try:
        time.sleep(1.0)
        lat = asyncio.run(_watch_latency(a.base, b.base, n, interval))
    finally:
        b.stop()
        a.stop()
    lat.sort()
    return {
        "writes": n,
        "delivered": len(lat),
        "gossip_interval_s": interval,
        "median_ms": round(1000 * statistics.median(lat), 1) if lat else None,
        "p90_ms": round(1000 * lat[int(len(lat) * 0.9)], 1) if lat else None,
        "target_ms": round(1000 * interval + 20, 1),
    }


async def _metrics_with_members(members: int, scrapes: int) -> Dict[str, Any]:
    import aiohttp

    from fastgossip.agent import Agent, AgentConfig
    from fastgossip.membership import Member

    agent = Agent(AgentConfig(node_id="m0", bind="127.0.0.1:0", http="127.0.0.1:0"))
    await agent.start()
    node = agent.node
    assert node is not None
    fake = [
        Member(
            f"member-{i:04d}",
            (f"10.0.{i // 250}.{i % 250 + 1}", 7946),
            "alive",
            {"zone": "a"},
            time.time(),
            0.5,
            f"member-{i:04d}#1",
        )  # fmt: skip
        for i in range(members)
    ]
    node.members = lambda: fake  # type: ignore[method-assign]
    times: List[float] = []
    size = 0
    try:
        host, port = agent.http_addr  # type: ignore[misc]
        async with aiohttp.ClientSession() as s:
            for _ in range(scrapes):
                t = time.perf_counter()
                async with s.get(f"http://{host}:{port}/metrics") as r:
                    body = await r.read()
                times.append(time.perf_counter() - t)
                size = len(body)
    finally:
        await agent.stop(leave=False)
    times.sort()
    return {
        "members": members,
        "scrapes": scrapes,
        "median_ms": round(1000 * statistics.median(times), 2),
        "max_ms": round(1000 * times[-1], 2),
        "bytes": size,
    }


IDLE_NODE = r"""
import asyncio, sys
from fastgossip import GossipNode, NodeConfig
async def main():
    n = await GossipNode.start(NodeConfig("idle", bind=("127.0.0.1", int(sys.argv[1]))))
    await asyncio.sleep(3600)
asyncio.run(main())
"""


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_idle(seconds: float) -> Dict[str, Any]:
    a = AgentProc("i1")
    try:
        time.sleep(1.0)
        c0, t0 = a.cpu_seconds(), time.monotonic()
        time.sleep(seconds)
        agent = (a.cpu_seconds() - c0) / (time.monotonic() - t0)
    finally:
        a.stop()
    env = child_env()
    p = subprocess.Popen([sys.executable, "-c", IDLE_NODE, str(_free_port())], env=env)
    try:
        time.sleep(1.0)
        c0, t0 = _cpu(p.pid), time.monotonic()
        time.sleep(seconds)
        node = (_cpu(p.pid) - c0) / (time.monotonic() - t0)
    finally:
        p.kill()
        p.wait(10)
    return {
        "seconds": seconds,
        "agent_cpu_percent": round(100 * agent, 2),
        "node_cpu_percent": round(100 * node, 2),
        "difference_points": round(100 * (agent - node), 2),
    }


def run(quick: bool) -> Dict[str, Any]:
    t0 = time.perf_counter()
    out: Dict[str, Any] = {"meta": machine(), "settings": {"quick": quick}}
    out["get_wrk"] = measure_wrk(2 if quick else 10)
    out["get_at_rate"] = measure_rate(1000.0, 1.0 if quick else 5.0)
    out["watch"] = measure_watch(10 if quick else 60, 0.2)
    out["metrics"] = asyncio.run(_metrics_with_members(1000, 5 if quick else 30))
    out["idle"] = measure_idle(2.0 if quick else 10.0)
    out["settings"]["elapsed_s"] = round(time.perf_counter() - t0, 1)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=os.path.join(RESULTS, "agent.json"))
    args = parser.parse_args(argv)
    result = run(args.quick)
    write_json(args.out, result)
    for k in ("get_wrk", "get_at_rate", "watch", "metrics", "idle"):
        print(k, result[k])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__: Tuple[str, ...] = ("run",)
