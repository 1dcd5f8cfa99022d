"""Keepalive pings for every connection of a gateway, from one timer (pure: the caller passes the time).

The websockets library pings each connection from a task of its own, with a
timer per ping: 10,000 idle clients are 10,000 tasks and 500 timer wake-ups
a second. Here one timer ticks a few times a second; each tick says which
connections are due a ping (each once per ``interval``, in the order they
joined, so the pings spread evenly over the interval) and which have left
a ping unanswered for ``timeout`` seconds (a dead peer: the transport drops
it). The transport does the I/O (``synk.gateway.ws``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["Keepalive"]

C = TypeVar("C", bound=Hashable)


class Keepalive(Generic[C]):
    """When to ping which connection, and which did not answer in time."""

    def __init__(self, interval: float, timeout: float | None) -> None:
        if interval <= 0:
            raise ValueError(f"keepalive interval must be positive, got {interval}")
        self.interval = interval
        self.timeout = timeout
        #: (when its next ping is due, connection), due times in order (each is now + interval)
        self._due: deque[tuple[float, C]] = deque()
        #: (when the pong is late, connection, the ping's token), in order likewise
        self._waiting: deque[tuple[float, C, bytes]] = deque()
        self._live: set[C] = set()

    def __len__(self) -> int:
        """The connections kept alive."""
        return len(self._live)

    def add(self, conn: C, now: float) -> None:
        """A new connection: its first ping is due one interval from now."""
        self._live.add(conn)
        self._due.append((now + self.interval, conn))

    def remove(self, conn: C) -> None:
        """The connection is gone (its entries are skipped when reached)."""
        self._live.discard(conn)

    def tick(self, now: float, answered: Callable[[C, bytes], bool]) -> tuple[list[C], list[C]]:
        """(connections to ping now, connections whose ping went unanswered for ``timeout``).

        ``answered(connection, token)`` says whether the pong of that ping
        came. A connection reported unanswered is removed.
        """
        late: list[C] = []
        waiting = self._waiting
        while waiting and waiting[0][0] <= now:
            _, conn, token = waiting.popleft()
            if conn in self._live and not answered(conn, token):
                self._live.discard(conn)
                late.append(conn)
        ping: list[C] = []
        due = self._due
        while due and due[0][0] <= now:
            _, conn = due.popleft()
            if conn in self._live:
                ping.append(conn)
                due.append((now + self.interval, conn))
        return ping, late

    def pinged(self, conn: C, token: bytes, now: float) -> None:
        """Ping ``token`` went to ``conn`` (its pong is checked ``timeout`` seconds from now)."""
        if self.timeout is not None:
            self._waiting.append((now + self.timeout, conn, token))
