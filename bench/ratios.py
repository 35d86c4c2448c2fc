"""Every hot-path microbenchmark in one process, and how each compares with its target.

    python -m bench.ratios [--repeats 9] [--quick] [--out bench/results/ratios.json]

Runs the workloads of ``bench/test_bench_*.py`` (the same :mod:`bench.workloads`
cases) with ``timeit``: each case is calibrated to ~``--target-ms`` per
measurement, then all cases of a comparison are measured in turn, ``--repeats``
times, rotating the order, and the best (lowest) time of each is kept. Interleaving
spreads slow drifts of the machine (frequency, other load) over every row instead
of whichever happened to run last. Memory for 1M entries is measured as the RSS
growth of a fresh subprocess (``bench.memory``).

Prints ns per call and per unit (entry, frame) with the ratio to the compiled
row, then the targets with ✅ / ❌, and writes everything as JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
import timeit
from typing import Any, Callable, Dict, List, Optional, Tuple

from bench import workloads as w
from bench._meta import RESULTS, ROOT, log, machine, machine_line, write_timed

C_ROW = w.C_NAME
PY_ROW = w.PY_NAME
STREAM_C = f"{w.C_NAME} feed (messages)"
STREAM_C_FRAMES = f"{w.C_NAME} feed_frames (bytes)"
DECODE_MERGE_C = f"{w.C_NAME} merge_frame"
DECODE_MERGE_PY = f"{w.PY_NAME} merge_frame"
SAMPLE_C = f"{w.C_NAME} XorShift64.sample"
MAX_STATEFUL_CALLS = 100  # prepared batches per measurement of a merge


def minor_faults() -> Optional[int]:
    """Minor page faults of this process so far (None where getrusage is missing).

    A row that allocates more than the heap has free makes the allocator map
    fresh memory, and every first touch of a page is a fault: the column shows
    when a figure is the allocator's and the kernel's rather than the code's.
    """
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_case(case: w.Case, number: int) -> float:
    """Seconds per call, over ``number`` calls (garbage collection off, as timeit does)."""
    if case.make_arg is None:
        names = {"fn": case.fn, "arg": case.arg, **case.names}
        # bind every name as a local of timeit's inner function
        setup = "; ".join(f"{name} = _g[{name!r}]" for name in names)
        timer = timeit.Timer(case.expr or "fn(arg)", setup, globals={"_g": names})
        return timer.timeit(number) / number
    # A stateful call (a merge) is timed one call at a time, its argument made
    # just before, outside the timing: the batch is then in cache, as a frame
    # just read from a socket is. (Preparing all of them first and timing a loop
    # over them measured cache misses: ~1.5x slower for a 45 kB frame.)
    fn, make_arg, clock = case.fn, case.make_arg, timeit.default_timer
    total = 0.0
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(number):
            arg = make_arg()
            t0 = clock()
            fn(arg)
            total += clock() - t0
    finally:
        if enabled:
            gc.enable()
    return total / number


def calibrate(case: w.Case, target: float) -> int:
    """How many calls make one measurement of about ``target`` seconds."""
    number = 1
    while True:
        elapsed = time_case(case, number) * number
        if elapsed >= target / 10 or number >= 1 << 20:
            break
        number *= 10
    number = max(1, int(number * target / max(elapsed, 1e-9)))
    if case.make_arg is not None:
        number = min(number, MAX_STATEFUL_CALLS)
    return number


def measure_group(
    group: str, repeats: int, target: float, log: Callable[[str], None]
) -> Dict[str, Any]:
    """Best-of-``repeats`` seconds per call for every row of ``group``, interleaved."""
    cases: List[w.Case] = []
    skipped: Dict[str, str] = {}
    for name in w.variants(group):
        try:
            case = w.build(group, name)
            case.run_checked()  # the same assertion as the pytest body
        except w.Unavailable as exc:
            skipped[name] = str(exc)
            continue
        except Exception as exc:  # a broken row is reported, not fatal to the others
            skipped[name] = f"FAILED: {type(exc).__name__}: {exc}"
            log(f"  {name}: {skipped[name]}")
            continue
        cases.append(case)
    numbers = [calibrate(case, target) for case in cases]
    best = [float("inf")] * len(cases)
    faults: List[Optional[float]] = [None] * len(cases)  # of the best measurement
    for r in range(repeats):
        for j in range(len(cases)):
            i = (j + r) % len(cases)
            before = minor_faults()
            seconds = time_case(cases[i], numbers[i])
            if seconds < best[i]:
                best[i] = seconds
                after = minor_faults()
                if before is not None and after is not None:
                    faults[i] = (after - before) / numbers[i]
    rows = []
    c_ns = None
    for case, seconds in zip(cases, best):
        if case.variant.startswith(C_ROW) and c_ns is None:
            c_ns = seconds * 1e9
    for case, number, seconds, fault in zip(cases, numbers, best, faults):
        ns = seconds * 1e9
        rows.append(
            {
                "variant": case.variant,
                "ns_per_call": ns,
                "ns_per_unit": ns / case.units,
                "units_per_second": case.units / seconds,
                "unit": case.unit,
                "units": case.units,
                "calls_per_measurement": number,
                "page_faults_per_call": fault,
                "vs_compiled": (ns / c_ns) if c_ns else None,
            }
        )
    for name, reason in skipped.items():
        rows.append({"variant": name, "skipped": reason})
    result = {"group": group, "rows": rows}
    log(format_group(result))
    return result


def format_group(result: Dict[str, Any]) -> str:
    lines = [f"\n{result['group']}"]
    lines.append(
        f"  {'variant':44} {'ns/call':>12} {'ns/unit':>10} {'x compiled':>10} {'faults/call':>11}"
    )
    for row in result["rows"]:
        if "skipped" in row:
            lines.append(f"  {row['variant']:44} skipped: {row['skipped']}")
            continue
        vs = row["vs_compiled"]
        fault = row.get("page_faults_per_call")
        lines.append(
            f"  {row['variant']:44} {row['ns_per_call']:12,.0f} "
            f"{row['ns_per_unit']:8,.1f}/{row['unit'][:1]} "
            f"{'' if vs is None else f'{vs:9.2f}x':>10} "
            f"{'' if fault is None else f'{fault:11,.1f}':>11}"
        )
    return "\n".join(lines)


def measure_memory(n: int, kinds: Tuple[str, ...], log: Callable[[str], None]) -> List[dict]:
    """RSS growth for n entries, one fresh subprocess per table kind."""
    import fastgossip

    src = os.path.dirname(os.path.dirname(os.path.abspath(fastgossip.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, ROOT, env.get("PYTHONPATH", "")) if p)
    out = []
    for kind in kinds:
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "bench.memory", "--impl", kind, "--n", str(n)],
                capture_output=True,
                text=True,
                cwd=ROOT,
                env=env,
                timeout=600,
            )
        except subprocess.TimeoutExpired:
            out.append({"kind": kind, "entries": n, "error": "timed out after 600 s"})
            continue
        if proc.returncode != 0:
            err = proc.stderr.strip().splitlines()[-1:] or ["failed"]
            out.append({"kind": kind, "entries": n, "error": err[0]})
            log(f"memory {kind}: failed: {err[0]}")
            continue
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        out.append(row)
        log(
            f"memory {kind:7}: {row['rss_growth_mb']:7.1f} MB RSS growth for {n:,} entries "
            f"({row['bytes_per_entry']:.0f} B/entry, filled in {row['fill_seconds']:.1f} s)"
        )
    return out


# -- targets ---------------------------------------------------------------------------


def _ns(groups: Dict[str, Dict[str, Any]], group: str, variant: str) -> Optional[float]:
    for row in groups.get(group, {}).get("rows", []):
        if row["variant"] == variant and "ns_per_call" in row:
            return row["ns_per_call"]
    return None


def _per_unit(groups: Dict[str, Dict[str, Any]], group: str, variant: str) -> Optional[float]:
    for row in groups.get(group, {}).get("rows", []):
        if row["variant"] == variant and "ns_per_unit" in row:
            return row["ns_per_unit"]
    return None


def _target(
    hot_path: str, what: str, goal: str, measured: Optional[float], unit: str, ok: Optional[bool]
) -> Dict[str, Any]:
    return {
        "hot_path": hot_path,
        "what": what,
        "target": goal,
        "measured": measured,
        "unit": unit,
        "pass": ok,
    }


def evaluate_targets(groups: Dict[str, Dict[str, Any]], memory: List[dict]) -> List[dict]:
    """Each target of the issue beside the measured figure."""

    def ratio(group: str, slow: str, fast: str) -> Optional[float]:
        a, b = _ns(groups, group, slow), _ns(groups, group, fast)
        return None if a is None or b is None else a / b

    def at_least(x: Optional[float], goal: float) -> Optional[bool]:
        return None if x is None else x >= goal

    def at_most(x: Optional[float], goal: float) -> Optional[bool]:
        return None if x is None else x <= goal

    out = []
    r = ratio(w.G_RT, "msgpack", C_ROW)
    out.append(
        _target(
            "codec", "Gossip encode+decode, speed-up over msgpack", "≥ 6x", r, "x", at_least(r, 6)
        )
    )
    r = ratio(w.G_RT, "json (reference frames)", C_ROW)
    out.append(
        _target(
            "codec",
            "Gossip encode+decode, speed-up over the reference's JSON frames",
            "≥ 25x",
            r,
            "x",
            at_least(r, 25),
        )
    )
    x = _per_unit(groups, w.B_ENC, C_ROW)
    out.append(
        _target("codec", "64-entry batch encode, per entry", "≤ 10 ns", x, "ns", at_most(x, 10))
    )
    x = _per_unit(groups, w.B_DEC, C_ROW)
    out.append(
        _target("codec", "64-entry batch decode, per entry", "≤ 45 ns", x, "ns", at_most(x, 45))
    )
    for group, how in ((w.STREAM, "handled per chunk"), (w.STREAM_KEPT, "all 1 MiB kept")):
        x = _per_unit(groups, group, STREAM_C)
        rate = None if x is None else 1e3 / x  # frames per microsecond = M frames/s
        out.append(
            _target(
                "stream",
                f"FrameDecoder.feed to messages, 4 KiB chunks, {how}",
                "≥ 12 M frames/s",
                rate,
                "M frames/s",
                at_least(rate, 12),
            )
        )
    r = ratio(w.decode_merge_group(10_000), DECODE_MERGE_PY, DECODE_MERGE_C)
    out.append(
        _target(
            "table",
            "decode+merge into a 10k-key table, speed-up over the twin",
            "≥ 10x",
            r,
            "x",
            at_least(r, 10),
        )
    )
    for k, goal in ((3, 15), (31, 30)):
        r = ratio(w.sample_group(k), "random.sample", SAMPLE_C)
        out.append(
            _target(
                "sampler",
                f"sample {k} of 1000, speed-up over random.sample",
                f"≥ {goal}x",
                r,
                "x",
                at_least(r, goal),
            )
        )
    mem = next((m for m in memory if m.get("kind") == "cython" and "rss_growth_mb" in m), None)
    mb = None if mem is None else mem["rss_growth_mb"]
    entries = memory[0]["entries"] if memory else 1_000_000
    out.append(
        _target(
            "table",
            f"RSS for {entries:,} entries (16-byte keys, int values)",
            "≤ 150 MB",
            mb,
            "MB",
            at_most(mb, 150),
        )
    )
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9, help="measurements per row (best kept)")
    parser.add_argument("--target-ms", type=float, default=20.0, help="length of one measurement")
    parser.add_argument("--quick", action="store_true", help="3 repeats of 5 ms, 100k-entry memory")
    parser.add_argument("--memory-entries", type=int, default=1_000_000)
    parser.add_argument("--no-memory", action="store_true", help="skip the RSS measurement")
    parser.add_argument("--only", default="", help="run only groups whose name contains this")
    parser.add_argument("--out", default=os.path.join(RESULTS, "ratios.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.target_ms = 3, 5.0
        args.memory_entries = min(args.memory_entries, 100_000)

    started = time.perf_counter()
    meta = machine()
    log(f"{machine_line(meta)}; best of {args.repeats} x ~{args.target_ms:.0f} ms")
    groups: Dict[str, Dict[str, Any]] = {}
    for group in w.GROUPS:
        if args.only and args.only not in group:
            continue
        groups[group] = measure_group(group, args.repeats, args.target_ms / 1000, log)
    memory: List[dict] = []
    if not args.no_memory:
        log("")
        memory = measure_memory(args.memory_entries, ("cython", "python", "dict"), log)
    settings = {
        "repeats": args.repeats,
        "target_ms": args.target_ms,
        "timer": "timeit, gc off, best of repeats, rows interleaved",
    }
    data = {"groups": list(groups.values()), "memory": memory}
    write_timed(args.out, meta, settings, data, evaluate_targets(groups, memory), started, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
