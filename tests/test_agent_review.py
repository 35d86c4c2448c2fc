"""The agent, a review's reproductions (each failed before its fix): stop
with leave shuts the node down (durable mode's last flush: a write answered
200 before SIGTERM survives), and happens once; the status page's files load
under a token; the cluster's own keys (\\x00...) get 4xx JSON everywhere; a
blocking listing wakes on a delete; a client that leaves frees its stream
slot; idle connections are closed after KEEPALIVE; a listing is bounded and
paged; ``a/../c`` is its own key; the table an agent's clients fill is
bounded; a loopback agent without a token refuses foreign Host headers (DNS
rebinding); the CLI's exit codes for a missing token file, a bad address and
a stream cut short."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import time
from pathlib import Path
from typing import Any, Tuple

import pytest

aiohttp = pytest.importorskip("aiohttp", reason="the agent extra (aiohttp) is not installed")
pytest.importorskip("prometheus_client", reason="the agent extra (prometheus_client) is missing")

from fastgossip.agent import Agent  # noqa: E402
from fastgossip.cli import build_parser  # noqa: E402
from fastgossip.client import run_client  # noqa: E402
from tests.conftest import child_env  # noqa: E402
from tests.test_agent import agents, cfg, stop, url  # noqa: E402


async def test_stop_with_leave_shuts_the_node_down() -> None:
    # SIGTERM and PUT /v1/agent/leave both end in stop(leave=True): it calls
    # node.leave() but never node.shutdown() (leave's docstring: "Call
    # shutdown() after"): rounds, listener, durable log stay open.
    a = Agent(cfg("a0"))
    await a.start()
    try:
        await a.stop()
        assert a.stopped.is_set()
        assert a.node is not None and a.node.closed, "node still running after stop()"
    finally:
        if a.node is not None and not a.node.closed:
            await a.node.shutdown()


async def test_leave_endpoint_twice_stops_once(caplog: Any) -> None:
    # two PUT /v1/agent/leave (or a leave and a SIGTERM) before the first
    # ends: stop() runs twice (node.leave twice, runner.cleanup twice) and the
    # "shutting down" INFO line is logged twice.
    import logging

    caplog.set_level(logging.INFO, logger="fastgossip.agent")
    a, b = await agents(2)
    try:
        async with aiohttp.ClientSession() as s:
            rs = await asyncio.gather(*[s.put(url(a, "/v1/agent/leave")) for _ in range(2)])
            statuses = sorted(r.status for r in rs)
        await asyncio.sleep(1.0)
        n = sum("a0 shutting down" in r.getMessage() for r in caplog.records)
        assert n == 1, (statuses, n)
    finally:
        for x in (a, b):
            if x.node is not None and not x.node.closed:
                await x.node.shutdown()
        await stop(a, b)


async def test_status_page_assets_load_with_a_token(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    (a,) = await agents(1, http_token_file=str(token))
    try:
        async with aiohttp.ClientSession() as s:
            r = await s.get(url(a, "/?token=s3cret"))
            assert r.status == 200
            html = await r.text()
            assert 'src="ui/app.js"' in html
            # the browser resolves ui/app.js against /?token=..: /ui/app.js, no token
            r = await s.get(url(a, "/ui/app.js"))
            assert r.status == 200, "status page script refused: the page cannot work with a token"
    finally:
        await stop(a)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/kv/%00m:a0?index=99999999999999999999&wait=1s",
        "/v1/kv?prefix=%00&index=1&wait=1s",
    ],
)
async def test_reserved_prefix_blocking_reads_get_4xx_json(path: str) -> None:
    (a,) = await agents(1)
    try:
        async with aiohttp.ClientSession() as s:
            r = await s.get(url(a, path))
            assert 400 <= r.status < 500, (r.status, await r.text())
            assert "error" in await r.json()
    finally:
        await stop(a)


async def test_reserved_keys_are_not_readable() -> None:
    (a,) = await agents(1)
    try:
        async with aiohttp.ClientSession() as s:
            r = await s.get(url(a, "/v1/kv/%00m:a0"))
            assert r.status in (400, 404), (r.status, await r.read())
    finally:
        await stop(a)


async def test_reserved_prefix_watch_gets_4xx() -> None:
    (a,) = await agents(1)
    try:
        async with aiohttp.ClientSession() as s:
            r = await s.get(url(a, "/v1/watch?prefix=%00"))
            assert 400 <= r.status < 500, r.status
    finally:
        await stop(a)


async def test_blocking_listing_sees_a_delete_since_index() -> None:
    (a,) = await agents(1)
    try:
        node = a.node
        assert node is not None
        node.set("svc/a", b"1")
        node.set("svc/b", b"2")
        async with aiohttp.ClientSession() as s:
            r = await s.get(url(a, "/v1/kv?prefix=svc/"))
            index = int(r.headers["X-Fastgossip-Index"])
            node.delete("svc/b")  # newer than index, happens between two reads
            t = time.monotonic()
            r = await s.get(url(a, f"/v1/kv?prefix=svc/&index={index}&wait=3s"))
            assert [e["key"] for e in await r.json()] == ["svc/a"]
            assert time.monotonic() - t < 1.5, "a delete newer than index did not end the wait"
            # and the index never goes backwards
            assert int(r.headers["X-Fastgossip-Index"]) > index
    finally:
        await stop(a)


async def test_a_disconnected_blocking_read_frees_its_stream() -> None:
    (a,) = await agents(1, max_streams=1)
    try:
        async with aiohttp.ClientSession() as s:
            t = asyncio.ensure_future(s.get(url(a, "/v1/kv?prefix=x&index=0&wait=60s")))
            await asyncio.sleep(0.3)
            assert a.streams == 1
            t.cancel()  # the client gives up and closes its connection
            await asyncio.sleep(0.5)
            r = await s.get(url(a, "/v1/kv?prefix=y&index=0&wait=1s"))
            assert r.status == 200, f"{r.status}: slot still held by a gone client"
    finally:
        await stop(a)


async def test_a_disconnected_watch_frees_its_stream() -> None:
    (a,) = await agents(1, max_streams=1)
    try:
        async with aiohttp.ClientSession() as s:
            r = await s.get(url(a, "/v1/watch?prefix=nothing/"))
            await r.content.readline()
            r.close()
            await asyncio.sleep(0.5)
            r = await s.get(url(a, "/v1/kv?prefix=y&index=0&wait=1s"))
            assert r.status == 200, f"{r.status}: slot still held by a gone SSE client"
    finally:
        await stop(a)


async def test_idle_connections_are_bounded() -> None:
    # connections that never send a request: no cap on how many, and the
    # AppRunner default keepalive_timeout (3630 s) keeps each for an hour.
    (a,) = await agents(1)
    socks = []
    try:
        host, port = a.http_addr  # type: ignore[misc]
        for _ in range(100):
            socks.append(socket.create_connection((host, port)))
        await asyncio.sleep(0.5)
        conns = a._runner.server.connections
        assert len(conns) < 100 or all(c.keepalive_timeout <= 120 for c in conns), (
            len(conns),
            conns[0].keepalive_timeout,
        )
    finally:
        for sk in socks:
            sk.close()
        await stop(a)


async def test_a_listing_reply_is_bounded() -> None:
    # GET /v1/kv has no limit / paging: the reply is the whole table
    # (base64), built as one string on the loop.
    (a,) = await agents(1)
    try:
        node = a.node
        assert node is not None
        for i in range(1500):
            node.set(f"k/{i:05d}", b"x" * 1024)
        async with aiohttp.ClientSession() as s:
            r = await s.get(url(a, "/v1/kv"))
            body = await r.read()
            limit = a.config.node_config().max_frame_size
            assert len(body) <= limit, f"{len(body)} bytes in one reply, no bound"
    finally:
        await stop(a)


def _cli(argv: Tuple[str, ...]) -> Tuple[int, str]:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    err = io.StringIO()
    code = run_client(args, io.StringIO(), err)
    return code, err.getvalue()


def test_cli_missing_token_file_is_a_usage_error(tmp_path: Path) -> None:
    code, err = _cli(("get", "k", "--http-addr", "127.0.0.1:1",
                      "--token-file", str(tmp_path / "nope")))  # fmt: skip
    assert code == 2 and "nope" in err


def test_cli_bad_http_addr_is_a_usage_error() -> None:
    code, err = _cli(("get", "k", "--http-addr", "127.0.0.1:notaport"))
    assert code in (2, 3)


def _start_proc(data_dir: str) -> Any:
    import re
    import subprocess
    import sys

    env = child_env()
    cmd = [sys.executable, "-m", "fastgossip", "agent", "--node-id", "d1",
           "--bind", "127.0.0.1:0", "--http", "127.0.0.1:0", "--log-json",
           "--data-dir", data_dir]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, env=env, text=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        m = re.search(r"HTTP on ([\d.]+:\d+)", json.loads(line)["msg"])
        if m:
            return proc, m.group(1)
    proc.kill()
    raise AssertionError("agent did not start")


def test_sigterm_keeps_an_acknowledged_write_in_durable_mode(tmp_path: Path) -> None:
    # stop(leave=True) never calls node.shutdown(), so the durable log's last
    # flush (_close_data) never runs: a write answered 200 just before SIGTERM
    # is lost with the default fsync="interval".
    import signal
    import urllib.request

    data = str(tmp_path / "data")
    proc, addr = _start_proc(data)
    try:
        req = urllib.request.Request(f"http://{addr}/v1/kv/k", data=b"v", method="PUT")
        assert urllib.request.urlopen(req, timeout=10).status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    proc, addr = _start_proc(data)
    try:
        try:
            got = urllib.request.urlopen(f"http://{addr}/v1/kv/k", timeout=10).read()
        except urllib.error.HTTPError as exc:
            got = exc.code
        assert got == b"v", got
    finally:
        proc.kill()
        proc.wait(10)


async def test_dot_segments_in_a_key_do_not_alias_another_key() -> None:
    """``a/../c`` is that key, not ``c``: the agent reads the raw path (its
    router normalises it), and the CLI encodes dots. (aiohttp's own client
    normalises the URL before sending: a raw socket says what goes over.)"""
    (a,) = await agents(1)
    try:
        host, port = a.http_addr  # type: ignore[misc]

        def raw(path: str) -> bytes:
            with socket.create_connection((host, port)) as sk:
                sk.sendall(
                    f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\n"
                    "Connection: close\r\n\r\nv".encode()
                )
                data = b""
                while chunk := sk.recv(4096):
                    data += chunk
            return data.split(b"\r\n\r\n", 1)[1]

        assert json.loads(await asyncio.to_thread(raw, "/v1/kv/a/%2E%2E/c"))["key"] == "a/../c"
        assert json.loads(await asyncio.to_thread(raw, "/v1/kv/a/./b"))["key"] == "a/./b"
        code, _ = await asyncio.to_thread(
            _cli, ("put", "x/../y", "v", "--http-addr", f"{host}:{port}")
        )
        assert code == 0
        assert sorted(a.node.keys()) == ["a/../c", "a/./b", "x/../y"]  # type: ignore[union-attr]
    finally:
        await stop(a)


async def test_the_table_a_client_fills_is_bounded() -> None:
    # a valid client can PUT keys until memory runs out: the agent passes no
    # max_keys / max_table_bytes to its node and has no setting for them
    (a,) = await agents(1)
    try:
        c = a.node.config  # type: ignore[union-attr]
        assert c.max_keys is not None or c.max_table_bytes is not None
    finally:
        await stop(a)


async def test_a_loopback_agent_refuses_a_foreign_host_header() -> None:
    # loopback + no token: a browser page on attacker.example that rebinds
    # its name to 127.0.0.1 reads and writes every key (no Host check)
    (a,) = await agents(1)
    try:
        async with aiohttp.ClientSession() as s:
            r = await s.put(
                url(a, "/v1/kv/pwned"), data=b"x", headers={"Host": "attacker.example:7947"}
            )
            assert r.status in (403, 421), r.status
    finally:
        await stop(a)


def test_cli_watch_on_a_dropped_stream_exits_3() -> None:
    # an agent that dies mid-stream: http.client raises IncompleteRead (not
    # OSError) outside _request: a traceback, exit 1 ("not found")
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve() -> None:
        c, _ = srv.accept()
        c.recv(65536)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n10\r\n: watch")  # fmt: skip
        c.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        code, err = _cli(("watch", "--http-addr", f"127.0.0.1:{srv.getsockname()[1]}"))
        assert code == 3, (code, err)
    finally:
        srv.close()
