"""Shared work, slow clients and bounds, against a real gateway, real websockets and both stores (bad input: test_gateway_input.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import orjson
import pytest
import redis.asyncio as aioredis

import synk
from synk.gateway import Gateway
from synk.gateway.barriers import BARRIER, READS_PER_CLIENT
from synk.gateway.ws import WebsocketOutlet
from synk.store.redis import RedisStore
from tests.gateway_env import (
    KEY,
    Env,
    big_rounds,
    client_id,
    open_stalled,
    router_matches,
    running,
    store_url,
    store_view,
    until,
    until_async,
)
from tests.models import Agent
from tests.wsclient import WsClient

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection


# -- 1. shared work ------------------------------------------------------------------------


async def test_one_redis_subscription_per_key(redis_url: str) -> None:
    """Clients share one SSUBSCRIBE per key, dropped when the key's last client leaves."""
    other = "world:1|0"
    async with running(redis_url) as env:
        store = env.gateway.store
        assert isinstance(store, RedisStore)
        r = aioredis.Redis.from_url(redis_url)

        async def numsub(key: str) -> int:
            reply: Any = await r.execute_command("PUBSUB", "SHARDNUMSUB", store.channel(key))  # type: ignore[no-untyped-call]
            return int(reply[1])

        try:
            assert await numsub(KEY) == 0
            clients = [await WsClient.open(env.url) for _ in range(3)]
            await asyncio.gather(*(c.subscribe([KEY, other]) for c in clients))
            assert await numsub(KEY) == 1
            assert await numsub(other) == 1
            assert env.gateway.metrics.keys == 2
            assert router_matches(env.gateway)

            # One leaves by disconnecting, one removes KEY: both keys still have a client.
            await clients[0].close()
            await clients[1].subscribe([], [KEY], wait=False)
            router = env.gateway.router
            await until(lambda: len(router.clients(KEY)) == 1 and len(router.clients(other)) == 2, "the gateway to see both leave")
            assert router_matches(env.gateway)
            assert await numsub(KEY) == 1
            assert await numsub(other) == 1

            # The last client of KEY removes it: the Redis subscription goes.
            await clients[2].subscribe([], [KEY], wait=False)
            await until_async(lambda: _is(numsub(KEY), 0), "SHARDNUMSUB of KEY to drop to 0")
            assert await numsub(other) == 1
            assert env.gateway.metrics.keys == 1

            # The last clients of the other key disconnect: it goes too.
            await clients[1].close()
            assert await numsub(other) == 1
            await clients[2].close()
            await until_async(lambda: _is(numsub(other), 0), "SHARDNUMSUB of the other key to drop to 0")
            await until(lambda: env.gateway.metrics.keys == 0 and not env.gateway.sessions, "the gateway to forget both keys")

            # A key subscribed again after its subscription was dropped is live again.
            env.world.create(Agent(id="back"))
            await env.world.flush()
            again = await WsClient.open(env.url)
            await again.subscribe([KEY])
            assert await numsub(KEY) == 1
            assert again.of("snap")[-1]["ids"] == ["back"]
            for obj in await env.world.load([KEY]):
                assert isinstance(obj, Agent)
                obj.name = "live"
            await env.world.flush()
            await again.wait(lambda: bool(again.of("mod")))
            await again.close()
        finally:
            await r.aclose()


async def _is(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def test_frames_are_coalesced(backend: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """200 changes of one flush reach a client in far fewer socket writes than messages."""
    async with running(store_url(backend, request)) as env:
        agents = [env.world.create(Agent(id=f"c{i}")) for i in range(200)]
        await env.world.flush()
        client = await WsClient.open(env.url)
        await client.subscribe([KEY])
        [session] = env.gateway.sessions.values()
        outlet = session.outlet
        assert isinstance(outlet, WebsocketOutlet)
        transport = outlet.connection.transport
        writes: list[int] = []
        write = transport.write

        def counting(data: bytes | bytearray | memoryview) -> None:
            writes.append(len(data))
            write(data)

        monkeypatch.setattr(transport, "write", counting)
        for a in agents:
            a.name = "changed"
        await env.world.flush()
        await client.wait(lambda: len(client.of("mod")) == 200)
        assert sorted(m["id"] for m in client.of("mod")) == sorted(a.id for a in agents)
        assert all(m["v"] == 2 and m["diff"] == {"name": "changed"} for m in client.of("mod"))
        assert 1 <= len(writes) < 200 / 4, f"{len(writes)} socket writes for 200 messages"
        await client.close()


# -- 2. slow clients -----------------------------------------------------------------------


SLOW = {"max_backlog_messages": 50, "write_high_water": 16 * 1024}


@asynccontextmanager
async def with_a_stalled_client(
    url: str | None, stuck_timeout: float
) -> AsyncIterator[tuple[Env, list[Agent], WsClient, ClientConnection]]:
    """A gateway with ten agents in KEY, a normal client and a stalled one subscribed to it."""
    async with running(url, **SLOW, stuck_timeout=stuck_timeout) as env:
        agents = [env.world.create(Agent(id=f"s{i}")) for i in range(10)]
        await env.world.flush()
        normal = await WsClient.open(env.url)
        await normal.subscribe([KEY])
        raw = await open_stalled(env.url, env.port)
        try:
            await raw.send(orjson.dumps({"method": "updateSubscription", "add": [KEY]}).decode())
            yield env, agents, normal, raw
        finally:
            raw.transport.abort()
            await normal.close()


async def test_a_slow_client_is_resynced_without_delaying_others(backend: str, request: pytest.FixtureRequest) -> None:
    async with with_a_stalled_client(store_url(backend, request), stuck_timeout=30.0) as (env, agents, normal, raw):
        metrics = env.gateway.metrics
        rounds = await big_rounds(env.world, agents, normal, lambda: metrics.slow_resyncs >= 1)
        # It stays behind for a few more rounds; the normal client still gets everything.
        for _ in range(3):
            rounds = await big_rounds(env.world, agents, normal, _once(), start=rounds)
        [slow_session] = [s for s in env.gateway.sessions.values() if s.id != client_id(normal)]
        assert not slow_session.closed
        assert metrics.slow_closes == 0

        # It reads again: its mirror converges through a fresh snapshot.
        slow = WsClient(raw)
        slow.keys.add(KEY)
        expected = await store_view(env.world, [KEY])
        await slow.wait(lambda: slow.mirror == expected)
        assert len(slow.of("snap")) >= 2, "no fresh snapshot after falling behind"
        assert sorted(slow.of("snap")[-1]["ids"]) == sorted(a.id for a in agents)
        assert len(slow.of("mod")) < len(normal.of("mod")), "the slow client's backlog was not discarded"
        # ... and it is live again afterwards.
        agents[0].name = "after"
        await env.world.flush()
        expected = await store_view(env.world, [KEY])
        await slow.wait(lambda: slow.mirror == expected)
        await normal.wait(lambda: normal.mirror == expected)
        # The normal client saw every version of every object, in order.
        normal.assert_consecutive_versions()
        await slow.close()


def _once() -> Callable[[], bool]:
    """A done() that lets exactly one round run."""
    calls = [0]

    def done() -> bool:
        calls[0] += 1
        return calls[0] > 1

    return done


async def test_a_stuck_client_is_closed(backend: str, request: pytest.FixtureRequest) -> None:
    async with with_a_stalled_client(store_url(backend, request), stuck_timeout=1.0) as (env, agents, normal, _raw):
        await until(lambda: len(env.gateway.sessions) == 2, "the stalled client's session")
        [stuck] = [cid for cid in env.gateway.sessions if cid != client_id(normal)]
        metrics = env.gateway.metrics
        rounds = await big_rounds(env.world, agents, normal, lambda: metrics.slow_resyncs >= 1)
        await until(lambda: metrics.slow_closes >= 1, "the stuck client to be given up on")
        await until(lambda: stuck not in env.gateway.sessions, "the stuck client's session to go", timeout=10)
        assert metrics.clients == 1
        # The others go on.
        await big_rounds(env.world, agents, normal, _once(), start=rounds)


# -- 3. bounds on what a client can make the gateway hold ---------------------------------


async def test_keys_added_and_removed_at_once_leave_no_redis_subscription(redis_url: str) -> None:
    # A remove that overtook its key's queued subscribe used to do nothing,
    # and the subscribe then went through: the channel stayed subscribed in
    # Redis with no client following it, for good.
    async with running(redis_url, rate=1e6, burst=1e6, forward_to_world=False) as env:
        store = env.gateway.store
        assert isinstance(store, RedisStore)
        r = aioredis.Redis.from_url(redis_url)

        @env.gateway.on("yield")
        async def give_way(client: Any, data: dict[str, Any]) -> None:
            # Lets the gateway's other tasks run a few steps between two frames.
            for _ in range(int(data["steps"])):
                await asyncio.sleep(0)

        async def channels() -> set[bytes]:
            reply: Any = await r.execute_command("PUBSUB", "SHARDCHANNELS", store.prefix + "*")  # type: ignore[no-untyped-call]
            return set(reply)

        try:
            client = await WsClient.open(env.url)
            await client.subscribe([KEY])
            frames = []
            for i in range(100):
                key = f"churn:{i}"
                frames.append(orjson.dumps({"method": "updateSubscription", "add": [key]}).decode())
                frames.append(orjson.dumps({"method": "yield", "steps": i % 5}).decode())
                frames.append(orjson.dumps({"method": "updateSubscription", "remove": [key]}).decode())
            for frame in frames:
                await client.conn.send(frame)
            # A round trip through the gateway: every frame before it was handled.
            await client.subscribe(["last"])
            await until(lambda: not env.gateway._tasks, "the gateway's snapshot tasks to end")
            want = {store.channel(KEY).encode(), store.channel("last").encode()}
            await until_async(lambda: _same(channels(), want), "PUBSUB SHARDCHANNELS to hold only the followed keys")
            await client.close()
        finally:
            await r.aclose()


async def _same(value: Awaitable[set[bytes]], expected: set[bytes]) -> bool:
    return await value == expected


async def test_a_slow_snapshot_of_a_busy_key_buffers_at_most_the_bound(redis_url: str) -> None:
    # Messages that race with a key's snapshot are buffered until its barrier
    # comes back; a slow snapshot of a busy key used to buffer without bound.
    async with running(redis_url, max_backlog_messages=20) as env:
        x = env.world.create(Agent(id="x"))
        await env.world.flush()
        store = env.gateway.store
        real = store.snapshot
        gate = asyncio.Event()
        blocked = asyncio.Event()

        async def slow_once(key: str, *, marks: bool = False) -> Any:
            if not blocked.is_set():
                blocked.set()
                await gate.wait()
            return await real(key, marks=marks)

        store.snapshot = slow_once  # type: ignore[method-assign]
        client = await WsClient.open(env.url)
        await client.subscribe([KEY], wait=False)
        await asyncio.wait_for(blocked.wait(), 10)
        [session] = env.gateway.sessions.values()
        longest = 0
        for i in range(60):
            x.name = f"n{i}"
            await env.world.flush()
            buffer = session.keys.get(KEY)
            longest = max(longest, len(buffer) if buffer is not None else 0)
        try:
            assert longest <= 21, longest
            # Started over, the snapshot does not wait for the slow read.
            await client.wait(lambda: client.mirror.get("x", {}).get("v") == 61)
        finally:
            gate.set()
        assert env.gateway.metrics.slow_resyncs >= 1
        assert client.mirror == await store_view(env.world, [KEY])
        await client.close()


async def test_one_client_flooding_subscriptions_delays_another_by_a_few_reads(redis_url: str) -> None:
    # Snapshot reads used to be served first come first served: a client
    # asking for 200 keys took every read slot, and another client's single
    # key waited behind all 200 reads.
    flood_keys = [f"flood:{i}" for i in range(200)]
    async with running(redis_url) as env:
        env.world.create(Agent(id="mine"))
        await env.world.flush()
        store = env.gateway.store
        real = store.snapshot
        gate = asyncio.Event()
        started: list[str] = []

        async def gated(key: str, *, marks: bool = False) -> Any:
            started.append(key)
            if key.startswith("flood:"):
                await gate.wait()
            return await real(key, marks=marks)

        store.snapshot = gated  # type: ignore[method-assign]
        flood = await WsClient.open(env.url)
        other = await WsClient.open(env.url)
        try:
            await flood.subscribe(flood_keys, wait=False)
            await until(lambda: len(started) >= READS_PER_CLIENT, "the flood's first reads")
            await other.subscribe([KEY])  # its snap arrives while every flood read is held
            assert other.of("snap")[0]["ids"] == ["mine"]
            assert started.index(KEY) == READS_PER_CLIENT, started[: READS_PER_CLIENT + 1]
        finally:
            gate.set()
        await flood.wait(lambda: len(flood.of("snap")) == len(flood_keys), timeout=30)
        assert sorted(started) == sorted([*flood_keys, KEY])
        await flood.close()
        await other.close()


async def test_held_barriers_are_bounded(redis_url: str) -> None:
    # Each snapshot read is held in memory until its barrier comes back
    # through the subscriber; a lagging stream used to let them pile up.
    keys = [KEY, *(f"held:{i}" for i in range(4))]
    async with running(redis_url, max_barriers=2) as env:
        env.world.create(Agent(id="h"))
        await env.world.flush()
        gateway = env.gateway
        store = gateway.store
        real = store.publish
        gate = asyncio.Event()
        held: list[int] = []

        async def slow_barriers(key: str, data: bytes) -> None:
            if data.startswith(BARRIER):
                held.append(len(gateway._barriers.held))
                await gate.wait()
            await real(key, data)

        store.publish = slow_barriers  # type: ignore[method-assign]
        client = await WsClient.open(env.url)
        try:
            await client.subscribe(keys, wait=False)
            await until(lambda: gateway.metrics.slow_resyncs == len(keys) - 2, "the reads past the bound to be dropped")
            assert len(gateway._barriers.held) == 2
        finally:
            gate.set()
        # Each barrier that comes back lets a dropped key be read again.
        await client.wait(lambda: {m["sKey"] for m in client.of("snap")} == set(keys))
        assert len(client.of("snap")) == len(keys)
        assert max(held) <= 2, held
        assert client.mirror == await store_view(env.world, keys)
        assert not gateway._barriers.held and not gateway._barriers.parked
        await client.close()
    with pytest.raises(synk.ConfigError, match="gateway setting max_barriers is 0; it must be a positive integer"):
        Gateway("memory://", max_barriers=0)


def test_a_clients_identity_costs_its_size_not_the_encoders_buffer() -> None:
    # Kept for as long as the client stays: at 10,000 clients, 4 KB each would be 40 MB.
    import tracemalloc

    from synk.gateway.session import json_identity

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [json_identity({"sub": f"user-{i}", "keys": ["world:*"]}) for i in range(1000)]
        per_identity = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    finally:
        tracemalloc.stop()
    assert per_identity < 512, f"{per_identity:.0f} bytes per identity"
    assert json_identity(None) is json_identity(None)


async def test_an_idle_client_costs_the_gateway_little_memory() -> None:
    # What 10,000 idle clients cost comes down to what one costs: the Python heap a
    # connected, subscribed client holds in the gateway (the session, its keys, the
    # websockets connection), measured with tracemalloc; the clients are another
    # process (bench.fanout's load generator), so only the gateway is traced.
    import gc
    import subprocess
    import sys
    import tracemalloc

    from synk.gateway import Gateway

    count = 300
    gateway = Gateway("memory://")
    async with gateway.serve("127.0.0.1", 0) as server:
        argv = [sys.executable, "-m", "bench.fanout", "--role", "clients", "--redis", "memory://", "--keys", "100"]
        argv += ["--keys-per-client", "10", "--objects-per-key", "10", "--system", "synk", "--port", str(server.port)]

        async def clients(first: int, n: int) -> asyncio.subprocess.Process:
            proc = await asyncio.create_subprocess_exec(
                *argv, "--first", str(first), "--count", str(n), "--lib", "raw", "--gate", "8", "--loop", "asyncio",
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            )  # fmt: skip
            assert proc.stdout is not None
            ready = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert b'"ready": true' in ready or b'"ready":true' in ready, ready
            return proc

        warm = await clients(0, 1)  # the first client's one-off set-up is not per client
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            many = await clients(1, count)
            gc.collect()
            per_client = (tracemalloc.get_traced_memory()[0] - before) / count
        finally:
            tracemalloc.stop()
        for proc in (warm, many):
            proc.kill()
            await proc.wait()
    # 29 KB before the idle-client work (docs: bench/README.md, bench.idle); 14 KB after.
    assert per_client < 20 * 1024, f"{per_client / 1024:.1f} KB per idle client"
