"""Every process of a chaos run, started, restarted and stopped in one place.

The store is one ``redis-server`` (``ChaosRedis``), each gateway reaching it
through its own proxy, or with ``--cluster`` a private Redis Cluster of three
primaries and three replicas (``bench.redis_cluster``) that gateways and
simulations reach directly: a cluster's nodes announce their own addresses,
which a proxy in front of one node cannot change.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.chaos.common import ALL_KEYS, CLIENTS_JS
from bench.chaos.proxy import Proxy
from bench.chaos.redis_ctl import ChaosRedis, wait_started
from bench.fanout.common import BenchError, Child, wait_port
from bench.redis_cluster import RedisCluster, command
from bench.redis_server import free_port

if TYPE_CHECKING:
    import argparse

__all__ = ["Run"]

#: How long a started process may take to be ready.
START_TIMEOUT = 30.0


class Talker:
    """A child that answers JSON commands carrying ``seq``, one exchange at a time."""

    def __init__(self, child: Child) -> None:
        self.child = child
        self._lock = asyncio.Lock()
        self._seq = itertools.count(1)

    async def ask(self, cmd: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        """Send ``cmd`` and return the answer with the same ``seq`` (older answers are skipped)."""
        async with self._lock:
            seq = next(self._seq)
            self.child.send({**cmd, "seq": seq})
            deadline = time.monotonic() + timeout
            while True:
                answer = await self.child.read(max(0.1, deadline - time.monotonic()))
                if answer.get("seq") == seq:
                    return answer


class Run:
    """Redis, its proxies, the gateways, the simulation and the client fleets of one run."""

    def __init__(self, args: argparse.Namespace, logdir: Path) -> None:
        self.args = args
        self.logdir = logdir
        #: the store: one Redis behind a proxy per gateway, or a cluster reached directly
        self.cluster: RedisCluster | None = RedisCluster(3, replicas=True) if args.cluster else None
        self.redis: ChaosRedis | None = None if args.cluster else ChaosRedis()
        self.proxies = [Proxy(self.redis.port) for _ in range(args.gateways)] if self.redis is not None else []
        self.gateway_ports = [free_port() for _ in range(args.gateways)]
        self.gateways: list[Child | None] = [None] * args.gateways
        self.sims: list[Child] = []
        self.fleets: list[Talker | None] = [None] * args.client_procs
        self.locks: dict[str, asyncio.Lock] = {}
        self._serial = itertools.count()
        self._t0 = time.monotonic()
        #: what happened during the current storm, for the report
        self.events: list[str] = []
        #: each simulation's counters at the end of the last storm
        self.sim_totals: list[dict[str, int]] = [{} for _ in range(args.sims)]
        #: the keys whose slot the current storm moved (reshard), for the report
        self.resharded: list[str] = []
        #: lines of the gateways' logs already read by ``gateway_warnings()``, per log file
        self._log_lines: dict[Path, int] = {}
        #: the store invariant's violations after the last storm
        self.violations: set[str] = set()
        #: processes that died without the harness killing them
        self.crashes: list[str] = []

    def lock(self, name: str) -> asyncio.Lock:
        """The lock of one resource (``redis``, ``gateway0``, ``fleet1``...): faults on it do not overlap."""
        return self.locks.setdefault(name, asyncio.Lock())

    def single(self) -> ChaosRedis:
        """The one Redis (faults that need it are refused with ``--cluster``)."""
        if self.redis is None:
            raise BenchError("this fault needs a single Redis, not a cluster")
        return self.redis

    def redis_cluster(self) -> RedisCluster:
        """The Redis Cluster (faults that need it are refused without ``--cluster``)."""
        if self.cluster is None:
            raise BenchError("this fault needs --cluster")
        return self.cluster

    def entry_url(self) -> str:
        """A URL a new process connects to the store with: the Redis, or a live node of the cluster (any node is a way in)."""
        if self.cluster is None:
            return self.single().url
        return next(n.url for n in self.cluster.nodes if n.proc is not None)

    async def store_urls(self) -> list[str]:
        """What holds the data: the Redis, or every primary of the cluster now."""
        if self.cluster is None:
            return [self.single().url]
        return await asyncio.to_thread(self.cluster.primary_urls)

    def log(self, text: str) -> None:
        """One event, timestamped, to stderr and the storm's list."""
        line = f"[{time.monotonic() - self._t0:7.1f}s] {text}"
        self.events.append(line)
        print(line, file=sys.stderr, flush=True)

    # -- starting ------------------------------------------------------------------

    async def start(self) -> None:
        """Everything, in dependency order; returns once every client fleet is up."""
        if self.cluster is not None:
            await asyncio.to_thread(self.cluster.start)
        else:
            await wait_started(self.single())
        for proxy in self.proxies:
            await proxy.start()
        for i in range(len(self.gateways)):
            await self.start_gateway(i)
        for n in range(self.args.sims):
            # Each simulation draws from its own seed: different objects, the same keys.
            seed = str(self.args.seed + 7919 * n)
            argv = [sys.executable, "-m", "bench.chaos", "--role", "sim", "--redis", self.entry_url(), "--seed", seed]
            sim = await Child.start(f"sim{n}" if self.args.sims > 1 else "sim", argv, self.logdir)
            self.sims.append(sim)
            await sim.read(START_TIMEOUT)
        for j in range(len(self.fleets)):
            await self.start_fleet(j)

    @property
    def gateway_urls(self) -> list[str]:
        """The gateways' websocket URLs."""
        return [f"ws://127.0.0.1:{port}/" for port in self.gateway_ports]

    async def start_gateway(self, i: int) -> None:
        """``synk serve`` number ``i``, on its port, reaching Redis through proxy ``i`` (a cluster directly)."""
        port = self.gateway_ports[i]
        url = self.proxies[i].url if self.proxies else self.entry_url()
        argv = [sys.executable, "-m", "synk.cli", "serve", "--redis", url, "--host", "127.0.0.1", "--port", str(port)]
        child = await Child.start(f"gateway{i}.{next(self._serial)}", argv, self.logdir, talk=False)
        self.gateways[i] = child
        await wait_port(port, time.monotonic() + START_TIMEOUT, lambda: child.alive, child.name)

    def fleet_sizes(self) -> list[int]:
        """Clients per fleet process: ``--clients`` spread over ``--client-procs``."""
        n, procs = self.args.clients, len(self.fleets)
        return [n // procs + (1 if j < n % procs else 0) for j in range(procs)]

    async def start_fleet(self, j: int) -> None:
        """Client process ``j`` (a fresh one, with new client names, when replacing)."""
        serial = next(self._serial)
        config = {"name": f"c{serial}", "urls": self.gateway_urls, "count": self.fleet_sizes()[j], "keys": ALL_KEYS}
        config["seed"] = self.args.seed * 1000 + serial
        node = shutil.which("node") or "node"
        child = await Child.start(f"clients{serial}", [node, str(CLIENTS_JS), json.dumps(config)], self.logdir)
        ready = await child.read(START_TIMEOUT)
        if not ready.get("ready"):
            raise BenchError(f"{child.name} did not start: {ready}")
        self.fleets[j] = Talker(child)

    # -- faults' building blocks ------------------------------------------------------------

    def kill9(self, child: Child) -> None:
        """``kill -9`` a child process (it is reaped by its asyncio watcher)."""
        with contextlib.suppress(ProcessLookupError):
            child.proc.kill()

    async def tell_fleets(self, cmd: dict[str, Any]) -> None:
        """Send ``cmd`` to every live fleet, ignoring fleets that die meanwhile."""
        for fleet in self.fleets:
            if fleet is not None and fleet.child.alive:
                with contextlib.suppress(BenchError):
                    await fleet.ask(cmd, timeout=10)

    def gateway_refusals(self) -> list[str]:
        """The gateways' "cannot serve key" warnings logged since the last call: a key a gateway gave up for a client."""
        out = []
        for path in sorted(self.logdir.glob("gateway*.log")):
            try:
                lines = path.read_text(errors="replace").splitlines()
            except OSError:
                continue
            seen = self._log_lines.get(path, 0)
            self._log_lines[path] = len(lines)
            out += [f"{path.stem}: {line}" for line in lines[seen:] if "cannot serve key" in line]
        return out

    async def ask_fleets(self, cmd: dict[str, Any]) -> list[dict[str, Any]]:
        """``cmd``'s answer from every live fleet (a fleet that dies meanwhile is left out)."""
        out = []
        for fleet in self.fleets:
            if fleet is not None and fleet.child.alive:
                with contextlib.suppress(BenchError):
                    out.append(await fleet.ask(cmd, timeout=10))
        return out

    async def heal_all(self) -> None:
        """Undo whatever a fault left broken: every process up, every proxy open, every client reading."""
        if self.redis is not None:
            async with self.lock("redis"):
                if self.redis.frozen:
                    self.redis.thaw()
                if not self.redis.running:
                    self.crashes.append("redis")
                    self.log("heal: redis was down; restarted")
                    await wait_started(self.redis)
        if self.cluster is not None:
            async with self.lock("cluster"):
                await self.heal_cluster(self.cluster)
        for proxy in self.proxies:
            proxy.heal()
        for i, gateway in enumerate(self.gateways):
            async with self.lock(f"gateway{i}"):
                if gateway is None or not gateway.alive:
                    self.crashes.append(f"gateway{i}")
                    self.log(f"heal: gateway{i} had exited ({gateway.proc.returncode if gateway else None}); restarted")
                    await self.start_gateway(i)
        for j, fleet in enumerate(self.fleets):
            async with self.lock(f"fleet{j}"):
                if fleet is None or not fleet.child.alive:
                    self.crashes.append(f"fleet{j}")
                    self.log(f"heal: client process {j} had exited; replaced")
                    await self.start_fleet(j)
        await self.tell_fleets({"cmd": "heal"})

    async def heal_cluster(self, cluster: RedisCluster) -> None:
        """Every node up, and the cluster settled: every node says ``cluster_state:ok`` and each replica is in sync."""
        for node in cluster.nodes:
            if node.proc is None:
                self.log(f"heal: node :{node.port} was down; revived")
                await asyncio.to_thread(cluster.revive, node)

        def settled() -> bool:
            with contextlib.suppress(OSError):
                return all_settled()
            return False

        def all_settled() -> bool:
            for node in cluster.nodes:
                if b"cluster_state:ok" not in command(node.port, "CLUSTER", "INFO"):
                    return False
                info = command(node.port, "INFO", "replication")
                if b"role:slave" in info and b"master_link_status:up" not in info:
                    return False
                # A slot left half-moved shows as [slot->-id] or [slot-<-id] in CLUSTER NODES.
                nodes = command(node.port, "CLUSTER", "NODES")
                if b"->-" in nodes or b"-<-" in nodes:
                    return False
            return True

        deadline = time.monotonic() + START_TIMEOUT
        while not await asyncio.to_thread(settled):
            if time.monotonic() > deadline:
                raise BenchError("the cluster did not settle after the storm")
            await asyncio.sleep(0.1)  # poll interval; the deadline bounds the wait

    async def replace_fleets(self) -> None:
        """Fresh client processes (after a divergence, so that the next storm starts from clean mirrors)."""
        for j, fleet in enumerate(self.fleets):
            if fleet is not None:
                await fleet.child.stop(5)
            await self.start_fleet(j)

    # -- stopping ----------------------------------------------------------------------

    async def close(self) -> None:
        """Stop every process this run started; safe to call more than once, and after any failure."""
        if self.redis is not None:
            self.redis.thaw()  # a frozen Redis would hold up everyone's shutdown
        children: list[Child] = [f.child for f in self.fleets if f is not None]
        children += [g for g in self.gateways if g is not None]
        children += self.sims
        for child in children:
            with contextlib.suppress(Exception):
                await child.stop(5)
        for proxy in self.proxies:
            with contextlib.suppress(Exception):
                await proxy.close()
        if self.redis is not None:
            await asyncio.to_thread(self.redis.close)
        if self.cluster is not None:
            await asyncio.to_thread(self.cluster.close)

    def kill_everything(self) -> None:
        """The last resort when ``close()`` cannot run (no loop): SIGKILL every child."""
        children: list[Child] = [f.child for f in self.fleets if f is not None]
        children += [g for g in self.gateways if g is not None]
        children += self.sims
        for child in children:
            self.kill9(child)
        if self.redis is not None:
            self.redis.close()
        if self.cluster is not None:
            self.cluster.close()
