"""The simulations (child processes) and the python-socketio server (a child process)."""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import time
from typing import TYPE_CHECKING, Any

import synk
from bench.fanout.common import PREFIX, emit, key_name, read_command, stdin_lines
from synk.core.names import new_id

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


class Body(synk.Object):
    """An object in key ``k{k}``; ``ts`` is the wall-clock time of its last change."""

    type_key = "body"
    k: int = 0
    ts: float = 0.0

    @property
    def sub_key(self) -> str:
        return key_name(self.k)


class Counts:
    """The simulation's figures since the last ``window`` command (or its start)."""

    def __init__(self, keys: int) -> None:
        self.per_key = [0] * keys
        self.changes = 0
        self.in_window = 0
        self.ticks = 0
        self.late = 0
        self.step_s = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "changes": self.changes,
            "in_window": self.in_window,
            "per_key": self.per_key,
            "ticks": self.ticks,
            "late_ticks": self.late,
            "step_s": self.step_s,
        }


async def drive(args: argparse.Namespace, step: Callable[[int], Awaitable[tuple[float, list[int]]]]) -> None:
    """Run ``step`` at ``args.rate`` changes a second in ticks of ``args.tick_hz``, as the orchestrator says.

    Commands: ``go`` (start ticking), ``rate`` (change the rate from the
    next tick on: ``--sweep``), ``window`` [t0, t1] (count the changes
    stamped inside it, per key; the counts start again from zero),
    ``report`` (print the counts), ``stop`` (print them and exit).
    """
    commands = await stdin_lines()
    emit({"ready": True})
    go = asyncio.Event()
    state: dict[str, Any] = {"stop": False, "window": (math.inf, math.inf), "rate": args.rate, "counts": Counts(args.keys)}

    async def listen() -> None:
        while True:
            cmd = await read_command(commands)
            if cmd["cmd"] == "go":
                go.set()
            elif cmd["cmd"] == "rate":
                state["rate"] = float(cmd["rate"])
            elif cmd["cmd"] == "window":
                state["window"] = tuple(cmd["window"])
                state["counts"] = Counts(args.keys)
            elif cmd["cmd"] == "report":
                emit(state["counts"].as_json())
            elif cmd["cmd"] == "stop":
                state["stop"] = True
                go.set()
                return

    listener = asyncio.create_task(listen())
    await go.wait()
    dt = 1.0 / args.tick_hz
    owed = 0.0
    next_tick = time.monotonic()
    while not state["stop"]:
        owed += state["rate"] / args.tick_hz
        n = int(owed)
        owed -= n
        started = time.monotonic()
        stamp, keys = await step(n)
        counts: Counts = state["counts"]
        counts.step_s += time.monotonic() - started
        counts.ticks += 1
        counts.changes += n
        t0, t1 = state["window"]
        if t0 <= stamp < t1:
            counts.in_window += n
            for k in keys:
                counts.per_key[k] += 1
        next_tick += dt
        wait = next_tick - time.monotonic()
        if wait < -dt:
            counts.late += 1
            next_tick = time.monotonic()  # fell behind by more than a tick: do not burst to catch up
        # Always through the loop, late or not: a step that never awaits (the floor's)
        # would otherwise starve the sockets' writes and the orchestrator's commands.
        await asyncio.sleep(max(0.0, wait))
    listener.cancel()
    emit(state["counts"].as_json())


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


# -- synk's gateway as an ASGI app under uvicorn (child process) -----------------------------------


def synk_asgi_server(args: argparse.Namespace) -> None:
    """``gateway.asgi_app()`` served by uvicorn, as docs/gateway.md shows it run on its own.

    On asyncio's loop, as ``synk serve`` runs (uvicorn would pick uvloop),
    and with ``gc_freeze`` on, as ``synk serve`` has it (the process is the
    gateway's alone), so that the row differs from synk's by the transport alone.
    """
    import uvicorn

    from synk.gateway import Gateway

    gateway = Gateway(args.redis, prefix=PREFIX, write_interval=args.write_interval, gc_freeze=args.gc_freeze)
    uvicorn.run(gateway.asgi_app(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False, loop="asyncio")
