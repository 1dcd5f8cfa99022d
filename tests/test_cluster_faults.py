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
from tests.gateway_env import Env, running, store_view, until, until_async
from tests.models import Agent
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
