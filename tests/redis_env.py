"""Helpers of the Redis store's tests: a world on a private prefix, its store and client."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import synk
from synk.store.redis import RedisStore

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from synk.store.base import Event, Subscriber


def redis_store(world: synk.World) -> RedisStore:
    store = world.store
    assert isinstance(store, RedisStore)
    return store


def client(world: synk.World) -> Redis:
    """The world's redis-py client (its own connections)."""
    return redis_store(world).redis


@asynccontextmanager
async def out_of_memory(r: Redis) -> AsyncIterator[None]:
    """Redis refuses every write (``maxmemory`` 1 byte) inside the block, and takes them again after it."""
    await r.config_set("maxmemory", 1)
    try:
        yield
    finally:
        await r.config_set("maxmemory", 0)


async def next_event(sub: Subscriber, timeout: float = 10.0) -> Event:
    """The subscriber's next event, waiting at most ``timeout`` seconds."""
    it = sub.__aiter__()
    return await asyncio.wait_for(it.__anext__(), timeout)


@asynccontextmanager
async def world_on(url: str, *types: type[synk.Object], prefix: str | None = None) -> AsyncIterator[synk.World]:
    """A world on ``url`` with its own prefix (unique unless given)."""
    async with synk.connect(url, types=types, prefix=prefix or f"synktest:{uuid.uuid4().hex[:12]}:") as world:
        yield world


@asynccontextmanager
async def reading_messages(world: synk.World) -> AsyncIterator[list[synk.ClientMessage]]:
    """``world.messages()`` read in the background, into the list yielded, until the block ends."""
    received: list[synk.ClientMessage] = []

    async def read() -> None:
        async for msg in world.messages():
            received.append(msg)

    reader = asyncio.create_task(read())
    try:
        yield received
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
