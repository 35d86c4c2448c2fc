"""The CLI commands that talk to a running agent over its HTTP API
(``fastgossip members|get|put|del|keys|watch|info|leave``). Standard library
only (urllib): the client needs no extra.

Exit codes scripts can rely on: 0 done (found), 1 not found, 2 usage (a bad
argument, or a request the agent refused as bad: 400, 401, 413), 3 the agent
is unreachable (or failing: 5xx).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, List, Optional, TextIO, Tuple

DEFAULT_ADDR = "127.0.0.1:7947"
OK, NOT_FOUND, USAGE, UNREACHABLE = 0, 1, 2, 3

CLIENT_COMMANDS = ("members", "get", "put", "del", "keys", "watch", "info", "leave")


class _Failed(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def add_client_parsers(sub: Any) -> None:
    def common(p: Any) -> Any:
        p.add_argument(
            "--http-addr",
            default=os.environ.get("FASTGOSSIP_HTTP_ADDR", DEFAULT_ADDR),
            help=f"the agent's HTTP API (default $FASTGOSSIP_HTTP_ADDR or {DEFAULT_ADDR})",
        )
        p.add_argument(
            "--token-file", default=None, help="the API token (or $FASTGOSSIP_HTTP_TOKEN)"
        )
        p.add_argument("--json", action="store_true", help="JSON for scripts")
        return p

    common(sub.add_parser("members", help="an agent's view of the members"))
    p = common(sub.add_parser("get", help="read a key (its raw value on stdout)"))
    p.add_argument("key")
    p = common(sub.add_parser("put", help="write a key"))
    p.add_argument("key")
    p.add_argument("value", help="the value (- reads stdin)")
    p.add_argument("--ttl", default=None, help="expire after, e.g. 30s")
    p.add_argument("--ephemeral", action="store_true", help="lives as long as the agent's run")
    p.add_argument("--durable", action="store_true", help="return once on the agent's disk")
    p = common(sub.add_parser("del", help="delete a key"))
    p.add_argument("key")
    p = common(sub.add_parser("keys", help="list keys (under a prefix)"))
    p.add_argument("prefix", nargs="?", default="")
    p = common(sub.add_parser("watch", help="print changes under a prefix as they happen"))
    p.add_argument("prefix", nargs="?", default="")
    p.add_argument("--count", type=int, default=0, help="stop after this many changes")
    common(sub.add_parser("info", help="the agent: id, addresses, stats"))
    common(sub.add_parser("leave", help="make the agent leave the cluster and stop"))


def _token(args: Any) -> Optional[str]:
    if args.token_file:
        try:
            with open(args.token_file) as f:
                return f.read().strip()
        except OSError as exc:
            raise _Failed(USAGE, f"cannot read the token file: {exc}") from None
    return os.environ.get("FASTGOSSIP_HTTP_TOKEN") or None


def _request(
    args: Any, method: str, path: str, body: Optional[bytes] = None, timeout: float = 10.0
) -> Tuple[Dict[str, str], Any]:
    url = f"http://{args.http_addr}{path}"
    try:
        req = urllib.request.Request(url, data=body, method=method)
    except ValueError as exc:
        raise _Failed(USAGE, f"bad --http-addr {args.http_addr!r}: {exc}") from None
    token = _token(args)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace")
        try:
            message = json.loads(text).get("error", text)
        except ValueError:
            message = text
        if exc.code == 404:
            raise _Failed(NOT_FOUND, message) from None
        if exc.code < 500:
            raise _Failed(USAGE, f"{exc.code}: {message}") from None
        raise _Failed(UNREACHABLE, f"{exc.code}: {message}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        if isinstance(exc, ValueError) or isinstance(exc, http.client.InvalidURL):
            raise _Failed(USAGE, f"bad --http-addr {args.http_addr!r}: {exc}") from None
        reason = getattr(exc, "reason", exc)
        raise _Failed(
            UNREACHABLE, f"cannot reach the agent at {args.http_addr}: {reason}"
        ) from None
    return dict(resp.headers), resp


def _table(rows: List[List[str]], out: TextIO) -> None:
    if not rows:
        return
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() + "\n")


def _value_text(e: Dict[str, Any]) -> str:
    if "int" in e:
        return str(e["int"])
    if "value" in e:
        raw = base64.b64decode(e["value"])
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + e["value"]
    return ""


def run_client(args: Any, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        return _run(args, out)
    except _Failed as exc:
        err.write(f"fastgossip {args.command}: {exc}\n")
        return exc.code
    except BrokenPipeError:  # pragma: no cover - `| head`
        return OK
    except (http.client.HTTPException, OSError) as exc:
        # the stream cut short, a timeout reading an answer: the agent failed
        err.write(f"fastgossip {args.command}: the agent's answer broke off: {exc!r}\n")
        return UNREACHABLE


def _q(key: str) -> str:
    """A key for the path: every character but letters, digits and ``_-~``
    percent-encoded (``.`` too, so ``a/../b`` stays that key)."""
    return urllib.parse.quote(key, safe="").replace(".", "%2E")


def _get_json(args: Any, path: str, out: TextIO) -> Any:
    """GET a JSON answer; with --json print it and return None."""
    _, resp = _request(args, "GET", path)
    data = json.load(resp)
    if args.json:
        out.write(json.dumps(data) + "\n")
        return None
    return data


def _written(args: Any, resp: Any, out: TextIO) -> int:
    """A put's or a del's answer: its version (the whole answer with --json)."""
    answer = json.load(resp)
    out.write((json.dumps(answer) if args.json else str(answer["version"])) + "\n")
    return OK


def _run(args: Any, out: TextIO) -> int:
    cmd = args.command
    if cmd == "members":
        members = _get_json(args, "/v1/members", out)
        if members is None:
            return OK
        rows = [["NODE", "ADDRESS", "STATUS", "PHI", "META"]]
        for m in members:
            meta = ",".join(f"{k}={v}" for k, v in sorted(m["meta"].items()))
            phi = "" if m["phi"] is None else f"{m['phi']:.2f}"
            rows.append([m["node_id"], m["addr"] or "", m["status"], phi, meta])
        _table(rows, out)
        return OK
    if cmd == "get":
        headers, resp = _request(args, "GET", f"/v1/kv/{_q(args.key)}")
        raw = resp.read()
        if args.json:
            entry: Dict[str, Any] = {
                "key": args.key,
                "version": int(headers.get("X-Fastgossip-Version", 0)),
                "origin": headers.get("X-Fastgossip-Origin"),
            }
            if headers.get("X-Fastgossip-Type") == "int":
                entry["int"] = int(raw)
            else:
                entry["value"] = base64.b64encode(raw).decode("ascii")
            out.write(json.dumps(entry) + "\n")
            return OK
        try:
            out.write(raw.decode("utf-8") + "\n")
        except UnicodeDecodeError:
            out.flush()
            getattr(out, "buffer", sys.stdout.buffer).write(raw)
        return OK
    if cmd == "put":
        value = sys.stdin.buffer.read() if args.value == "-" else args.value.encode("utf-8")
        query = {}
        if args.ttl:
            query["ttl"] = args.ttl
        if args.ephemeral:
            query["ephemeral"] = "true"
        if args.durable:
            query["durable"] = "true"
        qs = ("?" + urllib.parse.urlencode(query)) if query else ""
        _, resp = _request(args, "PUT", f"/v1/kv/{_q(args.key)}{qs}", value)
        return _written(args, resp, out)
    if cmd == "del":
        _, resp = _request(args, "DELETE", f"/v1/kv/{_q(args.key)}")
        return _written(args, resp, out)
    if cmd == "keys":
        # every page (the agent answers at most ~10,000 keys a time)
        entries: List[Dict[str, Any]] = []
        after = ""
        while True:
            qs = urllib.parse.urlencode({"prefix": args.prefix, "after": after})
            headers, resp = _request(args, "GET", f"/v1/kv?{qs}")
            page = json.load(resp)
            entries += page
            if headers.get("X-Fastgossip-More") != "true" or not page:
                break
            after = page[-1]["key"]
        if args.json:
            out.write(json.dumps(entries) + "\n")
            return OK
        rows = [["KEY", "VERSION", "ORIGIN", "VALUE"]]
        for e in entries:
            rows.append([e["key"], str(e["version"]), e["origin"], _value_text(e)[:40]])
        _table(rows, out)
        return OK if entries else NOT_FOUND
    if cmd == "watch":
        qs = urllib.parse.urlencode({"prefix": args.prefix})
        _, resp = _request(args, "GET", f"/v1/watch?{qs}", timeout=3600.0)
        seen = 0
        for line in resp:
            if not line.startswith(b"data: "):
                continue
            change = json.loads(line[6:])
            if args.json:
                out.write(json.dumps(change) + "\n")
            else:
                out.write(f"{change['kind']} {change['key']} {_value_text(change)}\n")
            out.flush()
            seen += 1
            if args.count and seen >= args.count:
                break
        return OK
    if cmd == "info":
        info = _get_json(args, "/v1/agent", out)
        if info is None:
            return OK
        for k in ("node_id", "origin", "addr", "http", "uptime_s", "keys"):
            out.write(f"{k}: {info.get(k)}\n")
        stats = info.get("stats", {})
        for k in ("rounds", "bytes_sent", "bytes_received", "entries_merged", "auth_failures"):
            out.write(f"stats.{k}: {stats.get(k)}\n")
        return OK
    if cmd == "leave":
        _request(args, "PUT", "/v1/agent/leave")
        out.write("leaving\n")
        return OK
    return USAGE
