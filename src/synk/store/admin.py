"""What is stored under a prefix, for operators: list it (:func:`inventory`) and delete it (:func:`purge`).

These read and delete the Redis key layout of ``synk.store.redis`` (see its
docstring): per subscription key ``K`` the hash ``P{K}:o``, per object id
``I`` the claim ``P id:{I}``, and the client message stream ``P{msgs}``
with its ``:bytes`` and ``:reader`` companions. They SCAN, so they work on
a live Redis without blocking it; on a Redis Cluster they SCAN every
primary (each name lives on one) and delete each name on the node holding it.

Names under the prefix that are not of that layout (another program's, or
another prefix's that starts with this one) are counted as ``other`` and
never deleted.

Purging under a running simulation races with it: the objects its world
holds are written again by its next flush (or fail with ``missing``).
Stop the simulation first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis

from synk.core.batch import DELETED, MOVED, PENDING
from synk.core.names import check_id, check_key
from synk.errors import ConfigError, SynkError, ValidationError
from synk.store.base import Stored
from synk.store.redis import RedisStore
from synk.store.resp import ERRORS, down
from synk.store.scripts import LOADED

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Iterator

__all__ = ["Inventory", "KeyInventory", "Purged", "inventory", "purge"]

#: SCAN and HSCAN page size: large enough to be quick, small enough that no call blocks Redis long.
_SCAN_COUNT = 1000
#: Names deleted per pipeline round trip.
_BATCH = 500
_RELEASE = LOADED["release"].body


@dataclass
class KeyInventory:
    """One subscription key's stored objects: ``objects`` live ones, and the marks of writes left half-way."""

    key: str
    objects: int = 0
    #: creates whose id claim was not yet known to have landed (hidden from clients)
    pending: int = 0
    #: objects moved out to another key, the move not yet completed there
    moved: int = 0
    #: deletes whose id was not yet known to be released
    deleted: int = 0

    @property
    def marks(self) -> int:
        """Marks of half-way writes: pending, moved-out and deleted entries."""
        return self.pending + self.moved + self.deleted


@dataclass
class Inventory:
    """Everything stored under a prefix (what ``synk inspect`` prints)."""

    prefix: str
    #: Redis servers read: 1, or the primaries of a cluster
    nodes: int = 1
    #: subscription keys, sorted by name
    keys: list[KeyInventory] = field(default_factory=list)
    #: object ids claimed (``P id:{I}``), sorted
    claims: list[str] = field(default_factory=list)
    #: claimed ids stored live in no key: a create or delete left half-way (a writer's
    #: next flush settles them), or a purge of keys whose objects another key still claims
    unplaced: list[str] = field(default_factory=list)
    #: entries in the client message stream (0 when it does not exist)
    stream_length: int = 0
    #: bytes of the messages the stream holds, as post.lua counts them
    stream_bytes: int = 0
    #: whether a simulation is reading the stream now (its flag has not expired)
    stream_reader: bool = False
    #: names under the prefix not of synk's layout: left alone by purge
    other: int = 0

    @property
    def objects(self) -> int:
        """Live objects in every key."""
        return sum(k.objects for k in self.keys)

    @property
    def empty(self) -> bool:
        """Nothing of synk's is stored under the prefix."""
        return not self.keys and not self.claims and not self.stream_length and not self.stream_bytes and not self.stream_reader


@dataclass
class Purged:
    """What :func:`purge` deleted."""

    #: subscription keys whose objects were deleted
    keys: list[str] = field(default_factory=list)
    #: objects (and marks) deleted with them
    objects: int = 0
    #: id claims released
    claims: int = 0
    #: the message stream and its companions deleted
    stream: bool = False


def _glob_escape(text: str) -> str:
    """``text`` matched literally by a SCAN MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


@dataclass
class _Names:
    """The names found under a prefix on one node, by kind."""

    objects: dict[str, bytes] = field(default_factory=dict)  # key -> its hash's name
    claims: dict[str, bytes] = field(default_factory=dict)  # id -> its claim's name
    stream: list[bytes] = field(default_factory=list)
    other: int = 0


def _valid(check: Callable[[object], object], value: str) -> bool:
    try:
        check(value)
    except ValidationError:
        return False
    return True


def _classify(prefix: str, name: bytes, into: _Names) -> None:
    # Only names synk could have written count as synk's (and may be purged):
    # the shape of the layout, and a key or id synk accepts inside it.
    text = name.decode(errors="replace")
    rest = text[len(prefix) :]
    if rest in ("{msgs}", "{msgs}:bytes", "{msgs}:reader"):
        into.stream.append(name)
    elif rest.startswith("{") and rest.endswith("}:o") and len(rest) > 4 and _valid(check_key, rest[1:-3]):
        into.objects[rest[1:-3]] = name
    elif rest.startswith("id:{") and rest.endswith("}") and len(rest) > 5 and _valid(check_id, rest[4:-1]):
        into.claims[rest[4:-1]] = name
    else:
        into.other += 1


class _Nodes:
    """A RedisStore on ``url`` and a client per primary to SCAN (one, off a cluster)."""

    def __init__(self, url: str, prefix: str) -> None:
        if not prefix:
            raise ConfigError("the prefix is empty: it would select every name in the database; give the prefix synk writes under")
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"{url} is not a redis:// URL: only a Redis store keeps anything to inspect or purge")
        self.store = RedisStore(url, prefix=prefix)
        self.clients: list[aioredis.Redis] = []

    async def __aenter__(self) -> _Nodes:
        await self.store.open()
        cluster = self.store.cluster
        if cluster is None:
            self.clients = [self.store.redis]
        else:
            # Every primary, with the URL's credentials and TLS: each holds the names of its slots.
            pool = self.store.redis.connection_pool
            for node in cluster.get_primaries():
                kwargs = {**pool.connection_kwargs, "host": node.host, "port": int(node.port)}
                node_pool = aioredis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
                self.clients.append(aioredis.Redis.from_pool(node_pool))  # it owns the pool: aclose() closes it
        return self

    async def __aexit__(self, *exc: object) -> None:
        for client in self.clients:
            if client is not self.store.redis:
                await client.aclose()
        await self.store.close()

    async def names(self) -> list[tuple[aioredis.Redis, _Names]]:
        """Every name under the prefix, per node."""
        prefix = self.store.prefix
        out = []
        for client in self.clients:
            found = _Names()
            async for name in client.scan_iter(match=_glob_escape(prefix) + "*", count=_SCAN_COUNT):
                _classify(prefix, name, found)
            out.append((client, found))
        return out


async def _entries(client: aioredis.Redis, name: bytes) -> AsyncIterator[tuple[bytes, bytes]]:
    """A hash's fields and values, a page at a time (HSCAN: a big key never blocks Redis)."""
    cursor = 0
    while True:
        reply: Any = await client.hscan(name, cursor, count=_SCAN_COUNT)
        cursor, page = reply
        for item in page.items():
            yield item
        if cursor == 0:
            return


def _parse(key: str, oid: bytes, value: bytes) -> Stored | None:
    """The stored entry, or None for a value synk did not write (counted, never trusted)."""
    try:
        return Stored.parse(key, oid.decode(errors="replace"), value)
    except ConfigError:
        return None


@contextlib.contextmanager
def _reported(url: str) -> Iterator[None]:
    """A broken connection met while reading or deleting, as synk.ConnectionError."""
    try:
        yield
    except SynkError:
        raise
    except ERRORS as exc:
        raise down(url, exc) from exc


async def inventory(url: str, prefix: str = "synk:") -> Inventory:
    """What is stored under ``prefix`` on the Redis (or Redis Cluster) at ``url``.

    Raises ConfigError for an empty prefix or a URL that is not Redis's, and
    synk.ConnectionError when Redis cannot be reached.
    """
    with _reported(url):
        return await _inventory(url, prefix)


async def _inventory(url: str, prefix: str) -> Inventory:
    async with _Nodes(url, prefix) as nodes:
        inv = Inventory(prefix, nodes=len(nodes.clients))
        live: set[str] = set()
        claims: list[str] = []
        for client, names in await nodes.names():
            inv.other += names.other
            claims.extend(names.claims)
            for key, name in names.objects.items():
                counts = KeyInventory(key)
                async for oid, value in _entries(client, name):
                    stored = _parse(key, oid, value)
                    if stored is None:
                        inv.other += 1
                    elif stored.live:
                        counts.objects += 1
                        live.add(stored.id)
                    elif stored.mark == PENDING:
                        counts.pending += 1
                    elif stored.mark == MOVED:
                        counts.moved += 1
                    elif stored.mark == DELETED:
                        counts.deleted += 1
                inv.keys.append(counts)
            for name in names.stream:
                if name.endswith(b"}"):
                    inv.stream_length = int(await client.xlen(name))
                elif name.endswith(b":bytes"):
                    inv.stream_bytes = int(await client.get(name) or 0)
                else:
                    inv.stream_reader = True
        inv.keys.sort(key=lambda k: k.key)
        inv.claims = sorted(claims)
        inv.unplaced = [oid for oid in inv.claims if oid not in live]
        return inv


async def purge(url: str, prefix: str = "synk:", keys: Iterable[str] | None = None) -> Purged:
    """Delete what is stored under ``prefix``: everything of synk's layout, or with
    ``keys`` only those subscription keys' objects, releasing their ids' claims.

    A claim is released only if the deleted entry's incarnation holds it (as
    a delete does); the claim of an object that moved out to another key
    stays with it there. Raises as :func:`inventory` does.
    """
    with _reported(url):
        return await _purge(url, prefix, None if keys is None else list(keys))


async def _purge(url: str, prefix: str, only: list[str] | None) -> Purged:
    done = Purged()
    async with _Nodes(url, prefix) as nodes:
        store = nodes.store
        commands = store.commands
        releases: list[tuple[str, str]] = []  # (id, token)
        for client, names in await nodes.names():
            wanted = names.objects if only is None else {k: n for k, n in names.objects.items() if k in only}
            for key, name in wanted.items():
                if only is not None:
                    # Claims are released one by one below, whatever node holds them.
                    async for field_, value in _entries(client, name):
                        stored = _parse(key, field_, value)
                        if stored is not None and stored.mark != MOVED:
                            releases.append((stored.id, stored.token))
                done.objects += int(await client.hlen(name))
                done.keys.append(key)
            doomed = list(wanted.values())
            if only is None:
                doomed += [*names.claims.values(), *names.stream]
                done.claims += len(names.claims)
                done.stream = done.stream or bool(names.stream)
            await _unlink(client, doomed)
        for oid, token in releases:
            # release.lua: the claim goes only if this incarnation holds it.
            released = await commands.eval(_RELEASE, 1, store.id_key(oid), token)
            done.claims += int(released) == 0
        done.keys.sort()
        return done


async def _unlink(client: aioredis.Redis, names: list[bytes]) -> None:
    """UNLINK these names (all on ``client``'s node), a batch per round trip, one name per command
    (a cluster refuses a command over names of several slots)."""
    for start in range(0, len(names), _BATCH):
        pipe = client.pipeline(transaction=False)
        for name in names[start : start + _BATCH]:
            pipe.unlink(name)
        await pipe.execute()
        await asyncio.sleep(0)  # a long purge lets the loop breathe
