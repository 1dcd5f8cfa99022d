"""Fan-out: the synk gateway against python-socketio with its Redis manager.

Workload (defaults): 1,000 websocket clients, each following 10 of 100
subscription keys (every key has 100 clients); 100 objects per key; a
simulation changes 500 objects a second (ticks at 50 Hz, 10 changes per
tick, round-robin over the objects so every key gets its share), stamping
``time.time()`` in a field of each changed object. Every change reaches
100 clients: 50,000 deliveries a second, one message per client per tick.

Why 500 changes/s and not 2,000: on a 2-core machine, 2,000/s (200,000
deliveries/s) saturates both cores with synk alone, the load generator
taking about one core and the gateway most of the other, so latency
measures the queues of an overloaded machine. At 500/s synk's side uses
about half the machine. python-socketio cannot keep up at any of these
rates (it tops out near 15,000 deliveries/s on one core here): its row
then shows its throughput at saturation, and CPU per delivered message is
still comparable. Pass ``--rate`` to change it.

synk
    ``synk serve`` (``python -m synk.cli serve``) in its own process; the
    simulation is a ``synk.World`` that sets ``ts`` and flushes each tick
    (Redis scripts, sharded pub/sub); clients send ``updateSubscription``
    and receive the keys' snapshots, then the ``mod`` messages. Clients
    subscribe a few at a time (``--subscribing``): the gateway snapshots
    each key of each subscribing client over redis-py's pool of 100
    connections, and a thousand clients at once exhaust it.
socketio
    python-socketio's ``AsyncServer`` with an ``AsyncRedisManager``, served
    by aiohttp (or uvicorn) in its own process; keys are rooms, clients join
    10 rooms with an acknowledged ``join`` event; the simulation emits a
    message of the same shape as synk's ``mod`` through a write-only
    ``AsyncRedisManager`` (``emit("mod", msg, room=key)``). Clients speak
    Engine.IO v4 / Socket.IO v5 over a raw websocket (``40`` connect,
    ``42[...]`` events, ``2``/``3`` pings), not the heavy ``AsyncClient``.

The clients (the load generator) run in ``--client-procs`` processes. By
default each connection is a bare asyncio protocol that parses frames in
``data_received`` (``--client-lib raw``); the ``websockets`` and
``aiohttp`` clients wake a task per message and cost more CPU than the
gateway they load (``--client-lib aiohttp|websockets`` to compare).

Each system gets a fresh server, simulation and client processes. Once
every client has subscribed, the simulation starts; after a warm-up, a
window of ``--seconds`` is measured: the ``mod`` messages clients receive
inside it (delivered per second), the server process's CPU time over it
(from /proc/PID/stat), and the latency from stamp to receipt of each of
those messages (p50/p99, 0.1 ms bins). Expected deliveries are the changes
stamped inside the window times their keys' clients: delivered well under
expected means the server fell behind. The targets: synk's server CPU per
delivered message at most a third of socketio's, and synk's p99 under 50 ms.

Every process (server, Redis, simulation, clients) shares the machine's
cores; the report shows each one's CPU share during the window, and the
share taken by processes outside the benchmark: when that is high, every
figure is skewed (latency most). The benchmark starts a private
``redis-server`` on a free loopback port. It exits 0 whether or not the
targets are met. Run ``python -m bench.fanout --help`` for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import importlib.util
import json
import math
import os
import random
import resource
import shutil
import signal
import struct
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import orjson

import synk
from bench.redis_server import RedisServer, free_port
from synk.core.names import new_id

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

#: The issue's targets.
TARGET_CPU_RATIO = 1 / 3
TARGET_P99_MS = 50.0

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "fanout:"
#: Latency histogram: 0.1 ms bins up to 30 s (the last bin holds anything slower).
BIN_S = 1e-4
BINS = 300_000
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A process of the benchmark failed; the message says which and why."""


def key_name(k: int) -> str:
    return f"k{k}"


def keys_of(client: int, keys: int, per_client: int) -> list[int]:
    """The keys client ``client`` follows: spread so that keys get the same number of clients (give or take one)."""
    stride = keys // per_client
    return [(client + j * stride) % keys for j in range(per_client)]


def raise_nofile() -> int:
    """Raise the open-file limit to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if target > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
    return soft


def emit(obj: dict[str, Any]) -> None:
    """One JSON line to the orchestrator."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def stdin_lines() -> asyncio.StreamReader:
    """The orchestrator's commands, one JSON object a line."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def read_command(reader: asyncio.StreamReader) -> dict[str, Any]:
    line = await reader.readline()
    if not line:
        return {"cmd": "stop"}
    obj: dict[str, Any] = json.loads(line)
    return obj


# -- processes: CPU and lifetime ------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of every core, from /proc/stat."""
    with open("/proc/stat", "rb") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    total = sum(parts[:8])
    return float(total - idle), float(total)


async def wait_port(port: int, deadline: float, alive: Callable[[], bool], what: str) -> None:
    """Poll until something accepts connections on ``port``; fail at the deadline or if the process died."""
    while True:
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            with contextlib.suppress(OSError):
                await w.wait_closed()
            return
        except OSError:
            pass
        if not alive():
            raise BenchError(f"{what} exited before listening on port {port}")
        if time.monotonic() > deadline:
            raise BenchError(f"{what} did not listen on port {port} in time")
        await asyncio.sleep(0.02)  # poll interval; the deadline bounds the wait


class Child:
    """A child process of the benchmark: JSON lines on stdin and stdout, stderr to a log file."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.name = name
        self.proc = proc
        self.log = log

    @classmethod
    async def start(cls, name: str, argv: Sequence[str], logdir: Path, *, talk: bool = True) -> Child:
        log = logdir / f"{name}.log"
        err = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if talk else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if talk else err,
                stderr=err,
                cwd=ROOT,
                limit=64 * 1024 * 1024,
            )
        finally:
            os.close(err)
        return cls(name, proc, log)

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    def tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-15:])

    def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        if self.alive:
            self.proc.stdin.write((json.dumps(obj) + "\n").encode())

    async def read(self, timeout: float) -> dict[str, Any]:
        """The next JSON object the child prints."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = await asyncio.wait_for(self.proc.stdout.readline(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise BenchError(f"{self.name} did not answer within {timeout:g} s\n{self.tail()}") from None
            if not line:
                await self.proc.wait()
                raise BenchError(f"{self.name} exited with code {self.proc.returncode}\n{self.tail()}")
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                if isinstance(obj, dict):
                    return obj

    def cpu(self) -> float:
        return proc_cpu(self.proc.pid) if self.alive else 0.0

    async def stop(self, timeout: float = 10.0) -> None:
        if not self.alive:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


# -- the simulations (child processes) ------------------------------------------------------------


class Body(synk.Object):
    """An object in key ``k{k}``; ``ts`` is the wall-clock time of its last change."""

    type_key = "body"
    k: int = 0
    ts: float = 0.0

    @property
    def sub_key(self) -> str:
        return key_name(self.k)


async def drive(args: argparse.Namespace, step: Callable[[int], Awaitable[tuple[float, list[int]]]]) -> None:
    """Run ``step`` at ``args.rate`` changes a second in ticks of ``args.tick_hz``, as the orchestrator says.

    Commands: ``go`` (start ticking), ``window`` [t0, t1] (count the changes
    stamped inside it, per key), ``stop`` (report and exit).
    """
    commands = await stdin_lines()
    emit({"ready": True})
    state: dict[str, Any] = {"go": asyncio.Event(), "stop": False, "window": (math.inf, math.inf)}

    async def listen() -> None:
        while True:
            cmd = await read_command(commands)
            if cmd["cmd"] == "go":
                state["go"].set()
            elif cmd["cmd"] == "window":
                state["window"] = tuple(cmd["window"])
            elif cmd["cmd"] == "stop":
                state["stop"] = True
                state["go"].set()
                return

    listener = asyncio.create_task(listen())
    await state["go"].wait()
    per_key = [0] * args.keys
    changes = in_window = ticks = late = 0
    dt = 1.0 / args.tick_hz
    per_tick = args.rate / args.tick_hz
    owed = 0.0
    next_tick = time.monotonic()
    busy = 0.0
    while not state["stop"]:
        owed += per_tick
        n = int(owed)
        owed -= n
        started = time.monotonic()
        stamp, keys = await step(n)
        busy += time.monotonic() - started
        ticks += 1
        changes += n
        t0, t1 = state["window"]
        if t0 <= stamp < t1:
            in_window += n
            for k in keys:
                per_key[k] += 1
        next_tick += dt
        wait = next_tick - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        elif wait < -dt:
            late += 1
            next_tick = time.monotonic()  # fell behind by more than a tick: do not burst to catch up
    listener.cancel()
    emit({"changes": changes, "in_window": in_window, "per_key": per_key, "ticks": ticks, "late_ticks": late, "step_s": busy})


async def sim_synk(args: argparse.Namespace) -> None:
    world = await synk.connect(args.redis, types=[Body], prefix=PREFIX)
    bodies = [Body(k=k) for k in range(args.keys) for _ in range(args.objects_per_key)]
    for b in bodies:
        world.create(b)
    await world.flush()
    random.Random(1).shuffle(bodies)
    pos = 0

    async def step(n: int) -> tuple[float, list[int]]:
        nonlocal pos
        keys = []
        stamp = time.time()
        for _ in range(n):
            b = bodies[pos]
            pos = (pos + 1) % len(bodies)
            b.ts = stamp
            keys.append(b.k)
        await world.flush()
        return stamp, keys

    try:
        await drive(args, step)
    finally:
        await world.close()


async def sim_socketio(args: argparse.Namespace) -> None:
    import socketio

    mgr = socketio.AsyncRedisManager(args.redis, write_only=True)
    objects = [(new_id(), k) for k in range(args.keys) for _ in range(args.objects_per_key)]
    random.Random(1).shuffle(objects)
    versions = [1] * len(objects)
    pos = 0

    async def step(n: int) -> tuple[float, list[int]]:
        nonlocal pos
        keys = []
        stamp = time.time()
        for _ in range(n):
            i = pos
            pos = (pos + 1) % len(objects)
            oid, k = objects[i]
            versions[i] += 1
            sk = key_name(k)
            msg = {"method": "mod", "t": "body", "id": oid, "sKey": sk, "v": versions[i], "diff": {"ts": stamp}}
            await mgr.emit("mod", msg, room=sk, namespace="/")
            keys.append(k)
        return stamp, keys

    await drive(args, step)


# -- the python-socketio server (child process) -------------------------------------------------


def socketio_server(args: argparse.Namespace) -> None:
    import socketio

    mgr = socketio.AsyncRedisManager(args.redis)
    mode = "aiohttp" if args.server == "aiohttp" else "asgi"
    sio = socketio.AsyncServer(async_mode=mode, client_manager=mgr, cors_allowed_origins="*", logger=False, engineio_logger=False)

    async def join(sid: str, keys: list[str]) -> bool:
        for k in keys:
            await sio.enter_room(sid, k)
        return True

    sio.on("join", join)
    if args.server == "aiohttp":
        from aiohttp import web

        app = web.Application()
        sio.attach(app)
        web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)
    else:
        import uvicorn

        uvicorn.run(socketio.ASGIApp(sio), host="127.0.0.1", port=args.port, log_level="warning", access_log=False, lifespan="off")


# -- the clients (child processes) -----------------------------------------------------------------


class Tally:
    """What one client process saw: the mods received inside the window, and their latencies."""

    def __init__(self) -> None:
        self.t0 = math.inf
        self.t1 = math.inf
        self.count = 0
        #: socket reads during the window (the raw client only): how well the server coalesces frames
        self.reads = 0
        self.hist = [0] * BINS
        self.subscribed = 0
        self.all_subscribed = asyncio.Event()
        #: set when a connection ends before it has subscribed
        self.failed = asyncio.Event()
        self.expected_subs = 0
        self.closed = 0
        self.errors: list[str] = []

    def mod(self, stamp: float, now: Callable[[], float] = time.time) -> None:
        """A mod stamped ``stamp`` arrived: count it if it arrived inside the window."""
        t = now()
        if self.t0 <= t < self.t1:
            self.count += 1
            b = int((t - stamp) * 10_000.0)
            self.hist[b if b < BINS else BINS - 1] += 1

    def subscribed_one(self) -> None:
        self.subscribed += 1
        if self.subscribed >= self.expected_subs:
            self.all_subscribed.set()

    def report(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "reads": self.reads,
            "closed": self.closed,
            "errors": self.errors[:5],
            "hist": {str(i): c for i, c in enumerate(self.hist) if c},
        }


class SynkConn:
    """One synk client's protocol state: subscribe, wait for the snapshots, time the mods."""

    __slots__ = ("pending", "release", "subscribe", "tally")

    def __init__(self, keys: list[str], tally: Tally) -> None:
        self.tally = tally
        self.release: Callable[[], None] | None = None
        self.pending = set(keys)
        self.subscribe = orjson.dumps({"method": "updateSubscription", "add": keys}).decode()

    def opening(self) -> str:
        return self.subscribe

    def handle(self, data: str | bytes, loads: Callable[[str | bytes], Any] = orjson.loads) -> str | None:
        m = loads(data)
        method = m["method"]
        if method == "mod":
            self.tally.mod(m["diff"]["ts"])
        elif method == "snap":
            self.pending.discard(m["sKey"])
            if not self.pending and self.release is not None:
                self.release()
                self.release = None
                self.tally.subscribed_one()
        elif method == "error":
            self.tally.errors.append(str(m))
        return None


class SocketioConn:
    """One Socket.IO v5 client over a raw websocket: ``40``, an acked ``join``, ``42`` events, pongs."""

    __slots__ = ("join", "release", "tally")

    def __init__(self, keys: list[str], tally: Tally) -> None:
        self.tally = tally
        self.release: Callable[[], None] | None = None
        self.join = "421" + orjson.dumps(["join", keys]).decode()

    def opening(self) -> str:
        return "40"

    def handle(self, data: str | bytes, loads: Callable[[str | bytes], Any] = orjson.loads) -> str | None:
        if isinstance(data, bytes):
            data = data.decode()
        if data.startswith("42"):
            event = loads(data[2:])
            if event[0] == "mod":
                self.tally.mod(event[1]["diff"]["ts"])
            return None
        if data == "2":
            return "3"
        if data.startswith("40"):
            return self.join
        if data.startswith("431") and self.release is not None:
            self.release()
            self.release = None
            self.tally.subscribed_one()
        elif data.startswith("44"):
            self.tally.errors.append(data[:200])
        return None


Conn = SynkConn | SocketioConn


class Gate:
    """Bounds the clients between connecting and having subscribed (their snapshots, or the join ack).

    A synk gateway snapshots a key per subscribing client over redis-py's
    connection pool (100 connections); thousands at once exhaust it, so the
    clients subscribe a few at a time (see the module docstring).
    """

    def __init__(self, size: int) -> None:
        self.sem = asyncio.Semaphore(size)

    async def enter(self, conn: Conn) -> None:
        await self.sem.acquire()
        conn.release = self.sem.release

    @staticmethod
    def leave(conn: Conn) -> None:
        """The connection ended; if it had not subscribed yet, the run has failed."""
        if conn.release is not None:
            conn.release()
            conn.release = None
            conn.tally.failed.set()


async def run_aiohttp(url: str, conns: list[Conn], tally: Tally, gate: Gate) -> list[asyncio.Task[None]]:
    import aiohttp

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None, connect=60))
    text = aiohttp.WSMsgType.TEXT

    async def one(conn: Conn) -> None:
        await gate.enter(conn)
        try:
            ws = await session.ws_connect(url, compress=0, max_msg_size=0, autoping=True, autoclose=True)
            await ws.send_str(conn.opening())
            handle = conn.handle
            receive = ws.receive
            while True:
                msg = await receive()
                if msg.type is not text:
                    break
                reply = handle(msg.data)
                if reply is not None:
                    await ws.send_str(reply)
        except Exception as exc:
            tally.errors.append(f"{type(exc).__name__}: {exc}")
        gate.leave(conn)
        tally.closed += 1

    return [asyncio.create_task(one(c)) for c in conns]


async def run_websockets(url: str, conns: list[Conn], tally: Tally, gate: Gate) -> list[asyncio.Task[None]]:
    from websockets.asyncio.client import connect

    async def one(conn: Conn) -> None:
        await gate.enter(conn)
        try:
            ws = await connect(url, compression=None, max_size=None, ping_interval=None, open_timeout=60)
            await ws.send(conn.opening())
            handle = conn.handle
            async for data in ws:
                reply = handle(data)
                if reply is not None:
                    await ws.send(reply)
        except Exception as exc:
            tally.errors.append(f"{type(exc).__name__}: {exc}")
        gate.leave(conn)
        tally.closed += 1

    return [asyncio.create_task(one(c)) for c in conns]


class RawClient(asyncio.Protocol):
    """A minimal websocket client (RFC 6455) for the load generator: no task per message.

    It does the upgrade handshake, parses the server's frames (unmasked; the
    servers here never fragment) straight out of ``data_received`` and hands
    each text payload to the connection's ``handle``; it answers pings and
    masks what it sends. The libraries' clients wake a task per message:
    on uvloop, aiohttp's costs about 1.5 times as much CPU per message and
    websockets' about 2 times (on asyncio's loop, about 2.5 times as much).
    """

    def __init__(self, conn: Conn, host: str, path: str, done: asyncio.Future[None], tally: Tally) -> None:
        self.conn = conn
        self.host = host
        self.path = path
        self.done = done
        self.tally = tally
        self.buf = b""
        self.open = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's transports do not subclass asyncio's
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.transport.write(request.encode())

    def send(self, opcode: int, payload: bytes) -> None:
        """One masked, final frame."""
        assert self.transport is not None
        n = len(payload)
        if n < 126:
            head = bytes((0x80 | opcode, 0x80 | n))
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        mask = os.urandom(4)
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "big")).to_bytes(n, "big")
        self.transport.write(head + mask + masked)

    def fail(self, why: str) -> None:
        self.tally.errors.append(why)
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        tally = self.tally
        if tally.t0 <= time.time() < tally.t1:
            tally.reads += 1
        buf = self.buf + data if self.buf else data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.fail(f"handshake refused: {buf[:80]!r}")
                return
            self.open = True
            buf = buf[end + 4 :]
            self.send(1, self.conn.opening().encode())
        handle = self.conn.handle
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            b0 = buf[pos]
            n = buf[pos + 1] & 0x7F
            start = pos + 2
            if n == 126:
                if size - pos < 4:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                start = pos + 4
            elif n == 127:
                if size - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            end = start + n
            if end > size:
                break
            opcode = b0 & 0x0F
            if opcode == 1 and b0 & 0x80:
                reply = handle(buf[start:end])
                if reply is not None:
                    self.send(1, reply.encode())
            elif opcode == 9:
                self.send(0xA, buf[start:end])
            elif opcode == 8:
                self.send(8, buf[start : start + 2])
                assert self.transport is not None
                self.transport.close()
                return
            elif opcode != 0xA:
                self.fail(f"unexpected frame: opcode {opcode}, fin {b0 >> 7}")
                return
            pos = end
        self.buf = buf[pos:]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def run_raw(port: int, path: str, conns: list[Conn], tally: Tally, gate: Gate) -> list[asyncio.Task[None]]:
    loop = asyncio.get_running_loop()

    async def one(conn: Conn) -> None:
        await gate.enter(conn)
        try:
            done: asyncio.Future[None] = loop.create_future()
            host = f"127.0.0.1:{port}"
            await loop.create_connection(lambda: RawClient(conn, host, path, done, tally), "127.0.0.1", port)
            await done
        except Exception as exc:
            tally.errors.append(f"{type(exc).__name__}: {exc}")
        gate.leave(conn)
        tally.closed += 1

    return [asyncio.create_task(one(c)) for c in conns]


async def clients(args: argparse.Namespace) -> None:
    raise_nofile()
    commands = await stdin_lines()
    tally = Tally()
    ids = range(args.first, args.first + args.count)
    if args.system == "synk":
        path = "/"
        conns: list[Conn] = [SynkConn([key_name(k) for k in keys_of(i, args.keys, args.per_client)], tally) for i in ids]
    else:
        path = "/socket.io/?EIO=4&transport=websocket"
        conns = [SocketioConn([key_name(k) for k in keys_of(i, args.keys, args.per_client)], tally) for i in ids]
    tally.expected_subs = len(conns)
    started = time.monotonic()
    gate = Gate(args.gate)
    if args.lib == "raw":
        tasks = await run_raw(args.port, path, conns, tally, gate)
    else:
        runner = run_aiohttp if args.lib == "aiohttp" else run_websockets
        tasks = await runner(f"ws://127.0.0.1:{args.port}{path}", conns, tally, gate)
    waiters = [asyncio.ensure_future(tally.all_subscribed.wait()), asyncio.ensure_future(tally.failed.wait())]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    if not tally.all_subscribed.is_set():
        emit({"ready": False, "subscribed": tally.subscribed, "errors": tally.errors[:5]})
        return
    emit({"ready": True, "subscribe_s": time.monotonic() - started, "connections": len(tasks)})
    while True:
        cmd = await read_command(commands)
        if cmd["cmd"] == "window":
            tally.t0, tally.t1 = cmd["window"]
        elif cmd["cmd"] == "report":
            emit(tally.report())
        elif cmd["cmd"] == "stop":
            break
    # A load generator has nothing to close politely: the kernel resets the sockets.
    sys.stdout.flush()
    os._exit(0)


# -- the orchestrator -----------------------------------------------------------------------------------


@dataclass
class SystemResult:
    name: str
    delivered: int = 0
    expected: int = 0
    seconds: float = 0.0
    server_cpu_s: float = 0.0
    clients_cpu_s: float = 0.0
    cpu_pct: dict[str, float] = field(default_factory=dict)
    machine_busy_pct: float = 0.0
    hist: dict[int, int] = field(default_factory=dict)
    subscribe_s: float = 0.0
    sim: dict[str, Any] = field(default_factory=dict)
    client_errors: list[str] = field(default_factory=list)
    closed: int = 0
    reads: int = 0

    def percentile(self, q: float) -> float:
        total = sum(self.hist.values())
        if not total:
            return math.nan
        rank = q * total
        seen = 0
        for b in sorted(self.hist):
            seen += self.hist[b]
            if seen >= rank:
                return (b + 0.5) * BIN_S * 1000.0
        return math.nan

    @property
    def delivered_per_s(self) -> float:
        return self.delivered / self.seconds if self.seconds else 0.0

    @property
    def cpu_s_per_million(self) -> float:
        return self.server_cpu_s / (self.delivered / 1e6) if self.delivered else math.inf

    @property
    def msgs_per_read(self) -> float | None:
        return self.delivered / self.reads if self.reads else None

    def summary(self) -> dict[str, Any]:
        return {
            "delivered_per_s": round(self.delivered_per_s),
            "cpu_s_per_million": round(self.cpu_s_per_million, 3),
            "p50_ms": round(self.percentile(0.50), 2),
            "p99_ms": round(self.percentile(0.99), 2),
            "max_ms": round(max(self.hist, default=0) * BIN_S * 1000.0, 1),
            "delivered": self.delivered,
            "expected": self.expected,
            "delivery_ratio": round(self.delivered / self.expected, 4) if self.expected else None,
            "msgs_per_client_read": round(self.msgs_per_read, 2) if self.msgs_per_read else None,
            "sim_changes_per_s": round(self.sim.get("in_window", 0) / self.seconds) if self.seconds else 0,
            "sim_late_ticks": self.sim.get("late_ticks", 0),
            "server_cpu_s": round(self.server_cpu_s, 2),
            "clients_cpu_s_per_million": round(self.clients_cpu_s / (self.delivered / 1e6), 3) if self.delivered else None,
            "cpu_pct": {k: round(v, 1) for k, v in self.cpu_pct.items()},
            "machine_busy_pct": round(self.machine_busy_pct, 1),
            "subscribe_s": round(self.subscribe_s, 1),
            "client_errors": self.client_errors[:3],
            "closed_clients": self.closed,
        }


def child_argv(role: str, args: argparse.Namespace, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.fanout",
        "--role",
        role,
        "--redis",
        args.redis,
        "--keys",
        str(args.keys),
        "--keys-per-client",
        str(args.keys_per_client),
        "--objects-per-key",
        str(args.objects_per_key),
        "--rate",
        str(args.rate),
        "--tick-hz",
        str(args.tick_hz),
        *extra,
    ]


async def run_system(system: str, args: argparse.Namespace, redis: RedisServer, logdir: Path) -> SystemResult:
    """One system's run: server, simulation, clients, warm-up, the measured window."""
    result = SystemResult(system)
    port = free_port()
    if system == "synk":
        server_argv = [sys.executable, "-m", "synk.cli", "serve", "--redis", args.redis, "--port", str(port), "--prefix", PREFIX]
    else:
        server_argv = child_argv("socketio-server", args, "--port", str(port), "--server", args.socketio_server)
    children: list[Child] = []
    try:
        server = await Child.start(f"{system}-server", server_argv, logdir, talk=False)
        children.append(server)
        await wait_port(port, time.monotonic() + 30, lambda: server.alive, server.name)
        sim = await Child.start(f"{system}-sim", child_argv(f"sim-{system}", args), logdir)
        children.append(sim)
        await sim.read(120)
        bounds = [round(i * args.clients / args.client_procs) for i in range(args.client_procs + 1)]
        fleet = []
        for j in range(args.client_procs):
            extra = ["--system", system, "--port", str(port), "--first", str(bounds[j]), "--count", str(bounds[j + 1] - bounds[j])]
            extra += ["--lib", args.client_lib, "--gate", str(max(1, args.subscribing // args.client_procs)), "--loop", args.client_loop]
            c = await Child.start(f"{system}-clients{j}", child_argv("clients", args, *extra), logdir)
            children.append(c)
            fleet.append(c)
        for c in fleet:
            ready = await c.read(args.connect_timeout)
            if not ready.get("ready"):
                raise BenchError(f"{c.name} could not subscribe its clients: {ready}\n{server.tail()}")
            result.subscribe_s = max(result.subscribe_s, float(ready["subscribe_s"]))
        sim.send({"cmd": "go"})
        await asyncio.sleep(args.warmup)
        t0 = time.time() + 0.2
        t1 = t0 + args.seconds
        for c in [sim, *fleet]:
            c.send({"cmd": "window", "window": [t0, t1]})
        procs: dict[str, Callable[[], float]] = {
            "server": server.cpu,
            "redis": lambda: proc_cpu(redis.proc.pid) if redis.proc else 0.0,
            "sim": sim.cpu,
            "clients": lambda: sum(c.cpu() for c in fleet),
        }
        await asyncio.sleep(max(0.0, t0 - time.time()))
        spy = await start_py_spy(args, system, server.proc.pid)
        cpu0 = {k: f() for k, f in procs.items()}
        busy0 = machine_busy()
        w0 = time.monotonic()
        await asyncio.sleep(max(0.0, t1 - time.time()))
        cpu1 = {k: f() for k, f in procs.items()}
        busy1 = machine_busy()
        wall = time.monotonic() - w0
        if spy is not None:
            await spy.wait()
        result.seconds = t1 - t0
        result.server_cpu_s = cpu1["server"] - cpu0["server"]
        result.clients_cpu_s = cpu1["clients"] - cpu0["clients"]
        result.cpu_pct = {k: 100.0 * (cpu1[k] - cpu0[k]) / wall for k in procs}
        cores = os.cpu_count() or 1
        result.machine_busy_pct = 100.0 * (busy1[0] - busy0[0]) / max(1.0, busy1[1] - busy0[1])
        # CPU used by processes outside the benchmark (other work on the machine) skews every figure.
        result.cpu_pct["other"] = max(0.0, result.machine_busy_pct * cores - sum(result.cpu_pct.values()))
        sim.send({"cmd": "stop"})
        result.sim = await sim.read(30)
        subs = [0] * args.keys
        for i in range(args.clients):
            for k in keys_of(i, args.keys, args.keys_per_client):
                subs[k] += 1
        result.expected = sum(n * subs[k] for k, n in enumerate(result.sim["per_key"]))
        for c in fleet:
            c.send({"cmd": "report"})
        for c in fleet:
            rep = await c.read(60)
            result.delivered += int(rep["count"])
            result.closed += int(rep["closed"])
            result.reads += int(rep["reads"])
            result.client_errors += rep["errors"]
            for b, n in rep["hist"].items():
                result.hist[int(b)] = result.hist.get(int(b), 0) + int(n)
            c.send({"cmd": "stop"})
    finally:
        for c in reversed(children):
            await c.stop()
    return result


async def start_py_spy(args: argparse.Namespace, system: str, pid: int) -> asyncio.subprocess.Process | None:
    """``--py-spy DIR``: sample the server during the window into DIR/fanout-SYSTEM.txt (py-spy's raw format)."""
    if not args.py_spy:
        return None
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out = Path(args.py_spy) / f"fanout-{system}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [exe, "record", "-p", str(pid), "-d", str(max(1, int(args.seconds))), "-r", "100", "-f", "raw", "-o", str(out)]
    return await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)


def table(results: list[SystemResult]) -> str:
    rows: list[tuple[str, Callable[[SystemResult], str]]] = [
        ("delivered msgs/s", lambda r: f"{r.delivered_per_s:,.0f}"),
        ("delivered / expected", lambda r: f"{r.delivered:,} / {r.expected:,}"),
        ("server CPU s / 1M msgs", lambda r: f"{r.cpu_s_per_million:.2f}"),
        ("latency p50 ms", lambda r: f"{r.percentile(0.5):.1f}"),
        ("latency p99 ms", lambda r: f"{r.percentile(0.99):.1f}"),
        ("latency max ms", lambda r: f"{max(r.hist, default=0) * BIN_S * 1000:.0f}"),
        ("msgs per client socket read", lambda r: f"{r.msgs_per_read:.2f}" if r.msgs_per_read else "-"),
        ("sim changes/s (late ticks)", lambda r: f"{r.sim.get('in_window', 0) / r.seconds:,.0f} ({r.sim.get('late_ticks', 0)})"),
        ("CPU % server", lambda r: f"{r.cpu_pct['server']:.0f}"),
        ("CPU % redis", lambda r: f"{r.cpu_pct['redis']:.0f}"),
        ("CPU % sim", lambda r: f"{r.cpu_pct['sim']:.0f}"),
        ("CPU % clients (load generator)", lambda r: f"{r.cpu_pct['clients']:.0f}"),
        ("CPU % other (not the bench)", lambda r: f"{r.cpu_pct['other']:.0f}"),
        ("machine busy % (all cores)", lambda r: f"{r.machine_busy_pct:.0f}"),
        ("subscribe time s", lambda r: f"{r.subscribe_s:.1f}"),
    ]
    width = max(len(name) for name, _ in rows)
    cols = [r.name for r in results]
    out = [f"{'':<{width}}  " + "  ".join(f"{c:>18}" for c in cols)]
    for name, fmt in rows:
        out.append(f"{name:<{width}}  " + "  ".join(f"{fmt(r):>18}" for r in results))
    return "\n".join(out)


async def orchestrate(args: argparse.Namespace) -> int:
    limit = raise_nofile()
    needed = args.clients + 200
    if limit < needed:
        print(f"warning: the open-file limit is {limit}, under the {needed} the clients need", file=sys.stderr)
    cores = os.cpu_count() or 1
    redis = RedisServer()
    logdir = Path(tempfile.mkdtemp(prefix="synk-fanout-logs-"))
    results: list[SystemResult] = []
    systems = [args.only] if args.only else ["synk", "socketio"]
    print(
        f"fanout: {args.clients} clients x {args.keys_per_client} of {args.keys} keys, {args.objects_per_key} objects/key, "
        f"{args.rate:g} changes/s at {args.tick_hz:g} Hz, {args.seconds:g} s window after {args.warmup:g} s warm-up; "
        f"{args.client_procs} client process(es) ({args.client_lib}, {args.client_loop}); socketio served by {args.socketio_server}",
        file=sys.stderr,
    )
    print(
        f"note: {cores} cores shared by the server, redis, the simulation and the clients (see the CPU % rows)",
        file=sys.stderr,
    )
    try:
        await asyncio.to_thread(redis.start)
        args.redis = redis.url
        for system in systems:
            print(f"running {system} ...", file=sys.stderr)
            results.append(await run_system(system, args, redis, logdir))
    except BenchError as exc:
        print(f"fanout failed: {exc}\n(logs in {logdir})", file=sys.stderr)
        return 1
    finally:
        await asyncio.to_thread(redis.stop)
    print(table(results))
    by = {r.name: r for r in results}
    out: dict[str, Any] = {
        "bench": "fanout",
        "clients": args.clients,
        "keys": args.keys,
        "keys_per_client": args.keys_per_client,
        "objects_per_key": args.objects_per_key,
        "rate": args.rate,
        "seconds": args.seconds,
        "cores": cores,
        "client_procs": args.client_procs,
        "client_lib": args.client_lib,
        "client_loop": args.client_loop,
        "socketio_server": args.socketio_server,
    }
    for r in results:
        out[r.name] = r.summary()
    targets: dict[str, bool] = {}
    if "synk" in by and "socketio" in by:
        ratio = by["synk"].cpu_s_per_million / by["socketio"].cpu_s_per_million
        out["cpu_ratio"] = round(ratio, 3)
        targets["cpu_per_msg_at_most_third_of_socketio"] = ratio <= TARGET_CPU_RATIO
    if "synk" in by:
        targets["synk_p99_under_50ms"] = by["synk"].percentile(0.99) < TARGET_P99_MS
    out["targets_met"] = targets
    print(json.dumps(out))
    shutil.rmtree(logdir, ignore_errors=True)
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--keys", type=int, default=100)
    ap.add_argument("--keys-per-client", dest="keys_per_client", type=int, default=10)
    ap.add_argument("--objects-per-key", dest="objects_per_key", type=int, default=100)
    ap.add_argument("--rate", type=float, default=500.0, help="object changes per second (default 500: see the module docstring)")
    ap.add_argument("--tick-hz", dest="tick_hz", type=float, default=50.0, help="simulation ticks per second")
    ap.add_argument("--seconds", type=float, default=20.0, help="the measured window of each system")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of load before the window")
    ap.add_argument("--only", choices=["synk", "socketio"])
    ap.add_argument("--client-procs", dest="client_procs", type=int, default=2)
    ap.add_argument("--client-lib", dest="client_lib", choices=["raw", "aiohttp", "websockets"], default="raw")
    ap.add_argument(
        "--client-loop",
        dest="client_loop",
        choices=["uvloop", "asyncio"],
        default="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        help="the clients' event loop (default uvloop when installed)",
    )
    ap.add_argument("--socketio-server", dest="socketio_server", choices=["aiohttp", "uvicorn"], default="aiohttp")
    ap.add_argument(
        "--subscribing", type=int, default=8, help="clients connecting and subscribing at once, over all client processes (default 8)"
    )
    ap.add_argument("--py-spy", dest="py_spy", metavar="DIR", help="profile each server during its window with py-spy, into DIR")
    ap.add_argument("--connect-timeout", dest="connect_timeout", type=float, default=180.0)
    # Internal: the child processes.
    ap.add_argument("--role", default="main", help=argparse.SUPPRESS)
    ap.add_argument("--redis", default="", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--system", default="synk", help=argparse.SUPPRESS)
    ap.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--lib", default="aiohttp", help=argparse.SUPPRESS)
    ap.add_argument("--gate", type=int, default=4, help=argparse.SUPPRESS)
    ap.add_argument("--loop", default="asyncio", help=argparse.SUPPRESS)
    ap.add_argument("--server", default="aiohttp", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.per_client = args.keys_per_client
    if not 1 <= args.keys_per_client <= args.keys:
        ap.error("--keys-per-client must be between 1 and --keys")
    if args.client_procs < 1 or args.clients < args.client_procs:
        ap.error("--client-procs must be between 1 and --clients")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    role = args.role
    if role == "main":
        return asyncio.run(orchestrate(args))
    if role == "socketio-server":
        socketio_server(args)
    elif role == "sim-synk":
        asyncio.run(sim_synk(args))
    elif role == "sim-socketio":
        asyncio.run(sim_socketio(args))
    elif role == "clients":
        if args.loop == "uvloop":
            import uvloop

            uvloop.run(clients(args))
        else:
            asyncio.run(clients(args))
    else:
        raise SystemExit(f"unknown role {role!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
