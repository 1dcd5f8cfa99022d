"""What only the Redis store does: key layout, channels, hash slots, scripts (outages: test_store_redis_outage.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from redis.crc import key_slot

import synk
from bench.chaos.proxy import Proxy
from bench.redis_process import RedisProcess, free_port
from synk.core.messages import encode_add
from synk.store.base import Event
from synk.store.redis import RedisStore
from synk.store.scripts import LOADED
from tests.gateway_env import until, until_async
from tests.models import Agent, Note
from tests.redis_env import client, next_event, reading_messages, redis_store, world_on

if TYPE_CHECKING:
    from redis.asyncio import Redis


Call = tuple[str, list[str], list[Any]]


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

        a.x = 40  # moves to world:2|0, leaving a mark in the old key until the next flush sweeps it
        await world.flush()
        assert set(await r.keys("*")) == {b"t1:{world:0|0}:o", b"t1:{world:2|0}:o", b"t1:id:{ID}"}
        mark: bytes = await r.hget("t1:{world:0|0}:o", "ID")  # type: ignore[assignment]
        moved = encode_add("agent", "ID", "world:2|0", 3, {"x": 40, "y": 0, "name": "n", "tags": [], "info": {}}, inc=token)
        assert mark == f"{token}:3\n>world:2|0\n".encode() + moved  # its record where it went

        world.delete(a)  # sweeps the move's mark; leaves one of the delete until the id is released
        await world.flush()
        assert set(await r.keys("*")) == {b"t1:{world:2|0}:o"}  # the id is free again
        assert await r.hgetall("t1:{world:2|0}:o") == {b"ID": f"{token}:3\n!".encode()}
    assert await r.keys("*") == []  # closing the world swept the last mark: nothing left behind


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


async def test_client_messages_are_dropped_while_no_simulation_reads_them(redis_process: RedisProcess) -> None:
    async with world_on(redis_process.url, prefix="t1:") as world:
        r = client(world)
        for _ in range(100):
            assert await world.store.post(b'{"client":"c","method":"m","data":{}}') is False
        assert await r.keys("t1:*") == []  # nothing reads them: nothing is kept

        async def flagged() -> bool:
            return bool(await r.exists("t1:{msgs}:reader"))

        async with reading_messages(world) as received:
            await until_async(flagged, "the reader's flag")
            assert await world.store.post(b'{"client":"c","method":"m","data":{"n":1}}') is True
            await until(lambda: len(received) == 1, "the message read")
            assert received == [synk.ClientMessage("c", "m", {"n": 1})]
            assert await r.type("t1:{msgs}") == b"stream"


async def test_a_client_message_posted_between_two_reads_of_the_stream_is_read(redis_process: RedisProcess) -> None:
    """The reader's XREAD blocks for a second at a time: a message appended after
    one read timed out and before the next reached Redis must still be read
    (the demo's first click was lost that way, one run in five)."""
    async with (
        Proxy(redis_process.port) as proxy,
        world_on(proxy.url, prefix="t1:") as world,
        world_on(redis_process.url, prefix="t1:") as gateway,
    ):
        r = client(gateway)

        async def blocked() -> bool:
            """Whether a connection waits in a blocking XREAD now."""
            return any("b" in c["flags"] for c in await r.client_list())

        async def not_blocked() -> bool:
            return not await blocked()

        async with reading_messages(world) as received:
            await until_async(blocked, "the reader blocked in XREAD")
            proxy.hold_existing()  # the reader's next XREAD waits in the proxy
            await until_async(not_blocked, "the reader's XREAD to time out", timeout=5)
            assert await gateway.store.post(b'{"client":"c","method":"m","data":{"n":1}}') is True
            proxy.heal()
            await until(lambda: len(received) == 1, "the message read")
            assert received == [synk.ClientMessage("c", "m", {"n": 1})]


async def test_a_client_message_posted_as_the_reader_starts_is_read(redis_process: RedisProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """A post accepted once the reader's flag is set must be read: the reader takes
    its starting id before it sets the flag, never after (a post in between was lost)."""
    async with world_on(redis_process.url, prefix="t1:") as world, world_on(redis_process.url, prefix="t1:") as gateway:
        store = redis_store(world)
        real_set = store.commands.set
        posted: list[bool] = []

        async def set_then_post(*args: Any, **kwargs: Any) -> Any:
            out = await real_set(*args, **kwargs)
            if not posted:  # the first flag: a gateway posts right then
                posted.append(await gateway.store.post(b'{"client":"c","method":"m","data":{"n":1}}'))
            return out

        monkeypatch.setattr(store.commands, "set", set_then_post)
        async with reading_messages(world) as received:
            await until(lambda: bool(posted), "the post")
            assert posted == [True]  # accepted: the flag was set
            await until(lambda: len(received) == 1, "the message read", timeout=5)


async def test_the_client_message_stream_is_bounded_in_bytes_and_entries(redis_process: RedisProcess) -> None:
    async with world_on(redis_process.url, prefix="t1:") as world:
        store = redis_store(world)
        store.stream_max_entries, store.stream_max_bytes = 50, 200_000
        r = client(world)
        await r.set("t1:{msgs}:reader", b"1")  # a simulation reads (and is slow: nothing is consumed)
        big = b'{"client":"c","method":"m","data":{"s":"' + b"x" * 60_000 + b'"}}'
        for _ in range(40):
            assert await store.post(big) is True
        kept = await r.xlen("t1:{msgs}")
        assert kept == 3  # three messages of 60 KB fit in 200,000 bytes
        assert int(await r.get("t1:{msgs}:bytes")) == 3 * len(big)  # type: ignore[arg-type]
        for _ in range(120):
            await store.post(b'{"client":"c","method":"m","data":{}}')
        assert await r.xlen("t1:{msgs}") == 50  # small ones: the entry bound


# -- one hash slot per script call ---------------------------------------------------------


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[Call]:
    """Every script call that any RedisStore makes during the test."""
    calls: list[Call] = []
    original = RedisStore._run

    names = {script.sha: name for name, script in LOADED.items()}

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
        await world.store.claims([agents[0].id])  # get (load() reads claims to settle half-way writes)
        await world.store.post(b"{}")  # post
    assert {name for name, _keys, _args in recorded} == {"set", "apply", "release", "hgetall", "hmget", "get", "post"}
    for name, keys, args in recorded:
        assert keys, name
        assert len({key_slot(k.encode()) for k in keys}) == 1, (name, keys)
        assert all(k.startswith(prefix) for k in keys), (name, keys)
        if name == "apply":
            # the objects of one subscription key; its channel, in the same slot, is the last argument
            [objects] = keys
            channel = args[-1]
            assert objects.endswith("}:o")
            assert channel.endswith("}:c")
            assert objects[:-2] == channel[:-2]
        elif name in ("hgetall", "hmget"):
            [objects] = keys
            assert objects.endswith("}:o")
        elif name == "post":
            assert keys == [f"{prefix}{{msgs}}", f"{prefix}{{msgs}}:bytes", f"{prefix}{{msgs}}:reader"]
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
    assert len({key_slot(k.encode()) for keys in applies + fetches for k in keys}) == 1


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
        assert len({key_slot(redis_store(world).channel(k).encode()) for k in keys}) > 1
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
    # apply: pending create, its activation, update, delete; release
    assert stats["cmdstat_evalsha"]["calls"] == 5
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


# -- subscribing ---------------------------------------------------------------------------------


async def test_subscriptions_asked_together_go_in_few_commands(redis_process: RedisProcess) -> None:
    # One SSUBSCRIBE per key, behind one lock, drained ~1,100 keys a second:
    # a flood of changes kept other keys waiting for tens of seconds. Keys
    # asked for meanwhile now go in one command (of at most 500 channels).
    async with world_on(redis_process.url, Agent, prefix="s:") as world:
        sub = world.subscribe()
        try:
            keys = [f"k:{i}" for i in range(1200)]
            await asyncio.wait_for(asyncio.gather(*(sub.subscribe([k]) for k in keys)), 30)
            r = client(world)
            subscribed: Any = await r.execute_command("PUBSUB", "SHARDCHANNELS", "s:*")  # type: ignore[no-untyped-call]
            assert len(subscribed) == 1200
            stats = await commandstats(r)
            assert stats["cmdstat_ssubscribe"]["calls"] <= 4, stats["cmdstat_ssubscribe"]
            await asyncio.wait_for(asyncio.gather(*(sub.unsubscribe([k]) for k in keys[1:])), 30)
            stats = await commandstats(r)
            assert stats["cmdstat_sunsubscribe"]["calls"] <= 4, stats["cmdstat_sunsubscribe"]

            async def only_first() -> bool:
                reply: Any = await r.execute_command("PUBSUB", "SHARDCHANNELS", "s:*")  # type: ignore[no-untyped-call]
                return bool(reply == [b"s:{k:0}:c"])

            await until_async(only_first, "PUBSUB SHARDCHANNELS to hold the one key left")
            await world.publish("k:0", {"method": "still"})
            assert await next_event(sub) == Event("k:0", b'{"method":"still"}')
        finally:
            await sub.close()


async def test_a_key_left_and_asked_again_at_once_stays_subscribed(redis_process: RedisProcess) -> None:
    async with world_on(redis_process.url, Agent, prefix="s:") as world:
        sub = world.subscribe()
        try:
            await asyncio.wait_for(sub.subscribe(["a"]), 10)
            pending = [asyncio.ensure_future(sub.unsubscribe(["a"])), asyncio.ensure_future(sub.subscribe(["a"]))]
            await asyncio.wait_for(asyncio.gather(*pending), 10)
            await world.publish("a", {"method": "still"})
            assert await next_event(sub) == Event("a", b'{"method":"still"}')
        finally:
            await sub.close()


async def test_a_consumer_that_falls_behind_gets_a_resync_not_unbounded_memory(
    redis_process: RedisProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    from synk.store import redis_subscriber

    monkeypatch.setattr(redis_subscriber, "MAX_QUEUE", 100)
    async with world_on(redis_process.url, Agent, prefix="q:") as world:
        sub = world.subscribe()
        try:
            await asyncio.wait_for(sub.subscribe(["room"]), 10)
            for i in range(250):
                await world.publish("room", {"method": "n", "i": i})
            await world.publish("room", {"method": "last"})
            assert isinstance(sub, redis_subscriber.RedisSubscriber)
            seen: list[Event] = []
            while not seen or seen[-1].data != b'{"method":"last"}':
                seen.append(await next_event(sub))
                assert sub._queue.qsize() <= 101
            # (how many overflows depends on how far the reader got before this loop began)
            assert sub.overflows >= 1
            assert Event(None) in seen
            assert len(seen) < 251
        finally:
            await sub.close()
