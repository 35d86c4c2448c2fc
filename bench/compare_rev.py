"""merge_frame on the working tree (or a revision) against an older git
revision, in alternating subprocesses: ns per entry for each and the ratio new/old.

    python -m bench.compare_rev [--rev ade50fc] [--new-rev HEAD] [--rounds 30] [--repeats 5]
                                [--calls 20] [--entries 10000]
                                [--out bench/results/merge_vs_rev.json]

The old revision is exported with ``git archive`` into a temporary directory
(no worktree, nothing written under ``.git``) and built there with its own
``python setup.py build_ext --inplace`` (about half a minute to 2 minutes); the
directory is removed at the end (``--keep`` keeps it and prints it;
``--old-tree DIR`` reuses a tree built so, and skips the export and the
build). The new side is the working tree's ``src`` (``--new-tree``), which
must be built and no older than its Cython sources, or with ``--new-rev`` a
revision exported and built the same way (a working tree someone is editing
and rebuilding meanwhile is no fixed thing to measure).

Every frame is made once, here, with the working tree's codec, and written to
a temporary directory both sides read: the two measure the same bytes (the
wire format of int and bytes values is the same at both revisions; a frame a
side read otherwise would fail its check of how many entries changed). Each
workload is one GossipBatch frame of ``--entries`` entries (16-character keys,
8 origins) merged into a fresh table, which for the overwrite rows first
merges an older frame of the same keys (untimed, just before, as
``bench.ratios`` prepares a merge):

* int values, all new keys into an empty table
* int values, every key overwritten (every entry wins)
* bytes values (8-16 B), all new keys into an empty table
* bytes values (8-16 B), every key overwritten
* int values, half newer / half older over a table of the same keys (the
  shape of ``bench.ratios``' decode+merge rows)

A round runs one child process per side (the order alternates from round to
round), each with ``PYTHONPATH`` at that side's ``src`` only; a child times
every workload in turn, ``--repeats`` times, rotating the order, garbage
collection off, a measurement being the mean of ``--calls`` calls, and keeps
each workload's best. Reported per workload: the best and the median
ns/entry of each side over all rounds, and the per-round ratios new/old (a
round's two children ran back to back): their median, which the target is
judged on, quartiles, min and max. The spread between processes is wider
than within one (every process draws its own hash seed and memory layout, and
the other core's load changes), and moves every workload of a round
together: many short rounds, not a few long ones.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(ROOT, "bench", "results")
DEFAULT_REV = "ade50fc"
SENDER = "node-017"
ORIGINS = tuple(f"node-{i:03d}" for i in range(8))
V0 = (1_700_000_000_000 << 16) | 7
V1 = V0 + (1 << 24)
ENTRIES = 10_000
TARGET_RATIO = 1.10
EXTENSIONS = ("_codec_c", "_table_c", "_sampler_c")
BUILD_ENV_DROP = ("FASTGOSSIP_DEBUG", "FASTGOSSIP_ANNOTATE", "FASTGOSSIP_ONLY")

INT_NEW = "int, new keys into an empty table"
INT_OVER = "int, every key overwritten"
BYTES_NEW = "bytes 8-16 B, new keys into an empty table"
BYTES_OVER = "bytes 8-16 B, every key overwritten"
INT_HALF = "int, half newer / half older"
WORKLOADS = (INT_NEW, INT_OVER, BYTES_NEW, BYTES_OVER, INT_HALF)


# -- frames (parent) ----------------------------------------------------------------


def key(i: int) -> str:
    return f"key-{i:012d}"  # 16 characters, as bench.workloads.table_key


def _bytes_value(i: int, new: bool) -> bytes:
    n = 8 + (i * 7) % 9
    return (b"w" if new else b"v") + (b"%015d" % i)[-(n - 1) :]


def make_workloads(entries: int) -> List[Dict[str, Any]]:
    """name, base frame (None: an empty table), frame, changed entries expected."""
    from fastgossip._impl import load

    try:
        codec = load("codec", "cython")
    except ImportError:
        codec = load("codec", "python")  # the same bytes

    def frame(value: Callable[[int], Any], version: Callable[[int], int]) -> bytes:
        batch = [
            codec.Entry(key(i), value(i), version(i), ORIGINS[i % 8], version(i) + i)
            for i in range(entries)
        ]
        return codec.encode(codec.GossipBatch(SENDER, batch))  # type: ignore[no-any-return]

    half = entries // 2
    int_old = frame(lambda i: i, lambda i: V0)
    int_new = frame(lambda i: i + 1, lambda i: V1)
    bytes_old = frame(lambda i: _bytes_value(i, False), lambda i: V0)
    bytes_new = frame(lambda i: _bytes_value(i, True), lambda i: V1)
    mixed = frame(lambda i: i + 1, lambda i: V1 if i < half else V0 - 1)
    return [
        {"name": INT_NEW, "base": None, "frame": int_old, "changed": entries},
        {"name": INT_OVER, "base": int_old, "frame": int_new, "changed": entries},
        {"name": BYTES_NEW, "base": None, "frame": bytes_old, "changed": entries},
        {"name": BYTES_OVER, "base": bytes_old, "frame": bytes_new, "changed": entries},
        {"name": INT_HALF, "base": int_old, "frame": mixed, "changed": half},
    ]


def write_frames(workloads: List[Dict[str, Any]], entries: int, directory: str) -> str:
    """Each frame as a file, and a manifest.json naming them; returns the directory."""
    manifest = []
    for n, wl in enumerate(workloads):
        item = {"name": wl["name"], "changed": wl["changed"], "entries": entries}
        for part in ("base", "frame"):
            if wl[part] is None:
                item[part] = None
                continue
            path = os.path.join(directory, f"{n}.{part}")
            with open(path, "wb") as f:
                f.write(wl[part])
            item[part] = os.path.basename(path)
        manifest.append(item)
    with open(os.path.join(directory, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    return directory


# -- the child: one side's measurements ---------------------------------------------------


def child(frames_dir: str, repeats: int, calls: int) -> Dict[str, Any]:
    """Runs with PYTHONPATH at one side's src: every workload, interleaved."""
    # the script's own directory (bench/) must not shadow anything
    sys.path[:] = [p for p in sys.path if p and os.path.abspath(p) != HERE]
    import fastgossip
    import fastgossip._table_c as table

    with open(os.path.join(frames_dir, "manifest.json")) as f:
        manifest = json.load(f)

    def read(name: Optional[str]) -> Optional[bytes]:
        if name is None:
            return None
        with open(os.path.join(frames_dir, name), "rb") as f:
            return f.read()

    cases = [(wl, read(wl["base"]), read(wl["frame"])) for wl in manifest]
    clock, GossipState = time.perf_counter, table.GossipState

    def measure(wl: Dict[str, Any], base: Optional[bytes], frame: bytes, number: int) -> float:
        total = 0.0
        expected = wl["changed"]
        state = None
        for _ in range(number):
            state = None  # the previous table is freed here, untimed
            state = GossipState()
            if base is not None:
                state.merge_frame(base)
            t0 = clock()
            changed = state.merge_frame(frame)
            total += clock() - t0
            if changed != expected:
                raise AssertionError(f"{wl['name']}: {changed} changed, expected {expected}")
        return total / number / wl["entries"]

    gc.disable()
    for wl, base, frame in cases:  # once each, checked, before anything is timed
        measure(wl, base, frame, 1)
    samples: List[List[float]] = [[] for _ in cases]
    for r in range(repeats):
        for j in range(len(cases)):
            i = (j + r) % len(cases)
            samples[i].append(measure(*cases[i], calls) * 1e9)
    return {
        "fastgossip_file": fastgossip.__file__,
        "table_file": table.__file__,
        "ns_per_entry": {wl["name"]: min(s) for (wl, _, _), s in zip(cases, samples)},
        "ns_per_entry_all": {wl["name"]: s for (wl, _, _), s in zip(cases, samples)},
    }


# -- the trees --------------------------------------------------------------------------


def resolve_rev(rev: str) -> str:
    out = subprocess.run(
        ["git", "-C", ROOT, "rev-parse", "--verify", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def export_rev(rev: str, dest: str) -> None:
    """The files of ``rev`` under ``dest`` (git archive: nothing under .git changes)."""
    os.makedirs(dest, exist_ok=True)
    archive = subprocess.Popen(["git", "-C", ROOT, "archive", rev], stdout=subprocess.PIPE)
    try:
        subprocess.run(["tar", "-x", "-C", dest], stdin=archive.stdout, check=True)
    finally:
        assert archive.stdout is not None
        archive.stdout.close()
        if archive.wait() != 0:
            raise RuntimeError(f"git archive {rev} failed (exit {archive.returncode})")


def build_tree(tree: str, log: Callable[[str], None]) -> float:
    """``python setup.py build_ext --inplace`` in ``tree``; returns the seconds."""
    env = {k: v for k, v in os.environ.items() if k not in BUILD_ENV_DROP}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise RuntimeError(f"building {tree} failed:\n{tail}")
    seconds = time.perf_counter() - t0
    log(f"built {tree} in {seconds:.0f} s")
    return seconds


def built_modules(src: str) -> Dict[str, Optional[str]]:
    """Each extension's built file under ``src/fastgossip`` (None: not built)."""
    pkg = os.path.join(src, "fastgossip")
    names = os.listdir(pkg) if os.path.isdir(pkg) else []
    out: Dict[str, Optional[str]] = {}
    for ext in EXTENSIONS:
        found = [n for n in names if n.startswith(ext + ".") and n.endswith((".so", ".pyd"))]
        out[ext] = os.path.join(pkg, found[0]) if found else None
    return out


_DEP = re.compile(
    r'^\s*(?:include\s+"([^"]+)"|cdef\s+extern\s+from\s+"([^"]+)"'
    r"|from\s+fastgossip\.(\w+)\s+cimport)",
    re.M,
)


def sources_of(pkg: str, ext: str) -> List[str]:
    """The files a built extension was compiled from: its .pyx and .pxd, and
    what they include or cimport from the package, transitively."""
    todo = [f"{ext}.pyx", f"{ext}.pxd"]
    seen: List[str] = []
    while todo:
        name = todo.pop()
        path = os.path.join(pkg, name)
        if name in seen or not os.path.isfile(path):
            continue
        seen.append(name)
        with open(path, encoding="utf-8") as f:
            for inc, header, pxd in _DEP.findall(f.read()):
                todo.append(inc or header or f"{pxd}.pxd")
    return sorted(seen)


def stale_sources(src: str) -> List[str]:
    """Sources newer than the extension built from them (a comparison against
    a stale build would measure old code), as "source > extension"."""
    pkg = os.path.join(src, "fastgossip")
    out = []
    for ext, built in built_modules(src).items():
        if built is None:
            continue
        when = os.path.getmtime(built)
        for name in sources_of(pkg, ext):
            if os.path.getmtime(os.path.join(pkg, name)) > when:
                out.append(f"{name} > {os.path.basename(built)}")
    return out


def run_child(
    src: str, frames_dir: str, repeats: int, calls: int, timeout: float = 900
) -> Dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = src
    env.pop("FASTGOSSIP_NO_EXTENSIONS", None)
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", frames_dir]
        + ["--repeats", str(repeats), "--calls", str(calls)],
        cwd=frames_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child on {src} failed:\n{proc.stderr.strip()[-3000:]}")
    result: Dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    pkg = os.path.realpath(os.path.join(src, "fastgossip"))
    for what in ("fastgossip_file", "table_file"):
        if not os.path.realpath(result[what]).startswith(pkg + os.sep):
            raise RuntimeError(f"child meant for {src} imported {result[what]}")
    return result


# -- rounds and the summary -----------------------------------------------------------------


def compare(
    old_src: str,
    new_src: str,
    frames_dir: str,
    rounds: int,
    repeats: int,
    calls: int,
    log: Callable[[str], None],
) -> Dict[str, Any]:
    """``rounds`` pairs of children, the order alternating; per-round bests."""
    per_round: List[Dict[str, Dict[str, float]]] = []
    loads: List[float] = []
    for r in range(rounds):
        loads.append(round(os.getloadavg()[0], 2))
        sides = [("old", old_src), ("new", new_src)]
        if r % 2:
            sides.reverse()
        got = {name: run_child(src, frames_dir, repeats, calls) for name, src in sides}
        per_round.append({name: got[name]["ns_per_entry"] for name in ("old", "new")})
        ratios = [got["new"]["ns_per_entry"][w] / got["old"]["ns_per_entry"][w] for w in WORKLOADS]
        log(
            f"round {r + 1}/{rounds} ({sides[0][0]} first): new/old "
            + " ".join(f"{x:.3f}" for x in ratios)
        )
    summary = summarize(per_round)
    summary["load_average_1min_per_round"] = loads
    return summary


def summarize(per_round: List[Dict[str, Dict[str, float]]]) -> Dict[str, Any]:
    rows = []
    for wl in WORKLOADS:
        old = [r["old"][wl] for r in per_round]
        new = [r["new"][wl] for r in per_round]
        ratios = sorted(n / o for o, n in zip(old, new))
        quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        rows.append(
            {
                "workload": wl,
                "old_ns_per_entry": min(old),
                "new_ns_per_entry": min(new),
                "ratio_of_bests": min(new) / min(old),
                "old_ns_per_entry_median": statistics.median(old),
                "new_ns_per_entry_median": statistics.median(new),
                "ratio_of_medians": statistics.median(new) / statistics.median(old),
                "ratio_median": statistics.median(ratios),
                "ratio_q1": quartiles[0],
                "ratio_q3": quartiles[2],
                "ratio_min": ratios[0],
                "ratio_max": ratios[-1],
                "old_ns_per_entry_rounds": [round(x, 2) for x in old],
                "new_ns_per_entry_rounds": [round(x, 2) for x in new],
            }
        )
    return {"rounds": len(per_round), "rows": rows}


def format_rows(summary: Dict[str, Any], old_label: str, new_label: str) -> str:
    lines = [
        f"\nmerge_frame ns/entry over {summary['rounds']} rounds "
        f"(old = {old_label}, new = {new_label}); new/old per round: median, "
        "quartiles, min-max",
        f"  {'workload':44} {'old best':>8} {'new best':>8} {'bests':>6} "
        f"{'median':>7} {'quartiles':>13} {'min-max':>12}",
    ]
    for row in summary["rows"]:
        lines.append(
            f"  {row['workload']:44} {row['old_ns_per_entry']:8.1f} "
            f"{row['new_ns_per_entry']:8.1f} {row['ratio_of_bests']:6.3f} "
            f"{row['ratio_median']:7.3f} {row['ratio_q1']:6.3f}-{row['ratio_q3']:.3f} "
            f"{row['ratio_min']:5.3f}-{row['ratio_max']:.3f}"
        )
    return "\n".join(lines)


def evaluate_targets(summary: Dict[str, Any], old_label: str) -> List[Dict[str, Any]]:
    """merge_frame within 10 % of the old revision, per workload (median per-round ratio)."""
    return [
        {
            "what": f"merge_frame, {row['workload']}: new / {old_label}",
            "target": f"≤ {TARGET_RATIO:.2f}x",
            "measured": row["ratio_median"],
            "unit": "x",
            "pass": row["ratio_median"] <= TARGET_RATIO,
        }
        for row in summary["rows"]
    ]


def check_built(tree: str) -> str:
    """``tree``'s src, once its extensions are built and not older than their sources."""
    src = os.path.join(os.path.abspath(tree), "src")
    missing = [e for e, p in built_modules(src).items() if p is None]
    if missing:
        raise SystemExit(
            f"{tree}: {', '.join(missing)} not built (python setup.py build_ext --inplace)"
        )
    stale = stale_sources(src)
    if stale:
        raise SystemExit(
            f"{tree}: sources newer than the built extensions ({', '.join(stale)}): "
            "rebuild first (python setup.py build_ext --inplace)"
        )
    return src


def prepare_side(
    side: str, rev: Optional[str], tree: Optional[str], work: str, log: Callable[[str], None]
) -> Tuple[str, Dict[str, Any]]:
    """One side's src and what it is: ``rev`` exported and built under ``work``,
    or the built ``tree``."""
    if rev is None:
        assert tree is not None
        label = "working tree" if os.path.abspath(tree) == ROOT else os.path.abspath(tree)
        info = {"rev": None, "commit": None, "tree": os.path.abspath(tree), "label": label}
        return check_built(tree), info
    full = resolve_rev(rev)
    dest = os.path.join(work, side)
    log(f"{side}: exporting {rev} ({full[:12]}) to {dest} and building it (0.5-2 min)")
    export_rev(full, dest)
    build_s = build_tree(dest, log)
    info = {"rev": rev, "commit": full, "tree": None, "label": rev, "build_s": build_s}
    return check_built(dest), info


def run(
    rev: Optional[str],
    rounds: int,
    repeats: int,
    calls: int,
    entries: int,
    new_tree: str = ROOT,
    old_tree: Optional[str] = None,
    new_rev: Optional[str] = None,
    keep: bool = False,
    log: Callable[[str], None] = print,
) -> Dict[str, Any]:
    """The whole comparison; returns the result (``main`` writes it).

    Each side is a revision (exported and built in a temporary directory) or
    a built tree: old is ``old_tree`` when given, else ``rev``; new is
    ``new_rev`` when given, else ``new_tree`` (the working tree).
    """
    if new_rev is None:
        check_built(new_tree)  # before the minutes of the old build
    started = time.perf_counter()
    work = tempfile.mkdtemp(prefix="fastgossip-compare-rev-")
    try:
        frames_dir = os.path.join(work, "frames")
        os.makedirs(frames_dir)
        write_frames(make_workloads(entries), entries, frames_dir)
        old_src, old = prepare_side("old", None if old_tree else rev, old_tree, work, log)
        new_src, new = prepare_side("new", new_rev, new_tree, work, log)
        summary = compare(old_src, new_src, frames_dir, rounds, repeats, calls, log)
    finally:
        if keep:
            again = f"--old-tree {os.path.join(work, 'old')}" if old_tree is None else ""
            if new_rev is not None:
                again += f" --new-tree {os.path.join(work, 'new')}"
            log(f"kept {work}" + (f": rerun with {again.strip()}" if again else ""))
        else:
            shutil.rmtree(work, ignore_errors=True)
    log(format_rows(summary, old["label"], new["label"]))
    return {
        "old": old,
        "new": new,
        "settings": {
            "rounds": rounds,
            "repeats": repeats,
            "calls": calls,
            "entries_per_frame": entries,
            "timer": (
                "perf_counter around each merge_frame, gc off; a measurement is the mean of "
                "calls; workloads interleaved, rotating; best of repeats per child; "
                "old and new children alternate, one pair per round"
            ),
            "elapsed_s": time.perf_counter() - started,
        },
        "summary": summary,
        "targets": evaluate_targets(summary, old["label"]),
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default=DEFAULT_REV, help="the old revision")
    parser.add_argument("--rounds", type=int, default=30, help="pairs of child processes")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per workload a child")
    parser.add_argument("--calls", type=int, default=20, help="timed calls per measurement")
    parser.add_argument("--entries", type=int, default=ENTRIES, help="entries per frame")
    parser.add_argument("--new-tree", default=ROOT, help="the new side (built in place)")
    parser.add_argument("--new-rev", help="export and build this revision as the new side")
    parser.add_argument("--old-tree", help="a built tree to use instead of exporting --rev")
    parser.add_argument("--keep", action="store_true", help="keep the exported, built tree")
    parser.add_argument("--out", default=os.path.join(RESULTS, "merge_vs_rev.json"))
    parser.add_argument("--child", metavar="FRAMES_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.repeats, args.calls)))
        return 0

    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from bench._meta import format_targets, log, machine, machine_line, write_json

    meta = machine()
    log(
        f"{machine_line(meta)}; {args.rounds} rounds x {args.repeats} x {args.calls} calls, "
        f"{args.entries:,} entries per frame"
    )
    result = run(
        args.rev,
        args.rounds,
        args.repeats,
        args.calls,
        args.entries,
        new_tree=args.new_tree,
        old_tree=args.old_tree,
        new_rev=args.new_rev,
        keep=args.keep,
        log=log,
    )
    log("\n" + format_targets(result["targets"]))
    result = {"meta": meta, **result}
    result["settings"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    write_json(args.out, result)
    log(f"\nwrote {os.path.relpath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
