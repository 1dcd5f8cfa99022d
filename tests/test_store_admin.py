"""synk.store.admin: what is stored under a prefix, listed and purged, on a real Redis and a Redis Cluster."""

from __future__ import annotations

import re
import uuid

import pytest
import redis.asyncio as aioredis

import synk
from synk.store.admin import inventory, purge
from synk.store.redis import RedisStore
from tests.models import Agent


def fresh_prefix() -> str:
    return f"admintest:{uuid.uuid4().hex[:10]}:"


async def populate(url: str, prefix: str) -> None:
    """Five agents over three keys (world:0|0 holds a0 and a1)."""
    async with synk.connect(url, types=[Agent], prefix=prefix) as world:
        for n in range(5):
            world.create(Agent(id=f"a{n}", x=n * 10, y=1))
        await world.flush()


async def raw_hset(url: str, prefix: str, key: str, oid: str, value: bytes) -> None:
    """Write a stored entry as synk's store would (a mark left half-way, say)."""
    store = RedisStore(url, prefix=prefix)
    await store.open()
    try:
        await store.commands.hset(store.objects_key(key), oid, value)
    finally:
        await store.close()


async def test_inventory_counts_objects_marks_and_claims(redis_url: str) -> None:
    prefix = fresh_prefix()
    await populate(redis_url, prefix)
    # Marks of writes left half-way: a pending create, a move out, a delete.
    await raw_hset(redis_url, prefix, "world:0|0", "p1", b"tok1:1\n?" + b'{"method":"add"}')
    await raw_hset(redis_url, prefix, "world:0|0", "a2", b"tok2:3\n>world:2|0\n" + b'{"method":"add"}')
    await raw_hset(redis_url, prefix, "world:1|0", "gone", b"tok3:4\n!")
    await raw_hset(redis_url, prefix, "world:1|0", "alien", b"not synk's")
    r = aioredis.Redis.from_url(redis_url)
    try:
        await r.set(f"{prefix}something-else", b"1")
        await r.xadd(f"{prefix}{{msgs}}", {"m": b'{"method":"hi"}'})
        await r.set(f"{prefix}{{msgs}}:bytes", b"15")
    finally:
        await r.aclose()

    inv = await inventory(redis_url, prefix)
    assert inv.nodes == 1
    rows = {k.key: (k.objects, k.pending, k.moved, k.deleted) for k in inv.keys}
    assert rows == {"world:0|0": (2, 1, 1, 0), "world:1|0": (2, 0, 0, 1), "world:2|0": (1, 0, 0, 0)}
    assert inv.objects == 5
    assert inv.claims == ["a0", "a1", "a2", "a3", "a4"]
    assert inv.unplaced == []
    assert (inv.stream_length, inv.stream_bytes, inv.stream_reader) == (1, 15, False)
    assert inv.other == 2  # the alien value and the foreign name
    assert not inv.empty


async def test_an_empty_prefix_or_another_store_is_refused(redis_url: str) -> None:
    with pytest.raises(synk.ConfigError, match="the prefix is empty"):
        await inventory(redis_url, "")
    with pytest.raises(synk.ConfigError, match="the prefix is empty"):
        await purge(redis_url, "")
    with pytest.raises(synk.ConfigError, match="memory:// is not a redis:// URL"):
        await inventory("memory://", "synk:")


async def test_an_unreachable_redis_is_a_connection_error() -> None:
    with pytest.raises(synk.ConnectionError, match=re.escape("redis at redis://127.0.0.1:1/0 is unreachable")):
        await inventory("redis://127.0.0.1:1/0", "synk:")


async def test_glob_characters_in_the_prefix_match_literally(redis_url: str) -> None:
    prefix = f"admintest:{uuid.uuid4().hex[:6]}[*]:"
    await populate(redis_url, prefix)
    look_alike = prefix.replace("[*]", "x")  # what the pattern would match unescaped
    await populate(redis_url, look_alike)
    assert (await inventory(redis_url, prefix)).objects == 5
    await purge(redis_url, prefix)
    assert (await inventory(redis_url, prefix)).empty
    assert (await inventory(redis_url, look_alike)).objects == 5


async def test_purge_of_some_keys_releases_their_claims(redis_url: str) -> None:
    prefix = fresh_prefix()
    await populate(redis_url, prefix)
    # a2 lives in world:2|0; a move-out mark of it in world:0|0 (its incarnation's) must not release its claim.
    store = RedisStore(redis_url, prefix=prefix)
    await store.open()
    try:
        a2_token = (await store.claims(["a2"]))["a2"]
    finally:
        await store.close()
    assert a2_token is not None
    await raw_hset(redis_url, prefix, "world:0|0", "a2", f"{a2_token}:1\n>world:2|0\n".encode() + b'{"method":"add"}')

    done = await purge(redis_url, prefix, ["world:0|0"])
    assert (done.keys, done.objects, done.claims, done.stream) == (["world:0|0"], 3, 2, False)
    inv = await inventory(redis_url, prefix)
    assert [k.key for k in inv.keys] == ["world:1|0", "world:2|0"]
    assert inv.claims == ["a2", "a3", "a4"]  # a0 and a1 released, a2 kept where it lives
    assert inv.unplaced == []

    # The purged ids are free: a new world may create them again.
    async with synk.connect(redis_url, types=[Agent], prefix=prefix) as world:
        world.create(Agent(id="a0", x=1, y=1))
        await world.flush()
    assert (await inventory(redis_url, prefix)).claims == ["a0", "a2", "a3", "a4"]


async def test_purge_of_everything_leaves_other_names_alone(redis_url: str) -> None:
    prefix = fresh_prefix()
    await populate(redis_url, prefix)
    other = fresh_prefix()
    await populate(redis_url, other)
    r = aioredis.Redis.from_url(redis_url)
    try:
        await r.set(f"{prefix}not-synks", b"1")
        # Names of synk's shape holding a key or an id synk never writes are not synk's either.
        await r.hset(f"{prefix}{{session abc}}:o", "x", b"1")
        await r.set(f"{prefix}id:{{user:42}}", b"1")
        await r.set(f"{prefix}{{msgs}}:reader", b"1", px=60_000)
        done = await purge(redis_url, prefix)
        assert (sorted(done.keys), done.objects, done.claims, done.stream) == (["world:0|0", "world:1|0", "world:2|0"], 5, 5, True)
        inv = await inventory(redis_url, prefix)
        assert inv.empty
        assert inv.other == 3
        assert await r.get(f"{prefix}not-synks") == b"1"
        assert await r.exists(f"{prefix}{{session abc}}:o", f"{prefix}id:{{user:42}}") == 2
    finally:
        await r.aclose()
    assert (await inventory(redis_url, other)).objects == 5  # another prefix is untouched


async def test_on_a_cluster_every_primary_is_read_and_purged(redis_cluster_url: str) -> None:
    prefix = fresh_prefix()
    async with synk.connect(redis_cluster_url, types=[Agent], prefix=prefix) as world:
        # Many keys, so that they spread over the three primaries.
        for n in range(24):
            world.create(Agent(id=f"c{n}", x=n * 16, y=n * 16))
        await world.flush()
    inv = await inventory(redis_cluster_url, prefix)
    assert inv.nodes == 3
    assert len(inv.keys) == 24
    assert inv.objects == 24
    assert len(inv.claims) == 24

    done = await purge(redis_cluster_url, prefix, ["world:0|0", "world:1|1"])
    assert (done.keys, done.objects, done.claims) == (["world:0|0", "world:1|1"], 2, 2)
    inv = await inventory(redis_cluster_url, prefix)
    assert (len(inv.keys), len(inv.claims)) == (22, 22)
    assert "c0" not in inv.claims

    done = await purge(redis_cluster_url, prefix)
    assert (len(done.keys), done.claims) == (22, 22)
    assert (await inventory(redis_cluster_url, prefix)).empty
