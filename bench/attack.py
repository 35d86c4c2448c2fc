"""The amplification burst of the hardening issue, measured.

A node holds ``--keys`` keys (100,000 by default, default config otherwise).
``--clients`` connections (200) each send an empty ``Digest(reply=True)`` —
"send me everything" — every gossip round for ``--seconds``, and never read.
Meanwhile a task measures the event loop's lag (how late a 5 ms sleep wakes).

Reports the worst and 99th-percentile lag (target: worst <= 100 ms), the bytes
the node sent per round against the bytes of requests per round (the
reply-to-request ratio, bounded by ``max_round_bytes``), and that an honest
peer still gets a fresh key.

    python -m bench.attack [--keys 100000] [--clients 200] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from typing import Any, Dict, List

from fastgossip import Digest, GossipNode, NodeConfig, encode


async def _lag_monitor(samples: List[float], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t0 = loop.time()
        await asyncio.sleep(0.005)
        samples.append(loop.time() - t0 - 0.005)


async def _client(addr: Any) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, addr)
    return sock


async def run(keys: int, clients: int, seconds: float, **config: Any) -> Dict[str, Any]:
    loop = asyncio.get_running_loop()
    node = await GossipNode.start(NodeConfig.localhost("victim", **config))
    peer = await GossipNode.start(NodeConfig.localhost("honest", **config))
    node.add_peer(peer.addr)
    peer.add_peer(node.addr)
    for i in range(keys):
        node.set(f"key-{i:07d}", b"v" * 16)
    await asyncio.sleep(0)
    deadline = loop.time() + 60
    while peer.state_len() < keys and loop.time() < deadline:  # honest catch-up first
        await asyncio.sleep(0.05)
    ask = encode(Digest("greedy", {}, reply=True))
    socks = [await _client(node.addr) for _ in range(clients)]
    samples: List[float] = []
    stop = asyncio.Event()
    monitor = loop.create_task(_lag_monitor(samples, stop))
    sent0, rounds0 = node.stats.bytes_sent, node.stats.rounds
    requested = 0
    fresh_at = None
    try:
        started = loop.time()
        interval = node.config.gossip_interval
        while loop.time() - started < seconds:
            for sock in socks:
                try:
                    sock.send(ask)
                    requested += len(ask)
                except (BlockingIOError, OSError):
                    pass
            if fresh_at is None and loop.time() - started > seconds / 2:
                fresh_at = loop.time()
                node.set("fresh", 1)
            await asyncio.sleep(interval)
        rounds = max(1, node.stats.rounds - rounds0)
        sent = node.stats.bytes_sent - sent0
        got_fresh = peer.get("fresh") == 1
    finally:
        stop.set()
        await monitor
        for sock in socks:
            sock.close()
        await node.shutdown()
        await peer.shutdown()
    samples.sort()
    return {
        "keys": keys,
        "clients": clients,
        "seconds": seconds,
        "rounds": rounds,
        "lag_worst_ms": round(samples[-1] * 1000, 1) if samples else None,
        "lag_p99_ms": round(samples[int(len(samples) * 0.99)] * 1000, 1) if samples else None,
        "sent_per_round": sent // rounds,
        "requested_per_round": requested // rounds,
        "reply_to_request": round(sent / max(1, requested), 1),
        "honest_peer_got_fresh_key": got_fresh,
    }


def main(argv: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    result = asyncio.run(run(args.keys, args.clients, args.seconds))
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    if args.json:
        print(json.dumps(result))
    else:
        for name, value in result.items():
            print(f"{name:28s} {value}")
    ok = (
        result["lag_worst_ms"] is not None
        and result["lag_worst_ms"] <= 100
        and result["honest_peer_got_fresh_key"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
