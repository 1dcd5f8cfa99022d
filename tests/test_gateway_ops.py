"""Liveness, shutdown, /metrics and the ASGI mount, against real servers and real websockets."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import re
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError
from websockets.typing import Origin

import synk
from bench.chaos.proxy import Proxy
from synk.gateway import Gateway
from synk.gateway import asgi as asgi_module
from synk.store.memory import MemoryStore
from tests.gateway_env import KEY, big_rounds, http_get, http_request, open_stalled, running, store_url, until
from tests.models import Agent, Note
from tests.wsclient import WsClient


def samples(text: str) -> dict[str, float]:
    """The sample lines of a Prometheus text exposition."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


# -- 6. liveness and shutdown ------------------------------------------------------------------


async def test_a_client_that_never_answers_pings_is_dropped() -> None:
    async with running(None, ping_interval=0.2, ping_timeout=0.2) as env:
        healthy = await WsClient.open(env.url)
        reader, writer = await asyncio.open_connection("127.0.0.1", env.port)
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            writer.write(
                (
                    f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{env.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 101 "), head
            accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
            assert b"Sec-WebSocket-Accept: " + accept in head
            await until(lambda: len(env.gateway.sessions) == 2, "the raw client's session")
            [mute] = [cid for cid in env.gateway.sessions if cid != healthy.of("hello")[0]["client"]]
            # From here on it never reads and never answers a ping.
            await until(lambda: mute not in env.gateway.sessions, "the mute client to be dropped", timeout=15)
            # The healthy client, which answers pings, stayed through many of them.
            assert healthy.close_code is None
            assert list(env.gateway.sessions) == [healthy.of("hello")[0]["client"]]
            await healthy.subscribe([KEY])
        finally:
            writer.close()
            await healthy.close()


@asynccontextmanager
async def synk_serve(*args: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """``synk serve --port 0 ARGS`` as a child process; yields it and its port once it accepts connections."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "synk.cli",
        "serve",
        "--port",
        "0",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        port = 0
        async with asyncio.timeout(20):
            while not port:
                line = await proc.stdout.readline()
                assert line, f"synk serve exited with {await proc.wait()} before listening"
                found = re.search(rb"ws://127\.0\.0\.1:(\d+)/", line)
                # printed once it listens
                port = int(found.group(1)) if found else 0
        yield proc, port
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def sigterm_exits_cleanly(proc: asyncio.subprocess.Process, client: WsClient, within: float) -> None:
    """SIGTERM ``proc``: ``client`` is closed with 1001, then the process exits 0 within ``within`` seconds."""
    proc.send_signal(signal.SIGTERM)
    await client.wait(lambda: client.close_code is not None, timeout=10)
    assert client.close_code == 1001
    try:
        code = await asyncio.wait_for(proc.wait(), within)
    except TimeoutError:
        raise AssertionError(f"synk serve did not exit within {within} s of SIGTERM") from None
    assert code == 0


async def test_sigterm_closes_clients_with_1001_and_exits_0(redis_url: str) -> None:
    async with synk_serve("--redis", redis_url, "--prefix", f"sigterm:{uuid.uuid4().hex[:8]}:") as (proc, port):
        client = await WsClient.open(f"ws://127.0.0.1:{port}/")
        await client.subscribe([KEY])
        await sigterm_exits_cleanly(proc, client, within=10)
        assert proc.stdout is not None
        assert b"synk gateway stopped" in await proc.stdout.read()


async def test_sigterm_with_a_client_that_stopped_reading(redis_url: str) -> None:
    """A client that stopped reading does not hold up the shutdown: exit 0 within the deadline."""
    prefix = f"sigterm:{uuid.uuid4().hex[:8]}:"
    async with synk_serve("--redis", redis_url, "--prefix", prefix) as (proc, port):
        async with synk.connect(redis_url, types=[Agent], prefix=prefix) as world:
            agents = [world.create(Agent(id=f"t{i}")) for i in range(20)]
            await world.flush()
            url = f"ws://127.0.0.1:{port}/"
            normal = await WsClient.open(url)
            await normal.subscribe([KEY])
            stalled = await open_stalled(url, port)
            try:
                await stalled.send(orjson.dumps({"method": "updateSubscription", "add": [KEY]}).decode())

                async def fell_behind() -> bool:
                    _, _, body = await http_get(port, "/metrics")
                    return samples(body.decode())["synk_slow_client_resyncs_total"] >= 1

                # Write 20 KB changes until the gateway reports the stalled client fell behind.
                await big_rounds(world, agents, normal, fell_behind, round_timeout=10)
                await sigterm_exits_cleanly(proc, normal, within=8)
            finally:
                stalled.transport.abort()


# -- 7. observability ------------------------------------------------------------------------------


async def test_metrics_endpoint(backend: str, request: pytest.FixtureRequest) -> None:
    async with running(store_url(backend, request)) as env:
        env.world.create(Agent(id="m1"))
        await env.world.flush()
        client = await WsClient.open(env.url)
        await client.subscribe([KEY])
        await client.send("not json")
        await client.wait(lambda: bool(client.of("error")))
        status, headers, body = await http_get(env.port, "/metrics")
        assert status == 200
        assert headers["content-type"].startswith("text/plain; version=0.0.4")
        text = body.decode()
        for name in (
            "synk_clients",
            "synk_subscribed_keys",
            "synk_messages_in_total",
            "synk_messages_out_total",
            "synk_bytes_out_total",
            "synk_slow_client_resyncs_total",
        ):
            assert f"# TYPE {name} " in text, name
        values = samples(text)
        assert values["synk_clients"] == 1
        assert values["synk_subscribed_keys"] == 1
        assert values["synk_messages_in_total"] == 2
        assert values["synk_messages_out_total"] >= 4  # hello, add, snap, error
        assert values["synk_bytes_out_total"] > 0
        assert values["synk_slow_client_resyncs_total"] == 0
        assert values['synk_errors_total{code="bad_json"}'] == 1
        # It follows the gateway: a change goes out, the client leaves.
        for obj in await env.world.load([KEY]):
            assert isinstance(obj, Agent)
            obj.name = "x"
        await env.world.flush()
        await client.wait(lambda: bool(client.of("mod")))
        await client.close()
        await until(lambda: not env.gateway.sessions, "the client to leave")
        status, _, body = await http_get(env.port, "/metrics?fresh=1")
        values = samples(body.decode())
        assert status == 200
        assert values["synk_clients"] == 0
        assert values["synk_subscribed_keys"] == 0
        assert values["synk_messages_out_total"] >= 5
        # Latencies: every write to a client is one delivery; a gateway sharing its world's
        # process shows the world's flushes too.
        assert values["synk_delivery_seconds_count"] >= 2
        assert values['synk_delivery_seconds_bucket{le="+Inf"}'] == values["synk_delivery_seconds_count"]
        if backend == "memory":
            assert values["synk_flush_seconds_count"] >= 2
        assert values["synk_store_messages_total"] >= 1


# -- 8. ASGI ----------------------------------------------------------------------------------------


@asynccontextmanager
async def uvicorn_app(app: Any, ws: str = "websockets-sansio") -> AsyncIterator[int]:
    """Serve an ASGI app with uvicorn in this process (``ws``: its websocket implementation); yields its port once started."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", ws=ws, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        await until(lambda: server.started or task.done(), "uvicorn to start")
        assert server.started, "uvicorn did not start"
        yield int(server.servers[0].sockets[0].getsockname()[1])
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


@asynccontextmanager
async def world_and_gateway(url: str | None, **config: Any) -> AsyncIterator[tuple[synk.World, Gateway]]:
    if url is None:
        world = synk.World(MemoryStore(), [Agent, Note])
        yield world, Gateway(world, **config)
        return
    prefix = f"asgitest:{uuid.uuid4().hex[:10]}:"
    world = await synk.connect(url, types=[Agent, Note], prefix=prefix)
    try:
        yield world, Gateway(url, prefix=prefix, **config)
    finally:
        await world.close()


async def check_asgi(world: synk.World, gateway: Gateway, base: str, port: int) -> None:
    """Snapshot, changes, /metrics, client files and the frame limit, under ``base``."""
    agent = world.create(Agent(id="w1"))
    await world.flush()
    client = await WsClient.open(f"ws://127.0.0.1:{port}{base}/")
    await client.subscribe([KEY])
    assert client.of("snap")[0]["ids"] == ["w1"]
    agent.name = "changed"
    await world.flush()
    await client.wait(lambda: bool(client.of("mod")))
    assert client.of("mod")[0]["diff"] == {"name": "changed"}

    status, headers, body = await http_get(port, f"{base}/metrics")
    assert status == 200, f"GET {base}/metrics: {status}"
    assert headers["content-type"].startswith("text/plain")
    assert samples(body.decode())["synk_clients"] == 1

    status, headers, _ = await http_get(port, f"{base}/synk-client/index.js")
    assert status == 200, f"GET {base}/synk-client/index.js: {status}"
    assert headers["content-type"].startswith("text/javascript")
    assert headers["cache-control"] == "no-cache"  # as the standalone server says
    status, _, _ = await http_get(port, f"{base}/synk-client/../pyproject.toml")
    assert status == 404
    # Only GET and HEAD are answered (and OPTIONS, a CORS preflight).
    status, headers, body = await http_request(port, "POST", f"{base}/metrics")
    assert (status, headers["allow"]) == (405, "GET, HEAD, OPTIONS"), body
    status, headers, body = await http_request(port, "HEAD", f"{base}/synk-client/index.js")
    assert status == 200 and int(headers["content-length"]) == 0
    own = f"Origin: http://127.0.0.1:{port}\r\n"
    status, headers, _ = await http_request(port, "OPTIONS", f"{base}/synk-client/index.js", own)
    assert status == 204 and headers["access-control-allow-origin"] == f"http://127.0.0.1:{port}"

    # The frame limit counts bytes: 40,000 "é" are 80,000 bytes in UTF-8.
    for frame in ("x" * (64 * 1024 + 1), "é" * 40_000):
        big = await WsClient.open(f"ws://127.0.0.1:{port}{base}/")
        await big.send(frame)
        await big.wait(lambda: big.close_code is not None)  # noqa: B023 - awaited at once
        assert big.close_code == 1009
        await until(lambda: len(gateway.sessions) == 1, "the closed client's session to go")
    await client.close()


async def test_asgi_app_at_the_root(backend: str, request: pytest.FixtureRequest) -> None:
    async with world_and_gateway(store_url(backend, request)) as (world, gateway):
        async with uvicorn_app(gateway.asgi_app()) as port:
            await check_asgi(world, gateway, "", port)


@pytest.mark.parametrize("ws", ["websockets-sansio", "websockets", "wsproto"])
async def test_an_asgi_client_whose_socket_takes_the_writes_is_written_without_a_task(ws: str) -> None:
    """An ASGI send is a coroutine; awaited from a writer task per client, it cost a task
    switch per write (1.45 times synk serve's CPU per delivery). uvicorn's completes in
    one step while the socket takes writes (each of its websocket implementations):
    the write-out steps it, and no task runs."""
    async with world_and_gateway(None) as (world, gateway), uvicorn_app(gateway.asgi_app(), ws) as port:
        agents = [world.create(Agent(id=f"b{i}")) for i in range(20)]
        await world.flush()
        client = await WsClient.open(f"ws://127.0.0.1:{port}/")
        await client.subscribe([KEY])
        loop = asyncio.get_running_loop()
        made: list[str] = []

        def factory(loop: asyncio.AbstractEventLoop, coro: Any) -> asyncio.Task[Any]:
            made.append(coro.__qualname__)
            return asyncio.Task(coro, loop=loop)

        loop.set_task_factory(factory)
        try:
            for round_ in range(1, 6):
                for a in agents:
                    a.name = f"r{round_}"
                await world.flush()
                await client.wait(lambda r=round_: len(client.of("mod")) == 20 * r)  # type: ignore[misc]
        finally:
            loop.set_task_factory(None)
        assert not [name for name in made if name.startswith(("Session.", "_AsgiOutlet."))], made
        # One send per write: 20 mods of a flush in one frame, or a few.
        assert len(client.frames) < len(client.messages) / 5
        await client.close()


@pytest.mark.parametrize("ws", ["websockets-sansio", "websockets", "wsproto"])
async def test_an_asgi_client_that_stops_reading_gets_everything_once_it_reads_again(ws: str) -> None:
    """A stalled socket makes uvicorn's send wait (it pauses writing): the rest of that write
    goes on in a task, later writes wait for it, the backlog falls behind and is re-snapshotted,
    another client on the key never waits, and once the socket drains the client's mirror
    is the world's, in its last state."""
    async with world_and_gateway(None) as (world, gateway), uvicorn_app(gateway.asgi_app(), ws) as port:
        agents = [world.create(Agent(id=f"s{i}")) for i in range(20)]
        await world.flush()
        normal = await WsClient.open(f"ws://127.0.0.1:{port}/")
        await normal.subscribe([KEY])
        async with Proxy(port) as proxy:
            # (Without permessage-deflate: the rounds' 20 KB fields would deflate to nothing.)
            slow = await WsClient.open(f"ws://127.0.0.1:{proxy.port}/", compression=None)
            await slow.subscribe([KEY])
            outlets = [s.outlet for s in gateway.sessions.values()]
            proxy.stall()
            suspended: list[bool] = []

            def fell_behind() -> bool:
                suspended.extend(o._rest is not None for o in outlets if isinstance(o, asgi_module._AsgiOutlet))
                return any(suspended) and gateway.metrics.slow_resyncs >= 1

            rounds = await big_rounds(world, agents, normal, fell_behind, round_timeout=10)
            proxy.heal()
            final = {a.id: a.name for a in agents}
            await slow.wait(lambda: {i: o["state"]["name"] for i, o in slow.mirror.items()} == final, timeout=20)
            assert rounds >= 1 and not slow.close_code
            await slow.close()
        await normal.close()


async def test_asgi_app_mounted_in_starlette(backend: str, request: pytest.FixtureRequest) -> None:
    async with world_and_gateway(store_url(backend, request)) as (world, gateway):

        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            await gateway.start()
            yield
            await gateway.close()

        app = Starlette(routes=[Mount("/sync", app=gateway.asgi_app())], lifespan=lifespan)
        async with uvicorn_app(app) as port:
            await check_asgi(world, gateway, "/sync", port)


async def test_asgi_routes_serve_the_path_with_and_without_its_slash(caplog: pytest.LogCaptureFixture) -> None:
    """``asgi_routes("/sync")`` and ``lifespan=gateway.lifespan``: what docs/gateway.md shows for FastAPI."""
    async with world_and_gateway(None, origins=["http://ok.example"]) as (world, gateway):
        app = Starlette(routes=gateway.asgi_routes("/sync"), lifespan=gateway.lifespan)
        agent = world.create(Agent(id="r1"))
        await world.flush()
        async with uvicorn_app(app) as port:
            for url in (f"ws://127.0.0.1:{port}/sync", f"ws://127.0.0.1:{port}/sync/"):
                client = await WsClient.open(url)
                await client.subscribe([KEY])
                assert list(client.mirror) == ["r1"], url
                await client.close()
            status, _, _ = await http_get(port, "/sync/synk-client/index.js")
            assert status == 200
            # A refusal says why, in the log (uvicorn itself only logs the accepted handshake).
            with caplog.at_level(logging.INFO, logger="synk.gateway"):
                async with connect(f"ws://127.0.0.1:{port}/sync", origin=Origin("http://evil.example")) as ws:
                    with pytest.raises(ConnectionClosedError):
                        await ws.recv()
            [line] = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
            assert "origin 'http://evil.example' is not allowed (path /sync)" in line
        assert gateway.sessions == {}
        assert agent.version == 1


async def test_metrics_can_be_turned_off_or_put_behind_authenticate() -> None:
    async with running(None, metrics="off") as env:
        status, _, _ = await http_get(env.port, "/metrics")
        assert status == 404
    with pytest.raises(synk.ConfigError, match='metrics is "authenticated" but no authenticate hook'):
        Gateway("memory://", metrics="authenticated")

    def authenticate(handshake: Any) -> str | None:
        return "ops" if handshake.query.get("token") == "t0ken" or handshake.headers.get("authorization") == "Bearer t0ken" else None

    async with running(None, metrics="authenticated", authenticate=authenticate) as env:
        status, headers, _ = await http_get(env.port, "/metrics")
        assert (status, headers["www-authenticate"]) == (401, "Bearer")
        status, _, body = await http_get(env.port, "/metrics?token=t0ken")
        assert status == 200 and "synk_clients 0" in body.decode()
        status, _, _ = await http_request(env.port, "GET", "/metrics", "Authorization: Bearer t0ken\r\n")
        assert status == 200
        status, _, _ = await http_get(env.port, "/synk-client/index.js")  # the client's files stay public
        assert status == 200
