"""The Redis store's subscriber: one sharded pub/sub connection, reconnecting on its own."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
from typing import TYPE_CHECKING, Any

from redis import exceptions as rexc
from redis.crc import key_slot

from synk.errors import ConfigError
from synk.store.base import Event, Subscriber, queued_events, take_ready
from synk.store.resp import ERRORS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable

    from synk.store.redis import RedisStore

__all__ = ["RedisSubscriber"]

log = logging.getLogger("synk.store")

#: What sending on the pub/sub connection may raise while it breaks or is
#: closed under us (redis-py then finds its writer gone: AttributeError).
#: Either way the reader task reconnects and subscribes ``_keys`` afresh.
_SEND_ERRORS = (*ERRORS, AttributeError)

#: Channels named in one SSUBSCRIBE or SUNSUBSCRIBE at most.
CHUNK = 500

#: Events queued for the consumer at most: past it they are dropped for an
#: ``Event(None)`` (re-snapshot every key), so a stalled consumer costs
#: bounded memory and still converges.
MAX_QUEUE = 100_000


class RedisSubscriber(Subscriber):
    """One pub/sub connection for a changing set of keys, reconnecting on its own.

    The set of keys asked for (``_keys``) is the truth; what the connection
    is subscribed to is reconciled to it by :meth:`_reconcile`, which sends
    everything that changed since it last ran in a few commands. So an
    unsubscribe that overtakes its key's subscribe cancels it instead of
    being overtaken, and a flood of changes costs a few round trips, not one
    per key.

    A reader task owns the connection: it resolves ``subscribe()`` calls once
    Redis confirms them (so a snapshot taken afterwards misses nothing), and
    after a reconnect re-subscribes every key and emits a gap of its keys
    (``Event(None, gap=...)``).
    """

    def __init__(
        self,
        store: RedisStore,
        client: Any = None,
        queue: asyncio.Queue[Event | None] | None = None,
        on_lost: Callable[[bytes], None] | None = None,
        *,
        per_slot: bool = False,
    ) -> None:
        """``client``: the Redis to subscribe on (default ``store.pubsub_client``); ``queue``:
        where events go (a cluster subscriber merges its nodes'); ``on_lost``: called with a
        channel Redis unsubscribed on its own (its slot moved to another node); ``per_slot``:
        one command per slot from the start (a cluster node refuses channels of several
        slots in one SSUBSCRIBE or SUNSUBSCRIBE with CROSSSLOT)."""
        self._store = store
        self._client = client if client is not None else store.pubsub_client
        self._on_lost = on_lost
        #: the keys asked for
        self._keys: set[str] = set()
        self._waiting: dict[bytes, list[asyncio.Future[None]]] = {}
        self._queue: asyncio.Queue[Event | None] = queue if queue is not None else asyncio.Queue()
        #: a shared queue is ended by its owner, not by closing one of its feeders
        self._owns_queue = queue is None
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closed = False
        #: held while sending subscription commands: they go out in the order decided
        self._lock = asyncio.Lock()
        #: channels the connection is subscribed to, or has been asked to be
        self._asked: set[bytes] = set()
        #: channel -> SSUBSCRIBEs of it sent and not yet confirmed
        self._unconfirmed: dict[bytes, int] = {}
        #: channel -> SUNSUBSCRIBEs of it sent and not yet answered (others are Redis's own)
        self._leaving: dict[bytes, int] = {}
        #: changes to send at the next reconcile
        self._to_add: set[bytes] = set()
        self._to_remove: set[bytes] = set()
        #: channels whose batch was refused: each goes in a command of its own next
        self._alone: set[bytes] = set()
        #: one SSUBSCRIBE or SUNSUBSCRIBE per slot (a cluster refuses channels of several slots:
        #: CROSSSLOT); learned from a refusal on a server that did not say it was a cluster
        self._per_slot = per_slot
        #: channels re-subscribed after a reconnect and not yet confirmed
        self._resubscribing: set[bytes] | None = None
        #: the channels of each SSUBSCRIBE sent and not yet wholly answered, in order
        self._sent: collections.deque[list[bytes]] = collections.deque()
        #: times the queue passed MAX_QUEUE and was dropped
        self.overflows = 0

    async def subscribe(self, keys: Iterable[str]) -> None:
        new = [k for k in dict.fromkeys(keys) if k not in self._keys]
        if not new:
            return
        self._keys.update(new)
        loop = asyncio.get_running_loop()
        futures = []
        for key in new:
            channel = self._store.channel(key).encode()
            if channel in self._to_remove:
                self._to_remove.discard(channel)  # still subscribed: cancel the pending SUNSUBSCRIBE
            elif channel not in self._asked:
                self._to_add.add(channel)
            if channel in self._asked and not self._unconfirmed.get(channel):
                continue  # confirmed already, and not left since
            fut: asyncio.Future[None] = loop.create_future()
            self._waiting.setdefault(channel, []).append(fut)
            futures.append(fut)
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        self._wake.set()
        await self._reconcile()
        await asyncio.gather(*futures)

    async def unsubscribe(self, keys: Iterable[str]) -> None:
        gone = [k for k in dict.fromkeys(keys) if k in self._keys]
        if not gone:
            return
        self._keys.difference_update(gone)
        for key in gone:
            channel = self._store.channel(key).encode()
            self._to_add.discard(channel)  # not sent yet: it never will be
            if channel in self._asked:
                self._to_remove.add(channel)
            for fut in self._waiting.pop(channel, []):
                if not fut.done():
                    fut.set_result(None)
        await self._reconcile()

    def _batches(self, channels: set[bytes]) -> list[list[bytes]]:
        """``channels`` in commands of at most CHUNK channels, one slot per command if need be."""
        alone = channels & self._alone
        self._alone -= alone
        out: list[list[bytes]] = [[c] for c in sorted(alone)]
        groups: dict[int, list[bytes]] = collections.defaultdict(list)
        for channel in sorted(channels - alone):
            groups[key_slot(channel) if self._per_slot else 0].append(channel)
        for group in groups.values():
            out.extend(group[i : i + CHUNK] for i in range(0, len(group), CHUNK))
        return out

    async def _reconcile(self) -> None:
        """Send what changed in ``_keys`` since the last call, on the current connection."""
        async with self._lock:
            ps = self._pubsub
            if ps is None or (not self._to_add and not self._to_remove):
                return  # nothing to do, or the next connection subscribes ``_keys`` whole
            add, self._to_add = self._to_add, set()
            remove, self._to_remove = self._to_remove, set()
            self._asked -= remove
            self._asked |= add
            with contextlib.suppress(*_SEND_ERRORS):
                for batch in self._batches(remove):
                    for c in batch:
                        self._leaving[c] = self._leaving.get(c, 0) + 1
                    await ps.sunsubscribe(*(c.decode() for c in batch))
                for batch in self._batches(add):
                    self._sent.append(batch)
                    for c in batch:
                        self._unconfirmed[c] = self._unconfirmed.get(c, 0) + 1
                    await ps.ssubscribe(*(c.decode() for c in batch))

    def __aiter__(self) -> AsyncIterator[Event]:
        return queued_events(self._queue)

    def ready(self, most: int) -> list[Event]:
        return take_ready(self._queue, most)

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
        if self._owns_queue:
            self._queue.put_nowait(None)

    async def _drop(self) -> None:
        ps, self._pubsub = self._pubsub, None
        if ps is not None:
            with contextlib.suppress(*ERRORS, RuntimeError):
                await ps.aclose()

    async def _connect(self) -> None:
        ps = self._client.pubsub()
        async with self._lock:
            self._sent.clear()
            self._unconfirmed.clear()
            self._leaving.clear()
            self._to_add.clear()
            self._to_remove.clear()
            self._asked = {self._store.channel(k).encode() for k in self._keys}
            for batch in self._batches(self._asked):
                self._sent.append(batch)
                for c in batch:
                    self._unconfirmed[c] = 1
                await ps.ssubscribe(*(c.decode() for c in batch))
            self._pubsub = ps

    def _refused(self, exc: rexc.ResponseError) -> bool:
        """Redis refused the oldest SSUBSCRIBE not yet answered; True if channels must be sent again."""
        if not self._sent:
            return False
        batch = [c for c in self._sent.popleft() if self._unconfirmed.get(c)]
        for c in batch:
            n = self._unconfirmed.pop(c) - 1
            if n:
                self._unconfirmed[c] = n
        retry = [c for c in batch if c in self._asked and not self._unconfirmed.get(c)]
        if len(batch) > 1:
            # One channel of the command may be the cause (an ACL, or slots on
            # a cluster): send them again, by slot or one by one.
            if "CROSSSLOT" in str(exc) and not self._per_slot:
                self._per_slot = True
            else:
                self._alone.update(retry)
            self._asked.difference_update(retry)
            self._to_add.update(retry)
            return bool(retry)
        if self._on_lost is not None and isinstance(exc, (rexc.MovedError, rexc.AskError, rexc.ClusterDownError)):
            # A cluster node that no longer serves the slot (or not yet: a
            # failover is under way). Not this key's fault: the cluster
            # subscriber re-homes it once the slot map settles, and its
            # consumer re-snapshots it then.
            for channel in retry:
                self._keys.discard(self._store.key_of_channel(channel))
                self._asked.discard(channel)
                if self._resubscribing is not None:
                    self._resubscribing.discard(channel)
                for fut in self._waiting.pop(channel, []):
                    if not fut.done():
                        fut.set_result(None)
                self._on_lost(channel)
            return False
        for channel in retry:
            # Refused on its own (an ACL, say): fail that call, keep the rest.
            key = self._store.key_of_channel(channel)
            self._keys.discard(key)
            self._asked.discard(channel)
            if self._resubscribing is not None:
                self._resubscribing.discard(channel)
            for fut in self._waiting.pop(channel, []):
                if not fut.done():
                    fut.set_exception(ConfigError(f"redis refused the subscription to key {key!r}: {exc}"))
        return False

    def _overflow(self) -> None:
        """The consumer fell MAX_QUEUE events behind: drop them for one ``Event(None)``."""
        while not self._queue.empty():
            self._queue.get_nowait()
        self.overflows += 1
        log.warning("synk redis subscriber dropped over %d queued events; its consumer re-snapshots", MAX_QUEUE)
        self._queue.put_nowait(Event(None))

    def _gap(self) -> Event:
        """After a reconnect: this connection's keys may have missed messages (not other connections')."""
        return Event(None, gap=frozenset(self._keys))

    def _confirmed(self, channel: bytes) -> None:
        if self._sent and channel in self._sent[0]:
            head = self._sent[0]
            head.remove(channel)
            if not head:
                self._sent.popleft()
        n = self._unconfirmed.get(channel, 0) - 1
        if n > 0:
            self._unconfirmed[channel] = n
            return  # a later SSUBSCRIBE of it is still on its way (it was left and asked again)
        self._unconfirmed.pop(channel, None)
        if channel not in self._asked:
            return
        for fut in self._waiting.pop(channel, []):
            if not fut.done():
                fut.set_result(None)
        if self._resubscribing is not None:
            self._resubscribing.discard(channel)
            if not self._resubscribing:
                # Only now is every key live again: snapshots taken after this miss nothing.
                self._resubscribing = None
                self._queue.put_nowait(self._gap())

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
                        self._queue.put_nowait(self._gap())
                    reconnect = False
                if not self._keys and not self._asked:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                msg = await self._pubsub.get_message(ignore_subscribe_messages=False, timeout=1.0)
                delay = 0.05
            except rexc.ResponseError as exc:
                if self._refused(exc):
                    await self._reconcile()
                continue
            except ERRORS:
                await self._drop()
                reconnect = True
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 2.0)
                continue
            except Exception:
                # Anything else (a redis-py bug, a reply it cannot parse): this
                # task is the only reader, and if it died every key would go
                # silent for good. Start over on a new connection instead.
                log.exception("synk redis subscriber failed; reconnecting")
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
                if self._queue.qsize() > MAX_QUEUE:
                    self._overflow()
            elif kind == "ssubscribe":
                self._confirmed(msg["channel"])
            elif kind == "sunsubscribe":
                channel = msg["channel"]
                left = self._leaving.get(channel, 0)
                if left > 1:
                    self._leaving[channel] = left - 1
                elif left == 1:
                    del self._leaving[channel]
                elif channel in self._asked:
                    # Not asked for: Redis dropped it (its slot moved to another node).
                    self._asked.discard(channel)
                    if self._on_lost is not None:
                        # Its key is no longer followed here: the cluster subscriber
                        # subscribes it again where the slot map says, whatever map
                        # it learns (one that has not heard of the move yet sends it
                        # back here, to be refused with MOVED and tried again).
                        self._keys.discard(self._store.key_of_channel(channel))
                        self._on_lost(channel)

    @property
    def connected(self) -> bool:
        """Whether its connection is up (a cluster subscriber re-homes the keys of one that is not)."""
        return self._pubsub is not None

    def keys(self) -> set[str]:
        """The keys asked for."""
        return set(self._keys)

    def has(self, key: str) -> bool:
        """Whether ``key`` is asked for (False once its node refused it as another's)."""
        return key in self._keys
