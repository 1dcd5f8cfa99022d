"""Flush throughput: ``await world.flush()`` against a naive writer and the raw limit.

Workload (defaults): 10,000 objects spread evenly over 100 subscription keys;
every tick changes every object (``y`` and ``hp``), and moves 5% of them to
the next key (``x += 1``). Each variant reports object writes per second:

synk
    ``await world.flush()`` for the whole tick: planning (diffs, versions,
    JSON messages) and the store's two pipelined phases of apply.lua calls.
naive
    What the original Go library did: one round trip per object, a
    MULTI / HSET record / HSET guard / PUBLISH / EXEC transaction sent with
    redis-py and awaited before the next object. (A move adds HDELs from the
    old key and a second PUBLISH to the same transaction.)
naive, lean
    The same transactions as hand-made RESP on a plain socket: the round
    trips without redis-py's per-call cost, closer to a Go client.
    Informational; the target is judged against ``naive``.
raw
    The limit of Redis itself: the exact values and messages synk wrote in
    its ticks, pre-encoded as one RESP buffer of plain commands (an HSET of
    each object's stored value, an HDEL from the old key per move, and per
    key one SPUBLISH of the messages synk published there together; no
    scripts, no guard checks), written to a plain socket with every reply
    read back. Encoding the buffer is not timed.

raw, guarded
    synk's own apply.lua calls of the same ticks, encoded by the store's own
    encoder on the raw run's keys and replayed from a plain socket in synk's
    two round trips, each tick after seeding the objects at the versions the
    calls expect (not timed): what the guarded writes cost Redis with no
    Python at all, so the most of raw that any writer with these guards can
    reach. Informational.

Besides writes/s, each row gives the CPU time per object write of this
process (only while timed) and of Redis's main thread (INFO cpu): steadier
than wall time when other processes load the machine.

By default nobody subscribes to the channels, so Redis publishes into the
void; the ``+ subscriber`` rows repeat synk and raw with one subscriber
process (a bare socket) holding every channel, so Redis also has to deliver
every message. The targets are judged on the rows without a subscriber.

``--cluster`` measures synk alone, on one node and on a 3-primary Redis
Cluster, with 1 and 2 simulation processes (see ``bench.flush_cluster``).

The benchmark starts its own ``redis-server`` on a free loopback port unless
``--redis URL`` is given. It exits 0 whether or not the targets are met.
Run ``python -m bench.flush --help`` for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import unquote, urlsplit

import hiredis
import redis.asyncio as aioredis

import synk
from bench.redis_process import RedisProcess
from synk.core.batch import Batch, Op, expected, message, put_of, record, stored
from synk.core.messages import encode_add, encode_mod
from synk.core.names import new_id, new_token
from synk.store.base import Applied
from synk.store.redis import RedisStore
from synk.store.scripts import CHUNK as CALL_OPS  # operations per apply.lua call
from synk.store.scripts import apply_calls
from synk.world import World

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

#: Targets from the issue, judged on the runs without a subscriber.
TARGET_VS_NAIVE = 20.0
TARGET_WRITES_PER_S = 100_000.0
TARGET_FRACTION_OF_RAW = 0.5
#: issue 14's target 9: synk against the replay of its own script calls
TARGET_OF_GUARDED = 0.75

PREFIX = "synkbench:"
NAIVE_PREFIX = "synkbench-naive:"
#: The raw run's keys: apart from synk's (its stale guards must not reach them), of the same length.
RAW_PREFIX = "raw-bench:"
#: Distinct synk ticks kept for the raw replay (the raw run cycles through them).
RAW_CAPTURE = 5


class Unit(synk.Object):
    """A unit on a ring of ``keys`` subscription keys: ``x`` picks the key."""

    keys: ClassVar[int] = 100
    type_key = "unit"
    x: int = 0
    y: int = 0
    hp: int = 100

    @property
    def sub_key(self) -> str:
        return f"k{self.x % Unit.keys}"


# -- redis-server and connections ------------------------------------------------------


@dataclass
class Target:
    """Where Redis is: parsed from a ``redis://`` URL."""

    host: str
    port: int
    db: int
    password: str | None
    username: str | None

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme != "redis":
            raise SystemExit(f"--redis takes a redis://HOST:PORT/DB URL, not {url!r}")
        db = parts.path.strip("/")
        return cls(
            parts.hostname or "127.0.0.1",
            parts.port or 6379,
            int(db) if db else 0,
            unquote(parts.password) if parts.password else None,
            unquote(parts.username) if parts.username else None,
        )

    def auth_commands(self, *, select: bool) -> list[list[bytes | str]]:
        cmds: list[list[bytes | str]] = []
        if self.password is not None:
            cmds.append(["AUTH", self.username or "default", self.password])
        if select and self.db:
            cmds.append(["SELECT", str(self.db)])
        return cmds


# -- RESP, for the raw run and the subscriber ---------------------------------------------


def resp(*args: bytes | str) -> bytes:
    """One command as RESP (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a.encode() if isinstance(a, str) else a
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


async def open_raw(target: Target) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A plain socket to Redis, authenticated and on the right database."""
    reader, writer = await asyncio.open_connection(target.host, target.port)
    for cmd in target.auth_commands(select=True):
        writer.write(resp(*cmd))
        line = await reader.readline()
        if not line.startswith(b"+OK"):
            raise SystemExit(f"redis refused {cmd[0]!r}: {line!r}")
    return reader, writer


async def send_and_drain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, buf: bytes, replies: int) -> None:
    """Write ``buf`` and read ``replies`` replies back (all integers, one line each)."""
    writer.write(buf)
    seen = 0
    while seen < replies:
        chunk = await reader.read(1 << 20)
        if not chunk:
            raise SystemExit("redis closed the raw connection")
        if b"-" in chunk and (chunk.startswith(b"-") or b"\n-" in chunk):
            raise SystemExit(f"redis answered an error in the raw run: {chunk[:200]!r}")
        seen += chunk.count(b"\n")
    await writer.drain()


# The subscriber variant's process: SSUBSCRIBEs to every channel, says "ready",
# reads and discards until its stdin closes, then prints the bytes it received.
_SUBSCRIBER = r"""
import os, selectors, socket, sys
host, port, channels = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)
s = socket.create_connection((host, port))
password = os.environ.get("SYNK_BENCH_PASSWORD")
if password:
    s.sendall(resp("AUTH", os.environ.get("SYNK_BENCH_USERNAME") or "default", password))
    if not s.recv(64).startswith(b"+OK"):
        sys.exit("AUTH failed")
# one SSUBSCRIBE per channel: the channels of one call must share a slot on a cluster
s.sendall(b"".join(resp("SSUBSCRIBE", c) for c in channels))
got = b""
while got.count(b"ssubscribe") < len(channels):
    chunk = s.recv(1 << 16)
    if not chunk:
        sys.exit("redis closed the subscriber")
    got += chunk
print("ready", flush=True)
total = 0
sel = selectors.DefaultSelector()
sel.register(s, selectors.EVENT_READ)
sel.register(sys.stdin, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        if key.fileobj is s:
            chunk = s.recv(1 << 20)
            if not chunk:
                sys.exit("redis closed the subscriber")
            total += len(chunk)
        else:
            if not sys.stdin.readline():
                print(total, flush=True)
                sys.exit(0)
"""


class Subscriber:
    """A separate process subscribed to every channel, draining as fast as it can."""

    def __init__(self, target: Target, channels: list[str]) -> None:
        env = dict(os.environ)
        if target.password is not None:
            env["SYNK_BENCH_PASSWORD"] = target.password
            env["SYNK_BENCH_USERNAME"] = target.username or ""
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SUBSCRIBER, target.host, str(target.port), *channels],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            self.proc.kill()
            raise SystemExit("the subscriber process did not start")

    def stop(self) -> int:
        """Stop; the number of bytes it received."""
        out, _ = self.proc.communicate(timeout=30)
        return int(out.strip() or 0)


# -- measurement ---------------------------------------------------------------------------


@dataclass
class Run:
    """The figures of one variant."""

    name: str
    objects: int
    tick_times: list[float] = field(default_factory=list)
    client_cpu: float = 0.0
    redis_cpu: float = 0.0
    #: synk only: time spent in the synchronous ``world.flush()`` call (planning)
    plan_time: float = 0.0
    #: synk only: time spent in the simulation's assignments (``work.tick()``), before the flush
    sim_time: float = 0.0

    @property
    def ticks(self) -> int:
        return len(self.tick_times)

    @property
    def wall(self) -> float:
        return sum(self.tick_times)

    @property
    def writes_per_s(self) -> float:
        return self.objects * self.ticks / self.wall if self.wall else 0.0

    @property
    def median_ms(self) -> float:
        return statistics.median(self.tick_times) * 1000 if self.tick_times else 0.0

    @property
    def client_us(self) -> float:
        """This process's CPU time per object write, in microseconds."""
        return 1e6 * self.client_cpu / (self.objects * self.ticks) if self.ticks else 0.0

    @property
    def redis_us(self) -> float:
        """Redis's CPU time per object write, in microseconds."""
        return 1e6 * self.redis_cpu / (self.objects * self.ticks) if self.ticks else 0.0


class RedisCpu:
    """Redis's CPU seconds (main thread, user + system), from INFO cpu."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def now(self) -> float:
        info: dict[str, Any] = await self.client.info("cpu")
        if "used_cpu_user_main_thread" in info:
            return float(info["used_cpu_user_main_thread"]) + float(info["used_cpu_sys_main_thread"])
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


@dataclass
class RawTick:
    """One synk tick's writes as plain commands: the RESP buffer, its command count and object count."""

    buffer: bytes
    commands: int
    objects: int


@dataclass
class GuardedTick:
    """One synk tick as synk's own apply.lua calls, pre-encoded on the raw run's keys.

    ``seed`` puts every object the tick writes at the version the tick
    expects to find (not timed); ``phase1`` and ``phase2`` are the calls synk
    made, in its two round trips.
    """

    seed: bytes
    seed_commands: int
    phase1: bytes
    phase1_calls: int
    phase2: bytes
    phase2_calls: int
    objects: int


class Recording(RedisStore):
    """The Redis store, turning the batches of a few flushes into raw-run buffers.

    ``apply`` only keeps a reference (it is timed); ``keep()``, called outside
    the timing, encodes them at once and drops the batch, so that the heap
    during later ticks looks as it would without the benchmark.
    """

    def __init__(self, url: str, *, prefix: str, raw_names: RedisStore) -> None:
        super().__init__(url, prefix=prefix)
        self.raw_names = raw_names
        self.raw_ticks: list[RawTick] = []
        self.guarded_ticks: list[GuardedTick] = []
        self._last: Batch | None = None

    async def apply(self, batch: Batch) -> Applied:
        self._last = batch
        return await super().apply(batch)

    def keep(self) -> None:
        """Encode the last flush for the raw run, up to RAW_CAPTURE of them."""
        batch, self._last = self._last, None
        if batch is not None and len(self.raw_ticks) < RAW_CAPTURE:
            buf, count = raw_buffer(self.raw_names, batch)
            self.raw_ticks.append(RawTick(buf, count, len(batch)))
            self.guarded_ticks.append(guarded_tick(self.raw_names, batch))


class Workload:
    """The objects and what a tick does to them."""

    def __init__(self, objects: int, move_fraction: float) -> None:
        self.units = [Unit(x=i) for i in range(objects)]
        self.moves = round(objects * move_fraction)
        self.tick_no = 0

    def tick(self) -> None:
        """Change every unit; move ``moves`` of them (a rotating window) to the next key."""
        self.tick_no += 1
        units = self.units
        n = len(units)
        start = (self.tick_no * self.moves) % n if n else 0
        for j in range(self.moves):
            units[(start + j) % n].x += 1
        for u in units:
            u.y += 1
            u.hp = (u.hp + 7) % 1000


async def run_synk(
    world: World, store: Recording, work: Workload, ticks: int, cpu: RedisCpu, name: str, profile: cProfile.Profile | None = None
) -> Run:
    run = Run(name, len(work.units))
    r0 = await cpu.now()
    for _ in range(ticks):
        s0 = time.perf_counter()
        work.tick()
        run.sim_time += time.perf_counter() - s0
        if profile is not None:
            profile.enable()
        c0 = time.process_time()
        t0 = time.perf_counter()
        handle = world.flush()
        t1 = time.perf_counter()
        await handle
        t2 = time.perf_counter()
        run.client_cpu += time.process_time() - c0
        if profile is not None:
            profile.disable()
        if handle.writes != len(work.units):
            raise SystemExit(f"a tick flushed {handle.writes} writes, expected {len(work.units)}")
        run.tick_times.append(t2 - t0)
        run.plan_time += t1 - t0
        store.keep()
    run.redis_cpu = await cpu.now() - r0
    return run


def raw_buffer(store: RedisStore, batch: Batch) -> tuple[bytes, int]:
    """The plain commands that store and publish the same bytes synk did; the buffer and its command count.

    Per object an HSET of its stored value (an HDEL from the old key for a
    move); per key one SPUBLISH of the messages synk published there together.
    """
    parts: list[bytes] = []
    puts: dict[str, list[bytes]] = {}
    for key, ops in batch.ops.items():
        for op in ops:
            if op[0] == "u":
                parts.append(resp("HSET", store.objects_key(key), op[2], stored(key, op)))
            elif op[0] == "t":
                parts.append(resp("HDEL", store.objects_key(key), op[2]))
                put = put_of(key, op)
                parts.append(resp("HSET", store.objects_key(op[7]), op[2], stored(op[7], put)))
                puts.setdefault(op[7], []).append(message(op[7], put))
            else:
                raise SystemExit(f"unexpected {op[0]!r} operation in a tick")
        parts.extend(publishes(store, key, [message(key, op) for op in ops]))
    for key, messages in puts.items():
        parts.extend(publishes(store, key, messages))
    return b"".join(parts), len(parts)


def publishes(store: RedisStore, key: str, messages: list[bytes]) -> list[bytes]:
    """SPUBLISHes of ``messages`` on ``key``, joined as synk joins them: one per apply.lua call."""
    return [resp("SPUBLISH", store.channel(key), b"\n".join(messages[i : i + CALL_OPS])) for i in range(0, len(messages), CALL_OPS)]


def guarded_tick(store: RedisStore, batch: Batch) -> GuardedTick:
    """synk's own script calls for ``batch``, on ``store``'s keys, and the state they expect."""
    # The stored value each operation expects: its guard line (without the record's "{" that
    # expected() ends with), then a record.
    seed = [
        resp("HSET", store.objects_key(key), op[2], expected(op)[:-1] + record(key, op)) for key, ops in batch.ops.items() for op in ops
    ]
    puts: dict[str, list[Op]] = {}
    for key, i in batch.moves:
        op = batch.ops[key][i]
        puts.setdefault(op[7], []).append(put_of(key, op))
        seed.append(resp("HDEL", store.objects_key(op[7]), op[2]))  # a put lands only where the object is not live
    # The store's own encoder: the point is to send exactly what synk sends.
    phase1 = [call for _key, call in apply_calls(store.objects_key, store.channel, batch.ops, [])]
    phase2 = [call for _key, call in apply_calls(store.objects_key, store.channel, puts, [])]
    return GuardedTick(b"".join(seed), len(seed), b"".join(phase1), len(phase1), b"".join(phase2), len(phase2), len(batch))


async def round_trip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, parser: hiredis.Reader, buf: bytes, replies: int) -> None:
    """Write ``buf``, read ``replies`` replies; every script must have applied every operation (code 0)."""
    writer.write(buf)
    seen = 0
    while seen < replies:
        reply = parser.gets()
        if reply is False:
            chunk = await reader.read(1 << 20)
            if not chunk:
                raise SystemExit("redis closed the raw connection")
            parser.feed(chunk)
            continue
        seen += 1
        if isinstance(reply, Exception) or (isinstance(reply, list) and any(reply)):
            raise SystemExit(f"the guarded replay did not apply cleanly: {reply!r}"[:300])
    await writer.drain()


async def run_guarded(target: Target, captured: list[GuardedTick], ticks: int, cpu: RedisCpu, name: str) -> Run:
    run = Run(name, captured[0].objects)
    reader, writer = await open_raw(target)
    parser = hiredis.Reader()
    try:
        for i in range(ticks):
            tick = captured[i % len(captured)]
            await round_trip(reader, writer, parser, tick.seed, tick.seed_commands)
            r0, c0 = await cpu.now(), time.process_time()
            t0 = time.perf_counter()
            await round_trip(reader, writer, parser, tick.phase1, tick.phase1_calls)
            if tick.phase2_calls:
                await round_trip(reader, writer, parser, tick.phase2, tick.phase2_calls)
            run.tick_times.append(time.perf_counter() - t0)
            run.client_cpu += time.process_time() - c0
            run.redis_cpu += await cpu.now() - r0
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return run


async def run_raw(target: Target, captured: list[RawTick], ticks: int, cpu: RedisCpu, name: str) -> Run:
    run = Run(name, captured[0].objects)
    reader, writer = await open_raw(target)
    try:
        r0, c0 = await cpu.now(), time.process_time()
        for i in range(ticks):
            raw = captured[i % len(captured)]
            t0 = time.perf_counter()
            await send_and_drain(reader, writer, raw.buffer, raw.commands)
            run.tick_times.append(time.perf_counter() - t0)
        run.client_cpu = time.process_time() - c0
        run.redis_cpu = await cpu.now() - r0
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return run


@dataclass(slots=True)
class NaiveObject:
    """The naive writer's own copy of a unit: what the Go library kept per object."""

    id: str
    token: str
    version: int
    key: str
    state: dict[str, int]


async def run_naive(
    client: aioredis.Redis, target: Target, objects: int, keys: int, move_fraction: float, ticks: int, cpu: RedisCpu, *, lean: bool
) -> Run:
    """One MULTI/EXEC round trip per object, awaited one at a time.

    With redis-py's transactional pipeline, or with ``lean`` hand-made RESP on
    a plain socket (what a Go client costs: the round trip, little else).
    """

    def rkey(k: str) -> str:
        return f"{NAIVE_PREFIX}{{{k}}}:r"

    def mkey(k: str) -> str:
        return f"{NAIVE_PREFIX}{{{k}}}:m"

    def chan(k: str) -> str:
        return f"{NAIVE_PREFIX}{{{k}}}:c"

    objs = [NaiveObject(new_id(), new_token(), 1, f"k{i % keys}", {"x": i, "y": 0, "hp": 100}) for i in range(objects)]
    # Store them first (untimed, pipelined), so that every timed write overwrites.
    pipe = client.pipeline(transaction=False)
    for o in objs:
        pipe.hset(rkey(o.key), o.id, encode_add("unit", o.id, o.key, o.version, o.state, inc=o.token))
        pipe.hset(mkey(o.key), o.id, f"{o.token}:{o.version}")
    await pipe.execute()
    moves = round(objects * move_fraction)
    run = Run("naive, lean (RESP MULTI/EXEC)" if lean else "naive (MULTI/EXEC per object)", objects)
    reader, writer = await open_raw(target)
    r0 = await cpu.now()
    for tick in range(1, ticks + 1):
        start = (tick * moves) % objects if objects else 0
        movers = {(start + j) % objects for j in range(moves)}
        # The same changes as the synk workload, made (untimed) before the tick's writes.
        diffs: list[dict[str, int]] = []
        for i, o in enumerate(objs):
            diff = {"y": o.state["y"] + 1, "hp": (o.state["hp"] + 7) % 1000}
            if i in movers:
                diff["x"] = o.state["x"] + 1
            o.state.update(diff)
            diffs.append(diff)
        c0 = time.process_time()
        t0 = time.perf_counter()
        for o, diff in zip(objs, diffs, strict=True):
            o.version += 1
            new = f"k{o.state['x'] % keys}"
            record = encode_add("unit", o.id, new, o.version, o.state, inc=o.token)
            guard = f"{o.token}:{o.version}"
            cmds: list[tuple[str, str, str, bytes | str]] = []
            if new == o.key:
                cmds.append(("HSET", rkey(new), o.id, record))
                cmds.append(("HSET", mkey(new), o.id, guard))
                cmds.append(("PUBLISH", chan(new), "", encode_mod("unit", o.id, new, o.version, diff, inc=o.token)))
            else:
                cmds.append(("HDEL", rkey(o.key), o.id, ""))
                cmds.append(("HDEL", mkey(o.key), o.id, ""))
                cmds.append(("PUBLISH", chan(o.key), "", encode_mod("unit", o.id, o.key, o.version, diff, next_key=new, inc=o.token)))
                cmds.append(("HSET", rkey(new), o.id, record))
                cmds.append(("HSET", mkey(new), o.id, guard))
                cmds.append(("PUBLISH", chan(new), "", encode_add("unit", o.id, new, o.version, o.state, prev_key=o.key, inc=o.token)))
                o.key = new
            if lean:
                parts = [resp("MULTI")]
                for name, key, fld, value in cmds:
                    parts.append(resp(name, key, fld, value) if name == "HSET" else resp(name, key, fld or value))
                parts.append(resp("EXEC"))
                # +OK, one +QUEUED per command, then EXEC's array header and one reply per command
                await send_and_drain(reader, writer, b"".join(parts), 2 * len(cmds) + 2)
                continue
            pipe = client.pipeline(transaction=True)
            for name, key, fld, value in cmds:
                if name == "HSET":
                    pipe.hset(key, fld, value)
                elif name == "HDEL":
                    pipe.hdel(key, fld)
                else:
                    pipe.publish(key, value)
            await pipe.execute()
        run.tick_times.append(time.perf_counter() - t0)
        run.client_cpu += time.process_time() - c0
    run.redis_cpu = await cpu.now() - r0
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return run


# -- the run -----------------------------------------------------------------------------


@dataclass
class Results:
    objects: int
    keys: int
    move_fraction: float
    create_writes_per_s: float
    synk: Run
    naive: Run
    raw: Run
    naive_lean: Run
    raw_guarded: Run | None = None
    synk_sub: Run | None = None
    raw_sub: Run | None = None
    subscriber_bytes: int = 0
    #: the 1-minute load average when the run started, and the CPU count
    load: float = 0.0
    cpus: int = field(default_factory=lambda: os.cpu_count() or 1)

    @property
    def ratio_vs_naive(self) -> float:
        return self.synk.writes_per_s / self.naive.writes_per_s if self.naive.writes_per_s else 0.0

    @property
    def fraction_of_raw(self) -> float:
        return self.synk.writes_per_s / self.raw.writes_per_s if self.raw.writes_per_s else 0.0

    @property
    def fraction_of_raw_guarded(self) -> float:
        """synk against its own script calls replayed from a plain socket (no Python at all)."""
        guarded = self.raw_guarded
        return self.synk.writes_per_s / guarded.writes_per_s if guarded is not None and guarded.writes_per_s else 0.0

    @property
    def plan_bound_of_raw_guarded(self) -> float:
        """The most of the replay an awaited flush can reach with this run's planning time per write.

        ``world.flush()`` plans the whole flush before its first byte goes
        out (what a flush sends is fixed when it returns, and a value that
        cannot be encoded leaves all of it unsent), and the store's part of a
        tick costs at least what the replay of the same calls does: a tick
        takes at least planning plus the replay's time.
        """
        guarded = self.raw_guarded
        if guarded is None or not guarded.writes_per_s or not self.synk.ticks:
            return 0.0
        replay_us = 1e6 / guarded.writes_per_s
        return replay_us / (replay_us + self.synk_plan_us)

    @property
    def cpu_bound_of_raw_guarded(self) -> float:
        """The most of the replay synk can reach with this run's CPU per write in its own process (one thread)."""
        guarded = self.raw_guarded
        if guarded is None or not guarded.writes_per_s or not self.synk.client_us:
            return 0.0
        return 1e6 / guarded.writes_per_s / self.synk.client_us

    @property
    def synk_plan_us(self) -> float:
        """Planning (``world.flush()`` itself) per write, µs."""
        return 1e6 * self.synk.plan_time / (self.objects * self.synk.ticks) if self.synk.ticks else 0.0

    @property
    def redis_ceiling_fraction_of_raw(self) -> float:
        """The most synk could reach, as a fraction of raw, if its own process took no time.

        Redis runs commands one at a time, so it cannot write faster than one
        write per ``redis_us`` of its CPU: the guarded scripts alone bound synk.
        """
        if not self.synk.redis_us or not self.raw.writes_per_s:
            return 0.0
        return 1e6 / self.synk.redis_us / self.raw.writes_per_s

    def targets(self) -> dict[str, bool]:
        return {
            f"synk_ge_{TARGET_VS_NAIVE:g}x_naive": self.ratio_vs_naive >= TARGET_VS_NAIVE,
            f"synk_ge_{TARGET_WRITES_PER_S:.0f}_writes_per_s": self.synk.writes_per_s >= TARGET_WRITES_PER_S,
            f"synk_ge_{TARGET_FRACTION_OF_RAW:g}_of_raw": self.fraction_of_raw >= TARGET_FRACTION_OF_RAW,
            f"synk_ge_{TARGET_OF_GUARDED:g}_of_raw_guarded": self.fraction_of_raw_guarded >= TARGET_OF_GUARDED,
        }


def print_table(res: Results) -> None:
    rows = [r for r in (res.synk, res.naive, res.naive_lean, res.raw, res.raw_guarded, res.synk_sub, res.raw_sub) if r is not None]
    moves = round(res.objects * res.move_fraction)
    print(
        f"\nflush benchmark: {res.objects:,} objects in {res.keys} keys, all changed every tick, "
        f"{moves:,} ({res.move_fraction:.1%}) moving keys per tick"
    )
    cols = f"{'ticks':>5} {'objects/tick':>12} {'writes/s':>12} {'median ms/tick':>14} {'CPU µs/write: client':>20} {'redis':>6}"
    head = f"{'variant':<32} {cols}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r.name:<32} {r.ticks:>5} {r.objects:>12,} {r.writes_per_s:>12,.0f} {r.median_ms:>14.1f} "
            f"{r.client_us:>20.2f} {r.redis_us:>6.2f}"
        )
    s = res.synk
    if s.ticks:
        per = 1e6 / (s.objects * s.ticks)
        print(
            f"synk wall time per write: {per * s.plan_time:.2f} µs in world.flush() itself (planning), "
            f"{per * (s.wall - s.plan_time):.2f} µs awaiting the store (packing, Redis, replies, phase 2); "
            f"and {per * s.sim_time:.2f} µs before it, in the simulation's assignments (field checks, diffs)"
        )
    if res.raw.redis_us:
        print(
            f"redis CPU per write: {s.redis_us:.2f} µs for synk's guarded scripts, {res.raw.redis_us:.2f} µs for raw's plain "
            f"commands; Redis alone caps synk at {1e6 / s.redis_us if s.redis_us else 0:,.0f} writes/s, "
            f"{res.redis_ceiling_fraction_of_raw:.0%} of raw, however fast this process were"
        )
    if res.raw_guarded is not None and res.raw_guarded.ticks:
        g = res.raw_guarded
        of_raw = g.writes_per_s / res.raw.writes_per_s if res.raw.writes_per_s else 0.0
        print(
            f"synk's own script calls replayed from a plain socket (no Python): {g.writes_per_s:,.0f} writes/s, "
            f"{of_raw:.0%} of raw; synk reaches {res.fraction_of_raw_guarded:.0%} of that"
        )
        replay_us = 1e6 / g.writes_per_s if g.writes_per_s else 0.0
        print(
            f"bounds on synk's share of the replay at this run's costs (issue 14's target 9: {TARGET_OF_GUARDED:.0%}): "
            f"an awaited flush plans before it sends ({res.synk_plan_us:.2f} µs a write) and its "
            f"store part costs at least the replay's {replay_us:.2f} µs, so at most {res.plan_bound_of_raw_guarded:.0%}; "
            f"synk's process spends {s.client_us:.2f} µs of CPU a write, so at most {res.cpu_bound_of_raw_guarded:.0%}. "
            f"{TARGET_OF_GUARDED:.0%} needs planning at most {replay_us * (1 / TARGET_OF_GUARDED - 1):.2f} µs a write "
            f"and all of synk's CPU at most {replay_us / TARGET_OF_GUARDED:.2f} µs"
        )
    print(f"initial create flush: {res.create_writes_per_s:,.0f} writes/s")
    busy = " (busy machine: wall-clock figures are skewed, the CPU columns less so)" if res.load > 0.5 * res.cpus else ""
    print(f"load average at start: {res.load:.2f} on {res.cpus} CPUs{busy}")
    if res.synk_sub is None:
        print("note: no subscriber variant was run (--no-subscriber): every publish went to channels without subscribers")
    else:
        print(
            "note: rows without '+ subscriber' publish to channels nobody subscribes to; "
            f"the subscriber process received {res.subscriber_bytes / 1e6:,.1f} MB in its rows"
        )
    print("\ntargets (judged on the rows without a subscriber):")
    checks = [
        (f"synk >= {TARGET_VS_NAIVE:g}x naive", f"{res.ratio_vs_naive:.1f}x", res.ratio_vs_naive >= TARGET_VS_NAIVE),
        (
            f"synk >= {TARGET_WRITES_PER_S:,.0f} writes/s",
            f"{res.synk.writes_per_s:,.0f}/s",
            res.synk.writes_per_s >= TARGET_WRITES_PER_S,
        ),
        (
            f"synk >= {TARGET_FRACTION_OF_RAW:.0%} of raw",
            f"{res.fraction_of_raw:.1%}",
            res.fraction_of_raw >= TARGET_FRACTION_OF_RAW,
        ),
        (
            f"synk >= {TARGET_OF_GUARDED:.0%} of raw, guarded",
            f"{res.fraction_of_raw_guarded:.1%}",
            res.fraction_of_raw_guarded >= TARGET_OF_GUARDED,
        ),
    ]
    for label, value, ok in checks:
        print(f"  {label:<28} {value:>12}   {'MET' if ok else 'MISSED'}")
    missed = sum(not ok for _, _, ok in checks)
    print(f"  => {'all targets met' if not missed else f'{missed} of {len(checks)} targets MISSED'}\n")


def json_line(res: Results) -> str:
    out: dict[str, Any] = {
        "bench": "flush",
        "objects": res.objects,
        "keys": res.keys,
        "move_fraction": res.move_fraction,
        "ticks": res.synk.ticks,
        "naive_ticks": res.naive.ticks,
        "synk_writes_per_s": round(res.synk.writes_per_s),
        "naive_writes_per_s": round(res.naive.writes_per_s),
        "raw_writes_per_s": round(res.raw.writes_per_s),
        "naive_lean_writes_per_s": round(res.naive_lean.writes_per_s),
        "ratio_vs_naive": round(res.ratio_vs_naive, 2),
        "fraction_of_raw": round(res.fraction_of_raw, 3),
        "redis_ceiling_fraction_of_raw": round(res.redis_ceiling_fraction_of_raw, 3),
        "raw_guarded_writes_per_s": round(res.raw_guarded.writes_per_s) if res.raw_guarded is not None else None,
        "fraction_of_raw_guarded": round(res.fraction_of_raw_guarded, 3),
        "plan_bound_of_raw_guarded": round(res.plan_bound_of_raw_guarded, 3),
        "cpu_bound_of_raw_guarded": round(res.cpu_bound_of_raw_guarded, 3),
        "synk_plan_fraction": round(res.synk.plan_time / res.synk.wall, 3) if res.synk.wall else None,
        "synk_plan_us_per_write": round(res.synk_plan_us, 3) if res.synk.ticks else None,
        "synk_sim_us_per_write": round(1e6 * res.synk.sim_time / (res.objects * res.synk.ticks), 3) if res.synk.ticks else None,
        "cpu_us_per_write": {
            r: {"client": round(run.client_us, 2), "redis": round(run.redis_us, 2)}
            for r, run in (
                ("synk", res.synk),
                ("naive", res.naive),
                ("naive_lean", res.naive_lean),
                ("raw", res.raw),
                ("raw_guarded", res.raw_guarded),
            )
            if run is not None
        },
        "create_writes_per_s": round(res.create_writes_per_s),
        "targets_met": res.targets(),
        "loadavg_1m": round(res.load, 2),
        "cpus": res.cpus,
    }
    if res.synk_sub is not None and res.raw_sub is not None:
        out["synk_subscribed_writes_per_s"] = round(res.synk_sub.writes_per_s)
        out["raw_subscribed_writes_per_s"] = round(res.raw_sub.writes_per_s)
        out["subscriber_bytes"] = res.subscriber_bytes
    return json.dumps(out, separators=(",", ":"))


async def bench(args: argparse.Namespace, url: str) -> Results:
    load = os.getloadavg()[0]
    target = Target.parse(url)
    Unit.keys = args.keys
    assert len(RAW_PREFIX) == len(PREFIX)
    raw_names = RedisStore(url, prefix=RAW_PREFIX)  # for its key names only; never opened
    store = Recording(url, prefix=PREFIX, raw_names=raw_names)
    client = aioredis.Redis.from_url(url)
    cpu = RedisCpu(client)
    world = World(store, [Unit])
    await store.open()
    try:
        work = Workload(args.objects, args.move_fraction)
        for u in work.units:
            world.create(u)
        t0 = time.perf_counter()
        await world.flush()
        create_rate = args.objects / (time.perf_counter() - t0)
        work.tick()  # warm-up tick, not measured
        await world.flush()
        if args.gc_freeze:
            # Long-lived objects out of the collector's scans (README, Large
            # worlds). Applies to every variant alike.
            gc.freeze()

        profile = cProfile.Profile() if args.profile else None
        synk_run = await run_synk(world, store, work, args.ticks, cpu, "synk (await world.flush())", profile)
        if profile is not None:
            profile.dump_stats(args.profile)
        raw_run = await run_raw(target, store.raw_ticks, args.ticks, cpu, "raw (one RESP buffer, socket)")
        naive = [
            await run_naive(client, target, args.objects, args.keys, args.move_fraction, args.naive_ticks, cpu, lean=lean)
            for lean in (False, True)
        ]
        guarded_run = await run_guarded(target, store.guarded_ticks, args.ticks, cpu, "raw, guarded (synk's scripts)")
        res = Results(
            args.objects,
            args.keys,
            args.move_fraction,
            create_rate,
            synk_run,
            naive[0],
            raw_run,
            naive[1],
            raw_guarded=guarded_run,
            load=load,
        )

        if not args.no_subscriber:
            channels = [s.channel(f"k{i}") for s in (store, raw_names) for i in range(args.keys)]
            sub = Subscriber(target, channels)
            try:
                res.synk_sub = await run_synk(world, store, work, args.ticks, cpu, "synk + subscriber")
                res.raw_sub = await run_raw(target, store.raw_ticks, args.ticks, cpu, "raw + subscriber")
            finally:
                res.subscriber_bytes = sub.stop()
        return res
    finally:
        if args.redis:
            await _cleanup(client)
        await client.aclose()
        await raw_names.close()
        await world.close()


async def _cleanup(client: aioredis.Redis) -> None:
    """Delete the benchmark's keys from a Redis we did not start."""
    for prefix in (PREFIX, NAIVE_PREFIX, RAW_PREFIX):
        batch: list[Any] = []
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                await client.delete(*batch)
                batch.clear()
        if batch:
            await client.delete(*batch)


@contextlib.contextmanager
def redis_url(given: str | None) -> Iterator[str]:
    if given:
        yield given
        return
    server = RedisProcess()
    server.start()
    try:
        yield server.url
    finally:
        server.close()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.flush", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--redis", metavar="URL", help="use this Redis (redis://HOST:PORT/DB) instead of starting a private redis-server")
    p.add_argument("--objects", type=int, default=10_000, help="objects, all changed every tick (default 10000)")
    p.add_argument("--keys", type=int, default=100, help="subscription keys (default 100)")
    p.add_argument("--ticks", type=int, default=20, help="measured synk and raw ticks (default 20)")
    p.add_argument("--move-fraction", type=float, default=0.05, help="fraction of objects moving keys per tick (default 0.05)")
    p.add_argument("--naive-ticks", type=int, default=2, help="measured naive ticks: about 1-2 s each (default 2)")
    p.add_argument("--no-subscriber", action="store_true", help="skip the variant with a subscriber on every channel")
    p.add_argument("--profile", metavar="FILE", help="cProfile the synk ticks (no subscriber) into FILE")
    p.add_argument("--gc-freeze", action="store_true", help="gc.freeze() once the objects exist (see the README, Large worlds)")
    p.add_argument(
        "--cluster",
        action="store_true",
        help="synk only, on one node and on a private 3-primary cluster, with 1 and 2 simulation processes (see bench/flush_cluster.py)",
    )
    p.add_argument("--role", default="main", choices=["main", "writer"], help=argparse.SUPPRESS)  # the --cluster children
    args = p.parse_args(argv)
    if args.objects < 1 or args.keys < 2 or args.ticks < 1 or args.naive_ticks < 1:
        p.error("need --objects >= 1, --keys >= 2, --ticks >= 1 and --naive-ticks >= 1")
    if not 0 <= args.move_fraction <= 1:
        p.error("--move-fraction must be within 0 and 1")
    if args.cluster and args.redis:
        p.error("--cluster starts its own single node and cluster; it does not take --redis")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cluster or args.role == "writer":
        from bench import flush_cluster  # it imports this module: here, not at the top

        return flush_cluster.run_writer(args) if args.role == "writer" else flush_cluster.compare(args)
    with redis_url(args.redis) as url:
        res = asyncio.run(bench(args, url))
    print_table(res)
    print(json_line(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
