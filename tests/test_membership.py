"""Membership on real nodes over loopback: seed join, seed death, leave, the
cluster greeting, metadata, events, the dead forgotten, a stopped process
(silent failure) and a killed one detected."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import List

import pytest

from fastgossip import GossipNode, NodeConfig
from fastgossip.errors import NodeError
from fastgossip.membership import MEMBER_PREFIX, MemberEvent
from tests.conftest import wait_for

FAST = 0.05


def config(node_id: str, implementation: str, **kw) -> NodeConfig:
    kw.setdefault("gossip_interval", FAST)
    return NodeConfig.localhost(node_id, implementation=implementation, **kw)


def statuses(node: GossipNode) -> dict:
    return {m.node_id: m.status for m in node.members() if m.node_id != node.node_id}


async def start_cluster(implementation: str, n: int, **kw) -> List[GossipNode]:
    first = await GossipNode.start(config("n0", implementation, **kw))
    nodes = [first]
    for i in range(1, n):
        nodes.append(
            await GossipNode.start(config(f"n{i}", implementation, seeds=[first.addr], **kw))
        )
    ids = {f"n{i}" for i in range(n)}
    await wait_for(
        lambda: all(statuses(x) == {m: "alive" for m in ids - {x.node_id}} for x in nodes),
        timeout=15,
    )
    return nodes


async def close_all(nodes: List[GossipNode]) -> None:
    for node in nodes:
        await node.shutdown()


async def test_join_through_one_seed_learns_every_member_and_key(implementation: str) -> None:
    nodes = await start_cluster(implementation, 4)
    try:
        nodes[3].set("svc/a", b"10.0.0.3:80")
        await wait_for(lambda: all(n.get("svc/a") == b"10.0.0.3:80" for n in nodes))
        me = nodes[2].members()
        assert [m.node_id for m in me] == ["n0", "n1", "n2", "n3"]
        addrs = {m.node_id: m.addr for m in me}
        assert addrs == {n.node_id: n.addr for n in nodes}
        assert all(m.phi < 8 for m in me)
        # the cluster's own keys stay out of the user's view
        assert all(not k.startswith("\x00") for n in nodes for k in n.keys())
        assert nodes[1].state_len() == 1
        with pytest.raises(ValueError, match="reserved"):
            nodes[0].set(MEMBER_PREFIX + "n9", b"forged")
    finally:
        await close_all(nodes)


async def test_the_cluster_keeps_going_when_its_seed_dies(implementation: str) -> None:
    nodes = await start_cluster(implementation, 3, dead_node_grace=3600)
    try:
        await nodes[0].shutdown()  # no leave: looks like a failure
        await wait_for(lambda: statuses(nodes[1]).get("n0") == "dead", timeout=10)
        await wait_for(lambda: statuses(nodes[2]).get("n0") == "dead", timeout=10)
        nodes[1].set("after", 1)
        await wait_for(lambda: nodes[2].get("after") == 1)
        # the dead seed is no longer dialled every round
        failures = nodes[2].stats.connect_failures
        await asyncio.sleep(0)  # (a yield; the check below waits on rounds)
        start = nodes[2].stats.rounds
        await wait_for(lambda: nodes[2].stats.rounds >= start + 40)
        assert nodes[2].stats.connect_failures - failures <= 2
        assert nodes[0].addr not in nodes[2].peers
    finally:
        await close_all(nodes)


async def test_leave_is_seen_at_once_and_events_come_in_order(implementation: str) -> None:
    nodes = await start_cluster(implementation, 3)
    seen: List[MemberEvent] = []
    unsubscribe = nodes[0].subscribe_members(seen.append)
    events: List[MemberEvent] = []

    async def consume() -> None:
        async for ev in nodes[1].member_events():
            events.append(ev)

    task = asyncio.create_task(consume())
    try:
        started = time.monotonic()
        await nodes[2].leave()
        await wait_for(lambda: statuses(nodes[0]).get("n2") == "left", timeout=5)
        await wait_for(lambda: statuses(nodes[1]).get("n2") == "left", timeout=5)
        assert time.monotonic() - started < 1.0 + 1.0  # (a loaded CI machine's margin)
        await nodes[2].shutdown()
        await wait_for(lambda: any(e.kind == "left" for e in events))
        assert [e.kind for e in seen if e.member.node_id == "n2"] == ["left"]
        # no dead verdict follows a leave
        start = nodes[0].stats.rounds
        await wait_for(lambda: nodes[0].stats.rounds >= start + 20)
        assert statuses(nodes[0])["n2"] == "left"
        unsubscribe()
    finally:
        await close_all(nodes)
        await asyncio.wait_for(task, 5)  # the iterator ends at shutdown


async def test_two_clusters_on_one_host_refuse_each_other(implementation: str) -> None:
    a = await GossipNode.start(config("a", implementation, cluster_id="blue"))
    b = await GossipNode.start(config("b", implementation, cluster_id="green", seeds=[a.addr]))
    try:
        a.set("blue-only", 1)
        await wait_for(lambda: a.stats.cluster_mismatch >= 1 and b.stats.cluster_mismatch >= 1)
        start = b.stats.rounds
        await wait_for(lambda: b.stats.rounds >= start + 10)
        assert b.get("blue-only") is None
        assert statuses(a) == {} and statuses(b) == {}
    finally:
        await a.shutdown()
        await b.shutdown()


async def test_a_node_without_membership_cannot_pass_for_a_member_of_a_cluster(
    implementation: str,
) -> None:
    """It echoes the greeting Ping as any ping: a node with a cluster id
    refuses the echo (found in review: the echo passed for a greeting)."""
    plain = await GossipNode.start(config("plain", implementation, membership=False))
    prod = await GossipNode.start(
        config("prod", implementation, cluster_id="prod", seeds=[plain.addr])
    )
    try:
        plain.set("plain-only", 1)
        await wait_for(lambda: prod.stats.cluster_mismatch >= 1)
        start = prod.stats.rounds
        await wait_for(lambda: prod.stats.rounds >= start + 10)
        assert prod.get("plain-only") is None
    finally:
        await plain.shutdown()
        await prod.shutdown()


async def test_a_ping_to_a_member_without_a_link_goes_after_the_greeting(
    implementation: str,
) -> None:
    a = await GossipNode.start(config("a", implementation, cluster_id="c"))
    b = await GossipNode.start(config("b", implementation, cluster_id="c"))
    try:
        b.add_peer(a.addr)  # a peer, no link yet: the ping dials it
        assert await b.ping(a.addr, timeout=5) < 5
        assert a.stats.cluster_mismatch == 0
    finally:
        await a.shutdown()
        await b.shutdown()


async def test_metadata_reaches_every_member(implementation: str) -> None:
    nodes = await start_cluster(implementation, 3, meta={"role": "web"})
    try:
        nodes[1].set_meta("zone", "eu-1")
        await wait_for(
            lambda: all(
                m.meta == {"role": "web", "zone": "eu-1"}
                for n in nodes
                for m in n.members()
                if m.node_id == "n1"
            )
        )
        with pytest.raises(ValueError):
            nodes[1].set_meta("big", "x" * 4096)
        assert nodes[1].meta == {"role": "web", "zone": "eu-1"}
    finally:
        await close_all(nodes)


async def test_the_dead_are_forgotten_after_the_grace(implementation: str) -> None:
    nodes = await start_cluster(implementation, 3, dead_node_grace=1.0)
    forgotten: List[str] = []
    nodes[0].subscribe_members(
        lambda ev: ev.kind == "forgotten" and forgotten.append(ev.member.node_id)
    )
    try:
        gone_addr = nodes[2].addr
        await nodes[2].shutdown()
        await wait_for(lambda: "n2" not in statuses(nodes[0]), timeout=15)
        await wait_for(lambda: "n2" not in statuses(nodes[1]), timeout=15)
        assert forgotten == ["n2"]
        entry = nodes[0].get_entry(MEMBER_PREFIX + "n2")
        assert entry is not None and entry.value == b""
        assert gone_addr not in nodes[0].peers
    finally:
        await close_all(nodes)


async def test_a_restarted_member_rejoins_under_its_id(implementation: str) -> None:
    nodes = await start_cluster(implementation, 3)
    try:
        port = nodes[2].addr[1]
        old_origin = nodes[2].origin
        await nodes[2].shutdown()
        await wait_for(lambda: statuses(nodes[0]).get("n2") == "dead", timeout=10)
        nodes[2] = await GossipNode.start(
            NodeConfig(
                "n2",
                bind=("127.0.0.1", port),
                seeds=[nodes[0].addr],
                gossip_interval=FAST,
                implementation=implementation,
            )
        )
        await wait_for(lambda: statuses(nodes[0]).get("n2") == "alive", timeout=10)
        m = nodes[0].member("n2")
        assert m is not None and m.origin == nodes[2].origin != old_origin
    finally:
        await close_all(nodes)


def test_membership_config_is_checked() -> None:
    with pytest.raises(TypeError):
        NodeConfig("a", seeds="127.0.0.1:1")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        NodeConfig("a", seeds=["nonsense"])
    with pytest.raises(ValueError):
        NodeConfig("a", phi_threshold=0)


async def test_a_wildcard_bind_needs_an_advertised_address() -> None:
    with pytest.raises(NodeError, match="advertise"):
        await GossipNode.start(NodeConfig("a", bind=("0.0.0.0", 0)))
    node = await GossipNode.start(NodeConfig("a", bind=("0.0.0.0", 0), advertise=("127.0.0.1", 1)))
    await node.shutdown()


# -- real processes: a stopped one (silent) and a killed one --------------------------

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from fastgossip import GossipNode, NodeConfig

    async def main():
        node = await GossipNode.start(NodeConfig.localhost(
            "child", gossip_interval=0.1, seeds=[("127.0.0.1", int(sys.argv[1]))]))
        print("up", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


def spawn_child(seed_port: int) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [
            os.path.dirname(os.path.dirname(__import__("fastgossip").__file__)),
            env.get("PYTHONPATH", ""),
        ]
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(seed_port)],
        stdout=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    return proc


@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
async def test_a_killed_or_stopped_process_is_seen_dead(how: str) -> None:
    a = await GossipNode.start(NodeConfig.localhost("a", gossip_interval=0.1))
    b = await GossipNode.start(NodeConfig.localhost("b", gossip_interval=0.1, seeds=[a.addr]))
    proc = spawn_child(a.addr[1])
    try:
        await wait_for(lambda: statuses(a).get("child") == "alive", timeout=20)
        await wait_for(lambda: statuses(b).get("child") == "alive", timeout=20)
        await wait_for(lambda: a.member("child").phi < 1, timeout=10)  # type: ignore[union-attr]
        started = time.monotonic()
        os.kill(proc.pid, getattr(signal, how))
        await wait_for(lambda: statuses(a).get("child") == "dead", timeout=15)
        await wait_for(lambda: statuses(b).get("child") == "dead", timeout=15)
        took = time.monotonic() - started
        assert took < 15
        assert statuses(a)["b"] == "alive" and statuses(b)["a"] == "alive"
    finally:
        proc.kill()
        proc.wait(10)
        await a.shutdown()
        await b.shutdown()
