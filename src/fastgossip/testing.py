"""Helpers for tests of code that uses fastgossip (and for fastgossip's own).

``ClusterNetwork``: N gossip nodes on loopback, in this process, in a full
mesh; ``NetworkStats``: what waiting for convergence observed;
``make_test_pki``: a throwaway CA and node certificates for mutual TLS.
"""

from __future__ import annotations

import asyncio
import datetime
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional

from .fanout import Fanout
from .node import GossipNode, NodeConfig, Value
from .secure import NODE_URI_PREFIX, TLSConfig

__all__ = ["ClusterNetwork", "NetworkStats", "make_test_pki"]


def make_test_pki(
    directory: str, node_ids: Iterable[str], ca_name: str = "fastgossip test CA"
) -> Dict[str, TLSConfig]:
    """A new CA and, per node id, a certificate naming that id (as a DNS
    subjectAltName when it is a host name, else as a URI
    ``fastgossip:node:<id>``), written under ``directory``; returns each node's
    ``TLSConfig``. For tests and trials: the keys are not protected."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    os.makedirs(directory, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)

    def write_key(path: str, key: Any) -> None:
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_subject)
        .issuer_name(ca_subject)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    cafile = os.path.join(directory, "ca.pem")
    with open(cafile, "wb") as f:
        f.write(ca_cert.public_bytes(serialization.Encoding.PEM))
    configs: Dict[str, TLSConfig] = {}
    for node_id in node_ids:
        key = ec.generate_private_key(ec.SECP256R1())
        try:
            san: Any = x509.DNSName(node_id)
            if not node_id.replace("-", "").replace(".", "").isalnum() or not node_id.isascii():
                raise ValueError
        except ValueError:
            san = x509.UniformResourceIdentifier(NODE_URI_PREFIX + node_id)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
            .issuer_name(ca_subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
            .sign(ca_key, hashes.SHA256())
        )
        base = os.path.join(directory, f"node-{len(configs)}")
        with open(base + ".pem", "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        write_key(base + ".key", key)
        configs[node_id] = TLSConfig(certfile=base + ".pem", keyfile=base + ".key", cafile=cafile)
    return configs


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
