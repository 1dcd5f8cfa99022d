"""The Redis store when Redis is down, restarts, stops answering or refuses writes."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import orjson
import pytest

import synk
from bench.redis_process import RedisProcess, free_port
from synk.store.base import Event
from synk.store.progress import Progress
from tests.conftest import record_errors
from tests.models import Agent, Note
from tests.redis_env import client, next_event, redis_store, world_on

# -- connection problems -------------------------------------------------------------------------


async def test_unreachable_redis_gives_connection_error() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(synk.ConnectionError, match=r"127\.0\.0\.1") as info:
        await asyncio.wait_for(synk.connect(url, connect_timeout=1.0)._open(), 30)
    assert isinstance(info.value, ConnectionError)  # the builtin one, too


async def test_unreachable_redis_in_async_with() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"

    async def use() -> None:
        async with synk.connect(url, connect_timeout=1.0):
            pytest.fail("connected to nothing")

    with pytest.raises(synk.ConnectionError, match="unreachable"):
        await asyncio.wait_for(use(), 30)


async def test_unknown_url_scheme() -> None:
    with pytest.raises(synk.ConfigError, match=r"unknown store URL scheme 'foo' in 'foo://x'"):
        await synk.connect("foo://x")


async def test_subscriber_survives_a_restart(redis_process: RedisProcess) -> None:
    async with world_on(redis_process.url, Agent, prefix="r:") as world:
        sub = world.subscribe()
        try:
            await asyncio.wait_for(sub.subscribe(["world:0|0", "room"]), 10)
            await world.publish("room", {"method": "before"})
            assert await next_event(sub) == Event("room", b'{"method":"before"}')

            await asyncio.to_thread(redis_process.restart)
            # The subscription is back: a gap of its keys says their messages may have been missed.
            assert await next_event(sub, timeout=30) == Event(None, gap=frozenset({"world:0|0", "room"}))

            # Messages published from now on arrive (sent on a new connection, so that
            # this test is about the subscriber only).
            async with world_on(redis_process.url, Agent, prefix="r:") as other:
                await other.publish("room", {"method": "after"})
                assert await next_event(sub) == Event("room", b'{"method":"after"}')
                other.create(Agent(id="new"))
                await other.flush()  # the restarted Redis has no scripts: reloaded on NOSCRIPT
            event = await next_event(sub)
            assert event.key == "world:0|0"
            assert orjson.loads(event.data)["id"] == "new"
        finally:
            await sub.close()


async def test_reads_after_an_unnoticed_restart_succeed(redis_process: RedisProcess) -> None:
    # Redis restarts (an upgrade, a failover) while the world is idle: its pooled
    # connections are dead, but Redis is up. Reads are safe to send again, so they succeed.
    async with world_on(redis_process.url, Agent) as world:
        a = world.create(Agent(id="before"))
        await world.flush()
        await asyncio.to_thread(redis_process.restart)
        assert await asyncio.wait_for(world.load(["world:0|0"]), 30) == []
        await asyncio.to_thread(redis_process.restart)
        report = await asyncio.wait_for(world.reload(), 30)
        assert report.missing == [a]


async def test_first_flush_after_an_unnoticed_restart(redis_process: RedisProcess) -> None:
    # A write's outcome is unknown when its connection breaks, so it is not sent
    # again: it may fail, with reason "connection" and nothing else, and the next one lands.
    async with world_on(redis_process.url, Agent) as world:
        world.create(Agent(id="before"))
        await world.flush()
        await asyncio.to_thread(redis_process.restart)
        first = world.create(Agent(id="first"))
        reasons: set[str] = set()
        try:
            await asyncio.wait_for(world.flush(), 30)
        except synk.WriteError as exc:
            reasons = {f.reason for f in exc.failures}
        if reasons:
            assert reasons == {"connection"}
            await world.reload()
            first = world.create(Agent(id="first"))
            await asyncio.wait_for(world.flush(), 30)
        assert first.version == 1
        assert [o.id for o in await world.load(["world:0|0"])] == ["first"]


async def test_a_refused_subscription_fails_instead_of_hanging(redis_process: RedisProcess) -> None:
    # Redis may refuse a subscription for reasons other than a broken connection
    # (here an ACL that allows one channel only). subscribe() must then raise, and
    # the subscriber must keep serving its other keys.
    import redis.asyncio as aioredis

    admin = aioredis.Redis.from_url(redis_process.url)
    try:
        await admin.execute_command("ACL", "SETUSER", "limited", "on", ">pw", "~*", "resetchannels", "&t:{ok}:c", "+@all")  # type: ignore[no-untyped-call]
    finally:
        await admin.aclose()
    url = f"redis://limited:pw@127.0.0.1:{redis_process.port}/0"
    async with world_on(url, prefix="t:") as world:
        sub = world.subscribe()
        try:
            await asyncio.wait_for(sub.subscribe(["ok"]), 10)
            with pytest.raises(synk.SynkError):
                await asyncio.wait_for(sub.subscribe(["forbidden"]), 10)
            await world.publish("ok", {"method": "still"})
            assert await next_event(sub) == Event("ok", b'{"method":"still"}')
        finally:
            await asyncio.wait_for(sub.close(), 10)


async def test_subscriber_keys_added_while_down_are_subscribed_after(redis_process: RedisProcess) -> None:
    async with world_on(redis_process.url) as world:
        sub = world.subscribe()
        try:
            await asyncio.wait_for(sub.subscribe(["a"]), 10)
            await asyncio.to_thread(redis_process.stop)
            pending = asyncio.ensure_future(sub.subscribe(["b"]))
            await asyncio.to_thread(redis_process.start)
            await asyncio.wait_for(pending, 30)
            assert await next_event(sub, timeout=30) == Event(None, gap=frozenset({"a", "b"}))
            await world.publish("b", {"method": "hi"})
            await world.publish("a", {"method": "hi"})
            assert {(await next_event(sub)).key for _ in range(2)} == {"a", "b"}
        finally:
            await sub.close()


async def test_flush_while_down_then_reload(redis_process: RedisProcess) -> None:
    async with world_on(redis_process.url, Agent) as world:
        a = world.create(Agent(id="a1"))
        b = world.create(Agent(id="b1", x=40))
        await world.flush()

        await asyncio.to_thread(redis_process.stop)
        a.name = "lost"
        world.delete(b)
        world.create(Agent(id="c1"))
        with pytest.raises(synk.WriteError) as info:
            await asyncio.wait_for(world.flush(), 60)
        failures = info.value.failures
        assert {f.reason for f in failures} == {"connection"}
        assert sorted((f.id, f.op) for f in failures) == [("a1", "update"), ("b1", "delete"), ("c1", "create")]
        assert "unreachable" in failures[0].detail
        assert "3 object write(s) failed" in str(info.value)

        await asyncio.to_thread(redis_process.start)
        # The restarted Redis is empty: every owned object is reported missing.
        report = await asyncio.wait_for(world.reload(), 30)
        assert {o.id for o in report.missing} == {"a1", "c1"}
        assert report.reloaded == 0

        # The simulation goes on: ids are free and writes land again.
        again = world.create(Agent(id="a1", name="again"))
        await world.flush()
        assert again.version == 1
        [stored] = await world.load(["world:0|0"])
        assert stored is again


async def test_unawaited_flush_while_down_is_reported(redis_process: RedisProcess) -> None:
    async with world_on(redis_process.url, Agent) as world:
        a = world.create(Agent())
        await world.flush()
        await asyncio.to_thread(redis_process.stop)
        errors, got = record_errors(world)
        a.x = 1
        world.flush()  # not awaited
        await asyncio.wait_for(got.wait(), 60)
        assert errors[0].failures[0].reason == "connection"
        with pytest.raises(synk.WriteError, match="connection"):
            world.flush()
        await asyncio.to_thread(redis_process.start)
        report = await world.reload()
        assert report.missing == [a]


@pytest.mark.parametrize(("count", "text"), [(500, "small"), (5000, "x" * 1000)], ids=["replies", "sends"])
async def test_a_redis_that_stops_answering_fails_the_flush_in_bounded_time(redis_process: RedisProcess, count: int, text: str) -> None:
    # The server keeps the connection open but answers nothing (SIGSTOP): the
    # flush fails once nothing has moved for over the socket timeout (here
    # 1 s), at most twice that; whether it waits for replies, or (5 MB) for
    # the server to take what is sent.
    async with world_on(redis_process.url + "?socket_timeout=1", Note) as world:
        notes = [world.create(Note(id=f"n{i}", sub_key=f"k{i % 7}")) for i in range(count)]
        await world.flush()
        for n in notes:
            n.text = text
        assert redis_process.proc is not None
        redis_process.proc.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(synk.WriteError) as info:
                await asyncio.wait_for(world.flush(), 30)
            assert {f.reason for f in info.value.failures} == {"connection"}
            assert len(info.value.failures) == count
            if count == 500:  # (a blocked send may also be reported by redis-py's own write timeout)
                assert "neither took data nor answered for over 1 s" in info.value.failures[0].detail
        finally:
            redis_process.proc.send_signal(signal.SIGCONT)
        # The outcome was unknown; the stored state tells.
        report = await world.reload()
        assert report.missing == [] and report.reloaded == count


async def test_progress_guard_fails_even_when_a_step_swallowed_its_cancellation() -> None:
    # asyncio.wait_for (inside redis-py's sends) can swallow a cancellation on
    # Python 3.11 when its own await finishes in the same loop turn.
    progress = Progress(0.05)

    async def batch() -> None:
        async with progress.guard():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(1)  # a stalled step: the guard's deadline passes here
            progress.made()  # the step "finished" anyway
            raise AssertionError("the guard let the batch go on")

    with pytest.raises(TimeoutError):
        await batch()
    assert progress.expired


async def test_reads_while_down_raise_connection_error(redis_process: RedisProcess) -> None:
    async with world_on(redis_process.url, Agent) as world:
        await asyncio.to_thread(redis_process.stop)
        with pytest.raises(synk.ConnectionError):
            await asyncio.wait_for(world.load(["world:0|0"]), 60)
        with pytest.raises(synk.ConnectionError):
            await asyncio.wait_for(world.publish("room", {"method": "x"}), 60)
        with pytest.raises(synk.ConnectionError):
            await asyncio.wait_for(world.store.post(b"{}"), 60)
        await asyncio.to_thread(redis_process.start)
        assert await world.load(["world:0|0"]) == []


# -- refused writes --------------------------------------------------------------------------


async def test_out_of_memory_refuses_the_flush_whole(redis_process: RedisProcess) -> None:
    """A write Redis refuses is a WriteError, and no subscriber hears of it."""
    async with world_on(redis_process.url, Agent) as world:
        a = world.create(Agent(id="a1"))
        b = world.create(Agent(id="b1"))
        await world.flush()
        sub = world.subscribe()
        try:
            await asyncio.wait_for(sub.subscribe(["world:0|0", "world:1|0"]), 10)
            r = client(world)
            await r.config_set("maxmemory", 1)
            a.name = "refused"
            b.x = 20  # a move: its take-out must not land alone
            c = world.create(Agent(id="c1"))  # its id is not claimed either
            with pytest.raises(synk.WriteError) as info:
                await world.flush()
            assert sorted((f.id, f.reason) for f in info.value.failures) == [("a1", "refused"), ("b1", "refused"), ("c1", "refused")]
            assert await r.exists(redis_store(world).id_key("c1")) == 0
            assert all("none of it was applied" in f.detail for f in info.value.failures)
            await r.config_set("maxmemory", 0)
            await world.publish("world:0|0", {"method": "marker"})
            event = await next_event(sub)
            assert event == Event("world:0|0", b'{"method":"marker"}'), "the refused writes were published"
            report = await world.reload()
            assert report.missing == [c]  # the create never landed
            assert (a.name, a.version, b.x, b.sub_key) == ("", 1, 0, "world:0|0")
        finally:
            await sub.close()


async def test_data_synk_did_not_write_is_a_clear_error(redis_process: RedisProcess) -> None:
    async with world_on(redis_process.url, Note, prefix="t8:") as world:
        r = client(world)
        await r.hset("t8:{plain}:o", "x1", "just a string")
        with pytest.raises(synk.ConfigError, match=r"object 'x1' in key 'plain' is stored as b'just a string', which synk did not write"):
            await world.load(["plain"])
        await r.hset("t8:{nostate}:o", "x2", b'abc:3\n{"method":"add","t":"note"}')
        with pytest.raises(synk.ConfigError, match=r"object 'x2' in key 'nostate' has a record synk cannot read \('state'\)"):
            await world.load(["nostate"])
        assert await world.load(["elsewhere"]) == []  # and the world still works


async def test_a_delete_whose_id_release_is_refused_says_so(redis_process: RedisProcess) -> None:
    # A user allowed the key's objects but not the id registry (an ACL): the
    # delete lands, the release of its id does not, and the flush says so.
    async with world_on(redis_process.url, Note, prefix="t9:") as world:
        note = world.create(Note(id="n1", sub_key="k"))
        await world.flush()
        r = client(world)
        await r.execute_command("ACL", "SETUSER", "limited", "on", ">pw", "~t9:{*", "&*", "+@all")  # type: ignore[no-untyped-call]
        limited_url = redis_process.url.replace("redis://", "redis://limited:pw@")
        async with world_on(limited_url, Note, prefix="t9:") as other:
            [theirs] = await other.load(["k"])
            other.delete(theirs)
            with pytest.raises(synk.WriteError) as info:
                await other.flush()
            # The object is gone on purpose: reload() does not fail for good on its id
            # (a lost create's refused give-back, by contrast, makes it raise).
            await other.reload()
        [failure] = info.value.failures
        assert (failure.id, failure.op, failure.reason) == ("n1", "delete", "refused")
        assert "refused to free its id" in failure.detail
        assert await r.hget("t9:{k}:o", "n1") == f"{note._synk_token}:1\n!".encode()  # the delete landed; its mark stays
        assert await r.get("t9:id:{n1}") == note._synk_token.encode()


async def test_a_refused_release_of_a_lost_creates_id_is_tried_again_not_dropped(redis_process: RedisProcess) -> None:
    # Seen in the cluster failover test: a create's id claim landed, its record did not,
    # and reload()'s release of the claim was refused (the cluster still down). reload()
    # reported the object missing all the same and forgot the claim: recreate() made a
    # new incarnation, and every create of the id failed with "exists" from then on.
    # Here an ACL refuses what the failover refused, on one real Redis.
    async with world_on(redis_process.url, Note, prefix="t10:") as admin:
        r = client(admin)
        await r.execute_command("ACL", "SETUSER", "flip", "on", ">pw", "~t10:id:*", "&*", "+@all")  # type: ignore[no-untyped-call]
        client_url = redis_process.url.replace("redis://", "redis://flip:pw@")
        async with world_on(client_url, Note, prefix="t10:") as world:
            note = world.create(Note(id="n1", sub_key="k"))
            with pytest.raises(synk.WriteError) as info:
                await world.flush()  # the claim lands, the record is refused
            assert [(f.id, f.reason) for f in info.value.failures] == [("n1", "refused")]
            old = note._synk_token
            await r.set("t10:id:{n1}", old)  # as if the claim's give-back had been lost
            await r.execute_command("ACL", "SETUSER", "flip", "resetkeys", "~t10:{*")  # type: ignore[no-untyped-call]
            with pytest.raises(synk.ConnectionError, match="call reload\\(\\) again"):
                await world.reload()  # the release is refused: nothing is given up
            assert await r.get("t10:id:{n1}") == old.encode()
            await r.execute_command("ACL", "SETUSER", "flip", "resetkeys", "~t10:*")  # type: ignore[no-untyped-call]
            report = await world.reload()  # tried again: the id is free
            assert report.missing == [note] and await r.get("t10:id:{n1}") is None
            world.recreate(report.missing)
            await world.flush()
            assert await r.get("t10:id:{n1}") == note._synk_token.encode() and note._synk_token != old


async def test_reload_finds_an_object_whose_move_did_not_land(redis_process: RedisProcess) -> None:
    async with world_on(redis_process.url, Agent) as world:
        a = world.create(Agent(id="mover"))
        await world.flush()
        await client(world).save()  # what the restarted server will load
        await asyncio.to_thread(redis_process.stop)
        a.x = 20  # a move from world:0|0 to world:1|0, while Redis is down
        with pytest.raises(synk.WriteError) as info:
            await world.flush()
        assert info.value.failures[0].reason == "connection"
        await asyncio.to_thread(redis_process.start)
        report = await asyncio.wait_for(world.reload(), 30)
        assert report.missing == []
        assert (a.x, a.version, a.sub_key) == (0, 1, "world:0|0")
        a.name = "resumed"
        await world.flush()
        assert a.version == 2
