"""Delivery: from a key straight to its followers (session, state), the hot path only for sessions that may take it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import orjson

from synk.gateway.delivery import Delivery, Follower
from synk.gateway.metrics import Metrics
from synk.gateway.routing import Router
from synk.gateway.session import Outlet, Session
from synk.gateway.snapshots import KeyState, State
from tests.gateway_env import KEY as WORLD_KEY
from tests.gateway_env import running, session, until

if TYPE_CHECKING:
    import pytest

KEY = "k"
MOD = b'{"method":"mod","t":"unit","id":"a","sKey":"k","v":2,"diff":{"x":1}}'


class _Kept(Outlet):
    """Keeps what it is given."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    async def write(self, batch: list[bytes]) -> None:
        self.frames += batch

    async def close(self, code: int, reason: str) -> None:
        pass

    def write_nowait(self, batch: list[bytes]) -> bool:
        self.frames += batch
        return True


def _follow(router: Router[Follower], s: Session, key: str, state: State) -> KeyState:
    ks = s.keys[key] = KeyState(key, max_buffer=0)
    ks.state = state
    router.add(s.id, key, (s, ks))
    return ks


async def test_only_synk_clients_take_the_hot_path() -> None:
    """The original client's messages are judged (a move's halves, held adds): never the hot path's."""
    router: Router[Follower] = Router()
    mine, original = session(_Kept()), session(_Kept())
    mine.resnap = True
    original.id = "c2"
    _follow(router, mine, KEY, State.LIVE)
    _follow(router, original, KEY, State.LIVE)
    leaves = b'{"method":"mod","t":"unit","id":"a","sKey":"k","v":4,"diff":{"x":2},"nsKey":"m"}'
    Delivery(router, Metrics(), lambda s, k: None).one(KEY, leaves)
    assert mine.backlog_messages == original.backlog_messages == 1
    assert mine.moved_out == {} and original.moved_out == {"a": ("m", 4)}  # the original client's move, noted


async def test_a_leaving_session_gets_nothing_and_costs_no_resync() -> None:
    """Between its removal from the gateway and its keys' (an await apart) a closed session may
    still be routed to: it is skipped, and its snapshot is not started again for it."""
    router: Router[Follower] = Router()
    resyncs: list[tuple[Session, str]] = []
    delivery = Delivery(router, Metrics(), lambda s, k: resyncs.append((s, k)))
    reading, leaving = session(_Kept()), session(_Kept())
    reading.resnap = leaving.resnap = True
    leaving.id = "c2"
    mine = _follow(router, reading, KEY, State.READING)
    theirs = _follow(router, leaving, KEY, State.READING)
    leaving.closed = True
    delivery.one(KEY, MOD)  # max_buffer 0: one buffered message passes the bound
    assert resyncs == [(reading, KEY)]
    assert len(mine) == 1 and len(theirs) == 0
    delivery.run(KEY, [MOD, MOD])
    assert len(resyncs) > 1 and all(s is reading for s, _ in resyncs)
    assert len(theirs) == 0


async def test_a_client_whose_departure_is_cancelled_leaves_the_router(monkeypatch: pytest.MonkeyPatch) -> None:
    """The router holds sessions (their backlogs, their outlets): a departure cancelled while
    its session stops must still take them out, or they stay for the gateway's life."""
    stopping = asyncio.Event()

    async def stop_forever(self: Session) -> None:
        self.closed = True
        stopping.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(Session, "stop", stop_forever)
    async with running(None) as env:
        subscribed = asyncio.Event()

        async def frames() -> AsyncIterator[str]:
            yield orjson.dumps({"method": "updateSubscription", "add": [WORLD_KEY], "remove": []}).decode()
            await until(lambda: bool(env.gateway.router.keys()), "the key to be followed")
            subscribed.set()

        attach = asyncio.ensure_future(env.gateway.attach(_Kept(), None, frames()))
        await asyncio.wait_for(subscribed.wait(), 10)
        await asyncio.wait_for(stopping.wait(), 10)
        attach.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await attach
        assert env.gateway.router.keys() == [] and env.gateway.sessions == {}
