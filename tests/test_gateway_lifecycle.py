"""The gateway's lifecycle: the pure state machine fed events, and a real gateway through a failed start and a close."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import synk
from bench.redis_process import RedisProcess
from synk.gateway import Gateway
from synk.gateway.lifecycle import Lifecycle, State, Step
from synk.store.base import Event
from tests.gateway_env import KEY
from tests.models import Agent
from tests.redis_env import next_event, world_on
from tests.wsclient import WsClient


def run(life: Lifecycle, events: list[str]) -> list[tuple[str, str]]:
    """Feed ``events`` (method names) and record each one's step (or "-") and the state after it."""
    out = []
    for event in events:
        step = getattr(life, event)()
        out.append((step.value if isinstance(step, Step) else "-", life.state.value))
    return out


def test_start_open_close() -> None:
    assert run(Lifecycle(), ["start", "start", "opened", "start", "close", "close", "released", "close"]) == [
        ("open", "starting"),
        ("wait", "starting"),
        ("-", "running"),
        ("nothing", "running"),
        ("release", "closing"),
        ("wait", "closing"),
        ("-", "idle"),
        ("nothing", "idle"),
    ]


def test_a_failed_start_is_tried_again() -> None:
    assert run(Lifecycle(), ["start", "failed", "start", "opened"]) == [
        ("open", "starting"),
        ("-", "idle"),
        ("open", "starting"),
        ("-", "running"),
    ]


def test_close_while_starting_waits_and_a_start_after_close_begins_afresh() -> None:
    assert run(Lifecycle(), ["start", "close", "opened", "close", "start", "released", "start"]) == [
        ("open", "starting"),
        ("wait", "starting"),
        ("-", "running"),
        ("release", "closing"),
        ("wait", "closing"),
        ("-", "idle"),
        ("open", "starting"),
    ]


def test_a_subscriber_that_ends_while_running_is_replaced() -> None:
    life = Lifecycle()
    assert life.subscriber_ended() is Step.NOTHING
    life.start()
    life.opened()
    assert life.subscriber_ended() is Step.RESUBSCRIBE
    life.close()
    assert life.subscriber_ended() is Step.NOTHING


def test_events_out_of_order_are_bugs() -> None:
    life = Lifecycle()
    with pytest.raises(RuntimeError, match="gateway lifecycle: opened while idle, expected starting"):
        life.opened()
    life.start()
    with pytest.raises(RuntimeError, match="gateway lifecycle: released while starting, expected closing"):
        life.released()
    assert life.state is State.STARTING


async def test_a_failed_start_is_retried_and_a_closed_gateway_starts_afresh() -> None:
    server = RedisProcess()
    gateway = Gateway(server.url, prefix="life:")
    with pytest.raises(synk.ConnectionError):
        await asyncio.wait_for(gateway.start(), 30)
    assert gateway._subscriber is None
    server.start()
    try:
        async with world_on(server.url, Agent, prefix="life:") as world:
            world.create(Agent(id="a1"))
            await world.flush()
            for _ in range(2):  # served, closed, then served again on fresh state
                async with gateway.serve("127.0.0.1", 0) as srv:
                    client = await WsClient.open(f"ws://127.0.0.1:{srv.port}/")
                    await client.subscribe([KEY])
                    assert client.of("snap")[-1]["ids"] == ["a1"]
                    await client.close()
                assert gateway._subscriber is None and not gateway._barriers.live
    finally:
        server.close()


async def test_the_subscriber_survives_an_unexpected_error(redis_process: RedisProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    # Its reader task died on anything but a connection error, nothing
    # restarted it, and every key went silent for good.
    from redis.asyncio.client import PubSub

    real = PubSub.get_message
    failures = [RuntimeError("a reply redis-py cannot parse")]

    async def flaky(self: PubSub, *args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return await real(self, *args, **kwargs)

    async with world_on(redis_process.url, Agent, prefix="r:") as world:
        sub = world.subscribe()
        try:
            monkeypatch.setattr(PubSub, "get_message", flaky)
            await asyncio.wait_for(sub.subscribe(["room"]), 10)
            assert await next_event(sub) == Event(None, gap=frozenset({"room"}))  # may have missed messages: re-snapshot
            await world.publish("room", {"method": "after"})
            assert await next_event(sub) == Event("room", b'{"method":"after"}')
        finally:
            await sub.close()
