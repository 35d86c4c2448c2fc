"""What a prefix watcher costs the table's merge: captured changes per second,
and the extra time per entry a capture that does not match adds.

    python -m bench.watch [--repeats 15] [--calls 8] [--frame-size 1048576]
                          [--impl cython,python] [--out bench/results/watch.json]

The workload is one realistic batch frame: ``GossipState.delta_frames`` of a
table whose keys (~29 bytes, ``svc/web-NN/inst-NNNNNNN/state``, all starting
with ``svc/``) fill one ``--frame-size`` frame (1 MiB: ~15,900 entries) with
8-16-byte bytes values from 8 origins. It is built twice, the second time with
every entry at a higher version, so merging the second frame into a table
holding the first overwrites every key (every entry wins; the capture sees
only entries that change the table). Each timed call merges the new frame into
a fresh table filled with the old one (the fill, untimed, just before: the
frame is in cache, as one just read from a socket is).

Rows (each on the compiled table and on its pure-Python twin):

* ``no capture``: ``merge_frame`` alone, the baseline.
* ``capture svc/ + take``: ``set_capture(["svc/"])``, then ``merge_frame``
  and ``take_captured()`` (the list of Entry objects made and dropped):
  every entry is a change delivered, the rate is changes/s.
* ``node path``: the same, then what a node does with the list: core's
  two filters for the reserved prefix (copied from ``GossipCore._captured``;
  ``"\\x00"`` is captured too, as a node with membership does) and
  ``GossipNode._dispatch_changes`` into one ``_ChangeQueue`` (a ``Change`` per
  entry, an OrderedDict slot per key; ``maxsize`` above the frame's entries, so
  nothing is dropped). The queue is emptied untimed after each call: the
  watcher's ``async for`` and the event loop are not in the figure.
* ``capture zzz/ (no match)``: a prefix no key starts with; the compiled
  table rejects every key on its first byte (a 256-entry bitmap).
* ``capture svc/x (no match, first byte shared)``: keys ``svc/web...`` diverge
  from the prefix at byte 4, so the bitmap passes them and each costs a
  compare of the prefix.

Timing follows ``bench.ratios``: garbage collection off, one measurement is
the mean of ``--calls`` timed calls, the rows are measured in turn
``--repeats`` times, rotating the order, and the best measurement of each row
is kept. The extra cost of a non-matching capture is reported two ways: the
difference of the best measurements, and the median (with min and max) of the
differences within each repeat (the rows of one repeat ran back to back).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
import types
from typing import Any, Callable, Dict, List, Optional, Tuple

import fastgossip
from bench._meta import RESULTS, log, machine, machine_line, write_timed
from fastgossip._impl import load

SENDER = "node-017"
ORIGINS = tuple(f"node-{i:03d}" for i in range(8))
V0 = (1_700_000_000_000 << 16) | 7  # a hybrid-logical-clock reading
V1 = V0 + (1 << 24)  # above every stamp of the old frame
FRAME_SIZE = 1 << 20
PREFIX = "svc/"

NO_CAPTURE = "no capture"
CAPTURE = "capture svc/ + take"
NODE = "node path (capture svc/ + \\x00, take, filter, dispatch to a _ChangeQueue)"
MISS_FIRST = "capture zzz/ (no match)"
MISS_LATE = "capture svc/x (no match, first byte shared)"
ROWS = (NO_CAPTURE, CAPTURE, NODE, MISS_FIRST, MISS_LATE)
PREFIXES: Dict[str, Tuple[str, ...]] = {
    NO_CAPTURE: (),
    CAPTURE: (PREFIX,),
    NODE: (PREFIX, "\x00"),
    MISS_FIRST: ("zzz/",),
    MISS_LATE: ("svc/x",),
}
IMPLS = ("cython", "python")


def key(i: int) -> str:
    """29 characters, all under ``svc/``."""
    return f"svc/web-{i % 64:02d}/inst-{i:07d}/state"


def value(i: int, new: bool) -> bytes:
    """8 to 16 bytes, the same length for key ``i`` in both frames."""
    n = 8 + (i * 7) % 9
    return (b"w" if new else b"v") + (b"%015d" % i)[-(n - 1) :]


def _frame(table_mod: Any, n: int, new: bool, frame_size: int) -> List[bytes]:
    state = table_mod.GossipState()
    version = V1 if new else V0
    for i in range(n):
        state.set(key(i), value(i, new), version, ORIGINS[i % 8], version + i)
    return state.delta_frames(SENDER, {}, frame_size)  # type: ignore[no-any-return]


def make_frames(frame_size: int = FRAME_SIZE) -> Tuple[bytes, bytes, int]:
    """(old frame, new frame, entries): the same keys, every new entry newer.

    The number of keys is what one ``frame_size`` frame holds: a first pass
    with too many keys says how many the first frame took.
    """
    table_mod = load("table", "cython" if _compiled() else "python")
    codec = load("codec", "cython" if _compiled() else "python")
    first = _frame(table_mod, frame_size // 40 + 1, False, frame_size)[0]
    n = len(codec.decode(first, frame_size).entries)
    old, new = _frame(table_mod, n, False, frame_size), _frame(table_mod, n, True, frame_size)
    assert len(old) == 1 and len(new) == 1, (len(old), len(new))
    assert len(old[0]) == len(new[0]) <= frame_size
    return old[0], new[0], n


def _compiled() -> bool:
    try:
        load("table", "cython")
        return True
    except ImportError:
        return False


class Row:
    """One row: ``prepare()`` (untimed) makes a fresh table holding the old
    frame; ``run()`` (timed) merges the new frame; ``check()`` (untimed)
    asserts what it did and empties the queue."""

    def __init__(self, impl: str, name: str, old: bytes, new: bytes, entries: int) -> None:
        self.impl, self.name, self.entries = impl, name, entries
        self.table_mod = load("table", impl)
        self.old, self.new = old, new
        self.prefixes = PREFIXES[name]
        self.state: Any = None
        self.changed = 0
        self.taken: Optional[int] = None
        self.queue: Any = None
        self.run = self._make_run()

    def prepare(self) -> None:
        self.state = None  # the previous table is freed here, untimed
        state = self.table_mod.GossipState()
        if self.prefixes:
            state.set_capture(self.prefixes)
        assert state.merge_frame(self.old) == self.entries
        state.take_captured()
        self.state = state

    def _make_run(self) -> Callable[[], None]:
        name, new = self.name, self.new
        if name in (NO_CAPTURE, MISS_FIRST, MISS_LATE):

            def run() -> None:
                self.changed = self.state.merge_frame(new)

            return run
        if name == CAPTURE:

            def run_take() -> None:
                state = self.state
                self.changed = state.merge_frame(new)
                got = state.take_captured()
                self.taken = len(got)
                del got  # the Entry objects are freed in the timing

            return run_take
        from fastgossip.membership import RESERVED_PREFIX
        from fastgossip.node import GossipNode, _ChangeQueue

        self.queue = _ChangeQueue(PREFIX, self.entries + 1)
        node = types.SimpleNamespace(_watchers=[self.queue], _change_callbacks=[])
        dispatch = GossipNode._dispatch_changes

        def run_node() -> None:
            state = self.state
            self.changed = state.merge_frame(new)
            captured = state.take_captured()
            # GossipCore._captured: the reserved entries go to membership, the
            # others to the node as a "changes" event
            reserved = [e for e in captured if e.key.startswith(RESERVED_PREFIX)]
            if len(reserved) < len(captured):
                changes = [e for e in captured if not e.key.startswith(RESERVED_PREFIX)]
                dispatch(node, changes)  # type: ignore[arg-type]
            self.taken = len(captured)
            del captured, reserved

        return run_node

    def check(self) -> None:
        assert self.changed == self.entries, (self.name, self.changed, self.entries)
        if self.name in (CAPTURE, NODE):
            assert self.taken == self.entries, (self.name, self.taken)
        else:
            assert self.state.take_captured() == [], self.name
        if self.queue is not None:
            assert len(self.queue.items) == self.entries and not self.queue.dropped
            self.queue.items.clear()

    def measure(self, calls: int) -> float:
        """Mean seconds per call over ``calls`` calls (gc off)."""
        clock, run = time.perf_counter, self.run
        total = 0.0
        enabled = gc.isenabled()
        gc.disable()
        try:
            for _ in range(calls):
                self.prepare()
                t0 = clock()
                run()
                total += clock() - t0
                self.check()
        finally:
            if enabled:
                gc.enable()
        return total / calls


def measure_impl(
    impl: str,
    frames: Tuple[bytes, bytes, int],
    repeats: int,
    calls: int,
    log: Callable[[str], None],
) -> Dict[str, Any]:
    """Every row on one implementation, interleaved; best and all measurements."""
    old, new, entries = frames
    rows = [Row(impl, name, old, new, entries) for name in ROWS]
    for row in rows:  # once each, checked, before anything is timed
        row.measure(1)
    samples: List[List[float]] = [[] for _ in rows]
    for r in range(repeats):
        for j in range(len(rows)):
            i = (j + r) % len(rows)
            samples[i].append(rows[i].measure(calls))
    out_rows = []
    base_best = min(samples[0])
    for row, s in zip(rows, samples):
        best = min(s)
        out_rows.append(
            {
                "variant": row.name,
                "prefixes": list(row.prefixes),
                "ns_per_frame": best * 1e9,
                "ns_per_entry": best * 1e9 / entries,
                "entries_per_second": entries / best,
                "vs_no_capture": best / base_best,
                "ns_per_frame_all": [round(x * 1e9) for x in s],
            }
        )
    result = {"implementation": impl, "entries_per_frame": entries, "rows": out_rows}
    result["extra_ns_per_entry"] = {
        name: extra_per_entry(samples[0], samples[ROWS.index(name)], entries)
        for name in (MISS_FIRST, MISS_LATE, CAPTURE, NODE)
    }
    log(format_impl(result))
    return result


def extra_per_entry(base: List[float], other: List[float], entries: int) -> Dict[str, float]:
    """ns per entry that ``other`` adds to ``base`` (seconds per frame, one
    measurement per repeat): from the best of each, and the median, min and
    max of the per-repeat differences."""
    diffs = sorted((o - b) * 1e9 / entries for b, o in zip(base, other))
    return {
        "best_minus_best": (min(other) - min(base)) * 1e9 / entries,
        "paired_median": statistics.median(diffs),
        "paired_min": diffs[0],
        "paired_max": diffs[-1],
    }


def format_impl(result: Dict[str, Any]) -> str:
    lines = [
        f"\n{result['implementation']}: merge_frame of one frame of "
        f"{result['entries_per_frame']:,} entries, every entry newer"
    ]
    lines.append(f"  {'row':76} {'ns/entry':>9} {'M/s':>7} {'x base':>7}")
    for row in result["rows"]:
        lines.append(
            f"  {row['variant']:76} {row['ns_per_entry']:9.1f} "
            f"{row['entries_per_second'] / 1e6:7.2f} {row['vs_no_capture']:7.2f}"
        )
    lines.append("  extra ns per entry over no capture (best-best; median [min, max] of pairs)")
    for name, x in result["extra_ns_per_entry"].items():
        lines.append(
            f"    {name:74} {x['best_minus_best']:7.2f}; {x['paired_median']:7.2f} "
            f"[{x['paired_min']:.2f}, {x['paired_max']:.2f}]"
        )
    return "\n".join(lines)


def _row(result: Dict[str, Any], variant: str) -> Dict[str, Any]:
    return next(r for r in result["rows"] if r["variant"] == variant)


def evaluate_targets(results: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The issue's two targets, on the compiled table."""
    compiled = next((r for r in results if r["implementation"] == "cython"), None)
    out: List[Dict[str, Any]] = []

    def target(what: str, goal: str, measured: Optional[float], unit: str, ok: Optional[bool]):
        out.append({"what": what, "target": goal, "measured": measured, "unit": unit, "pass": ok})

    rate = None if compiled is None else _row(compiled, CAPTURE)["entries_per_second"] / 1e6
    target(
        "watcher changes/s from merge_frame (capture svc/ + take_captured)",
        "≥ 1 M/s",
        rate,
        "M/s",
        None if rate is None else rate >= 1.0,
    )
    for name in (MISS_FIRST, MISS_LATE):
        x = None if compiled is None else compiled["extra_ns_per_entry"][name]["paired_median"]
        target(
            f"extra per non-matching entry, {name}",
            "≤ 10 ns",
            x,
            "ns",
            None if x is None else x <= 10.0,
        )
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="measurements per row (best kept)")
    parser.add_argument("--calls", type=int, default=8, help="timed calls per measurement")
    parser.add_argument(
        "--py-repeats", type=int, default=5, help="measurements per row of the twin"
    )
    parser.add_argument("--py-calls", type=int, default=2, help="timed calls per twin measurement")
    parser.add_argument("--frame-size", type=int, default=FRAME_SIZE)
    parser.add_argument("--impl", default=",".join(IMPLS), help="cython,python or one of them")
    parser.add_argument("--out", default=os.path.join(RESULTS, "watch.json"))
    args = parser.parse_args(argv)

    started = time.perf_counter()
    meta = machine()
    frames = make_frames(args.frame_size)
    log(f"{machine_line(meta)}; frame {len(frames[1]):,} bytes, {frames[2]:,} entries")
    results = []
    for impl in [x.strip() for x in args.impl.split(",") if x.strip()]:
        if impl == "cython" and not _compiled():
            log("cython: not built, skipped")
            continue
        python = impl == "python"
        repeats = args.py_repeats if python else args.repeats
        calls = args.py_calls if python else args.calls
        results.append(measure_impl(impl, frames, repeats, calls, log))
    settings = {
        "repeats": args.repeats,
        "calls": args.calls,
        "py_repeats": args.py_repeats,
        "py_calls": args.py_calls,
        "frame_bytes": len(frames[1]),
        "entries_per_frame": frames[2],
        "key_example": key(0),
        # what was measured: meta's git fields describe the checkout, which
        # is not it when PYTHONPATH points at another tree's src
        "fastgossip_package": os.path.dirname(os.path.abspath(fastgossip.__file__)),
        "timer": (
            "perf_counter around each call, gc off; a measurement is the mean of "
            "calls; rows interleaved, rotating; best of repeats"
        ),
    }
    data = {"results": results}
    write_timed(args.out, meta, settings, data, evaluate_targets(results), started, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
