"""Compact mods (PROTOCOL.md, "Compact mods"): the converter fed messages, and a gateway's clients.

The invariant: a compact client's mirror, with its key's mods expanded
through the handles its adds taught it, equals a plain client's and the
store's, every handle it is sent is one it learned, and it gets the same
messages in far fewer bytes.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from synk.core.messages import encode_add, encode_mod, rem_json
from synk.gateway.compact import Compactor
from tests.gateway_env import hold_reads, running, store_view, until
from tests.models import Agent
from tests.wsclient import WsClient


def compactor(followed: set[str] | None = None) -> Compactor:
    return Compactor(lambda key: followed is None or key in followed)


def add(oid: str, key: str, v: int = 1, inc: str = "i1", prev: str | None = None) -> bytes:
    return encode_add("agent", oid, key, v, {"x": 1}, prev_key=prev, inc=inc)


def mod(oid: str, key: str, v: int, diff: dict[str, object], inc: str = "i1", next_key: str | None = None) -> bytes:
    return encode_mod("agent", oid, key, v, diff, next_key=next_key, inc=inc)


def test_an_add_carries_a_handle_and_the_objects_plain_mods_become_a_keys_mods() -> None:
    c = compactor()
    assert c.convert(mod("a", "k1", 2, {"x": 2})) == mod("a", "k1", 2, {"x": 2}), "no add sent yet: the full mod"
    first = c.convert(add("a", "k1"))
    assert first == b'{"h":1,' + add("a", "k1")[1:]
    assert orjson.loads(c.convert(add("b", "k1")))["h"] == 2
    assert c.convert(mod("a", "k1", 2, {"x": 2.5, "name": "n"})) == b'["k1",[1,2,{"x":2.5,"name":"n"}]]'
    assert c.convert(add("a", "k1", v=3)) == b'{"h":1,' + add("a", "k1", v=3)[1:], "the same object keeps its handle"


def test_a_move_stays_whole_and_the_handle_follows_the_object_unless_nobody_follows_its_key() -> None:
    c = compactor(followed={"k1", "k2"})
    c.convert(add("a", "k1"))
    c.convert(add("b", "k1"))
    moved = mod("a", "k1", 2, {"x": 17}, next_key="k2")
    assert c.convert(moved) == moved
    assert c.convert(add("a", "k2", v=2, prev="k1")).startswith(b'{"h":1,')
    assert c.convert(mod("a", "k2", 3, {})) == b'["k2",[1,3,{}]]'
    gone = mod("b", "k1", 2, {"x": 99}, next_key="k9")  # k9: no client of this gateway follows it
    assert c.convert(gone) == gone
    assert ("b", "i1") not in c.handles
    assert c.convert(mod("b", "k9", 3, {})) == mod("b", "k9", 3, {})


def test_a_rem_or_a_key_nobody_follows_ends_handles_and_a_handle_is_never_given_again() -> None:
    c = compactor()
    c.convert(add("a", "k1"))
    c.convert(add("b", "k2"))
    c.convert(rem_json("agent", "a", "k1", "i1"))
    assert ("a", "i1") not in c.handles
    assert c.convert(mod("a", "k1", 2, {})) == mod("a", "k1", 2, {})
    # A stale snapshot's add of the deleted incarnation binds nothing (it would stay for good).
    assert c.convert(add("a", "k1")) == add("a", "k1")
    c.forget_key("k2")
    assert c.handles == {} and c.by_key == {}
    assert orjson.loads(c.convert(add("a", "k1", inc="i2")))["h"] == 3
    assert orjson.loads(c.convert(add("b", "k2")))["h"] == 4


def test_a_stale_add_or_move_neither_refiles_nor_drops_the_handle() -> None:
    # An old snapshot's add of a key the object left, or a move replayed late, must
    # not file the handle under the old key: forget_key of that key would then drop
    # a handle that clients of the object's real key hold (their next mods would
    # name a new one they never learned).
    followed = {"k1", "k2"}
    c = Compactor(lambda k: k in followed)
    stale_snapshot = add("x", "k1", v=5)
    h1 = orjson.loads(c.convert(add("x", "k2", v=6, prev="k1")))["h"]
    assert orjson.loads(c.convert(stale_snapshot))["h"] == h1
    c.convert(mod("x", "k1", 6, {}, next_key="k2"))  # the replay after that snapshot
    assert c.handles[("x", "i1")] == (h1, "k2", 6)
    followed.discard("k1")
    c.forget_key("k1")
    assert c.convert(mod("x", "k2", 7, {"y": 1})) == b'["k2",[%d,7,{"y":1}]]' % h1
    c.convert(mod("x", "k1", 6, {}, next_key="k9"))  # an older move, to a key nobody follows
    assert ("x", "i1") in c.handles


def test_a_cached_conversion_never_names_a_dropped_handle() -> None:
    c = Compactor(lambda k: k == "k1")
    c.convert(add("x", "k1", v=5))
    m6 = mod("x", "k1", 6, {"x": 2})
    assert c.convert(m6) == b'["k1",[1,6,{"x":2}]]'
    c.convert(mod("x", "k1", 7, {"x": 3}, next_key="k9"))  # nobody follows k9: the handle goes
    assert orjson.loads(c.convert(add("x", "k1", v=5)))["h"] == 2  # a snapshot read before m6
    assert c.convert(m6) == b'["k1",[2,6,{"x":2}]]', "the replay names the handle that snapshot taught"


def test_a_run_joins_consecutive_short_mods_in_one_item_and_keeps_the_order() -> None:
    c = compactor()
    for oid in "abc":
        c.convert(add(oid, "k1"))
    run = [
        mod("a", "k1", 2, {"x": 1}),
        mod("b", "k1", 2, {"x": 2}),
        add("d", "k1"),
        mod("c", "k1", 2, {"x": 3}, next_key="k2"),
        mod("a", "k1", 3, {"x": 4}),
        b'{"method":"chat","text":"hi"}',
    ]
    out = c.convert_run(run, b",".join(run))
    items = orjson.loads(b"[%b]" % out)
    assert items == [
        ["k1", [1, 2, {"x": 1}], [2, 2, {"x": 2}]],
        {"h": 4, **orjson.loads(add("d", "k1"))},
        orjson.loads(run[3]),
        ["k1", [1, 3, {"x": 4}]],
        {"method": "chat", "text": "hi"},
    ]


def test_what_is_not_an_object_message_passes_as_it_is() -> None:
    c = compactor()
    for data in (b'{"method":"snap","sKey":"k1","ids":[]}', b'{"method":"hello","client":"1"}', b'{"method":"mod","id":3}', b"{"):
        assert c.convert(data) == data


KEYS = ["world:0|0", "world:1|0"]


@pytest.mark.parametrize("store", ["memory", "redis"])
@pytest.mark.parametrize("batch", [True, False])
async def test_a_compact_client_mirrors_what_a_plain_one_does_in_far_fewer_bytes(store: str, batch: bool, redis_url: str) -> None:
    async with running(None if store == "memory" else redis_url) as env:
        world = env.world
        agents = [world.create(Agent(id=f"c{i}-{store}-{batch}", x=16 * (i % 3))) for i in range(30)]
        await world.flush()
        compact = await WsClient.open(env.url, batch=batch, compact=True)
        plain = await WsClient.open(env.url, batch=batch)
        for client in (compact, plain):
            await client.subscribe(KEYS)
        for step in range(20):
            for a in agents[step % 3 :: 3]:
                a.y = step
            if step % 5 == 4:
                mover = agents[step]
                mover.x = 16 * ((mover.x // 16 + 1) % 3)  # moves between followed keys and one that is not
            if step == 10:
                world.delete(agents[0])
                world.create(Agent(id=f"late-{store}-{batch}", x=0))
            await world.flush()
        expected = await store_view(world, KEYS)
        for client in (compact, plain):
            await client.wait(lambda c=client: c.mirror == expected, timeout=20)  # type: ignore[misc]
            client.assert_consecutive_versions()
        assert compact.unknown_handles == 0
        assert compact.compact_items > 0
        assert compact.of("resync") == []
        plain_bytes = sum(len(f) for f in plain.frames)
        compact_bytes = sum(len(f) for f in compact.frames)
        assert compact_bytes < 0.7 * plain_bytes, (compact_bytes, plain_bytes)
        await compact.close()
        await plain.close()


async def test_the_original_client_asking_for_compact_mods_gets_plain_messages() -> None:
    # synk_compact=1 means something only with synk_resnap=1 (synk's own client).
    async with running(None) as env:
        env.world.create(Agent(id="o1", x=0))
        await env.world.flush()
        client = await WsClient.open(env.url, resnap=False, compact=True)
        await client.subscribe(["world:0|0"], wait=False)
        await client.wait(lambda: "o1" in client.mirror)
        agent = next(iter(env.world._owned.values()))
        agent.y = 3  # type: ignore[attr-defined]
        await env.world.flush()
        await client.wait(lambda: client.mirror["o1"]["v"] == 2)
        assert client.compact_items == 0 and client.handles == {}
        await client.close()


KA, KB = "world:0|0", "world:1|0"


# Found by a review (helper-16): each failed before the fix.
async def test_a_stale_snapshot_add_then_its_key_left_leaves_live_clients_their_handle() -> None:
    async with running(None) as env:
        world, gw = env.world, env.gateway
        x = world.create(Agent(id="x", x=0))  # in KA
        await world.flush()
        c = await WsClient.open(env.url, compact=True)
        await c.subscribe([KB])
        c2 = await WsClient.open(env.url, compact=True)
        read, gate = await hold_reads(env, KA, before=False)
        await c2.subscribe([KA], wait=False)
        await read.wait()
        x.x = 16  # x moves KA -> KB
        await world.flush()
        await c.wait(lambda: "x" in c.mirror)  # C got the add (with its handle) on KB
        gate.set()
        await c2.wait(lambda: any(m["method"] == "snap" for m in c2.messages))
        await c2.subscribe([], [KA], wait=False)  # C2 was KA's only client: forget_key(KA)
        await until(lambda: KA not in gw._compact_followers, "C2 to leave KA")
        c3 = await WsClient.open(env.url, compact=True)
        await c3.subscribe([KB])  # its snapshot's add binds x a new handle
        x.y = 3
        await world.flush()
        await c.wait(lambda: any(m["method"] == "mod" and m["v"] == 3 for m in c.messages) or c.unknown_handles > 0)
        assert c.unknown_handles == 0, "C got a key's mod naming a handle it never learned"
        for client in (c, c2, c3):
            await client.close()


async def test_a_replay_after_a_dropped_handle_names_the_handle_its_snapshot_taught() -> None:
    async with running(None) as env:
        world, gw = env.world, env.gateway
        x = world.create(Agent(id="x", x=0))  # in KA
        await world.flush()
        c1 = await WsClient.open(env.url, compact=True)
        await c1.subscribe([KA])
        c2 = await WsClient.open(env.url, compact=True)
        store: Any = gw.store
        read, gate = await hold_reads(env, KA, before=False)
        held: list[tuple[str, bytes]] = []
        deliver = store._deliver
        store._deliver = lambda key, data: held.append((key, data))
        await c2.subscribe([KA], wait=False)
        await read.wait()  # C2's read is done (x at v1); its barrier waits
        x.y = 1
        await world.flush()  # v2 on KA
        x.x = 16 * 5
        await world.flush()  # v3: moves to world:5|0, which nobody follows
        gate.set()
        await until(lambda: any(d.startswith(b'{"method":"~barrier"') for _, d in held), "C2's barrier")
        store._deliver = deliver
        for key, data in held:  # one fan-out round: [v2, v3 (move), C2's barrier]
            deliver(key, data)
        await c2.wait(lambda: any(m["method"] == "mod" and "nsKey" in m for m in c2.messages))  # the replay's last
        assert c2.unknown_handles == 0, "C2's replay of v2 names the handle dropped at v3 (a cached conversion)"
        for client in (c1, c2):
            await client.close()


async def test_handles_of_objects_deleted_where_no_compact_client_looks_are_dropped() -> None:
    async with running(None) as env:
        world, gw = env.world, env.gateway
        c = await WsClient.open(env.url, compact=True)
        await c.subscribe([KA])  # the spawn area, followed by a compact client
        p = await WsClient.open(env.url)  # synk's own client with compact: false
        await p.subscribe([KB])
        for n in range(20):
            a = world.create(Agent(id=f"m{n}", x=0))
            await world.flush()
            a.x = 16  # to KB: C gets the move, P the add
            await world.flush()
            world.delete(a)  # the rem goes to P only: never converted
            await world.flush()
        await p.wait(lambda: not p.mirror and len(p.of("rem")) == 20)
        assert len(gw.compactor.handles) == 0, f"{len(gw.compactor.handles)} handles of deleted objects kept"
        await c.close()
        await p.close()
