"""The gateway's guarantees, against a real gateway, real websockets and both stores."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.gateway_env import Env, first_world_message, running, store_url, store_view
from tests.models import Agent
from tests.wsclient import WsClient


@pytest.fixture
async def env(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    url = store_url(backend, request)
    async with running(url) as e:
        yield e


async def test_snapshot_then_every_change(env: Env) -> None:
    agents = [env.world.create(Agent(id=f"a{i}", x=i)) for i in range(5)]
    await env.world.flush()
    client = await WsClient.open(env.url)
    await client.subscribe(["world:0|0"])
    assert sorted(m["id"] for m in client.of("add")) == [f"a{i}" for i in range(5)]
    assert sorted(client.of("snap")[0]["ids"]) == [f"a{i}" for i in range(5)]
    agents[0].name = "changed"
    await env.world.flush()
    await client.wait(lambda: len(client.of("mod")) == 1)
    mod = client.of("mod")[0]
    assert mod == {
        "method": "mod",
        "t": "agent",
        "id": "a0",
        "sKey": "world:0|0",
        "v": 2,
        "diff": {"name": "changed"},
        "i": agents[0]._synk_token,
    }
    await client.close()


async def test_no_gap_while_the_simulation_runs(env: Env) -> None:
    """Subscribing in the middle of a stream of changes misses nothing and repeats nothing."""
    agents = [env.world.create(Agent(id=f"n{i}", x=i % 16, y=0)) for i in range(40)]
    await env.world.flush()
    stop = asyncio.Event()

    async def simulate() -> None:
        while not stop.is_set():
            for a in agents:
                a.y = (a.y + 1) % 16
            await env.world.flush()

    sim = asyncio.create_task(simulate())
    clients = []
    for _ in range(3):
        await asyncio.sleep(0)  # let the simulation interleave with the subscriptions
        c = await WsClient.open(env.url)
        await c.subscribe(["world:0|0"])
        clients.append(c)
    # Run until each client has seen at least 5 more versions of every object.
    for c in clients:
        await c.wait(lambda: len(c.of("mod")) >= 5 * len(agents), timeout=20)  # noqa: B023 - awaited at once
    stop.set()
    await sim
    expected = await store_view(env.world, ["world:0|0"])
    for c in clients:
        await c.wait(lambda: c.mirror == expected)  # noqa: B023
        c.assert_consecutive_versions()
        await c.close()


async def test_removed_keys_stop(env: Env) -> None:
    a = env.world.create(Agent(id="r1"))
    b = env.world.create(Agent(id="r2", x=16))
    await env.world.flush()
    client = await WsClient.open(env.url)
    await client.subscribe(["world:0|0", "world:1|0"])
    await client.subscribe([], ["world:0|0"], wait=False)
    # A marker on the kept key proves the removal was processed before the change.
    await env.world.publish("world:1|0", {"method": "marker", "n": 1})
    await client.wait(lambda: bool(client.of("marker")))
    a.name = "unseen"
    b.name = "seen"
    await env.world.flush()
    await client.wait(lambda: len(client.of("mod")) == 1)
    await env.world.publish("world:1|0", {"method": "marker", "n": 2})
    await client.wait(lambda: len(client.of("marker")) == 2)
    assert [m["id"] for m in client.of("mod")] == ["r2"]
    await client.close()


async def test_moves(env: Env) -> None:
    a = env.world.create(Agent(id="m1", x=1))
    await env.world.flush()
    both = await WsClient.open(env.url)
    await both.subscribe(["world:0|0", "world:1|0"])
    original = await WsClient.open(env.url, resnap=False)  # the original synk-js client
    await original.subscribe(["world:0|0", "world:1|0"])
    new_only = await WsClient.open(env.url)
    await new_only.subscribe(["world:1|0"])
    old_only = await WsClient.open(env.url)
    await old_only.subscribe(["world:0|0"])
    a.x = 17
    await env.world.flush()
    await env.world.publish("world:1|0", {"method": "marker"})
    await env.world.publish("world:0|0", {"method": "marker"})
    for c in (both, original, new_only, old_only):
        await c.wait(lambda: len(c.of("marker")) == (2 if c in (both, original) else 1))  # noqa: B023

    def moves(c: WsClient) -> list[tuple[str, str | None]]:
        return [(m["method"], m.get("nsKey") or m.get("psKey")) for m in c.messages if m["method"] in ("mod", "add") and m["v"] == 2]

    # synk's client gets both halves (it drops the add when it has the move);
    # the original client, which throws on a second add, the mod only.
    assert sorted(moves(both)) == [("add", "world:0|0"), ("mod", "world:1|0")]
    assert moves(original) == [("mod", "world:1|0")]
    assert moves(new_only) == [("add", "world:0|0")]
    assert moves(old_only) == [("mod", "world:1|0")]
    assert both.mirror["m1"]["sKey"] == original.mirror["m1"]["sKey"] == "world:1|0"
    assert "m1" in new_only.mirror
    assert "m1" not in old_only.mirror
    for c in (both, original, new_only, old_only):
        await c.close()


A_KEY, B_KEY = "world:0|0", "world:1|0"


@pytest.mark.parametrize(
    ("following", "adds"),
    [
        # Following A, the client adds B, whose snapshot is read after the take-out
        # from A and before the put into B: X is in neither. The client gets A's mod
        # (nsKey B), then B's snap without X, which removes it.
        (A_KEY, B_KEY),
        # Following B, the client adds A: A's mod (nsKey B) went out before it
        # followed A, and A's snapshot no longer has X.
        (B_KEY, A_KEY),
    ],
    ids=["new key snapshotted", "old key followed"],
)
async def test_a_key_subscribed_between_the_halves_of_a_move(env: Env, following: str, adds: str) -> None:
    # X moves A -> B. In both cases the add with psKey A, which comes after, is the
    # client's only news of X in B; it was left out because the client follows A.
    x = env.world.create(Agent(id="x", x=1))
    await env.world.flush()
    client = await WsClient.open(env.url)
    await client.subscribe([following])
    store = env.world.store
    phase2 = store._phase2

    async def subscribe_first(*args: Any) -> Any:
        store._phase2 = phase2  # type: ignore[method-assign]
        await client.subscribe([adds])  # waits for its snap
        return await phase2(*args)

    store._phase2 = subscribe_first  # type: ignore[method-assign,assignment]
    x.x = 17
    await env.world.flush()
    await client.wait(lambda: "x" in client.mirror and client.mirror["x"]["sKey"] == B_KEY and client.mirror["x"]["v"] == 2)
    await client.close()


async def test_a_move_in_flight_when_the_client_leaves_the_old_key(env: Env) -> None:
    # Following A and B, X moves A -> B: the gateway leaves B's add (psKey A)
    # out, since the client gets A's mod with nsKey. The client leaves A
    # before that mod reaches it, and drops it (A is no longer followed):
    # X was missing from B until it changed again.
    a_key, b_key = "world:0|0", "world:1|0"
    x = env.world.create(Agent(id="x", x=1))
    await env.world.flush()
    client = await WsClient.open(env.url, resnap=False)  # synk's own client gets the add at once anyway
    await client.subscribe([a_key, b_key])
    assert client.mirror["x"]["sKey"] == a_key
    # The client leaves A on its side first (as synk-client's setSubscription does) ...
    client.keys.discard(a_key)
    del client.mirror["x"]
    x.x = 17
    await env.world.flush()
    # ... and its updateSubscription reaches the gateway after A's mod went out.
    await client.wait(lambda: any(m["method"] == "mod" and m.get("nsKey") == b_key for m in client.messages))
    assert not [m for m in client.of("add") if m.get("psKey") == a_key], "the add with psKey was sent at once"
    await client.send({"method": "updateSubscription", "remove": [a_key]})
    await client.wait(lambda: "x" in client.mirror)
    assert client.mirror["x"] == {"sKey": b_key, "v": 2, "state": client.mirror["x"]["state"]}
    assert client.mirror["x"]["state"]["x"] == 17
    await client.close()


async def test_resync(env: Env) -> None:
    env.world.create(Agent(id="s1"))
    await env.world.flush()
    client = await WsClient.open(env.url)
    await client.subscribe(["world:0|0"])
    await client.send({"method": "resync", "keys": ["world:0|0"]})
    await client.wait(lambda: len(client.of("snap")) == 2)
    assert [m["id"] for m in client.of("add")] == ["s1", "s1"]
    await client.send({"method": "resync", "keys": ["world:5|5"]})
    await client.wait(lambda: bool(client.of("error")))
    assert client.of("error")[0]["code"] == "not_subscribed"
    await client.close()


async def test_custom_messages(env: Env) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    @env.gateway.on("chat")
    async def chat(client: Any, msg: dict[str, Any]) -> None:
        seen.append((client.id, msg))
        client.send({"method": "chatAck", "text": msg["text"]})

    client = await WsClient.open(env.url)
    hello = client.of("hello")[0]["client"]
    message = await first_world_message(env.world, client, {"method": "chat", "text": "hi"})
    await client.wait(lambda: bool(client.of("chatAck")))
    assert seen[0] == (hello, {"text": "hi"})
    assert (message.client, message.method, message.data) == (hello, "chat", {"text": "hi"})
    await client.close()
