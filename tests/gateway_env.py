"""A running gateway over a world, on either backend, for gateway tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import synk
from synk.gateway import Gateway
from synk.store.memory import MemoryStore
from tests.models import Agent, Note


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
