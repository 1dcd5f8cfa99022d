"""The Redis store's subscriber: one sharded pub/sub connection, reconnecting on its own."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
from typing import TYPE_CHECKING, Any

from redis import exceptions as rexc

from synk.errors import ConfigError
from synk.store.base import Event, Subscriber
from synk.store.redis import ERRORS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

    from synk.store.redis import RedisStore

__all__ = ["RedisSubscriber"]

#: What sending on the pub/sub connection may raise while it breaks or is
#: closed under us (redis-py then finds its writer gone: AttributeError).
#: Either way the reader task reconnects and subscribes ``_keys`` afresh.
_SEND_ERRORS = (*ERRORS, AttributeError)


class RedisSubscriber(Subscriber):
    """One pub/sub connection for a changing set of keys, reconnecting on its own.

    A reader task owns the connection: it resolves ``subscribe()`` calls once
    Redis confirms them (so a snapshot taken afterwards misses nothing), and
    after a reconnect re-subscribes every key and emits ``Event(None)``.
    """

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._keys: set[str] = set()
        self._waiting: dict[bytes, list[asyncio.Future[None]]] = {}
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closed = False
        self._lock = asyncio.Lock()
        #: channels re-subscribed after a reconnect and not yet confirmed
        self._resubscribing: set[bytes] | None = None
        #: channels whose SSUBSCRIBE was sent and not yet answered, in order
        self._sent: collections.deque[bytes] = collections.deque()

    async def subscribe(self, keys: Iterable[str]) -> None:
        new = [k for k in dict.fromkeys(keys) if k not in self._keys]
        if not new:
            return
        self._keys.update(new)
        loop = asyncio.get_running_loop()
        futures = []
        for key in new:
            fut: asyncio.Future[None] = loop.create_future()
            self._waiting.setdefault(self._store.channel(key).encode(), []).append(fut)
            futures.append(fut)
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        self._wake.set()
        async with self._lock:
            if self._pubsub is not None:
                with contextlib.suppress(*_SEND_ERRORS):
                    for k in new:  # one channel per SSUBSCRIBE: the channels of one call must share a slot
                        self._sent.append(self._store.channel(k).encode())
                        await self._pubsub.ssubscribe(self._store.channel(k))
        await asyncio.gather(*futures)

    async def unsubscribe(self, keys: Iterable[str]) -> None:
        gone = [k for k in dict.fromkeys(keys) if k in self._keys]
        if not gone:
            return
        self._keys.difference_update(gone)
        for key in gone:
            for fut in self._waiting.pop(self._store.channel(key).encode(), []):
                if not fut.done():
                    fut.set_result(None)
        async with self._lock:
            if self._pubsub is not None:
                with contextlib.suppress(*_SEND_ERRORS):
                    for k in gone:
                        await self._pubsub.sunsubscribe(self._store.channel(k))

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            event = await self._queue.get()
            if event is None:
                return
            yield event

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._drop()
        for futures in self._waiting.values():
            for fut in futures:
                if not fut.done():
                    fut.cancel()
        self._queue.put_nowait(None)

    async def _drop(self) -> None:
        ps, self._pubsub = self._pubsub, None
        if ps is not None:
            with contextlib.suppress(*ERRORS, RuntimeError):
                await ps.aclose()

    async def _connect(self) -> None:
        ps = self._store.pubsub_client.pubsub()
        async with self._lock:
            self._sent.clear()
            for k in list(self._keys):  # a snapshot: subscribe() may add keys meanwhile
                self._sent.append(self._store.channel(k).encode())
                await ps.ssubscribe(self._store.channel(k))
            self._pubsub = ps

    async def _run(self) -> None:
        delay = 0.05
        reconnect = False
        while not self._closed:
            try:
                if self._pubsub is None:
                    if reconnect:
                        self._resubscribing = {self._store.channel(k).encode() for k in self._keys}
                    await self._connect()
                    if reconnect and not self._resubscribing:
                        self._resubscribing = None
                        self._queue.put_nowait(Event(None))
                    reconnect = False
                if not self._keys:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                msg = await self._pubsub.get_message(ignore_subscribe_messages=False, timeout=1.0)
                delay = 0.05
            except rexc.ResponseError as exc:
                # Redis refused one SSUBSCRIBE (ACL, cluster slot...): fail that call, keep the rest.
                if self._sent:
                    channel = self._sent.popleft()
                    key = self._store.key_of_channel(channel)
                    self._keys.discard(key)
                    if self._resubscribing is not None:
                        self._resubscribing.discard(channel)
                    for fut in self._waiting.pop(channel, []):
                        if not fut.done():
                            fut.set_exception(ConfigError(f"redis refused the subscription to key {key!r}: {exc}"))
                continue
            except ERRORS:
                await self._drop()
                reconnect = True
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 2.0)
                continue
            if msg is None:
                continue
            kind = msg["type"]
            if kind == "smessage":
                key = self._store.key_of_channel(msg["channel"])
                put = self._queue.put_nowait
                for data in msg["data"].split(b"\n"):  # a flush publishes a key's messages together
                    if data:
                        put(Event(key, data))
            elif kind == "ssubscribe":
                with contextlib.suppress(ValueError):
                    self._sent.remove(msg["channel"])
                for fut in self._waiting.pop(msg["channel"], []):
                    if not fut.done():
                        fut.set_result(None)
                if self._resubscribing is not None:
                    self._resubscribing.discard(msg["channel"])
                    if not self._resubscribing:
                        # Only now is every key live again: snapshots taken after this miss nothing.
                        self._resubscribing = None
                        self._queue.put_nowait(Event(None))
