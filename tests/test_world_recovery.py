"""What a simulation sees around failures: creates during reload(), cancelled awaits,
load() after a failed create, stale connections after a Redis restart."""

from __future__ import annotations

import asyncio

import pytest

import synk
from bench.redis_process import RedisProcess
from tests.conftest import WorldFactory, record_errors
from tests.models import Agent, Note
from tests.redis_env import world_on


async def test_a_create_made_while_reload_awaits_the_store_is_kept(open_world: WorldFactory) -> None:
    async with open_world(Agent) as world:
        for i in range(5):
            world.create(Agent(id=f"old{i}"))
        await world.flush()
        reloading = asyncio.ensure_future(world.reload())
        await asyncio.sleep(0)  # reload() is now awaiting the store
        spawned = world.create(Agent(id="spawned"))
        report = await reloading
        assert report.missing == [] and report.reloaded == 5
        spawned.name = "changed after the reload"  # once dropped, this failed in plan() with AssertionError
        await world.flush()
        [stored] = [o for o in await world.load(["world:0|0"]) if o.id == "spawned"]
        assert stored is spawned and spawned.version == 1


async def test_a_write_error_reaches_on_error_when_its_awaiter_is_cancelled_in_the_same_turn(redis_url: str) -> None:
    # On Redis, so that the flush is still waiting when the callback below is added.
    async with world_on(redis_url, Note, prefix="cancel:") as world, world_on(redis_url, Note, prefix="cancel:") as other:
        errors, got = record_errors(world)
        other.create(Note(id="taken"))
        await other.flush()
        world.create(Note(id="taken"))  # fails: the id is taken
        handle = world.flush()

        async def waiter() -> None:
            await handle

        task = asyncio.ensure_future(waiter())
        await asyncio.sleep(0)  # the waiter is inside FlushHandle.__await__
        assert handle._task is not None
        # Cancel the waiter in the very loop turn in which the flush fails, after the
        # world's own callback saw the handle awaited.
        handle._task.add_done_callback(lambda _t: task.cancel())
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(got.wait(), 10)
        assert [f.reason for e in errors for f in e.failures] == ["exists"]
        with pytest.raises(synk.WriteError, match="exists"):
            world.flush()  # and the next flush raises it too


async def test_load_returns_the_stored_object_not_a_failed_create(open_world: WorldFactory) -> None:
    async with open_world(Note) as world, open_world(Note) as other:
        other.create(Note(id="n1", text="stored"))
        await other.flush()
        mine = world.create(Note(id="n1", text="mine"))
        with pytest.raises(synk.WriteError, match="exists"):
            await world.flush()
        [loaded] = await world.load(["notes"])
        assert isinstance(loaded, Note) and loaded is not mine
        assert (loaded.id, loaded.text, loaded._synk_token) == ("n1", "stored", other._owned["n1"]._synk_token)
        loaded.text = "changed"  # owned now: this write lands
        await world.flush()


async def test_the_first_flush_after_an_unnoticed_restart_lands(redis_process: RedisProcess) -> None:
    async with world_on(redis_process.url, Agent) as world:
        await asyncio.gather(*(world.load([f"k{i}"]) for i in range(4)))  # several pooled connections
        await asyncio.to_thread(redis_process.restart)
        agents = [world.create(Agent(id=f"r{i}", x=16 * (i % 3))) for i in range(50)]
        await asyncio.wait_for(world.flush(), 30)  # nothing was sent on the dead connections: no failure
        for a in agents:
            a.x += 16  # moves: both phases on a pool of dead connections
        await asyncio.to_thread(redis_process.restart)
        with pytest.raises(synk.WriteError) as info:  # the restart lost them: missing, not a connection failure
            await asyncio.wait_for(world.flush(), 30)
        assert {f.reason for f in info.value.failures} == {"missing"}


async def test_a_mark_is_swept_only_after_the_older_marks_of_its_object(open_world: WorldFactory) -> None:
    # x moved F -> D -> E, and the sweep of its mark in F failed: a batch that swept
    # D's mark but not F's, before the world died, would leave F's mark pointing to D,
    # and whoever found it would put x back in D. So D's mark waits a flush.
    async with open_world(Agent) as world:
        f_mark = ("x", "agent", "x", "tok", 2, b"", b"", ">")
        d_mark = ("x", "agent", "x", "tok", 3, b"", b"", ">")
        other = ("x", "agent", "y", "tok2", 5, b"", b"", "!")
        world._sweeps = {"D": [d_mark], "F": [f_mark], "G": [other]}
        assert world._take_sweeps() == {"F": [f_mark], "G": [other]}
        assert world._take_sweeps() == {"D": [d_mark]}
        assert world._take_sweeps() == {}


async def test_load_does_not_send_an_object_back_to_a_key_it_has_left() -> None:
    # A mark in F says x moved to D, but x has since moved on from D to E (D holds
    # that move's mark): load(F) sweeps F's mark instead of putting x into D again.
    from synk.core.messages import encode_add
    from synk.store.memory import MemoryStore

    store = MemoryStore()
    world = synk.World(store, [Agent])
    state = {"x": 1, "y": 0, "name": "", "tags": [], "info": {}}
    store._values = {
        "F": {"x": b"tok:2\n>D\n" + encode_add("agent", "x", "D", 2, state, inc="tok")},
        "D": {"x": b"tok:3\n>E\n" + encode_add("agent", "x", "E", 3, state, inc="tok")},
        "E": {"x": b"tok:3\n" + encode_add("agent", "x", "E", 3, state, inc="tok")},
    }
    store._ids = {"x": "tok"}
    assert await world.load(["F"]) == []
    assert [s.id for s in await store.snapshot("D")] == []  # not live in D
    assert [(s.id, s.version) for s in await store.snapshot("E")] == [("x", 3)]
    assert await store.snapshot("F", marks=True) == []  # the mark is swept
