"""The store invariant after faults at every point of a flush, on a real redis-server.

Each scenario mutates a world (creates, updates, moves, deletes), breaks the
flush at one point, checks the invariant (tests/store_invariant.py) while
the writer has not recovered, lets it recover, and checks it again: no
object lost, no id burned, nothing left half-way.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

import synk
from bench.chaos.proxy import Proxy
from bench.redis_process import RedisProcess
from synk.store.redis import RedisStore
from tests.gateway_env import until_async
from tests.models import Agent
from tests.redis_env import out_of_memory, world_on
from tests.store_invariant import read_state, violations

PREFIX = "wf:"
ROOT = Path(__file__).resolve().parent.parent
KEYS = [f"world:{i}|0" for i in range(4)]


async def populate(world: synk.World, n: int = 30) -> list[Agent]:
    agents = [world.create(Agent(id=f"a{i}", x=(i % 4) * 16)) for i in range(n)]
    await world.flush()
    return agents


def mutate(world: synk.World, agents: list[Agent]) -> tuple[list[Agent], list[Agent]]:
    """A flush of every kind of write: a third move, a third change, some deletes, some creates."""
    for i, a in enumerate(agents):
        if i % 3 == 0:
            a.x = (a.x + 16) % 64
        elif i % 3 == 1:
            a.name = f"n{i}"
    deleted = [a for i, a in enumerate(agents) if i % 10 == 2]
    for a in deleted:
        world.delete(a)
    created = [world.create(Agent(id=f"new{i}", x=16 * (i % 4))) for i in range(6)]
    return deleted, created


def patch_phase(world: synk.World, name: str, before: Callable[[], Any]) -> None:
    """Run ``before`` (a fault) when the flush reaches its phase ``name``, once."""
    store = world.store
    original = getattr(store, name)

    async def phase(*args: Any) -> Any:
        setattr(store, name, original)
        result = before()
        if asyncio.iscoroutine(result):
            await result
        return await original(*args)

    setattr(store, name, phase)


async def check(url: str, *, settled: bool, worlds: tuple[synk.World, ...] = ()) -> None:
    state = await read_state(url, PREFIX)
    assert violations(state, settled=settled, worlds=worlds) == []


async def recovered(world: synk.World, url: str, deleted: list[Agent]) -> synk.ReloadReport:
    """Reload, check the invariant, and that the world can go on: every object the
    reload gave up on can be created again (no id burned), and the next flush lands."""
    report = await asyncio.wait_for(world.reload(), 30)
    await check(url, settled=True, worlds=(world,))
    state = await read_state(url, PREFIX)
    for a in deleted:
        assert state.live(a.id) == [] and a.id not in state.claims, f"{a.id} was deleted"
    for lost in report.missing:
        assert lost.id.startswith("new"), f"{lost.id} was lost"
    world.recreate(report.missing)
    for obj in list(world._owned.values()):
        assert isinstance(obj, Agent)
        obj.y += 1
    await asyncio.wait_for(world.flush(), 30)
    await check(url, settled=True, worlds=(world,))
    # That flush moved nothing, and swept what the repairs left: no mark is left
    # behind to point at a key the object will leave (a move left half-way, then).
    state = await read_state(url, PREFIX)
    marks = [(key, oid, s.mark) for key, values in state.keys.items() for oid, s in values.items() if not s.live]
    assert marks == [], marks
    return report


@asynccontextmanager
async def faulty(redis_process: RedisProcess) -> AsyncIterator[tuple[Proxy, synk.World]]:
    async with Proxy(redis_process.port) as proxy, world_on(proxy.url + "?socket_timeout=1", Agent, prefix=PREFIX) as world:
        yield proxy, world


async def direct(redis_process: RedisProcess) -> RedisStore:
    return RedisStore(redis_process.url, prefix=PREFIX)


@pytest.mark.parametrize("point", ["before", "during phase 1", "between phases", "during phase 2"])
async def test_a_connection_cut_anywhere_in_a_flush(redis_process: RedisProcess, point: str) -> None:
    async with faulty(redis_process) as (proxy, world):
        agents = await populate(world)
        deleted, _created = mutate(world, agents)
        mover = agents[0]
        r = (await direct(redis_process)).redis

        async def landed(key: str, oid: str, prefix: bytes) -> None:
            async def there() -> bool:
                value: bytes | None = await r.hget(f"{PREFIX}{{{key}}}:o", oid)  # type: ignore[assignment]
                return value is not None and value.split(b"\n", 1)[1].startswith(prefix)

            await until_async(there, f"{oid} applied in {key}")
            proxy.cut()

        if point == "before":
            proxy.cut()
        elif point == "during phase 1":
            proxy.hold_replies()  # Redis applies phase 1; its replies never arrive
            patch_phase(world, "_phase1", lambda: asyncio.get_running_loop().create_task(landed("world:0|0", mover.id, b">")))
        elif point == "between phases":
            patch_phase(world, "_phase2", proxy.cut)
        else:

            def hold_then_cut() -> None:
                proxy.hold_replies()
                asyncio.get_running_loop().create_task(landed("world:1|0", mover.id, b"{"))

            patch_phase(world, "_phase2", hold_then_cut)
        with pytest.raises(synk.WriteError) as info:
            await asyncio.wait_for(world.flush(), 30)
        assert {f.reason for f in info.value.failures} == {"connection"}
        await check(redis_process.url, settled=False)
        proxy.heal()
        await recovered(world, redis_process.url, deleted)
        await r.aclose()


async def test_redis_stalled_past_the_timeout_under_a_flush_with_moves(redis_process: RedisProcess) -> None:
    async with world_on(redis_process.url + "?socket_timeout=0.5", Agent, prefix=PREFIX) as world:
        agents = await populate(world, 100)
        for a in agents:
            a.x = (a.x + 16) % 64  # every object moves
        assert redis_process.proc is not None
        patch_phase(world, "_phase2", lambda: os.kill(redis_process.proc.pid, signal.SIGSTOP))  # type: ignore[union-attr]
        try:
            with pytest.raises(synk.WriteError):
                await asyncio.wait_for(world.flush(), 30)
        finally:
            os.kill(redis_process.proc.pid, signal.SIGCONT)
        await check(redis_process.url, settled=False)
        report = await recovered(world, redis_process.url, [])
        assert report.missing == [] and report.reloaded == 100


@pytest.mark.parametrize("persistence", [True, False])
async def test_redis_killed_between_the_phases_and_restarted(persistence: bool) -> None:
    extra = ("--appendonly", "yes", "--appendfsync", "always") if persistence else ()
    server = RedisProcess(None, *extra)
    server.start()
    try:
        async with world_on(server.url + "?socket_timeout=1", Agent, prefix=PREFIX) as world:
            agents = await populate(world)
            deleted, _created = mutate(world, agents)
            patch_phase(world, "_phase2", server.stop)
            with pytest.raises(synk.WriteError):
                await asyncio.wait_for(world.flush(), 30)
            await asyncio.to_thread(server.start)
            await check(server.url, settled=False)
            if persistence:
                await recovered(world, server.url, deleted)
                return
            # Redis came back empty: reload() reports every object missing, and
            # recreate() puts them back from the world's memory.
            report = await asyncio.wait_for(world.reload(), 30)
            assert len(report.missing) == len(agents) - len(deleted) + 6
            world.recreate(report.missing)
            await asyncio.wait_for(world.flush(), 30)
            await check(server.url, settled=True, worlds=(world,))
            assert len(world._owned) == len(report.missing)
    finally:
        server.close()


SIMULATION = """
import asyncio, os, signal, sys
sys.path.insert(0, {root!r})
import synk
from tests.gateway_env import until_async
from tests.models import Agent
from tests.test_write_faults import mutate, populate

async def main() -> None:
    async with synk.connect({url!r}, types=[Agent], prefix={prefix!r}) as world:
        agents = await populate(world)
        mutate(world, agents)
        phase2 = world.store._phase2
        async def die(*args):
            os.kill(os.getpid(), signal.SIGKILL)  # the simulation dies between the two round trips
        world.store._phase2 = die
        await world.flush()

asyncio.run(main())
"""


async def test_the_simulation_killed_between_the_phases(redis_process: RedisProcess) -> None:
    root = str(ROOT)
    code = textwrap.dedent(SIMULATION).format(root=root, url=redis_process.url, prefix=PREFIX)
    proc = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", code], capture_output=True, timeout=60, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    await check(redis_process.url, settled=False)
    before = await read_state(redis_process.url, PREFIX)
    assert any(not s.live for values in before.keys.values() for s in values.values()), "the kill left nothing half-way"
    # Another simulation takes the world over: load() completes what the dead one left half-way.
    async with world_on(redis_process.url, Agent, prefix=PREFIX) as world:
        objs = await world.load(KEYS)
        await check(redis_process.url, settled=True, worlds=(world,))
        ids = {o.id for o in objs}
        assert {f"a{i}" for i in range(30) if i % 10 != 2} <= ids  # every mover arrived
        assert {f"new{i}" for i in range(6)} <= ids  # every create whose id was claimed went live
        assert not ids & {f"a{i}" for i in range(30) if i % 10 == 2}  # every delete finished
        # and the ids of the deleted are free again
        again = [world.create(Agent(id=f"a{i}")) for i in range(30) if i % 10 == 2]
        await world.flush()
        assert all(a.version == 1 for a in again)


async def test_a_timed_out_flush_that_redis_runs_after_the_reload(redis_process: RedisProcess) -> None:
    # The flush's take-outs reach Redis only after it timed out and the world
    # reloaded (Redis reads a closed connection's last commands): the objects the
    # reload found in their old keys are then marks there. The world's next
    # writes to them find no object, and the reload after that finishes the moves.
    async with faulty(redis_process) as (proxy, world):
        agents = await populate(world, 12)
        movers = agents[:6]
        for a in movers:
            a.x = (a.x + 16) % 64
        patch_phase(world, "_phase1", proxy.hold_existing)
        with pytest.raises(synk.WriteError):
            await asyncio.wait_for(world.flush(), 30)
        report = await asyncio.wait_for(world.reload(), 30)
        assert report.missing == []
        assert {a.id: a._synk_skey for a in movers} == {f"a{i}": f"world:{i % 4}|0" for i in range(6)}  # as stored then
        proxy.heal()  # the take-outs run now

        async def taken_out() -> bool:
            state = await read_state(redis_process.url, PREFIX)
            return all(state.live(a.id) == [] for a in movers)

        await until_async(taken_out, "the late take-outs")
        for a in agents:
            a.name = "after"
        with pytest.raises(synk.WriteError) as info:
            await asyncio.wait_for(world.flush(), 30)
        assert sorted(f.id for f in info.value.failures) == sorted(a.id for a in movers)
        await recovered(world, redis_process.url, [])
        assert {a.id: a._synk_skey for a in movers} == {f"a{i}": f"world:{(i + 1) % 4}|0" for i in range(6)}


async def test_a_repair_the_store_refuses_leaves_the_half_way_move_for_the_next_reload(redis_process: RedisProcess) -> None:
    # A move cut between its phases is finished by reload(); if the store refuses that repair
    # (out of memory here; a slot being migrated did so on a cluster), the object is not given
    # up as missing: reload() raises, and the next one finishes the move.
    async with faulty(redis_process) as (proxy, world):
        agents = await populate(world, 4)
        mover = agents[0]
        mover.x = 16  # world:0|0 -> world:1|0
        patch_phase(world, "_phase2", proxy.cut)
        with pytest.raises(synk.WriteError):
            await asyncio.wait_for(world.flush(), 30)
        proxy.heal()
        r = (await direct(redis_process)).redis
        async with out_of_memory(r):
            with pytest.raises(
                synk.ConnectionError, match=r"reload\(\) could not finish 1 half-way write\(s\), such as the move of agent 'a0' \(refused"
            ):
                await world.reload()
            assert world._owned.get("a0") is mover  # still this world's
        report = await world.reload()
        assert report.missing == []
        assert mover.sub_key == "world:1|0"
        await check(redis_process.url, settled=True, worlds=(world,))
        await r.aclose()


async def test_a_refused_repair_of_a_move_redis_ran_late_is_not_given_up(redis_process: RedisProcess) -> None:
    # The world still thinks the object is in its old key (the take-out ran after the reload)
    async with faulty(redis_process) as (proxy, world):
        agents = await populate(world, 4)
        mover = agents[0]
        mover.x = 16  # world:0|0 -> world:1|0
        patch_phase(world, "_phase1", proxy.hold_existing)
        with pytest.raises(synk.WriteError):
            await asyncio.wait_for(world.flush(), 30)
        report = await asyncio.wait_for(world.reload(), 30)
        assert report.missing == [] and mover._synk_skey == "world:0|0"
        proxy.heal()  # the take-out runs now: a MOVED mark in world:0|0, nothing yet in world:1|0

        async def taken_out() -> bool:
            return (await read_state(redis_process.url, PREFIX)).live(mover.id) == []

        await until_async(taken_out, "the late take-out")
        r = (await direct(redis_process)).redis
        async with out_of_memory(r):
            with pytest.raises(synk.ConnectionError) as info:
                await world.reload()
            assert "could not finish 1 half-way write" in str(info.value)
            assert world._owned.get("a0") is mover
        report = await world.reload()
        assert report.missing == [], "the half-way moved object was given up as missing"
        state = await read_state(redis_process.url, PREFIX)
        assert len(state.live("a0")) == 1
        await check(redis_process.url, settled=True, worlds=(world,))
        await r.aclose()
