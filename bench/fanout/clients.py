"""The load generator: websocket clients of either server, in child processes."""

from __future__ import annotations

import argparse
import asyncio
import base64
import math
import os
import struct
import sys
import time
from typing import TYPE_CHECKING, Any, cast

import orjson

from bench.fanout.common import BINS, emit, key_name, keys_of, raise_nofile, read_command, stdin_lines

if TYPE_CHECKING:
    from collections.abc import Callable


class Tally:
    """What one client process saw: the mods received inside the window, their latencies, frames and bytes."""

    def __init__(self) -> None:
        self.t0 = math.inf
        self.t1 = math.inf
        self.count = 0
        #: socket reads during the window (the raw client only): how well the server coalesces frames
        self.reads = 0
        #: text frames received during the window (a batch frame is one, however many messages it holds)
        self.frames = 0
        #: bytes received during the window: on the wire for the raw client, frame payloads for the others
        self.bytes = 0
        #: when the last text frame arrived (``--sweep`` waits for a backlog to drain)
        self.last = 0.0
        self.hist = [0] * BINS
        self.subscribed = 0
        self.all_subscribed = asyncio.Event()
        #: set when a connection ends before it has subscribed
        self.failed = asyncio.Event()
        self.expected_subs = 0
        self.closed = 0
        self.errors: list[str] = []

    def mod(self, stamp: float, t: float) -> None:
        """A mod stamped ``stamp`` arrived at ``t``: count it if it arrived inside the window."""
        if self.t0 <= t < self.t1:
            self.count += 1
            b = int((t - stamp) * 10_000.0)
            self.hist[b if b < BINS else BINS - 1] += 1

    def frame(self, t: float) -> None:
        """A text frame arrived at ``t``."""
        self.last = t
        if self.t0 <= t < self.t1:
            self.frames += 1

    def received(self, size: int) -> None:
        """``size`` bytes arrived (now)."""
        if self.t0 <= time.time() < self.t1:
            self.bytes += size

    def subscribed_one(self) -> None:
        self.subscribed += 1
        if self.subscribed >= self.expected_subs:
            self.all_subscribed.set()

    def report(self) -> dict[str, Any]:
        """The window's figures; then they start again from zero (``--sweep`` measures several windows)."""
        out = {
            "count": self.count,
            "reads": self.reads,
            "frames": self.frames,
            "bytes": self.bytes,
            "closed": self.closed,
            "errors": self.errors[:5],
            "hist": {str(i): c for i, c in enumerate(self.hist) if c},
        }
        self.count = self.reads = self.frames = self.bytes = 0
        self.hist = [0] * BINS
        self.errors = []
        return out


class SynkConn:
    """One synk client's protocol state: subscribe, wait for the snapshots, time the mods.

    A frame holds one message (a JSON object) or, for a client that declared
    ``synk_batch=1``, possibly several (a JSON array, PROTOCOL.md "Batch
    frames"): every message of an array counts as a delivery of its own,
    timed at the frame's arrival. With ``synk_compact=1`` a key's mods
    (``[sKey, [h, v, diff], ...]``) count one delivery per entry.
    """

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
        t = time.time()
        tally = self.tally
        tally.frame(t)
        if type(m) is list:
            if m and type(m[0]) is str:  # one key's compact mods alone: [sKey, [h, v, diff], ...]
                for entry in m[1:]:
                    tally.mod(entry[2]["ts"], t)
                return None
            for one in m:
                if type(one) is list:  # a key's compact mods in a batch frame
                    for entry in one[1:]:
                        tally.mod(entry[2]["ts"], t)
                elif one["method"] == "mod":
                    tally.mod(one["diff"]["ts"], t)
                else:
                    self.other(one)
        elif m["method"] == "mod":
            tally.mod(m["diff"]["ts"], t)
        else:
            self.other(m)
        return None

    def other(self, m: dict[str, Any]) -> None:
        """A message other than a mod: a key's snapshot is complete, or an error."""
        method = m["method"]
        if method == "snap":
            self.pending.discard(m["sKey"])
            if not self.pending and self.release is not None:
                self.release()
                self.release = None
                self.tally.subscribed_one()
        elif method == "error":
            self.tally.errors.append(str(m))


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
            t = time.time()
            self.tally.frame(t)
            if event[0] == "mod":
                self.tally.mod(event[1]["diff"]["ts"], t)
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
                tally.received(len(msg.data))
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
                tally.received(len(data))
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
            tally.bytes += len(data)
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
    if args.system == "socketio":
        path = "/socket.io/?EIO=4&transport=websocket"
        conns: list[Conn] = [SocketioConn([key_name(k) for k in keys_of(i, args.keys, args.per_client)], tally) for i in ids]
    else:  # synk's protocol: the gateway (standalone or ASGI) and the floor
        query = (["synk_batch=1"] if args.batch else []) + (["synk_resnap=1"] if args.resnap or args.compact else [])
        query += ["synk_compact=1"] if args.compact else []
        path = "/?" + "&".join(query) if query else "/"
        conns = [SynkConn([key_name(k) for k in keys_of(i, args.keys, args.per_client)], tally) for i in ids]
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
        elif cmd["cmd"] == "last":
            emit({"last": tally.last})
        elif cmd["cmd"] == "stop":
            break
    # A load generator has nothing to close politely: the kernel resets the sockets.
    sys.stdout.flush()
    os._exit(0)
