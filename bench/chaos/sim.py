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
    "owned": {id: [key, version, incarnation, state]}, "stats": {...},
    "outage_s": S, "max_flush_s": F}``: what the world believes it stored,
    the longest stretch of failed flushes since the last quiet (from the
    start of the first failing flush to the end of the next flush that
    landed) and the slowest flush that landed

Writes are checked as they go: after each flush that lands, every owned
object's version is *acknowledged*. After a ``reload()``, a stored version
below the acknowledged one is an acknowledged write lost (``acked_lost``);
one above it by more than the failed flush could have added is a write
applied twice (``doubled``). Both must stay 0 whatever the faults, unless the
store itself loses data (``redis-wipe``). An object ``reload()`` reports
missing counts as ``lost`` when the store had acknowledged it (nobody else
deletes this simulation's objects), as ``unflushed`` when it was created by
the flush that failed (``reload()`` drops what was never stored).
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
from typing import Any

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
            (
                "ticks",
                "flushes",
                "failed_flushes",
                "reloads",
                "reload_errors",
                "lost",
                "unflushed",
                "created",
                "deleted",
                "moved",
                "changed",
                "acked_lost",
                "doubled",
            ),
            0,
        )
        #: id -> the version of the thing the store last acknowledged (a flush that landed)
        self.acked: dict[str, int] = {}
        #: ids the current tick changed, moved or created (its flush may add 1 to their version)
        self.touched: set[str] = set()
        #: when the first of the failing flushes under way started; the longest such stretch, the slowest flush
        self.failing_since: float | None = None
        self.outage_s = 0.0
        self.max_flush_s = 0.0

    def _create(self) -> None:
        oid = None
        if self.graveyard and self.rng.random() < REUSE_CHANCE:
            oid = self.graveyard.pop(self.rng.randrange(len(self.graveyard)))
        thing = self.world.create(Thing(oid, k=self.rng.randrange(KEYS), tag=f"t{self.rng.randrange(1000)}"))
        self.things[thing.id] = thing
        self.touched.add(thing.id)
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
            self.touched.add(oid)
            if rng.random() < 0.1:
                thing.tag = f"t{rng.randrange(1000)}"
            self.stats["changed"] += 1
        for oid in rng.sample(ids, min(MOVES_PER_TICK, len(ids))):
            thing = self.things[oid]
            was = thing.k
            thing.k = (thing.k + rng.randrange(1, KEYS)) % KEYS
            self.touched.add(oid)
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
        started = time.monotonic()
        try:
            await self.world.flush()
        except synk.WriteError as exc:
            self.stats["failed_flushes"] += 1
            if self.failing_since is None:
                self.failing_since = started
            self.failed_deletes.extend(deleted)
            log.warning("flush failed (%s); reloading", str(exc)[:200])
            await self.recover()
            self.touched.clear()
            return False
        now = time.monotonic()
        self.max_flush_s = max(self.max_flush_s, now - started)
        if self.failing_since is not None:
            self.outage_s = max(self.outage_s, now - self.failing_since)
            log.info("writes back after %.2f s of failed flushes", now - self.failing_since)
            self.failing_since = None
        self.graveyard.extend(deleted)
        for oid in deleted:
            self.acked.pop(oid, None)
        for oid, thing in self.things.items():
            self.acked[oid] = thing.version
        self.touched.clear()
        return True

    def check_reloaded(self) -> None:
        """Compare what reload() found with what the store had acknowledged (see the module docstring)."""
        for oid, thing in self.things.items():
            acked = self.acked.get(oid)
            if acked is None:  # created by the failed flush: never acknowledged
                continue
            most = acked + (1 if oid in self.touched else 0)
            if thing.version < acked:
                self.stats["acked_lost"] += 1
                log.error("ACKED WRITE LOST: %s stored at v%d after v%d was acknowledged", oid, thing.version, acked)
            elif thing.version > most:
                self.stats["doubled"] += 1
                log.error(
                    "WRITE APPLIED TWICE? %s stored at v%d; acknowledged v%d, at most v%d sent since", oid, thing.version, acked, most
                )
            self.acked[oid] = thing.version

    def owned(self) -> dict[str, list[Any]]:
        """Every owned thing as the world believes the store holds it: key, version, incarnation, state."""
        return {oid: [t.sub_key, t.version, t._synk_token, t.state()] for oid, t in sorted(self.things.items())}

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
                # At most 0.2 s: the outage measured is the store's, give or take one attempt.
                delay = min(delay * 2, 0.2)
        self.stats["reloads"] += 1
        for obj in report.missing:
            if self.things.pop(obj.id, None) is None:
                continue
            self.dropped.append(obj.id)
            acked = self.acked.pop(obj.id, None)
            if acked is None:
                # Created by the failed flush: reload() drops what was never stored, as documented.
                self.stats["unflushed"] += 1
            else:
                # The store had acknowledged it, and nobody deleted it: lost (or, after redis-wipe, wiped).
                self.stats["lost"] += 1
                log.warning("lost %s: reload() found it missing, acknowledged at v%d", obj.id, acked)
        self.check_reloaded()


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
                        "owned": sim.owned(),
                        "stats": sim.stats,
                        "outage_s": round(sim.outage_s, 3),
                        "max_flush_s": round(sim.max_flush_s, 3),
                        "failed_deletes": sim.failed_deletes[-500:],
                        "dropped": sim.dropped[-500:],
                    }
                )
                # The figures are per storm.
                sim.outage_s = sim.max_flush_s = 0.0
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
