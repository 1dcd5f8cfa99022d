"""The faults a storm draws from, each of which strikes and heals itself.

============== ==========================================================================
kind           what happens
============== ==========================================================================
redis-kill     ``kill -9`` Redis, restart it on the same port 0.2-2 s later with its
               data (append-only file): acknowledged writes survive
redis-wipe     the same, but the data files are deleted first: the store comes back
               empty, the simulation's next flush fails, it reloads, loses every
               object and creates new ones (the losses are the store's: mirrors must
               follow it, so they are not counted as divergence)
redis-stop     SIGSTOP Redis for 2-4 s, then SIGCONT
gateway-kill   ``kill -9`` a gateway, restart it on its port 0.2-2 s later
client-kill    ``kill -9`` a client process (several clients), start a replacement
client-slow    a third of the clients of a process read slowly for 3-8 s
client-stall   1-3 clients of a process stop reading for 4-14 s (past the gateway's
               10 s ``stuck_timeout``, it closes them with 4408)
pubsub-kill    ``CLIENT KILL ID`` one of the gateways' pub/sub connections (on a
               cluster: one of a random primary's)
net-cut        reset every connection between a gateway and Redis (its proxy) and
               refuse new ones for 0.5-4 s
net-stall      stop the bytes between a gateway and Redis for 2-6 s, connections open
primary-kill   (cluster) ``kill -9`` the primary serving the slot of one of the
               storm's keys; its replica is promoted (about 2 s: the node timeout is
               1 s); 0.5-2 s later the old node is started again, empty, and rejoins
               as the new primary's replica
reshard        (cluster) move the slot of one of the storm's keys, with its data and
               channel, to another primary while the simulations write it; half the
               time the move pauses 0.3-1.5 s half-way (slot MIGRATING on its source,
               IMPORTING on its target, keys not yet migrated), so that writes meet
               ASK redirections and TRYAGAIN
none           nothing: the control, only the simulation and the clients' churn
============== ==========================================================================

The redis-* and net-* kinds need the single Redis and its proxies: with
``--cluster`` they are refused (``SINGLE_ONLY``); primary-kill and reshard
need the cluster (``CLUSTER_ONLY``).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from redis.crc import key_slot

from bench.chaos.common import ALL_KEYS, PREFIX
from bench.chaos.redis_ctl import kill_client, pubsub_clients, wait_started

if TYPE_CHECKING:
    import random
    from collections.abc import Awaitable, Callable

    from bench.chaos.run import Run
    from bench.redis_cluster import RedisCluster
    from bench.redis_process import RedisProcess

__all__ = ["CLUSTER_ONLY", "FAULTS", "SINGLE_ONLY"]


async def redis_kill(run: Run, rng: random.Random, *, wipe: bool = False) -> str:
    redis = run.single()
    async with run.lock("redis"):
        redis.kill()
        down = rng.uniform(0.2, 2.0)
        run.log(f"redis killed (-9){', data wiped' if wipe else ''}; restart in {down:.1f} s")
        await asyncio.sleep(down)  # the outage itself
        if wipe:
            redis.wipe()
        await wait_started(redis)
        run.log("redis restarted")
    return f"redis down {down:.1f}s"


async def redis_wipe(run: Run, rng: random.Random) -> str:
    return await redis_kill(run, rng, wipe=True)


async def redis_stop(run: Run, rng: random.Random) -> str:
    redis = run.single()
    async with run.lock("redis"):
        if not redis.running:
            return "redis not running"
        frozen = rng.uniform(2.0, 4.0)
        redis.freeze()
        run.log(f"redis SIGSTOP for {frozen:.1f} s")
        await asyncio.sleep(frozen)  # the outage itself
        redis.thaw()
        run.log("redis SIGCONT")
    return f"redis frozen {frozen:.1f}s"


async def gateway_kill(run: Run, rng: random.Random) -> str:
    i = rng.randrange(len(run.gateways))
    async with run.lock(f"gateway{i}"):
        gateway = run.gateways[i]
        if gateway is not None:
            run.kill9(gateway)
            await gateway.proc.wait()
        down = rng.uniform(0.2, 2.0)
        run.log(f"gateway{i} killed (-9); restart in {down:.1f} s")
        await asyncio.sleep(down)  # the outage itself
        await run.start_gateway(i)
        run.log(f"gateway{i} restarted")
    return f"gateway{i} down {down:.1f}s"


async def client_kill(run: Run, rng: random.Random) -> str:
    j = rng.randrange(len(run.fleets))
    async with run.lock(f"fleet{j}"):
        fleet = run.fleets[j]
        if fleet is not None:
            run.kill9(fleet.child)
            await fleet.child.proc.wait()
        run.log(f"client process {j} killed (-9); replacing it")
        await run.start_fleet(j)
        fresh = run.fleets[j]
        if fresh is not None:
            await fresh.ask({"cmd": "churn", "on": True})
    return f"clients{j} replaced"


async def _fleet_cmd(run: Run, rng: random.Random, what: str, n: int, ms: int) -> str:
    j = rng.randrange(len(run.fleets))
    async with run.lock(f"fleet{j}"):
        fleet = run.fleets[j]
        if fleet is None or not fleet.child.alive:
            return f"clients{j} not running"
        answer = await fleet.ask({"cmd": what, "n": n, "ms": ms})
    run.log(f"{what} for {ms} ms: {', '.join(answer.get('who', []))}")
    return f"{what} {len(answer.get('who', []))} clients {ms / 1000:.1f}s"


async def client_slow(run: Run, rng: random.Random) -> str:
    n = max(1, run.fleet_sizes()[0] // 3)
    return await _fleet_cmd(run, rng, "slow", n, rng.randrange(3000, 8000))


async def client_stall(run: Run, rng: random.Random) -> str:
    return await _fleet_cmd(run, rng, "stall", rng.randint(1, 3), rng.randrange(4000, 14000))


async def pubsub_kill(run: Run, rng: random.Random) -> str:
    async with run.lock("cluster" if run.cluster is not None else "redis"):
        if run.redis is not None and not run.redis.running:
            return "redis not running"
        # On a cluster each gateway holds one sharded pub/sub connection per primary that
        # serves followed slots: pick a primary, then one of the connections it has.
        url = rng.choice(sorted(await run.store_urls()))
        ids = await pubsub_clients(url)
        if not ids:
            run.log(f"pubsub-kill: no pub/sub connection to kill on {url}")
            return "no pubsub connection"
        victim = rng.choice(ids)
        killed = await kill_client(url, victim)
        run.log(f"CLIENT KILL ID {victim} on {url} (one of {len(ids)} pub/sub connections): {killed}")
    return f"pubsub {victim} killed"


async def net_cut(run: Run, rng: random.Random) -> str:
    run.single()
    i = rng.randrange(len(run.proxies))
    async with run.lock(f"proxy{i}"):
        cut = rng.uniform(0.5, 4.0)
        run.proxies[i].cut()
        run.log(f"network gateway{i}<->redis cut for {cut:.1f} s")
        await asyncio.sleep(cut)  # the outage itself
        run.proxies[i].heal()
        run.log(f"network gateway{i}<->redis back")
    return f"gateway{i} cut {cut:.1f}s"


async def net_stall(run: Run, rng: random.Random) -> str:
    run.single()
    i = rng.randrange(len(run.proxies))
    async with run.lock(f"proxy{i}"):
        stall = rng.uniform(2.0, 6.0)
        run.proxies[i].stall()
        run.log(f"network gateway{i}<->redis stalled for {stall:.1f} s")
        await asyncio.sleep(stall)  # the outage itself
        run.proxies[i].heal()
        run.log(f"network gateway{i}<->redis flowing")
    return f"gateway{i} stalled {stall:.1f}s"


def slot_of(key: str) -> int:
    """The hash slot of a subscription key: its data and channel share the hash tag ``{KEY}``."""
    return key_slot(f"{PREFIX}{{{key}}}:o".encode())


def serving_primaries(cluster: RedisCluster) -> list[RedisProcess]:
    """The primaries that serve slots now (a node just revived may call itself a primary for a moment, with no slots)."""
    slots = {0, 16383, *(slot_of(k) for k in ALL_KEYS)}
    owners = {cluster.owner(s).port: cluster.owner(s) for s in slots}
    return [owners[p] for p in sorted(owners)]


async def primary_kill(run: Run, rng: random.Random) -> str:
    cluster = run.redis_cluster()
    key = rng.choice(ALL_KEYS)
    slot = slot_of(key)
    async with run.lock("cluster"):
        started = time.monotonic()
        old, new = await asyncio.to_thread(cluster.kill_primary, slot)
        took = time.monotonic() - started
        down = rng.uniform(0.5, 2.0)
        run.log(f"primary :{old.port} of slot {slot} ({key}) killed (-9); :{new.port} promoted in {took:.1f} s; revive in {down:.1f} s")
        await asyncio.sleep(down)  # how long the old node stays down once replaced
        await asyncio.to_thread(cluster.revive, old)
        run.log(f"node :{old.port} revived, a replica now")
    return f"primary of {key} failed over in {took:.1f}s"


async def reshard(run: Run, rng: random.Random) -> str:
    cluster = run.redis_cluster()
    key = rng.choice(ALL_KEYS)
    slot = slot_of(key)
    pause = rng.uniform(0.3, 1.5) if rng.random() < 0.5 else 0.0
    async with run.lock("cluster"):
        source = await asyncio.to_thread(cluster.owner, slot)
        targets = [n for n in await asyncio.to_thread(serving_primaries, cluster) if n is not source]
        if not targets:
            return "no other primary to move to"
        target = rng.choice(targets)

        def between() -> None:
            run.log(f"slot {slot} half-moved; held so for {pause:.1f} s")
            time.sleep(pause)  # how long the slot stays half-moved (in the mover's thread)

        run.log(f"moving slot {slot} ({key}) from :{source.port} to :{target.port}")
        started = time.monotonic()
        run.resharded.append(key)
        await asyncio.to_thread(cluster.move_slot, slot, target, between=between if pause else None)
        run.log(f"slot {slot} ({key}) moved to :{target.port} in {time.monotonic() - started:.1f} s")
    return f"{key} moved{f' (held half-way {pause:.1f}s)' if pause else ''}"


async def nothing(run: Run, rng: random.Random) -> str:
    return "no fault"


FAULTS: dict[str, Callable[[Run, random.Random], Awaitable[str]]] = {
    "none": nothing,
    "redis-kill": redis_kill,
    "redis-wipe": redis_wipe,
    "redis-stop": redis_stop,
    "gateway-kill": gateway_kill,
    "client-kill": client_kill,
    "client-slow": client_slow,
    "client-stall": client_stall,
    "pubsub-kill": pubsub_kill,
    "net-cut": net_cut,
    "net-stall": net_stall,
    "primary-kill": primary_kill,
    "reshard": reshard,
}

#: The kinds that need the single Redis or its proxies, and those that need the cluster.
SINGLE_ONLY = frozenset({"redis-kill", "redis-wipe", "redis-stop", "net-cut", "net-stall"})
CLUSTER_ONLY = frozenset({"primary-kill", "reshard"})
