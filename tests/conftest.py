"""Fixtures: a private redis-server, and worlds on both backends."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest

import synk
from bench.redis_cluster import RedisCluster
from bench.redis_process import RedisProcess


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis for the session: SYNK_TEST_REDIS_URL, or a private redis-server."""
    env = os.environ.get("SYNK_TEST_REDIS_URL")
    if env:
        yield env
        return
    server = RedisProcess()
    server.start()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture
def redis_process() -> Iterator[RedisProcess]:
    """A private redis-server of this test alone, which the test may restart."""
    server = RedisProcess()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(params=["memory", "redis", "cluster"])
def backend(request: pytest.FixtureRequest) -> str:
    """Each conformance test runs once per backend: embedded, one Redis, a Redis Cluster."""
    return str(request.param)


WorldFactory = Callable[..., AbstractAsyncContextManager[synk.World]]


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """A private Redis Cluster of three primaries for the session; the URL of one node."""

    cluster = RedisCluster(3)
    cluster.start()
    try:
        yield cluster.url
    finally:
        cluster.close()


@pytest.fixture
def cluster() -> Iterator[RedisCluster]:
    """A private Redis Cluster of three primaries for one test (which may move its slots)."""

    c = RedisCluster(3)
    c.start()
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(params=["memory", "redis", "cluster"])
def world_backend(request: pytest.FixtureRequest) -> str:
    """The write path's conformance suite runs on a Redis Cluster of three primaries too."""
    return str(request.param)


@pytest.fixture
def open_world(world_backend: str, request: pytest.FixtureRequest) -> WorldFactory:
    """Open worlds on this test's store: every world of a test shares it.

    Redis worlds get a prefix unique to the test, so tests never see each
    other's data even on a shared server.
    """
    backend = world_backend
    prefix = f"synktest:{uuid.uuid4().hex[:12]}:"
    memory: list[synk.World] = []

    @asynccontextmanager
    async def factory(*types: type[synk.Object]) -> AsyncIterator[synk.World]:
        if backend == "memory":
            from synk.store.memory import MemoryStore

            if not memory:
                memory.append(synk.World(MemoryStore()))
            world = synk.World(memory[0].store, types)
            yield world
            await world.drain()
            return
        url = request.getfixturevalue("redis_cluster_url" if backend == "cluster" else "redis_url")
        async with synk.connect(url, types=types, prefix=prefix) as world:
            yield world

    return factory


def record_errors(world: synk.World) -> tuple[list[synk.WriteError], asyncio.Event]:
    """Collect what ``world.on_error`` receives; the event is set on the first."""
    errors: list[synk.WriteError] = []
    got = asyncio.Event()

    def on_error(err: synk.WriteError) -> None:
        errors.append(err)
        got.set()

    world.on_error = on_error
    return errors, got
