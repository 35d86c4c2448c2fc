"""Tombstone GC under partitions, in the simulator: the property of
tests/test_tombstones.py (deletes stay deleted, live keys stay, every node
converges after a partition longer than the grace) over many random
schedules, on both implementations.

    python -m bench.sim_gc [--schedules 1000] [--out bench/results/sim_gc.json]

Schedule ``i`` is drawn from ``random.Random(i)``: 3-5 nodes, one or two of
them cut off for 2-5 graces (``tombstone_grace`` 2 s), up to 15 writes and
deletes before and 15 during the partition. A failing schedule is reported
with its replay line (the arguments of ``run_schedule``).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from typing import Any, Dict, List

from tests.test_tombstones import GRACE, run_schedule


def schedule(i: int) -> Dict[str, Any]:
    rnd = random.Random(i)

    def ops() -> List[tuple]:
        return [
            (rnd.uniform(0, 2.5), rnd.randrange(8), rnd.randrange(10), rnd.random() < 0.5)
            for _ in range(rnd.randrange(16))
        ]

    n = rnd.randint(3, 5)
    return {
        "seed": i,
        "n": n,
        "cut": list(range(rnd.randint(1, 2))),
        "away": rnd.uniform(2 * GRACE, 5 * GRACE),
        "before": ops(),
        "during": ops(),
    }


def run(schedules: int, implementation: str) -> Dict[str, Any]:
    t0 = time.perf_counter()
    failed: List[str] = []
    totals = dict.fromkeys(
        ["tombstones_collected", "resets_sent", "resets_received", "reset_drops"], 0
    )
    converge: List[float] = []
    for i in range(schedules):
        spec = schedule(i)
        sim, replay = run_schedule(implementation, **spec)
        problems = sim.check_converged()
        if problems:
            failed.append(f"{problems[0]}; {replay}")
        for name in totals:
            totals[name] += sim.total(name)
        converge.append(sim.now - (3.0 + spec["away"]))
    converge.sort()
    return {
        "implementation": implementation,
        "schedules": schedules,
        "passed": schedules - len(failed),
        "failed": failed[:5],
        "after_heal_s": {
            "median": converge[len(converge) // 2],
            "worst": converge[-1],
        },
        **totals,
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--schedules", type=int, default=1000)
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    rows = [run(args.schedules, impl) for impl in ("cython", "python")]
    text = json.dumps(rows, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0 if all(r["passed"] == r["schedules"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
