"""Snapshot reads: shared by the clients asking for one key at once, taken in turn between clients.

A snapshot read holds a pooled store connection while it runs, so only
``concurrency`` run at once; the :class:`~synk.gateway.snapshots.ReadQueue`
decides whose goes next (round-robin, a few at once per client), and this
does the waiting. What a read is for (the key's state, its barrier) stays
with the gateway.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from synk.gateway.snapshots import ReadQueue

if TYPE_CHECKING:
    from synk.store.base import Store, Stored

__all__ = ["SnapshotReads"]

Ticket = tuple[str, "asyncio.Future[None]"]


class SnapshotReads:
    """The gateway's snapshot reads of one store."""

    def __init__(self, store: Store, concurrency: int, per_client: int) -> None:
        self._store = store
        #: round-robin between clients: one asking for a thousand keys delays
        #: another client's new key by a few reads, not a thousand
        self._queue: ReadQueue[str, Ticket] = ReadQueue(concurrency, per_client)
        #: key -> the read asked for and not yet sent, which newcomers share
        self._queued: dict[str, asyncio.Future[list[Stored]]] = {}

    def clear(self) -> None:
        """Forget the reads not yet sent (the gateway closed: a later start asks afresh)."""
        self._queued.clear()

    async def read(self, cid: str, key: str) -> list[Stored]:
        """A snapshot of ``key`` for client ``cid``, shared by the requests queued for it.

        Clients subscribing to a key at the same moment (a gateway restart,
        a crowd joining a map) share one read. Only a read not yet sent may
        be shared: every sharer's buffer started before it was sent, so none
        misses a message published between the read and its buffer. The
        read waits for ``cid``'s turn in the read queue.
        """
        queued = self._queued.get(key)
        if queued is not None:
            return await asyncio.shield(queued)
        fut: asyncio.Future[list[Stored]] = asyncio.get_running_loop().create_future()
        self._queued[key] = fut
        try:
            await self._turn(cid)
            try:
                if self._queued.get(key) is fut:
                    del self._queued[key]  # sent from here on: newcomers need their own
                fut.set_result(await self._store.snapshot(key))
            finally:
                self._grant(self._queue.done(cid))
        except BaseException as exc:
            if self._queued.get(key) is fut:
                del self._queued[key]
            if not fut.done():
                fut.set_exception(exc if isinstance(exc, Exception) else ConnectionError("snapshot read abandoned"))
                fut.exception()  # retrieved here; the sharers get it too, and retry
            raise
        return fut.result()

    async def _turn(self, cid: str) -> None:
        """Wait until client ``cid`` may read; the caller then reports ``_queue.done``."""
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._grant(self._queue.ask(cid, (cid, ticket)))
        try:
            await ticket
        except asyncio.CancelledError:
            if ticket.cancelled():  # still queued (or its grant was handed back already): withdraw it
                self._grant(self._queue.cancel(cid, (cid, ticket)))
            else:  # granted as the wait was cancelled: give the slot back
                self._grant(self._queue.done(cid))
            raise

    def _grant(self, tickets: list[Ticket]) -> None:
        todo = list(tickets)
        while todo:
            cid, ticket = todo.pop(0)
            if ticket.cancelled():
                # Its waiter was cancelled but has not run yet to withdraw it:
                # the slot goes to the next in turn.
                todo.extend(self._queue.done(cid))
            else:
                ticket.set_result(None)
