"""One fastgossip node of the fault suite, run inside a network namespace.

    python agent.py --id n1 --host 10.77.0.1 --port 7946 --seeds HOST:PORT,...
                    --control /tmp/dir/n1.sock [--interval 0.2]

The node gossips on the namespace's network; the test drives it over a unix
socket (namespaces share the file system, so the network faults never cut the
control channel). One JSON request per line, one JSON answer per line:

* ``{"op": "set", "key": k, "value": v}`` -> ``{"ok": true, "version": n, "origin": o}``
* ``{"op": "bulk", "prefix": p, "n": n, "size": s}`` -> n local writes of unique
  values of ``s`` bytes: ``{"ok": true, "origin": o, "acks": [[key, version, value], ...]}``
* ``{"op": "fingerprint"}`` -> ``{"count": n, "hash": h}`` over every user key's
  (key, version, origin, value)
* ``{"op": "dump"}`` -> ``{"entries": {key: [version, origin, value]}}``
* ``{"op": "stats"}`` -> the node's counters and each member's status
* ``{"op": "quit"}`` -> leaves nothing behind (the process exits)
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
from typing import Any, Dict

from fastgossip import GossipNode, NodeConfig


def _entries(node: GossipNode) -> Dict[str, Any]:
    out = {}
    for key in sorted(node.keys()):
        e = node.get_entry(key)
        if e is not None and e.value is not None:
            v = e.value
            out[key] = [e.version, e.origin, v.decode() if isinstance(v, bytes) else v]
    return out


async def serve(args: argparse.Namespace) -> None:
    seeds = [s for s in args.seeds.split(",") if s]
    node = await GossipNode.start(
        NodeConfig(
            args.id,
            bind=(args.host, args.port),
            seeds=seeds,
            gossip_interval=args.interval,
            connect_timeout=args.connect_timeout,
        )
    )
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while not reader.at_eof():
                line = await reader.readline()
                if not line:
                    break
                req = json.loads(line)
                op = req["op"]
                if op == "set":
                    version = node.set(req["key"], req["value"].encode())
                    ans: Dict[str, Any] = {"ok": True, "version": version, "origin": node.origin}
                elif op == "bulk":
                    acks = []
                    pad = "x" * max(0, req["size"] - 24)
                    for i in range(req["n"]):
                        key = f"{req['prefix']}{i}"
                        value = f"{args.id}:{req['prefix']}{i}:{pad}"
                        acks.append([key, node.set(key, value.encode()), value])
                        if i % 1000 == 999:
                            await asyncio.sleep(0)  # (the node keeps gossiping)
                    ans = {"ok": True, "origin": node.origin, "acks": acks}
                elif op == "fingerprint":
                    entries = _entries(node)
                    h = hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()
                    ans = {"count": len(entries), "hash": h}
                elif op == "dump":
                    ans = {"entries": _entries(node)}
                elif op == "stats":
                    ans = {
                        "stats": node.stats.as_dict(),
                        "members": {m.node_id: m.status for m in node.members()},
                        "origin": node.origin,
                    }
                elif op == "internals":  # (for debugging a scenario)
                    core = node._core
                    ans = {
                        "wm": core.state.watermarks(),
                        "digest": core.digest_watermarks(),
                        "sending": {
                            str(k): [c.node, c.sent, c.cap] for k, c in core._sending.items()
                        },
                        "refusals": node.refusals(),
                    }
                elif op == "quit":
                    writer.write(b'{"ok": true}\n')
                    await writer.drain()
                    done.set()
                    return
                else:
                    ans = {"ok": False, "error": f"unknown op {op!r}"}
                writer.write(json.dumps(ans).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, ValueError) as exc:
            print(f"{args.id}: control connection: {exc}", file=sys.stderr)
        finally:
            writer.close()

    if os.path.exists(args.control):
        os.unlink(args.control)
    server = await asyncio.start_unix_server(handle, args.control)
    print(f"{args.id}: ready on {args.host}:{args.port}", flush=True)
    await done.wait()
    server.close()
    await node.shutdown()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--id", required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--seeds", default="")
    p.add_argument("--control", required=True)
    p.add_argument("--interval", type=float, default=0.2)
    p.add_argument("--connect-timeout", type=float, default=2.0)
    asyncio.run(serve(p.parse_args()))


if __name__ == "__main__":
    main()
