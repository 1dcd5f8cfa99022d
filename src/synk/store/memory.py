"""The embedded store: everything in this process, no server.

It follows the same rules as the Redis store (guards, phases, messages),
so a simulation written against one runs on the other unchanged.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from synk.core.batch import apply_op
from synk.store.base import CONFLICT, MISSING, OK, Event, Store, Stored, Subscriber, take_ready

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

    from synk.core.batch import Op

__all__ = ["MemoryStore"]

_CLOSED = Event(None, b"closed")
#: Client messages kept for a reader that has not read them yet (the Redis stream keeps as many).
_POSTS_KEPT = 10_000


class _MemorySubscriber(Subscriber):
    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self._keys: set[str] = set()
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._closed = False

    async def subscribe(self, keys: Iterable[str]) -> None:
        for key in keys:
            if key not in self._keys:
                self._keys.add(key)
                self._store._subs.setdefault(key, set()).add(self)

    async def unsubscribe(self, keys: Iterable[str]) -> None:
        for key in keys:
            if key in self._keys:
                self._keys.discard(key)
                subs = self._store._subs.get(key)
                if subs is not None:
                    subs.discard(self)
                    if not subs:
                        del self._store._subs[key]

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            event = await self._queue.get()
            if event is _CLOSED:
                return
            yield event

    def ready(self, most: int) -> list[Event]:
        return take_ready(self._queue, most, _CLOSED)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self.unsubscribe(list(self._keys))
            self._queue.put_nowait(_CLOSED)


class MemoryStore(Store):
    """An in-process store for ``memory://`` URLs."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        #: per key, object id -> stored value (guard line, then record), as in Redis
        self._values: dict[str, dict[str, bytes]] = {}
        self._ids: dict[str, str] = {}
        self._subs: dict[str, set[_MemorySubscriber]] = {}
        self._readers: set[asyncio.Queue[bytes]] = set()

    async def open(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to release; subscribers end when closed by their owners."""

    async def _phase1(
        self, sweeps: dict[str, list[Op]], groups: dict[str, list[Op]], claims: list[Op]
    ) -> tuple[dict[str, list[int]], dict[str, list[int]], list[int]]:
        swept = self._key_ops(sweeps)
        return swept, self._key_ops(groups), self._claim(claims)

    async def _phase2(self, groups: dict[str, list[Op]], releases: list[Op]) -> tuple[dict[str, list[int]], list[int]]:
        return self._key_ops(groups), self._release(releases)

    async def claims(self, ids: list[str]) -> dict[str, str | None]:
        return {oid: self._ids.get(oid) for oid in ids}

    def _claim(self, ops: list[Op]) -> list[int]:
        out = []
        for op in ops:
            oid, token = op[2], op[3]
            cur = self._ids.get(oid)
            if cur is None or cur == token:
                self._ids[oid] = token
                out.append(OK)
            else:
                out.append(CONFLICT)
        return out

    def _key_ops(self, groups: dict[str, list[Op]]) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for key, ops in groups.items():
            values = self._values.setdefault(key, {})
            codes = []
            messages = []
            for op in ops:
                code, value, message = apply_op(values.get(op[2]), key, op)
                if code == OK:
                    if value is None:
                        del values[op[2]]
                    else:
                        values[op[2]] = value
                    if message:
                        messages.append(message)
                codes.append(code)
            if not values:
                del self._values[key]
            for message in messages:
                self._deliver(key, message)
            out[key] = codes
        return out

    def _release(self, ops: list[Op]) -> list[int]:
        out = []
        for op in ops:
            if self._ids.get(op[2]) == op[3]:
                del self._ids[op[2]]
                out.append(OK)
            else:
                out.append(MISSING)
        return out

    async def snapshot(self, key: str, *, marks: bool = False) -> list[Stored]:
        found = [Stored.parse(key, oid, value) for oid, value in self._values.get(key, {}).items()]
        return found if marks else [s for s in found if s.live]

    async def fetch(self, key: str, ids: list[str]) -> dict[str, Stored]:
        values = self._values.get(key, {})
        return {oid: Stored.parse(key, oid, values[oid]) for oid in ids if oid in values}

    def _deliver(self, key: str, data: bytes) -> None:
        for sub in self._subs.get(key, ()):
            sub._queue.put_nowait(Event(key, data))

    async def publish(self, key: str, data: bytes) -> None:
        self._deliver(key, data)

    def subscriber(self) -> Subscriber:
        return _MemorySubscriber(self)

    async def post(self, data: bytes) -> bool:
        for queue in self._readers:
            if queue.full():  # a slow reader loses the oldest, as the Redis stream's bound does
                queue.get_nowait()
            queue.put_nowait(data)
        return bool(self._readers)

    async def read_posts(self) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[bytes] = asyncio.Queue(_POSTS_KEPT)
        self._readers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._readers.discard(queue)
