"""Progress bounds: a batch of Redis calls fails when it stops moving, not when it is long.

A flush of 100,000 writes may take seconds and is fine while its replies
keep coming; one timer per reply would cost more than the replies. This
bounds the batch by its progress: see :class:`Progress`.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["Progress"]


class Progress:
    """Bounds a batch of calls by its progress rather than by one timer per reply.

    ``guard()`` fails the batch (TimeoutError) once ``2 * limit`` seconds
    pass with nothing sent and no reply; it never does while each step comes
    within ``limit`` of the last. ``made()``, called on each step, moves the
    deadline on only when it is nearer than ``limit``: at most one timer
    change per ``limit`` seconds, whatever the number of replies.
    """

    __slots__ = ("_guard", "_loop", "expired", "limit")

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.expired = False
        self._guard: asyncio.Timeout | None = None
        self._loop = asyncio.get_running_loop()

    @contextlib.asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(2 * self.limit) as self._guard:
                yield
        except TimeoutError:
            self.expired = self._guard is not None and self._guard.expired()
            raise

    def made(self) -> None:
        """One step done: a slice sent, a reply read, scripts loaded."""
        guard = self._guard
        if guard is None:
            return
        if guard.expired():
            # The deadline passed, but the step finished in the same loop
            # turn and its asyncio.wait_for (inside redis-py) swallowed the
            # cancellation, as it can on Python 3.11: fail here instead.
            raise TimeoutError
        now = self._loop.time()
        when = guard.when()
        if when is not None and when - now < self.limit:
            guard.reschedule(now + 2 * self.limit)
