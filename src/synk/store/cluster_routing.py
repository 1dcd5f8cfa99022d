"""Where a Redis Cluster store's calls go: each to the node that serves its slot.

redis-py's cluster client keeps the slot map (node discovery, refreshing it);
synk sends its own RESP calls over that client's node connections, because a
flush is many thousand script calls and redis-py's cluster pipeline packs and
routes them one by one. A batch's calls are grouped by node and every node's
group goes at once: a batch takes one round trip whatever the number of
nodes. Redirections are followed only where Redis says the call did not run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis import exceptions as rexc
from redis.crc import key_slot

from synk.errors import ConfigError
from synk.errors import ConnectionError as SynkConnectionError
from synk.store.resp import ASKING, ERRORS, command, down

if TYPE_CHECKING:
    from collections.abc import Iterable

    from redis.asyncio.cluster import ClusterNode, RedisCluster

    from synk.store.resp import Call

__all__ = ["ClusterRouting", "cluster_option"]

log = logging.getLogger("synk")

#: Seconds before a call answered TRYAGAIN (its slot half-migrated) is first
#: sent again; the pause doubles each time, up to ``TRYAGAIN_MAX_S``.
TRYAGAIN_S = 0.02
TRYAGAIN_MAX_S = 0.2
#: Seconds a call answered TRYAGAIN keeps being sent again before it is given
#: up. A bound in time, not in tries: TRYAGAIN lasts as long as the slot's
#: migration (a script whose keys are partly moved, or partly absent, gets it
#: until the slot is handed over), and a slot of many keys, or one large
#: stream, takes a while to MIGRATE.
TRYAGAIN_FOR_S = 5.0
#: Times a cluster call redirected (MOVED, ASK) is sent again before it is given up.
REDIRECTS = 10
#: Milliseconds a write batch waits, on a primary that has replicas, for one
#: of them to hold its writes (WAIT). Redis Cluster replicates asynchronously:
#: without it, a primary killed just after answering takes acknowledged writes
#: with it, and the replica promoted in its place never had them. On loopback
#: a replica acknowledges in well under a millisecond; the bound only matters
#: when the replica is gone, until the cluster marks it failed.
WAIT_MS = 1000
#: Seconds between two readings of which primaries have replicas (CLUSTER NODES).
REPLICAS_EVERY_S = 5.0
_BOOLEANS = {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}


def cluster_option(url: str) -> tuple[str, bool | None]:
    """The URL without synk's ``cluster`` option, and the option (None: find out)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    given = [v for k, v in query if k == "cluster"]
    if not given:
        return url, None
    value = given[-1].lower()
    if value not in _BOOLEANS:
        raise ConfigError(f"cluster={given[-1]!r} in {url!r}: give yes or no")
    rest = urlencode([(k, v) for k, v in query if k != "cluster"])
    return urlunsplit(parts._replace(query=rest)), _BOOLEANS[value]


def replicated_primaries(nodes: str) -> frozenset[str]:
    """The names of the primaries with a live replica, from a CLUSTER NODES reply.

    A line is ``id ip:port@cport[,hostname[,aux=value...]] flags master ...``
    (the Redis manual's CLUSTER NODES page). A node is named by its address
    or, with ``cluster-preferred-endpoint-type hostname``, by its host name:
    the slot map's names are one or the other, so both are given.
    """
    rows = [line.split() for line in nodes.splitlines()]
    rows = [r for r in rows if len(r) >= 4]
    names: dict[str, list[str]] = {}
    for row in rows:
        address, _, extra = row[1].partition(",")
        address = address.split("@", 1)[0]
        host = extra.split(",", 1)[0]
        port = address.rsplit(":", 1)[-1]
        names[row[0]] = [address] + ([f"{host}:{port}"] if host and "=" not in host else [])
    return frozenset(name for row in rows if "slave" in row[2] and "fail" not in row[2] and row[3] in names for name in names[row[3]])


class Runner(Protocol):
    """Sends calls on one connection of ``pool`` and returns a reply each (the store's ``_run``)."""

    async def __call__(
        self, calls: Iterable[bytes], pool: Any = None, counts: list[int] | None = None, where: str = "", wait_ms: int = 0
    ) -> list[Any]: ...


class NodePool:
    """A cluster node's connections, taken and given back as a connection pool's are."""

    def __init__(self, node: ClusterNode) -> None:
        self.node = node

    async def get_connection(self) -> Any:
        """A connected connection to the node."""
        conn = self.node.acquire_connection()
        try:
            await conn.connect()  # type: ignore[no-untyped-call]
        except BaseException:
            await conn.disconnect()
            self.node.release(conn)
            raise
        return conn

    async def release(self, conn: Any) -> None:
        """Give ``conn`` back."""
        self.node.release(conn)


class ClusterRouting:
    """Sends keyed calls to the nodes that serve their slots, all nodes at once."""

    def __init__(self, cluster: RedisCluster, url: str, run: Runner) -> None:
        self.cluster = cluster
        self.url = url
        self._run = run
        #: a node failed last time: it may have failed over, so learn the slot map first
        self.stale = False
        #: the names (host:port) of the primaries that have a replica: a write
        #: batch sent to one of them ends with WAIT (see ``send``)
        self.replicated: frozenset[str] = frozenset()
        self._replicas_at = 0.0
        self._refresh: asyncio.Task[None] | None = None

    async def learn(self) -> None:
        """Learn the slot map again (a node failed, or said a slot moved), and which primaries have replicas."""
        try:
            await self.cluster.nodes_manager.initialize()
            await self._set_up_client()
            await self._learn_replicas_or_warn()
        except ERRORS as exc:
            raise down(self.url, exc) from exc
        except rexc.RedisClusterException as exc:
            raise SynkConnectionError(f"redis cluster at {self.url} has no usable slot map: {exc}") from exc
        self.stale = False

    def _url_node(self) -> ClusterNode | None:
        parts = urlsplit(self.url)
        return self.cluster.get_node(parts.hostname or "localhost", parts.port or 6379)

    async def _set_up_client(self) -> None:
        """Set redis-py's client up (its command table) through the node the URL names.

        Left to itself, its first call sets it up through the first primary
        of the map it learns, which while a failover is under way may be the
        dead one: ``synk serve`` started then failed at once. The URL's node
        has just answered. (This reaches into the client's ``_initialize``
        flag; should a redis-py release drop it, the client sets itself up
        as before.)
        """
        cluster = self.cluster
        node = self._url_node()
        if node is None or not getattr(cluster, "_initialize", False):
            return
        await cluster.commands_parser.initialize(node)
        cluster._initialize = False

    async def _cluster_nodes(self) -> str:
        """CLUSTER NODES, from the first node that answers (the URL's first).

        Asked of each node straight, not through redis-py's client: its first
        call sets the client up through the first primary of the map it
        learned, which while a failover is under way may be the dead one
        (``synk serve`` started then failed at once).
        """
        first = self._url_node()
        nodes = ([first] if first is not None else []) + [n for n in self.cluster.get_nodes() if n is not first]
        failure: Exception | None = None
        for node in nodes:
            try:
                [reply] = await self._run(
                    [command(b"CLUSTER", b"NODES")], NodePool(node), where=f"{node.name} (a node of the cluster at {self.url})"
                )
            except SynkConnectionError as exc:
                failure = exc
                continue
            if isinstance(reply, Exception):
                failure = reply  # refused (an ACL), or not ready (LOADING): the next node may answer
                continue
            return bytes(reply).decode()
        raise failure or SynkConnectionError(f"redis cluster at {self.url} has no node to ask for its nodes")

    async def _learn_replicas(self) -> None:
        # From CLUSTER NODES, not the slot map: CLUSTER SLOTS leaves out a
        # replica until it has replicated some write, so a new cluster's map
        # lists none. A replica flagged failed (or suspected: "fail?") is not
        # waited for, so a primary whose replica died stops waiting for it.
        self._replicas_at = time.monotonic()
        self.replicated = replicated_primaries(await self._cluster_nodes())

    async def _learn_replicas_or_warn(self) -> None:
        try:
            await self._learn_replicas()
        except rexc.ResponseError as exc:  # CLUSTER NODES refused (an ACL): no WAIT, said once per learn
            log.warning("synk cannot tell which primaries of %s have replicas (%s): flushes do not wait for replicas", self.url, exc)

    async def _replicas_now(self) -> frozenset[str]:
        """Which primaries have a replica, read again in the background every ``REPLICAS_EVERY_S``.

        In the background: the node asked may be the one that is down, and
        a flush must not wait for that (it uses the last reading meanwhile).
        """
        if time.monotonic() - self._replicas_at >= REPLICAS_EVERY_S and (self._refresh is None or self._refresh.done()):
            self._replicas_at = time.monotonic()
            self._refresh = asyncio.get_running_loop().create_task(self._refresh_replicas())
        return self.replicated

    async def close(self) -> None:
        """Stop a reading of the replicas under way."""
        refresh, self._refresh = self._refresh, None
        if refresh is not None and not refresh.done():
            refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresh

    async def _refresh_replicas(self) -> None:
        try:
            await self._learn_replicas_or_warn()
        except (*ERRORS, rexc.RedisError, SynkConnectionError) as exc:  # the node asked is down: the next reading may reach another
            log.debug("synk could not learn the replicas of the cluster at %s: %s", self.url, exc)

    async def send(self, calls: Iterable[Call], *, durable: bool = False) -> list[Any]:
        """Send calls where their slots live; a reply each, in order.

        A call answered MOVED or ASK was not run (the slot is elsewhere): it
        is sent again where Redis said, after the slot map is refreshed, up
        to ``REDIRECTS`` times; one answered TRYAGAIN (its slot is being
        migrated) is sent again after a pause, for up to ``TRYAGAIN_FOR_S``
        seconds. Nothing else is sent
        twice: a node that fails mid-batch fails the whole batch, whose
        outcome is then unknown (the world's ``reload()`` settles it).

        ``durable`` (writes): on a primary that has replicas, the batch ends
        with ``WAIT 1`` (up to ``WAIT_MS``); if no replica has its writes by
        then, the batch fails as a node that failed would, since a failover
        could still lose them.
        """
        if self.stale:
            await self.learn()
        cluster = self.cluster
        listed = list(calls)
        results: list[Any] = [None] * len(listed)
        todo = list(range(len(listed)))
        asking: dict[int, rexc.AskError] = {}
        replicated = await self._replicas_now() if durable else frozenset()
        redirects = 0
        tryagain_until = math.inf
        pause = TRYAGAIN_S
        while True:
            groups: dict[str, tuple[ClusterNode, list[int]]] = {}
            for i in todo:
                ask = asking.get(i)
                node = cluster.get_node(ask.host, ask.port) if ask is not None else None
                if node is None:
                    try:
                        node = cluster.nodes_manager.get_node_from_slot(key_slot(listed[i][0]))
                    except rexc.SlotNotCoveredError as exc:
                        results[i] = exc
                        continue
                groups.setdefault(node.name, (node, []))[1].append(i)

            async def one(node: ClusterNode, indices: list[int], asking: dict[int, rexc.AskError], replicated: frozenset[str]) -> None:
                # An ASK redirection is followed with ASKING just before the call.
                sent = [(ASKING + listed[i][1]) if i in asking else listed[i][1] for i in indices]
                counts = [2 if i in asking else 1 for i in indices]
                where = f"{node.name} (a node of the cluster at {self.url})"
                wait_ms = WAIT_MS if node.name in replicated else 0
                replies = await self._run(sent, NodePool(node), counts, where=where, wait_ms=wait_ms)
                for i, reply in zip(indices, replies, strict=True):
                    results[i] = reply

            outcomes = await asyncio.gather(
                *(one(node, indices, asking, replicated) for node, indices in groups.values()), return_exceptions=True
            )
            failed = [o for o in outcomes if isinstance(o, BaseException)]
            if failed:
                self.stale = True
                raise failed[0]
            todo = [i for i in todo if isinstance(results[i], (rexc.MovedError, rexc.AskError, rexc.TryAgainError))]
            if not todo:
                break
            asking = {i: results[i] for i in todo if isinstance(results[i], rexc.AskError)}
            if asking or any(isinstance(results[i], rexc.MovedError) for i in todo):
                redirects += 1
                if redirects >= REDIRECTS:
                    break
            if any(isinstance(results[i], rexc.MovedError) for i in todo):  # the slot map changed: learn the new one
                await self.learn()
                replicated = self.replicated if durable else frozenset()
            if any(isinstance(results[i], rexc.TryAgainError) for i in todo):
                # The slot is half-way through a MIGRATE: some of the call's
                # keys have left, some not (or some do not exist). Nothing ran.
                now = time.monotonic()
                tryagain_until = min(tryagain_until, now + TRYAGAIN_FOR_S)
                if now >= tryagain_until:
                    break
                await asyncio.sleep(pause)
                pause = min(pause * 2, TRYAGAIN_MAX_S)
        return results
