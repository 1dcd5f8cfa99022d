"""A Redis outage: the gateway stays up, reconnects, resubscribes, and clients converge to the store."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

import synk
from bench.redis_process import RedisProcess
from synk.store.redis import RedisStore
from tests.gateway_env import KEY, running, store_view, until
from tests.models import Agent, Note
from tests.original_client import violations
from tests.wsclient import WsClient


async def test_redis_restart(redis_process: RedisProcess) -> None:
    async with running(redis_process.url) as env:
        store = env.gateway.store
        assert isinstance(store, RedisStore)
        old = [env.world.create(Agent(id=f"old{i}", x=i)) for i in range(3)]
        await env.world.flush()
        client = await WsClient.open(env.url)
        await client.subscribe([KEY])
        old[0].name = "before"
        await env.world.flush()
        await client.wait(lambda: client.mirror.get("old0", {}).get("v") == 2)
        assert len(client.mirror) == 3

        await asyncio.to_thread(redis_process.restart)  # every key is gone, the scripts too
        await until(lambda: env.gateway.metrics.store_reconnects >= 1, "the gateway to reconnect")
        # The fresh snapshot of the now empty key removes what is gone, and
        # the client was told that the gateway re-snapshots on its own.
        await client.wait(lambda: client.mirror == {})
        assert client.of("resnap")[-1] == {"method": "resnap", "keys": [KEY]}
        assert client.close_code is None

        # A fresh world fills the key again; the same client follows it live.
        async with synk.connect(redis_process.url, types=[Agent, Note], prefix=store.prefix) as fresh:
            new = [fresh.create(Agent(id=f"new{i}", x=i)) for i in range(4)]
            await fresh.flush()
            new[1].name = "after"
            fresh.delete(new[3])
            await fresh.flush()
            expected = await store_view(fresh, [KEY])
            assert sorted(expected) == ["new0", "new1", "new2"]
            await client.wait(lambda: client.mirror == expected)

            # The gateway still serves newcomers.
            other = await WsClient.open(env.url)
            await other.subscribe([KEY])
            assert other.mirror == expected
            await other.close()
        await client.close()


async def test_subscribing_during_an_outage(redis_process: RedisProcess) -> None:
    """A client that subscribes while Redis is down gets its snapshot once Redis is back."""
    async with running(redis_process.url) as env:
        env.world.create(Agent(id="a1"))
        await env.world.flush()
        live = await WsClient.open(env.url)
        await live.subscribe([KEY])

        await asyncio.to_thread(redis_process.stop)
        # The gateway accepts connections and requests while the store is down.
        late = await WsClient.open(env.url)
        await late.subscribe([KEY], wait=False)
        await late.send({"method": "updateSubscription", "add": ["bad key"]})
        await late.wait(lambda: bool(late.of("error")))
        assert not late.of("snap")

        await asyncio.to_thread(redis_process.start)
        await until(lambda: env.gateway.metrics.store_reconnects >= 1, "the gateway to reconnect")
        store = env.gateway.store
        assert isinstance(store, RedisStore)
        async with synk.connect(redis_process.url, types=[Agent], prefix=store.prefix) as fresh:
            fresh.create(Agent(id="b1", name="after the outage"))
            await fresh.flush()
            expected = await store_view(fresh, [KEY])
            for c in (live, late):
                await c.wait(lambda: c.mirror == expected)  # noqa: B023
                assert c.close_code is None
        assert {m["sKey"] for m in late.of("snap")} == {KEY}
        await live.close()
        await late.close()


async def test_a_store_reconnect_closes_original_clients_with_1012(redis_process: RedisProcess) -> None:
    # The gateway re-sends every add on the live socket after its Redis
    # subscription reconnects: the original synk-js client throws on an add
    # of an object it holds, and knows no resnap. It must reconnect afresh.
    async with running(redis_process.url) as env:
        env.world.create(Agent(id="a1"))
        await env.world.flush()
        original = await WsClient.open(env.url, resnap=False)
        await original.subscribe([KEY])
        declared = await WsClient.open(env.url)
        await declared.subscribe([KEY])
        admin = aioredis.Redis.from_url(redis_process.url)
        try:
            await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")  # type: ignore[no-untyped-call]
        finally:
            await admin.aclose()
        await until(lambda: env.gateway.metrics.store_reconnects >= 1, "the gateway to reconnect")
        await original.wait(lambda: original.close_code is not None)
        assert original.close_code == 1012
        assert violations(original.messages, {KEY}) == []
        await declared.wait(lambda: len(declared.of("snap")) == 2)
        assert declared.of("resnap") == [{"method": "resnap", "keys": [KEY]}]
        assert declared.close_code is None
        await declared.close()
