"""Moves as the original synk-js client sees them, while the old key is being snapshotted (real gateway, both stores).

The original client throws on an ``add`` of an object it holds and on a
version gap (tests/original_client.py), so of a move's two messages it must
get exactly one that brings the object, whatever the snapshots in between.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.gateway_env import Env, hold_reads, running, store_url
from tests.models import Agent
from tests.original_client import violations
from tests.wsclient import WsClient

A, B = "world:0|0", "world:1|0"


@pytest.fixture
async def env(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    async with running(store_url(backend, request)) as e:
        yield e


async def _marker(env: Env, client: WsClient, key: str) -> None:
    """Publish a marker on ``key`` and wait for it: everything published before it reached the client."""
    n = len(client.of("marker"))
    await env.world.publish(key, {"method": "marker"})
    await client.wait(lambda: len(client.of("marker")) > n)


@pytest.mark.parametrize("read", ["before the move", "after the move"])
async def test_a_move_out_of_a_key_being_snapshotted(env: Env, read: str) -> None:
    # Following B, the client adds A; X moves A -> B and changes again in B
    # while A's snapshot is under way. Read before the move, A's snapshot has
    # X and its replay the mod with nsKey B: B's add (psKey A) would be a
    # second add, and X's later mods in B a gap. Read after it, X is in
    # neither A's snapshot nor its replay: B's add is its only way in.
    x = env.world.create(Agent(id="x", x=1))
    await env.world.flush()
    client = await WsClient.open(env.url, resnap=False)
    await client.subscribe([B])
    reached, release = await hold_reads(env, A, before=read == "after the move")
    await client.subscribe([A], wait=False)
    await asyncio.wait_for(reached.wait(), 10)
    x.x = 17  # A -> B at v2
    await env.world.flush()
    x.name = "in B"  # v3, in B
    await env.world.flush()
    await _marker(env, client, B)
    release.set()
    await client.wait(lambda: bool(client.of("snap")) and client.of("snap")[-1]["sKey"] == A)
    x.name = "later"  # v4
    await env.world.flush()
    await client.wait(lambda: client.mirror.get("x", {}).get("v") == 4)
    assert violations(client.messages, {A, B}) == []
    assert client.mirror["x"]["sKey"] == B and client.mirror["x"]["state"]["name"] == "later"
    await client.close()


async def test_the_old_key_snapshotted_between_the_halves_of_a_move(env: Env) -> None:
    # Following B, the client adds A after X's take-out from A and before its
    # put into B: A's snapshot lacks X and A's subscription never saw the mod
    # with nsKey. A is live when B's add (psKey A) comes, but the mod did not
    # go out: the add is the client's only news of X.
    x = env.world.create(Agent(id="x", x=1))
    await env.world.flush()
    client = await WsClient.open(env.url, resnap=False)
    await client.subscribe([B])
    store = env.world.store
    phase2 = store._phase2

    async def follow_a_first(*args: Any) -> Any:
        store._phase2 = phase2  # type: ignore[method-assign]
        await client.subscribe([A])  # waits for A's snap
        return await phase2(*args)

    store._phase2 = follow_a_first  # type: ignore[method-assign,assignment]
    x.x = 17
    await env.world.flush()
    await client.wait(lambda: client.mirror.get("x", {}).get("v") == 2)
    assert client.mirror["x"]["sKey"] == B
    assert violations(client.messages, {A, B}) == []
    await client.close()


async def test_a_move_into_a_key_being_snapshotted(env: Env) -> None:
    # Following A, the client adds B, whose snapshot is read before X moves
    # A -> B (X is not in it). A is live: the client gets A's mod with nsKey
    # B and moves X into B. B's add (psKey A) then comes out of B's replay,
    # where it used to be sent: a second add.
    x = env.world.create(Agent(id="x", x=1))
    await env.world.flush()
    client = await WsClient.open(env.url, resnap=False)
    await client.subscribe([A])
    reached, release = await hold_reads(env, B, before=False)
    await client.subscribe([B], wait=False)
    await asyncio.wait_for(reached.wait(), 10)
    x.x = 17  # A -> B at v2
    await env.world.flush()
    await _marker(env, client, A)
    release.set()
    await client.wait(lambda: bool(client.of("snap")) and client.of("snap")[-1]["sKey"] == B)
    x.name = "later"  # v3
    await env.world.flush()
    await client.wait(lambda: any(m["method"] == "mod" and m["v"] == 3 for m in client.messages))
    # (the test client's mirror applies B's snap, which the original client ignores)
    assert violations(client.messages, {A, B}) == []
    assert [(m["method"], m["v"]) for m in client.messages if m.get("id") == "x"] == [("add", 1), ("mod", 2), ("mod", 3)]
    await client.close()
