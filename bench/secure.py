"""What security costs against plaintext: the cluster key, and mutual TLS.

The cluster key's handshake and sealed records, mutual TLS beside them, and
plaintext, measured in one run.

    python -m bench.secure [--quick] [--impl cython|python] [--profile]
                           [--out bench/results/secure.json]

Real nodes on 127.0.0.1, in this process (as ``bench.e2e``'s ingest: one
core runs both ends), through the public API: ``NodeConfig(cluster_key=...)``
and ``NodeConfig(ssl=TLSConfig(...))`` (certificates from
``fastgossip.testing.make_test_pki``), ``node.stats``, ``node.ping``. Three
modes: ``plaintext``, ``cluster_key``, ``tls``.

1. **Ingest** - ``bench.e2e``'s ingest in each mode: a node holding K keys
   (100,000 16-byte keys, int values), a fresh peer with the same security
   that ``add_peer``s it and runs one ``gossip_round()``; entries/s from that
   call until the peer holds the K keys (connect, handshake, digest, delta
   frames, sealing and opening, merge). The modes are interleaved: each round
   runs one ingest per mode, the order rotating from round to round, so that
   the machine's other work falls on all of them alike. Reported: the median
   of each mode, and the ratio of the medians (target: the cluster key keeps
   at least 60 % of plaintext's rate). Also the time to the peer's first
   frame ("setup": connect, handshake, digest, and the source encoding and
   sealing its whole answer, written in one call) and the rate after it, and
   the process's minor page faults during each ingest (fresh memory mapped
   in: they, more than AES, are what sealing costs here; see part 4).
2. **Handshake** - the time from ``await node.ping(addr)`` to its answer for
   an address that is no peer: each call opens a new connection
   (``Transport.open_direct``), so the figure is connect + handshake + one
   Ping/Pong. Samples interleaved across the modes, median. The loopback round
   trip is what the plaintext ping returns (its clock starts once the
   connection is open). Round trips are then counted, not inferred from
   microseconds: every mode pings again through a relay that holds each chunk
   ``--relay-delay`` seconds each way, in order; the extra time over the
   direct ping, divided by the injected round trip, is the number of round
   trips the exchange waits for (plaintext 1: Ping -> Pong; TCP's own connect is
   not relayed and is the same in every mode). The relay also logs the
   flights (the bytes each side sent before the other answered).
3. **Idle traffic** - two 3-node clusters (plaintext and cluster key, the same
   node ids, 100 keys, gossip every 0.2 s, membership on) idle side by side;
   over a window of ``--idle-seconds`` after they settled, ``stats.bytes_sent``
   over ``stats.frames_sent`` in each. In the keyed cluster the plaintext
   handed to ``Session.seal`` and the records it returned are counted too
   (the method wrapped for the window), so the sealing overhead per frame is
   measured exactly, apart from the two clusters' different traffic mixes
   (target: at most 28 bytes per frame, the AEAD tag and nonce; a record adds
   4 + 16 bytes and may carry several frames). TLS is not in this part:
   ``stats.bytes_sent`` counts what a node hands the TLS transport, not TLS's
   records.
4. **The sealing path** - ``Session.seal`` of ~4.5 MB in one call (what the
   100,000-key answer is) and ``Session.receive`` of it in 256 KiB reads,
   beside the bare cipher (``AESGCM.encrypt`` per 64 KiB record, output
   dropped; ``encrypt_into`` one fresh buffer, and one reused buffer), with
   the minor page faults of each: what the session's own code costs over
   AES-GCM. Twice: first thing in the fresh process (the allocator maps in
   new memory for each large buffer) and last (it reuses what the other
   parts freed).

``--profile`` adds one more plaintext and one more cluster-key ingest under
cProfile and prints (and records) their top functions by own time, AES-GCM's
time, and ``bytes.join``'s by caller.

A TLS ping through the relay is answered by nothing at commit dbefee6: the
accepting end writes its Pong in plaintext before its TLS transport is in
place (the relay's check of the TLS record stream says where); the run
records it and goes on.

Writes JSON for ``python -m bench.report`` (its "Security" section).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import json
import os
import pstats
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import fastgossip
from bench._meta import RESULTS, log, machine, machine_line, write_timed
from fastgossip._impl import load
from fastgossip.node import GossipNode, NodeConfig
from fastgossip.secure import (
    MAX_RECORD_PLAINTEXT,
    RECORD_HEADER,
    TAG_SIZE,
    Keyring,
    Session,
    generate_key,
)
from fastgossip.testing import ClusterNetwork, make_test_pki

PLAIN, KEY, TLS = "plaintext", "cluster_key", "tls"
MODES = (PLAIN, KEY, TLS)
LONG_INTERVAL = 3600.0  # "never": rounds driven by hand
RECORD_OVERHEAD = RECORD_HEADER + TAG_SIZE  # 20 bytes a sealed record adds
AEAD_BOUND = 16 + 12  # the target: an AES-GCM tag and an explicit nonce per frame
INGEST_TARGET = 0.60  # cluster key over plaintext, ratio of the medians
WARMUP_ID = 1000  # the warm-up ingests' peers are sec-b-<mode>-1000...


def key_of(i: int) -> str:
    return f"key-{i:012d}"  # 16 bytes, as bench.e2e


@dataclass
class Plan:
    """What one run measures; ``full()``, ``quick()`` and ``smoke()`` are the presets."""

    ingest_keys: int = 100_000
    ingest_rounds: int = 7
    ingest_warmup: int = 1  # rounds of one ingest per mode before, not kept
    ping_samples: int = 300
    ping_warmup: int = 10
    ping_gap: float = 0.002  # s between samples: the last close is done with
    relay_delay: float = 0.02  # s, each way
    relay_samples: int = 7
    idle_nodes: int = 3
    idle_keys: int = 100
    idle_interval: float = 0.2
    idle_settle: float = 3.0
    idle_seconds: float = 10.0
    seal_bytes: int = 4_500_000  # about the ingest's answer to a fresh peer
    seal_repeats: int = 15
    timeout: float = 60.0

    @classmethod
    def full(cls) -> Plan:
        return cls()

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            ingest_keys=20_000,
            ingest_rounds=3,
            ping_samples=60,
            relay_samples=3,
            idle_settle=1.5,
            idle_seconds=3.0,
            seal_repeats=7,
            timeout=20.0,
        )

    @classmethod
    def smoke(cls) -> Plan:
        """The smallest pieces, for ``bench/test_secure_smoke.py`` (a few seconds)."""
        return cls(
            ingest_keys=2_000,
            ingest_rounds=1,
            ingest_warmup=0,
            ping_samples=8,
            ping_warmup=2,
            relay_delay=0.01,
            relay_samples=1,
            idle_keys=20,
            idle_settle=0.5,
            idle_seconds=1.0,
            seal_bytes=300_000,
            seal_repeats=2,
            timeout=10.0,
        )


def _compiled() -> bool:
    try:
        load("table", "cython")
        return True
    except ImportError:
        return False


def _median(xs: Sequence[float]) -> Optional[float]:
    return statistics.median(xs) if xs else None


def _quantile(xs: Sequence[float], q: float) -> Optional[float]:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if not a or not b else a / b


class Security:
    """The cluster key and the test PKI of one run, as NodeConfig arguments."""

    def __init__(self, node_ids: Sequence[str], directory: str) -> None:
        self.key = generate_key()
        self.pki = make_test_pki(directory, node_ids)

    def config(self, mode: str, node_id: str) -> Dict[str, Any]:
        if mode == KEY:
            return {"cluster_key": self.key}
        if mode == TLS:
            return {"ssl": self.pki[node_id]}
        return {}


def node_ids(plan: Plan) -> List[str]:
    """Every node id that needs a certificate (the TLS nodes)."""
    ids = ["sec-a-tls", "ping-p-tls", "ping-t-tls"]
    ids += [f"sec-b-tls-{r}" for r in range(plan.ingest_rounds)]
    ids += [f"sec-b-tls-{WARMUP_ID + w}" for w in range(plan.ingest_warmup)]
    return ids


async def _start(node_id: str, impl: str, sec: Security, mode: str, **kw: Any) -> GossipNode:
    cfg = NodeConfig.localhost(node_id, implementation=impl, **kw, **sec.config(mode, node_id))
    return await GossipNode.start(cfg)


# -- 1. ingest ------------------------------------------------------------------------------


async def _ingest_once(
    a: GossipNode,
    mode: str,
    impl: str,
    sec: Security,
    r: int,
    keys: int,
    timeout: float,
    prof: Optional[cProfile.Profile] = None,
) -> Dict[str, Any]:
    """A fresh peer in ``mode`` catching up on ``keys`` entries from ``a``
    (``prof``, when given, profiles the timed part)."""
    b = await _start(f"sec-b-{mode[:3]}-{r}", impl, sec, mode, gossip_interval=LONG_INTERVAL)
    try:
        b.add_peer(a.addr)
        gc.collect()
        if prof is not None:
            prof.enable()
        faults0 = _faults()
        t0 = time.perf_counter()
        b.gossip_round()
        deadline = t0 + timeout
        first = None
        stats = b.stats
        while b.state_len() < keys and time.perf_counter() < deadline:
            if first is None and stats.frames_received:
                first = time.perf_counter()
            await asyncio.sleep(0)
        elapsed = time.perf_counter() - t0
        faults = _faults() - faults0
        if prof is not None:
            prof.disable()
        got = b.state_len()
        setup = (first or t0 + elapsed) - t0
        return {
            "round": r,
            "seconds": elapsed,
            "entries": got,
            "complete": got == keys,
            "entries_per_s": got / elapsed,
            "setup_s": setup,
            "transfer_entries_per_s": got / (elapsed - setup) if elapsed > setup else None,
            "bytes_received": stats.bytes_received,
            "frames_received": stats.frames_received,
            "page_faults": faults,  # minor faults of the process (both ends)
        }
    finally:
        await b.shutdown()


def _summarise_ingest(runs: List[Dict[str, Any]], keys: int) -> Dict[str, Any]:
    done = [x for x in runs if x["complete"]]
    rates = [x["entries_per_s"] for x in done]
    return {
        "runs": runs,
        "complete": bool(runs) and len(done) == len(runs),
        "entries_per_s_median": _median(rates),
        "entries_per_s_best": max(rates) if rates else None,
        "seconds_median": _median([x["seconds"] for x in done]),
        "setup_ms_median": _median([x["setup_s"] * 1000 for x in done]),
        "transfer_entries_per_s_median": _median(
            [x["transfer_entries_per_s"] for x in done if x["transfer_entries_per_s"]]
        ),
        "wire_bytes_per_entry": _median([x["bytes_received"] / keys for x in done]),
        "page_faults_median": _median([x["page_faults"] for x in done]),
    }


async def measure_ingest(
    plan: Plan, impl: str, sec: Security, modes: Sequence[str] = MODES
) -> Dict[str, Any]:
    """``plan.ingest_rounds`` rounds of one ingest per mode, rotating the
    order, after ``plan.ingest_warmup`` rounds that are not kept."""
    keys = plan.ingest_keys
    sources: Dict[str, GossipNode] = {}
    runs: Dict[str, List[Dict[str, Any]]] = {m: [] for m in modes}
    orders: List[List[str]] = []
    try:
        for mode in modes:
            # (max_round_bytes lifted as in bench.e2e: several fresh peers in a
            # row would otherwise meet the answer budget for strangers)
            a = sources[mode] = await _start(
                f"sec-a-{mode[:3]}",
                impl,
                sec,
                mode,
                gossip_interval=LONG_INTERVAL,
                max_round_bytes=1 << 40,
            )
            t_fill = time.perf_counter()
            for i in range(keys):
                a.set(key_of(i), i)
            fill_s = time.perf_counter() - t_fill
            log(f"ingest {mode}: {keys:,} keys on the source in {fill_s:.2f} s")
        for w in range(plan.ingest_warmup):
            for mode in modes:
                run = await _ingest_once(
                    sources[mode], mode, impl, sec, WARMUP_ID + w, keys, plan.timeout
                )
            log(f"ingest warm-up round {w + 1}/{plan.ingest_warmup} done")
        for r in range(plan.ingest_rounds):
            order = [modes[(r + j) % len(modes)] for j in range(len(modes))]
            orders.append(order)
            line = []
            for mode in order:
                run = await _ingest_once(sources[mode], mode, impl, sec, r, keys, plan.timeout)
                runs[mode].append(run)
                line.append(
                    f"{mode} {run['entries_per_s'] / 1e6:.2f} M/s"
                    + ("" if run["complete"] else " INCOMPLETE")
                    + f" (setup {run['setup_s'] * 1000:.1f} ms, {run['page_faults']} faults)"
                )
            log(f"ingest round {r + 1}/{plan.ingest_rounds}: " + ", ".join(line))
    finally:
        await asyncio.gather(*(a.shutdown() for a in sources.values()), return_exceptions=True)
    by_mode = {m: _summarise_ingest(runs[m], keys) for m in modes}
    base = by_mode.get(PLAIN, {}).get("entries_per_s_median")
    ratios = {m: _ratio(by_mode[m]["entries_per_s_median"], base) for m in modes if m != PLAIN}
    paired: Dict[str, Optional[float]] = {}
    for m in modes:
        if m == PLAIN or PLAIN not in runs:
            continue
        per_round = [
            x["entries_per_s"] / p["entries_per_s"]
            for x, p in zip(runs[m], runs[PLAIN])
            if x["complete"] and p["complete"]
        ]
        paired[m] = _median(per_round)
    return {
        "keys": keys,
        "rounds": plan.ingest_rounds,
        "warmup_rounds": plan.ingest_warmup,
        "orders": orders,
        "modes": by_mode,
        "ratio_of_medians": ratios,
        "median_of_round_ratios": paired,
    }


# -- 2. handshake ---------------------------------------------------------------------------


class DelayRelay:
    """A TCP relay on 127.0.0.1 to ``target`` that forwards every chunk
    ``delay`` seconds after reading it, in order, both ways; it logs (time,
    "C" or "S", bytes) per connection ("C": towards the target; 0 bytes: EOF)
    and keeps the bytes each way."""

    def __init__(self, target: Tuple[str, int], delay: float) -> None:
        self.target = target
        self.delay = delay
        self.logs: List[List[Tuple[float, str, int]]] = []
        self.streams: List[Dict[str, bytearray]] = []
        self.addr: Tuple[str, int] = ("", 0)
        self._server: Optional[asyncio.AbstractServer] = None
        self._tasks: List[asyncio.Task] = []

    async def start(self) -> Tuple[str, int]:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        host, port = self._server.sockets[0].getsockname()[:2]
        self.addr = (host, port)
        return self.addr

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        events: List[Tuple[float, str, int]] = []
        streams = {"C": bytearray(), "S": bytearray()}
        self.logs.append(events)
        self.streams.append(streams)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        pumps = [
            asyncio.ensure_future(self._pump(reader, up_writer, "C", events, streams["C"])),
            asyncio.ensure_future(self._pump(up_reader, writer, "S", events, streams["S"])),
        ]
        self._tasks += pumps
        await asyncio.gather(*pumps, return_exceptions=True)
        for w in (writer, up_writer):
            w.close()

    async def _pump(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        side: str,
        events: List[Tuple[float, str, int]],
        stream: bytearray,
    ) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                try:
                    if data is None:
                        if dst.can_write_eof():
                            dst.write_eof()
                        return
                    dst.write(data)
                except (OSError, RuntimeError):
                    return

        sender = asyncio.ensure_future(deliver())
        try:
            while True:
                try:
                    data = await src.read(1 << 16)
                except OSError:
                    data = b""
                now = loop.time()
                events.append((now, side, len(data)))
                stream += data
                queue.put_nowait((now + self.delay, data or None))
                if not data:
                    break
            await sender
        finally:
            sender.cancel()


def tls_stream_error(data: bytes) -> Optional[Dict[str, Any]]:
    """None when ``data`` is a sequence of TLS records (content type 20-23,
    legacy version 3.1 or 3.3); else where the first other byte is, and the
    bytes from there."""
    pos = 0
    while pos + 5 <= len(data):
        kind, major, minor = data[pos], data[pos + 1], data[pos + 2]
        if kind not in (20, 21, 22, 23) or major != 3 or minor not in (1, 3):
            return {"offset": pos, "bytes_hex": bytes(data[pos : pos + 24]).hex()}
        pos += 5 + int.from_bytes(data[pos + 3 : pos + 5], "big")
    return None


def flights(events: Sequence[Tuple[float, str, int]]) -> List[List[Any]]:
    """[side, bytes] of each flight: consecutive chunks one way (EOFs left out)."""
    out: List[List[Any]] = []
    for _, side, n in events:
        if not n:
            continue
        if out and out[-1][0] == side:
            out[-1][1] += n
        else:
            out.append([side, n])
    return out


def flight_round_trips(fl: Sequence[Sequence[Any]]) -> int:
    """Flights the dialling end sent and then waited on: each "C" flight
    followed by an "S" one."""
    return sum(1 for a, b in zip(fl, fl[1:]) if a[0] == "C" and b[0] == "S")


async def _ping_sample(
    p: GossipNode, addr: Tuple[str, int], timeout: float
) -> Tuple[Optional[float], Optional[float], Optional[str]]:
    """(seconds from the call to the answer, what ping() returned, None), or
    (None, None, the error) when no answer came."""
    t0 = time.perf_counter()
    try:
        rtt = await p.ping(addr, timeout=timeout)
    except (asyncio.TimeoutError, OSError, ValueError) as exc:  # NodeError, AuthError
        return None, None, f"{type(exc).__name__}: {exc}"[:200]
    return time.perf_counter() - t0, rtt, None


async def measure_handshake(
    plan: Plan, impl: str, sec: Security, modes: Sequence[str] = MODES
) -> Dict[str, Any]:
    """New-connection ping latency per mode, direct and through a DelayRelay."""
    pairs: Dict[str, Tuple[GossipNode, GossipNode]] = {}
    relays: Dict[str, DelayRelay] = {}
    total: Dict[str, List[float]] = {m: [] for m in modes}
    rtt: Dict[str, List[float]] = {m: [] for m in modes}
    relayed: Dict[str, List[float]] = {m: [] for m in modes}
    errors: Dict[str, List[str]] = {m: [] for m in modes}
    relay_errors: Dict[str, List[str]] = {m: [] for m in modes}
    relay_timeout = 0.5 + 20 * plan.relay_delay
    # no membership: a ping then is the only frame each way
    kw = {"gossip_interval": LONG_INTERVAL, "membership": False}
    try:
        for mode in modes:
            p = await _start(f"ping-p-{mode[:3]}", impl, sec, mode, **kw)
            t = await _start(f"ping-t-{mode[:3]}", impl, sec, mode, **kw)
            pairs[mode] = (p, t)
        accepted0 = {m: pairs[m][1].stats.connections_accepted for m in modes}
        for i in range(plan.ping_warmup + plan.ping_samples):
            for j in range(len(modes)):
                mode = modes[(i + j) % len(modes)]
                p, t = pairs[mode]
                took, rt, err = await _ping_sample(p, t.addr, 2.0)
                if i >= plan.ping_warmup:
                    if err is not None:
                        errors[mode].append(err)
                    else:
                        total[mode].append(took)  # type: ignore[arg-type]
                        rtt[mode].append(rt)  # type: ignore[arg-type]
                await asyncio.sleep(plan.ping_gap)
        new_conns = {m: pairs[m][1].stats.connections_accepted - accepted0[m] for m in modes}
        log(
            "handshake: median time to a first answer on a new connection: "
            + ", ".join(f"{m} {(_median(total[m]) or 0) * 1e6:.0f} µs" for m in modes)
            + "".join(f"; {m}: {len(errors[m])} pings unanswered" for m in modes if errors[m])
        )
        for mode in modes:
            relays[mode] = DelayRelay(pairs[mode][1].addr, plan.relay_delay)
            await relays[mode].start()
        for i in range(plan.relay_samples):
            for j in range(len(modes)):
                mode = modes[(i + j) % len(modes)]
                took, _, err = await _ping_sample(pairs[mode][0], relays[mode].addr, relay_timeout)
                if err is None:
                    relayed[mode].append(took)  # type: ignore[arg-type]
                else:
                    relay_errors[mode].append(err)
                await asyncio.sleep(4 * plan.relay_delay)  # the relay's close drains
        peers_left = {m: len(pairs[m][0].peers) for m in modes}
        auth_failures = {m: sum(n.stats.auth_failures for n in pairs[m]) for m in modes}
    finally:
        for relay in relays.values():
            await relay.close()
        await asyncio.gather(
            *(n.shutdown() for pair in pairs.values() for n in pair), return_exceptions=True
        )
    injected = 2 * plan.relay_delay
    out_modes: Dict[str, Dict[str, Any]] = {}
    for mode in modes:
        med = _median(total[mode])
        rel = _median(relayed[mode])
        relay = relays[mode]
        fl = flights(relay.logs[-1]) if relay.logs else []
        rts = None if med is None or rel is None else (rel - med) / injected
        row: Dict[str, Any] = {
            "samples": len(total[mode]),
            "unanswered": len(errors[mode]),
            "errors": errors[mode][:5],
            "new_connections": new_conns[mode],
            "latency_us_median": _us(med),
            "latency_us_p10": _us(_quantile(total[mode], 0.1)),
            "latency_us_p90": _us(_quantile(total[mode], 0.9)),
            "ping_rtt_us_median": _us(_median(rtt[mode])),
            "relayed_latency_ms_median": None if rel is None else rel * 1000,
            "relayed_latency_ms_all": [x * 1000 for x in relayed[mode]],
            "relay_unanswered": len(relay_errors[mode]),
            "relay_errors": relay_errors[mode][:5],
            "round_trips": rts,
            "round_trips_rounded": None if rts is None else round(rts),
            "flights": fl,
            "flight_round_trips": flight_round_trips(fl),
            "pinger_peers_after": peers_left[mode],
            "auth_failures": auth_failures[mode],
        }
        if mode == TLS and relay.streams:
            # what the accepting end wrote, checked record by record
            row["server_stream_error"] = tls_stream_error(bytes(relay.streams[-1]["S"]))
            row["client_stream_error"] = tls_stream_error(bytes(relay.streams[-1]["C"]))
        out_modes[mode] = row
        if relay_errors[mode]:
            log(
                f"handshake {mode}: {len(relay_errors[mode])} of {plan.relay_samples} pings "
                f"through the relay unanswered ({relay_errors[mode][0]}); flights "
                + " | ".join(f"{s} {n}" for s, n in fl)
                + (
                    f"; the accepting end's bytes at offset {row['server_stream_error']['offset']}"
                    f" are no TLS record: {row['server_stream_error']['bytes_hex']}"
                    if row.get("server_stream_error")
                    else ""
                )
            )
    loopback = out_modes.get(PLAIN, {}).get("ping_rtt_us_median")
    base = out_modes.get(PLAIN, {}).get("latency_us_median")
    rt0 = out_modes.get(PLAIN, {}).get("round_trips")
    added: Dict[str, Dict[str, Any]] = {}
    for mode in modes:
        if mode == PLAIN or base is None:
            continue
        row = out_modes[mode]
        lat = row["latency_us_median"]
        us = None if lat is None else lat - base
        rt = row["round_trips"]
        added[mode] = {
            "latency_us": us,
            "in_loopback_rtts": _ratio(us, loopback),
            "round_trips": None if rt is None or rt0 is None else rt - rt0,
            "round_trips_rounded": None
            if rt is None or rt0 is None
            else row["round_trips_rounded"] - out_modes[PLAIN]["round_trips_rounded"],
            "flight_round_trips": row["flight_round_trips"]
            - out_modes[PLAIN]["flight_round_trips"],
        }
        a = added[mode]
        log(
            f"handshake {mode}: "
            + ("n/a" if us is None else f"+{us:.0f} µs")
            + " over plaintext"
            + ("" if a["in_loopback_rtts"] is None else f" = {a['in_loopback_rtts']:.1f}")
            + f" loopback ping RTTs ({loopback or 0:.0f} µs); through the relay "
            + ("n/a" if rt is None else f"{rt:.2f}")
            + f" round trips against plaintext's {rt0 or 0:.2f}"
            + ("" if a["round_trips"] is None else f" ({a['round_trips']:+.2f})")
            + "; flights "
            + " | ".join(f"{s} {n}" for s, n in row["flights"])
        )
    return {
        "samples": plan.ping_samples,
        "relay_delay_ms": plan.relay_delay * 1000,
        "relay_samples": plan.relay_samples,
        "loopback_rtt_us": loopback,
        "modes": out_modes,
        "added": added,
    }


def _us(x: Optional[float]) -> Optional[float]:
    return None if x is None else x * 1e6


# -- 3. idle traffic ----------------------------------------------------------------------------


class SealCounter:
    """Counts what ``Session.seal`` is given and returns, process-wide, while on."""

    def __init__(self) -> None:
        self.calls = 0
        self.plain = 0
        self.wire = 0
        self.records = 0

    @contextlib.contextmanager
    def counting(self) -> Iterator[SealCounter]:
        original = Session.seal
        counter = self

        def seal(session: Session, data: bytes) -> bytes:
            out = original(session, data)
            counter.calls += 1
            counter.plain += len(data)
            counter.wire += len(out)
            counter.records += (len(out) - len(data)) // RECORD_OVERHEAD
            return out

        Session.seal = seal  # type: ignore[method-assign,assignment]
        try:
            yield self
        finally:
            Session.seal = original  # type: ignore[method-assign]


def _totals(cluster: ClusterNetwork) -> Dict[str, int]:
    return {
        name: sum(getattr(n.stats, name) for n in cluster.nodes)
        for name in (
            "bytes_sent",
            "frames_sent",
            "rounds",
            "connections_opened",
            "connections_accepted",
            "auth_failures",
        )
    }


def _all_hold(cluster: ClusterNetwork, keys: int) -> Callable[[], bool]:
    return lambda: all(n.state_len() == keys for n in cluster.nodes)


async def measure_idle(plan: Plan, impl: str, sec: Security) -> Dict[str, Any]:
    """A plaintext and a cluster-key cluster idle side by side; bytes per frame."""
    clusters: Dict[str, ClusterNetwork] = {}
    try:
        for mode in (PLAIN, KEY):
            # the same node ids (prefix) in both: digests and records carry them
            clusters[mode] = await ClusterNetwork.spawn(
                plan.idle_nodes,
                gossip_interval=plan.idle_interval,
                prefix="idle",
                implementation=impl,
                **sec.config(mode, ""),
            )
        for cluster in clusters.values():
            for i in range(plan.idle_keys):
                cluster.nodes[i % plan.idle_nodes].set(key_of(i), i)
        for mode, cluster in clusters.items():
            done = await cluster.wait_until(_all_hold(cluster, plan.idle_keys), plan.timeout)
            if not done.converged:
                raise RuntimeError(f"idle {mode}: the {plan.idle_keys} keys did not converge")
        await asyncio.sleep(plan.idle_settle)
        counter = SealCounter()
        with counter.counting():
            before = {m: _totals(c) for m, c in clusters.items()}
            t0 = time.perf_counter()
            await asyncio.sleep(plan.idle_seconds)
            window = time.perf_counter() - t0
            after = {m: _totals(c) for m, c in clusters.items()}
    finally:
        await asyncio.gather(*(c.shutdown_all() for c in clusters.values()), return_exceptions=True)
    modes: Dict[str, Dict[str, Any]] = {}
    for mode in clusters:
        d = {k: after[mode][k] - before[mode][k] for k in after[mode]}
        frames = d["frames_sent"]
        row: Dict[str, Any] = {
            **d,
            "bytes_per_frame": d["bytes_sent"] / frames if frames else None,
            "frames_per_node_round": frames / d["rounds"] if d["rounds"] else None,
            "bytes_per_node_round": d["bytes_sent"] / d["rounds"] if d["rounds"] else None,
        }
        if mode == KEY:
            row.update(
                seal_calls=counter.calls,
                sealed_plaintext_bytes=counter.plain,
                sealed_wire_bytes=counter.wire,
                records=counter.records,
                # bytes_sent that are no sealed record: handshakes in the window
                unsealed_bytes=d["bytes_sent"] - counter.wire,
                plaintext_bytes_per_frame=counter.plain / frames if frames else None,
                overhead_bytes_per_frame=(counter.wire - counter.plain) / frames
                if frames
                else None,
                overhead_bytes_per_record=(counter.wire - counter.plain) / counter.records
                if counter.records
                else None,
                frames_per_record=frames / counter.records if counter.records else None,
            )
        modes[mode] = row
    p, k = modes[PLAIN], modes[KEY]
    diff = (
        None
        if p["bytes_per_frame"] is None or k["bytes_per_frame"] is None
        else k["bytes_per_frame"] - p["bytes_per_frame"]
    )
    log(
        f"idle ({plan.idle_nodes} nodes, {window:.1f} s): plaintext {p['bytes_per_frame']:.1f} "
        f"B/frame ({p['frames_sent']} frames), cluster key {k['bytes_per_frame']:.1f} B/frame "
        f"({k['frames_sent']} frames, {k['records']} records): difference {diff:+.1f} B/frame; "
        f"sealing adds {k['overhead_bytes_per_frame']:.2f} B/frame measured within the keyed "
        f"cluster ({k['overhead_bytes_per_record']:.0f} B per record, "
        f"{k['frames_per_record']:.2f} frames per record)"
    )
    return {
        "nodes": plan.idle_nodes,
        "keys": plan.idle_keys,
        "interval": plan.idle_interval,
        "window_s": window,
        "modes": modes,
        "bytes_per_frame_difference": diff,
        "overhead_bytes_per_frame": k["overhead_bytes_per_frame"],
    }


# -- 4. the sealing path -------------------------------------------------------------------------


def _session_pair() -> Tuple[Session, Session]:
    """(dialling, accepting) sessions of one fresh key, handshake done in memory."""
    ring = Keyring([generate_key()])
    c, s = Session(ring, True), Session(ring, False)
    s.receive(c.start())
    c.receive(s.out)
    s.receive(c.out)
    assert c.established and s.established
    return c, s


def _seal_into(aead: AESGCM, data: bytes, first: int, out: Optional[bytearray] = None) -> bytearray:
    """The records ``Session.seal`` makes of ``data`` (nonces from ``first``),
    encrypted with ``AESGCM.encrypt_into`` straight into one buffer (``out``
    when given and large enough, else a new one): a reference for what the
    cipher alone allows, not fastgossip's code."""
    size = len(data)
    records = (size + MAX_RECORD_PLAINTEXT - 1) // MAX_RECORD_PLAINTEXT
    need = size + records * RECORD_OVERHEAD
    if out is None or len(out) < need:
        out = bytearray(need)
    src, dst = memoryview(data), memoryview(out)
    pos = 0
    for n, i in enumerate(range(0, size, MAX_RECORD_PLAINTEXT)):
        chunk = src[i : i + MAX_RECORD_PLAINTEXT]
        length = len(chunk) + TAG_SIZE
        header = length.to_bytes(RECORD_HEADER, "big")
        dst[pos : pos + RECORD_HEADER] = header
        pos += RECORD_HEADER
        aead.encrypt_into((first + n).to_bytes(12, "big"), chunk, header, dst[pos : pos + length])
        pos += length
    return out


def _encrypt_records(aead: AESGCM, data: bytes) -> None:
    """The bare cipher over ``data``'s 64 KiB records, each output dropped."""
    view = memoryview(data)
    for n, i in enumerate(range(0, len(data), MAX_RECORD_PLAINTEXT)):
        aead.encrypt(n.to_bytes(12, "big"), view[i : i + MAX_RECORD_PLAINTEXT], b"\0" * 4)
    view.release()


def _open_all(session: Session, reads: List[bytes]) -> int:
    return sum(len(session.receive(chunk)) for chunk in reads)


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


SEALING_ROWS = ("seal", "receive", "encrypt", "encrypt_into", "encrypt_into_reused")


def measure_sealing(
    size: int, repeats: int, label: str = "", read_size: int = 256 << 10
) -> Dict[str, Any]:
    """``Session.seal`` of ``size`` bytes in one call (as a node answers a
    fresh peer: one write of every delta frame), then ``Session.receive`` of
    the records in ``read_size`` reads (asyncio's socket reads); beside them
    the bare cipher over the same 64 KiB records: outputs dropped, into one
    fresh buffer, into one buffer reused from call to call. Fresh data and
    sessions each repeat; medians, and the minor page faults of each call
    (fresh memory the allocator maps in: a microsecond or two each on a VM)."""
    rows: Dict[str, List[float]] = {n: [] for n in SEALING_ROWS}
    faults: Dict[str, List[int]] = {n: [] for n in SEALING_ROWS}

    def timed(name: str, fn: Callable[..., Any], *args: Any) -> Any:
        f0, t0 = _faults(), time.perf_counter()
        result = fn(*args)
        rows[name].append(time.perf_counter() - t0)
        faults[name].append(_faults() - f0)
        return result

    scratch = bytearray(size + (size // MAX_RECORD_PLAINTEXT + 1) * RECORD_OVERHEAD)
    for r in range(repeats):
        data = os.urandom(size)  # fresh memory, as the joined frames of an answer are
        c, s = _session_pair()
        aead = AESGCM(generate_key())
        gc.collect()
        # which of the two runs first alternates: the second may reuse memory
        # the first gave back, and skip its page faults
        if r % 2:
            timed("encrypt_into", _seal_into, aead, data, 0)
        sealed = timed("seal", c.seal, data)
        if not r % 2:
            timed("encrypt_into", _seal_into, aead, data, 0)
        timed("encrypt_into_reused", _seal_into, aead, data, 0, scratch)
        reads = [sealed[i : i + read_size] for i in range(0, len(sealed), read_size)]
        del sealed
        assert timed("receive", _open_all, s, reads) == size
        del reads
        timed("encrypt", _encrypt_records, aead, data)
    out: Dict[str, Any] = {"bytes": size, "repeats": repeats, "read_size": read_size}
    for name, xs in rows.items():
        med = statistics.median(xs)
        out[name] = {
            "ms_median": med * 1000,
            "ms_min": min(xs) * 1000,
            "gb_per_s": size / med / 1e9,
            "page_faults_median": statistics.median(faults[name]),
        }
    log(
        f"sealing {size / 1e6:.1f} MB{f' ({label})' if label else ''}: "
        + ", ".join(
            f"{name} {out[name]['ms_median']:.2f} ms ({out[name]['gb_per_s']:.2f} GB/s, "
            f"{out[name]['page_faults_median']:.0f} faults)"
            for name in SEALING_ROWS
        )
    )
    return out


def _label(func: Tuple[str, int, str]) -> str:
    path, line, name = func
    return name if path == "~" else f"{os.path.basename(path)}:{line}({name})"


def _profile_rows(st: pstats.Stats, top: int) -> Dict[str, Any]:
    """The top functions by own time, and where the byte copies and the
    cipher's time went (``bytes.join`` by caller, ``secure.py``'s own time)."""
    stats = st.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.values())
    rows = [
        {
            "function": _label(func),
            "calls": nc,
            "tottime_ms": tt * 1000,
            "cumtime_ms": ct * 1000,
        }
        for func, (_, nc, tt, ct, _) in sorted(stats.items(), key=lambda kv: -kv[1][2])[:top]
    ]
    joins: Dict[str, float] = {}
    cipher = secure_own = 0.0
    for func, (_, _, tt, _, callers) in stats.items():
        name = func[2]
        if "'join' of 'bytes'" in name:
            for caller, (_, _, ctt, _) in callers.items():
                joins[_label(caller)] = joins.get(_label(caller), 0.0) + ctt * 1000
        elif "AESGCM" in name:
            cipher += tt
        elif func[0].endswith(os.path.join("fastgossip", "secure.py")):
            secure_own += tt
    return {
        "total_ms": total * 1000,
        "top": rows,
        "bytes_join_ms_by_caller": dict(sorted(joins.items(), key=lambda kv: -kv[1])),
        "aesgcm_ms": cipher * 1000,
        "secure_py_own_ms": secure_own * 1000,
    }


async def profile_ingest(plan: Plan, impl: str, sec: Security, top: int = 25) -> Dict[str, Any]:
    """One more ingest per mode but TLS under cProfile (both ends: one process)."""
    out: Dict[str, Any] = {}
    for mode in (PLAIN, KEY):
        a = await _start(
            f"sec-a-{mode[:3]}",
            impl,
            sec,
            mode,
            gossip_interval=LONG_INTERVAL,
            max_round_bytes=1 << 40,
        )
        try:
            for i in range(plan.ingest_keys):
                a.set(key_of(i), i)
            prof = cProfile.Profile()
            run = await _ingest_once(
                a, mode, impl, sec, plan.ingest_rounds, plan.ingest_keys, plan.timeout, prof
            )
        finally:
            await a.shutdown()
        buf = io.StringIO()
        st = pstats.Stats(prof, stream=buf)
        st.sort_stats("tottime").print_stats(top)
        rows = _profile_rows(st, top)
        log(
            f"profile of a {mode} ingest ({run['entries_per_s'] / 1e6:.2f} M/s under cProfile, "
            f"{rows['total_ms']:.1f} ms profiled): bytes.join by caller "
            + ", ".join(f"{k} {v:.2f} ms" for k, v in rows["bytes_join_ms_by_caller"].items())
            + f"; AESGCM {rows['aesgcm_ms']:.2f} ms"
            + f"; secure.py's own {rows['secure_py_own_ms']:.2f} ms"
        )
        log(buf.getvalue())
        out[mode] = {"entries_per_s": run["entries_per_s"], **rows}
    return out


# -- the run ------------------------------------------------------------------------------------


def evaluate_targets(result: Dict[str, Any]) -> List[Dict[str, Any]]:
    out: List[Dict[str, Any]] = []

    def add(what: str, goal: str, measured: Optional[float], unit: str, ok: Optional[bool]) -> None:
        out.append({"what": what, "target": goal, "measured": measured, "unit": unit, "pass": ok})

    ing = result.get("ingest") or {}
    r = (ing.get("ratio_of_medians") or {}).get(KEY)
    pct = None if r is None else 100 * r
    add(
        f"ingest of {ing.get('keys', 0):,} keys with a cluster key, over plaintext "
        "(ratio of the medians)",
        f"≥ {INGEST_TARGET * 100:.0f} %",
        pct,
        "%",
        None if r is None else r >= INGEST_TARGET,
    )
    hs = result.get("handshake") or {}
    added = (hs.get("added") or {}).get(KEY) or {}
    rt = added.get("round_trips")
    add(
        "round trips the cluster-key handshake adds to a new connection's first answer "
        "(through a delaying relay)",
        "≤ 1",
        rt,
        "round trips",
        None if rt is None else round(rt) <= 1 and added.get("flight_round_trips", 0) <= 1,
    )
    idle = result.get("idle") or {}
    over = idle.get("overhead_bytes_per_frame")
    add(
        "idle traffic: bytes a cluster key adds per frame sent",
        f"≤ {AEAD_BOUND} B",
        over,
        "B/frame",
        None if over is None else over <= AEAD_BOUND,
    )
    return out


def validate(result: Dict[str, Any]) -> None:
    """Assert the JSON shape ``bench.report`` reads (the smoke test calls this)."""
    assert {"meta", "settings", "ingest", "handshake", "idle", "sealing", "targets"} <= set(result)
    ing = result["ingest"]
    assert ing["keys"] > 0 and set(ing["modes"]) <= set(MODES)
    for row in ing["modes"].values():
        assert len(row["runs"]) == ing["rounds"]
        assert row["entries_per_s_median"] is None or row["entries_per_s_median"] > 0
    for mode, row in result["handshake"]["modes"].items():
        assert mode in MODES
        for name in ("latency_us_median", "ping_rtt_us_median", "round_trips", "flights"):
            assert name in row, name
    idle = result["idle"]
    assert set(idle["modes"]) == {PLAIN, KEY}
    for name in ("bytes_per_frame", "frames_sent", "bytes_sent"):
        assert all(name in row for row in idle["modes"].values()), name
    for state in ("fresh_process", "warm"):
        for name in SEALING_ROWS:
            assert result["sealing"][state][name]["ms_median"] > 0, (state, name)
    for t in result["targets"]:
        assert {"what", "target", "measured", "unit", "pass"} <= set(t)
    json.dumps(result)


async def measure(
    plan: Plan, impl: str, profile: bool = False, modes: Sequence[str] = MODES
) -> Dict[str, Any]:
    """Every part; the data of the result (no meta, settings or targets)."""
    with tempfile.TemporaryDirectory(prefix="fastgossip-secure-") as tmp:
        sec = Security(node_ids(plan), os.path.join(tmp, "pki"))
        # the sealing path twice: in the fresh process (whose allocator maps
        # in new memory for every large buffer) and after the other parts
        # (whose freed memory it reuses), the two states a node's heap is in
        fresh = measure_sealing(plan.seal_bytes, plan.seal_repeats, "fresh process")
        data: Dict[str, Any] = {
            "ingest": await measure_ingest(plan, impl, sec, modes),
            "handshake": await measure_handshake(plan, impl, sec, modes),
            "idle": await measure_idle(plan, impl, sec),
        }
        data["sealing"] = {
            "fresh_process": fresh,
            "warm": measure_sealing(plan.seal_bytes, plan.seal_repeats, "after the other parts"),
        }
        if profile:
            data["profile"] = await profile_ingest(plan, impl, sec)
    return data


def run(
    plan: Plan,
    impl: str,
    mode: str,
    out: Optional[str] = None,
    profile: bool = False,
    log_fn: Callable[[str], None] = log,
) -> Dict[str, Any]:
    """Measure, then write ``out`` (when given) as ``write_timed`` does; returns the result."""
    started = time.perf_counter()
    meta = machine()
    log_fn(f"{machine_line(meta)}; {mode} run, implementation {impl}")
    data = asyncio.run(measure(plan, impl, profile))
    settings: Dict[str, Any] = {
        "mode": mode,
        "implementation": impl,
        "plan": asdict(plan),
        # what was measured: meta's git fields describe the checkout, which
        # is not it when PYTHONPATH points at another tree's src
        "fastgossip_package": os.path.dirname(os.path.abspath(fastgossip.__file__)),
        "in_process": "both ends of every connection in this process, one event loop",
    }
    targets = evaluate_targets(data)
    if out:
        write_timed(out, meta, settings, data, targets, started, log_fn)
        with open(out) as f:
            return json.load(f)  # type: ignore[no-any-return]
    settings["elapsed_s"] = time.perf_counter() - started
    return {"meta": meta, "settings": settings, **data, "targets": targets}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, ~10 s (full: ~30 s)")
    parser.add_argument("--impl", choices=["cython", "python"], default=None)
    parser.add_argument("--keys", type=int, default=None, help="keys of the ingest")
    parser.add_argument("--rounds", type=int, default=None, help="ingest rounds (each mode once)")
    parser.add_argument("--pings", type=int, default=None, help="ping samples per mode")
    parser.add_argument("--relay-delay", type=float, default=None, help="s each way")
    parser.add_argument("--idle-seconds", type=float, default=None)
    parser.add_argument(
        "--profile", action="store_true", help="profile a plaintext and a cluster-key ingest"
    )
    parser.add_argument(
        "--out",
        default=None,
        help="JSON file (default bench/results/secure.json; secure-quick.json in quick)",
    )
    args = parser.parse_args(argv)
    plan = Plan.quick() if args.quick else Plan.full()
    for attr, value in (
        ("ingest_keys", args.keys),
        ("ingest_rounds", args.rounds),
        ("ping_samples", args.pings),
        ("relay_delay", args.relay_delay),
        ("idle_seconds", args.idle_seconds),
    ):
        if value is not None:
            setattr(plan, attr, value)
    impl = args.impl or ("cython" if _compiled() else "python")
    mode = "quick" if args.quick else "full"
    out = args.out or os.path.join(RESULTS, "secure-quick.json" if args.quick else "secure.json")
    run(plan, impl, mode, out, args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
