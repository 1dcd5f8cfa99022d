"""``synk demo --redis`` through a Redis kill -9 and restart (no persistence)."""

from __future__ import annotations

import argparse
import asyncio

from redis.exceptions import ConnectionError as RedisConnectionError

from bench.redis_process import RedisProcess, free_port
from synk.demo import LEASE, run
from synk.store.redis import RedisStore
from tests.gateway_env import until_async


async def test_the_demo_recovers_its_agents_and_its_lease_after_redis_is_killed(redis_process: RedisProcess) -> None:
    args = argparse.Namespace(redis=redis_process.url, host="127.0.0.1", port=free_port(), agents=60, no_sim=False)
    stop = asyncio.Event()
    demo = asyncio.create_task(run(args, stop))
    probe = RedisStore(redis_process.url)
    r = probe.redis

    async def agents() -> int:
        total = 0
        async for name in r.scan_iter(match="synk:{chunk:*}:o", count=1000):
            values: dict[bytes, bytes] = await r.hgetall(name)  # type: ignore[assignment]
            total += sum(value.split(b"\n", 1)[1].startswith(b"{") for value in values.values())
        return total

    async def sixty() -> bool:
        try:
            return await agents() == 60
        except RedisConnectionError:  # the probe's own connection, stale after the restart
            return False

    async def lease_held() -> bool:
        try:
            return await r.get(LEASE) is not None
        except RedisConnectionError:
            return False

    try:
        await until_async(sixty, "the demo's 60 agents in Redis", timeout=30)
        await asyncio.to_thread(redis_process.stop)  # kill -9: everything is lost
        await asyncio.to_thread(redis_process.start)
        await until_async(sixty, "the 60 agents back after the restart", timeout=30)
        await until_async(lease_held, "the simulation's lease taken again", timeout=30)
        assert not demo.done()
    finally:
        stop.set()
        await asyncio.wait_for(demo, 30)
        await probe.close()
