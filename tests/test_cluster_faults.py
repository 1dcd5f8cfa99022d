"""A gateway and a simulation on a Redis Cluster through a resharding and a failover.

The invariant after each fault: the store holds every object the world owns,
at the world's version (no write lost or applied twice), and each client's
mirror equals the store, reached without reconnecting; only the keys whose
slot moved are snapshotted again.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time

import pytest
from redis.crc import key_slot

import synk
from bench.redis_cluster import RedisCluster, command
from synk.store import cluster_routing
from synk.store.cluster_routing import REDIRECTS
from tests.gateway_env import Env, running, store_view, until, until_async
from tests.models import Agent
from tests.redis_env import redis_store, world_on
from tests.store_invariant import read_state, violations
from tests.wsclient import WsClient


def slot_of(key: str) -> int:
    """The slot of a subscription key (its data and channel share the hash tag ``{key}``)."""
    return key_slot(key.encode())


def x_of(key: str) -> int:
    return int(key.split(":")[1].split("|", maxsplit=1)[0]) * 16


async def converged(env: Env, client: WsClient, keys: list[str]) -> None:
    expected = await store_view(env.world, keys)
    await client.wait(lambda: client.mirror == expected, timeout=20)


async def check_store(c: RedisCluster, world: synk.World) -> None:
    state = await read_state(c.primary_urls(), world.store.prefix)  # type: ignore[attr-defined]
    assert violations(state, settled=False, worlds=(world,)) == []


async def test_a_slot_moved_while_written_and_watched(cluster: RedisCluster) -> None:
    by_node = cluster.keys_by_node(lambda i: f"world:{i}|0", 2)
    keys = [k for ks in by_node.values() for k in ks]
    moved_key = keys[0]
    source = cluster.owner(slot_of(moved_key))
    target = next(n for n in cluster.nodes if n.port in by_node and n is not source)
    async with running(cluster.url) as env:
        world = env.world
        agents = {k: [world.create(Agent(id=f"k{i}-{j}", x=x_of(k))) for j in range(5)] for i, k in enumerate(keys)}
        await world.flush()
        client = await WsClient.open(env.url)
        await client.subscribe(keys)
        await converged(env, client, keys)
        before = len(client.messages)

        half = threading.Event()
        resume = threading.Event()

        def pause() -> None:
            # The slot is MIGRATING on its source, IMPORTING on its target.
            half.set()
            resume.wait(20)

        moving = asyncio.ensure_future(asyncio.to_thread(cluster.move_slot, slot_of(moved_key), target, between=pause))
        try:
            await asyncio.to_thread(half.wait, 20)
            for a in agents[moved_key]:
                a.name = "half-moved"  # its key is still on the source: written there
            world.create(Agent(id="born-half", x=x_of(moved_key)))
            await world.flush()
        finally:
            resume.set()
        assert await moving is source

        for ks in agents.values():
            for a in ks:
                a.name = "after"
        world.create(Agent(id="born-after", x=x_of(moved_key)))
        await world.flush()
        await world.flush()  # sweeps the marks
        await converged(env, client, keys)
        await check_store(cluster, world)
        # Never reconnected; told to re-snapshot the moved key only.
        assert client.close_code is None
        resnaps = [m for m in client.messages[before:] if m["method"] == "resnap"]
        assert resnaps and all(m["keys"] == [moved_key] for m in resnaps), resnaps
        assert all(m["sKey"] == moved_key for m in client.messages[before:] if m["method"] == "snap")
        # Every mod after the move arrived once: versions only grow by one per object.
        for oid, obj in client.mirror.items():
            assert obj["v"] == (await store_view(world, [obj["sKey"]]))[oid]["v"]
        await client.close()


async def test_a_primary_failing_over_under_a_watching_gateway() -> None:
    c = RedisCluster(3, replicas=True)
    c.start()
    try:
        by_node = c.keys_by_node(lambda i: f"world:{i}|0", 2)
        keys = [k for ks in by_node.values() for k in ks]
        victim_key = keys[0]
        victim_keys = set(by_node[c.owner(slot_of(victim_key)).port])
        async with running(c.url + "?socket_timeout=1") as env:
            world = env.world
            agents = [world.create(Agent(id=f"f{i}", x=x_of(keys[i % len(keys)]))) for i in range(6 * len(keys))]
            await world.flush()
            client = await WsClient.open(env.url)
            await client.subscribe(keys)
            await converged(env, client, keys)
            before = len(client.messages)

            killed = time.monotonic()
            old, _new = await asyncio.to_thread(c.kill_primary, slot_of(victim_key))
            # Flushes fail (each within a bounded time) until a replica
            # takes over; reload() then resumes and the next flush lands.
            failures = await flush_until_it_lands(world, agents, "a replica to take over", timeout=60)
            writes_back = time.monotonic() - killed
            for a in agents:
                a.name = "after"
            await world.flush()
            ids = {a.id for a in agents if a.sub_key in victim_keys}
            # Deliveries are back once the client sees the first write made after the failover.
            await client.wait(lambda: any(client.mirror.get(i, {}).get("state", {}).get("name") == "after" for i in ids), timeout=20)
            delivered_back = time.monotonic() - killed
            await world.flush()
            await converged(env, client, keys)
            print(
                f"\nfailover: writes interrupted {writes_back:.1f} s ({failures} failed flushes),"
                f" deliveries of the failed node's keys {delivered_back:.1f} s; the client never reconnected"
            )
            assert client.close_code is None
            resnapped = {k for m in client.messages[before:] if m["method"] == "resnap" for k in m["keys"]}
            assert resnapped == victim_keys, (resnapped, victim_keys)
            await check_store(c, world)
            await asyncio.to_thread(c.revive, old)
            for a in agents:
                a.name = "revived"
            await world.flush()
            await converged(env, client, keys)
            await check_store(c, world)
            await client.close()
    finally:
        c.close()


async def test_a_key_subscribed_again_after_its_slot_moved_is_served_from_its_new_node(cluster: RedisCluster) -> None:
    """A key left by every client, its slot moved meanwhile, then followed again."""
    by_node = cluster.keys_by_node(lambda i: f"world:{i}|0", 1)
    keys = [k for ks in by_node.values() for k in ks]
    async with running(cluster.url) as env:
        client = await WsClient.open(env.url)
        await client.subscribe(keys)
        await client.subscribe([], [keys[0]])
        source = cluster.owner(slot_of(keys[0]))
        target = next(n for n in cluster.nodes if n is not source)
        await asyncio.to_thread(cluster.move_slot, slot_of(keys[0]), target)
        await client.subscribe([keys[0]])
        a = env.world.create(Agent(id="late", x=x_of(keys[0])))
        await env.world.flush()
        await client.wait(lambda: "late" in client.mirror)
        a.name = "moved"
        await env.world.flush()
        await client.wait(lambda: client.mirror["late"]["state"]["name"] == "moved")
        await until(lambda: client.close_code is None, "the client to stay connected")
        await client.close()


async def flush_until_it_lands(world: synk.World, agents: list[Agent], what: str, timeout: float = 30.0) -> int:
    """Change ``agents`` and flush (reloading after each failure) until a flush lands; how many failed."""
    deadline = time.monotonic() + timeout
    failed = 0
    while True:
        for a in agents:
            a.y = (a.y + 1) % 16
        try:
            await asyncio.wait_for(world.flush(), 15)
            return failed
        except synk.WriteError:
            failed += 1
        assert time.monotonic() < deadline, f"no flush landed within {timeout:g} s: {what}"
        with contextlib.suppress(synk.ConnectionError):
            await asyncio.wait_for(world.reload(), 15)


async def test_a_flush_is_acknowledged_only_once_a_replica_holds_its_writes() -> None:
    # Redis Cluster replicates asynchronously: a primary answers before its
    # replica has the writes, and if it is killed then, the promoted replica
    # never had them. So a flush ends each primary's batch with WAIT; with the
    # replica stopped (SIGSTOP), no replica holds the writes, and the flush
    # must fail as one whose outcome is unknown, not report them stored.
    c = RedisCluster(3, replicas=True)
    c.start()
    world = await synk.connect(c.url)
    replica = None
    try:
        key = c.keys_by_node(lambda i: f"world:{i}|0", 1)[c.primaries_now()[0].port][0]
        primary = c.owner(slot_of(key))
        agents = [world.create(Agent(id=f"w{i}", x=x_of(key))) for i in range(5)]
        await world.flush()
        replica = c.replica_of(primary)
        assert replica.proc is not None
        replica.proc.send_signal(signal.SIGSTOP)
        for a in agents:
            a.name = "unreplicated"
        with pytest.raises(synk.WriteError) as info:
            await asyncio.wait_for(world.flush(), 15)
        failures = info.value.failures
        assert failures and all(f.reason == "connection" and "no replica held its writes" in f.detail for f in failures), failures
        # Once the cluster flags the replica failed, flushes land without it (unreplicated),
        # rather than fail for as long as it is gone.
        await flush_until_it_lands(world, agents, "with the replica flagged failed")
        routing = world.store.routing  # type: ignore[attr-defined]
        name = f"127.0.0.1:{primary.port}"
        assert name not in routing.replicated
        replica.proc.send_signal(signal.SIGCONT)
        replica = None

        # The replica is back: flushes wait for it again once synk reads the replicas again.
        async def waited_for_again() -> bool:
            await flush_until_it_lands(world, agents, "with the replica back")  # a flush reads the replicas again, when due
            return name in routing.replicated

        await until_async(waited_for_again, "the replica that came back to be waited for", 30)
        for a in agents:
            a.name = "replicated"
        await world.flush()
        stored = await world.store.snapshot(key)
        assert sorted(s.id for s in stored) == sorted(a.id for a in agents)
        assert all(b'"replicated"' in s.record for s in stored), stored
        await check_store(c, world)
    finally:
        if replica is not None and replica.proc is not None:
            replica.proc.send_signal(signal.SIGCONT)
        await world.close()
        c.close()


async def test_a_flush_to_a_primary_demoted_by_a_manual_failover_follows_the_redirection() -> None:
    # CLUSTER FAILOVER on the replica: the old primary, now a replica, answers the
    # next flush's calls MOVED. Nothing was written there, so no WAIT is sent (a
    # replica refuses it, which would fail the flush as an unknown outcome).
    c = RedisCluster(3, replicas=True)
    c.start()
    world = await synk.connect(c.url)
    try:
        key = c.keys_by_node(lambda i: f"world:{i}|0", 1)[c.primaries_now()[0].port][0]
        agents = [world.create(Agent(id=f"m{i}", x=x_of(key))) for i in range(5)]
        await world.flush()
        old = c.owner(slot_of(key))
        replica = c.replica_of(old)
        command(replica.port, "CLUSTER", "FAILOVER")
        await until(lambda: c.owner(slot_of(key)) is replica, "the replica to take over", 30)
        for a in agents:
            a.name = "after the failover"
        await asyncio.wait_for(world.flush(), 15)  # no WriteError: the MOVED was followed
        stored = await world.store.snapshot(key)
        assert all(b'"after the failover"' in s.record for s in stored) and len(stored) == len(agents)
        await check_store(c, world)
    finally:
        await world.close()
        c.close()


async def test_a_client_message_posted_while_its_slot_is_half_migrated_waits_for_the_slot(
    cluster: RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # post.lua names three keys of the {msgs} slot. With one of them migrated and
    # the others not, the source answers TRYAGAIN for as long as the migration
    # lasts: a post must keep trying for a bounded time, not give up after a
    # few fast tries, and must land once (nothing ran on a TRYAGAIN).
    async with world_on(cluster.url, Agent, prefix="msg:") as world:
        store = redis_store(world)
        stream = store._stream
        await store.commands.set(f"{stream}:reader", b"1", px=60_000)  # a simulation reads
        assert await store.post(b'{"n":0}') is True
        slot = key_slot(stream.encode())
        source = cluster.owner(slot)
        target = next(n for n in cluster.primaries_now() if n is not source)
        half = threading.Event()
        resume = threading.Event()

        def part_migrated() -> None:
            command(source.port, "MIGRATE", "127.0.0.1", str(target.port), "", "0", "5000", "KEYS", f"{stream}:bytes")
            half.set()
            resume.wait(30)

        def tryagains() -> int:
            stats = command(source.port, "INFO", "errorstats").decode()
            return sum(int(line.split("count=")[1]) for line in stats.splitlines() if line.startswith("errorstat_TRYAGAIN:"))

        moving = asyncio.ensure_future(asyncio.to_thread(cluster.move_slot, slot, target, between=part_migrated))
        try:
            await asyncio.to_thread(half.wait, 30)
            # Past the bound, a post is refused as one Redis cannot take now (the
            # gateway answers "unavailable"), not an internal error; nothing ran.
            monkeypatch.setattr(cluster_routing, "TRYAGAIN_FOR_S", 0.3)
            with pytest.raises(synk.ConnectionError, match="cannot serve the call now"):
                await store.post(b'{"n":"refused"}')
            monkeypatch.undo()
            before = tryagains()
            posting = asyncio.ensure_future(store.post(b'{"n":1}'))
            # More TRYAGAINs than MOVED/ASK redirections are followed (REDIRECTS):
            # the post is still trying, not given up.
            await until(lambda: tryagains() - before > REDIRECTS + 2 or posting.done(), "the post to be answered TRYAGAIN", 20)
            assert not posting.done(), posting
        finally:
            resume.set()
        await moving
        assert await asyncio.wait_for(posting, 20) is True
        entries = await store.commands.xrange(stream)
        assert [e[1][b"m"] for e in entries] == [b'{"n":0}', b'{"n":1}']


async def test_a_client_message_no_replica_holds_is_refused_as_unavailable_not_acknowledged() -> None:
    # A client's message is acknowledged to the gateway only once a replica of
    # its primary holds it, as a flush's writes are: a failover right after could
    # otherwise lose it. With the replica stopped the client is told
    # "unavailable", once (the gateway does not post it twice).
    c = RedisCluster(3, replicas=True)
    c.start()
    replica = None
    try:
        async with running(c.url, forward_to_world=True) as env:
            store = redis_store(env.world)
            stream = store._stream
            messages = env.world.messages()
            reading = asyncio.ensure_future(anext(messages))

            async def read() -> bool:
                return bool(await store.commands.exists(f"{stream}:reader"))

            await until_async(read, "the simulation to read messages")
            client = await WsClient.open(env.url)
            await client.send({"method": "order", "n": 1})
            first = await asyncio.wait_for(reading, 20)
            assert (first.method, first.data) == ("order", {"n": 1})
            replica = c.replica_of(c.owner(key_slot(stream.encode())))
            assert replica.proc is not None
            replica.proc.send_signal(signal.SIGSTOP)
            await client.send({"method": "order", "n": 2})
            await client.wait(lambda: bool(client.of("error")), timeout=20)
            [error] = client.of("error")
            assert error["code"] == "unavailable" and "no replica held its writes" in error["reason"], error
            replica.proc.send_signal(signal.SIGCONT)
            replica = None
            await client.close()
    finally:
        if replica is not None and replica.proc is not None:
            replica.proc.send_signal(signal.SIGCONT)
        c.close()


async def test_a_gateway_and_a_world_start_while_a_primary_is_down_and_serve_once_it_is_failed_over() -> None:
    # Started in the failover's window (a primary dead, its replica not yet
    # promoted): redis-py's client sets itself up through the first primary
    # of the map, the dead one, and synk serve used to exit at once.
    c = RedisCluster(3, replicas=True)
    c.start()
    try:
        key = c.keys_by_node(lambda i: f"world:{i}|0", 1)[c.primaries_now()[0].port][0]
        dead = c.owner(slot_of(key))
        assert dead.proc is not None
        live = next(n for n in c.nodes if n is not dead and n.proc is not None)
        dead.proc.kill()
        dead.proc.wait(10)
        dead.proc = None
        async with running(live.url) as env:
            world = env.world
            agents = [world.create(Agent(id=f"s{i}", x=x_of(key))) for i in range(3)]
            unsettled = False  # a flush failed, and no reload() has settled it yet

            async def landed() -> bool:
                # Creates refused in the failover's window are made again once it is
                # over. (After a failed flush, the next one has nothing to send until
                # reload() has said what is missing.)
                nonlocal unsettled
                if not unsettled:
                    try:
                        await asyncio.wait_for(world.flush(), 15)
                        return True
                    except synk.WriteError:
                        unsettled = True
                with contextlib.suppress(synk.ConnectionError):  # the cluster not answering yet: try again
                    world.recreate((await asyncio.wait_for(world.reload(), 15)).missing)
                    unsettled = False
                return False

            await until_async(landed, "a flush to land after the failover", 30)
            client = await WsClient.open(env.url)
            await client.subscribe([key])
            await converged(env, client, [key])
            assert set(client.mirror) == {a.id for a in agents}
            await client.close()
    finally:
        c.close()
