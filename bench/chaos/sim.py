"""The simulation process (``python -m bench.chaos --role sim``).

It owns about ``OBJECTS`` things over ``KEYS`` keys and, while running,
ticks at ``TICK_HZ``: each tick changes a few things, moves a couple to
another key, deletes one now and then and creates new ones to keep the
population up (sometimes reusing the id of a thing deleted earlier, so that
clients see new incarnations of known ids). Each tick ends with ``await
world.flush()``; when that raises ``WriteError`` (Redis down, restarted,
stopped, its data wiped), the simulation calls ``world.reload()`` until it
succeeds, forgets the things the store no longer holds, and goes on: the
recovery the README documents.

Commands on stdin (JSON lines), answers on stdout:

``go``
    start (or resume) ticking
``quiet``
    stop mutating after the current tick; once the store has confirmed the
    last flush (reloading first if it failed) answer ``{"quiet": true,
    "owned": [ids], "stats": {...}}``
``stop``
    answer ``{"stats": {...}}`` and exit
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import sys
import time

import synk
from bench.chaos.common import KEYS, OBJECTS, TICK_HZ, Thing
from bench.fanout.common import emit, read_command, stdin_lines

log = logging.getLogger("chaos.sim")

#: Per tick: things changed, things moved to another key; chance of a delete.
CHANGES_PER_TICK = 8
MOVES_PER_TICK = 2
DELETE_CHANCE = 0.5
#: Most things created in one tick when under the population (refills a wiped store in ~2 s).
CREATES_PER_TICK = 10
#: Share of creates that reuse the id of a thing deleted earlier.
REUSE_CHANCE = 0.3


class Simulation:
    """The things, the world, and the statistics of one simulation process."""

    def __init__(self, world: synk.World, rng: random.Random) -> None:
        self.world = world
        self.rng = rng
        self.things: dict[str, Thing] = {}
        #: ids whose delete the store confirmed: free to create again
        self.graveyard: list[str] = []
        #: ids the simulation let go of while the store may still hold them: deletes
        #: whose flush failed, and things reload() reported missing (to explain orphans)
        self.failed_deletes: list[str] = []
        self.dropped: list[str] = []
        self.stats: dict[str, int] = dict.fromkeys(
            ("ticks", "flushes", "failed_flushes", "reloads", "reload_errors", "lost", "created", "deleted", "moved", "changed"), 0
        )

    def _create(self) -> None:
        oid = None
        if self.graveyard and self.rng.random() < REUSE_CHANCE:
            oid = self.graveyard.pop(self.rng.randrange(len(self.graveyard)))
        thing = self.world.create(Thing(oid, k=self.rng.randrange(KEYS), tag=f"t{self.rng.randrange(1000)}"))
        self.things[thing.id] = thing
        self.stats["created"] += 1

    def mutate(self) -> list[str]:
        """One tick's changes; returns the ids deleted in it.

        Moves are logged (``move ID FROM->TO v VERSION``, the version the move
        lands at), so that a missing object's path through the keys can be
        followed in ``sim.log`` next to a client's trace.
        """
        rng = self.rng
        ids = list(self.things)
        for oid in rng.sample(ids, min(CHANGES_PER_TICK, len(ids))):
            thing = self.things[oid]
            thing.n += 1
            if rng.random() < 0.1:
                thing.tag = f"t{rng.randrange(1000)}"
            self.stats["changed"] += 1
        for oid in rng.sample(ids, min(MOVES_PER_TICK, len(ids))):
            thing = self.things[oid]
            was = thing.k
            thing.k = (thing.k + rng.randrange(1, KEYS)) % KEYS
            log.info("move %s %d->%d v%d", oid, was, thing.k, thing.version + 1)
            self.stats["moved"] += 1
        deleted: list[str] = []
        if ids and rng.random() < DELETE_CHANCE:
            victim = self.things.pop(rng.choice(ids))
            self.world.delete(victim)
            deleted.append(victim.id)
            self.stats["deleted"] += 1
        for _ in range(min(CREATES_PER_TICK, OBJECTS - len(self.things))):
            self._create()
        return deleted

    async def flush(self, deleted: list[str]) -> bool:
        """Flush; on a WriteError recover by reloading. Returns whether the flush landed."""
        self.stats["flushes"] += 1
        try:
            await self.world.flush()
        except synk.WriteError as exc:
            self.stats["failed_flushes"] += 1
            self.failed_deletes.extend(deleted)
            log.warning("flush failed (%s); reloading", str(exc)[:200])
            await self.recover()
            return False
        self.graveyard.extend(deleted)
        return True

    async def recover(self) -> None:
        """``world.reload()`` until it succeeds (Redis may be down for seconds), then forget what the store lost."""
        delay = 0.05
        while True:
            try:
                report = await self.world.reload()
                break
            except synk.SynkError as exc:
                self.stats["reload_errors"] += 1
                log.warning("reload failed (%s); retrying", exc)
                await asyncio.sleep(delay)  # back-off between attempts at an unreachable store
                delay = min(delay * 2, 1.0)
        self.stats["reloads"] += 1
        for obj in report.missing:
            if self.things.pop(obj.id, None) is not None:
                self.stats["lost"] += 1
                self.dropped.append(obj.id)


async def run(args: argparse.Namespace) -> None:
    """The process's main: connect, then obey the orchestrator's commands."""
    commands = await stdin_lines()
    world = await synk.connect(args.redis, types=[Thing])
    sim = Simulation(world, random.Random(args.seed))
    state = {"running": False, "quiet": False, "stop": False}
    wake = asyncio.Event()

    async def listen() -> None:
        while not state["stop"]:
            name = (await read_command(commands)).get("cmd")
            if name == "go":
                state["running"], state["quiet"] = True, False
            elif name == "quiet":
                state["running"], state["quiet"] = False, True
            elif name == "stop":
                state["stop"] = True
            wake.set()

    listener = asyncio.create_task(listen())
    emit({"ready": True})
    dt = 1.0 / TICK_HZ
    try:
        while not state["stop"]:
            if state["quiet"]:
                # Nothing is pending: the last tick's flush was awaited (and
                # recovered from if it failed); this empty flush is a no-op.
                state["quiet"] = False
                await sim.flush([])
                emit(
                    {
                        "quiet": True,
                        "owned": sorted(sim.things),
                        "stats": sim.stats,
                        "failed_deletes": sim.failed_deletes[-500:],
                        "dropped": sim.dropped[-500:],
                    }
                )
                continue
            if not state["running"]:
                await wake.wait()
                wake.clear()
                continue
            started = time.monotonic()
            deleted = sim.mutate()
            await sim.flush(deleted)
            sim.stats["ticks"] += 1
            wait = dt - (time.monotonic() - started)
            if wait > 0:
                await asyncio.sleep(wait)  # the tick rate, not a wait for a condition
    finally:
        listener.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(world.close(), 5)
    emit({"stats": sim.stats})


def main(args: argparse.Namespace) -> None:
    """Entry point of ``--role sim``."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run(args))
