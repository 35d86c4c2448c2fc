"""The fault suite's laboratory: network namespaces on a bridge, faults made
with nftables and tbf, node processes driven over unix sockets, and the
checker that compares every table with the acknowledged writes.

Topology: one namespace ``<run>-hub`` holds a bridge ``br0``; each node's
namespace ``<run>-n<i>`` has ``eth0`` (10.77.<net>.<i>/24), a veth whose other
end is a port of the bridge. Faults are made where a failed switch or a
cloud security group would make them, in the hub: nft rules in a ``bridge``
table drop packets silently (cuts, one-way cuts, random loss), and tbf
throttles both directions of one node's port. Everything is removed in
``Lab.close()`` (and namespaces of an aborted run, found by their prefix,
when the next one starts).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

PREFIX = "fgt"  # every namespace and interface this suite makes starts with it
AGENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "agent.py")
PORT = 7946


def _run(*cmd: str, check: bool = True, input: Optional[str] = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def unavailable() -> Optional[str]:
    """Why namespaces cannot be used here (None: they can)."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (run the suite as root, as CI does)"
    for tool in ("ip", "nft", "tc"):
        if shutil.which(tool) is None:
            return f"'{tool}' is not installed (apt-get install iproute2 nftables)"
    name = f"{PREFIX}probe{os.getpid() % 10000}"
    try:
        _run("ip", "netns", "add", name)
    except (RuntimeError, OSError) as exc:
        return f"cannot create a network namespace: {exc}"
    try:
        _run("ip", "netns", "exec", name, "nft", "add", "table", "bridge", "probe")
    except (RuntimeError, OSError) as exc:
        return f"nftables does not work in a namespace: {exc}"
    finally:
        _run("ip", "netns", "del", name, check=False)
    return None


def clean_leftovers() -> None:
    """Remove the namespaces of runs that were interrupted."""
    for line in _run("ip", "netns", "list", check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(PREFIX):
            _run("ip", "netns", "del", name, check=False)
    for line in _run("ip", "-o", "link", "show", check=False).splitlines():
        parts = line.split(":")
        if len(parts) > 1 and parts[1].strip().split("@")[0].startswith(PREFIX):
            _run("ip", "link", "del", parts[1].strip().split("@")[0], check=False)


class Lab:
    """``n`` namespaces on a bridge, and the faults between them."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.run = f"{PREFIX}{random.randrange(16**4):04x}"
        self.net = random.randrange(100, 200)
        self.hub = f"{self.run}-hub"
        self.ns = [f"{self.run}-n{i}" for i in range(n)]
        self.addrs = [f"10.77.{self.net}.{i + 1}" for i in range(n)]
        self.ports = [f"{self.run}v{i}" for i in range(n)]  # hub side
        self._rules: Dict[str, str] = {}  # name -> nft rule
        self._throttled: Set[int] = set()

    def open(self) -> None:
        clean_leftovers()
        try:
            _run("ip", "netns", "add", self.hub)
            _run("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
            _run("ip", "-n", self.hub, "link", "set", "br0", "up")
            for i, ns in enumerate(self.ns):
                _run("ip", "netns", "add", ns)
                peer = f"{self.run}p{i}"
                _run("ip", "link", "add", self.ports[i], "type", "veth", "peer", "name", peer)
                _run("ip", "link", "set", self.ports[i], "netns", self.hub)
                _run("ip", "link", "set", peer, "netns", ns)
                _run("ip", "-n", ns, "link", "set", peer, "name", "eth0")
                _run("ip", "-n", ns, "addr", "add", f"{self.addrs[i]}/24", "dev", "eth0")
                _run("ip", "-n", ns, "link", "set", "eth0", "up")
                _run("ip", "-n", ns, "link", "set", "lo", "up")
                _run("ip", "-n", self.hub, "link", "set", self.ports[i], "master", "br0")
                _run("ip", "-n", self.hub, "link", "set", self.ports[i], "up")
            _run(
                "ip", "netns", "exec", self.hub, "nft", "-f", "-",
                input="table bridge fg {\n"
                " chain filt { type filter hook forward priority 0; policy accept; }\n}\n",
            )  # fmt: skip
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for ns in [self.hub, *self.ns]:
            _run("ip", "netns", "del", ns, check=False)
        for port in self.ports:  # (gone with the hub; in case it was never moved)
            _run("ip", "link", "del", port, check=False)

    # -- faults (silent: packets are dropped in the bridge) ----------------------
    def _apply(self) -> None:
        script = "flush chain bridge fg filt\n" + "".join(
            f"add rule bridge fg filt {rule}\n" for rule in self._rules.values()
        )
        _run("ip", "netns", "exec", self.hub, "nft", "-f", "-", input=script)

    def cut(self, src: int, dst: int, name: Optional[str] = None) -> None:
        """Drop what ``src`` sends to ``dst`` (one way)."""
        a, b = self.addrs[src], self.addrs[dst]
        self._rules[name or f"cut {src}>{dst}"] = f"ip saddr {a} ip daddr {b} drop"
        self._apply()

    def partition(self, *groups: Sequence[int]) -> None:
        """Cut every link between different groups, both ways (one nft change)."""
        for g in groups:
            for h in groups:
                if g is h:
                    continue
                for i in g:
                    for j in h:
                        a, b = self.addrs[i], self.addrs[j]
                        self._rules[f"cut {i}>{j}"] = f"ip saddr {a} ip daddr {b} drop"
        self._apply()

    def loss(self, percent: int) -> None:
        """Drop ``percent`` % of the TCP packets on every link, at random."""
        self._rules["loss"] = f"meta l4proto tcp numgen random mod 100 < {percent} drop"
        self._apply()

    def heal(self) -> None:
        """Remove every cut and every loss rule."""
        self._rules.clear()
        self._apply()

    def throttle(self, i: int, rate: str = "1mbit") -> None:
        """Limit node ``i``'s link to ``rate`` both ways (tbf; no netem here)."""
        spec = ["root", "tbf", "rate", rate, "burst", "32kbit", "latency", "400ms"]
        _run("ip", "netns", "exec", self.ns[i], "tc", "qdisc", "replace", "dev", "eth0", *spec)
        _run("ip", "netns", "exec", self.hub, "tc", "qdisc", "replace", "dev", self.ports[i], *spec)
        self._throttled.add(i)

    def unthrottle(self, i: int) -> None:
        _run("ip", "netns", "exec", self.ns[i], "tc", "qdisc", "del", "dev", "eth0", "root",
             check=False)  # fmt: skip
        _run("ip", "netns", "exec", self.hub, "tc", "qdisc", "del", "dev", self.ports[i], "root",
             check=False)  # fmt: skip
        self._throttled.discard(i)


# -- node processes ---------------------------------------------------------------
@dataclass
class Write:
    key: str
    value: str
    node: int
    state: str = "pending"  # acked, failed or indeterminate
    version: int = 0
    origin: str = ""


class Node:
    """One agent process and its control connection."""

    def __init__(self, cluster: Cluster, i: int) -> None:
        self.cluster = cluster
        self.i = i
        self.id = f"n{i + 1}"
        self.proc: Optional[asyncio.subprocess.Process] = None
        self.sock = os.path.join(cluster.dir, f"{self.id}.sock")
        self.reader: Optional[asyncio.StreamReader] = None
        self.writer: Optional[asyncio.StreamWriter] = None
        self.lock = asyncio.Lock()
        self.log = os.path.join(cluster.dir, f"{self.id}.log")

    async def start(self) -> None:
        lab = self.cluster.lab
        seeds = ",".join(f"{lab.addrs[j]}:{PORT}" for j in range(lab.n) if j != self.i)
        cmd = ["ip", "netns", "exec", lab.ns[self.i], sys.executable, AGENT,
               "--id", self.id, "--host", lab.addrs[self.i], "--port", str(PORT),
               "--seeds", seeds, "--control", self.sock,
               "--interval", str(self.cluster.interval)]  # fmt: skip
        with open(self.log, "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *cmd, stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + 20
        while True:
            try:
                self.reader, self.writer = await asyncio.open_unix_connection(
                    self.sock, limit=1 << 28
                )
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.returncode is not None:
                    raise RuntimeError(f"{self.id} did not start: see {self.log}") from None
                await asyncio.sleep(0.05)

    async def call(self, timeout: float = 30.0, **req: Any) -> Dict[str, Any]:
        async with self.lock:
            if self.writer is None or self.reader is None:
                raise ConnectionError(f"{self.id} is not running")
            self.writer.write(json.dumps(req).encode() + b"\n")
            line = await asyncio.wait_for(self.reader.readline(), timeout)
            if not line:
                raise ConnectionError(f"{self.id} closed its control socket")
            return json.loads(line)

    def kill9(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None and self.writer is not None:
            try:
                await self.call(timeout=5, op="quit")
            except (OSError, asyncio.TimeoutError, ConnectionError, ValueError):
                pass
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except asyncio.TimeoutError:
            self.kill9()
            await self.proc.wait()
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Cluster:
    """Five agents in a lab, every write they acknowledged, and the checker."""

    lab: Lab
    interval: float = 0.2
    dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="fgt-"))
    nodes: List[Node] = field(default_factory=list)
    writes: List[Write] = field(default_factory=list)
    _seq: int = 0

    async def start(self) -> None:
        self.nodes = [Node(self, i) for i in range(self.lab.n)]
        await asyncio.gather(*(n.start() for n in self.nodes))

    async def close(self) -> None:
        await asyncio.gather(*(n.stop() for n in self.nodes), return_exceptions=True)
        for n in self.nodes:
            n.kill9()
        shutil.rmtree(self.dir, ignore_errors=True)

    async def wait_members(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            views = await asyncio.gather(*(n.call(op="stats") for n in self.nodes))
            if all(
                len(v["members"]) == self.lab.n and set(v["members"].values()) == {"alive"}
                for v in views
            ):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"members not all alive after {timeout}s: {views}")
            await asyncio.sleep(0.1)

    # -- writing ------------------------------------------------------------------
    async def write(self, i: int, key: str, timeout: float = 5.0) -> Write:
        """One write of a unique value on node ``i``, recorded as acknowledged,
        failed (refused) or indeterminate (no answer: it may have happened)."""
        self._seq += 1
        w = Write(key, f"{self.nodes[i].id}:{self._seq}", i)
        self.writes.append(w)
        try:
            ans = await self.nodes[i].call(timeout=timeout, op="set", key=key, value=w.value)
        except (OSError, asyncio.TimeoutError, ConnectionError, ValueError):
            w.state = "indeterminate"
            return w
        if ans.get("ok"):
            w.state, w.version, w.origin = "acked", ans["version"], ans["origin"]
        else:
            w.state = "failed"
        return w

    async def writes_for(
        self, seconds: float, nodes: Sequence[int], keys: int, rate: float = 200.0
    ) -> int:
        """Concurrent writers, one per node, for ``seconds`` (bounded in count
        too): values written to ``keys`` shared keys; returns how many."""
        end = time.monotonic() + seconds
        count = 0
        rng = random.Random(len(self.writes))

        async def writer(i: int) -> None:
            nonlocal count
            for _ in range(int(seconds * rate / len(nodes)) + 1):
                if time.monotonic() >= end:
                    return
                await self.write(i, f"k{rng.randrange(keys)}")
                count += 1
                await asyncio.sleep(len(nodes) / rate)

        await asyncio.gather(*(writer(i) for i in nodes))
        return count

    async def bulk(self, i: int, prefix: str, n: int, size: int) -> None:
        ans = await self.nodes[i].call(timeout=120, op="bulk", prefix=prefix, n=n, size=size)
        for key, version, value in ans["acks"]:
            self.writes.append(Write(key, value, i, "acked", version, ans["origin"]))

    # -- checking -----------------------------------------------------------------
    def expected(self) -> Dict[str, Tuple[int, str, str]]:
        """Per key, the greatest acknowledged (version, origin, value)."""
        best: Dict[str, Tuple[int, str, str]] = {}
        for w in self.writes:
            if w.state == "acked":
                t = (w.version, w.origin, w.value)
                if w.key not in best or t > best[w.key]:
                    best[w.key] = t
        return best

    async def converged(self, timeout: float, nodes: Optional[Iterable[int]] = None) -> float:
        """Seconds until every node (of ``nodes``) holds the same table with
        every key written; AssertionError after ``timeout``."""
        started = time.monotonic()
        which = list(nodes) if nodes is not None else list(range(self.lab.n))
        want = len({w.key for w in self.writes if w.state == "acked"})
        while True:
            prints = await asyncio.gather(
                *(self.nodes[i].call(op="fingerprint") for i in which), return_exceptions=True
            )
            good = [p for p in prints if isinstance(p, dict)]
            if (
                len(good) == len(which)
                and len({p["hash"] for p in good}) == 1
                and good[0]["count"] >= want
            ):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise AssertionError(
                    f"not converged after {timeout}s: {[(p.get('count'), p.get('hash', '')[:8]) if isinstance(p, dict) else repr(p) for p in prints]}"  # noqa: E501
                )
            await asyncio.sleep(0.05)

    async def check(self, nodes: Optional[Iterable[int]] = None) -> None:
        """Every table equal; every key at its greatest acknowledged write or a
        greater write that may have happened (indeterminate); no value that was
        never written (no phantom)."""
        which = list(nodes) if nodes is not None else list(range(self.lab.n))
        dumps = [(await self.nodes[i].call(op="dump"))["entries"] for i in which]
        for i, d in zip(which[1:], dumps[1:]):
            assert d == dumps[0], f"{self.nodes[i].id} differs from {self.nodes[which[0]].id}"
        table = dumps[0]
        written = {(w.key, w.value): w for w in self.writes if w.state != "failed"}
        for key, (_version, _origin, value) in table.items():
            w = written.get((key, value))
            assert w is not None, f"phantom value {value!r} under {key!r}"
        for key, best in self.expected().items():
            assert key in table, f"acknowledged key {key!r} lost"
            got = tuple(table[key])
            # a greater write can only be one that may have happened (no answer)
            assert got >= best, f"{key!r}: holds {got}, the greatest acknowledged is {best}"

    async def received(self) -> List[int]:
        stats = await asyncio.gather(*(n.call(op="stats") for n in self.nodes))
        return [s["stats"]["bytes_received"] for s in stats]
