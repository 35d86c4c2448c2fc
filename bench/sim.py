"""Simulator figures: convergence of a fresh key, speed, memory and idle traffic.

    python -m bench.sim [--quick] [--big] [--impl cython|python]

Each row runs ``fastgossip sim --json`` in its own process (so peak RSS is that
run's), then the rows are printed as one table:

* fanout 3, 20 peers per node, 1 ms + U(0, 1 ms) latency; 10,000 nodes with no
  loss and with 5 % loss (retransmitted after an RTO), with rounds at random
  phases (as the transport runs them) and synchronous (one hop per round);
* idle traffic: bytes per node per round when nothing changes and every table
  holds keys of 10,000 writer origins, once every link is open and has had its
  first (full) digest: after that a digest carries only what changed;
* ``--big``: 100,000 nodes as well (minutes, ~2 GB).

Rounds are virtual time from the write until the last node holds the key,
in gossip intervals. Wall and CPU seconds include setting up the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(args: List[str]) -> Dict[str, Any]:
    env = dict(os.environ)
    # the fastgossip this process imports (installed, or src/ on PYTHONPATH)
    import fastgossip

    here = os.path.dirname(os.path.dirname(os.path.abspath(fastgossip.__file__)))
    env["PYTHONPATH"] = here + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "fastgossip", "sim", "--json", *args]
    print("running:", " ".join(cmd[2:]), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode not in (0, 1):
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 nodes instead of 10,000")
    parser.add_argument("--big", action="store_true", help="add 100,000-node rows")
    parser.add_argument("--impl", choices=("cython", "python"), default="cython")
    opts = parser.parse_args(argv)
    n = 1000 if opts.quick else 10_000
    sizes = [n] + ([100_000] if opts.big else [])
    base = ["--implementation", opts.impl, "--seed", "1", "--idle-rounds", "0"]
    rows = []
    for size in sizes:
        for loss in ("0", "0.05"):
            for sync in ([], ["--sync-rounds"]):
                label = f"{size} nodes, loss {loss}" + (", sync" if sync else "")
                rows.append((label, run(base + ["--nodes", str(size), "--loss", loss] + sync)))
    idle = run(
        ["--implementation", opts.impl, "--seed", "1"]
        + ["--nodes", "30", "--peers", "10", "--origins", "10000"]
        + ["--idle-rounds", "10", "--warmup", "60"]
    )
    header = (
        f"{'run':32} {'rounds':>6} {'node p50/p90':>13} {'B/node/rnd':>10} "
        f"{'wall s':>7} {'cpu s':>6} {'RSS MiB':>7}  trace"
    )
    print(header)
    print("-" * len(header))
    for label, r in rows:
        rounds = f"{r['rounds']:.2f}" if r["converged"] else "n/c"
        nr = r["node_rounds"]
        print(
            f"{label:32} {rounds:>6} {nr['p50']:>6.2f}/{nr['p90']:<6.2f} "
            f"{r['bytes_per_node_round']:>10.0f} {r['wall_s']:>7.1f} {r['cpu_s']:>6.1f} "
            f"{r['peak_rss_mib']:>7.0f}  {r['trace_hash'][:12]}"
        )
    print(
        f"\nidle traffic, {idle['origins']} writer origins, {idle['nodes']} nodes, fanout "
        f"{idle['fanout']}: {idle['idle_bytes_per_node_round']:,.0f} bytes per node per round "
        "(target <= 4,096)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
