"""The floor: the least a pure-Python fan-out server does for this workload (a child process).

A ``websockets`` asyncio server, like synk's standalone gateway, with no
Redis and no gateway between the changes and the sockets: the process runs
the simulation's tick loop itself (``drive``, the same rate, ticks and
round-robin over the same objects as the other simulations), builds each
change's ``mod`` message once (synk's shape, ``orjson``), appends it to the
pending list of every client following its key, and at the end of the tick
writes each client's messages with one ``transport.write``: its frames back
to back, or one batch frame (a JSON array) for a client that declared
``synk_batch=1``. Clients subscribe with synk's ``updateSubscription`` and
get a ``snap`` per key (no ``add``: the objects' states are not the point),
so the same client code loads it.

What it leaves out, against synk: the Redis hop (scripts, sharded pub/sub,
the gateway's subscriber reading and routing channel messages), versions,
backlogs, slow-client handling, rate limits and keepalive. Its server CPU
includes generating the changes, which synk's and socketio's rows leave to
their simulation process (a few dictionaries a tick: small next to the
fan-out). Its latency is stamp to receipt within one process.
"""

from __future__ import annotations

import argparse
import random
import secrets
import struct
import time
from typing import TYPE_CHECKING

import orjson

from bench.fanout.common import key_name
from bench.fanout.sims import drive
from synk.core.names import new_id

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

_TEXT_FIN = 0x81


class Peer:
    """One connected client: its pending messages of this tick and whether it takes batch frames."""

    __slots__ = ("batch", "conn", "out")

    def __init__(self, conn: ServerConnection, batch: bool) -> None:
        self.conn = conn
        self.batch = batch
        self.out: list[bytes] = []


def frames(messages: list[bytes], batch: bool) -> bytes:
    """The websocket text frames (unmasked, final) of ``messages``; with ``batch``, one frame holding a JSON array."""
    if batch and len(messages) > 1:
        messages = [b"[" + b",".join(messages) + b"]"]
    parts: list[bytes] = []
    for data in messages:
        n = len(data)
        if n < 126:
            parts.append(bytes((_TEXT_FIN, n)))
        elif n < 65536:
            parts.append(struct.pack("!BBH", _TEXT_FIN, 126, n))
        else:
            parts.append(struct.pack("!BBQ", _TEXT_FIN, 127, n))
        parts.append(data)
    return b"".join(parts)


async def floor_server(args: argparse.Namespace) -> None:
    """Serve websockets on ``args.port`` and run the tick loop (the orchestrator's commands, as a simulation's)."""
    from websockets.asyncio.server import serve
    from websockets.exceptions import ConnectionClosed
    from websockets.protocol import State

    names = [key_name(k) for k in range(args.keys)]
    index = {name: k for k, name in enumerate(names)}
    subs: list[list[Peer]] = [[] for _ in range(args.keys)]
    objects = [(new_id(), k) for k in range(args.keys) for _ in range(args.objects_per_key)]
    random.Random(1).shuffle(objects)
    incarnations = [secrets.token_hex(6) for _ in objects]
    versions = [1] * len(objects)
    pos = 0
    opened = State.OPEN

    async def handler(conn: ServerConnection) -> None:
        path = conn.request.path if conn.request is not None else "/"
        peer = Peer(conn, "synk_batch=1" in path)
        mine: list[int] = []
        try:
            async for frame in conn:
                m = orjson.loads(frame)
                if not isinstance(m, dict) or m.get("method") != "updateSubscription":
                    continue
                for key in m.get("add", ()):
                    k = index.get(key)
                    if k is None or k in mine:
                        continue
                    mine.append(k)
                    subs[k].append(peer)
                    await conn.send(orjson.dumps({"method": "snap", "sKey": key, "ids": []}).decode())
        except ConnectionClosed:
            pass
        finally:
            for k in mine:
                subs[k].remove(peer)

    async def step(n: int) -> tuple[float, list[int]]:
        nonlocal pos
        stamp = time.time()
        keys: list[int] = []
        touched: list[Peer] = []
        dumps = orjson.dumps
        for _ in range(n):
            i = pos
            pos = (pos + 1) % len(objects)
            oid, k = objects[i]
            versions[i] += 1
            data = dumps(
                {"method": "mod", "t": "body", "id": oid, "sKey": names[k], "v": versions[i], "diff": {"ts": stamp}, "i": incarnations[i]}
            )
            keys.append(k)
            for peer in subs[k]:
                if not peer.out:
                    touched.append(peer)
                peer.out.append(data)
        for peer in touched:
            out, peer.out = peer.out, []
            conn = peer.conn
            if conn.protocol.state is opened:
                conn.transport.write(frames(out, peer.batch))
        return stamp, keys

    async with serve(handler, "127.0.0.1", args.port, compression=None, ping_interval=None, max_size=1 << 20):
        await drive(args, step)
