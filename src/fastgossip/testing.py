"""Helpers for tests of code that uses fastgossip (and for fastgossip's own).

``ClusterNetwork``: N gossip nodes on loopback, in this process, in a full
mesh; ``NetworkStats``: what waiting for convergence observed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from .fanout import Fanout
from .node import GossipNode, NodeConfig, Value

__all__ = ["ClusterNetwork", "NetworkStats"]


@dataclass(frozen=True)
class NetworkStats:
    """What ``wait_converged`` observed.

    ``rounds_to_converge`` counts the gossip rounds the busiest node ran
    between the call and convergence; ``final_state_entries`` is the sum of
    every node's table size when the wait ended.
    """

    node_count: int
    converged: bool
    rounds_to_converge: int
    total_time_ms: float
    final_state_entries: int


class ClusterNetwork:
    """A full mesh of nodes on 127.0.0.1, in this process."""

    def __init__(self, nodes: List[GossipNode]) -> None:
        self.nodes = nodes

    @classmethod
    async def spawn(
        cls,
        n: int,
        fanout: Optional[Fanout] = None,
        gossip_interval: float = 0.1,
        host: str = "127.0.0.1",
        prefix: str = "node",
        mesh: bool = True,
        **config: Any,
    ) -> ClusterNetwork:
        """Start ``n`` nodes on ``host``:0 and make every node a peer of every
        other (``mesh``), or (``mesh=False``) let nodes 1.. join through node 0
        as their seed and learn the others by membership."""
        if n < 1:
            raise ValueError("a cluster needs at least one node")
        nodes: List[GossipNode] = []
        try:
            for i in range(n):
                extra = dict(config)
                if not mesh and nodes:
                    extra["seeds"] = [nodes[0].addr]
                cfg = NodeConfig(
                    node_id=f"{prefix}-{i}",
                    bind=(host, 0),
                    fanout=fanout,
                    gossip_interval=gossip_interval,
                    **extra,
                )
                nodes.append(await GossipNode.start(cfg))
        except BaseException:
            await asyncio.gather(*(node.shutdown() for node in nodes), return_exceptions=True)
            raise
        if mesh:
            for node in nodes:
                for other in nodes:
                    if other is not node:
                        node.add_peer(other.addr)
        return cls(nodes)

    @property
    def node_count(self) -> int:
        return len(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def set_on(self, i: int, key: str, value: Value) -> int:
        return self.nodes[i].set(key, value)

    def set_with_version_on(self, i: int, key: str, value: Value, version: int) -> bool:
        return self.nodes[i].set_with_version(key, value, version)

    def get_on(self, i: int, key: str) -> Optional[Value]:
        return self.nodes[i].get(key)

    def converged_count(self, key: str, expected: Value) -> int:
        return sum(1 for node in self.nodes if node.get(key) == expected)

    async def wait_until(
        self, predicate: Callable[[], bool], timeout: float = 10.0
    ) -> NetworkStats:
        """Poll ``predicate`` until true or ``timeout`` seconds pass."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        start_rounds = [node.stats.rounds for node in self.nodes]
        poll = min(0.01, max(0.001, self.nodes[0].config.gossip_interval / 10))
        ok = predicate()
        while not ok and loop.time() - start < timeout:
            await asyncio.sleep(poll)
            ok = predicate()
        elapsed = loop.time() - start
        rounds = max(
            (node.stats.rounds - r0 for node, r0 in zip(self.nodes, start_rounds)), default=0
        )
        return NetworkStats(
            node_count=len(self.nodes),
            converged=ok,
            rounds_to_converge=rounds,
            total_time_ms=elapsed * 1000.0,
            final_state_entries=sum(node.state_len() for node in self.nodes),
        )

    async def wait_converged(
        self, key: str, expected: Value, timeout: float = 10.0
    ) -> NetworkStats:
        """Wait until every node holds ``expected`` under ``key``."""
        n = len(self.nodes)
        return await self.wait_until(lambda: self.converged_count(key, expected) == n, timeout)

    def total_stats(self) -> Dict[str, int]:
        """Every node's counters summed."""
        total: Dict[str, int] = {}
        for node in self.nodes:
            for name, value in node.stats.as_dict().items():
                total[name] = total.get(name, 0) + value
        return total

    async def shutdown_all(self) -> None:
        # first stop every node's rounds and dials, so that no node connects to
        # a listener that is closing (asyncio's accept path trips on that)
        await asyncio.gather(*(node.stop_rounds() for node in self.nodes))
        await asyncio.gather(*(node.shutdown() for node in self.nodes))

    async def __aenter__(self) -> ClusterNetwork:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.shutdown_all()
