"""Render bench/results/{ratios,e2e,secure}.json to docs/benchmarks.md and PNG plots.

    python -m bench.report [--ratios FILE] [--e2e FILE] [--secure FILE] [--out docs/benchmarks.md]

Plots need matplotlib (``pip install '.[bench]'``); without it the report is
written with a note instead of the figures. ``bench/results/NOTES.md``, when
present, is included as the observations of the run it belongs to.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any, Dict, List, Optional

from bench._meta import RESULTS, ROOT

DOCS = os.path.join(ROOT, "docs")
MARK = {True: "✅", False: "❌", None: "–"}
IMPL_LABEL = {"cython": "compiled", "python": "pure-Python twin"}
PLURAL = {"entry": "entries", "msg": "msgs", "frame": "frames", "op": "calls"}


def _load(path: str) -> Optional[Dict[str, Any]]:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _num(x: Optional[float], digits: int = 1) -> str:
    if x is None:
        return "n/a"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def _table(header: List[str], rows: List[List[str]], align: str = "") -> List[str]:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


def machine_section(meta: Dict[str, Any], label: str) -> List[str]:
    rows = [
        ["machine", f"{meta.get('cpu')}, {meta.get('cores')} cores ({meta.get('platform')})"],
        ["Python", f"{meta.get('python')} ({meta.get('python_impl')})"],
        [
            "fastgossip",
            f"{meta.get('fastgossip')} (commit {meta.get('git_commit') or '?'}"
            + (
                f", with uncommitted changes to {', '.join(meta['uncommitted_sources'])}"
                if meta.get("uncommitted_sources")
                else ""
            )
            + ")",
        ],
        [
            "Cython / msgpack / orjson",
            f"{meta.get('cython')} / {meta.get('msgpack')} / {meta.get('orjson')}",
        ],
        ["date", str(meta.get("date"))],
    ]
    if meta.get("load_average_1_5_15"):
        rows.append(
            [
                "load average at start (1/5/15 min)",
                " / ".join(str(x) for x in meta["load_average_1_5_15"]),
            ]
        )
    return [f"**{label}**", ""] + _table(["", ""], rows, "ll")


def targets_section(
    ratios: Optional[dict], e2e: Optional[dict], secure: Optional[dict] = None
) -> List[str]:
    rows = []
    for t in (ratios or {}).get("targets", []):
        rows.append(
            [
                t["hot_path"] + ": " + t["what"],
                t["target"],
                "n/a" if t["measured"] is None else f"{_num(t['measured'], 2)} {t['unit']}",
                MARK[t["pass"]],
            ]
        )
    for label, result in (("end to end", e2e), ("security", secure)):
        for t in (result or {}).get("targets", []):
            rows.append(
                [
                    f"{label}: " + t["what"],
                    t["target"],
                    "n/a" if t["measured"] is None else f"{_num(t['measured'], 2)} {t['unit']}",
                    MARK[t["pass"]],
                ]
            )
    if not rows:
        return ["No results yet.", ""]
    passed = sum(1 for r in rows if r[3] == MARK[True])
    return [f"{passed} of {len(rows)} targets met.", ""] + _table(
        ["what", "target", "measured", ""], rows, "lrrl"
    )


def hot_path_section(ratios: dict) -> List[str]:
    s = ratios["settings"]
    out = [
        f"Timed with `timeit` in one process (`python -m bench.ratios`): each row is the best "
        f"of {s['repeats']} measurements of ~{s['target_ms']:.0f} ms, the rows of one table "
        "measured in turn (interleaved), garbage collection off. A merge changes its table, "
        "so each merge call is timed alone with a fresh batch made just before it, and a "
        "measurement is the mean over its calls (the amortised cost, table maintenance "
        "included). \"x compiled\" is the row's time over the compiled row's: above 1 is "
        'slower. "faults" is the minor page faults per call in the best measurement: '
        "where it is high the row spends much of its time in the kernel, mapping memory the "
        "allocator gave back to the OS.",
        "",
    ]
    for g in ratios["groups"]:
        out.append(f"#### {g['group']}")
        out.append("")
        rows = []
        for r in g["rows"]:
            if "skipped" in r:
                rows.append([r["variant"], "skipped", "", "", r["skipped"], ""])
                continue
            unit = r["unit"]
            units = PLURAL.get(unit, unit + "s")
            per = f"{_num(r['ns_per_unit'])} ns/{unit}" if r["units"] > 1 else ""
            rate = r["units_per_second"]
            rate_text = (
                f"{rate / 1e6:,.2f} M {units}/s" if rate >= 1e5 else f"{rate:,.0f} {units}/s"
            )
            vs = r["vs_compiled"]
            rows.append(
                [
                    r["variant"],
                    f"{_num(r['ns_per_call'])} ns",
                    per,
                    rate_text,
                    "" if vs is None else f"{vs:,.2f}x",
                    _num(r.get("page_faults_per_call"), 0),
                ]
            )
        out += _table(
            ["implementation", "per call", "per unit", "rate", "x compiled", "faults"], rows
        )
    mem = ratios.get("memory") or []
    if mem:
        out.append("#### Memory: RSS growth holding entries (16-byte keys, int values)")
        out.append("")
        rows = []
        for m in mem:
            if "error" in m:
                rows.append([m["kind"], f"{m['entries']:,}", "failed", m["error"], ""])
                continue
            label = {
                "cython": "GossipState, compiled",
                "python": "GossipState, twin",
                "dict": "dict of tuples (baseline)",
            }.get(m["kind"], m["kind"])
            rows.append(
                [
                    label,
                    f"{m['entries']:,}",
                    f"{m['rss_growth_mb']:,.1f} MB",
                    f"{m['bytes_per_entry']:,.0f} B",
                    f"{m['fill_seconds']:.2f} s",
                ]
            )
        out += _table(["table", "entries", "RSS growth", "per entry", "fill time"], rows)
        out.append(
            "Each in a fresh subprocess (`python -m bench.memory`): RSS before and after "
            "`set()` of every entry, key strings included. MB = 10^6 bytes."
        )
        out.append("")
    return out


def ingest_section(e2e: dict) -> List[str]:
    ing = e2e.get("ingest", {})
    rows = []
    for impl in ("cython", "python"):
        r = ing.get(impl)
        if not r:
            continue
        runs = ", ".join(f"{x['entries_per_s'] / 1e6:.2f}" for x in r["runs"])
        rows.append(
            [
                IMPL_LABEL[impl],
                f"{r['keys']:,}",
                _num(r["seconds"] and r["seconds"] * 1000) + " ms",
                f"{(r['entries_per_s'] or 0) / 1e6:,.2f} M/s",
                runs,
                _num(r.get("wire_bytes_per_entry")),
            ]
        )
    out = _table(
        [
            "implementation",
            "keys",
            "best time",
            "best entries/s",
            "every run (M/s)",
            "wire B/entry",
        ],
        rows,
    )
    if ing.get("ratio"):
        out.append(f"Compiled over twin: **{ing['ratio']:.1f}x**.")
        out.append("")
    return out


def convergence_section(e2e: dict) -> List[str]:
    rows = []
    for r in e2e.get("convergence", []):
        trial_rounds = ", ".join(str(t["rounds"]) if t["converged"] else "✗" for t in r["trials"])
        where = "1" if r["processes"] == 1 else f"{r['processes']}"
        ok = r["within_bound"] if r["converged_all"] else False
        rows.append(
            [
                IMPL_LABEL[r["implementation"]],
                str(r["n"]),
                r["fanout"],
                where,
                f"{r['interval']:g} s",
                _num(r["rounds_median"], 1),
                trial_rounds,
                f"≤ {r['bound']} {MARK[ok]}",
                _num(r["time_ms_median"], 0) + " ms",
                _num(r.get("ms_per_round_median"), 0) + " ms",
                _num(r["bytes_per_node_median"], 0) + " B",
            ]
        )
    return _table(
        [
            "implementation",
            "N",
            "fanout",
            "processes",
            "interval",
            "median rounds",
            "rounds per trial",
            "target",
            "median time",
            "time per round",
            "sent per node",
        ],
        rows,
    )


def traffic_section(e2e: dict) -> List[str]:
    rows = []
    writes = []
    for impl, impl_rows in e2e.get("traffic", {}).items():
        for r in impl_rows:
            settled = r.get("settled", True)
            rows.append(
                [
                    IMPL_LABEL[impl],
                    f"{r['keys']:,}",
                    str(r["nodes"]),
                    _num(r["idle_bytes_per_node_round"], 0) + " B",
                    ("yes" if r["loaded"] else "NO")
                    + (
                        ""
                        if "settle_s" not in r
                        else f", idle after {r['settle_s']:.1f} s"
                        if settled
                        else ", NOT idle: still draining"
                    ),
                ]
            )
            if "bytes_per_delivered_update" in r:
                writes.append(
                    [
                        IMPL_LABEL[impl],
                        f"{r['keys']:,}",
                        str(r["updates"]),
                        f"{r['deliveries']:,}",
                        _num(r["bytes_per_delivered_update"], 1) + " B",
                        _num(r["bytes_per_delivered_update_net_of_idle"], 1) + " B",
                        "yes" if r["writes_converged"] else "NO",
                    ]
                )
    out = ["With no writes (converged cluster, fanout 3):", ""]
    out += _table(["implementation", "keys", "nodes", "sent per node per round", "loaded"], rows)
    if writes:
        out += ["While writing (fresh keys on every node, then until all have all):", ""]
        out += _table(
            [
                "implementation",
                "keys before",
                "updates",
                "deliveries",
                "bytes per delivered update",
                "net of idle digests",
                "converged",
            ],
            writes,
        )
    return out


SECURE_LABEL = {"plaintext": "plaintext", "cluster_key": "cluster key", "tls": "mutual TLS"}


def _pct(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{100 * x:.0f} %"


def secure_section(sec: dict) -> List[str]:
    """The "Security" section: bench.secure's ingest, handshake, idle traffic
    and sealing path."""
    out: List[str] = []
    mode = sec["settings"].get("mode", "full")
    if mode != "full":
        out += [f"*(a `--{mode}` run: smaller sizes than the full benchmark)*", ""]
    ing = sec.get("ingest") or {}
    if ing:
        out += [f"### Ingest: a fresh peer catching up on {ing['keys']:,} keys", ""]
        ratios = ing.get("ratio_of_medians") or {}
        rows = []
        for m, r in ing["modes"].items():
            rows.append(
                [
                    SECURE_LABEL.get(m, m),
                    f"{(r['entries_per_s_median'] or 0) / 1e6:,.2f} M/s",
                    ", ".join(
                        f"{x['entries_per_s'] / 1e6:.2f}" + ("" if x["complete"] else " ✗")
                        for x in r["runs"]
                    ),
                    "1" if m == "plaintext" else _pct(ratios.get(m)),
                    _num(r.get("setup_ms_median"), 1) + " ms",
                    f"{(r.get('transfer_entries_per_s_median') or 0) / 1e6:,.2f} M/s",
                    _num(r.get("wire_bytes_per_entry"), 2),
                    ", ".join(str(x.get("page_faults", "?")) for x in r["runs"]),
                ]
            )
        out += _table(
            [
                "security",
                "median entries/s",
                "every round (M/s)",
                "over plaintext",
                "setup (to the first frame)",
                "after setup",
                "wire B/entry",
                "page faults, every round",
            ],
            rows,
        )
        out += [
            f"{ing['rounds']} rounds, each one ingest per mode, the order rotating; "
            '"over plaintext" is the ratio of the medians (the median of the '
            "per-round ratios: "
            + ", ".join(
                f"{SECURE_LABEL.get(m, m)} {_pct(x)}"
                for m, x in (ing.get("median_of_round_ratios") or {}).items()
            )
            + "). Both ends run in one process, as in the end-to-end ingest: one core "
            "seals and opens every record. The page faults are the process's minor "
            "faults during the ingest (fresh memory mapped in; see the sealing path "
            "below).",
            "",
        ]
    hs = sec.get("handshake") or {}
    if hs:
        out += ["### A new connection: the handshake", ""]
        added = hs.get("added") or {}
        rows = []
        for m, r in hs["modes"].items():
            a = added.get(m) or {}
            rts = r.get("round_trips")
            if rts is None:
                relay = "no answer" if r.get("relay_unanswered") else "n/a"
            else:
                relay = f"{rts:.2f}"
            rows.append(
                [
                    SECURE_LABEL.get(m, m),
                    _num(r["latency_us_median"], 0) + " µs",
                    f"{_num(r['latency_us_p10'], 0)} / {_num(r['latency_us_p90'], 0)} µs",
                    "" if not a else f"+{_num(a.get('latency_us'), 0)} µs",
                    "" if not a else _num(a.get("in_loopback_rtts"), 1),
                    relay,
                    " \\| ".join(f"{side} {n:,}" for side, n in r["flights"]),
                    str(r["flight_round_trips"]),
                ]
            )
        out += _table(
            [
                "security",
                "median to the first answer",
                "p10 / p90",
                "added",
                "added, in loopback RTTs",
                "round trips (relay)",
                "flights (bytes)",
                "round trips (flights)",
            ],
            rows,
        )
        out += [
            f"`await node.ping(addr)` to an address that is no peer opens a new "
            f"connection each call ({hs['samples']} samples per mode, interleaved): TCP "
            "connect, the handshake, one Ping and its Pong. The loopback round trip is "
            f"what the plaintext ping itself returns once connected: "
            f"{_num(hs.get('loopback_rtt_us'), 0)} µs (both ends in one event loop). "
            "Microseconds on loopback are mostly CPU (key derivation, certificates), so "
            "round trips are counted apart: each mode pings again through a relay that "
            f"holds every chunk {hs['relay_delay_ms']:g} ms each way; (relayed - direct) "
            f"/ {2 * hs['relay_delay_ms']:g} ms is the round trips the exchange waits for "
            "(TCP's connect is not relayed: one more, the same in every mode). The "
            "flights are what each side sent before the other answered (C: the "
            "dialling end).",
            "",
        ]
        for m, r in hs["modes"].items():
            err = r.get("server_stream_error")
            if r.get("relay_unanswered"):
                out += [
                    f"* {SECURE_LABEL.get(m, m)} through the relay: "
                    f"{r['relay_unanswered']} of {hs['relay_samples']} pings unanswered"
                    + (
                        f"; the accepting end's bytes at offset {err['offset']} are no TLS "
                        f"record but a plaintext frame (`{err['bytes_hex']}`...)"
                        if err
                        else ""
                    )
                    + ".",
                ]
            if r.get("unanswered"):
                out += [f"* {SECURE_LABEL.get(m, m)}: {r['unanswered']} direct pings unanswered."]
        if any(r.get("relay_unanswered") or r.get("unanswered") for r in hs["modes"].values()):
            out.append("")
    idle = sec.get("idle") or {}
    if idle:
        out += ["### Idle traffic", ""]
        rows = []
        for m, r in idle["modes"].items():
            rows.append(
                [
                    SECURE_LABEL.get(m, m),
                    f"{r['frames_sent']:,}",
                    f"{r['bytes_sent']:,}",
                    _num(r["bytes_per_frame"], 1),
                    _num(r.get("frames_per_node_round"), 2),
                    f"{r['records']:,}" if "records" in r else "",
                    _num(r.get("frames_per_record"), 2) if "records" in r else "",
                    _num(r.get("overhead_bytes_per_frame"), 2) if "records" in r else "",
                ]
            )
        out += _table(
            [
                "security",
                "frames sent",
                "bytes sent",
                "bytes per frame",
                "frames per node per round",
                "sealed records",
                "frames per record",
                "sealing adds per frame",
            ],
            rows,
        )
        out += [
            f"Two {idle['nodes']}-node clusters (the same node ids, {idle['keys']} keys, "
            f"gossip every {idle['interval']:g} s, membership on) idle side by side, counted "
            f"over {idle['window_s']:.1f} s. Across the clusters the bytes per frame differ by "
            f"{_num(idle.get('bytes_per_frame_difference'), 1)} B (their traffic mixes differ "
            "a little); within the keyed cluster, the bytes `Session.seal` returned less "
            f"those it was given: **{_num(idle.get('overhead_bytes_per_frame'), 2)} B per "
            "frame** (4 + 16 per record; a record carries every frame of one write). TLS is "
            "not in this table: `stats.bytes_sent` counts what a node hands the TLS "
            "transport, not TLS's records.",
            "",
        ]
    sealing = sec.get("sealing") or {}
    fresh, warm = sealing.get("fresh_process"), sealing.get("warm")
    if fresh and warm:
        out += [f"### The sealing path ({warm['bytes'] / 1e6:.1f} MB)", ""]
        labels = [
            ("seal", "`Session.seal`, one call (as a node answers a fresh peer)"),
            ("receive", f"`Session.receive`, {warm['read_size'] // 1024} KiB reads"),
            ("encrypt", "the cipher: `AESGCM.encrypt` per 64 KiB record, output dropped"),
            ("encrypt_into", "the cipher: `AESGCM.encrypt_into` one fresh buffer"),
            ("encrypt_into_reused", "the cipher: `AESGCM.encrypt_into` one reused buffer"),
        ]
        rows = [
            [
                text,
                _num(fresh[k]["ms_median"], 2) + " ms",
                _num(fresh[k].get("page_faults_median"), 0),
                _num(warm[k]["ms_median"], 2) + " ms",
                _num(warm[k].get("page_faults_median"), 0),
                _num(warm[k]["gb_per_s"], 2) + " GB/s",
            ]
            for k, text in labels
            if k in fresh and k in warm
        ]
        out += _table(
            [
                "",
                "fresh process: median",
                "page faults",
                "after the run: median",
                "page faults",
                "rate",
            ],
            rows,
        )
        out += [
            f"Medians of {warm['repeats']} repeats, fresh data and sessions each; first "
            "thing in the process (the allocator maps new memory in for every large "
            "buffer), then after the other parts (it reuses what they freed). The last "
            "three rows are the cipher alone over the records `Session.seal` makes: what "
            "`Session.seal` costs beyond them is its copies into fresh memory (ciphertext, "
            "header + ciphertext, the join) and the page faults that map it in.",
            "",
        ]
    prof = sec.get("profile") or {}
    for m, p in prof.items():
        if not isinstance(p, dict) or "top" not in p:
            continue
        joins = ", ".join(
            f"`{k}` {v:.2f} ms" for k, v in (p.get("bytes_join_ms_by_caller") or {}).items()
        )
        out += [
            f"Profile of one {SECURE_LABEL.get(m, m)} ingest (cProfile, both ends; "
            f"{p['entries_per_s'] / 1e6:.2f} M entries/s under the profiler, "
            f"{p['total_ms']:.1f} ms profiled; AES-GCM {p['aesgcm_ms']:.2f} ms, `secure.py`'s "
            f"own code {p['secure_py_own_ms']:.2f} ms, `bytes.join` by caller: "
            f"{joins or 'none'}), by own time:",
            "",
        ]
        out += _table(
            ["function", "calls", "own ms", "cumulative ms"],
            [
                [
                    f"`{r['function']}`",
                    str(r["calls"]),
                    _num(r["tottime_ms"], 2),
                    _num(r["cumtime_ms"], 2),
                ]
                for r in p["top"][:10]
            ],
        )
    return out


# -- plots ------------------------------------------------------------------------------------


def make_plots(e2e: dict, out_dir: str) -> List[str]:
    """Write the PNGs; return their file names (empty without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    names = []
    conv = [r for r in e2e.get("convergence", []) if r["rounds_median"] is not None]
    if conv:
        fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
        ns = sorted({r["n"] for r in conv})
        xs = [2 + i * (max(ns) - 2) / 200 for i in range(201)]
        ax.plot(xs, [math.log2(x) for x in xs], color="0.6", ls=":", label="log2 N")
        ax.plot(
            xs,
            [math.ceil(math.log2(x)) + 3 for x in xs],
            color="0.3",
            ls="--",
            label="target ceil(log2 N) + 3",
        )
        series: Dict[tuple, List[tuple]] = {}
        for r in conv:
            series.setdefault((r["fanout"], r["interval"], r["implementation"]), []).append(
                (r["n"], r["rounds_median"], r["rounds_max"])
            )
        markers = {"cython": "o", "python": "s"}
        colours: Dict[tuple, str] = {}
        for (fanout, interval, impl), pts in sorted(series.items()):
            pts.sort()
            colour = colours.setdefault((fanout, interval), f"C{len(colours)}")
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                marker=markers.get(impl, "^"),
                ls="-" if impl == "cython" else "--",
                color=colour,
                mfc=colour if impl == "cython" else "none",
                label=f"fanout {fanout}, every {interval:g} s, {IMPL_LABEL[impl]}",
            )
        ax.set_xscale("log")
        ax.set_xlabel("nodes N")
        ax.set_ylabel("rounds until every node has a fresh key")
        ax.set_title("Convergence")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "bench_convergence.png"))
        plt.close(fig)
        names.append("bench_convergence.png")
    ing = e2e.get("ingest", {})
    bars = [
        (IMPL_LABEL[i], ing[i]["entries_per_s"])
        for i in ("cython", "python")
        if ing.get(i) and ing[i].get("entries_per_s")
    ]
    if bars:
        fig, ax = plt.subplots(figsize=(5.2, 3.4), dpi=110)
        ax.bar([b[0] for b in bars], [b[1] / 1e6 for b in bars], color=["C0", "C1"][: len(bars)])
        ax.axhline(4, color="0.3", ls="--", label="target: 4 M entries/s (compiled)")
        ax.set_ylim(0, max([4] + [b[1] / 1e6 for b in bars]) * 1.15)
        for i, (_, v) in enumerate(bars):
            ax.text(i, v / 1e6, f"{v / 1e6:.2f}", ha="center", va="bottom")
        keys = next(ing[i]["keys"] for i in ("cython", "python") if ing.get(i))
        ax.set_ylabel("M entries/s")
        ax.set_title(f"Ingest: a fresh peer receiving {keys:,} keys")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "bench_ingest.png"))
        plt.close(fig)
        names.append("bench_ingest.png")
    traffic = e2e.get("traffic", {})
    if traffic:
        fig, ax = plt.subplots(figsize=(5.6, 3.6), dpi=110)
        for impl, rows in traffic.items():
            pts = [
                (r["keys"], r["idle_bytes_per_node_round"])
                for r in rows
                if r["idle_bytes_per_node_round"]
            ]
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                marker="o",
                ls="-" if impl == "cython" else "--",
                label=IMPL_LABEL[impl],
            )
        base = [
            r["idle_bytes_per_node_round"]
            for rows in traffic.values()
            for r in rows
            if r["keys"] == min(x["keys"] for x in rows) and r["idle_bytes_per_node_round"]
        ]
        if base:
            ax.axhline(
                2 * max(base),
                color="0.3",
                ls="--",
                label="target: at most 2x the smallest table's figure",
            )
        top = max(
            [
                p
                for rows in traffic.values()
                for r in rows
                for p in [r["idle_bytes_per_node_round"] or 0]
            ]
            + [2 * max(base or [0])]
        )
        ax.set_xscale("log")
        ax.set_ylim(0, top * 1.15)
        ax.set_xlabel("keys in the table")
        ax.set_ylabel("bytes sent per node per round")
        ax.set_title("Steady state with no writes")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "bench_traffic.png"))
        plt.close(fig)
        names.append("bench_traffic.png")
    return names


# -- the document -----------------------------------------------------------------------------

HEADER = """\
# Benchmarks

What fastgossip's hot paths and a running cluster cost on one machine, next to
the alternatives and the targets. Every figure below comes from the JSON files in
`bench/results/`, written by a run on the machine named in each section.

Regenerate everything (about {minutes} minutes; the machine should be otherwise idle):

```sh
pip install -e '.[bench]'        # or: python setup.py build_ext --inplace && export PYTHONPATH=src
python -m bench.ratios && python -m bench.e2e && python -m bench.secure && python -m bench.report
```

`python -m bench.ratios` times every hot path in one process and writes
`bench/results/ratios.json`; `python -m bench.e2e` runs nodes over 127.0.0.1
(`--quick` for a one-minute version, `--impl cython|python|both`) and writes
`bench/results/e2e.json`; `python -m bench.secure` measures what the cluster
key and mutual TLS cost against plaintext (ingest, a new connection's
handshake, idle traffic, the sealing path; `--quick`, `--profile`) and writes
`bench/results/secure.json`; `python -m bench.report` renders this page and
its plots. The same workloads as pytest-benchmark tables:

```sh
python -m pytest bench/ --benchmark-enable --benchmark-group-by=group
```

and, without `--benchmark-enable` (the default), every benchmark body runs once
and asserts its result: a correctness smoke test of each hot path against its
twin and the alternatives. pytest-benchmark spends ~250-300 ns of its own on
each timed call, so the codec and sampler rows (25 ns to a few µs) are timed
100 operations per call and reported per operation, like `bench.ratios`
(`ops_per_timed_call` in their `extra_info`); timed one per call they showed
Gossip round trip 4.5-7.8x faster than msgpack where `bench.ratios` says 14x,
and sample 3 of 1000 4.9x faster than `random.sample` against 23x. The two
harnesses now agree within the machine's noise (same-moment runs: round trip
86.6 against 81 ns, 11.9x against 12.2x over msgpack; sample 3 of 1000, 65.9
against 65 ns).
"""

METHOD = """\
## Method

* **Workloads.** One `Gossip` with an 8-character sender id, a 17-character key
  and an int value (a 54-byte frame); a `GossipBatch` of 64 such entries over 4
  origins; 1 MiB of 54-byte frames fed to a decoder in 4 KiB chunks; a
  1000-entry batch, half newer and half older than what the table holds, merged
  into tables of 10k and 100k 16-byte keys; samples of 3 and 31 of 1000 peers.
* **Alternatives** produce the same objects as fastgossip: msgpack packs the
  message's fields as a list and unpacks into the message class; orjson and
  stdlib json write the reference implementation's frames (a 4-byte big-endian
  length, then `{"Gossip": {"sender_id", "key", "value", "version"}}`; a batch is
  `{"GossipBatch": {"sender_id", "entries": [...]}}` in the same style, the
  reference having none); "struct" is a hand-written codec for fastgossip's own
  wire format (its bytes must equal the compiled codec's, which makes it a check
  of `docs/PROTOCOL.md` as well). The dict-of-tuples table is the LWW merge a user
  would write: `dict[key] = (version, origin, value, stamp)`.
* **Merges repeat the same work**: each timed call gets a fresh batch (built
  outside the timing) whose newer half carries a higher version than the last.
* **End to end**: ingest is timed from `gossip_round()` on the fresh peer to its
  last entry (connect, digest, delta frames, merge - both nodes in one process,
  so one core does both sides). Convergence counts the rounds of the busiest node
  between the write and the moment every node holds the key (`wait_converged`),
  after a warm-up key; the N = 1000 runs spread nodes over worker processes,
  each a fresh fleet per trial, with every node given the full address list.
  Traffic counts `stats.bytes_sent` over a window of rounds.
"""


def faults_section(faults: dict) -> List[str]:
    """The "Real faults" section: tests/faults' figures, one row per scenario."""
    out = [
        "Five node processes, each in its own network namespace on a bridge "
        "(`tests/faults`, run by CI as root); faults made in the bridge (nftables "
        "drops, tbf); gossip every 0.2 s. Every scenario ended with every table "
        "equal to the greatest acknowledged write per key and no phantom value.",
        "",
    ]
    rows = []
    for name, r in faults.items():
        if not isinstance(r, dict):
            continue
        what = name.removeprefix("test_").replace("_", " ")
        heal = r.get(
            "converged_after_heal_s",
            r.get("converged_after_restart_s", r.get("converged_s", r.get("catch_up_s"))),
        )
        rx = r.get("bytes_received")
        received = (
            " / ".join(f"{b / 1e3:.0f}" for b in rx) + " kB"
            if isinstance(rx, list)
            else f"{r.get('received_bytes', 0) / 1e6:.2f} MB"
        )
        extra = ""
        if "received_over_delta" in r:
            extra = (
                f"{r['received_over_delta']}x the entries' delta size "
                f"({r['delta_bytes'] / 1e6:.2f} MB; {r['received_over_payload']}x the keys' "
                f"and values' bytes), caught up in {r['catch_up_over_delta_at_rate']}x the "
                "time the link needs for them"
            )
        rows.append([what, _num(heal, 2) + " s" if heal is not None else "", received, extra])
    out += _table(["scenario", "converged after heal", "bytes received per node", ""], rows)
    return out + [""]


def durable_section(d: dict) -> List[str]:
    """The "Durability" section: bench/durable.py's figures."""
    ing, alw, rst = d["ingest"], d["always"], d["restart"]
    fs = alw["fsync_ms"]
    rows = [
        [
            f"ingest of {ing['keys']:,} keys from a peer, fsync=interval vs in memory",
            f"{ing['interval_entries_per_s']:,} vs {ing['memory_entries_per_s']:,} entries/s",
            f"{ing['ratio_best']:.0%} (best), {ing['ratio_median']:.0%} (median)",
            ">= 50 %",
        ],
        [
            f"fsync=always, {alw['writers']} concurrent writers (set_durable)",
            f"{alw['acked_writes_per_s']:,} acknowledged writes/s",
            f"{alw['writes_per_flush']} writes per fsync, ack p50 {alw['ack_latency_ms_median']} ms"
            f" / p99 {alw['ack_latency_ms_p99']} ms; the disk's fsync p50 {fs['median']} ms"
            f" / p99 {fs['p99']} ms",
            ">= 20,000/s",
        ],
        [
            f"restart holding {rst['keys']:,} keys",
            f"{rst['restart_s']} s to serve (replay {rst['replay_s']} s)",
            f"snapshot {rst['snapshot_bytes'] / 1e6:.1f} MB, log {rst['log_bytes'] / 1e6:.1f} MB;"
            f" log at most {rst['worst_log_over_snapshot']}x the snapshot while writing",
            "<= 2 s; log <= 2x live",
        ],
    ]
    out = ["`python -m bench.durable` (a temporary directory on this machine's disk)."]
    out += [""] + _table(["measurement", "figure", "detail", "target"], rows)
    return out + [""]


def agent_section(d: dict) -> List[str]:
    """The "Agent" section: bench/agent.py's figures."""
    w, r, wa, m, i = d["get_wrk"], d["get_at_rate"], d["watch"], d["metrics"], d["idle"]
    rps = w.get("requests_per_s")
    rows = [
        [
            "GET of a small key, wrk (2 threads, 32 connections)",
            f"{rps:,} requests/s" if rps else w.get("skipped", ""),
            f"p99 {w.get('p99_ms_at_saturation')} ms at saturation",
            ">= 5,000/s",
        ],
        [
            f"GET at {r['rate']:,.0f} requests/s (a fixed-rate client)",
            f"p99 {r['p99_ms']} ms",
            f"p50 {r['p50_ms']} ms, max {r['max_ms']} ms",
            "p99 <= 5 ms",
        ],
        [
            "a write on one agent to an SSE watcher on another",
            f"median {wa['median_ms']} ms",
            f"p90 {wa['p90_ms']} ms; gossip interval {wa['gossip_interval_s']} s",
            f"<= {wa['target_ms']} ms",
        ],
        [
            f"/metrics with {m['members']:,} members",
            f"{m['median_ms']} ms",
            f"max {m['max_ms']} ms, {m['bytes']:,} bytes",
            "<= 50 ms",
        ],
        [
            "idle CPU: agent vs bare node",
            f"{i['agent_cpu_percent']} % vs {i['node_cpu_percent']} %",
            f"{i['difference_points']} points, over {i['seconds']} s",
            "<= +5 points",
        ],
    ]
    out = ["`python -m bench.agent` (agents as processes on loopback; wrk from Debian)."]
    out += [""] + _table(["measurement", "figure", "detail", "target"], rows)
    return out + [""]


def render(
    ratios: Optional[dict],
    e2e: Optional[dict],
    plots: List[str],
    notes: Optional[str],
    secure: Optional[dict] = None,
    faults: Optional[dict] = None,
    durable: Optional[dict] = None,
    agent: Optional[dict] = None,
) -> str:
    minutes = 10
    if ratios and e2e:
        seconds = sum(r["settings"].get("elapsed_s", 0) for r in (ratios, e2e, secure) if r)
        minutes = math.ceil(seconds / 60) + 1
    out = [HEADER.format(minutes=minutes), "## Targets", ""]
    out += targets_section(ratios, e2e, secure)
    if notes:
        out += ["## Observations", "", notes.strip(), ""]
    if ratios:
        out += ["## Hot paths", ""]
        out += machine_section(ratios["meta"], "Measured on")
        out += hot_path_section(ratios)
    if e2e:
        out += ["## End to end", ""]
        out += machine_section(e2e["meta"], "Measured on")
        mode = e2e["settings"]["mode"]
        if mode != "full":
            out += [f"*(a `--{mode}` run: smaller sizes than the full benchmark)*", ""]
        out += ["### Ingest: a fresh peer catching up", ""]
        out += ingest_section(e2e)
        if "bench_ingest.png" in plots:
            out += ["![ingest entries/s by implementation](bench_ingest.png)", ""]
        out += ["### Convergence of a fresh key", ""]
        out += convergence_section(e2e)
        if "bench_convergence.png" in plots:
            out += ["![convergence rounds against N and the log curve](bench_convergence.png)", ""]
        out += ["### Traffic", ""]
        out += traffic_section(e2e)
        if "bench_traffic.png" in plots:
            out += [
                "![steady-state bytes per round against the number of keys](bench_traffic.png)",
                "",
            ]
        if e2e.get("notes"):
            out += [f"* {n}" for n in e2e["notes"]] + [""]
    elif not plots:
        out += ["*(no end-to-end results yet: run `python -m bench.e2e`)*", ""]
    if secure:
        out += ["## Security", ""]
        out += machine_section(secure["meta"], "Measured on")
        out += secure_section(secure)
    if faults:
        out += ["## Real faults", ""]
        out += faults_section(faults)
    if durable:
        out += ["## Durability", ""]
        out += durable_section(durable)
    if agent:
        out += ["## Agent", ""]
        out += agent_section(agent)
    out.append(METHOD)
    return "\n".join(out).rstrip() + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratios", default=os.path.join(RESULTS, "ratios.json"))
    parser.add_argument("--e2e", default=os.path.join(RESULTS, "e2e.json"))
    parser.add_argument("--secure", default=os.path.join(RESULTS, "secure.json"))
    parser.add_argument("--faults", default=os.path.join(RESULTS, "faults.json"))
    parser.add_argument("--durable", default=os.path.join(RESULTS, "durable.json"))
    parser.add_argument("--agent", default=os.path.join(RESULTS, "agent.json"))
    parser.add_argument("--notes", default=os.path.join(RESULTS, "NOTES.md"))
    parser.add_argument("--out", default=os.path.join(DOCS, "benchmarks.md"))
    args = parser.parse_args(argv)
    ratios, e2e, secure = _load(args.ratios), _load(args.e2e), _load(args.secure)
    if ratios is None and e2e is None:
        print(
            "no results: run python -m bench.ratios and python -m bench.e2e first", file=sys.stderr
        )
        return 1
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    plots = make_plots(e2e, out_dir) if e2e else []
    notes = None
    if os.path.exists(args.notes):
        with open(args.notes) as f:
            notes = f.read()
    with open(args.out, "w") as f:
        faults, durable, agent = _load(args.faults), _load(args.durable), _load(args.agent)
        f.write(render(ratios, e2e, plots, notes, secure, faults, durable, agent))
    print(f"wrote {os.path.relpath(args.out)}" + (f" and {', '.join(plots)}" if plots else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
