"""What only the Redis store does: key layout, hash slots, scripts, outages."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from redis.crc import key_slot

import synk
from synk.core.messages import encode_add
from synk.store.base import Event
from synk.store.redis import _LOADED, RedisStore, _Progress
from tests.conftest import record_errors
from tests.gateway_env import until_async
from tests.models import Agent, Note
from tests.redis_process import RedisProcess, free_port

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from synk.store.base import Subscriber

Call = tuple[str, list[str], list[Any]]


# -- helpers -------------------------------------------------------------------------


def crc16(data: bytes) -> int:
    """CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, as Redis Cluster uses."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def hash_slot(key: str) -> int:
    """The cluster hash slot of ``key``: of its hash tag when it has a non-empty one."""
    data = key.encode()
    start = data.find(b"{")
    if start != -1:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return crc16(data) % 16384


def redis_store(world: synk.World) -> RedisStore:
    store = world.store
    assert isinstance(store, RedisStore)
    return store


def client(world: synk.World) -> Redis:
    return redis_store(world).redis


async def next_event(sub: Subscriber, timeout: float = 10.0) -> Event:
    """The subscriber's next event, waiting at most ``timeout`` seconds."""
    it = sub.__aiter__()
    return await asyncio.wait_for(it.__anext__(), timeout)


async def landed(handle: synk.FlushHandle) -> None:
    await handle


@asynccontextmanager
async def world_on(url: str, *types: type[synk.Object], prefix: str | None = None) -> AsyncIterator[synk.World]:
    """A world on ``url`` with its own prefix (unique unless given)."""
    async with synk.connect(url, types=types, prefix=prefix or f"synktest:{uuid.uuid4().hex[:12]}:") as world:
        yield world


# -- the hash slot function itself ----------------------------------------------------


def test_crc16_reference_values() -> None:
    assert crc16(b"123456789") == 0x31C3  # the XMODEM check value
    assert crc16(b"") == 0
    # Examples from the Redis Cluster specification.
    assert hash_slot("foo") == 12182
    assert hash_slot("{user1000}.following") == hash_slot("{user1000}.followers") == hash_slot("user1000")
    assert hash_slot("foo{}{bar}") == crc16(b"foo{}{bar}") % 16384
    assert hash_slot("foo{{bar}}zap") == hash_slot("{bar")


@pytest.mark.parametrize("key", ["synk:{world:0|0}:r", "t1:id:{abc}", "plain", "a{b}c{d}", "{}x", "synk:{k}:c"])
def test_hash_slot_agrees_with_redis_py(key: str) -> None:
    assert hash_slot(key) == key_slot(key.encode())


# -- key layout --------------------------------------------------------------------------


async def test_documented_key_layout(redis_process: RedisProcess) -> None:
    async with world_on(redis_process.url, Agent, prefix="t1:") as world:
        r = client(world)
        a = world.create(Agent(id="ID", x=1))
        await world.flush()
        assert set(await r.keys("*")) == {b"t1:{world:0|0}:o", b"t1:id:{ID}"}
        assert await r.type("t1:{world:0|0}:o") == b"hash"
        assert await r.type("t1:id:{ID}") == b"string"
        token = a._synk_token
        assert await r.get("t1:id:{ID}") == token.encode()
        record = encode_add("agent", "ID", "world:0|0", 1, {"x": 1, "y": 0, "name": "", "tags": [], "info": {}}, inc=token)
        assert await r.hgetall("t1:{world:0|0}:o") == {b"ID": f"{token}:1\n".encode() + record}

        a.name = "n"
        await world.flush()
        stored: bytes | None = await r.hget("t1:{world:0|0}:o", "ID")  # type: ignore[assignment]
        assert stored is not None
        assert stored.startswith(f"{token}:2\n".encode())

        a.x = 40  # moves to world:2|0: the old key's hash goes away
        await world.flush()
        assert set(await r.keys("*")) == {b"t1:{world:2|0}:o", b"t1:id:{ID}"}

        world.delete(a)
        await world.flush()
        assert await r.keys("*") == []  # nothing left behind, the id is free again


async def test_names_of_a_store() -> None:
    store = RedisStore("redis://127.0.0.1:1/0", prefix="t1:")
    try:
        assert store.objects_key("world:0|0") == "t1:{world:0|0}:o"
        assert store.channel("world:0|0") == "t1:{world:0|0}:c"
        assert store.id_key("ID") == "t1:id:{ID}"
        for key in ("world:0|0", "a", "x:y:z", "a/b@c#d+e=f,g~h-i.j_k"):
            assert store.key_of_channel(store.channel(key).encode()) == key
    finally:
        await store.close()


async def test_default_prefix(redis_url: str) -> None:
    async with synk.connect(redis_url, types=[Note]) as world:
        assert redis_store(world).prefix == "synk:"
        note_key = f"k{uuid.uuid4().hex[:8]}"
        n = world.create(Note(sub_key=note_key))
        await world.flush()
        r = client(world)
        try:
            assert await r.exists(f"synk:{{{note_key}}}:o", f"synk:id:{{{n.id}}}") == 2
        finally:
            world.delete(n)
            await world.flush()


async def test_messages_go_to_the_key_channel(redis_process: RedisProcess) -> None:
    async with world_on(redis_process.url, Agent, prefix="t1:") as world:
        sub = world.subscribe()
        try:
            await asyncio.wait_for(sub.subscribe(["world:0|0"]), 10)
            # A raw SPUBLISH on the documented channel reaches the subscriber.
            await client(world).execute_command("SPUBLISH", "t1:{world:0|0}:c", b"raw")  # type: ignore[no-untyped-call]
            assert await next_event(sub) == Event("world:0|0", b"raw")
        finally:
            await sub.close()


async def test_a_flush_publishes_a_keys_messages_together(redis_process: RedisProcess) -> None:
    async with world_on(redis_process.url, Agent, prefix="t1:") as world:
        pubsub: Any = client(world).pubsub()
        await pubsub.execute_command("SSUBSCRIBE", "t1:{world:0|0}:c")
        sub = world.subscribe()
        try:
            await asyncio.wait_for(sub.subscribe(["world:0|0"]), 10)
            agents = [world.create(Agent(id=f"a{i}")) for i in range(3)]
            await world.flush()
            # One channel message holding the three adds, one per line...
            data = await next_channel_message(pubsub)
            assert [orjson.loads(line)["id"] for line in data.split(b"\n")] == ["a0", "a1", "a2"]
            # ...which the subscriber hands out one by one.
            events = [await next_event(sub) for _ in range(3)]
            assert [(e.key, orjson.loads(e.data)["id"]) for e in events] == [("world:0|0", f"a{i}") for i in range(3)]
            # A call none of whose writes lands publishes nothing, not even an empty message.
            await client(world).hdel("t1:{world:0|0}:o", "a0")
            agents[0].name = "gone"
            with pytest.raises(synk.WriteError):
                await world.flush()
            await world.publish("world:0|0", {"method": "marker"})
            assert await next_channel_message(pubsub) == b'{"method":"marker"}'
        finally:
            await sub.close()
            await pubsub.aclose()


async def next_channel_message(pubsub: Any, timeout: float = 10.0) -> bytes:
    """The data of the next message a plain redis-py pub/sub receives."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        if msg is not None:
            data: bytes = msg["data"]
            return data
    raise AssertionError("no message within the deadline")


async def test_client_messages_stream(redis_process: RedisProcess) -> None:
    async with world_on(redis_process.url, prefix="t1:") as world:
        await world.store.post(b'{"client":"c","method":"m","data":{}}')
        assert await client(world).type("t1:msgs") == b"stream"


# -- one hash slot per script call ---------------------------------------------------------


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[Call]:
    """Every script call that any RedisStore makes during the test."""
    calls: list[Call] = []
    original = RedisStore._run

    names = {script.sha: name for name, script in _LOADED.items()}

    async def recording(self: RedisStore, batch: Iterable[bytes]) -> list[Any]:
        sent = list(batch)
        for call in sent:
            args = parse_resp(call)
            if args[0] == "EVALSHA":
                n = int(args[2])
                calls.append((names[args[1]], args[3 : 3 + n], args[3 + n :]))
            else:
                calls.append((args[0].lower(), args[1:2], args[2:]))
        return await original(self, sent)

    monkeypatch.setattr(RedisStore, "_run", recording)
    return calls


def parse_resp(data: bytes) -> list[str]:
    """The arguments of one RESP command (an array of bulk strings)."""
    head, _, rest = data.partition(b"\r\n")
    assert head.startswith(b"*")
    args = []
    for _ in range(int(head[1:])):
        size, _, rest = rest.partition(b"\r\n")
        assert size.startswith(b"$")
        n = int(size[1:])
        args.append(rest[:n].decode())
        rest = rest[n + 2 :]
    assert rest == b""
    return args


async def test_every_script_call_touches_one_slot(redis_url: str, recorded: list[Call]) -> None:
    prefix = f"synktest:{uuid.uuid4().hex[:12]}:"
    async with world_on(redis_url, Agent, prefix=prefix) as world, world_on(redis_url, Agent, prefix=prefix) as other:
        agents = [world.create(Agent(x=16 * i, y=16 * i)) for i in range(4)]
        await world.flush()  # claim, put
        for a in agents[:2]:
            a.name = "u"  # update
        agents[2].x += 16  # move: take out, put
        await world.flush()
        await other.load(["world:0|0", "world:3|3"])  # snapshot
        world.delete(agents[3])  # delete, release
        await world.flush()
        agents[0].name = "pending"
        await world.reload()  # fetch
    assert {name for name, _keys, _args in recorded} == {"set", "apply", "release", "hgetall", "hmget"}
    for name, keys, _args in recorded:
        assert keys, name
        assert len({hash_slot(k) for k in keys}) == 1, (name, keys)
        assert all(k.startswith(prefix) for k in keys), (name, keys)
        if name == "apply":
            # the objects and the channel of one subscription key
            [objects, channel] = keys
            assert objects.endswith("}:o")
            assert channel.endswith("}:c")
            assert objects[:-2] == channel[:-2]
        elif name in ("hgetall", "hmget"):
            [objects] = keys
            assert objects.endswith("}:o")
        else:
            [id_key] = keys
            assert id_key.startswith(f"{prefix}id:{{")


async def test_large_batches_stay_in_one_slot_per_call(redis_url: str, recorded: list[Call]) -> None:
    # 2,500 objects in one key: apply and fetch calls are chunked, each chunk in the key's slot.
    async with world_on(redis_url, Note) as world:
        notes = [world.create(Note(sub_key="crowd", text=str(i))) for i in range(2500)]
        await world.flush()
        for n in notes:
            n.text += "!"
        await world.flush()
        report = await world.reload()
        assert report.reloaded == 2500 and report.missing == []
        assert {n.version for n in notes} == {2}
        assert len(await world.load(["crowd"])) == 2500
    applies = [keys for name, keys, _ in recorded if name == "apply"]
    fetches = [keys for name, keys, _ in recorded if name == "hmget"]
    assert len(applies) >= 4
    assert len(fetches) >= 2
    assert len({hash_slot(k) for keys in applies + fetches for k in keys}) == 1


async def test_chunked_calls_follow_up_and_report_each_write(redis_url: str) -> None:
    # 4,500 writes in one key take three apply.lua calls: moves, deletes and
    # conflicts in the later ones are matched to the right objects.
    prefix = f"synktest:{uuid.uuid4().hex[:12]}:"
    async with world_on(redis_url, Note, prefix=prefix) as world, world_on(redis_url, Note, prefix=prefix) as other:
        notes = [world.create(Note(id=f"n{i}", sub_key="crowd")) for i in range(4500)]
        await world.flush()
        theirs = {o.id: o for o in await other.load(["crowd"]) if isinstance(o, Note)}
        for oid in ("n2100", "n4400"):
            theirs[oid].text = "other"
        await other.flush()
        for n in notes:
            n.text = "mine"
        for i in (2050, 4300):
            notes[i].sub_key = "elsewhere"
        for i in (2200, 4450):
            world.delete(notes[i])
        with pytest.raises(synk.WriteError) as info:
            await world.flush()
        failed = sorted((f.id, f.op, f.reason) for f in info.value.failures)
        assert failed == [("n2100", "update", "conflict"), ("n4400", "update", "conflict")]
        async with world_on(redis_url, Note, prefix=prefix) as reader:
            moved = await reader.load(["elsewhere"])
            assert sorted((o.id, o.version) for o in moved) == [("n2050", 2), ("n4300", 2)]
            crowd = {o.id: o for o in await reader.load(["crowd"])}
        assert len(crowd) == 4496 and not {"n2050", "n4300", "n2200", "n4450"} & set(crowd)
        assert {o.version for o in crowd.values()} == {2}
        # the deleted ids were released: they can be created again
        world.create(Note(id="n2200", sub_key="crowd"))
        world.create(Note(id="n4450", sub_key="crowd"))
        await world.flush()


@pytest.fixture
def cluster_node() -> Iterator[RedisProcess]:
    """A single-node Redis Cluster: it refuses any command whose keys span slots (CROSSSLOT)."""
    server = RedisProcess(None, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-port", str(free_port()))
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def open_cluster(server: RedisProcess) -> None:
    """Give the node every slot and wait (with a deadline) until the cluster is up."""
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(server.url)
    try:
        await r.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)  # type: ignore[no-untyped-call]

        async def up() -> bool:
            return b"cluster_state:ok" in await r.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]

        await until_async(up, "the cluster to come up")
    finally:
        await r.aclose()


async def test_write_path_on_a_cluster_node(cluster_node: RedisProcess) -> None:
    await open_cluster(cluster_node)
    async with world_on(cluster_node.url, Agent, prefix="c:") as world, world_on(cluster_node.url, Agent, prefix="c:") as other:
        sub = world.subscribe()
        try:
            await asyncio.wait_for(sub.subscribe(["world:0|0"]), 10)
            a = world.create(Agent(id="c1"))
            b = world.create(Agent(id="c2", x=20))
            await world.flush()
            a.x = 40
            b.name = "b"
            await world.flush()
            world.delete(b)
            await world.flush()
            [loaded] = await other.load(["world:2|0"])
            assert loaded.id == "c1"
            report = await world.reload()
            assert report.missing == [] and report.reloaded == 1
            await world.publish("world:0|0", {"method": "ping"})
            kinds = [orjson.loads((await next_event(sub)).data)["method"] for _ in range(3)]
            assert kinds == ["add", "mod", "ping"]
        finally:
            await sub.close()


async def test_subscribing_to_keys_of_several_slots_on_a_cluster_node(cluster_node: RedisProcess) -> None:
    # One SSUBSCRIBE may only name channels of one slot; keys of a map span many.
    await open_cluster(cluster_node)
    async with world_on(cluster_node.url, Agent) as world:
        keys = ["world:0|0", "world:1|0", "world:0|1"]
        assert len({hash_slot(redis_store(world).channel(k)) for k in keys}) > 1
        sub = world.subscribe()
        try:
            await asyncio.wait_for(sub.subscribe(keys), 10)
            for key in keys:
                await world.publish(key, {"method": "ping", "key": key})
            got = {orjson.loads((await next_event(sub)).data)["key"] for _ in keys}
            assert got == set(keys)
        finally:
            await sub.close()


# -- scripts by SHA ------------------------------------------------------------------------------


async def commandstats(r: Redis) -> dict[str, Any]:
    stats: dict[str, Any] = await r.info("commandstats")
    return stats


async def test_scripts_are_called_by_sha(redis_process: RedisProcess) -> None:
    async with world_on(redis_process.url, Agent) as world:
        a = world.create(Agent())
        await world.flush()
        a.x = 1
        await world.flush()
        world.delete(a)
        await world.flush()
        await world.load(["world:0|0"])
        stats = await commandstats(client(world))
    assert stats["cmdstat_evalsha"]["calls"] == 4  # apply: put, update, delete; release
    assert "cmdstat_eval" not in stats


async def test_flush_after_script_flush_reloads_scripts(redis_process: RedisProcess) -> None:
    async with world_on(redis_process.url, Agent, prefix="s:") as world, world_on(redis_process.url, Agent, prefix="s:") as other:
        r = client(world)
        sub = world.subscribe()
        try:
            await asyncio.wait_for(sub.subscribe(["world:0|0"]), 10)
            a = world.create(Agent(id="s1"))
            await world.flush()
            assert (await next_event(sub)).key == "world:0|0"
            await r.script_flush()
            a.name = "after"
            b = world.create(Agent(id="s2"))
            await world.flush()  # evalsha gets NOSCRIPT: load and call again, once
            assert a.version == 2 and b.version == 1
            messages = [orjson.loads((await next_event(sub)).data) for _ in range(2)]
            assert sorted((m["method"], m["id"], m["v"]) for m in messages) == [("add", "s2", 1), ("mod", "s1", 2)]
            await r.script_flush()
            assert {o.id for o in await other.load(["world:0|0"])} == {"s1", "s2"}  # snapshot too
            await r.script_flush()
            assert (await world.reload()).reloaded == 2  # and fetch
        finally:
            await sub.close()
        stats = await commandstats(r)
    assert "cmdstat_eval" not in stats


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
            # The subscription is back: an Event with key None says messages may have been missed.
            assert await next_event(sub, timeout=30) == Event(None)

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
            await asyncio.wait_for(landed(world.flush()), 30)
        except synk.WriteError as exc:
            reasons = {f.reason for f in exc.failures}
        if reasons:
            assert reasons == {"connection"}
            await world.reload()
            first = world.create(Agent(id="first"))
            await asyncio.wait_for(landed(world.flush()), 30)
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
            assert await next_event(sub, timeout=30) == Event(None)
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
            await asyncio.wait_for(landed(world.flush()), 60)
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
    progress = _Progress(0.05)

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
        [failure] = info.value.failures
        assert (failure.id, failure.op, failure.reason) == ("n1", "delete", "refused")
        assert "refused to free its id" in failure.detail
        assert await r.hlen("t9:{k}:o") == 0  # the delete itself landed
        assert await r.get("t9:id:{n1}") == note._synk_token.encode()


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
