"""Command line: ``fastgossip demo``, ``fastgossip registry`` and ``fastgossip sim``
(also ``python -m fastgossip ...``)."""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import random
import sys
import time
from typing import Any, Dict, List, Optional, TextIO

from . import __version__
from ._impl import IMPLEMENTATION
from .errors import NodeError
from .fanout import Fanout
from .testing import ClusterNetwork
from .transport import FDS

DEMO_HELP = """\
Start a gossip cluster on this machine's loopback, write keys on random nodes,
and watch every node converge to the same state, round by round. Ends with a
summary of rounds, time, bytes, frames and connections. Ctrl-C stops cleanly."""


def _bar(done: int, total: int, width: int = 30) -> str:
    filled = width if total == 0 else int(width * done / total)
    return "#" * filled + "." * (width - filled)


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def _quiet_fd_errors(loop: asyncio.AbstractEventLoop, out: TextIO) -> None:
    """Say once that descriptors ran out, instead of asyncio's traceback per
    failed accept; anything else goes to the default handler."""
    told: List[bool] = []

    def handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
            if not told:
                told.append(True)
                print(
                    "out of file descriptors: connections wait and retry; raise "
                    "'ulimit -n' for a faster run",
                    file=out,
                )
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


async def run_demo(
    nodes: int = 20,
    fanout: Optional[Fanout] = None,
    interval: float = 0.1,
    keys: int = 20,
    timeout: float = 60.0,
    seed: Optional[int] = None,
    out: TextIO = sys.stdout,
    encrypt: bool = False,
) -> bool:
    """Run the demo; True when every node converged before ``timeout``."""
    rng = random.Random(seed)
    fanout_label = str(fanout) if fanout is not None else "auto (all up to 32 nodes, then sqrt)"
    print(
        f"fastgossip {__version__} ({IMPLEMENTATION}): {nodes} nodes on 127.0.0.1, "
        f"fanout {fanout_label}, a round every {interval * 1000:.0f} ms, {keys} keys"
        + (", encrypted with a new cluster key" if encrypt else ""),
        file=out,
    )
    security: dict = {}
    if encrypt:
        from .secure import Keyring, generate_key

        security["cluster_key"] = Keyring([generate_key()])  # one keyring, shared
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    _quiet_fd_errors(loop, out)
    deadline = loop.time() + timeout  # --timeout bounds the whole run, start-up included
    if FDS.limit - FDS.in_use < 3 * nodes:
        print(
            f"cannot run {nodes} nodes: each needs a listening socket and two descriptors "
            f"per connection ({3 * nodes} at least), and this process may use "
            f"{FDS.limit - FDS.in_use}. Raise the limit ('ulimit -n') or run fewer nodes.",
            file=out,
        )
        return False
    # every connection between two nodes of this process takes two descriptors:
    # size the nodes' connection caps from the budget (see FdBudget)
    per_node = max(1, min(256, (FDS.limit - nodes - 32) // (2 * nodes)))
    if per_node < 256:
        print(
            f"file descriptors: the limit ({FDS.limit}) allows {per_node} outbound "
            f"connection(s) per node; links are reused and recycled ('ulimit -n' raises it)",
            file=out,
        )
    try:
        cluster = await asyncio.wait_for(
            ClusterNetwork.spawn(
                nodes,
                fanout=fanout,
                gossip_interval=interval,
                max_connections=per_node,
                mesh=False,  # they join through node 0 and learn each other
                **security,
            ),
            timeout,
        )
    except asyncio.TimeoutError:
        print(f"NOT started: {nodes} nodes did not start within {timeout:.0f}s", file=out)
        return False
    except NodeError as exc:
        cause = exc.__cause__
        if isinstance(cause, OSError) and cause.errno in (errno.EMFILE, errno.ENFILE):
            print(
                f"cannot start {nodes} nodes: out of file descriptors ({cause.strerror}). "
                "Each node needs one to listen and one per connection: raise the limit "
                "('ulimit -n') or run fewer nodes.",
                file=out,
            )
            return False
        raise
    try:
        members_ok = await _demo_join(cluster, interval, deadline, out)
        # the winner of each key is its greatest (version, origin, value) write
        winners: dict = {}

        def write(key: str) -> None:
            i = rng.randrange(nodes)
            value = rng.randrange(1 << 32)
            version = cluster.set_on(i, key, value)
            candidate = (version, cluster.nodes[i].node_id, value)
            winners[key] = max(winners.get(key, candidate), candidate)

        for k in range(keys):
            write(f"key-{k:04d}")
        # a second, concurrent write to every fifth key on another random node
        for k in range(0, keys, 5):
            write(f"key-{k:04d}")
        expected = {key: value for key, (_, _, value) in winners.items()}
        total = nodes * len(expected)

        def have() -> int:
            return sum(
                1
                for node in cluster.nodes
                for key, value in expected.items()
                if node.get(key) == value
            )

        t0 = loop.time()
        rounds0 = max(node.stats.rounds for node in cluster.nodes)
        done = have()
        last_round = -1
        while done < total and loop.time() < deadline:
            await asyncio.sleep(interval / 4)
            rnd = max(node.stats.rounds for node in cluster.nodes) - rounds0
            done = have()
            if rnd != last_round:
                last_round = rnd
                print(
                    f"round {rnd:3d}  [{_bar(done, total)}] {done}/{total} node-keys current",
                    file=out,
                    flush=True,
                )
        elapsed = loop.time() - t0
        rounds = max(node.stats.rounds for node in cluster.nodes) - rounds0
        stats = cluster.total_stats()
        ok = done == total
        verdict = "converged" if ok else f"NOT converged after {timeout:.0f}s"
        print(f"{verdict}: {done}/{total} node-keys current", file=out)
        print(f"  nodes               {nodes}", file=out)
        print(f"  rounds              {rounds}", file=out)
        print(f"  time                {elapsed * 1000:.0f} ms", file=out)
        print(f"  bytes sent          {_human_bytes(stats['bytes_sent'])}", file=out)
        print(f"  frames sent         {stats['frames_sent']}", file=out)
        print(f"  connections opened  {stats['connections_opened']}", file=out)
        print(f"  bad frames          {stats['bad_frames']}", file=out)
        if ok and members_ok and nodes >= 3:
            members_ok = await _demo_failures(cluster, rng, deadline, out)
        print(f"  wall time in total  {time.perf_counter() - started:.2f} s", file=out)
        return ok and members_ok
    finally:
        await cluster.shutdown_all()


def _statuses(node: Any) -> Dict[str, str]:
    return {m.node_id: m.status for m in node.members() if m.node_id != node.node_id}


async def _wait_all(pred: Any, deadline: float, step: float) -> Optional[float]:
    """Poll ``pred()`` until true or the deadline; the time it took, or None."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while not pred():
        if loop.time() >= deadline:
            return None
        await asyncio.sleep(step)
    return loop.time() - t0


async def _demo_join(
    cluster: ClusterNetwork, interval: float, deadline: float, out: TextIO
) -> bool:
    """Nodes 1.. joined through node 0: wait until each knows every member."""
    n = len(cluster.nodes)
    took = await _wait_all(
        lambda: all(
            sum(1 for s in _statuses(node).values() if s == "alive") == n - 1
            for node in cluster.nodes
        ),
        deadline,
        interval / 4,
    )
    if took is None:
        print(f"members: NOT every node knows all {n} members", file=out)
        return False
    print(
        f"members: {n - 1} nodes joined through one seed; every node knows all {n} "
        f"members after {took * 1000:.0f} ms",
        file=out,
    )
    return True


async def _demo_failures(
    cluster: ClusterNetwork, rng: random.Random, deadline: float, out: TextIO
) -> bool:
    """Kill one node (no leave: it looks like a crash) and let another leave;
    time until every other node has its verdict."""
    victim, leaver = rng.sample(range(1, len(cluster.nodes)), 2)
    dead, gone = cluster.nodes[victim], cluster.nodes[leaver]
    others = [x for i, x in enumerate(cluster.nodes) if i not in (victim, leaver)]
    await dead.shutdown()
    took = await _wait_all(
        lambda: all(_statuses(x).get(dead.node_id) == "dead" for x in others), deadline, 0.01
    )
    if took is None:
        print(f"killed {dead.node_id}: NOT seen dead by every node", file=out)
        return False
    print(
        f"killed {dead.node_id}: every other node marked it dead after {took * 1000:.0f} ms",
        file=out,
    )
    t0 = time.perf_counter()
    await gone.leave()
    took = await _wait_all(
        lambda: all(_statuses(x).get(gone.node_id) == "left" for x in others), deadline, 0.01
    )
    if took is not None:
        took = time.perf_counter() - t0  # the leave itself included
    if took is None:
        print(f"{gone.node_id} left: NOT seen by every node", file=out)
        return False
    print(f"{gone.node_id} left: every other node saw it after {took * 1000:.0f} ms", file=out)
    return True


def _fanout_arg(text: str) -> Fanout:
    try:
        return Fanout.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(kind: type):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


SIM_HELP = """\
Simulate a cluster in virtual time with the same gossip core real nodes run
(fastgossip.sim): write a fresh key on one node and report the rounds until
every node holds it, the bytes spent per node per round, their distributions
over nodes, and the trace hash (the same seed gives the same hash)."""


def run_sim(args: argparse.Namespace, out: Optional[TextIO] = None) -> bool:
    """Run ``fastgossip sim`` with parsed arguments; True when it converged."""
    import json

    if out is None:
        out = sys.stdout
    from .sim import NetworkModel, measure_convergence

    network = NetworkModel(
        latency=args.latency / 1000.0,
        jitter=args.jitter / 1000.0,
        loss=args.loss,
        loss_mode=args.loss_mode,
        bandwidth=args.bandwidth,
    )
    report = measure_convergence(
        args.nodes,
        fanout=args.fanout,
        seed=args.seed,
        network=network,
        peers=args.peers,
        interval=args.interval,
        warmup_rounds=args.warmup,
        max_rounds=args.max_rounds,
        idle_rounds=args.idle_rounds,
        origins=args.origins,
        sync_rounds=args.sync_rounds,
        implementation=args.implementation,
    )
    if args.json:
        print(json.dumps(report.as_dict(), sort_keys=True), file=out)
        return report.converged
    r = report

    def dist(d: dict, fmt: str) -> str:
        return "  ".join(f"{k} {format(v, fmt)}" for k, v in d.items())

    phase = "synchronous rounds" if r.sync_rounds else "rounds at random phases"
    print(
        f"fastgossip sim ({r.implementation}): {r.nodes} nodes, {r.peers} peers each, "
        f"fanout {r.fanout}, loss {r.loss:g} ({r.loss_mode}), {phase}, seed {r.seed}",
        file=out,
    )
    if r.converged:
        print(f"converged: a fresh key reached every node in {r.rounds:.2f} rounds", file=out)
    else:
        print(f"NOT converged within {args.max_rounds} rounds", file=out)
    print(f"  rounds until a node holds it   {dist(r.node_rounds, '.2f')}", file=out)
    print(f"  bytes per node per round       {r.bytes_per_node_round:.0f} (mean)", file=out)
    print(f"    over nodes                   {dist(r.node_bytes_per_round, '.0f')}", file=out)
    if r.idle_bytes_per_node_round is not None:
        print(
            f"  idle bytes per node per round  {r.idle_bytes_per_node_round:.0f} "
            f"({r.origins} writer origins)",
            file=out,
        )
    print(f"  connections opened             {r.connections_opened}", file=out)
    print(f"  events / deliveries            {r.events} / {r.deliveries}", file=out)
    print(f"  trace hash                     {r.trace_hash}", file=out)
    print(
        f"  wall time                      {r.wall_s:.2f} s (set-up {r.setup_s:.2f} s, "
        f"CPU {r.cpu_s:.2f} s)",
        file=out,
    )
    print(f"  peak RSS                       {r.peak_rss_mib:.0f} MiB", file=out)
    if args.plot:
        _plot_sim(r, args.plot)
        print(f"  plot                           {args.plot}", file=out)
    return r.converged


def _plot_sim(r: Any, path: str) -> None:
    """The share of nodes holding the fresh key, round by round (a CDF)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib (pip install 'fastgossip[bench]')") from None
    times = r.node_round_times
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.step(times, [(i + 1) / len(times) for i in range(len(times))], where="post")
    ax.set_xlabel("rounds (gossip intervals) since the write")
    ax.set_ylabel("share of nodes holding the key")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(
        f"{r.nodes:,} nodes, fanout {r.fanout}, loss {r.loss:g}, seed {r.seed}", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _add_sim_parser(sub: Any) -> None:
    sim = sub.add_parser(
        "sim",
        help="simulate a cluster in virtual time and measure convergence",
        description=SIM_HELP,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sim.add_argument("--nodes", type=_positive(int), default=1000, help="number of nodes")
    sim.add_argument(
        "--fanout", type=_fanout_arg, default=Fanout.bounded(3), help="peers asked per round"
    )
    sim.add_argument(
        "--peers",
        type=_positive(int),
        default=None,
        help="peers each node knows (default: all up to 33 nodes, else 20)",
    )
    sim.add_argument("--loss", type=_fraction, default=0.0, help="message loss rate")
    sim.add_argument(
        "--loss-mode",
        choices=("retransmit", "reset"),
        default="retransmit",
        help="a lost message is retransmitted after an RTO, or resets its connection",
    )
    sim.add_argument("--latency", type=float, default=1.0, help="one-way latency, ms")
    sim.add_argument("--jitter", type=float, default=1.0, help="extra uniform latency, ms")
    sim.add_argument(
        "--bandwidth",
        type=_positive(float),
        default=None,
        help="bytes/s per connection and direction (default: unbounded)",
    )
    sim.add_argument(
        "--interval", type=_positive(float), default=0.2, help="seconds between rounds"
    )
    sim.add_argument("--warmup", type=int, default=2, help="rounds before the write")
    sim.add_argument("--max-rounds", type=_positive(int), default=100, help="give up after")
    sim.add_argument(
        "--idle-rounds",
        type=int,
        default=2,
        help="rounds to measure idle traffic after convergence (0: skip)",
    )
    sim.add_argument(
        "--origins",
        type=int,
        default=0,
        help="writer origins every table starts with (idle digests list each)",
    )
    sim.add_argument(
        "--sync-rounds",
        action="store_true",
        help="every node ticks at the same instants (one hop per round)",
    )
    sim.add_argument(
        "--implementation",
        choices=("cython", "python"),
        default=None,
        help="the compiled modules or their pure-Python twins (default: the process's)",
    )
    sim.add_argument("--seed", type=int, default=1, help="seed of the whole run")
    sim.add_argument("--json", action="store_true", help="print the report as JSON")
    sim.add_argument(
        "--plot", metavar="PNG", default=None, help="draw the spread of the key (needs matplotlib)"
    )


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastgossip",
        description="fastgossip: cluster-wide key/value state by epidemic gossip over TCP.",
    )
    parser.add_argument("--version", action="version", version=f"fastgossip {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="run a local cluster and watch it converge",
        description=DEMO_HELP,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_argument("--nodes", type=_positive(int), default=20, help="number of nodes")
    demo.add_argument(
        "--fanout",
        type=_fanout_arg,
        default=Fanout.bounded(3),
        help="peers each node gossips with per round: a number, 'sqrt' or 'all'",
    )
    demo.add_argument(
        "--interval", type=_positive(float), default=0.1, help="seconds between gossip rounds"
    )
    demo.add_argument("--keys", type=_positive(int), default=20, help="keys to write")
    demo.add_argument(
        "--timeout", type=_positive(float), default=60.0, help="give up after this many seconds"
    )
    demo.add_argument("--seed", type=int, default=None, help="seed for the demo's choices")
    demo.add_argument(
        "--encrypt", action="store_true", help="give the nodes a new cluster key (AES-256-GCM)"
    )
    registry = sub.add_parser(
        "registry",
        help="a service registry on ephemeral keys, with real processes",
        description=(
            "Start a watcher node, then service processes that publish svc/NAME as an "
            "ephemeral key; stop one (it leaves), kill one (seen dead), start another: "
            "the watcher prints each key as it appears and disappears."
        ),
    )
    registry.add_argument("--timeout", type=_positive(float), default=60.0)
    registry.add_argument("--service", default=None, help=argparse.SUPPRESS)
    registry.add_argument("--seed", default=None, help=argparse.SUPPRESS)
    sub.add_parser(
        "keygen",
        help="print a new cluster key (base64)",
        description="Print a new 32-byte cluster key, base64: give it to every node "
        "(NodeConfig(cluster_key=...), a keyring file or FASTGOSSIP_CLUSTER_KEY).",
    )
    keyring = sub.add_parser(
        "keyring",
        help="list, install, use or remove keys of a keyring file",
        description=KEYRING_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    keyring.add_argument("--file", required=True, help="the keyring file (created by install)")
    keyring.add_argument("action", choices=["list", "install", "use", "remove"])
    keyring.add_argument("key", nargs="?", help="a base64 key (install, use, remove)")
    _add_sim_parser(sub)
    from .agent import add_agent_arguments
    from .client import add_client_parsers

    agent = sub.add_parser(
        "agent",
        help="run a long-lived node with an HTTP API, metrics and a status page",
        description="Run a node until SIGTERM/SIGINT (it leaves the cluster, then exits 0; a "
        "second signal exits at once). The HTTP API (docs/HTTP.md) listens on loopback by "
        "default. Needs the 'agent' extra: pip install 'fastgossip[agent]'.",
    )
    add_agent_arguments(agent)
    add_client_parsers(sub)
    return parser


KEYRING_HELP = """\
Edit a keyring file: one base64 key per line, the primary first. A node started
with NodeConfig(cluster_key_file=PATH) re-reads it within a second of a change.

Rotate a cluster's key without downtime, on every node's file in turn:
  fastgossip keyring --file F install NEW   # accepted everywhere, not yet used
  fastgossip keyring --file F use NEW       # new connections dial with it
  fastgossip keyring --file F remove OLD    # connections opened with OLD close

Finish each step on every node, and wait two seconds (a node re-reads its
file within one), before the next.
"""


def run_keyring(path: str, action: str, key: Optional[str]) -> int:
    """``fastgossip keyring``: 0 done, 1 refused (with the reason on stderr)."""
    from .secure import Keyring, encode_key

    try:
        if action == "list":
            ring = Keyring.load(path)
            for i, k in enumerate(ring.list()):
                print(f"{k}  (primary)" if i == 0 else k)
            return 0
        if key is None:
            print(f"fastgossip keyring {action}: give the key", file=sys.stderr)
            return 2
        if action == "install" and not os.path.exists(path):
            ring = Keyring([key])
        else:
            ring = Keyring.load(path)
            getattr(ring, action)(key)
        ring.save(path)
    except (OSError, ValueError, TypeError) as exc:
        print(f"fastgossip keyring {action}: {exc}", file=sys.stderr)
        return 1
    print(f"{action}: done; primary {encode_key(ring.primary)[:8]}..., {len(ring)} keys")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "sim":
        return 0 if run_sim(args) else 1
    if args.command == "registry":
        from .registry_demo import main as registry_main

        return registry_main(args.service, args.seed, args.timeout)
    if args.command == "keygen":
        from .secure import encode_key, generate_key

        print(encode_key(generate_key()))
        return 0
    if args.command == "keyring":
        return run_keyring(args.file, args.action, args.key)
    if args.command == "agent":
        from .agent import main_agent

        return main_agent(args)
    from .client import CLIENT_COMMANDS, run_client

    if args.command in CLIENT_COMMANDS:
        return run_client(args)
    if args.command != "demo":
        parser.print_help()
        return 2
    try:
        ok = asyncio.run(
            run_demo(
                args.nodes,
                args.fanout,
                args.interval,
                args.keys,
                args.timeout,
                args.seed,
                encrypt=args.encrypt,
            )
        )
    except KeyboardInterrupt:
        print("\ninterrupted; cluster shut down", file=sys.stderr)
        return 130
    return 0 if ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
