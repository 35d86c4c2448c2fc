"""Membership in the deterministic simulator: joins, idle traffic and failure
detection at hundreds to thousands of members.

    python bench/sim_members.py [--quick] [--out bench/results/sim_members.json]

Every row runs in its own process (``--row SPEC``, as ``bench/sim.py`` runs
each of its rows), so its peak RSS (``fastgossip.sim.peak_rss_mib``) is that
run's. A row's process is given an address-space limit a little below the
memory the machine had free when the benchmark started (``--mem-cap-gib``):
a row that does not fit ends with a MemoryError and is reported, instead of
waking the OOM killer. A size whose peak RSS, extrapolated from the sizes
measured before it, would not fit is skipped with that prediction.

Each cluster has every node joining through one seed (node 0) at time 0, with
``CoreLimits()`` (fanout 3, gossip every 0.2 s), the default membership
settings and a 1 ms + U(0, 1 ms) network. A cluster is *formed* when every
node lists every other alive, and *stable* once it has stayed so with no
suspect or dead verdict for two heartbeat periods; the verdicts given while it
formed are reported (``formation``). Then, on one cluster per size:

* **idle**: no writes; the bytes every node sends per round, over a window of
  at least 50 rounds and two heartbeat periods (the period stretches with N:
  ``N * interval / heartbeat_budget``), after a settle of one period; per node
  and per member (per node / N), with the per-round spread (heartbeats of a
  cluster that formed at once stay in phase) and a linear fit in N
  extrapolated to 10,000 members;
* **join**: one more node, down since time 0, comes up empty once the cluster
  holds ``--keys`` user keys: rounds until it lists every member alive and
  holds the whole user table; then until every member lists it alive; and the
  verdicts the joiner gives in the two heartbeat periods after it joined;
* **silent**: a partition isolating node 7 (dials time out, nothing refused):
  per observer, the delay to its dead verdict; then the partition heals and
  the time until every view is whole again.

And one more cluster under ``NetworkModel(loss=...)`` (**loss**): as much
virtual time as fits in the wall budget (``--loss-budget-min``; at most
``--loss-seconds``), with three nodes crashed at spread times: dead verdicts
about nodes that never crashed (target 0), and per observer the delay from a
crash to its dead verdict (target median <= 2 s, worst <= 4 s).

Rounds are gossip intervals of virtual time. Every row prints its replay
command (``--row`` with its spec): the same spec gives the same run.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

if __package__ in (None, ""):  # run as ``python bench/sim_members.py``
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._meta import RESULTS, ROOT, format_targets, machine, write_json  # noqa: E402
from bench.members import Snapshot  # noqa: E402
from fastgossip.core import CoreLimits  # noqa: E402
from fastgossip.sim import (  # noqa: E402
    NetworkModel,
    Partition,
    Simulation,
    peak_rss_mib,
    percentiles,
)

DEFAULT_OUT = os.path.join(RESULTS, "sim_members.json")
INTERVAL = CoreLimits().gossip_interval  # 0.2 s
SEED_NODE = 0
SILENT_VICTIM = 7

# targets from the issue
JOIN_TARGETS = ((100, 3.0), (10_000, 12.0))  # (members, rounds)
IDLE_PER_MEMBER_AT_100 = 64.0  # bytes per member per round
IDLE_PER_NODE_AT_10K = 4096.0  # bytes per node per round
EXTRAPOLATE_TO = 10_000
CRASH_MEDIAN_S, CRASH_MAX_S = 2.0, 4.0
SILENT_MEDIAN_S = 3.0  # bench/members.py's target for a silent failure

# bounds (virtual seconds unless said); every loop below is bounded by one
FORM_LIMIT = 120.0
CONVERGE_LIMIT = 60.0
JOIN_LIMIT_ROUNDS = 100
SILENT_LIMIT = 120.0
RECOVER_LIMIT = 120.0
PROGRESS_EVERY = 15.0  # wall seconds between progress lines
EXAMPLES = 5

Event = Tuple[float, int, str, str]  # (time, observer index, kind, member node id)


# -- helpers ---------------------------------------------------------------------
def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def node_id(i: int) -> str:
    return f"n{i}"


def index_of(member: str) -> int:
    return int(member[1:])


def rss_now_mib() -> float:
    """This process's resident set now (peak_rss_mib is the peak so far)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def mem_available_gib() -> Optional[float]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / (1 << 20)
    except OSError:
        pass
    return None


def stats_of(values: Sequence[float], digits: int = 3) -> Dict[str, Any]:
    """n, median, p90, max (None when empty), rounded."""
    if not values:
        return {"n": 0, "median": None, "p90": None, "max": None}
    p = percentiles(values, (90, 100))
    return {
        "n": len(values),
        "median": round(statistics.median(values), digits),
        "p90": round(p["p90"], digits),
        "max": round(p["max"], digits),
    }


def make_sim(n: int, seed: int, loss: float = 0.0) -> Simulation:
    """``n`` nodes joining through node 0 at time 0, default limits and settings."""
    return Simulation(
        n,
        seed=seed,
        membership=True,
        seeds=1,
        limits=CoreLimits(),
        network=NetworkModel(loss=loss),
        trace=False,
    )


def period_of(sim: Simulation, i: int = SEED_NODE) -> float:
    """Node ``i``'s heartbeat period now (stretched with the members it knows)."""
    m = sim.core(i).membership
    assert m is not None
    return float(m.heartbeat_period())


def sees_all_alive(sim: Simulation, i: int, ids: Sequence[str]) -> bool:
    view = sim.members(i)
    me = node_id(i)
    return all(view.get(m) == "alive" for m in ids if m != me)


def count_whole_views(sim: Simulation, nodes: Sequence[int]) -> int:
    ids = [node_id(i) for i in nodes]
    return sum(1 for i in nodes if sees_all_alive(sim, i, ids))


def all_whole(sim: Simulation, nodes: Sequence[int]) -> bool:
    ids = [node_id(i) for i in nodes]
    return all(sees_all_alive(sim, i, ids) for i in nodes)


def kinds_count(events: Sequence[Event]) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for e in events:
        out[e[2]] = out.get(e[2], 0) + 1
    return out


def examples(events: Sequence[Event], t0: float = 0.0) -> List[Dict[str, Any]]:
    return [
        {"at_s": round(t - t0, 3), "observer": node_id(o), "kind": k, "member": m}
        for t, o, k, m in events[:EXAMPLES]
    ]


class Progress:
    """A progress line on stderr at most every PROGRESS_EVERY wall seconds."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.t0 = time.perf_counter()
        self.last = self.t0

    def wall(self) -> float:
        return time.perf_counter() - self.t0

    def __call__(
        self, sim: Simulation, what: Union[str, Callable[[], str]], force: bool = False
    ) -> None:
        now = time.perf_counter()
        if force or now - self.last >= PROGRESS_EVERY:
            self.last = now
            say(
                f"  [{self.label}] virtual {sim.now:7.2f} s, wall {now - self.t0:6.0f} s, "
                f"RSS {rss_now_mib():6.0f} MiB (peak {peak_rss_mib():.0f}): "
                + (what if isinstance(what, str) else what())
            )


# -- forming a cluster -------------------------------------------------------------
def form(
    sim: Simulation,
    nodes: Sequence[int],
    progress: Progress,
    limit: float = FORM_LIMIT,
    quiet: Tuple[str, ...] = ("suspect", "dead"),
    wall_limit: Optional[float] = None,
) -> Dict[str, Any]:
    """Run until every node of ``nodes`` lists every other alive (formed), then
    until that held with no verdict of the ``quiet`` kinds for two heartbeat
    periods (stable), for at most ``limit`` virtual and ``wall_limit`` wall
    seconds. Returns the times and the verdicts given meanwhile."""
    step = 2.5 * INTERVAL
    t_start = sim.now
    formed_at: Optional[float] = None
    last_bad = t_start
    seen = len(sim.member_events)
    stable_at: Optional[float] = None
    wall0 = time.perf_counter()
    while sim.now < t_start + limit:
        if wall_limit is not None and time.perf_counter() - wall0 > wall_limit:
            break
        sim.run(sim.now + step)
        for e in sim.member_events[seen:]:
            if e[2] in quiet:
                last_bad = e[0]
        seen = len(sim.member_events)
        whole = all_whole(sim, nodes)
        if whole and formed_at is None:
            formed_at = sim.now
        progress(
            sim,
            lambda: (
                f"forming: {count_whole_views(sim, nodes)}/{len(nodes)} nodes list all "
                f"alive; heartbeat period {period_of(sim):.1f} s; "
                f"{kinds_count(sim.member_events)}"
            ),
        )
        if whole and sim.now - last_bad >= 2 * period_of(sim):
            stable_at = sim.now
            break
    events = sim.member_events
    bad = [e for e in events if e[2] in ("suspect", "dead")]
    return {
        "formed_s": None if formed_at is None else round(formed_at - t_start, 3),
        "stable_s": None if stable_at is None else round(stable_at - t_start, 3),
        "limit_s": limit,
        "stable_means": f"all alive, no {'/'.join(quiet)} verdict for two heartbeat periods",
        "heartbeat_period_s": round(period_of(sim), 3),
        "events": kinds_count(events),
        "suspect_pairs": len({(o, m) for _, o, k, m in bad if k == "suspect"}),
        "dead_pairs": len({(o, m) for _, o, k, m in bad if k == "dead"}),
        "pairs": len(nodes) * (len(nodes) - 1),
        "first_dead_s": next((round(e[0] - t_start, 3) for e in bad if e[2] == "dead"), None),
        "dead_examples": examples([e for e in bad if e[2] == "dead"], t_start),
        "wall_s": round(progress.wall(), 1),
    }


# -- idle traffic ----------------------------------------------------------------------
def measure_idle(
    sim: Simulation,
    nodes: Sequence[int],
    progress: Progress,
    min_rounds: int = 50,
    periods: float = 2.0,
) -> Dict[str, Any]:
    """No writes: bytes sent per node per round over a window of at least
    ``min_rounds`` rounds and ``periods`` heartbeat periods, after one period."""
    n = len(nodes)
    period = period_of(sim)
    settle = max(10, math.ceil(period / INTERVAL))
    window = whole_periods(period, min_rounds, periods)
    sim.run(sim.now + settle * INTERVAL)
    t0 = sim.now
    ev0 = len(sim.member_events)
    sent0 = [sim.stats(i).bytes_sent for i in nodes]
    frames0 = sum(sim.stats(i).frames_sent for i in nodes)
    per_round: List[float] = []
    last = sum(sent0)
    for r in range(window):
        sim.run(t0 + (r + 1) * INTERVAL)
        total = sum(sim.stats(i).bytes_sent for i in nodes)
        per_round.append((total - last) / n)
        last = total
        progress(sim, f"idle window: round {r + 1}/{window}")
    sent = [sim.stats(i).bytes_sent - b for i, b in zip(nodes, sent0)]
    frames = sum(sim.stats(i).frames_sent for i in nodes) - frames0
    per_node_round = sum(sent) / n / window
    events = sim.member_events[ev0:]
    conns = [len(sim.core(i)._conns) for i in nodes]
    return {
        "nodes": n,
        "heartbeat_period_s": round(period, 3),
        "settle_rounds": settle,
        "window_rounds": window,
        "bytes_per_node_round": round(per_node_round, 1),
        "bytes_per_member_round": round(per_node_round / n, 2),
        "frames_per_node_round": round(frames / n / window, 2),
        "per_round_bytes_per_node": {
            k: round(v, 1) for k, v in percentiles(per_round, (1, 50, 99, 100)).items()
        },
        "burst_ratio": round(max(per_round) / per_node_round, 2) if per_node_round else None,
        "node_bytes_per_round": {
            k: round(v / window, 1) for k, v in percentiles(sent, (1, 50, 99, 100)).items()
        },
        "seed_node_bytes_per_round": round(sent[nodes.index(SEED_NODE)] / window, 1)
        if SEED_NODE in nodes
        else None,
        "connections_per_node": stats_of(conns, 1),
        "member_events_in_window": kinds_count(events),
        "window_start_s": round(t0, 3),
    }


def whole_periods(period: float, min_rounds: int, periods: float) -> int:
    """The fewest rounds, at least ``min_rounds`` and ``periods`` heartbeat
    periods, that make a whole number of periods (the heartbeats of a cluster
    that formed at once stay in phase: a window cutting a period in two would
    count one burst too many or too few)."""
    per = period / INTERVAL  # rounds per period (2.5 at 0.5 s)
    k = max(1, math.ceil(periods - 1e-9), math.ceil(min_rounds / per - 1e-9))
    for kk in range(k, k + 20):
        if abs(kk * per - round(kk * per)) < 1e-6:
            return max(min_rounds, round(kk * per))
    return max(min_rounds, math.ceil(k * per))


def heartbeat_period_for(n: int) -> float:
    """The period ``Membership`` picks at ``n`` members with the simulator's
    settings: 0.5 s doubled until n * interval / 25 is reached (read from the
    measured rows when they disagree)."""
    want = n * INTERVAL / 25.0
    period = max(0.5, 2.5 * INTERVAL)
    while period < want:
        period *= 2
    return period


def idle_fit(rows: Sequence[Dict[str, Any]], to: int = EXTRAPOLATE_TO) -> Optional[Dict[str, Any]]:
    """Idle traffic at ``to`` members from the measured sizes (None with fewer
    than two). Heartbeats are the idle traffic: a node gets each member's once
    per period, N * interval / period records per round, about 25 or fewer
    (the period doubles in steps), so the per-node figure is a sawtooth in N,
    not a line. The model: bytes per node per round = records per round *
    bytes per record, with bytes per record (the record, and the watermark it
    moves in digests, plus what does not shrink with N: full digests on new
    links) fitted as a + b * N by least squares and taken at ``to``."""
    pts = []
    for r in rows:
        per_round = r["nodes"] * INTERVAL / r["heartbeat_period_s"]
        pts.append((r["nodes"], r["bytes_per_node_round"] / per_round, per_round))
    if len({x for x, _, _ in pts}) < 2:
        return None
    mx = statistics.fmean(x for x, _, _ in pts)
    my = statistics.fmean(y for _, y, _ in pts)
    b = sum((x - mx) * (y - my) for x, y, _ in pts) / sum((x - mx) ** 2 for x, _, _ in pts)
    a = my - b * mx
    period = heartbeat_period_for(to)
    records = to * INTERVAL / period
    per_record = a + b * to
    return {
        "model": "records per round (N * interval / period) * bytes per record (a + b * N)",
        "measured": [
            {"nodes": x, "records_per_round": round(rec, 2), "bytes_per_record": round(y, 1)}
            for x, y, rec in pts
        ],
        "a": round(a, 2),
        "b": round(b, 5),
        "at": to,
        "heartbeat_period_s": period,
        "records_per_round": round(records, 2),
        "bytes_per_record": round(per_record, 1),
        "bytes_per_node_round": round(records * per_record, 0),
        "bytes_per_member_round": round(records * per_record / to, 3),
        "worst_case_bytes_per_node_round": round(25.0 * per_record, 0),
    }


# -- a join -------------------------------------------------------------------------------
def fill_table(
    sim: Simulation, nodes: Sequence[int], keys: int, progress: Progress
) -> Dict[str, Any]:
    """``keys`` user keys written by the nodes in turn; runs until every node
    holds them all."""
    t0 = sim.now
    for k in range(keys):
        sim.write(nodes[k % len(nodes)], f"k{k}", k, at=t0)
    done_at: Optional[float] = None
    while sim.now < t0 + CONVERGE_LIMIT:
        sim.run(sim.now + 5 * INTERVAL)
        short = sum(1 for i in nodes if len(sim.table(i)) < keys)
        progress(sim, f"table: {len(nodes) - short}/{len(nodes)} nodes hold all keys")
        if not short:
            done_at = sim.now
            break
    return {"keys": keys, "converged_s": None if done_at is None else round(done_at - t0, 2)}


def measure_join(
    sim: Simulation,
    nodes: Sequence[int],
    joiner: int,
    keys: int,
    progress: Progress,
    watch_periods: float = 2.0,
) -> Dict[str, Any]:
    """Restart ``joiner`` empty: rounds until it lists every member of ``nodes``
    alive and holds the user table; until every member lists it alive; and the
    suspect/dead verdicts it gives in ``watch_periods`` heartbeat periods after."""
    ids = [node_id(i) for i in nodes]
    reference = sim.table(nodes[0])
    assert len(reference) == keys, "fill_table first"
    t0 = sim.now
    ev0 = len(sim.member_events)
    frames0 = sim.stats(joiner).frames_received
    sim.at(t0, sim._restart, joiner, False)
    step = INTERVAL / 10
    t_members: Optional[float] = None
    t_table: Optional[float] = None
    joined_frames = None
    for s in range(1, JOIN_LIMIT_ROUNDS * 10 + 1):
        sim.run(t0 + s * step)
        if t_members is None and sees_all_alive(sim, joiner, ids):
            t_members = sim.now
        if t_table is None and sim.table(joiner) == reference:
            t_table = sim.now
        if t_members is not None and t_table is not None:
            joined_frames = sim.stats(joiner).frames_received - frames0
            break
    done = None if t_members is None or t_table is None else max(t_members, t_table)
    # every member lists the joiner (its first joined or alive event about
    # this life); the joiner's own verdicts meanwhile
    me = node_id(joiner)
    period = period_of(sim)
    watch_until = (done if done is not None else sim.now) + watch_periods * period
    seen_by: Dict[int, float] = {}
    scanned = ev0
    while sim.now < max(watch_until, t0 + 5) or len(seen_by) < len(nodes):
        if sim.now >= t0 + JOIN_LIMIT_ROUNDS * INTERVAL + watch_periods * period:
            break
        for t, o, k, m in sim.member_events[scanned:]:
            if m == me and k in ("joined", "alive") and o != joiner:
                seen_by.setdefault(o, t)
        scanned = len(sim.member_events)
        if sim.now >= max(watch_until, t0 + 5) and len(seen_by) >= len(nodes):
            break
        sim.run(sim.now + 2.5 * INTERVAL)
        progress(sim, lambda: f"join: {len(seen_by)}/{len(nodes)} members list the joiner")
    events = sim.member_events[ev0:]
    by_joiner = [e for e in events if e[1] == joiner and e[2] in ("suspect", "dead")]
    about_others = [
        e for e in events if e[1] != joiner and e[3] != me and e[2] in ("suspect", "dead")
    ]

    def rounds(t: Optional[float]) -> Optional[float]:
        return None if t is None else round((t - t0) / INTERVAL, 2)

    seen_rounds = [(t - t0) / INTERVAL for t in seen_by.values()]
    return {
        "members": len(nodes),
        "keys": keys,
        "rounds": rounds(done),
        "rounds_whole_rounds": None if done is None else math.ceil((done - t0) / INTERVAL - 1e-9),
        "rounds_members": rounds(t_members),
        "rounds_table": rounds(t_table),
        "joiner_frames_received": joined_frames,
        "members_listing_joiner": len(seen_by),
        "rounds_until_listed": stats_of(seen_rounds, 2),
        "watch_s": round(sim.now - t0, 2),
        "joiner_verdicts": kinds_count(by_joiner),
        "joiner_verdict_examples": examples(by_joiner, t0),
        "other_verdicts": kinds_count(about_others),
        "resolution_rounds": 0.1,
    }


# -- a silent failure -----------------------------------------------------------------
def measure_silent(
    sim: Simulation, nodes: Sequence[int], victim: int, progress: Progress
) -> Dict[str, Any]:
    """A partition isolates ``victim``: per observer, the delay to its dead
    verdict; then the partition ends and every view is whole again."""
    observers = [i for i in nodes if i != victim]
    me = node_id(victim)
    t0 = sim.now
    ev0 = len(sim.member_events)
    part = Partition(groups=((victim,),), start=t0, end=t0 + SILENT_LIMIT, name="silent")
    sim.partition(part)
    dead: Dict[int, float] = {}
    suspect: Dict[int, float] = {}
    scanned = ev0
    while sim.now < t0 + SILENT_LIMIT and len(dead) < len(observers):
        sim.run(sim.now + 2.5 * INTERVAL)
        for t, o, k, m in sim.member_events[scanned:]:
            if m == me and o != victim:
                if k == "dead":
                    dead.setdefault(o, t)
                elif k == "suspect":
                    suspect.setdefault(o, t)
        scanned = len(sim.member_events)
        progress(sim, lambda: f"silent: {len(dead)}/{len(observers)} observers say dead")
    healed = sim.now
    sim.at(healed, sim._partition_end, part)  # heal as soon as every observer said dead
    recovered: Optional[float] = None
    while sim.now < healed + RECOVER_LIMIT:
        sim.run(sim.now + 2.5 * INTERVAL)
        progress(sim, lambda: "silent: healed, waiting for whole views")
        if all_whole(sim, nodes):
            recovered = sim.now
            break
    events = sim.member_events[ev0:]
    collateral = [
        e for e in events if e[1] != victim and e[3] != me and e[2] in ("suspect", "dead")
    ]
    delays = [t - t0 for t in dead.values()]
    return {
        "members": len(nodes),
        "victim": me,
        "heartbeat_period_s": round(period_of(sim), 3),
        "observers": len(observers),
        "missed": len(observers) - len(dead),
        "dead_s": stats_of(delays),
        "first_suspect_s": stats_of([t - t0 for t in suspect.values()]),
        "healed_after_s": round(healed - t0, 2),
        "recovered_s": None if recovered is None else round(recovered - healed, 2),
        "victim_verdicts": kinds_count([e for e in events if e[1] == victim]),
        "collateral_verdicts": kinds_count(collateral),
        "collateral_examples": examples(collateral, t0),
    }


# -- rows ---------------------------------------------------------------------------------
def cluster_row(
    n: int,
    phases: Sequence[str],
    seed: int = 1,
    keys: int = 1000,
    progress: Optional[Progress] = None,
) -> Dict[str, Any]:
    """One cluster of ``n`` members (and a joiner when ``"join"`` is a phase):
    formation, then the phases in the order idle, join, silent."""
    prog = progress or Progress(f"cluster {n}")
    wall0, cpu0 = time.perf_counter(), time.process_time()
    join = "join" in phases
    sim = make_sim(n + 1 if join else n, seed)
    nodes = list(range(n))
    if join:
        sim.at(0.0, sim._crash, n)  # the joiner: down from the start, up empty later
    out: Dict[str, Any] = {"nodes": n, "phases": list(phases), "seed": seed}
    out["formation"] = form(sim, nodes, prog)
    prog(sim, lambda: f"formation: {out['formation']}", force=True)
    if out["formation"]["stable_s"] is None:
        out["error"] = f"not stable within {FORM_LIMIT:.0f} virtual s"
    else:
        if "idle" in phases:
            out["idle"] = measure_idle(sim, nodes, prog)
            prog(sim, lambda: f"idle: {out['idle']['bytes_per_node_round']} B/node/round", True)
        if join:
            out["table"] = fill_table(sim, nodes, keys, prog)
            if out["table"]["converged_s"] is not None:
                out["join"] = measure_join(sim, nodes, n, keys, prog)
                prog(sim, lambda: f"join: {out['join']['rounds']} rounds", force=True)
                nodes = nodes + [n]
        if "silent" in phases:
            victim = SILENT_VICTIM if n > SILENT_VICTIM + 1 else n - 1
            out["silent"] = measure_silent(sim, nodes, victim, prog)
            prog(sim, lambda: f"silent: {out['silent']['dead_s']}", force=True)
    out["virtual_s"] = round(sim.now, 2)
    out["events"] = sim.events
    out["wall_s"] = round(time.perf_counter() - wall0, 1)
    out["cpu_s"] = round(time.process_time() - cpu0, 1)
    out["peak_rss_mib"] = round(peak_rss_mib(), 0)
    out["implementation"] = sim.implementation
    return out


def loss_row(
    n: int,
    loss: float = 0.05,
    seed: int = 1,
    crashes: int = 3,
    virtual_s: float = 600.0,
    budget_s: Optional[float] = None,
    progress: Optional[Progress] = None,
) -> Dict[str, Any]:
    """``n`` members under ``loss``: after the cluster is stable, up to
    ``virtual_s`` virtual seconds (fewer when the wall ``budget_s``, counted
    from the start of the row, runs out: the window is planned from the speed
    of the first virtual seconds) with ``crashes`` nodes crashed at spread times."""
    prog = progress or Progress(f"loss {n}")
    wall0, cpu0 = time.perf_counter(), time.process_time()
    sim = make_sim(n, seed, loss)
    nodes = list(range(n))
    out: Dict[str, Any] = {"nodes": n, "loss": loss, "seed": seed, "virtual_s_asked": virtual_s}
    # under loss a suspicion now and then is expected: stable means no dead verdict
    out["formation"] = form(
        sim, nodes, prog, quiet=("dead",), wall_limit=None if budget_s is None else budget_s / 2
    )
    prog(sim, lambda: f"formation: {out['formation']}", force=True)
    if out["formation"]["stable_s"] is None:
        out["error"] = "not stable within the formation limits"
        out["wall_s"] = round(time.perf_counter() - wall0, 1)
        out["peak_rss_mib"] = round(peak_rss_mib(), 0)
        return out
    t0 = sim.now
    ev0 = len(sim.member_events)
    # the speed of this cluster, to plan a window that fits the budget
    probe = min(5.0, virtual_s / 10)
    w = time.perf_counter()
    sim.run(t0 + probe)
    rate = (time.perf_counter() - w) / probe  # wall s per virtual s
    window = virtual_s
    if budget_s is not None:
        left = budget_s - (time.perf_counter() - wall0)
        window = max(probe + 20.0, min(virtual_s, probe + 0.9 * left / rate))
    rng = random.Random(seed * 7919 + n)
    victims = rng.sample(range(1, n), min(crashes, n - 2))
    spread = [0.15, 0.4, 0.65, 0.85]
    crash_at: Dict[int, float] = {}
    for k, v in enumerate(victims):
        at = t0 + max(probe, min(window * spread[k % len(spread)], window - 15.0))
        crash_at[v] = round(at, 3)
        sim.at(at, sim._crash, v)
    out["planned"] = {
        "window_s": round(window, 1),
        "wall_per_virtual_s": round(rate, 2),
        "crashes": {node_id(v): round(at - t0, 3) for v, at in crash_at.items()},
    }
    say(f"  [{prog.label}] {rate:.1f} wall s per virtual s: planned {out['planned']}")
    stopped = "window done"
    while sim.now < t0 + window:
        if budget_s is not None and time.perf_counter() - wall0 > budget_s:
            stopped = "wall budget"
            break
        sim.run(min(t0 + window, sim.now + 1.0))
        prog(
            sim,
            lambda: (
                f"loss window: {sim.now - t0:.0f}/{window:.0f} s; "
                f"{kinds_count(sim.member_events[ev0:])}"
            ),
        )
    end = sim.now
    events = sim.member_events[ev0:]
    crashed = {node_id(v): at for v, at in crash_at.items() if at <= end}
    false = [
        e
        for e in events
        if e[2] in ("suspect", "dead") and (e[3] not in crashed or e[0] < crashed[e[3]])
    ]
    false_dead = [e for e in false if e[2] == "dead"]
    false_suspect = [e for e in false if e[2] == "suspect"]
    down = {index_of(m) for m in crashed}
    observers = [i for i in nodes if i not in down and sim.is_up(i)]
    per_victim: Dict[str, Any] = {}
    pooled: List[float] = []
    for m, at in crashed.items():
        first: Dict[int, float] = {}
        first_suspect: Dict[int, float] = {}
        for t, o, kind, mm in events:
            if mm == m and t >= at:
                if kind == "dead":
                    first.setdefault(o, t)
                elif kind == "suspect":
                    first_suspect.setdefault(o, t)
        delays = [first[o] - at for o in observers if o in first]
        pooled += delays
        per_victim[m] = {
            "crashed_at_s": round(at - t0, 3),
            "observers": len(observers),
            "missed": len(observers) - len(delays),
            "dead_s": stats_of(delays),
            "first_suspect_s": stats_of([first_suspect[o] - at for o in first_suspect]),
        }
    out.update(
        {
            "virtual_s": round(end - t0, 2),
            "stopped": stopped,
            "crashes": per_victim,
            "detection_s": stats_of(pooled),
            "missed": sum(v["missed"] for v in per_victim.values()),
            "false_dead": len(false_dead),
            "false_dead_pairs": len({(o, m) for _, o, _, m in false_dead}),
            "false_dead_examples": examples(false_dead, t0),
            "false_suspect": len(false_suspect),
            "false_suspect_examples": examples(false_suspect, t0),
            "events": kinds_count(events),
            "bytes_per_node_round": round(sim.total("bytes_sent") / n / (sim.now / INTERVAL), 1),
            "sim_events": sim.events,
            "wall_s": round(time.perf_counter() - wall0, 1),
            "cpu_s": round(time.process_time() - cpu0, 1),
            "peak_rss_mib": round(peak_rss_mib(), 0),
            "implementation": sim.implementation,
        }
    )
    return out


def run_row(spec: Dict[str, Any]) -> Dict[str, Any]:
    """One row from its spec (what ``--row`` takes), with the cyclic GC off as
    ``fastgossip.sim.measure_convergence`` runs (millions of long-lived objects)."""
    was = gc.isenabled()
    gc.disable()
    try:
        if spec["kind"] == "cluster":
            return cluster_row(spec["nodes"], spec["phases"], spec["seed"], spec["keys"])
        if spec["kind"] == "loss":
            return loss_row(
                spec["nodes"],
                spec["loss"],
                spec["seed"],
                spec["crashes"],
                spec["virtual_s"],
                spec.get("budget_s"),
            )
        raise ValueError(f"unknown row kind {spec['kind']!r}")
    finally:
        if was:
            gc.enable()


def replay_command(spec: Dict[str, Any]) -> str:
    return f"python -m bench.sim_members --row '{json.dumps(spec, sort_keys=True)}'"


# -- the parent: rows in their own processes ---------------------------------------
def _child_env() -> Dict[str, str]:
    """bench/sim.py's convention: the children import the fastgossip this process
    imported (installed, or src/), and ROOT for the bench package."""
    import fastgossip

    here = os.path.dirname(os.path.dirname(os.path.abspath(fastgossip.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, here] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def loaded_from() -> str:
    import fastgossip

    return os.path.dirname(os.path.abspath(fastgossip.__file__))


def run_in_child(
    spec: Dict[str, Any], mem_cap_gib: Optional[float], snapshot: Optional[Snapshot] = None
) -> Dict[str, Any]:
    """One row in its own process, importing ``snapshot`` (bench.members'
    copy of the package, taken once per run) or else what this process imported."""
    cmd = [sys.executable, "-m", "bench.sim_members", "--row", json.dumps(spec)]
    if mem_cap_gib:
        cmd += ["--mem-cap-gib", f"{mem_cap_gib:.2f}"]
    say(f"running: {replay_command(spec)}")
    env = snapshot.env() if snapshot is not None else _child_env()
    out = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
    if out.returncode != 0 or not lines:
        return {"error": f"row process exited {out.returncode} (see its stderr above)"}
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def predict_rss(done: Sequence[Tuple[int, float]], n: int) -> Optional[Dict[str, Any]]:
    """Peak RSS at ``n`` from the rows measured: a power law through the two
    largest sizes (exponent 2 with only one)."""
    pts = sorted({x: y for x, y in done if y > 0}.items())
    if not pts:
        return None
    (x1, y1) = pts[-1]
    k = 2.0
    if len(pts) >= 2:
        (x0, y0) = pts[-2]
        k = max(1.0, math.log(y1 / y0) / math.log(x1 / x0))
    return {"from": [x for x, _ in pts[-2:]], "exponent": round(k, 2), "mib": y1 * (n / x1) ** k}


def plan(opts: argparse.Namespace) -> List[Dict[str, Any]]:
    """The rows to run: one cluster per size (its phases), then the loss row."""
    sizes: Dict[int, List[str]] = {}
    for phase, arg in (("idle", opts.idle), ("join", opts.join), ("silent", opts.silent)):
        for n in arg:
            sizes.setdefault(n, []).append(phase)
    rows = [
        {"kind": "cluster", "nodes": n, "phases": ph, "seed": opts.seed, "keys": opts.keys}
        for n, ph in sorted(sizes.items())
    ]
    if opts.loss_nodes:
        rows.append(
            {
                "kind": "loss",
                "nodes": opts.loss_nodes,
                "loss": opts.loss,
                "seed": opts.seed,
                "crashes": opts.crashes,
                "virtual_s": opts.loss_seconds,
                "budget_s": opts.loss_budget_min * 60,
            }
        )
    return rows


def run(opts: argparse.Namespace) -> Dict[str, Any]:
    t0 = time.perf_counter()
    avail = mem_available_gib()
    cap = opts.mem_cap_gib
    if cap is None and avail is not None:
        cap = max(1.0, avail - 1.5)
    result: Dict[str, Any] = {
        "machine": machine(),
        "settings": {
            "quick": opts.quick,
            "seed": opts.seed,
            "interval_s": INTERVAL,
            "limits": "CoreLimits() (fanout 3, max_connections 256, quiet rounds 3 neighbours)",
            "membership": "Simulation defaults (heartbeat >= 0.5 s, budget 25 records/round, "
            "phi 8, acceptable pause 0.5 s, min_std 0.25)",
            "network": "1 ms + U(0, 1 ms); retransmit after 0.2 s RTO when lost",
            "keys": opts.keys,
            "mem_available_gib_at_start": None if avail is None else round(avail, 1),
            "mem_cap_gib": None if cap is None else round(cap, 1),
            "in_process": opts.in_process,
        },
        "rows": [],
    }
    held = None if opts.in_process else tempfile.mkdtemp(prefix="fastgossip-sim-members-")
    snapshot = None if held is None else Snapshot.take(held)
    result["source_digest"] = None if snapshot is None else snapshot.digest
    measured: List[Tuple[int, float]] = []
    try:
        rows_of(opts, result, cap, snapshot, measured)
    finally:
        if held is not None:
            shutil.rmtree(held, ignore_errors=True)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    assemble(result)
    return result


def rows_of(
    opts: argparse.Namespace,
    result: Dict[str, Any],
    cap: Optional[float],
    snapshot: Optional[Snapshot],
    measured: List[Tuple[int, float]],
) -> None:
    failed: List[int] = []  # sizes that ran out of memory
    for spec in plan(opts):
        row: Dict[str, Any] = {"spec": spec, "replay": replay_command(spec)}
        guess = predict_rss(measured, spec["nodes"]) if spec["kind"] == "cluster" else None
        too_big = [n for n in failed if n <= spec["nodes"]]
        if too_big and not opts.force:
            row["skipped"] = (
                f"a cluster of {min(too_big):,} nodes already ran out of memory (cap "
                f"{cap} GiB); this row is as large or larger"
            )
            say(f"skipping {spec['kind']} {spec['nodes']}: {row['skipped']}")
        elif guess is not None and cap is not None and guess["mib"] > cap * 1024 and not opts.force:
            row["skipped"] = (
                f"predicted peak RSS {guess['mib'] / 1024:.0f} GiB (power law, exponent "
                f"{guess['exponent']}, through {guess['from']} nodes) > cap {cap:.1f} GiB"
            )
            say(f"skipping {spec['kind']} {spec['nodes']}: {row['skipped']}")
        else:
            if opts.in_process:
                row["result"] = run_row(spec)
                row["result"]["loaded_from"] = loaded_from()
            else:
                row["result"] = run_in_child(spec, cap, snapshot)
            r = row["result"]
            if spec["kind"] == "cluster" and r.get("peak_rss_mib"):
                measured.append((spec["nodes"], r["peak_rss_mib"]))
            if str(r.get("error", "")).startswith("MemoryError"):
                failed.append(spec["nodes"])
            say(summary_line(spec, r))
        result["rows"].append(row)


# -- the result ---------------------------------------------------------------------------
def summary_line(spec: Dict[str, Any], r: Dict[str, Any]) -> str:
    head = f"{spec['kind']} {spec['nodes']}:"
    if "error" in r and "formation" not in r:
        return f"{head} {r['error']}"
    parts = [f"wall {r.get('wall_s')} s", f"peak RSS {r.get('peak_rss_mib')} MiB"]
    f = r.get("formation", {})
    parts.append(f"formed {f.get('formed_s')} s, stable {f.get('stable_s')} s")
    if "idle" in r:
        parts.append(f"idle {r['idle']['bytes_per_node_round']} B/node/round")
    if "join" in r:
        parts.append(f"join {r['join']['rounds']} rounds")
    if "silent" in r:
        parts.append(f"silent dead median {r['silent']['dead_s']['median']} s")
    if spec["kind"] == "loss" and "detection_s" in r:
        parts.append(
            f"{r['virtual_s']} virtual s, false dead {r['false_dead']}, "
            f"detection {r['detection_s']}"
        )
    if "error" in r:
        parts.append(f"ERROR {r['error']}")
    return f"{head} " + "; ".join(parts)


def _target(what: str, target: str, measured: Optional[float], unit: str, ok: Any) -> Dict:
    return {
        "what": what,
        "target": target,
        "measured": measured,
        "unit": unit,
        "pass": None if measured is None else bool(ok),
    }


def assemble(result: Dict[str, Any]) -> None:
    """The per-measurement lists, the targets and the anomalies, from the rows."""
    joins, idles, silents, formations, losses = [], [], [], [], []
    anomalies: List[str] = []
    for row in result["rows"]:
        r = row.get("result")
        if r is None:
            continue
        n = row["spec"]["nodes"]
        if "formation" in r:
            formations.append({"kind": row["spec"]["kind"], "nodes": n, **r["formation"]})
            fm = r["formation"]
            if fm["dead_pairs"] or fm["suspect_pairs"]:
                anomalies.append(
                    f"{row['spec']['kind']} {n}: while forming, {fm['suspect_pairs']} "
                    f"(observer, member) pairs went suspect and {fm['dead_pairs']} dead "
                    f"of {fm['pairs']}, all members alive (first dead at "
                    f"{fm['first_dead_s']} s); replay: {row['replay']}"
                )
        if "error" in r:
            anomalies.append(f"{row['spec']['kind']} {n}: {r['error']}; replay: {row['replay']}")
        if "idle" in r:
            idles.append(r["idle"])
            ev = {k: v for k, v in r["idle"]["member_events_in_window"].items()}
            if ev:
                anomalies.append(f"idle {n}: member events in the idle window {ev}")
        if "join" in r:
            j = r["join"]
            joins.append(j)
            if j["joiner_verdicts"] or j["other_verdicts"]:
                anomalies.append(
                    f"join {n}: after joining, the joiner gave {j['joiner_verdicts']} about "
                    f"live members and the others {j['other_verdicts']}; e.g. "
                    f"{j['joiner_verdict_examples'][:2]}; replay: {row['replay']}"
                )
        if "silent" in r:
            s = r["silent"]
            silents.append(s)
            if s["collateral_verdicts"]:
                anomalies.append(
                    f"silent {n}: verdicts about members other than the isolated one "
                    f"{s['collateral_verdicts']}; replay: {row['replay']}"
                )
        if row["spec"]["kind"] == "loss" and "detection_s" in r:
            losses.append(r)
            if r["false_dead"]:
                anomalies.append(
                    f"loss {n}: {r['false_dead']} false dead verdicts; e.g. "
                    f"{r['false_dead_examples'][:2]}; replay: {row['replay']}"
                )
            if r["missed"]:
                anomalies.append(f"loss {n}: {r['missed']} observers never said a crash dead")
    result["formation"] = formations
    result["join"] = joins
    result["idle"] = idles
    result["idle_extrapolation"] = idle_fit(idles)
    result["silent"] = silents
    result["loss"] = losses[0] if losses else None
    result["skipped"] = [
        {"kind": row["spec"]["kind"], "nodes": row["spec"]["nodes"], "why": row["skipped"]}
        for row in result["rows"]
        if "skipped" in row
    ]
    result["targets"] = targets(result)
    result["anomalies"] = anomalies


def targets(result: Dict[str, Any]) -> List[Dict[str, Any]]:
    out = []
    joins = {j["members"]: j for j in result["join"]}
    for members, limit in JOIN_TARGETS:
        j = joins.get(members)
        if j is None and members != 100 and joins:  # the largest measured, said so
            big = max(joins)
            j = joins[big]
            what = f"join at {members:,} members (measured at {big:,} only)"
        else:
            what = f"join at {members:,} members"
        got = None if j is None else j["rounds"]
        t = _target(what, f"<= {limit:g}", got, "rounds", got is not None and got <= limit)
        if j is not None and j["members"] != members:
            t["pass"] = None  # not measured at that size: no verdict
        out.append(t)
    idles = {r["nodes"]: r for r in result["idle"]}
    at100 = idles.get(100)
    got = None if at100 is None else at100["bytes_per_member_round"]
    out.append(
        _target(
            "idle bytes per member per round at 100 members",
            f"<= {IDLE_PER_MEMBER_AT_100:g}",
            got,
            "B",
            got is not None and got <= IDLE_PER_MEMBER_AT_100,
        )
    )
    fit = result["idle_extrapolation"]
    got = None if fit is None else fit["bytes_per_node_round"]
    out.append(
        _target(
            "idle bytes per node per round at 10,000 (extrapolated)",
            f"<= {IDLE_PER_NODE_AT_10K:g}",
            got,
            "B",
            got is not None and got <= IDLE_PER_NODE_AT_10K,
        )
    )
    loss = result["loss"]
    if loss is not None:
        n, p = loss["nodes"], loss["loss"]
        out.append(
            _target(
                f"false dead verdicts, {n} nodes, loss {p:g}, {loss['virtual_s']:.0f} s",
                "0",
                loss["false_dead"],
                "",
                loss["false_dead"] == 0,
            )
        )
        d = loss["detection_s"]
        for stat, limit in (("median", CRASH_MEDIAN_S), ("max", CRASH_MAX_S)):
            ok = d[stat] is not None and d[stat] <= limit and not loss["missed"]
            out.append(
                _target(
                    f"crash detected dead, {stat} over observers ({n} nodes, loss {p:g})",
                    f"<= {limit:g}",
                    d[stat],
                    "s",
                    ok,
                )
            )
    for s in result["silent"]:
        med = s["dead_s"]["median"]
        out.append(
            _target(
                f"silent failure dead, median over observers ({s['members']} members)",
                f"<= {SILENT_MEDIAN_S:g}",
                med,
                "s",
                med is not None and med <= SILENT_MEDIAN_S and not s["missed"],
            )
        )
    return out


def _c(value: Any, fmt: str = "") -> str:
    return "-" if value is None else format(value, fmt)


def render(result: Dict[str, Any]) -> str:
    s = result["settings"]
    m = result["machine"]
    lines = [
        "membership in the simulator: nodes join through one seed at time 0; "
        f"gossip every {s['interval_s']} s; seed {s['seed']}",
        f"machine: {m['cores']} cores, load average at start {m['load_average_1_5_15']}; "
        f"memory cap per row {s['mem_cap_gib']} GiB; fastgossip {m['fastgossip']} "
        f"({m['fastgossip_default_implementation']}), sources {result['source_digest']}",
        "",
        "rows (each its own process)",
        f"  {'row':24} {'wall s':>7} {'cpu s':>7} {'virtual s':>9} {'peak RSS MiB':>12}",
    ]
    for row in result["rows"]:
        spec, r = row["spec"], row.get("result", {})
        label = f"{spec['kind']} {spec['nodes']}" + (
            f" ({'+'.join(spec['phases'])})" if spec["kind"] == "cluster" else ""
        )
        if "skipped" in row:
            lines.append(f"  {label:24} skipped: {row['skipped']}")
            continue
        lines.append(
            f"  {label:24} {_c(r.get('wall_s')):>7} {_c(r.get('cpu_s')):>7} "
            f"{_c(r.get('virtual_s')):>9} {_c(r.get('peak_rss_mib')):>12}"
            + (f"  ERROR {r['error']}" if "error" in r else "")
        )
    lines += ["", "formation (virtual s from time 0; verdicts given while all were alive)"]
    for f in result["formation"]:
        lines.append(
            f"  {f['kind']:7} {f['nodes']:6,} nodes: formed {_c(f['formed_s'])} s, stable "
            f"{_c(f['stable_s'])} s, heartbeat period {f['heartbeat_period_s']} s; suspect "
            f"pairs {f['suspect_pairs']:,}, dead pairs {f['dead_pairs']:,} of {f['pairs']:,}"
        )
    lines += ["", "1. join (a node down since 0 comes up empty; rounds of 0.2 s, to 0.1 round)"]
    for j in result["join"]:
        lr = j["rounds_until_listed"]
        lines.append(
            f"  {j['members']:6,} members, {j['keys']} keys: {_c(j['rounds'])} rounds "
            f"(members {_c(j['rounds_members'])}, table {_c(j['rounds_table'])}; "
            f"{_c(j['joiner_frames_received'], ',')} frames in); every member lists it after "
            f"{_c(lr['median'])} / {_c(lr['max'])} rounds (median / max, "
            f"{j['members_listing_joiner']} did); joiner's verdicts after {j['watch_s']} s: "
            f"{j['joiner_verdicts'] or 'none'}"
        )
    lines += ["", "2. idle traffic (no writes; after a settle of one heartbeat period)"]
    lines.append(
        f"  {'members':>8} {'period s':>8} {'rounds':>6} {'B/node/rnd':>10} {'B/member':>8} "
        f"{'p50/p99/max per round':>23} {'seed B/rnd':>10} {'links med/max':>13}"
    )
    for r in result["idle"]:
        pr = r["per_round_bytes_per_node"]
        c = r["connections_per_node"]
        lines.append(
            f"  {r['nodes']:8,} {r['heartbeat_period_s']:8} {r['window_rounds']:6} "
            f"{r['bytes_per_node_round']:10,.0f} {r['bytes_per_member_round']:8.2f} "
            f"{pr['p50']:>7,.0f}/{pr['p99']:>7,.0f}/{pr['max']:>7,.0f} "
            f"{_c(r['seed_node_bytes_per_round'], ',.0f'):>10} "
            f"{_c(c['median'])}/{_c(c['max']):>6}"
        )
    fit = result["idle_extrapolation"]
    if fit:
        per = ", ".join(
            f"{p['nodes']:,}: {p['records_per_round']} x {p['bytes_per_record']}"
            for p in fit["measured"]
        )
        lines += [
            f"  heartbeat records per node per round x bytes per record: {per}",
            f"  at {fit['at']:,} (period {fit['heartbeat_period_s']:g} s): "
            f"{fit['records_per_round']} records x {fit['bytes_per_record']} B (fit "
            f"{fit['a']:,.1f} + {fit['b']:.4f} * N) = {fit['bytes_per_node_round']:,.0f} B per "
            f"node per round ({fit['bytes_per_member_round']} per member); "
            f"{fit['worst_case_bytes_per_node_round']:,.0f} at the full budget of 25 records",
        ]
    loss = result["loss"]
    if loss is not None:
        d = loss["detection_s"]
        lines += [
            "",
            f"3. {loss['nodes']:,} nodes, loss {loss['loss']:g}: {loss['virtual_s']} virtual s "
            f"after the cluster was stable ({loss['stopped']}; asked "
            f"{loss['virtual_s_asked']:g} s), wall {loss['wall_s']} s",
            f"  false dead verdicts {loss['false_dead']} ({loss['false_dead_pairs']} pairs), "
            f"false suspicions {loss['false_suspect']}; {loss['bytes_per_node_round']:,.0f} "
            "bytes per node per round over the whole run",
            f"  crashes: dead after median {_c(d['median'])} s, p90 {_c(d['p90'])} s, max "
            f"{_c(d['max'])} s over {d['n']} (observer, crash) pairs; missed {loss['missed']}",
        ]
        for name, v in loss["crashes"].items():
            lines.append(
                f"    {name:6} crashed at +{v['crashed_at_s']:.1f} s: dead median "
                f"{_c(v['dead_s']['median'])} s, max {_c(v['dead_s']['max'])} s, first "
                f"suspect median {_c(v['first_suspect_s']['median'])} s, missed {v['missed']}"
            )
    for sl in result["silent"]:
        d = sl["dead_s"]
        lines.append(
            f"  silent failure of {sl['victim']} among {sl['members']:,} (heartbeat period "
            f"{sl['heartbeat_period_s']} s): dead after median {_c(d['median'])} s, max "
            f"{_c(d['max'])} s, missed {sl['missed']}; suspect median "
            f"{_c(sl['first_suspect_s']['median'])} s; healed at +{sl['healed_after_s']} s, "
            f"views whole again {_c(sl['recovered_s'])} s later"
        )
    for sk in result["skipped"]:
        lines.append(f"  skipped {sk['kind']} {sk['nodes']}: {sk['why']}")
    if result["anomalies"]:
        lines += ["", "anomalies"] + [f"  - {a}" for a in result["anomalies"]]
    lines += ["", format_targets(result["targets"])]
    return "\n".join(lines)


def validate(result: Dict[str, Any]) -> None:
    """Raises AssertionError unless ``result`` has the shape ``run`` writes."""
    for key in (
        "machine", "settings", "rows", "formation", "join", "idle", "idle_extrapolation",
        "silent", "loss", "skipped", "targets", "anomalies", "source_digest",
    ):  # fmt: skip
        assert key in result, key
    for row in result["rows"]:
        assert "spec" in row and "replay" in row, row
        assert ("result" in row) != ("skipped" in row), row
    for f in result["formation"]:
        for key in ("nodes", "formed_s", "stable_s", "suspect_pairs", "dead_pairs", "pairs"):
            assert key in f, key
    for j in result["join"]:
        for key in ("members", "keys", "rounds", "rounds_members", "rounds_table",
                    "rounds_until_listed", "joiner_verdicts"):  # fmt: skip
            assert key in j, key
    for r in result["idle"]:
        for key in ("nodes", "heartbeat_period_s", "window_rounds", "bytes_per_node_round",
                    "bytes_per_member_round", "per_round_bytes_per_node"):  # fmt: skip
            assert key in r, key
        assert r["window_rounds"] >= 50
    for s in result["silent"]:
        for key in ("members", "victim", "observers", "missed", "dead_s", "recovered_s"):
            assert key in s, key
    if result["loss"] is not None:
        for key in ("nodes", "loss", "virtual_s", "false_dead", "detection_s", "crashes",
                    "missed"):  # fmt: skip
            assert key in result["loss"], key
    for t in result["targets"]:
        for key in ("what", "target", "measured", "unit", "pass"):
            assert key in t, key


# -- command line -----------------------------------------------------------------------
def _sizes(text: str) -> List[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="the JSON result ('-': none)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--idle", type=_sizes, help="cluster sizes for idle traffic")
    parser.add_argument("--join", type=_sizes, help="cluster sizes for a join")
    parser.add_argument("--silent", type=_sizes, help="cluster sizes for a silent failure")
    parser.add_argument("--keys", type=int, default=1000, help="user keys before a join")
    parser.add_argument("--loss-nodes", type=int, help="nodes of the loss run (0: none)")
    parser.add_argument("--loss", type=float, default=0.05)
    parser.add_argument("--crashes", type=int, default=3)
    parser.add_argument("--loss-seconds", type=float, help="virtual s of the loss run, at most")
    parser.add_argument("--loss-budget-min", type=float, help="wall minutes of the loss run")
    parser.add_argument("--mem-cap-gib", type=float, help="address space per row (default: "
                        "memory available at start less 1.5 GiB)")  # fmt: skip
    parser.add_argument("--force", action="store_true", help="run sizes predicted not to fit")
    parser.add_argument("--in-process", action="store_true", help="rows in this process "
                        "(peak RSS is then the largest so far)")  # fmt: skip
    parser.add_argument("--row", help="run one row from its JSON spec; print its JSON (replay)")
    opts = parser.parse_args(argv)
    if opts.row is not None:
        if opts.mem_cap_gib:
            cap = int(opts.mem_cap_gib * (1 << 30))
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        spec = json.loads(opts.row)
        try:
            r = run_row(spec)
        except MemoryError:
            gc.collect()
            r = {"error": f"MemoryError (cap {opts.mem_cap_gib} GiB)", "peak_rss_mib": None}
        r["loaded_from"] = loaded_from()
        print(json.dumps(r))
        return 0
    full = not opts.quick
    if opts.idle is None:
        opts.idle = [100, 500, 1000, 2000] if full else [100, 300]
    if opts.join is None:
        opts.join = [100, 1000, 2000] if full else [100, 300]
    if opts.silent is None:
        opts.silent = [100, 1000] if full else [100]
    if opts.loss_nodes is None:
        opts.loss_nodes = 1000 if full else 200
    if opts.loss_seconds is None:
        opts.loss_seconds = 600.0 if full else 120.0
    if opts.loss_budget_min is None:
        opts.loss_budget_min = 25.0 if full else 3.0
    if opts.keys < 1 or opts.crashes < 1 or not 0 <= opts.loss < 1:
        parser.error("need --keys >= 1, --crashes >= 1 and 0 <= --loss < 1")
    if min(opts.idle + opts.join + opts.silent + [opts.loss_nodes or 10]) < 10:
        parser.error("sizes must be at least 10")
    result = run(opts)
    validate(result)
    if opts.out != "-":
        write_json(opts.out, result)
    print(json.dumps(result, indent=1) if opts.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
