"""Write-outs: what a burst queues for each client leaves in one write, at most once per write interval;
and the watch over the writer tasks that wait out a full socket.

Sessions with messages queued since the last write-out are marked (their
``on_dirty``); one write-out per burst, once what is ready now has run,
writes each of them (``Session.write_out``), without a task switch per
client: a session's writer task only waits out a full socket. With a
``write_interval``, write-outs come at most that often: a busy client then
gets several ticks' messages in one write (and one batch frame).
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from synk.gateway.session import Session

__all__ = ["WriteOuts", "WriterWatch"]


class WriteOuts:
    """The gateway's write-outs, for every session."""

    def __init__(self, interval: Callable[[], float]) -> None:
        #: seconds between write-outs at least (0: once per burst), read at each burst (the setting may change)
        self._interval = interval
        #: sessions marked since the last write-out
        self._marked: list[Session] = []
        #: when the last write-out ran (the loop's clock)
        self._written = -math.inf

    def mark(self, session: Session) -> None:
        """``session`` queued messages since its last write: it is written at the next write-out."""
        if not self._marked:
            loop = asyncio.get_running_loop()
            interval = self._interval()
            if interval:
                loop.call_at(max(loop.time(), self._written + interval), self._run)
            else:
                loop.call_soon(self._run)
        self._marked.append(session)

    def clear(self) -> None:
        """Forget the marked sessions (the gateway closed)."""
        self._marked.clear()

    def _run(self) -> None:
        self._written = asyncio.get_running_loop().time()
        marked, self._marked = self._marked, []
        for session in marked:
            session.write_out()


class WriterWatch:
    """One timer for every running writer task, for a write stuck too long.

    A timer per write (``asyncio.timeout``) costs more than the write itself
    where many writes go through the task: at 1,000 clients and 50 writes a
    second each, 100,000 timers a second. Instead each writer notes when its
    write began, and this looks at the running ones every ``period`` seconds
    (so a deadline is kept within a period).
    """

    def __init__(self, period: float) -> None:
        self.period = period
        self._writers: set[Session] = set()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, session: Session) -> None:
        """``session``'s writer task started."""
        self._writers.add(session)
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(loop.time() + self.period, self._tick)

    def discard(self, session: Session) -> None:
        """``session``'s writer task ended."""
        self._writers.discard(session)

    def stop(self) -> None:
        """Stop the timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for session in list(self._writers):
            session.check(now)
        self._timer = loop.call_at(now + self.period, self._tick) if self._writers else None
