"""The Redis store: objects in hashes, messages on sharded pub/sub channels.

Key layout, under a configurable prefix ``P`` (default ``synk:``), for a
subscription key ``K`` and an object id ``I``:

==================  ======  =====================================================
``P{K}:o``          hash    object id -> ``token:version`` guard, a newline, then
                            the record (the object's ``add`` message)
``P{K}:c``          channel the key's messages (SPUBLISH / SSUBSCRIBE); one
                            channel message carries one or more, joined by
                            ``\\n`` (a flush publishes one per apply.lua call)
``P id:{I}``        string  the incarnation token holding id ``I`` (claimed with
                            SET NX GET, freed by release.lua)
``P{msgs}``         stream  client messages for the simulation, appended by
                            post.lua only while a simulation reads them, at most
                            10,000 entries and 8 MiB of messages
``P{msgs}:bytes``   string  the bytes of messages the stream holds
``P{msgs}:reader``  string  set, expiring, while ``world.messages()`` reads
==================  ======  =====================================================

(``P id:{I}`` is written without the space.) A key's data
and its channel share the hash tag ``{K}``, so they live in one slot and
every script touches one slot. Scripts live in ``lua/``, one per file, are
loaded once and called by SHA; they take user strings only as KEYS and ARGV
(their calls are encoded in ``scripts.py``).

Writes bypass redis-py's command packing: a flush is encoded straight into
one RESP buffer per connection write, and sent in slices as it is encoded,
so Redis runs the first scripts while Python encodes the rest (RESP in
``resp.py``). On a Redis Cluster each call goes to the node serving its
slot, every node at once (``cluster_routing.py``); the gateway subscribes
per node (``cluster_subscriber.py``).
"""

from __future__ import annotations

import asyncio
import math
import random
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.cluster import RedisCluster
from redis.backoff import NoBackoff
from redis.retry import Retry

from synk.errors import ConfigError
from synk.errors import ConnectionError as SynkConnectionError
from synk.store.base import CONFLICT, OK, REFUSED, Store, Stored, Subscriber
from synk.store.cluster_routing import ClusterRouting, cluster_option
from synk.store.progress import Progress
from synk.store.resp import ERRORS, bulk, command, down, keyed, last_of
from synk.store.scripts import LOADED, apply_calls, claim_calls, evalsha_head, release_calls

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

    from synk.core.batch import Op
    from synk.store.resp import Call

__all__ = ["RedisStore"]

_FETCH_CHUNK = 2000
#: Bytes encoded before they are handed to the socket.
_SLICE = 64 * 1024
#: The bounds of the client message stream (post.lua): entries, and bytes of messages.
STREAM_MAX_ENTRIES = 10_000
STREAM_MAX_BYTES = 8 * 1024 * 1024
#: How long the reader's flag outlives its last refresh (ms), and how often it is refreshed (s).
_READER_TTL_MS = 10_000
_READER_REFRESH = 3.0
#: The progress limit of a batch of calls when the connection has no socket timeout.
_REPLY_TIMEOUT = 5.0


class RedisStore(Store):
    """A store for ``redis://`` URLs (redis-py asyncio for connections, hiredis parser)."""

    def __init__(self, url: str, *, prefix: str = "synk:", connect_timeout: float = 5.0) -> None:
        self.url = url
        self.prefix = prefix
        self.connect_timeout = connect_timeout
        url, self._cluster_mode = cluster_option(url)
        self._plain_url = url
        # A connection idle for a second is checked (PING) before use, so that
        # the first write after a Redis restart does not fail on a stale
        # socket; a busy simulation never pays for it.
        self.redis: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=connect_timeout, socket_keepalive=True, health_check_interval=1
        )
        # Pub/sub gets a client that never retries: redis-py would otherwise
        # reconnect and re-subscribe silently, and the gateway would never
        # learn that messages may have been missed (and re-snapshot).
        self.pubsub_client: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=connect_timeout, socket_keepalive=True, retry=Retry(NoBackoff(), 0)
        )
        #: on a Redis Cluster (found by ``open()``, or ``?cluster=yes`` in the URL): its
        #: slot map and a pool of connections per node; calls go to their slot's node
        self.cluster: RedisCluster | None = None
        #: where each call goes, on a cluster
        self.routing: ClusterRouting | None = None
        self._stream = f"{prefix}{{msgs}}"
        self.stream_max_entries = STREAM_MAX_ENTRIES
        self.stream_max_bytes = STREAM_MAX_BYTES

    @property
    def commands(self) -> Any:
        """A redis-py client for plain commands: the cluster client on a cluster (it routes by key)."""
        return self.cluster if self.cluster is not None else self.redis

    # -- names ----------------------------------------------------------------

    def objects_key(self, key: str) -> str:
        """The hash holding the objects of subscription key ``key``."""
        return f"{self.prefix}{{{key}}}:o"

    def channel(self, key: str) -> str:
        """The sharded pub/sub channel of subscription key ``key``."""
        return f"{self.prefix}{{{key}}}:c"

    def id_key(self, oid: str) -> str:
        """The registry entry of object id ``oid``."""
        return f"{self.prefix}id:{{{oid}}}"

    def key_of_channel(self, channel: bytes) -> str:
        """The subscription key of a channel name."""
        text = channel.decode()
        return text[len(self.prefix) + 1 : -3]

    # -- connection -------------------------------------------------------------

    async def open(self) -> None:
        try:
            await asyncio.wait_for(self._connect(), self.connect_timeout)
        except (ConfigError, SynkConnectionError):
            await self.close()
            raise
        except ERRORS as exc:
            await self.close()
            raise down(self.url, exc) from exc

    async def _connect(self) -> None:
        mode = self._cluster_mode
        db = int(self.redis.connection_pool.connection_kwargs.get("db") or 0)
        if mode is None:
            try:
                info = await self.redis.info("cluster")
            except rexc.ResponseError as exc:
                if "cluster mode" not in str(exc):
                    raise
                mode = True  # it refused to SELECT the URL's database: a cluster node
            else:
                mode = bool(info.get("cluster_enabled"))
        if mode and db:
            raise ConfigError(f"{self.url} names database {db}, but a redis cluster has database 0 only: end the URL with /0")
        if mode:
            self.cluster = RedisCluster.from_url(self._plain_url, socket_connect_timeout=self.connect_timeout, socket_keepalive=True)
            self.routing = ClusterRouting(self.cluster, self.url, self._run)
            await self.routing.learn()
            # Scripts are loaded on each node as its first call finds them missing (NOSCRIPT).
            return
        await self._load_scripts()

    async def _load_scripts(self) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for script in LOADED.values():
            pipe.script_load(script.body)
        await pipe.execute()

    async def close(self) -> None:
        if self.routing is not None:
            await self.routing.close()
        await self.redis.aclose()
        await self.pubsub_client.aclose()
        if self.cluster is not None:
            await self.cluster.aclose()

    async def _send(self, calls: Iterable[Call], *, durable: bool = False) -> list[Any]:
        """Send calls where their slots live; a reply each, in order.

        On one Redis, one connection (``_run``); on a cluster, each to the
        node that serves its slot, every node at once (``ClusterRouting``),
        and with ``durable`` (a flush's writes) each primary's batch is
        answered only once a replica holds it.
        """
        if self.routing is None:
            return await self._run(call for _, call in calls)
        return await self.routing.send(calls, durable=durable)

    async def _run(
        self, calls: Iterable[bytes], pool: Any = None, counts: list[int] | None = None, where: str = "", wait_ms: int = 0
    ) -> list[Any]:
        """Send calls on one connection, in slices as they come; a reply each.

        ``calls`` may be a generator that encodes as it goes: each slice is
        handed to the socket before the next is encoded. Error replies come
        back as exception objects; NOSCRIPT ones (a restarted Redis lost its
        script cache, and none of those calls ran) are retried once. Fails
        with synk.ConnectionError when Redis neither takes data nor answers
        for over the connection's socket timeout (see ``Progress``).

        ``wait_ms``: after every call (NOSCRIPT ones sent again included),
        ``WAIT 1 wait_ms`` on the same connection, which answers how many
        replicas hold everything this connection wrote; none is a
        synk.ConnectionError (the writes ran, but a failover may lose them).
        """
        if pool is None:
            pool = self.redis.connection_pool
        where = where or self.url
        try:
            conn = await pool.get_connection()
        except ERRORS as exc:
            raise down(where, exc) from exc
        try:
            await self._fresh(conn)
        except ERRORS as exc:
            await pool.release(conn)
            raise down(where, exc) from exc
        progress = Progress(conn.socket_timeout or _REPLY_TIMEOUT)
        sent: list[bytes] = []
        try:
            try:
                async with progress.guard():
                    buffer: list[bytes] = []
                    size = 0
                    first = True
                    for call in calls:
                        sent.append(call)
                        buffer.append(call)
                        size += len(call)
                        if size >= _SLICE:
                            await conn.send_packed_command(b"".join(buffer), check_health=first)
                            progress.made()
                            buffer, size, first = [], 0, False
                    if buffer:
                        await conn.send_packed_command(b"".join(buffer), check_health=first)
                        progress.made()
                    if counts is None:
                        counts = [1] * len(sent)
                    results = last_of(await self._replies(conn, sum(counts), progress), counts)
                    missing = [i for i, r in enumerate(results) if isinstance(r, rexc.NoScriptError)]
                    if missing:
                        # Loaded on this same connection: another pooled one may be stale too.
                        loads = [command(b"SCRIPT", b"LOAD", script.body.encode()) for script in LOADED.values()]
                        await conn.send_packed_command(b"".join(loads), check_health=False)
                        self._raise_errors(await self._replies(conn, len(loads), progress))
                        await conn.send_packed_command(b"".join(sent[i] for i in missing), check_health=False)
                        progress.made()
                        again = [counts[i] for i in missing]
                        for i, reply in zip(missing, last_of(await self._replies(conn, sum(again), progress), again), strict=True):
                            results[i] = reply
                    # Only if something may have been written: a batch answered all
                    # MOVED/ASK/TRYAGAIN wrote nothing, and a demoted primary (now a
                    # replica) refuses WAIT, which would hide the redirection.
                    redirected = (rexc.MovedError, rexc.AskError, rexc.TryAgainError)
                    if wait_ms and not all(isinstance(r, redirected) for r in results):
                        await conn.send_packed_command(command(b"WAIT", b"1", b"%d" % wait_ms), check_health=False)
                        progress.made()
                        [held] = await self._replies(conn, 1, progress)
                        if not isinstance(held, int) or held < 1:
                            raise SynkConnectionError(
                                f"redis at {where} ran the batch, but no replica held its writes after {wait_ms} ms"
                                f" (WAIT answered {held!r}): a failover could lose them, so their outcome is unknown"
                            )
            except ERRORS as exc:
                await conn.disconnect()
                if progress.expired:
                    raise SynkConnectionError(f"redis at {where} neither took data nor answered for over {progress.limit:g} s") from exc
                raise down(where, exc) from exc
            except BaseException:
                # Replies may still be in flight: this connection must not be reused.
                await conn.disconnect()
                raise
        finally:
            await pool.release(conn)
        return results

    @staticmethod
    async def _fresh(conn: Any) -> None:
        """Reconnect a pooled connection that the server has closed (Redis restarted, say).

        It reads as EOF, or as data nobody asked for: nothing of this batch
        has been sent on it, so sending it on a new connection is safe, and
        is no retry of a call whose outcome is unknown. (redis-py's pool
        makes the same check, but skips it when maintenance notifications
        are on, as they are by default.)
        """
        try:
            dead = conn.is_connected and await conn.can_read()
        except rexc.ConnectionError:
            dead = True
        if dead:
            await conn.disconnect()
            await conn.connect()

    @staticmethod
    async def _replies(conn: Any, count: int, progress: Progress) -> list[Any]:
        """``count`` replies, error replies as exception objects."""
        out: list[Any] = []
        append = out.append
        read = conn.read_response
        made = progress.made
        for _ in range(count):
            try:
                # No timer per reply (a flush of thousands of creates gets
                # thousands of replies): the progress guard bounds the wait.
                append(await read(timeout=math.inf))
            except rexc.ResponseError as exc:
                append(exc)
            made()
        return out

    @staticmethod
    def _raise_errors(results: list[Any]) -> list[Any]:
        for r in results:
            if isinstance(r, (rexc.ClusterDownError, rexc.MovedError, rexc.AskError, rexc.SlotNotCoveredError, rexc.TryAgainError)):
                # A cluster failing over, a slot no node serves yet, or one half-migrated
                # for longer than TRYAGAIN_FOR_S: Redis is not there for it (nothing ran).
                raise SynkConnectionError(f"redis cluster cannot serve the call now: {r}") from r
            if isinstance(r, Exception):
                raise r
        return results

    async def _retry_once(self, calls: list[Call]) -> list[Any]:
        """Calls sent again once if the connection broke; error replies raised.

        A pooled connection to a Redis that restarted fails on its first use.
        Only for calls safe to repeat (reads, and custom publishes, which are
        at least once); a flush is never repeated: its outcome is unknown.
        """
        try:
            return self._raise_errors(await self._send(calls))
        except SynkConnectionError:
            return self._raise_errors(await self._send(calls))

    # -- writes ------------------------------------------------------------------

    @staticmethod
    def _claimed(op: Op, reply: Any) -> int:
        if isinstance(reply, Exception):
            return REFUSED
        return OK if reply is None or reply == op[3].encode() else CONFLICT

    @staticmethod
    def _gather(index: list[tuple[str, int]], results: list[Any]) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for (key, count), codes in zip(index, results, strict=True):
            # A call Redis refused (out of memory, say) applied nothing.
            out.setdefault(key, []).extend([REFUSED] * count if isinstance(codes, Exception) else codes)
        return out

    async def _phase1(
        self, sweeps: dict[str, list[Op]], groups: dict[str, list[Op]], claims: list[Op]
    ) -> tuple[dict[str, list[int]], dict[str, list[int]], list[int]]:
        claiming = claim_calls(self.id_key, claims)
        swept: list[tuple[str, int]] = []
        index: list[tuple[str, int]] = []

        def calls() -> Iterable[Call]:
            yield from apply_calls(self.objects_key, self.channel, sweeps, swept)
            yield from apply_calls(self.objects_key, self.channel, groups, index)
            yield from claiming

        results = await self._send(calls(), durable=True)
        n, m = len(swept), len(swept) + len(index)
        claimed = [self._claimed(op, r) for op, r in zip(claims, results[m:], strict=True)]
        return self._gather(swept, results[:n]), self._gather(index, results[n:m]), claimed

    async def _phase2(self, groups: dict[str, list[Op]], releases: list[Op]) -> tuple[dict[str, list[int]], list[int]]:
        index: list[tuple[str, int]] = []

        def calls() -> Iterable[Call]:
            yield from apply_calls(self.objects_key, self.channel, groups, index)
            yield from release_calls(self.id_key, releases)

        results = await self._send(calls(), durable=True)
        n = len(index)
        return self._gather(index, results[:n]), [REFUSED if isinstance(r, Exception) else int(r) for r in results[n:]]

    async def claims(self, ids: list[str]) -> dict[str, str | None]:
        if not ids:
            return {}
        # One GET per id: ids hash to slots of their own, so no MGET across them.
        replies = await self._retry_once([keyed(b"GET", self.id_key(oid).encode()) for oid in ids])
        return {oid: None if r is None else r.decode() for oid, r in zip(ids, replies, strict=True)}

    # -- reads --------------------------------------------------------------------

    async def snapshot(self, key: str, *, marks: bool = False) -> list[Stored]:
        [flat] = await self._retry_once([keyed(b"HGETALL", self.objects_key(key).encode())])
        # RESP3 answers HGETALL with a map, RESP2 with a flat list.
        pairs = flat.items() if isinstance(flat, dict) else zip(flat[::2], flat[1::2], strict=True)
        found = [Stored.parse(key, oid.decode(), value) for oid, value in pairs]
        return found if marks else [s for s in found if s.live]

    async def fetch(self, key: str, ids: list[str]) -> dict[str, Stored]:
        name = self.objects_key(key).encode()
        chunks = [ids[i : i + _FETCH_CHUNK] for i in range(0, len(ids), _FETCH_CHUNK)]
        results = await self._retry_once([keyed(b"HMGET", name, *(i.encode() for i in chunk)) for chunk in chunks])
        out: dict[str, Stored] = {}
        for chunk, values in zip(chunks, results, strict=True):
            for oid, value in zip(chunk, values, strict=True):
                if value is not None:
                    out[oid] = Stored.parse(key, oid, value)
        return out

    # -- messages -----------------------------------------------------------------

    async def publish(self, key: str, data: bytes) -> None:
        # Sent again once if the connection broke: a pooled connection to a
        # restarted Redis fails on first use, before anything was published.
        await self._retry_once([keyed(b"SPUBLISH", self.channel(key).encode(), data)])

    def subscriber(self) -> Subscriber:
        if self.cluster is not None:
            from synk.store.cluster_subscriber import ClusterSubscriber

            return ClusterSubscriber(self, self.cluster)
        from synk.store.redis_subscriber import RedisSubscriber

        return RedisSubscriber(self)

    async def post(self, data: bytes) -> bool:
        keys = [self._stream.encode(), f"{self._stream}:bytes".encode(), f"{self._stream}:reader".encode()]
        call = evalsha_head("post", keys, 3) + bulk(data) + bulk(b"%d" % self.stream_max_entries) + bulk(b"%d" % self.stream_max_bytes)
        # Never sent twice: a post whose connection broke mid-reply may have
        # been appended, and a second would hand the simulation the message
        # twice (a pooled connection found closed before sending is replaced
        # by ``_run`` itself). Durable, as a flush's writes are: on a cluster
        # primary with a replica it is acknowledged only once a replica holds
        # it, so a failover right after cannot lose a message the client was
        # told had gone through.
        [appended] = self._raise_errors(await self._send([(keys[0], call)], durable=True))
        return bool(appended)

    async def read_posts(self) -> AsyncIterator[bytes]:
        # Read from an entry id, never from "$" after the first step: "$" means
        # "what is added once this XREAD reaches Redis", so a message appended
        # between one XREAD's timeout and the next (a busy loop, a slow link)
        # was acknowledged to its gateway and then never read.
        last: str | bytes | None = None
        delay = 0.05
        flag = f"{self._stream}:reader"
        refreshed = -math.inf
        loop = asyncio.get_running_loop()
        while True:
            try:
                if last is None:
                    # From now on: after the newest entry, or from the start of an empty
                    # stream. Read before the flag is set: a post accepted once it is
                    # set gets a later id, so none falls between the two.
                    newest: Any = await self.commands.xrevrange(self._stream, count=1)
                    last = newest[0][0] if newest else b"0-0"
                if loop.time() - refreshed > _READER_REFRESH:
                    # Clients' messages are kept only while someone reads them.
                    await self.commands.set(flag, b"1", px=_READER_TTL_MS)
                    refreshed = loop.time()
                replies: Any = await self.commands.xread({self._stream: last}, block=1000, count=500)
                delay = 0.05
            except ERRORS:
                refreshed = -math.inf
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 2.0)
                continue
            for _stream, entries in replies or ():
                for entry_id, fields in entries:
                    last = entry_id
                    data: bytes = fields[b"m"]
                    yield data
