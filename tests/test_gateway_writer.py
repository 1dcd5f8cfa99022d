"""A client's writer task and the one timer that watches every writer (gateway/session.py: WriterWatch)."""

from __future__ import annotations

import asyncio

from synk.gateway.metrics import Metrics
from synk.gateway.session import Outlet, Session
from synk.gateway.writeout import WriterWatch
from tests.gateway_env import session, until


class Stalled(Outlet):
    """A peer that never reads: every write waits for good."""

    async def write(self, batch: list[bytes]) -> None:
        await asyncio.Event().wait()

    async def close(self, code: int, reason: str) -> None:
        pass


async def stuck_writing() -> tuple[Session, Metrics, WriterWatch]:
    """A session whose writer is in a write that never ends (a watch that never looks on its own)."""
    metrics, watch = Metrics(), WriterWatch(3600)
    s = session(Stalled(), metrics, watch)
    s.push(b'{"method":"x"}')
    s.write_out()
    await until(lambda: s._writing_since is not None, "the writer's write to start")
    return s, metrics, watch


async def test_a_stopped_session_is_not_counted_as_a_stuck_write() -> None:
    s, metrics, watch = await stuck_writing()
    stopping = asyncio.create_task(s.stop())  # the connection is gone...
    await asyncio.sleep(0)  # (stop() has cancelled the writer, which has not run since)
    s.check(asyncio.get_running_loop().time() + 60)  # ...as the watch looks, long past stuck_timeout
    await stopping
    assert metrics.slow_closes == 0
    watch.stop()


async def test_a_write_stuck_past_the_timeout_closes_the_client() -> None:
    s, metrics, watch = await stuck_writing()
    s.check(asyncio.get_running_loop().time() + 60)
    writer = s._writer
    assert writer is not None
    await writer
    assert metrics.slow_closes == 1 and s.closed
    watch.stop()
