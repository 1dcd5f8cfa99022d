"""Shared work, slow clients and bad input, against a real gateway, real websockets and both stores."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import orjson
import pytest
import redis.asyncio as aioredis

import synk
from synk.gateway import Gateway
from synk.gateway.hub import BARRIER, READS_PER_CLIENT
from synk.gateway.ws import WebsocketOutlet
from synk.store.redis import RedisStore
from tests.gateway_env import KEY, Env, big_rounds, open_stalled, router_matches, running, store_url, store_view, until, until_async
from tests.models import Agent
from tests.wsclient import WsClient

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection


def client_id(client: WsClient) -> str:
    return str(client.of("hello")[0]["client"])


async def errors_after(client: WsClient, frame: dict[str, Any] | str | bytes) -> dict[str, Any]:
    """Send ``frame`` and return the error it gets."""
    start = len(client.of("error"))
    await client.send(frame)
    await client.wait(lambda: len(client.of("error")) > start)
    return client.of("error")[start]


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


# -- 4. bad input ---------------------------------------------------------------------------


@pytest.fixture
async def env(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    async with running(store_url(backend, request), max_keys=5) as e:
        e.world.create(Agent(id="b1"))
        await e.world.flush()
        yield e


async def test_oversized_frame_closes_1009(env: Env) -> None:
    client = await WsClient.open(env.url)
    # Exactly the limit is still read (and refused as JSON) ...
    assert (await errors_after(client, "x" * 64 * 1024))["code"] == "bad_json"
    # ... one byte more closes the connection.
    await client.send("x" * (64 * 1024 + 1))
    await client.wait(lambda: client.close_code is not None)
    assert client.close_code == 1009
    await until(lambda: not env.gateway.sessions, "the closed client's session to go")
    other = await WsClient.open(env.url)
    await other.subscribe([KEY])
    assert other.of("snap")[0]["ids"] == ["b1"]
    await other.close()


async def test_bad_json_keeps_the_connection(env: Env) -> None:
    client = await WsClient.open(env.url)
    for frame in ("not json", "{", "[1, 2]", "null", '"updateSubscription"', b"\xff\x00binary", b""):
        assert (await errors_after(client, frame))["code"] == "bad_json", frame
    await client.subscribe([KEY])
    assert client.of("snap")[0]["ids"] == ["b1"]
    assert client.close_code is None
    assert env.gateway.metrics.errors["bad_json"] == 7
    await client.close()


async def test_wrong_shapes_are_bad_messages(env: Env) -> None:
    client = await WsClient.open(env.url)
    for frame in (
        {"method": "updateSubscription", "add": KEY},
        {"method": "updateSubscription", "add": [KEY], "remove": {"k": 1}},
        {"method": "updateSubscription", "add": [KEY], "extra": True},
        {"method": "resync", "keys": KEY},
        {"method": "resync", "keys": [KEY], "sKey": KEY},
        {"method": 7},
        {"method": ""},
        {"text": "no method"},
        {"method": "add", "id": "x", "sKey": KEY, "v": 1, "state": {}},
        {"method": "snap", "sKey": KEY, "ids": []},
    ):
        error = await errors_after(client, frame)
        assert error["code"] == "bad_message", frame
        assert isinstance(error["reason"], str) and error["reason"]
    assert not client.of("snap"), "a refused updateSubscription subscribed something"
    assert env.gateway.metrics.keys == 0
    await client.subscribe([KEY])
    await client.close()


async def test_a_key_that_is_not_a_string_is_a_bad_message(env: Env) -> None:
    client = await WsClient.open(env.url)
    for key in (1, None, [KEY], {"k": KEY}):
        error = await errors_after(client, {"method": "updateSubscription", "add": [key]})
        assert error["code"] == "bad_message", key
    await client.close()


async def test_too_many_keys(env: Env) -> None:
    keys = [f"world:{i}|0" for i in range(5)]
    client = await WsClient.open(env.url)
    await client.subscribe(keys)
    assert (await errors_after(client, {"method": "updateSubscription", "add": ["world:9|9"]}))["code"] == "too_many_keys"
    # Swapping one key for another stays within the limit.
    await client.subscribe(["world:8|8"], [keys[0]])
    fresh = await WsClient.open(env.url)
    too_many = [f"k{i}" for i in range(6)]
    assert (await errors_after(fresh, {"method": "updateSubscription", "add": too_many}))["code"] == "too_many_keys"
    # Nothing of a refused key arrives.
    await env.world.publish("world:9|9", {"method": "marker", "n": 0})
    await env.world.publish("k0", {"method": "marker", "n": 0})
    await env.world.publish("world:8|8", {"method": "marker", "n": 1})
    await client.wait(lambda: bool(client.of("marker")))
    assert [m["n"] for m in client.of("marker")] == [1]
    assert not fresh.of("snap")
    assert set(env.gateway.router.keys()) == {*keys[1:], "world:8|8"}
    assert env.gateway.metrics.errors["too_many_keys"] == 2
    await client.close()
    await fresh.close()


@pytest.mark.parametrize("key", ["a b", "{x}", "k" * 201, "", "a\nb", "x*", "a;b", "é"])
async def test_bad_keys(env: Env, key: str) -> None:
    client = await WsClient.open(env.url)
    error = await errors_after(client, {"method": "updateSubscription", "add": [KEY, key]})
    assert error["code"] == "bad_key"
    assert env.gateway.metrics.keys == 0, "a message with a bad key subscribed the good one"
    await client.subscribe(["k" * 200])
    assert (await errors_after(client, {"method": "resync", "keys": [key]}))["code"] == "bad_key"
    await client.close()


async def test_rate_limit(backend: str, request: pytest.FixtureRequest) -> None:
    async with running(store_url(backend, request), rate=5, burst=5) as env:
        client = await WsClient.open(env.url)
        for _ in range(30):
            await client.send({"method": "resync", "keys": []})
        # 5 pass (the burst), 25 are dropped: every one counted, one notice sent
        await until(lambda: env.gateway.metrics.errors["rate_limited"] == 25, "the flood to be read")
        assert [e["code"] for e in client.of("error")] == ["rate_limited"]
        # Later, the connection works again: once the bucket has a token, a subscription is answered.
        client.keys.add(KEY)

        # Each attempt waits (on the client's messages) longer than the bucket takes to
        # refill a token (0.2 s at 5/s), so a retry is never refused: one notice in all.
        for _ in range(25):
            await client.send({"method": "updateSubscription", "add": [KEY]})
            with contextlib.suppress(TimeoutError):
                await client.wait(lambda: bool(client.of("snap")), timeout=0.5)
                break
        assert client.of("snap"), "no subscription got through"
        first_snap = next(i for i, m in enumerate(client.messages) if m["method"] == "snap")
        assert [m["code"] for m in client.messages[:first_snap] if m["method"] == "error"] == ["rate_limited"]
        assert client.close_code is None
        await client.close()


async def test_the_rate_limit_counts_keys(backend: str, request: pytest.FixtureRequest) -> None:
    # Each key asked for is a snapshot read and a publish: a few frames of
    # many keys each used to pass the frame limit whatever they cost.
    keys = [f"k:{i}" for i in range(10)]
    async with running(store_url(backend, request), max_keys=10, key_rate=0.01) as env:
        client = await WsClient.open(env.url)
        await client.subscribe(keys)  # 10 of the 20 the budget holds
        start = len(client.of("snap"))
        await client.send({"method": "resync", "keys": keys})  # 20
        error = await errors_after(client, {"method": "resync", "keys": keys[:1]})
        assert error == {
            "method": "error",
            "code": "rate_limited",
            "reason": "1 keys asked with 0 left of the budget of 0.01 keys a second",
        }
        await client.wait(lambda: len(client.of("snap")) == start + 10)
        assert env.gateway.metrics.errors["rate_limited"] == 1
        await client.close()
    with pytest.raises(synk.ConfigError, match="key_burst is 5, below max_keys 10: a whole subscription could never be asked for"):
        Gateway("memory://", max_keys=10, key_burst=5)


def _fuzz_value(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.randrange(10 if depth < 3 else 6)
    if pick == 0:
        return None
    if pick == 1:
        return rng.random() < 0.5
    if pick == 2:
        return rng.choice([0, -1, 2**63 - 1, 2**53 + 1, rng.randint(-1000, 1000)])
    if pick == 3:
        return rng.random() * 10 ** rng.randint(-5, 300)
    if pick in (4, 5):
        return _fuzz_string(rng)
    if pick in (6, 7):
        return [_fuzz_value(rng, depth + 1) for _ in range(rng.randrange(6))]
    return {_fuzz_string(rng): _fuzz_value(rng, depth + 1) for _ in range(rng.randrange(5))}


def _fuzz_string(rng: random.Random) -> str:
    alphabet = "ab:|{} \t\n\\\"'*?é中\x00\x1f\u2028\ud7ff" + "world:0|1"
    if rng.random() < 0.3:
        return rng.choice(["updateSubscription", "resync", "add", "remove", "keys", "method", "sKey", "mod", "snap", "chat"])
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 30 if rng.random() < 0.9 else 400)))


def _fuzz_frame(rng: random.Random) -> str | bytes:
    kind = rng.randrange(7)
    if kind == 0:
        return rng.randbytes(rng.randrange(200))
    if kind == 1:
        return rng.randbytes(rng.randrange(200)).decode("latin-1")
    if kind == 2:
        return orjson.dumps(_fuzz_value(rng)).decode()
    if kind == 3:  # a message with a known or custom method and random fields
        msg = {"method": rng.choice(["updateSubscription", "resync", "add", "hello", "fuzz", "", "x" * 65, 3])}
        for _ in range(rng.randrange(4)):
            msg[rng.choice(["add", "remove", "keys", "data", "method"])] = _fuzz_value(rng)
        return orjson.dumps(msg)
    if kind == 4:  # a well-formed subscription change on random (mostly valid) keys
        keys = [rng.choice(["fz:1", "fz:2", "fz|3", "fz 4", "", "fz{5}", "f" * 201]) for _ in range(rng.randrange(4))]
        field = rng.choice(["add", "remove"])
        return orjson.dumps({"method": "updateSubscription", field: keys})
    if kind == 5:  # truncated or corrupted JSON
        text = orjson.dumps(_fuzz_value(rng)).decode()
        cut = rng.randrange(len(text) + 1)
        return text[:cut] + rng.choice(["", "}", "]", ",", '"', "\\", "{"])
    return orjson.dumps({"method": "resync", "keys": [rng.choice(["fz:1", "fz:2", "fz:9", 1])]}).decode()


async def test_fuzz(backend: str, request: pytest.FixtureRequest) -> None:
    """Thousands of random frames: errors only, no internal failure, and the client still works."""
    async with running(store_url(backend, request), rate=1e9, burst=1e9, key_rate=1e9, max_keys=50) as env:
        env.world.create(Agent(id="fz"))
        await env.world.flush()
        rng = random.Random(1234)
        client = await WsClient.open(env.url)
        for _ in range(3000):
            await client.send(_fuzz_frame(rng))
        await client.subscribe([KEY], wait=True)
        assert client.close_code is None
        # (snaps of keys the fuzz frames subscribed to may come later: no order between keys)
        assert [s for s in client.of("snap") if s["sKey"] == KEY][-1] == {"method": "snap", "sKey": KEY, "ids": ["fz"]}
        codes = {e["code"] for e in client.of("error")}
        assert codes <= {"bad_json", "bad_message", "bad_key", "too_many_keys", "not_subscribed"}, codes
        assert {"bad_json", "bad_message", "bad_key"} <= codes
        assert env.gateway.metrics.errors["internal"] == 0
        # The gateway still serves new clients, and changes still flow.
        other = await WsClient.open(env.url)
        await other.subscribe([KEY])
        for obj in await env.world.load([KEY]):
            assert isinstance(obj, Agent)
            obj.name = "after fuzz"
        await env.world.flush()
        for c in (client, other):
            await c.wait(lambda: any(m["method"] == "mod" and m["id"] == "fz" for m in c.messages))  # noqa: B023
        await client.close()
        await other.close()


async def test_a_snapshot_larger_than_the_backlog_bound_arrives_whole(backend: str, request: pytest.FixtureRequest) -> None:
    # The bound is for live messages that pile up; a snapshot is sent whole,
    # or a key with more objects than the bound could never be followed.
    async with running(store_url(backend, request), max_backlog_messages=5) as env:
        for i in range(20):
            env.world.create(Agent(id=f"big{i}", x=i % 16))
        await env.world.flush()
        client = await WsClient.open(env.url)
        await client.subscribe([KEY])
        assert len(client.of("add")) == 20
        assert env.gateway.metrics.slow_resyncs == 0
        # Live messages still count: the client goes on receiving changes.
        await env.world.publish(KEY, {"method": "marker"})
        await client.wait(lambda: bool(client.of("marker")))
        await client.close()


@pytest.mark.parametrize("depth", [129, 300, 1000])
async def test_a_custom_message_nested_too_deep_is_a_bad_message(env: Env, depth: int) -> None:
    # orjson parses 1,024 levels but encodes only 254: such a message used to
    # fail inside the gateway when forwarded, answered with `internal`.
    client = await WsClient.open(env.url)
    frame = '{"method":"chat","x":' + "[" * depth + "]" * depth + "}"
    error = await errors_after(client, frame)
    assert error["code"] == "bad_message", error
    assert error["reason"] == f"custom message fields are nested {depth} levels deep, over the limit of 128"
    # The deepest accepted still goes through to the world.
    ok = '{"method":"chat","x":' + "[" * 128 + "]" * 128 + "}"
    await client.send(ok)
    await client.send({"method": "chat", "x": "after"})
    await until(lambda: env.gateway.metrics.messages_in == 3, "the gateway to read every frame")
    assert env.gateway.metrics.errors.get("internal", 0) == 0
    assert env.gateway.metrics.errors["bad_message"] == 1
    await client.close()


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
                held.append(len(gateway._barriers))
                await gate.wait()
            await real(key, data)

        store.publish = slow_barriers  # type: ignore[method-assign]
        client = await WsClient.open(env.url)
        try:
            await client.subscribe(keys, wait=False)
            await until(lambda: gateway.metrics.slow_resyncs == len(keys) - 2, "the reads past the bound to be dropped")
            assert len(gateway._barriers) == 2
        finally:
            gate.set()
        # Each barrier that comes back lets a dropped key be read again.
        await client.wait(lambda: {m["sKey"] for m in client.of("snap")} == set(keys))
        assert len(client.of("snap")) == len(keys)
        assert max(held) <= 2, held
        assert client.mirror == await store_view(env.world, keys)
        assert not gateway._barriers and not gateway._parked
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
