"""Snapshots in flight: each client key's read, the barrier that closes it, and the keys parked for want of room.

A client's snapshot of a key is a read of the store (``reads.py``), then a
*barrier*: a message with a fresh token published on the key's channel
after the read. Messages of the key published before the read may still be
on their way through the subscriber; the barrier arrives after all of them,
and until it does the key's state (``snapshots.KeyState``) buffers them.
This module does that I/O for the gateway: it makes sure the key's
subscription is live, reads, publishes the barrier, matches barriers that
come back to their reads, and bounds how many are held (``max_barriers``):
past it a read is *parked* and done again, oldest first, as held barriers
come back. The key states themselves are pure and live in ``snapshots.py``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
from typing import TYPE_CHECKING

from synk.errors import ConfigError
from synk.gateway import original
from synk.gateway import protocol as p
from synk.gateway.reads import SnapshotReads
from synk.gateway.snapshots import KeyState, State

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine
    from typing import Any

    from synk.gateway.config import GatewayConfig
    from synk.gateway.metrics import Metrics
    from synk.gateway.session import Session
    from synk.store.base import Store, Subscriber

__all__ = ["BARRIER", "Barriers"]

log = logging.getLogger("synk.gateway")

#: The start of a snapshot barrier: ``{"method":"~barrier","id":"TOKEN"}``.
BARRIER = b'{"method":"~barrier","id":"'

#: Snapshots read at once: each holds a pooled Redis connection (redis-py's pool has 100).
SNAPSHOT_CONCURRENCY = 32
#: Snapshot reads one client may have under way at once; the others wait their turn.
READS_PER_CLIENT = 4


class Barriers:
    """The gateway's snapshots under way: their reads, their barriers, the parked ones."""

    def __init__(
        self,
        store: Store,
        config: GatewayConfig,
        metrics: Metrics,
        *,
        subscriber: Callable[[], Subscriber | None],
        spawn: Callable[[Awaitable[Any]], None],
        refuse: Callable[[Session, str], Coroutine[Any, Any, None]],
    ) -> None:
        self._store = store
        self._config = config
        self._metrics = metrics
        #: the gateway's store subscriber now (a new one after the old one ended)
        self._subscriber = subscriber
        self._spawn = spawn
        #: the store will not serve ``key`` to the client (refused for good): tell it, and drop the key
        self._refuse = refuse
        #: key -> its subscription, asked for once however many clients read it
        self.live: dict[str, asyncio.Future[None]] = {}
        #: barrier token -> (its key, the session and its key's state awaiting it), oldest first
        self.held: dict[str, tuple[str, Session, KeyState]] = {}
        #: keys whose read was dropped past ``max_barriers``, with its epoch: read again,
        #: oldest first, one per barrier that comes back (or is forgotten)
        self.parked: collections.deque[tuple[Session, KeyState, int]] = collections.deque()
        #: snapshot reads: shared per key, taken in turn between clients (reads.py)
        self.reads = SnapshotReads(store, SNAPSHOT_CONCURRENCY, READS_PER_CLIENT)
        self._publishes = asyncio.Semaphore(SNAPSHOT_CONCURRENCY)

    def reset(self) -> None:
        """Forget every subscription, barrier and parked read: the subscriber they belonged to is gone."""
        self.live.clear()
        self.held.clear()
        self.parked.clear()

    def snapshot(self, session: Session, keys: list[str] | tuple[str, ...]) -> None:
        """Read ``keys`` afresh for ``session`` (those it still follows), each in a task of its own."""
        for key in keys:
            state = session.keys.get(key)
            if state is None:
                continue  # not followed (any more): its state and router entry go together, made in the gateway's _update (hub.py)
            self.forget(state)  # a read under way is stale: the new one's barrier counts
            self._spawn(self._read(session, state, state.snapshot()))

    def resnapshot(self, session: Session, gap: frozenset[str] | None) -> None:
        """Snapshot again the keys of ``session`` in ``gap`` (all its keys if None): their messages may be lost."""
        keys = list(session.keys) if gap is None else [k for k in session.keys if k in gap]
        if not keys:
            return  # none of its keys missed anything: it is not disturbed
        if not session.resnap:
            # The original synk-js client throws on an add of an object it
            # holds and knows no resnap: it can only start afresh.
            self._spawn(session.close(p.CLOSE_RESTART, "gateway re-snapshots; reconnect"))
            return
        # Not asked for by the client: tell it, so it reconciles the keys as
        # one batch (an object that moved between two of them is not removed).
        session.push(p.encode_resnap(keys))
        self.snapshot(session, keys)

    def resnapshot_all(self, session: Session) -> None:
        """Snapshot again every key of ``session`` (its backlog was dropped)."""
        self.resnapshot(session, None)

    def forget(self, state: KeyState) -> None:
        """The barrier ``state`` awaits will not count (its client left the key, or reads it afresh)."""
        if state.token is not None and self.held.pop(state.token, None) is not None:
            self._unpark()

    def drop_live(self, key: str) -> None:
        """No client follows ``key`` any more: its subscription is not awaited again."""
        live = self.live.pop(key, None)
        if live is not None and not live.done():
            # Its subscribe may not have started yet: it would then run
            # after the gateway's unsubscribe and subscribe a key no client
            # follows, for good. The router's keys are the truth.
            live.cancel()

    def barrier(self, key: str, data: bytes) -> None:
        """A barrier came back on ``key``: the snapshot it closes goes out, with what was held meanwhile."""
        token = data[len(BARRIER) : -2].decode(errors="replace")
        found = self.held.get(token)
        if found is None or found[0] != key:
            return  # another gateway's, or its read was dropped or started over
        del self.held[token]
        self._unpark()
        _, session, state = found
        out = state.barrier(token)
        if out is None or session.closed:
            return
        if self._config.write_interval:
            # A snapshot goes out at once, not at the next write-out: the
            # interval trades latency for CPU on changes, not on a page's
            # first view of a key (this runs after the pushes below).
            asyncio.get_running_loop().call_soon(session.write_out)
        session.push_snapshot(out.snapshot)
        if session.resnap:
            session.push_many([m.data for m in out.replayed])
            return
        original.after_barrier(session, key, out)

    def _unpark(self) -> None:
        """A held barrier came back or was forgotten: read again the oldest key parked for want of room."""
        parked = self.parked
        while parked:
            session, state, epoch = parked.popleft()
            if not session.closed and state.state is State.PARKED and state.epoch == epoch:
                self.snapshot(session, [state.key])
                return

    async def _ensure_live(self, key: str) -> None:
        fut = self.live.get(key)
        if fut is None:
            subscriber = self._subscriber()
            assert subscriber is not None
            fut = self.live[key] = asyncio.ensure_future(subscriber.subscribe([key]))
        await asyncio.shield(fut)

    async def _read(self, session: Session, state: KeyState, epoch: int) -> None:
        key = state.key
        delay = 0.05
        while not session.closed and state.reading(epoch):
            try:
                await self._ensure_live(key)
                # Thousands of clients subscribing at once (say, after a
                # gateway restart) would ask for more connections than the
                # pool has, and fail as if Redis were down.
                stored = await self.reads.read(session.id, key)
                # Messages published before the snapshot may still be on their
                # way through the subscriber. A barrier published now arrives
                # after all of them: until it does, the key stays buffered.
                token = secrets.token_hex(8)
                if not state.read(epoch, stored, token):
                    return  # started over or left while the read was under way
                if len(self.held) >= self._config.max_barriers:
                    # Each held barrier holds its read in memory until the
                    # subscriber's stream brings it back; when that stream lags,
                    # reads would pile up without bound. Drop this one and read
                    # again once a barrier comes back, as a slow client's
                    # backlog is dropped and re-snapshotted once it drains.
                    state.park()
                    self.parked.append((session, state, epoch))
                    self._metrics.slow_resyncs += 1
                    return
                self.held[token] = (key, session, state)
                try:
                    async with self._publishes:
                        await self._store.publish(key, BARRIER + token.encode() + b'"}')
                except BaseException:
                    state.unread(epoch)
                    if self.held.pop(token, None) is not None:  # it will never come back
                        self._unpark()
                    raise
                break
            except ConfigError as exc:
                # Redis refused the subscription itself (an ACL, say), or the
                # key holds data synk did not write: retrying will not help.
                log.warning("synk cannot serve key %r: %s", key, exc)
                await self._refuse(session, key)
                return
            except Exception as exc:
                # The store is down: the subscriber reconnects on its own and
                # re-snapshots everything; until then keep trying this one.
                self.live.pop(key, None)
                log.warning("synk snapshot of %r failed (%s); retrying", key, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
