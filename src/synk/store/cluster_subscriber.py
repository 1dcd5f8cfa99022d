"""The Redis Cluster store's subscriber: one sharded pub/sub connection per node.

A key's channel lives in the slot of its hash tag, served by one primary, so
the keys asked for are split by node, each node's on a ``RedisSubscriber``
of its own (one connection per node that owns followed slots, not one per
key); their events go into one queue. When a node stops answering (its
primary failed over) or unsubscribes channels on its own (their slot moved
away), the slot map is learned again and the keys that moved are
subscribed where they live now; then a gap event of those keys only
(``Event(None, gap=...)``) tells the consumer that their messages may have
been missed: it re-snapshots them, and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from synk.store.base import Event, Subscriber, queued_events, take_ready
from synk.store.redis_subscriber import RedisSubscriber
from synk.store.resp import ERRORS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

    from redis.asyncio.cluster import RedisCluster

    from synk.store.redis import RedisStore

__all__ = ["ClusterSubscriber"]

log = logging.getLogger("synk.store")

#: Seconds between two looks at the nodes while one of them is down.
_WATCH = 0.5


class ClusterSubscriber(Subscriber):
    """The keys asked for, subscribed on the node that serves each one's slot."""

    def __init__(self, store: RedisStore, cluster: RedisCluster) -> None:
        self._store = store
        self._cluster = cluster
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()
        #: node name -> its subscriber
        self._nodes: dict[str, RedisSubscriber] = {}
        #: key -> the node it is subscribed on
        self._home: dict[str, str] = {}
        self._lost = asyncio.Event()
        self._lock = asyncio.Lock()
        self._watch: asyncio.Task[None] | None = None
        self._closed = False

    def _node_of(self, key: str) -> str:
        node = self._cluster.nodes_manager.get_node_from_slot(key_slot(self._store.channel(key).encode()))
        return str(node.name)

    def _subscriber(self, name: str) -> RedisSubscriber:
        sub = self._nodes.get(name)
        if sub is None:
            host, _, port = name.rpartition(":")
            parts = urlsplit(self._store._plain_url)
            auth = parts.netloc.rpartition("@")[0]
            url = urlunsplit(parts._replace(netloc=f"{auth}@{host}:{port}" if auth else f"{host}:{port}"))
            client = aioredis.Redis.from_url(
                url, socket_connect_timeout=self._store.connect_timeout, socket_keepalive=True, retry=Retry(NoBackoff(), 0)
            )
            sub = self._nodes[name] = RedisSubscriber(self._store, client, self._queue, self._on_lost, per_slot=True)
        return sub

    def _on_lost(self, _channel: bytes) -> None:
        self._lost.set()

    def _by_node(self, keys: Iterable[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for key in keys:
            out.setdefault(self._node_of(key), []).append(key)
        return out

    async def subscribe(self, keys: Iterable[str]) -> None:
        new = [k for k in dict.fromkeys(keys) if k not in self._home]
        if not new:
            return
        if self._watch is None:
            self._watch = asyncio.create_task(self._watching())
        groups = self._by_node(new)
        for name, ks in groups.items():
            for key in ks:
                self._home[key] = name
        await asyncio.gather(*(self._subscriber(name).subscribe(ks) for name, ks in groups.items()))

    async def unsubscribe(self, keys: Iterable[str]) -> None:
        groups: dict[str, list[str]] = {}
        for key in dict.fromkeys(keys):
            name = self._home.pop(key, None)
            if name is not None:
                groups.setdefault(name, []).append(key)
        # A node may be gone from _nodes (a re-home emptied it): its keys are no longer subscribed there.
        await asyncio.gather(*(sub.unsubscribe(ks) for name, ks in groups.items() if (sub := self._nodes.get(name)) is not None))

    async def _watching(self) -> None:
        """Re-home keys whose node went down or dropped them, until closed."""
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), _WATCH)
            lost = self._lost.is_set()
            down = any(not sub.connected and sub.keys() for sub in self._nodes.values())
            if not (lost or down):
                continue
            # Cleared before, not after: a key lost again while re-homing (its new
            # node refused it, the map being stale) sets it anew, for the next round.
            self._lost.clear()
            try:
                await self._rehome()
            except (*ERRORS, rexc.RedisClusterException) as exc:
                self._lost.set()
                log.warning("synk cluster subscriber cannot learn the slot map yet: %s", exc)
                await asyncio.sleep(_WATCH)  # the retry's pace while the cluster settles
            except Exception:
                self._lost.set()
                log.exception("synk cluster subscriber failed to re-home its keys")
                await asyncio.sleep(_WATCH)

    async def _rehome(self) -> None:
        async with self._lock:
            await self._cluster.nodes_manager.initialize()
            moved: dict[str, list[str]] = {}
            for key, name in list(self._home.items()):
                now = self._node_of(key)
                sub = self._nodes.get(name)
                # A key its node refused (MOVED, CLUSTERDOWN) is subscribed
                # again even where the map still puts it: until it settles.
                if now != name or sub is None or not sub.has(key):
                    moved.setdefault(name, []).append(key)
                    self._home[key] = now
            if not moved:
                return
            keys = [k for ks in moved.values() for k in ks]
            log.warning("synk cluster subscriber: %d keys moved to other nodes; subscribing them there", len(keys))
            groups = self._by_node(keys)
            for name in groups:
                self._subscriber(name)  # before any await: an unsubscribe meanwhile finds the node's subscriber
            await asyncio.gather(*(sub.unsubscribe(ks) for name, ks in moved.items() if (sub := self._nodes.get(name)) is not None))
            # Keys the consumer left while this awaited are not subscribed again.
            groups = {name: [k for k in ks if self._home.get(k) == name] for name, ks in groups.items()}
            await asyncio.gather(*(self._subscriber(name).subscribe(ks) for name, ks in groups.items() if ks))
            left = {name: [k for k in ks if self._home.get(k) != name] for name, ks in groups.items()}
            await asyncio.gather(*(self._subscriber(name).unsubscribe(ks) for name, ks in left.items() if ks))
            for name, sub in list(self._nodes.items()):
                if not sub.keys():  # a node with nothing followed: let its connection go
                    del self._nodes[name]
                    await sub.close()
            # Messages of the moved keys may have been missed meanwhile.
            self._queue.put_nowait(Event(None, gap=frozenset(keys)))

    def __aiter__(self) -> AsyncIterator[Event]:
        return queued_events(self._queue)

    def ready(self, most: int) -> list[Event]:
        return take_ready(self._queue, most)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch
        for sub in self._nodes.values():
            await sub.close()
        self._nodes.clear()
        self._queue.put_nowait(None)
