"""Real faults: five node processes, each in its own network namespace on a
bridge, with links cut, packets lost, a node killed and a link throttled
while writers hammer every node (see lab.py). Each scenario ends with the
checker: every node holds the same table, each key at its greatest
acknowledged write (or a greater one that may have happened), nothing that
was never written. Figures (convergence after heal, bytes received) are
printed and written as JSON (see conftest.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable, List

import pytest

from fastgossip import Entry, GossipBatch, encode

from .lab import Cluster, Lab, Write

INTERVAL = 0.2  # the default gossip interval


def run(lab: Lab, body: Callable[[Cluster], Awaitable[Any]]) -> Any:
    """A fresh cluster of five processes for one scenario, always torn down
    (and the lab's faults removed) however the scenario ends."""

    async def main() -> Any:
        cluster = Cluster(lab, interval=INTERVAL)
        try:
            await cluster.start()
            await cluster.wait_members()
            return await body(cluster)
        finally:
            lab.heal()
            for i in range(lab.n):
                lab.unthrottle(i)
            await cluster.close()

    return asyncio.run(main())


def test_baseline_concurrent_writes(lab: Lab, record) -> None:
    async def body(c: Cluster) -> None:
        async def writer(i: int) -> None:
            for k in range(200):
                await c.write(i, f"k{(k * 7 + i) % 100}")

        await asyncio.gather(*(writer(i) for i in range(5)))
        took = await c.converged(timeout=20)
        await c.check()
        assert sum(w.state == "acked" for w in c.writes) == 1000
        record(writes=1000, converged_s=round(took, 3), bytes_received=await c.received())

    run(lab, body)


@pytest.mark.parametrize(
    "seconds, keys, rate",
    [(3.0, 50, 100), (10.0, 50, 100), (60.0, 100, 20)],
    ids=["3s", "10s", "60s"],
)
def test_partition_with_conflicting_writes_then_heal(
    lab: Lab, record, seconds: float, keys: int, rate: float
) -> None:
    """{n1, n2} | {n3, n4, n5}, writes to the same keys on both sides, then heal
    (scenario 2; the 60 s one is scenario 8; a 3 s cut is shorter than it takes
    to judge a member dead: the links stay open across it, stalled)."""

    async def body(c: Cluster) -> None:
        lab.partition((0, 1), (2, 3, 4))
        n = await c.writes_for(seconds, range(5), keys=keys, rate=rate)
        lab.heal()
        took = await c.converged(timeout=60)
        await c.check()
        record(
            writes=n,
            partition_s=seconds,
            converged_after_heal_s=round(took, 3),
            bytes_received=await c.received(),
        )

    run(lab, body)


def test_random_loss_on_every_link(lab: Lab, record) -> None:
    async def body(c: Cluster) -> None:
        lab.loss(30)
        n = await c.writes_for(20.0, range(5), keys=200, rate=100)
        lab.heal()
        took = await c.converged(timeout=30)
        await c.check()
        record(
            writes=n,
            loss_percent=30,
            loss_s=20,
            converged_after_heal_s=round(took, 3),
            bytes_received=await c.received(),
        )

    run(lab, body)


def test_kill_9_and_restart_under_the_same_id(lab: Lab, record) -> None:
    async def body(c: Cluster) -> None:
        victim = 2
        task = asyncio.ensure_future(c.writes_for(4.0, range(5), keys=100, rate=100))
        await asyncio.sleep(2.0)
        killed_at = time.monotonic()
        c.nodes[victim].kill9()
        # acknowledged = in that process's memory (README): what the victim
        # acknowledged in its last second may be gone with it
        for w in c.writes:
            if w.node == victim and w.state == "acked":
                w.state = "indeterminate"
        await task
        await c.nodes[victim].start()
        restarted = time.monotonic()
        for k in range(20):
            w = await c.write(victim, f"after-restart-{k}")
            assert w.state == "acked"
        took = await c.converged(timeout=30)
        await c.check()
        record(
            killed_for_s=round(restarted - killed_at, 2),
            converged_after_restart_s=round(time.monotonic() - restarted, 3),
            converged_after_writes_s=round(took, 3),
            bytes_received=await c.received(),
        )

    run(lab, body)


def test_partition_toggled_every_second(lab: Lab, record) -> None:
    async def body(c: Cluster) -> None:
        async def toggle() -> None:
            for s in range(15):
                if s % 2 == 0:
                    lab.partition((0, 1), (2, 3, 4))
                else:
                    lab.heal()
                await asyncio.sleep(1.0)
            lab.heal()

        n, _ = await asyncio.gather(c.writes_for(15.0, range(5), keys=50, rate=100), toggle())
        took = await c.converged(timeout=30)
        await c.check()
        record(writes=n, converged_after_heal_s=round(took, 3), bytes_received=await c.received())

    run(lab, body)


def delta_bytes(writes: List[Write], sender: str = "n1") -> int:
    """What the entries of ``writes`` take on the wire as one delta: the least
    a node that lacks them all must receive."""
    entries = [Entry(w.key, w.value.encode(), w.version, w.origin, w.version) for w in writes]
    return sum(
        len(encode(GossipBatch(sender, entries[i : i + 2000])))
        for i in range(0, len(entries), 2000)
    )


def test_a_throttled_node_catches_up_without_receiving_much_more_than_the_payload(
    lab: Lab, record
) -> None:
    """Issue #13, problem 1: a node throttled to 1 Mbit/s while 50,000 keys
    (~2.1 MB of keys and values) are written on the others was sent the same
    entries by every peer and on every question (~25x the payload), and took
    minutes. Now: the entries' wire size, give or take, at the link's rate."""

    async def body(c: Cluster) -> None:
        slow = 4
        lab.throttle(slow, "1mbit")
        before = (await c.received())[slow]
        started = time.monotonic()
        for part in range(5):  # 50,000 keys written on n1..n4
            await c.bulk(part % 4, f"b{part}-", 10_000, 36)
        written = time.monotonic() - started
        payload = sum(len(w.key) + len(w.value) for w in c.writes)
        wire = delta_bytes(c.writes)
        await c.converged(timeout=150)
        caught_up = time.monotonic() - started
        got = (await c.received())[slow] - before
        lab.unthrottle(slow)
        await c.check()
        record(
            keys=50_000,
            payload_bytes=payload,
            delta_bytes=wire,
            received_bytes=got,
            received_over_payload=round(got / payload, 2),
            received_over_delta=round(got / wire, 2),
            catch_up_s=round(caught_up, 2),
            delta_at_1mbit_s=round(wire * 8 / 1e6, 1),
            catch_up_over_delta_at_rate=round(caught_up / (wire * 8 / 1e6), 2),
            written_in_s=round(written, 2),
        )
        assert got <= 1.5 * wire, (got, wire)
        # (1.2-1.5x in most runs; the bound leaves room for a loaded machine)
        assert caught_up <= 3 * wire * 8 / 1e6, (caught_up, wire)

    run(lab, body)


def test_an_asymmetric_cut(lab: Lab, record) -> None:
    async def body(c: Cluster) -> None:
        lab.cut(1, 0)  # n1 can send to n2 but not receive from it
        n = await c.writes_for(10.0, range(5), keys=50, rate=100)
        during = await c.converged(timeout=30)  # through the others, cut or not
        lab.heal()
        await c.check()
        record(writes=n, converged_during_cut_s=round(during, 3), bytes_received=await c.received())

    run(lab, body)
