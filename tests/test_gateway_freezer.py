"""The gc_freeze setting: full collections walk only what came since the last one; departed clients are still freed."""

from __future__ import annotations

import gc
import weakref

from tests.gateway_env import running, until
from tests.wsclient import WsClient


async def test_survivors_of_a_full_collection_are_frozen_and_given_back_at_close() -> None:
    async with running(None, gc_freeze=True) as env:
        client = await WsClient.open(env.url)
        gc.collect()
        await until(lambda: gc.get_freeze_count() > 0, "the survivors frozen")
        await client.close()
    assert gc.get_freeze_count() == 0  # the gateway closed: nothing stays frozen


async def test_off_by_default() -> None:
    async with running(None) as env:
        client = await WsClient.open(env.url)
        gc.collect()
        await client.wait(lambda: True)  # a loop turn, where a freeze would have run
        assert gc.get_freeze_count() == 0
        assert not env.gateway.freezer.running
        await client.close()


async def test_clients_that_left_are_freed_once_enough_did() -> None:
    """A session is in reference cycles (its Client points back at it): frozen, only a thaw frees it."""
    async with running(None, gc_freeze=True) as env:
        env.gateway.freezer._least = 3  # a thaw after 3 departures, not 1,000
        clients = [await WsClient.open(env.url) for _ in range(4)]
        await until(lambda: len(env.gateway.sessions) == 4, "4 sessions")
        sessions = [weakref.ref(s) for s in env.gateway.sessions.values()]
        gc.collect()
        await until(lambda: gc.get_freeze_count() > 0, "the sessions frozen")
        for c in clients[:2]:
            await c.close()
        await until(lambda: len(env.gateway.sessions) == 2, "2 sessions left")
        gc.collect()
        # Frozen, the two that left are not collected...
        assert sum(ref() is None for ref in sessions) == 0 and env.gateway.freezer.thaws == 0
        await clients[2].close()
        await until(lambda: len(env.gateway.sessions) == 1, "1 session left")
        # ...until the third departure thaws and collects everything once.
        await until(lambda: env.gateway.freezer.thaws == 1, "a thaw")
        assert sum(ref() is None for ref in sessions) == 3
        await until(lambda: gc.get_freeze_count() > 0, "the survivors frozen again")
        await clients[3].close()
