"""``synk demo``: a wandering world, a gateway and a page, in one process.

The simulation owns a map of 64×64 chunks (each a subscription key) with a
few thousand agents that wander across chunks, flushed at 20 Hz. Clicking
the page sends a ``spawn`` message, which the simulation answers by
creating an agent there; every open page sees it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import random
import secrets
import time
from pathlib import Path
from typing import Any

import synk
from synk.gateway import Gateway

__all__ = ["CHUNK", "CHUNKS", "Agent", "Simulation", "run"]

log = logging.getLogger("synk.demo")

CHUNK = 16  #: world units per chunk side
CHUNKS = 64  #: chunks per map side
SIZE = CHUNK * CHUNKS
STATIC = Path(__file__).parent / "static"


class Agent(synk.Object):
    """A wanderer; ``ts`` is the wall-clock time (ms) of its last move, for latency."""

    type_key = "agent"
    x: float = 0.0
    y: float = 0.0
    hue: int = 0
    ts: float = 0.0

    @property
    def sub_key(self) -> str:
        return f"chunk:{int(self.x) // CHUNK}|{int(self.y) // CHUNK}"


class Simulation:
    """Agents that wander; ``step()`` moves them, the world flushes."""

    def __init__(self, world: synk.World, agents: int, seed: int = 1) -> None:
        self.world = world
        self.rng = random.Random(seed)
        self.heading: dict[str, float] = {}
        self.agents: list[Agent] = []
        self.target = agents
        self.tick = 0

    def spawn(self, x: float, y: float, hue: int | None = None) -> Agent:
        """A new agent at (x, y), clamped to the map."""
        x = min(max(x, 0.0), SIZE - 0.01)
        y = min(max(y, 0.0), SIZE - 0.01)
        agent = self.world.create(
            Agent(x=round(x, 2), y=round(y, 2), hue=self.rng.randrange(360) if hue is None else hue, ts=time.time() * 1000)
        )
        self.heading[agent.id] = self.rng.uniform(0, 2 * math.pi)
        self.agents.append(agent)
        return agent

    async def populate(self) -> None:
        """Resume the agents stored on the map, then spawn up to the target."""
        keys = [f"chunk:{cx}|{cy}" for cx in range(CHUNKS) for cy in range(CHUNKS)]
        for start in range(0, len(keys), 512):
            for obj in await self.world.load(keys[start : start + 512]):
                if isinstance(obj, Agent):
                    self.agents.append(obj)
                    self.heading[obj.id] = self.rng.uniform(0, 2 * math.pi)
        while len(self.agents) < self.target:
            self.spawn(self.rng.uniform(0, SIZE), self.rng.uniform(0, SIZE))

    def step(self, dt: float) -> None:
        """Move half the agents (alternating ticks); most keep to their chunk, some cross.

        Each agent moves 10 times a second: smooth enough on screen, and half
        the writes of moving all of them at the flush rate.
        """
        now = time.time() * 1000
        rng = self.rng
        self.tick += 1
        dt *= 2
        for agent in self.agents[self.tick % 2 :: 2]:
            h = self.heading[agent.id] + rng.uniform(-0.3, 0.3)
            x = agent.x + math.cos(h) * 6 * dt
            y = agent.y + math.sin(h) * 6 * dt
            if not (0 <= x < SIZE and 0 <= y < SIZE):
                h += math.pi
                x, y = agent.x, agent.y
            self.heading[agent.id] = h
            agent.x = round(x, 2)
            agent.y = round(y, 2)
            agent.ts = now


async def _recover(world: synk.World, stop: asyncio.Event) -> None:
    """After a failed flush: reload, waiting out a Redis that is down, and put back
    from memory whatever the store lost (the demo deletes nothing, so anything
    missing was lost: a Redis restarted without persistence)."""
    delay = 0.1
    while not stop.is_set():
        try:
            report = await world.reload()
        except synk.ConnectionError as exc:
            log.warning("demo: %s; trying again in %.1f s", exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 2.0)
            continue
        if report.missing:
            log.warning("demo: the store lost %d agents; creating them again", len(report.missing))
            world.recreate(report.missing)
        return


async def _simulate(world: synk.World, sim: Simulation, hz: float, stop: asyncio.Event) -> None:
    period = 1.0 / hz

    async def inbox() -> None:
        async for msg in world.messages():
            if msg.method == "spawn":
                x, y = msg.data.get("x"), msg.data.get("y")
                if isinstance(x, (int, float)) and isinstance(y, (int, float)):
                    sim.spawn(float(x), float(y), hue=0)

    reader = asyncio.create_task(inbox())
    loop = asyncio.get_running_loop()
    next_tick = loop.time()
    try:
        while not stop.is_set():
            sim.step(period)
            try:
                world.flush()
            except synk.WriteError as exc:
                log.warning("demo: %s; reloading from the store", exc)
                await _recover(world, stop)
            next_tick += period
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, next_tick - loop.time()))
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


LEASE = "synk:demo:simulation"
LEASE_SECONDS = 5


async def _take_lease(world: synk.World, stop: asyncio.Event) -> bool:
    """On Redis, only one demo process simulates a world: it holds a lease.

    A second ``synk demo`` on the same Redis finds the lease taken and only
    serves (which shows the multi-process design); the lease lapses a few
    seconds after its holder stops.
    """
    from redis.exceptions import RedisError

    from synk.store.redis import RedisStore

    store = world.store
    if not isinstance(store, RedisStore):
        return True
    token = secrets.token_hex(8)
    if not await store.commands.set(LEASE, token, nx=True, ex=LEASE_SECONDS):
        return False

    async def renew() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), LEASE_SECONDS / 3)
            try:
                holder = await store.commands.get(LEASE)
                if holder == token.encode():
                    await store.commands.expire(LEASE, 1 if stop.is_set() else LEASE_SECONDS)
                elif holder is None and not stop.is_set():
                    # Redis came back without it (restarted, no persistence): this
                    # process still simulates, so it takes the lease again.
                    await store.commands.set(LEASE, token, nx=True, ex=LEASE_SECONDS)
            except (synk.SynkError, OSError, RedisError) as exc:  # Redis down: renewed once it is back
                log.warning("demo: the simulation lease could not be renewed: %s", exc)

    task = asyncio.create_task(renew())
    _background.add(task)
    task.add_done_callback(_background.discard)
    return True


_background: set[asyncio.Task[None]] = set()


async def run(args: argparse.Namespace, stop: asyncio.Event) -> None:
    """Run the demo until ``stop`` is set (the CLI sets it on SIGINT or SIGTERM)."""
    url = args.redis or "memory://"
    if args.no_sim and not args.redis:
        raise synk.ConfigError("--no-sim serves a world simulated by another process: it needs --redis")
    async with synk.connect(url, types=[Agent]) as world:
        sim_task: asyncio.Task[Any] | None = None
        simulate = not args.no_sim
        if simulate and not await _take_lease(world, stop):
            print("synk demo: another synk demo simulates this world; serving it only", flush=True)
            simulate = False
        if simulate:
            sim = Simulation(world, args.agents)
            await sim.populate()
            await world.flush()
            sim_task = asyncio.create_task(_simulate(world, sim, 20.0, stop))
        gateway = Gateway(world, static_dir=STATIC, max_keys=2000)
        async with gateway.serve(args.host, args.port) as server:
            print(f"synk demo: open http://{args.host}:{server.port}/  ({url}; Ctrl-C stops)", flush=True)
            await stop.wait()
        if sim_task is not None:
            await sim_task
    print("synk demo stopped", flush=True)
