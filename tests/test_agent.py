"""The agent (issue #14): its HTTP API against real agents on loopback (KV,
listings, blocking reads, SSE across agents, members, metrics, the token,
errors), the CLI that talks to it, its config, and the process (SIGTERM
leaves, then exits 0)."""

from __future__ import annotations

import asyncio
import io
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, List, Tuple

import pytest

aiohttp = pytest.importorskip("aiohttp", reason="the agent extra (aiohttp) is not installed")
pytest.importorskip("prometheus_client", reason="the agent extra (prometheus_client) is missing")

from fastgossip.agent import Agent, AgentConfig  # noqa: E402
from fastgossip.cli import build_parser  # noqa: E402
from fastgossip.client import run_client  # noqa: E402
from tests.conftest import child_env, wait_for  # noqa: E402


def cfg(node_id: str, join: Tuple[str, ...] = (), **kw: Any) -> AgentConfig:
    return AgentConfig(
        node_id=node_id,
        bind="127.0.0.1:0",
        http="127.0.0.1:0",
        join=list(join),
        gossip_interval=0.05,
        **kw,
    )


async def agents(n: int, **kw: Any) -> List[Agent]:
    out = [Agent(cfg("a0", **kw))]
    await out[0].start()
    seed = f"127.0.0.1:{out[0].node.addr[1]}"  # type: ignore[union-attr]
    for i in range(1, n):
        a = Agent(cfg(f"a{i}", join=(seed,), **kw))
        await a.start()
        out.append(a)
    return out


async def stop(*xs: Agent) -> None:
    for a in xs:
        await a.stop(leave=False)


def url(a: Agent, path: str) -> str:
    host, port = a.http_addr  # type: ignore[misc]
    return f"http://{host}:{port}{path}"


async def test_kv_put_get_delete_with_versions() -> None:
    (a,) = await agents(1)
    try:
        async with aiohttp.ClientSession() as s:
            r = await s.put(url(a, "/v1/kv/app/color"), data=b"blue")
            assert r.status == 200
            version = (await r.json())["version"]
            assert r.headers["X-Fastgossip-Version"] == str(version)
            r = await s.get(url(a, "/v1/kv/app/color"))
            assert r.status == 200 and await r.read() == b"blue"
            assert r.headers["X-Fastgossip-Version"] == str(version)
            assert r.headers["X-Fastgossip-Origin"] == a.node.origin  # type: ignore[union-attr]
            r = await s.delete(url(a, "/v1/kv/app/color"))
            assert (await r.json())["version"] > version
            r = await s.get(url(a, "/v1/kv/app/color"))
            assert r.status == 404 and "error" in await r.json()
            # a ttl and an ephemeral write are the node's
            r = await s.put(url(a, "/v1/kv/lease?ttl=30s"), data=b"x")
            assert r.status == 200 and a.node.get_entry("lease").expires > 0  # type: ignore[union-attr]
    finally:
        await stop(a)


async def test_listing_and_blocking_reads() -> None:
    (a,) = await agents(1)
    try:
        node = a.node
        assert node is not None
        node.set("svc/b", b"2")
        node.set("svc/a", b"1")
        node.set("other", 7)
        async with aiohttp.ClientSession() as s:
            r = await s.get(url(a, "/v1/kv?prefix=svc/"))
            listed = await r.json()
            assert [e["key"] for e in listed] == ["svc/a", "svc/b"]
            assert listed[0]["value"] == "MQ==" and listed[0]["origin"] == node.origin
            index = int(r.headers["X-Fastgossip-Index"])
            # nothing newer: returns after the wait
            t = time.monotonic()
            r = await s.get(url(a, f"/v1/kv?prefix=svc/&index={index}&wait=300ms"))
            assert r.status == 200 and time.monotonic() - t >= 0.28
            # a write under the prefix wakes it at once
            asyncio.get_running_loop().call_later(0.2, node.set, "svc/c", b"3")
            t = time.monotonic()
            r = await s.get(url(a, f"/v1/kv?prefix=svc/&index={index}&wait=10s"))
            assert len(await r.json()) == 3 and time.monotonic() - t < 5
            # a key's own index
            v = node.get_entry("svc/a").version
            asyncio.get_running_loop().call_later(0.2, node.set, "svc/a", b"new")
            r = await s.get(url(a, f"/v1/kv/svc/a?index={v}&wait=10s"))
            assert await r.read() == b"new"
    finally:
        await stop(a)


async def test_a_change_reaches_a_watcher_on_another_agent() -> None:
    a, b = await agents(2)
    try:
        await wait_for(lambda: len(b.node.members()) == 2)  # type: ignore[union-attr]
        async with aiohttp.ClientSession() as s:
            r = await s.get(url(b, "/v1/watch?prefix=cfg/"))
            assert r.headers["Content-Type"].startswith("text/event-stream")
            await s.put(url(a, "/v1/kv/cfg/flag"), data=b"on")
            await s.put(url(a, "/v1/kv/elsewhere"), data=b"no")
            got = None
            deadline = time.monotonic() + 10
            while got is None and time.monotonic() < deadline:
                line = await asyncio.wait_for(r.content.readline(), 10)
                if line.startswith(b"data: "):
                    got = json.loads(line[6:])
            assert got is not None and got["key"] == "cfg/flag" and got["kind"] == "set"
            assert got["value"] == "b24="  # base64 of b"on"
            r.close()
    finally:
        await stop(a, b)


async def test_members_metrics_and_a_member_leaving() -> None:
    a, b, c = await agents(3)
    try:
        await wait_for(lambda: all(len(x.node.members()) == 3 for x in (a, b, c)))  # type: ignore[union-attr]
        async with aiohttp.ClientSession() as s:
            members = await (await s.get(url(a, "/v1/members"))).json()
            assert sorted(m["node_id"] for m in members) == ["a0", "a1", "a2"]
            assert all(m["status"] == "alive" for m in members)
            text = await (await s.get(url(a, "/metrics"))).text()
            assert re.search(r"^fastgossip_rounds_total \d", text, re.M)
            assert 'fastgossip_members{status="alive"} 3.0' in text
            assert 'fastgossip_member_phi{peer="a1"}' in text
            assert re.search(r'^fastgossip_peer_rtt_seconds\{peer="a[12]"\} [\d.e-]+$', text, re.M)
            assert "fastgossip_refusals_total" in text or "fastgossip_refusals" in text
            info = await (await s.get(url(a, "/v1/agent"))).json()
            assert info["node_id"] == "a0" and "rounds" in info["stats"]
            assert (await (await s.get(url(a, "/v1/health"))).json())["status"] == "ok"
            r = await s.put(url(c, "/v1/agent/leave"))
            assert r.status == 200
        await wait_for(lambda: c.stopped.is_set())

        def left() -> bool:
            m = a.node.member("a2")  # type: ignore[union-attr]
            return m is not None and m.status == "left"

        await wait_for(left)
    finally:
        await stop(a, b, c)


async def test_the_token_is_checked_on_every_request(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    (a,) = await agents(1, http_token_file=str(token))
    try:
        async with aiohttp.ClientSession() as s:
            r = await s.get(url(a, "/v1/health"))
            assert r.status == 401 and "token" in (await r.json())["error"]
            r = await s.get(url(a, "/v1/health"), headers={"Authorization": "Bearer nope"})
            assert r.status == 401
            r = await s.get(url(a, "/v1/health"), headers={"Authorization": "Bearer s3cret"})
            assert r.status == 200
            r = await s.get(url(a, "/v1/health?token=s3cret"))  # (the status page's way)
            assert r.status == 200
    finally:
        await stop(a)


def test_an_api_beyond_loopback_needs_a_token_or_an_explicit_flag() -> None:
    with pytest.raises(ValueError, match="http-token-file"):
        AgentConfig(node_id="x", http="0.0.0.0:7947").check()
    AgentConfig(node_id="x", http="0.0.0.0:7947", http_open=True).check()
    AgentConfig(node_id="x", http="0.0.0.0:7947", http_token_file="t").check()
    AgentConfig(node_id="x", http="[::1]:7947").check()


async def test_bad_requests_get_json_errors() -> None:
    (a,) = await agents(1)
    try:
        async with aiohttp.ClientSession() as s:
            for method, path, status in [
                ("PUT", "/v1/kv/k?ttl=soon", 400),
                ("GET", "/v1/kv/k?index=abc", 400),
                ("GET", "/v1/kv?prefix=&index=1&wait=1y", 400),
                ("GET", "/v1/nothing", 404),
                ("POST", "/v1/kv/k", 405),
            ]:
                r = await s.request(method, url(a, path), data=b"v")
                assert r.status == status, (method, path, r.status)
                assert "error" in await r.json()
            r = await s.put(url(a, "/v1/kv/big"), data=b"x" * (2 << 20))
            assert r.status == 413 and "error" in await r.json()
            r = await s.put(url(a, "/v1/kv/" + "k" * 70000), data=b"x")
            assert r.status in (400, 413, 414)
    finally:
        await stop(a)


async def test_the_cli_talks_to_an_agent() -> None:
    (a,) = await agents(1)
    host, port = a.http_addr  # type: ignore[misc]
    addr = f"{host}:{port}"
    parser = build_parser()

    async def cli(*argv: str) -> Tuple[int, str, str]:
        args = parser.parse_args([argv[0], "--http-addr", addr, *argv[1:]])
        out, err = io.StringIO(), io.StringIO()
        code = await asyncio.to_thread(run_client, args, out, err)
        return code, out.getvalue(), err.getvalue()

    try:
        code, out, _ = await cli("put", "app/name", "fastgossip")
        assert code == 0 and int(out) > 0
        assert await cli("get", "app/name") == (0, "fastgossip\n", "")
        code, out, _ = await cli("get", "app/name", "--json")
        assert code == 0 and json.loads(out)["value"] == "ZmFzdGdvc3NpcA=="
        code, out, err = await cli("get", "missing")
        assert code == 1 and "no key" in err
        code, out, _ = await cli("keys", "app/")
        assert code == 0 and "app/name" in out and "fastgossip" in out
        assert (await cli("keys", "none/"))[0] == 1
        code, out, _ = await cli("members", "--json")
        assert code == 0 and json.loads(out)[0]["node_id"] == "a0"
        code, out, _ = await cli("members")
        assert out.startswith("NODE") and "alive" in out
        code, out, _ = await cli("info")
        assert code == 0 and "node_id: a0" in out
        code, out, _ = await cli("del", "app/name")
        assert code == 0 and (await cli("get", "app/name"))[0] == 1
        code, out, err = await cli("put", "k", "v", "--ttl", "never")
        assert code == 2 and "400" in err
        watch = asyncio.ensure_future(cli("watch", "w/", "--count", "1"))
        await asyncio.sleep(0.3)
        a.node.set("w/x", b"42")  # type: ignore[union-attr]
        code, out, _ = await asyncio.wait_for(watch, 10)
        assert code == 0 and out == "set w/x 42\n"
    finally:
        await stop(a)
    args = parser.parse_args(["get", "k", "--http-addr", "127.0.0.1:1"])
    err = io.StringIO()
    assert run_client(args, io.StringIO(), err) == 3 and "cannot reach" in err.getvalue()


def test_a_toml_config_and_flags_over_it(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        'node-id = "n1"\nbind = "127.0.0.1:9000"\njoin = ["h:1"]\nhttp = "127.0.0.1:9001"\n'
    )
    c = AgentConfig.from_toml(str(path), http="127.0.0.1:9002", node_id=None)
    assert (c.node_id, c.bind, list(c.join), c.http) == (
        "n1",
        "127.0.0.1:9000",
        ["h:1"],
        "127.0.0.1:9002",
    )
    path.write_text('nodeid = "x"\n')
    with pytest.raises(ValueError, match="unknown setting"):
        AgentConfig.from_toml(str(path))


def test_the_agent_process_leaves_on_sigterm_and_exits_0(tmp_path: Path) -> None:
    env = child_env()
    cmd = [sys.executable, "-m", "fastgossip", "agent", "--node-id", "p1",
           "--bind", "127.0.0.1:0", "--http", "127.0.0.1:0", "--log-json"]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, env=env, text=True)
    lines: List[str] = []
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "started" in line:
                break
        assert any("started" in json.loads(x)["msg"] for x in lines), lines
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        lines += proc.stderr.read().splitlines()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    msgs = [json.loads(x)["msg"] for x in lines if x.strip()]
    assert any("leaving the cluster" in m for m in msgs)
    assert any(m.endswith("stopped") for m in msgs)
