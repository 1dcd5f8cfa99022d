"""Batch frames (a client that declares ``synk_batch=1`` gets each write as one frame) and the write interval."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from synk.gateway.session import Session, batch_frames
from tests.gateway_env import Env, running, store_url, until
from tests.models import Agent
from tests.wsclient import WsClient

KEY = "world:0|0"


@pytest.fixture
async def env(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    async with running(store_url(backend, request)) as e:
        yield e


def _messages(frames: list[bytes]) -> list[Any]:
    return [m for f in frames for m in (orjson.loads(f) if f.startswith(b"[") else [orjson.loads(f)])]


def test_batch_frames_keep_the_order_and_bound_each_frame() -> None:
    one = [b'{"method":"a"}']
    assert batch_frames(one, 1) == one  # a message alone is its own frame
    batch = [b'{"n":%d}' % i for i in range(10)]
    assert batch_frames(batch, 10) == [b"[" + b",".join(batch) + b"]"]
    frames = batch_frames(batch, 10, most=30)
    assert _messages(frames) == [{"n": i} for i in range(10)]
    assert all(len(f) <= 30 + 2 for f in frames) and len(frames) == 4
    big = b'{"big":"' + b"x" * 100 + b'"}'
    assert _messages(batch_frames([one[0], big, one[0]], 3, most=50)) == [{"method": "a"}, orjson.loads(big), {"method": "a"}]
    # An item may hold several messages (a key's run, joined once for every client).
    joined = b",".join(batch[:3])
    assert batch_frames([joined], 3) == [b"[" + joined + b"]"]
    assert _messages(batch_frames([joined, batch[3]], 4)) == [{"n": i} for i in range(4)]


def test_batch_frames_given_the_size_make_the_same_frames() -> None:
    """The write-out passes the backlog's byte count: under the bound, one frame made
    without sizing each item; over it, split as without the count."""
    batch = [orjson.dumps({"n": i}) for i in range(10)]
    size = sum(map(len, batch))
    for most in (30, 1000, size + len(batch) + 1, size + len(batch)):
        assert batch_frames(batch, 10, most, size=size) == batch_frames(batch, 10, most), most
    assert batch_frames(batch[:1], 1, size=len(batch[0])) == batch[:1]


async def test_a_flush_reaches_a_batch_client_in_fewer_frames_and_the_same_messages(env: Env) -> None:
    agents = [env.world.create(Agent(id=f"a{i}", x=1)) for i in range(50)]
    await env.world.flush()
    batched = await WsClient.open(env.url)  # synk_batch=1, as synk-client declares
    plain = await WsClient.open(env.url, batch=False)
    for client in (batched, plain):
        await client.subscribe([KEY])
    # The snapshot (50 adds and a snap) went to the batch client in one frame or a few.
    assert len(batched.frames) < len(batched.messages) / 10
    assert len(plain.frames) == len(plain.messages)
    bf, pf, pm = len(batched.frames), len(plain.frames), len(plain.messages)
    for a in agents:
        a.name = "changed"
    await env.world.flush()
    for client in (batched, plain):
        await client.wait(lambda c=client: sum(m["method"] == "mod" for m in c.messages) == 50)  # type: ignore[misc]
    assert [m for m in batched.messages if m["method"] != "hello"] == [m for m in plain.messages if m["method"] != "hello"]
    assert len(plain.frames) - pf == len(plain.messages) - pm == 50
    assert len(batched.frames) - bf < 50
    assert any(isinstance(f, str) and f.startswith("[") for f in batched.frames[bf:])
    assert batched.mirror == plain.mirror and len(batched.mirror) == 50
    await batched.close()
    await plain.close()


async def test_a_write_interval_sends_several_flushes_to_a_client_in_one_write() -> None:
    async with running(None, write_interval=2.0) as env:
        a = env.world.create(Agent(id="a", x=1))
        await env.world.flush()
        client = await WsClient.open(env.url)
        await client.subscribe([KEY])
        [session] = env.gateway.sessions.values()
        start = len(client.frames)
        for i in range(5):
            a.name = f"n{i}"
            await env.world.flush()
            # Queued, not written: the write-out waits for the interval since the snapshot's.
            await until(lambda n=i + 1: session.backlog_messages == n, f"mod {i + 1} queued")  # type: ignore[misc]
        await client.wait(lambda: len(client.of("mod")) == 5)
        assert len(client.frames) == start + 1
        assert [m["diff"]["name"] for m in client.of("mod")] == [f"n{i}" for i in range(5)]
        await client.close()


async def test_without_a_write_interval_each_flush_is_written_at_once() -> None:
    async with running(None) as env:
        a = env.world.create(Agent(id="a", x=1))
        await env.world.flush()
        client = await WsClient.open(env.url)
        await client.subscribe([KEY])
        start = len(client.frames)
        for i in range(5):
            a.name = f"n{i}"
            await env.world.flush()
            await client.wait(lambda n=i + 1: len(client.of("mod")) == n)  # type: ignore[misc]
        assert len(client.frames) == start + 5
        await client.close()


async def test_a_keys_run_of_messages_is_joined_once_for_all_its_batch_clients(
    env: Env, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    agents = [env.world.create(Agent(id=f"r{i}", x=1)) for i in range(20)]
    await env.world.flush()
    batched = [await WsClient.open(env.url) for _ in range(3)]
    plain = await WsClient.open(env.url, batch=False)
    original = await WsClient.open(env.url, resnap=False)
    clients = [*batched, plain, original]
    for client in clients:
        await client.subscribe([KEY])
    joins: list[tuple[str, int, int]] = []
    real = Session.push_joined

    def spy(self: Session, messages: list[bytes], joined: bytes) -> None:
        joins.append((self.id, len(messages), id(joined)))
        real(self, messages, joined)

    monkeypatch.setattr(Session, "push_joined", spy)
    for a in agents:
        a.name = "run"
    await env.world.flush()
    for client in clients:
        await client.wait(lambda c=client: len(c.of("mod")) == 20)  # type: ignore[misc]
    mods = [[m for m in c.messages if m["method"] == "mod"] for c in clients]
    assert all(m == mods[0] for m in mods)  # the same messages, in the same order, for every kind of client
    if backend != "memory":
        # Redis brings a flush's messages of a key in one publish: one run, one join for every client of synk's own.
        assert len({j[2] for j in joins}) == 1 and sum(j[1] for j in joins) == 20 * 4
        assert {j[0] for j in joins} == {s.id for s in env.gateway.sessions.values() if s.resnap}
    assert len(plain.frames) == len(plain.messages)
    for client in clients:
        await client.close()


async def test_a_snapshot_does_not_wait_for_the_write_interval() -> None:
    async with running(None, write_interval=10.0) as env:
        env.world.create(Agent(id="s", x=1))
        await env.world.flush()
        client = await WsClient.open(env.url)  # its hello was a write: the next write-out is 10 s away
        await client.send({"method": "updateSubscription", "add": [KEY]})
        await client.wait(lambda: bool(client.of("snap")), timeout=5)
        assert [m["id"] for m in client.of("add")] == ["s"]
        await client.close()
