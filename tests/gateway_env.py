"""A running gateway over a world, on either backend, for gateway tests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

import synk
from synk.gateway import Gateway
from synk.gateway.metrics import Metrics
from synk.gateway.session import Outlet, Session
from synk.gateway.writeout import WriterWatch
from synk.store.memory import MemoryStore
from tests.models import Agent, Note
from tests.wsclient import WsClient

if TYPE_CHECKING:
    import pytest


@dataclass
class Env:
    """A world, a gateway serving its store, and the gateway's URL."""

    world: synk.World
    gateway: Gateway
    url: str
    port: int


@asynccontextmanager
async def running(store_url: str | None, **config: Any) -> AsyncIterator[Env]:
    """A gateway on ``store_url`` (None: an embedded memory store shared with the world).

    On Redis the gateway has its own connections, as a separate process would.
    """
    if store_url is None:
        world = synk.World(MemoryStore(), [Agent, Note])
        gateway = Gateway(world, **config)
    else:
        prefix = f"gwtest:{uuid.uuid4().hex[:10]}:"
        world = await synk.connect(store_url, types=[Agent, Note], prefix=prefix)
        gateway = Gateway(store_url, prefix=prefix, **config)
    try:
        async with gateway.serve("127.0.0.1", 0) as server:
            yield Env(world, gateway, f"ws://127.0.0.1:{server.port}/", server.port)
    finally:
        await world.close()


KEY = "world:0|0"


def store_url(backend: str, request: pytest.FixtureRequest) -> str | None:
    """None (the memory store) or the session's Redis URL, for a backend name."""
    if backend == "memory":
        return None
    return str(request.getfixturevalue("redis_cluster_url" if backend == "cluster" else "redis_url"))


async def until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll ``predicate`` until it holds, failing after ``timeout`` seconds."""

    async def holds() -> bool:
        return predicate()

    await until_async(holds, what, timeout)


async def until_async(predicate: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0) -> None:
    """``until`` for a predicate that must be awaited."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


async def store_view(world: synk.World, keys: list[str]) -> dict[str, dict[str, Any]]:
    """What the store holds for ``keys``, in the shape of WsClient.mirror."""
    out: dict[str, dict[str, Any]] = {}
    for key in keys:
        for s in await world.store.snapshot(key):
            out[s.id] = {"sKey": key, "v": s.version, "state": orjson.loads(s.record)["state"]}
    return out


async def http_get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    """A plain HTTP/1.1 GET, the path sent exactly as given (no normalization)."""
    return await http_request(port, "GET", path)


async def http_request(port: int, method: str, path: str, extra_headers: str = "") -> tuple[int, dict[str, str], bytes]:
    """A plain HTTP/1.1 request (``extra_headers``: lines ending in CRLF); status, headers, body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head_lines = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra_headers}Connection: close\r\n\r\n"
        writer.write(head_lines.encode("latin-1"))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        if "content-length" in headers:
            body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 5)
        else:
            body = await asyncio.wait_for(reader.read(), 5)
        return status, headers, body
    finally:
        writer.close()


async def open_stalled(url: str, port: int) -> ClientConnection:
    """A websocket to ``url`` whose reader stops after one queued message, over a small receive buffer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await connect(url + "?synk_resnap=1", sock=sock, max_queue=1)


async def big_rounds(
    world: synk.World,
    agents: list[Agent],
    normal: WsClient,
    done: Callable[[], bool | Awaitable[bool]],
    start: int = 0,
    round_timeout: float = 5.0,
) -> int:
    """Change every agent with a 20 KB field, a flush a round, until ``done()`` (which may be awaitable).

    Every round, the normal client must get every change (within
    ``round_timeout`` seconds) before the next round: a stalled client on the
    same key never holds it up. Returns the number of the last round.
    """

    async def finished() -> bool:
        result = done()
        return result if isinstance(result, bool) else await result

    rounds = start
    while not await finished():
        rounds += 1
        assert rounds - start <= 300, "the slow client never fell behind"
        for a in agents:
            a.name = f"{rounds}:" + "x" * 20_000
        await world.flush()
        await normal.wait(lambda: len(normal.of("mod")) == len(agents) * rounds, timeout=round_timeout)  # noqa: B023 - awaited at once
    return rounds


async def first_world_message(world: synk.World, client: WsClient, msg: dict[str, Any]) -> synk.ClientMessage:
    """Send ``msg`` from ``client`` until ``world.messages()`` yields one, and return it.

    The store keeps client messages only while a simulation reads them, and
    the reader starts listening at its first step: a message sent before may
    be dropped, so it is sent again until one arrives.
    """
    received: list[synk.ClientMessage] = []

    async def read() -> None:
        async for m in world.messages():
            received.append(m)
            return

    reader = asyncio.create_task(read())
    try:
        async with asyncio.timeout(10):
            while not reader.done():
                await client.send(msg)
                await asyncio.wait({reader}, timeout=0.1)
    finally:
        reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader
    return received[0]


async def hold_reads(env: Env, key: str, *, before: bool) -> tuple[asyncio.Event, asyncio.Event]:
    """Hold the gateway's next snapshot read of ``key`` (``before`` it reads, or after): (read reached, release).

    ``reached`` is set once the read is held: before it is sent, or once its
    reply is in (set on entry, a write the test makes next could land first).
    """
    store = env.gateway.store
    real = store.snapshot
    reached, release = asyncio.Event(), asyncio.Event()
    taken = False

    async def held(k: str, *, marks: bool = False) -> Any:
        nonlocal taken
        if k != key or taken:
            return await real(k, marks=marks)
        taken = True
        if before:
            reached.set()
            await release.wait()
            return await real(k, marks=marks)
        out = await real(k, marks=marks)
        reached.set()
        await release.wait()
        return out

    store.snapshot = held  # type: ignore[method-assign,assignment]
    return reached, release


def session(outlet: Outlet, metrics: Metrics | None = None, watch: WriterWatch | None = None) -> Session:
    """A session over ``outlet`` with the gateway's usual bounds (an hour-long watch period: it never looks on its own)."""
    return Session(
        "c1", None, outlet, metrics or Metrics(),
        max_backlog_bytes=1 << 20, max_backlog_messages=1000, stuck_timeout=10.0,
        rate=50, burst=200, key_rate=1000, key_burst=2000,
        on_lag=lambda s: None, on_dirty=lambda s: None, watch=watch or WriterWatch(3600),
    )  # fmt: skip


def router_matches(gateway: Gateway) -> bool:
    """The router's follower of each (client, key) is that client's session and its state of the key, and
    every key a session follows is routed to it: the fan-out reaches clients through these alone."""
    followed_keys = gateway.router.keys()  # a list (Router is not a dict)
    routed = {(cid, key): follower for key in followed_keys for cid, follower in gateway.router.clients(key).items()}
    followed = {(s.id, key): (s, state) for s in gateway.sessions.values() for key, state in s.keys.items()}
    return all(routed.get(pair) == (s, state) and routed[pair][1] is state for pair, (s, state) in followed.items()) and all(
        pair in followed for pair in routed
    )


def client_id(client: WsClient) -> str:
    """The id the gateway gave ``client`` (its hello)."""
    return str(client.of("hello")[0]["client"])


async def errors_after(client: WsClient, frame: dict[str, Any] | str | bytes) -> dict[str, Any]:
    """Send ``frame`` and return the error it gets."""
    start = len(client.of("error"))
    await client.send(frame)
    await client.wait(lambda: len(client.of("error")) > start)
    return client.of("error")[start]
