"""Fuzz the cluster-key handshake and sealed records: ``python -m bench.secure_fuzz``.

Every input goes to a fresh accepting ``Session`` (the side a stranger or an
attacker on the wire talks to). Kinds of input:

* ``random``: random bytes (0-300);
* ``hello``: a ClientHello (the right key id, or another's) with bits flipped,
  followed by random bytes;
* ``flip``: a real recorded dialler stream (hello, Finish, sealed frames) with
  one random bit flipped;
* ``replay``: that stream with one record repeated; ``reorder``: two records
  swapped; ``drop``: one record left out; ``truncate``: cut at a random byte;
* ``splice``: the stream with its records taken from another session.

The recorded stream is replayed against an acceptor given the same nonce, so
the untouched stream yields its plaintext exactly. The rules checked on every
input: the only exception is ``AuthError``; what comes out is a prefix of the
genuine plaintext, cut at a record boundary before any altered byte (nothing
altered is ever read); a wrong key yields nothing. The plaintext is a stream
of GossipBatch frames: what comes out is decoded and merged into a table, and
the table must equal the one the genuine records before the alteration make.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from typing import Any, Callable, Dict, List, Tuple

from fastgossip import AuthError, Entry, GossipBatch, Keyring, encode
from fastgossip._impl import load
from fastgossip.secure import HELLO_SIZE, RECORD_HEADER, Session

from ._meta import machine, write_json

KEY = bytes(range(32))
KINDS = ("random", "hello", "flip", "replay", "reorder", "drop", "truncate", "splice")


def _fixed(nonce: bytes) -> Callable[[int], bytes]:
    return lambda n: nonce[:n]


def _records(wire: bytes) -> List[bytes]:
    out, pos = [], 0
    while pos < len(wire):
        n = int.from_bytes(wire[pos : pos + RECORD_HEADER], "big")
        out.append(wire[pos : pos + RECORD_HEADER + n])
        pos += RECORD_HEADER + n
    return out


class Recording:
    """One honest session: the dialler's bytes, and the acceptor's nonce."""

    def __init__(self, rng: random.Random, plaintext: bytes, chunk: int) -> None:
        self.nonce_s = rng.randbytes(32)
        client = Session(Keyring([KEY]), initiator=True, rand=rng.randbytes)
        server = Session(Keyring([KEY]), initiator=False, rand=_fixed(self.nonce_s))
        hello = client.start()
        server.receive(hello)
        client.receive(server.out)
        finish = client.out
        server.receive(finish)
        records = [client.seal(plaintext[i : i + chunk]) for i in range(0, len(plaintext), chunk)]
        self.head = hello + finish
        self.records = records
        self.chunks = [plaintext[i : i + chunk] for i in range(0, len(plaintext), chunk)]
        self.plaintext = plaintext
        self.cuts = [0]  # plaintext length after each record
        for c in self.chunks:
            self.cuts.append(self.cuts[-1] + len(c))

    def acceptor(self) -> Session:
        return Session(Keyring([KEY]), initiator=False, rand=_fixed(self.nonce_s))


def _plaintext(rng: random.Random, n_entries: int) -> bytes:
    frames = []
    for f in range(3):
        entries = [
            Entry(f"k{f}-{i}", rng.randbytes(rng.randrange(0, 40)), i + 1, "o~1", (f << 20) + i + 1)
            for i in range(n_entries)
        ]
        frames.append(encode(GossipBatch("fuzz", entries)))
    return b"".join(frames)


def _merge(table_mod: Any, codec: Any, data: bytes) -> Dict[str, Any]:
    state = table_mod.GossipState()
    decoder = codec.FrameDecoder()
    for frame in decoder.feed_frames(data):
        state.merge_frame(frame)
    return {e.key: (e.value, e.version, e.origin) for e in state.entries()}


def run(inputs: int = 100_000, seed: int = 1, implementation: str = "cython") -> Dict[str, Any]:
    rng = random.Random(seed)
    codec, table_mod = load("codec", implementation), load("table", implementation)
    recordings = [Recording(rng, _plaintext(rng, 30), rng.choice([64, 200, 700])) for _ in range(8)]
    # the table each genuine prefix of records makes (merging a partial frame
    # stream: only whole frames merge)
    expected: Dict[Tuple[int, int], Dict[str, Any]] = {}
    counts = {k: 0 for k in KINDS}
    refused = {k: 0 for k in KINDS}
    yielded = 0
    other_key = Keyring([os.urandom(32)])
    started = time.perf_counter()
    for i in range(inputs):
        kind = KINDS[i % len(KINDS)]
        counts[kind] += 1
        rec = recordings[rng.randrange(len(recordings))]
        records = list(rec.records)
        # index of the first record not genuine-in-place (None: all genuine)
        first_bad: Any = None
        if kind == "random":
            data = rng.randbytes(rng.randrange(0, 300))
            server = Session(Keyring([KEY]), initiator=False)
        elif kind == "hello":
            ring = Keyring([KEY]) if rng.random() < 0.5 else other_key
            hello = bytearray(Session(ring, initiator=True).start())
            for _ in range(rng.randrange(0, 3)):
                hello[rng.randrange(HELLO_SIZE)] ^= 1 << rng.randrange(8)
            data = bytes(hello) + rng.randbytes(rng.randrange(0, 120))
            server = Session(Keyring([KEY]), initiator=False)
        else:
            server = rec.acceptor()
            if kind == "flip":
                stream = bytearray(rec.head + b"".join(records))
                bit = rng.randrange(len(stream) * 8)
                stream[bit // 8] ^= 1 << (bit % 8)
                data = bytes(stream)
                pos = bit // 8 - len(rec.head)
                first_bad = -1
                if pos >= 0:
                    acc = 0
                    for j, r in enumerate(records):
                        acc += len(r)
                        if pos < acc:
                            first_bad = j
                            break
            else:
                j = rng.randrange(len(records))
                if kind == "replay":
                    records.insert(j + 1, records[j])
                    first_bad = j + 1
                elif kind == "reorder" and len(records) > 1:
                    k = rng.randrange(len(records) - 1)
                    records[k], records[k + 1] = records[k + 1], records[k]
                    first_bad = k
                elif kind == "drop":
                    del records[j]
                    first_bad = j if j < len(records) else None
                elif kind == "splice":
                    other = recordings[(recordings.index(rec) + 1) % len(recordings)]
                    records[j:] = other.records[j:]
                    first_bad = j if j < len(records) else None
                data = rec.head + b"".join(records)
                if kind == "truncate":
                    data = data[: rng.randrange(len(data))]
        out = b""
        try:
            # fed in random pieces, as TCP would
            pos = 0
            while pos < len(data):
                step = rng.randrange(1, 2000)
                out += server.receive(data[pos : pos + step])
                pos += step
        except AuthError:
            refused[kind] += 1
        if out:
            yielded += 1
            if kind in ("random", "hello"):
                raise AssertionError(f"input {i} ({kind}, seed {seed}) yielded plaintext")
            # whole genuine records only, none at or after the first altered one
            limit = len(rec.chunks) if first_bad is None else max(first_bad, 0)
            cuts = rec.cuts[: limit + 1]
            if len(out) not in cuts or not rec.plaintext.startswith(out):
                raise AssertionError(f"input {i} ({kind}, seed {seed}) yielded altered plaintext")
            key = (recordings.index(rec), len(out))
            if key not in expected:
                expected[key] = _merge(table_mod, codec, rec.plaintext[: len(out)])
            if _merge(table_mod, codec, out) != expected[key]:
                raise AssertionError(f"input {i} ({kind}, seed {seed}) merged something else")
    elapsed = time.perf_counter() - started
    return {
        "inputs": inputs,
        "seed": seed,
        "implementation": implementation,
        "kinds": counts,
        "refused": refused,
        "yielded_genuine_prefix": yielded,
        "seconds": round(elapsed, 2),
        "inputs_per_s": round(inputs / elapsed),
    }


def main(argv: Any = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="bench/results/secure_fuzz.json")
    args = parser.parse_args(argv)
    runs = [run(args.inputs, args.seed, impl) for impl in ("cython", "python")]
    target = {
        "what": "handshake and sealed-record fuzz: only AuthError, nothing altered read",
        "target": f">= {args.inputs:,} inputs",
        "measured": float(sum(r["inputs"] for r in runs) // len(runs)),
        "unit": "inputs",
        "pass": True,  # any violation raised above
    }
    write_json(args.out, {"meta": machine(), "runs": runs, "targets": [target]})
    for r in runs:
        print(
            f"{r['implementation']}: {r['inputs']:,} inputs in {r['seconds']} s; refused by kind "
            f"{r['refused']}; {r['yielded_genuine_prefix']:,} yielded a genuine prefix; "
            "no other exception, nothing altered read"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
