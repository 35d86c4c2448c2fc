"""``fastgossip agent``: a long-running node with an HTTP API, Prometheus
metrics and a status page (needs the ``agent`` extra: aiohttp and
prometheus_client). The API is documented in ``docs/HTTP.md``.

The agent is one asyncio loop: the node, the HTTP server (aiohttp) and the
watchers share it. Every resource a client can make it spend is bounded: a
request body (``max_body``: the node's frame size), the number of streams
open at once (``max_streams``: SSE watches and blocking reads), the wait of a
blocking read (``max_wait``). The API listens on loopback by default; bound
elsewhere it needs a token (``http_token_file``), checked on every request in
constant time, or ``http_open=True`` (the operator says so explicitly).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import dataclasses
import hmac
import ipaddress
import json
import logging
import os
import signal
import socket
import sys
import time
import urllib.parse
from typing import Any, Awaitable, Callable, Deque, Dict, List, Optional, Sequence, Tuple

from .errors import TableFull
from .membership import RESERVED_PREFIX
from .node import GossipNode, NodeConfig

log = logging.getLogger("fastgossip.agent")

WEB_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web")
DEFAULT_HTTP = "127.0.0.1:7947"
KEEPALIVE = 15.0  # seconds an idle HTTP connection is kept
POLL = 0.25  # seconds between looks, while a stream waits, at whether its client left
WATCH_QUEUE = 1000  # changes queued per SSE watcher, and ...
WATCH_BYTES = 16 << 20  # ... their bytes; beyond either the oldest are dropped (lagged)
DEFAULT_BIND = "0.0.0.0:7946"


def _need_extra() -> None:
    try:
        import aiohttp  # noqa: F401
        import prometheus_client  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SystemExit(
            f"the agent needs the 'agent' extra ({exc.name} is missing): "
            "pip install 'fastgossip[agent]'"
        ) from None


@dataclasses.dataclass
class AgentConfig:
    """What ``fastgossip agent`` runs (flags and/or a TOML file)."""

    node_id: str = dataclasses.field(default_factory=socket.gethostname)
    bind: str = DEFAULT_BIND
    advertise: Optional[str] = None
    join: Sequence[str] = ()
    cluster_key_file: Optional[str] = None
    data_dir: Optional[str] = None
    fsync: str = "interval"
    gossip_interval: float = 0.2
    meta: Dict[str, str] = dataclasses.field(default_factory=dict)
    http: str = DEFAULT_HTTP
    http_token_file: Optional[str] = None
    http_open: bool = False
    log_level: str = "INFO"
    log_json: bool = False
    max_streams: int = 256
    max_wait: float = 300.0
    max_keys: Optional[int] = 1_000_000
    max_table_bytes: Optional[int] = 1 << 30
    max_list: int = 10_000

    @classmethod
    def from_toml(cls, path: str, **overrides: Any) -> AgentConfig:
        """Read a TOML file (keys: the field names, ``-`` or ``_``); flags
        given on the command line (``overrides`` not None) win."""
        try:
            import tomllib  # type: ignore[import-not-found,unused-ignore]
        except ImportError:  # pragma: no cover - Python < 3.11
            try:
                import tomli as tomllib  # type: ignore[import-not-found,no-redef,unused-ignore]
            except ImportError:
                raise ValueError("a TOML config needs Python 3.11+ (or tomli)") from None
        with open(path, "rb") as f:
            raw = tomllib.load(f)
        names = {f.name for f in dataclasses.fields(cls)}
        values: Dict[str, Any] = {}
        for key, value in raw.items():
            name = key.replace("-", "_")
            if name not in names:
                raise ValueError(f"{path}: unknown setting {key!r}")
            values[name] = value
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def check(self) -> None:
        """ValueError for a setting the agent cannot run with."""
        host, _ = host_port(self.http)
        host_port(self.bind)
        if not _is_loopback(host) and not self.http_token_file and not self.http_open:
            raise ValueError(
                f"the HTTP API would listen on {self.http}, beyond loopback: give "
                "--http-token-file (a token every request must carry) or --http-open "
                "(anyone who reaches it may read, write and stop this agent)"
            )
        if self.max_streams < 1 or self.max_wait <= 0:
            raise ValueError("max_streams must be >= 1 and max_wait > 0")

    def node_config(self) -> NodeConfig:
        return NodeConfig(
            self.node_id,
            bind=host_port(self.bind),
            advertise=self.advertise,
            seeds=list(self.join),
            cluster_key_file=self.cluster_key_file,
            data_dir=self.data_dir,
            fsync=self.fsync,
            gossip_interval=self.gossip_interval,
            meta=dict(self.meta),
            max_keys=self.max_keys,
            max_table_bytes=self.max_table_bytes,
        )


def host_port(text: str) -> Tuple[str, int]:
    """``host:port`` or ``[v6]:port`` (port 0: any free one)."""
    text = text.strip()
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"bad address {text!r}: expected host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"bad address {text!r}: port must be an int in 0..65535")
    return ("127.0.0.1" if host == "localhost" else host), int(port)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _duration(text: str) -> float:
    """``30s``, ``1.5m``, ``200ms`` or plain seconds."""
    text = text.strip()
    for suffix, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * scale
    return float(text)


def _value_json(out: Dict[str, Any], value: Any) -> None:
    """A value as the API shows it: bytes in base64 (``value``), an int as
    ``int``, none for a tombstone."""
    if isinstance(value, bytes):
        out["value"] = base64.b64encode(value).decode("ascii")
    elif value is not None:
        out["int"] = value


def entry_json(e: Any) -> Dict[str, Any]:
    """An entry as the API shows it: bytes values in base64 (``value``), int
    values as ``int``."""
    out: Dict[str, Any] = {"key": e.key, "version": e.version, "origin": e.origin}
    _value_json(out, e.value)
    if e.expires:
        out["expires"] = e.expires
    return out


def member_json(m: Any) -> Dict[str, Any]:
    return {
        "node_id": m.node_id,
        "addr": f"{m.addr[0]}:{m.addr[1]}" if m.addr else None,
        "status": m.status,
        "meta": dict(m.meta),
        "phi": round(m.phi, 3) if m.phi is not None else None,
        "origin": m.origin,
    }


class Agent:
    """A node, its HTTP API and its metrics, in one loop."""

    def __init__(self, config: AgentConfig) -> None:
        _need_extra()
        config.check()
        self.config = config
        self.node: Optional[GossipNode] = None
        self.http_addr: Optional[Tuple[str, int]] = None
        self.stopped = asyncio.Event()
        self.streams = 0
        self.stream_lag = 0  # changes dropped for slow SSE consumers
        self._runner: Any = None
        self._stopping = False
        self._token: Optional[bytes] = None
        self._unsubscribe: Optional[Callable[[], None]] = None
        self.started_at = time.time()
        self._loopback = _is_loopback(host_port(config.http)[0])

    # -- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        from aiohttp import web

        cfg = self.config
        if cfg.http_token_file:
            with open(cfg.http_token_file, "rb") as f:
                self._token = f.read().strip()
            if not self._token:
                raise ValueError(f"{cfg.http_token_file} holds no token")
        self.node = await GossipNode.start(cfg.node_config())
        node = self.node
        self._unsubscribe = node.subscribe_members(self._member_changed)
        app = self.make_app()
        self._runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=1.0, keepalive_timeout=KEEPALIVE
        )
        await self._runner.setup()
        host, port = host_port(cfg.http)
        site = web.TCPSite(self._runner, host, port)
        try:
            await site.start()
        except OSError:
            await self.stop(leave=False)
            raise
        sockets = getattr(site._server, "sockets", None)
        sock = sockets[0] if sockets else None
        self.http_addr = sock.getsockname()[:2] if sock is not None else (host, port)
        log.info(
            "agent %s started: gossip on %s, origin %s, HTTP on %s",
            node.node_id,
            _fmt(node.addr),
            node.origin,
            _fmt(self.http_addr),
        )
        if cfg.join:
            log.info("agent %s joining through %s", node.node_id, ", ".join(cfg.join))

    async def stop(self, leave: bool = True) -> None:
        """Leave the cluster (members see "left" at once), close the API.
        Once: a second call waits for the first."""
        if self._stopping:
            await self.stopped.wait()
            return
        self._stopping = True
        node = self.node
        try:
            if node is not None and not node.closed:
                what = "leaving" if leave else "stop"
                log.info("agent %s shutting down (%s)", node.node_id, what)
                if self._unsubscribe is not None:
                    self._unsubscribe()
                try:
                    if leave:
                        await node.leave(timeout=2.0)
                finally:
                    await node.shutdown()  # (the last flush of durable mode, the port)
        finally:
            try:
                if self._runner is not None:
                    await self._runner.cleanup()
                    self._runner = None
            finally:
                self.stopped.set()  # (a failed stop still ends the agent)

    def _member_changed(self, ev: Any) -> None:
        if ev.kind == "lagged":
            return
        m = ev.member
        log.info("member %r %s (%s)", m.node_id, ev.kind, _fmt(m.addr) if m.addr else "?")

    # -- HTTP ----------------------------------------------------------------
    def make_app(self) -> Any:
        from aiohttp import web

        max_body = self.config.node_config().max_frame_size
        app = web.Application(client_max_size=max_body, middlewares=[self._errors, self._auth])
        r = app.router
        r.add_get("/v1/kv", self.list_keys)
        r.add_get("/v1/kv/{key:.+}", self.get_key)
        r.add_put("/v1/kv/{key:.+}", self.put_key)
        r.add_delete("/v1/kv/{key:.+}", self.delete_key)
        r.add_get("/v1/watch", self.watch)
        r.add_get("/v1/members", self.members)
        r.add_get("/v1/agent", self.agent_info)
        r.add_put("/v1/agent/leave", self.leave)
        r.add_get("/v1/health", self.health)
        r.add_get("/metrics", self.metrics)
        r.add_get("/", self.index)
        if os.path.isdir(WEB_DIR):
            r.add_static("/ui/", WEB_DIR, show_index=False)
        return app

    @staticmethod
    def _json(data: Any, status: int = 200, headers: Optional[Dict[str, str]] = None) -> Any:
        from aiohttp import web

        return web.json_response(data, status=status, headers=headers, dumps=_dumps)

    def _error(self, status: int, message: str) -> Any:
        return self._json({"error": message}, status=status)

    @property
    def _errors(self) -> Any:
        from aiohttp import web

        @web.middleware
        async def errors(request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
            try:
                return await handler(request)
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise
                return self._error(exc.status, exc.reason or "error")
            except _BadRequest as exc:
                return self._error(exc.status, str(exc))
            except TableFull as exc:
                return self._error(507, str(exc))
            except ValueError as exc:  # (a bad key or prefix the node refused)
                return self._error(400, str(exc))

        return errors

    @property
    def _auth(self) -> Any:
        from aiohttp import web

        @web.middleware
        async def auth(request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
            token = self._token
            static = request.method == "GET" and (
                request.path == "/" or request.path.startswith("/ui/")
            )
            if token is None and self._loopback and not _loopback_host(request.host):
                # a browser page whose name was rebound to 127.0.0.1 (DNS
                # rebinding) says its own name: an API without a token on
                # loopback answers only to loopback names
                return self._error(403, f"Host {request.host!r} is not this agent's")
            if token is not None and not static:
                given = request.headers.get("Authorization", "")
                given = given[7:] if given.startswith("Bearer ") else given
                given = given or request.headers.get("X-Fastgossip-Token", "")
                given = given or request.query.get("token", "")
                if not hmac.compare_digest(given.encode("utf-8", "replace"), token):
                    return self._error(401, "a valid token is needed (Authorization: Bearer ...)")
            return await handler(request)

        return auth

    def _node(self) -> GossipNode:
        node = self.node
        if node is None or node.closed:
            raise _BadRequest(503, "the agent is shutting down")
        return node

    async def get_key(self, request: Any) -> Any:
        from aiohttp import web

        node = self._node()
        key = _key(request)
        index = _int_query(request, "index")
        if index is not None:
            wait = self._wait(request)
            await self._block(request, key, index, wait, exact=True)
            node = self._node()  # (it may have shut down meanwhile: 503)
        e = node.get_entry(key)
        if e is None or e.value is None:
            return self._error(404, f"no key {key!r}")
        headers = {
            "X-Fastgossip-Version": str(e.version),
            "X-Fastgossip-Origin": e.origin,
            "X-Fastgossip-Index": str(e.version),
        }
        if isinstance(e.value, bytes):
            return web.Response(
                body=e.value, headers=headers, content_type="application/octet-stream"
            )
        headers["X-Fastgossip-Type"] = "int"
        return web.Response(text=str(e.value), headers=headers)

    async def list_keys(self, request: Any) -> Any:
        """Keys under ``prefix`` in key order, at most ``limit`` (default and
        most: max_list) after the key ``after``; ``X-Fastgossip-More: true``
        when more follow (ask again with ``after=`` the last key)."""
        node = self._node()
        prefix = _prefix(request)
        index = _int_query(request, "index")
        if index is not None:
            await self._block(request, prefix, index, self._wait(request), exact=False)
            node = self._node()
        limit = _int_query(request, "limit")
        if limit == 0:
            raise _BadRequest(400, "limit must be >= 1")
        limit = self.config.max_list if limit is None else min(limit, self.config.max_list)
        after = request.query.get("after", "")
        keys = sorted(k for k in node.keys() if k.startswith(prefix) and k > after)
        out: List[Dict[str, Any]] = []
        size, room = 2, self.config.node_config().max_frame_size  # (one reply's bytes)
        more = len(keys) > limit
        for k in keys[:limit]:
            e = node.get_entry(k)
            if e is None:
                continue
            item = entry_json(e)
            size += len(_dumps(item)) + 1
            if size > room and out:
                more = True
                break
            out.append(item)
        headers = {"X-Fastgossip-Index": str(self._newest(prefix, exact=False))}
        if more:
            headers["X-Fastgossip-More"] = "true"
        return self._json(out, headers=headers)

    def _newest(self, key: str, exact: bool) -> int:
        """The greatest version of ``key`` (or under the prefix ``key``),
        deletes included."""
        node = self._node()
        if exact:
            e = node.get_entry(key)
            return e.version if e is not None else 0
        top = 0
        for e in node._read().entries():  # (every entry, tombstones included)
            if e.version > top and e.key.startswith(key) and not e.key.startswith(RESERVED_PREFIX):
                top = e.version
        return top

    def _room_for_a_stream(self) -> None:
        if self.streams >= self.config.max_streams:
            raise _BadRequest(503, f"over {self.config.max_streams} streams open")

    def _wait(self, request: Any) -> float:
        text = request.query.get("wait", "30s")
        try:
            wait = _duration(text)
        except ValueError:
            raise _BadRequest(400, f"wait must be a duration like 30s, got {text!r}") from None
        if not 0 <= wait <= self.config.max_wait:
            raise _BadRequest(400, f"wait must be between 0 and {self.config.max_wait:g}s")
        return wait

    async def _block(self, request: Any, key: str, index: int, wait: float, exact: bool) -> None:
        """Consul-style blocking read: return when ``key`` (or a key under the
        prefix ``key``) holds a version above ``index``, after ``wait``, or
        when the client has gone (its stream slot is freed)."""
        node = self._node()
        if self._newest(key, exact) > index or wait == 0:
            return
        self._room_for_a_stream()
        changed = asyncio.Event()

        def seen(ch: Any) -> None:
            if ch.version > index and (not exact or ch.key == key):
                changed.set()

        unsubscribe = node.subscribe(key, seen)
        self.streams += 1
        try:
            deadline = time.monotonic() + wait
            while not changed.is_set() and not _gone(request) and not node.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for(changed.wait(), min(left, POLL))
                except asyncio.TimeoutError:
                    pass
        finally:
            self.streams -= 1
            unsubscribe()

    async def put_key(self, request: Any) -> Any:
        node = self._node()
        key = _key(request)
        body = await request.read()
        ttl_text = request.query.get("ttl")
        ttl = None
        if ttl_text is not None:
            try:
                ttl = _duration(ttl_text)
            except ValueError:
                raise _BadRequest(400, f"ttl must be a duration, got {ttl_text!r}") from None
        ephemeral = request.query.get("ephemeral", "").lower() in ("1", "true", "yes")
        try:
            if request.query.get("durable", "").lower() in ("1", "true", "yes"):
                if self.config.data_dir is None:
                    raise _BadRequest(400, "durable writes need the agent's --data-dir")
                version = await node.set_durable(key, body, ttl=ttl, ephemeral=ephemeral)
            else:
                version = node.set(key, body, ttl=ttl, ephemeral=ephemeral)
        except TableFull:
            raise
        except ValueError as exc:
            text = str(exc)
            # (the node's check_storable: no frame can carry the entry)
            status = 413 if ("larger" in text or "exceeds" in text or "frame" in text) else 400
            raise _BadRequest(status, text) from None
        return self._json(
            {"key": key, "version": version}, headers={"X-Fastgossip-Version": str(version)}
        )

    async def delete_key(self, request: Any) -> Any:
        node = self._node()
        key = _key(request)
        try:
            version = node.delete(key)
        except ValueError as exc:
            raise _BadRequest(400, str(exc)) from None
        return self._json(
            {"key": key, "version": version}, headers={"X-Fastgossip-Version": str(version)}
        )

    async def watch(self, request: Any) -> Any:
        """Server-Sent Events: one ``change`` event per change under the
        prefix (``data``: the change as JSON), a comment every 15 s. A watcher
        holds at most WATCH_QUEUE changes and WATCH_BYTES bytes of values
        unsent; beyond, the oldest go and a ``lagged`` event says how many."""
        from aiohttp import web

        node = self._node()
        prefix = _prefix(request)
        self._room_for_a_stream()
        queue: Deque[Any] = collections.deque()
        held = {"bytes": 0, "dropped": 0}
        ready = asyncio.Event()

        def seen(ch: Any) -> None:
            size = len(ch.value) if isinstance(ch.value, bytes) else 8
            queue.append((ch, size))
            held["bytes"] += size
            while len(queue) > WATCH_QUEUE or held["bytes"] > WATCH_BYTES:
                _, gone = queue.popleft()
                held["bytes"] -= gone
                held["dropped"] += 1
            ready.set()

        unsubscribe = node.subscribe(prefix, seen)
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        self.streams += 1
        try:
            await resp.prepare(request)
            await resp.write(b": watching\n\n")
            quiet = 0.0
            while not node.closed and not _gone(request):
                try:
                    await asyncio.wait_for(ready.wait(), POLL)
                except asyncio.TimeoutError:
                    quiet += POLL
                    if quiet >= 15.0:
                        quiet = 0.0
                        await resp.write(b": keepalive\n\n")
                    continue
                ready.clear()
                quiet = 0.0
                if held["dropped"]:
                    self.stream_lag += held["dropped"]
                    lag = {"key": "", "kind": "lagged", "version": 0, "origin": "",
                           "int": held["dropped"]}  # fmt: skip
                    held["dropped"] = 0
                    await resp.write(_sse(lag))
                while queue:
                    ch, size = queue.popleft()
                    held["bytes"] -= size
                    await resp.write(_event(ch))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.streams -= 1
            unsubscribe()
        return resp

    async def members(self, request: Any) -> Any:
        node = self._node()
        return self._json([member_json(m) for m in sorted(node.members(), key=_by_id)])

    async def agent_info(self, request: Any) -> Any:
        node = self._node()
        cfg = dataclasses.asdict(self.config)
        cfg.pop("http_token_file", None)
        return self._json(
            {
                "node_id": node.node_id,
                "origin": node.origin,
                "addr": _fmt(node.addr),
                "http": _fmt(self.http_addr) if self.http_addr else None,
                "uptime_s": round(time.time() - self.started_at, 1),
                "keys": node.state_len(),
                "config": cfg,
                "stats": node.stats.as_dict(),
                "refusals": node.refusals(),
            }
        )

    async def leave(self, request: Any) -> Any:
        self._node()
        asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self.stop()))
        return self._json({"leaving": True})

    async def health(self, request: Any) -> Any:
        node = self.node
        if node is None or node.closed:
            return self._json({"status": "stopping"}, status=503)
        return self._json({"status": "ok", "node_id": node.node_id})

    async def metrics(self, request: Any) -> Any:
        from aiohttp import web
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body = generate_latest(self._registry())
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _registry(self) -> Any:
        registry = getattr(self, "_prom", None)
        if registry is None:
            from prometheus_client import CollectorRegistry

            registry = self._prom = CollectorRegistry(auto_describe=False)
            registry.register(_Collector(self))
        return registry

    async def index(self, request: Any) -> Any:
        from aiohttp import web

        path = os.path.join(WEB_DIR, "index.html")
        if not os.path.exists(path):
            return self._error(404, "the status page is not installed")
        return web.FileResponse(path)


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Collector:
    """Reads the node at scrape time (nothing is kept between scrapes)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        node = self.agent.node
        if node is None:
            return
        for name, value in node.stats.as_dict().items():
            yield CounterMetricFamily(f"fastgossip_{name}", f"node.stats.{name}", value=value)
        refused = CounterMetricFamily(
            "fastgossip_refusals", "entries and connections refused, by cause", labels=["cause"]
        )
        for cause, n in sorted(node.refusals().items()):
            refused.add_metric([cause], n)
        yield refused
        keys = GaugeMetricFamily("fastgossip_keys", "keys held (tombstones included)")
        keys.add_metric([], node.state_len())
        yield keys
        members = node.members() if not node.closed else []
        status = GaugeMetricFamily("fastgossip_members", "members by status", labels=["status"])
        counts: Dict[str, int] = dict.fromkeys(("alive", "suspect", "dead", "left"), 0)
        for m in members:
            counts[m.status] = counts.get(m.status, 0) + 1
        for s, n in counts.items():
            status.add_metric([s], n)
        yield status
        phi = GaugeMetricFamily(
            "fastgossip_member_phi", "suspicion of each member", labels=["peer"]
        )
        for m in members:
            if m.node_id != node.node_id and m.phi is not None:
                phi.add_metric([m.node_id], m.phi)
        yield phi
        rtt = GaugeMetricFamily(
            "fastgossip_peer_rtt_seconds",
            "round-trip time of the exchanges with each peer (smoothed)",
            labels=["peer"],
        )
        names = {m.addr: m.node_id for m in members if m.addr}
        for addr, seconds in sorted(node.peer_rtt().items()):
            rtt.add_metric([names.get(addr) or _fmt(addr)], seconds)
        yield rtt
        streams = GaugeMetricFamily(
            "fastgossip_http_streams", "SSE watches and blocking reads open"
        )
        streams.add_metric([], self.agent.streams)
        yield streams
        lag = CounterMetricFamily(
            "fastgossip_watch_lagged", "changes dropped for SSE watchers too slow to read them"
        )
        lag.add_metric([], self.agent.stream_lag)
        yield lag


def _by_id(m: Any) -> str:
    return str(m.node_id)


def _fmt(addr: Any) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _gone(request: Any) -> bool:
    """The client closed its connection (aiohttp does not cancel the handler)."""
    transport = request.transport
    return transport is None or transport.is_closing()


def _key(request: Any) -> str:
    """The key as the client sent it: from the raw path, percent-decoded, so
    that ``a/../b`` is that key, not ``b`` (the router normalises the path)."""
    raw = request.raw_path.split("?", 1)[0]
    key = urllib.parse.unquote(raw[len("/v1/kv/") :]) if raw.startswith("/v1/kv/") else ""
    key = key or request.match_info.get("key", "")
    if not key or key.startswith(RESERVED_PREFIX):
        raise _BadRequest(400, "keys starting with \\x00 are the cluster's own")
    return key


def _prefix(request: Any) -> str:
    prefix = request.query.get("prefix", "")
    if prefix.startswith(RESERVED_PREFIX):
        raise _BadRequest(400, "keys starting with \\x00 are the cluster's own")
    return prefix


def _event(ch: Any) -> bytes:
    data: Dict[str, Any] = {
        "key": ch.key,
        "kind": ch.kind,
        "version": ch.version,
        "origin": ch.origin,
    }
    _value_json(data, ch.value)
    return _sse(data)


def _sse(data: Dict[str, Any]) -> bytes:
    """One Server-Sent ``change`` event."""
    return b"event: change\ndata: " + _dumps(data).encode() + b"\n\n"


def _loopback_host(host: str) -> bool:
    """Whether a Host header names this machine's loopback (with a port or not)."""
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else name
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    name = name.rstrip(".")
    return name == "localhost" or _is_loopback(name)


def _int_query(request: Any, name: str) -> Optional[int]:
    text = request.query.get(name)
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise _BadRequest(400, f"{name} must be an integer, got {text!r}") from None
    if value < 0:
        raise _BadRequest(400, f"{name} must be >= 0")
    return value


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


# -- logging and the process ---------------------------------------------------------
class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(level: str, as_json: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("fastgossip")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


async def run_agent(config: AgentConfig) -> int:
    """Run until SIGTERM/SIGINT (leave, then 0; a second signal exits at once)
    or ``PUT /v1/agent/leave``."""
    agent = Agent(config)
    loop = asyncio.get_running_loop()
    asked = asyncio.Event()
    signals = {"n": 0}

    def on_signal(signum: int) -> None:
        signals["n"] += 1
        if signals["n"] > 1:
            log.warning("second signal: exiting at once")
            os._exit(1)
        log.info("signal %s: leaving the cluster", signal.Signals(signum).name)
        asked.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, on_signal, signum)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - not on a main thread
            pass
    await agent.start()
    asked_task = asyncio.ensure_future(asked.wait())
    stopped_task = asyncio.ensure_future(agent.stopped.wait())
    await asyncio.wait([asked_task, stopped_task], return_when=asyncio.FIRST_COMPLETED)
    asked_task.cancel()
    stopped_task.cancel()
    if not agent.stopped.is_set():
        await agent.stop()
    log.info("agent %s stopped", config.node_id)
    return 0


def add_agent_arguments(p: Any) -> None:
    p.add_argument("--config", help="a TOML file of these settings (flags win)")
    p.add_argument("--node-id", default=None, help="this node's id (default: the host name)")
    p.add_argument("--bind", default=None, help=f"gossip address (default {DEFAULT_BIND})")
    p.add_argument("--advertise", default=None, help="the address others dial")
    p.add_argument("--join", default=None, help="seeds, host:port,host:port")
    p.add_argument("--cluster-key-file", default=None, help="a keyring file (see keyring)")
    p.add_argument("--data-dir", default=None, help="durable mode: keep the table here")
    p.add_argument("--fsync", default=None, choices=["always", "interval", "never"])
    p.add_argument("--interval", type=float, default=None, help="gossip interval, seconds")
    p.add_argument("--meta", action="append", default=None, help="KEY=VALUE member metadata")
    p.add_argument("--http", default=None, help=f"HTTP API address (default {DEFAULT_HTTP})")
    p.add_argument("--http-token-file", default=None, help="a token every request must carry")
    p.add_argument(
        "--http-open",
        action="store_true",
        default=None,
        help="serve the API beyond loopback without a token (anyone reaching it may use it)",
    )
    p.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING")
    p.add_argument("--log-json", action="store_true", default=None, help="one JSON object per line")


def config_from_args(args: Any) -> AgentConfig:
    over: Dict[str, Any] = {
        "node_id": args.node_id,
        "bind": args.bind,
        "advertise": args.advertise,
        "join": [s for s in args.join.split(",") if s] if args.join else None,
        "cluster_key_file": args.cluster_key_file,
        "data_dir": args.data_dir,
        "fsync": args.fsync,
        "gossip_interval": args.interval,
        "meta": dict(m.split("=", 1) for m in args.meta) if args.meta else None,
        "http": args.http,
        "http_token_file": args.http_token_file,
        "http_open": args.http_open,
        "log_level": args.log_level,
        "log_json": args.log_json,
    }
    if args.config:
        return AgentConfig.from_toml(args.config, **over)
    return AgentConfig(**{k: v for k, v in over.items() if v is not None})


def main_agent(args: Any) -> int:
    _need_extra()
    try:
        config = config_from_args(args)
        config.check()
    except (ValueError, OSError) as exc:
        print(f"fastgossip agent: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level, config.log_json)
    try:
        return asyncio.run(run_agent(config))
    except (OSError, ValueError) as exc:
        log.error("agent: %s", exc)
        return 1


__all__: List[str] = ["Agent", "AgentConfig", "run_agent"]
