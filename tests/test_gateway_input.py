"""Bad input, against a real gateway, real websockets and both stores: a clear error naming what was wrong."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

import synk
from synk.gateway import Gateway
from tests.gateway_env import KEY, Env, errors_after, router_matches, running, store_url, until
from tests.models import Agent
from tests.wsclient import WsClient

# -- bad input ---------------------------------------------------------------------------


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
        # Whatever the frames subscribed and removed, the router routes exactly the keys followed.
        assert router_matches(env.gateway)
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
        await until(lambda: not env.gateway.sessions and not env.gateway.router.keys(), "both to leave the router")


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
