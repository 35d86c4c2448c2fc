"""``fastgossip registry``: a service registry on ephemeral keys, with real processes.

A watcher node (the seed) prints every change under ``svc/``. Service
processes (``fastgossip registry --service NAME --seed HOST:PORT``) join
through it and publish ``svc/NAME`` = their address as an *ephemeral* key,
which lives as long as the process: the script starts three, stops one
gracefully (SIGTERM: it leaves), kills one with SIGKILL (seen dead), and
starts a fourth. Each appears and disappears in the watcher's output::

    + svc/api   127.0.0.1:41233   (set)
    - svc/api                     (expire)

Every child process is killed in a ``finally``; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, TextIO

from .node import Change, GossipNode, NodeConfig

__all__ = ["run_registry", "run_service"]

PREFIX = "svc/"
INTERVAL = 0.1  # gossip rounds: quick, for a demo


def _config(name: str, seeds: List[str]) -> NodeConfig:
    return NodeConfig.localhost(
        name, gossip_interval=INTERVAL, heartbeat_interval=0.25, seeds=seeds
    )


async def run_service(name: str, seed: str) -> None:
    """A service: join through ``seed``, publish ``svc/<name>`` (ephemeral),
    run until SIGTERM or SIGINT, then leave."""
    node = await GossipNode.start(_config(name, [seed]))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        host, port = node.addr
        node.set(PREFIX + name, f"{host}:{port}".encode(), ephemeral=True)
        print(f"{name}: published", flush=True)
        await stop.wait()
        await node.leave()
    finally:
        await node.shutdown()


async def run_registry(out: TextIO = sys.stdout, timeout: float = 60.0) -> bool:
    """The scripted demo; True when every change was seen in time."""
    watcher = await GossipNode.start(_config("watcher", []))
    seed = f"{watcher.addr[0]}:{watcher.addr[1]}"
    shown: Dict[str, bytes] = {}
    log: List[Change] = []

    def show(ch: Change) -> None:
        log.append(ch)
        if ch.kind == "set":
            shown[ch.key] = ch.value
            print(f"+ {ch.key:<12} {ch.value.decode():<22} (set)", file=out, flush=True)
        elif ch.kind in ("delete", "expire"):
            shown.pop(ch.key, None)
            print(f"- {ch.key:<12} {'':<22} ({ch.kind})", file=out, flush=True)

    watcher.subscribe(PREFIX, show)
    children: Dict[str, subprocess.Popen] = {}
    deadline = time.monotonic() + timeout

    def start(name: str) -> None:
        children[name] = subprocess.Popen(
            [sys.executable, "-m", "fastgossip", "registry", "--service", name, "--seed", seed],
            stdout=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    async def until(what: str, cond: Callable[[], bool]) -> bool:
        while not cond():
            if time.monotonic() > deadline:
                print(f"! timed out waiting for {what}", file=out, flush=True)
                return False
            await asyncio.sleep(0.02)
        return True

    ok = True
    try:
        print(f"watcher listening on {seed}; services join through it", file=out, flush=True)
        for name in ("api", "web", "db"):
            start(name)
        ok = await until("three services", lambda: set(shown) >= {"svc/api", "svc/web", "svc/db"})
        if ok:
            print("# stopping web (SIGTERM: it leaves)", file=out, flush=True)
            children["web"].send_signal(signal.SIGTERM)
            ok = await until("web to leave", lambda: "svc/web" not in shown)
        if ok:
            print("# killing db (SIGKILL: seen dead)", file=out, flush=True)
            children["db"].kill()
            ok = await until("db to be seen dead", lambda: "svc/db" not in shown)
        if ok:
            print("# starting cache", file=out, flush=True)
            start("cache")
            ok = await until("cache", lambda: "svc/cache" in shown)
        if ok:
            print(f"# registry now: {sorted(shown)}", file=out, flush=True)
        return ok
    finally:
        for proc in children.values():
            if proc.poll() is None:
                proc.kill()
        for proc in children.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
        await watcher.shutdown()


def main(service: Optional[str], seed: Optional[str], timeout: float) -> int:
    if service is not None:
        if seed is None:
            print("--service needs --seed", file=sys.stderr)
            return 2
        asyncio.run(run_service(service, seed))
        return 0
    return 0 if asyncio.run(run_registry(timeout=timeout)) else 1
