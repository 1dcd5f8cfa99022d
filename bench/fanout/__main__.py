"""The orchestrator: ``python -m bench.fanout`` (see the package docstring)."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis as redis_py

from bench import fanout
from bench.fanout.clients import clients
from bench.fanout.common import (
    BIN_S,
    PREFIX,
    TARGET_CPU_RATIO,
    TARGET_P99_MS,
    BenchError,
    Child,
    key_name,
    keys_of,
    machine_busy,
    proc_cpu,
    raise_nofile,
    wait_port,
)
from bench.fanout.floor import floor_server
from bench.fanout.sims import sim_socketio, sim_synk, socketio_server, synk_asgi_server
from bench.node_stats import NodeDelta, deltas, key_share, sample, share_line
from bench.redis_cluster import RedisCluster
from bench.redis_process import RedisProcess, free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

#: ``--cluster``: the cluster's primaries, and the gateway counts measured on each backend.
CLUSTER_PRIMARIES = 3
CLUSTER_GATEWAYS = (1, 2)
#: The systems ``--only`` can name (the default runs synk and socketio).
SYSTEMS = ("synk", "synk-asgi", "floor", "socketio")
#: ``--sweep``: the p99 limits (ms) a rate is judged against, and the share of the expected
#: deliveries a step must make to count as keeping up.
SWEEP_LIMITS_MS = (50.0, 100.0)
SWEEP_MIN_DELIVERY = 0.97
#: ``--sweep``: after a failed step, a lower rate waits until no client has received anything
#: for this long (the server's backlog is out), for at most the timeout
SWEEP_QUIET_S = 0.5
SWEEP_DRAIN_TIMEOUT_S = 60.0


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
    #: text frames and bytes the clients received inside the window
    frames: int = 0
    bytes: int = 0
    #: the clients connected, and the offered rate (object changes a second)
    clients: int = 0
    rate: float = 0.0
    redis_cpu_s: float = 0.0
    #: what each Redis primary did during the window (``--cluster`` runs)
    nodes: list[NodeDelta] = field(default_factory=list)
    #: the gateway's own stall figures over the window, from its /metrics (synk, one gateway process)
    pauses: dict[str, Any] = field(default_factory=dict)

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

    @property
    def msgs_per_frame(self) -> float | None:
        """Deliveries per text frame: above 1 with batch frames (a few ping and subscription frames count too)."""
        return self.delivered / self.frames if self.frames else None

    @property
    def bytes_per_client_s(self) -> float:
        """Bytes one client received a second, on average (the raw client counts frame headers too)."""
        return self.bytes / self.clients / self.seconds if self.clients and self.seconds else 0.0

    def meets(self, p99_ms: float) -> bool:
        """Whether this window kept up: p99 at most ``p99_ms`` and (nearly) every expected delivery made."""
        return bool(self.delivered) and self.percentile(0.99) <= p99_ms and self.delivered >= SWEEP_MIN_DELIVERY * self.expected

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
            "msgs_per_frame": round(self.msgs_per_frame, 2) if self.msgs_per_frame else None,
            "frames": self.frames,
            "bytes_per_client_s": round(self.bytes_per_client_s),
            "sim_changes_per_s": round(self.sim.get("in_window", 0) / self.seconds) if self.seconds else 0,
            "sim_late_ticks": self.sim.get("late_ticks", 0),
            "server_cpu_s": round(self.server_cpu_s, 2),
            "redis_cpu_s_per_million": round(self.redis_cpu_s / (self.delivered / 1e6), 3) if self.delivered else None,
            "clients_cpu_s_per_million": round(self.clients_cpu_s / (self.delivered / 1e6), 3) if self.delivered else None,
            "cpu_pct": {k: round(v, 1) for k, v in self.cpu_pct.items()},
            "machine_busy_pct": round(self.machine_busy_pct, 1),
            "subscribe_s": round(self.subscribe_s, 1),
            "client_errors": self.client_errors[:3],
            "closed_clients": self.closed,
            **({"nodes": [n.as_json() for n in self.nodes]} if self.nodes else {}),
            **({"pauses": self.pauses} if self.pauses else {}),
        }


@dataclass(frozen=True)
class Variant:
    """How a synk row runs: clients taking batch frames (and compact mods), and the gateway's write interval (seconds)."""

    batch: bool = False
    write_interval: float = 0.0
    #: clients declare synk_resnap=1 and synk_compact=1, as synk-client does (PROTOCOL.md, "Compact mods")
    compact: bool = False
    #: clients declare synk_resnap=1 (synk's own client, as synk-client; without it, the original client's paths)
    resnap: bool = False

    @property
    def label(self) -> str:
        """What a row's name adds for it: ``" batch compact wi=0.02"``, or nothing for the plain variant."""
        parts = (["batch"] if self.batch else []) + (["resnap"] if self.resnap and not self.compact else [])
        parts += ["compact"] if self.compact else []
        parts += [f"wi={self.write_interval:g}"] if self.write_interval else []
        return "".join(f" {p}" for p in parts)


def parse_variants(text: str) -> list[Variant]:
    """``--synk-variants``: comma-separated variants, each ``plain`` or ``+``-joined ``batch``, ``resnap``, ``compact`` and ``wiMS``.

    ``wi20`` is a write interval of 20 ms: ``plain,batch,batch+compact,batch+wi20``.
    """
    out: list[Variant] = []
    for spec in text.split(","):
        batch, interval, compact, resnap = False, 0.0, False, False
        for token in spec.strip().split("+"):
            if token == "batch":
                batch = True
            elif token == "compact":
                compact = resnap = True
            elif token == "resnap":
                resnap = True
            elif token.startswith("wi") and token[2:].replace(".", "", 1).isdigit():
                interval = float(token[2:]) / 1000.0
            elif token != "plain":
                raise argparse.ArgumentTypeError(
                    f"{spec!r}: a variant is 'plain' or '+'-joined 'batch', 'resnap', 'compact' and 'wiMS' (e.g. batch+compact+wi20)"
                )
        variant = Variant(batch, interval, compact, resnap)
        if variant not in out:
            out.append(variant)
    return out


@dataclass(frozen=True)
class Row:
    """One column of the table: a system, its synk variant and ``synk serve --workers``."""

    system: str
    name: str
    variant: Variant = Variant()
    workers: int = 1


def rows_of(args: argparse.Namespace) -> list[Row]:
    """The rows ``--only``, ``--synk-variants`` (or ``--batch`` / ``--write-interval``) and ``--workers`` ask for, in order."""
    rows: list[Row] = []
    for system in args.only:
        if system == "synk":
            for v in args.variants:
                rows += [Row(system, f"synk{v.label}" + (f"_{n}_workers" if n > 1 else ""), v, n) for n in args.workers]
        elif system == "synk-asgi":
            rows += [Row(system, f"synk-asgi{v.label}", v) for v in args.variants]
        elif system == "floor":
            # The floor writes once a tick anyway: a write interval would change nothing.
            for batch in dict.fromkeys(v.batch for v in args.variants):
                rows.append(Row(system, "floor batch" if batch else "floor", Variant(batch)))
        else:
            rows.append(Row(system, system))
    return rows


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


class Rig:
    """One row's processes, started and subscribed: server(s), simulation, clients (``async with``).

    ``measure`` runs a measured window at a rate, as often as asked (the
    sweep steps the rate up without reconnecting anyone). ``redis_pids`` are
    the Redis processes whose CPU is reported (every node of a cluster);
    ``gateways`` synk servers share the client processes (client process j
    talks to gateway j modulo ``gateways``); ``primaries``, when given, are
    the Redis nodes whose counters (``bench.node_stats``) are read at the
    window's edges. A ``floor`` server is its own simulation.
    """

    def __init__(
        self,
        row: Row,
        args: argparse.Namespace,
        redis_pids: list[int],
        logdir: Path,
        *,
        rate: float,
        gateways: int = 1,
        primaries: Sequence[str] = (),
    ) -> None:
        self.row = row
        self.args = args
        self.redis_pids = redis_pids
        self.logdir = logdir
        self.rate = rate
        self.gateways = gateways if row.system == "synk" else 1
        self.primaries = list(primaries)
        self.ports = [free_port() for _ in range(self.gateways)]
        self.children: list[Child] = []
        self.servers: list[Child] = []
        self.fleet: list[Child] = []
        self.subscribe_s = 0.0
        self._sim: Child | None = None

    @property
    def sim(self) -> Child:
        assert self._sim is not None
        return self._sim

    def server_argv(self, port: int) -> list[str]:
        row, args = self.row, self.args
        rate = ["--rate", str(self.rate)]
        if row.system == "synk":
            argv = [sys.executable, "-m", "synk.cli", "serve", "--redis", args.redis, "--port", str(port), "--prefix", PREFIX]
            return [*argv, "--workers", str(row.workers), "--write-interval", str(row.variant.write_interval)]
        if row.system == "synk-asgi":
            return child_argv("synk-asgi-server", args, "--port", str(port), "--write-interval", str(row.variant.write_interval))
        if row.system == "floor":
            return child_argv("floor-server", args, "--port", str(port), *rate)
        return child_argv("socketio-server", args, "--port", str(port), "--server", args.socketio_server)

    async def __aenter__(self) -> Rig:
        try:
            await self._start()
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stop()

    async def _start(self) -> None:
        row, args, logdir = self.row, self.args, self.logdir
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", row.name)
        for i, port in enumerate(self.ports):
            server = await Child.start(f"{slug}-server{i}", self.server_argv(port), logdir, talk=row.system == "floor")
            self.children.append(server)
            self.servers.append(server)
        for port, srv in zip(self.ports, self.servers, strict=True):
            await wait_port(port, time.monotonic() + 30, _alive(srv), srv.name)
        if row.system == "floor":
            self._sim = self.servers[0]
        else:
            role = "sim-socketio" if row.system == "socketio" else "sim-synk"
            self._sim = await Child.start(f"{slug}-sim", child_argv(role, args, "--rate", str(self.rate)), logdir)
            self.children.append(self._sim)
        await self.sim.read(120)
        bounds = [round(i * args.clients / args.client_procs) for i in range(args.client_procs + 1)]
        system = "socketio" if row.system == "socketio" else "synk"
        for j in range(args.client_procs):
            port = self.ports[j % len(self.ports)]
            extra = ["--system", system, "--port", str(port), "--first", str(bounds[j]), "--count", str(bounds[j + 1] - bounds[j])]
            extra += ["--lib", args.client_lib, "--gate", str(max(1, args.subscribing // args.client_procs)), "--loop", args.client_loop]
            extra += ["--batch"] if row.variant.batch else []
            extra += ["--compact"] if row.variant.compact else []
            extra += ["--resnap"] if row.variant.resnap and not row.variant.compact else []
            c = await Child.start(f"{slug}-clients{j}", child_argv("clients", args, *extra), logdir)
            self.children.append(c)
            self.fleet.append(c)
        for c in self.fleet:
            ready = await c.read(args.connect_timeout)
            if not ready.get("ready"):
                raise BenchError(f"{c.name} could not subscribe its clients: {ready}\n{self.servers[0].tail()}")
            self.subscribe_s = max(self.subscribe_s, float(ready["subscribe_s"]))
        self.sim.send({"cmd": "go"})

    async def _stop(self) -> None:
        for c in [*self.fleet, *([self._sim] if self._sim is not None else [])]:
            c.send({"cmd": "stop"})
        for c in reversed(self.children):
            await c.stop()

    async def drain(self, quiet: float, timeout: float) -> float:
        """Pause the simulation until no client has received anything for ``quiet`` seconds; the seconds it took.

        After an overloaded step the server may still be writing its backlog:
        a lower rate measured before it is done would be charged for it. Gives
        up (and goes on) after ``timeout``.
        """
        self.set_rate(0.0)
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            await asyncio.sleep(quiet / 2)  # poll interval; the timeout bounds the wait
            for c in self.fleet:
                c.send({"cmd": "last"})
            last = max([float((await c.read(30))["last"]) for c in self.fleet])
            if time.time() - last >= quiet:
                break
        return time.monotonic() - started

    def set_rate(self, rate: float) -> None:
        """The simulation's changes a second from its next tick on."""
        if rate != self.rate:
            self.sim.send({"cmd": "rate", "rate": rate})
            self.rate = rate

    async def measure(self, rate: float, warmup: float, seconds: float, *, profile: bool = False) -> SystemResult:
        """At ``rate`` changes a second: ``warmup`` seconds, then a window of ``seconds``; what the window saw.

        ``profile``: ``--py-spy`` samples the server over the window.
        """
        args, row, sim, servers, fleet = self.args, self.row, self.sim, self.servers, self.fleet
        result = SystemResult(row.name, subscribe_s=self.subscribe_s, clients=args.clients, rate=rate)
        self.set_rate(rate)
        await asyncio.sleep(warmup)
        t0 = time.time() + 0.2
        t1 = t0 + seconds
        for c in dict.fromkeys([sim, *fleet]):
            c.send({"cmd": "window", "window": [t0, t1]})
        redis_pids = self.redis_pids
        procs: dict[str, Callable[[], float]] = {
            "server": lambda: sum(srv.cpu() for srv in servers),
            "redis": lambda: sum(proc_cpu(pid) for pid in redis_pids) if row.system != "floor" else 0.0,
            # The floor's simulation runs in its server: its CPU is the server's.
            "sim": sim.cpu if row.system != "floor" else lambda: 0.0,
            "clients": lambda: sum(c.cpu() for c in fleet),
        }
        await asyncio.sleep(max(0.0, t0 - time.time()))
        # Behind one port, /metrics is any one worker's: read only a single process's.
        scrape = row.system in ("synk", "synk-asgi") and row.workers == 1 and self.gateways == 1
        metrics0 = await asyncio.to_thread(histograms, self.ports[0]) if scrape else {}
        spy = await start_py_spy(args, row.name, servers[0].proc.pid, seconds) if profile else None
        nodes0 = await asyncio.to_thread(sample, self.primaries)
        cpu0 = {k: f() for k, f in procs.items()}
        busy0 = machine_busy()
        w0 = time.monotonic()
        await asyncio.sleep(max(0.0, t1 - time.time()))
        cpu1 = {k: f() for k, f in procs.items()}
        busy1 = machine_busy()
        if scrape:
            result.pauses = pauses_between(metrics0, await asyncio.to_thread(histograms, self.ports[0]))
        wall = time.monotonic() - w0
        result.nodes = deltas(nodes0, await asyncio.to_thread(sample, self.primaries))
        if spy is not None:
            await spy.wait()
        result.seconds = t1 - t0
        result.server_cpu_s = cpu1["server"] - cpu0["server"]
        result.redis_cpu_s = cpu1["redis"] - cpu0["redis"]
        result.clients_cpu_s = cpu1["clients"] - cpu0["clients"]
        result.cpu_pct = {k: 100.0 * (cpu1[k] - cpu0[k]) / wall for k in procs}
        cores = os.cpu_count() or 1
        result.machine_busy_pct = 100.0 * (busy1[0] - busy0[0]) / max(1.0, busy1[1] - busy0[1])
        # CPU used by processes outside the benchmark (other work on the machine) skews every figure.
        result.cpu_pct["other"] = max(0.0, result.machine_busy_pct * cores - sum(result.cpu_pct.values()))
        sim.send({"cmd": "report"})
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
            result.frames += int(rep["frames"])
            result.bytes += int(rep["bytes"])
            result.client_errors += rep["errors"]
            for b, n in rep["hist"].items():
                result.hist[int(b)] = result.hist.get(int(b), 0) + int(n)
        return result


async def run_system(
    row: Row,
    args: argparse.Namespace,
    redis_pids: list[int],
    logdir: Path,
    *,
    gateways: int = 1,
    primaries: Sequence[str] = (),
) -> SystemResult:
    """One row's run at ``--rate``: its processes, warm-up, the measured window (see :class:`Rig`)."""
    async with Rig(row, args, redis_pids, logdir, rate=args.rate, gateways=gateways, primaries=primaries) as rig:
        return await rig.measure(args.rate, args.warmup, args.seconds, profile=True)


def _alive(child: Child) -> Callable[[], bool]:
    """A check that ``child`` still runs (a closure per child, not one over a loop variable)."""
    return lambda: child.alive


async def start_py_spy(args: argparse.Namespace, name: str, pid: int, seconds: float) -> asyncio.subprocess.Process | None:
    """``--py-spy DIR``: sample the server during the window into DIR/fanout-NAME.txt (py-spy's raw format)."""
    if not args.py_spy:
        return None
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out = Path(args.py_spy) / f"fanout-{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [exe, "record", "-p", str(pid), "-d", str(max(1, int(seconds))), "-r", "100", "-f", "raw", "-o", str(out)]
    return await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)


#: The ``--cluster`` table's extra rows.
CLUSTER_ROWS: list[tuple[str, Callable[[SystemResult], str]]] = [
    ("redis CPU s / 1M msgs (all nodes)", lambda r: f"{r.redis_cpu_s / (r.delivered / 1e6):.2f}" if r.delivered else "-"),
]


def histograms(port: int) -> dict[str, dict[str, float]]:
    """The gateway's histogram samples (``NAME_bucket{le=...}``, ``NAME_sum``, ``NAME_count``) from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:  # our own loopback gateway
        text = answer.read().decode()
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        sample, _, value = line.rpartition(" ")
        for name in ("synk_loop_lag_seconds", "synk_gc_seconds"):
            if sample.startswith(name):
                out.setdefault(name, {})[sample[len(name) :]] = float(value)
    return out


def pauses_between(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Loop stalls and full collections during the window: counts above 50 ms, the worst bucket, GC time."""

    def delta(name: str, part: str) -> float:
        return after.get(name, {}).get(part, 0.0) - before.get(name, {}).get(part, 0.0)

    lag = "synk_loop_lag_seconds"
    under_50ms = delta(lag, '_bucket{le="0.05"}')
    probes = delta(lag, "_count")
    # Cumulative buckets: the smallest bound that holds every probe bounds the worst lag.
    bounds = sorted((float(part.split('"')[1]), part) for part in after.get(lag, {}) if part.startswith("_bucket") and "+Inf" not in part)
    worst = next((f"{b:g}" for b, part in bounds if delta(lag, part) >= probes), "+Inf") if probes else "-"
    return {
        "lag_probes": int(probes),
        "lag_over_50ms": int(probes - under_50ms),
        "lag_worst_at_most_s": worst,
        "full_gcs": int(delta("synk_gc_seconds", "_count")),
        "full_gc_s": round(delta("synk_gc_seconds", "_sum"), 3),
    }


def table(results: list[SystemResult], extra: Sequence[tuple[str, Callable[[SystemResult], str]]] = ()) -> str:
    rows: list[tuple[str, Callable[[SystemResult], str]]] = [
        ("delivered msgs/s", lambda r: f"{r.delivered_per_s:,.0f}"),
        ("delivered / expected", lambda r: f"{r.delivered:,} / {r.expected:,}"),
        ("server CPU s / 1M msgs", lambda r: f"{r.cpu_s_per_million:.2f}"),
        ("latency p50 ms", lambda r: f"{r.percentile(0.5):.1f}"),
        ("latency p99 ms", lambda r: f"{r.percentile(0.99):.1f}"),
        ("latency max ms", lambda r: f"{max(r.hist, default=0) * BIN_S * 1000:.0f}"),
        ("msgs per client socket read", lambda r: f"{r.msgs_per_read:.2f}" if r.msgs_per_read else "-"),
        ("msgs per frame", lambda r: f"{r.msgs_per_frame:.2f}" if r.msgs_per_frame else "-"),
        ("KB per client per s", lambda r: f"{r.bytes_per_client_s / 1000:.1f}"),
        ("sim changes/s (late ticks)", lambda r: f"{r.sim.get('in_window', 0) / r.seconds:,.0f} ({r.sim.get('late_ticks', 0)})"),
        ("CPU % server", lambda r: f"{r.cpu_pct['server']:.0f}"),
        ("CPU % redis", lambda r: f"{r.cpu_pct['redis']:.0f}"),
        ("CPU % sim", lambda r: f"{r.cpu_pct['sim']:.0f}"),
        ("CPU % clients (load generator)", lambda r: f"{r.cpu_pct['clients']:.0f}"),
        ("CPU % other (not the bench)", lambda r: f"{r.cpu_pct['other']:.0f}"),
        ("machine busy % (all cores)", lambda r: f"{r.machine_busy_pct:.0f}"),
        ("subscribe time s", lambda r: f"{r.subscribe_s:.1f}"),
        ("loop stalls > 50 ms (probes)", lambda r: f"{r.pauses['lag_over_50ms']} ({r.pauses['lag_probes']})" if r.pauses else "-"),
        ("full GCs (total s)", lambda r: f"{r.pauses['full_gcs']} ({r.pauses['full_gc_s']:.2f})" if r.pauses else "-"),
        *extra,
    ]
    width = max(len(name) for name, _ in rows)
    cols = [r.name for r in results]
    col = max(18, *(len(c) for c in cols))
    out = [f"{'':<{width}}  " + "  ".join(f"{c:>{col}}" for c in cols)]
    for name, fmt in rows:
        out.append(f"{name:<{width}}  " + "  ".join(f"{fmt(r):>{col}}" for r in results))
    return "\n".join(out)


def workload(args: argparse.Namespace, cores: int) -> dict[str, Any]:
    """The workload's figures, for the JSON line."""
    return {
        "clients": args.clients,
        "keys": args.keys,
        "keys_per_client": args.keys_per_client,
        "objects_per_key": args.objects_per_key,
        "rate": args.rate,
        "seconds": args.seconds,
        "cores": cores,
        "client_procs": args.client_procs,
    }


def banner(args: argparse.Namespace, what: str) -> None:
    """The run's workload and set-up, on stderr."""
    print(
        f"{what}: {args.clients} clients x {args.keys_per_client} of {args.keys} keys, {args.objects_per_key} objects/key, "
        + ("" if args.sweep else f"{args.rate:g} changes/s, {args.seconds:g} s window after {args.warmup:g} s warm-up, ")
        + f"ticks at {args.tick_hz:g} Hz; {args.client_procs} client process(es) ({args.client_lib}, {args.client_loop}); "
        f"socketio served by {args.socketio_server}",
        file=sys.stderr,
    )
    print(
        f"note: {os.cpu_count() or 1} cores shared by the server, redis, the simulation and the clients (see the CPU % rows)",
        file=sys.stderr,
    )


async def orchestrate(args: argparse.Namespace) -> int:
    limit = raise_nofile()
    needed = args.clients + 200
    if limit < needed:
        print(f"warning: the open-file limit is {limit}, under the {needed} the clients need", file=sys.stderr)
    cores = os.cpu_count() or 1
    redis = RedisProcess()
    logdir = Path(tempfile.mkdtemp(prefix="synk-fanout-logs-"))
    results: list[SystemResult] = []
    banner(args, "fanout")
    try:
        await asyncio.to_thread(redis.start)
        args.redis = redis.url
        pids = [redis.proc.pid] if redis.proc else []
        for row in rows_of(args):
            print(f"running {row.name} ...", file=sys.stderr)
            results.append(await run_system(row, args, pids, logdir))
    except BenchError as exc:
        print(f"fanout failed: {exc}\n(logs in {logdir})", file=sys.stderr)
        return 1
    finally:
        await asyncio.to_thread(redis.close)
    print(table(results))
    by = {r.name: r for r in results}
    out: dict[str, Any] = {
        "bench": "fanout",
        **workload(args, cores),
        "client_lib": args.client_lib,
        "client_loop": args.client_loop,
        "socketio_server": args.socketio_server,
        "rows": [r.name for r in results],
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
        # Side by side in one run: each other row's server CPU per delivery against plain synk's.
        out["cpu_per_delivery_vs_synk"] = {
            r.name: round(r.cpu_s_per_million / max(1e-9, by["synk"].cpu_s_per_million), 3) for r in results if r.name != "synk"
        }
    for n in args.workers:
        many = by.get(f"synk_{n}_workers")
        if many is not None and "synk" in by:
            # At the same offered rate: what more workers change is latency (and throughput once one saturates).
            out[f"synk_{n}_workers_vs_one"] = {
                "delivered": round(many.delivered_per_s / max(1.0, by["synk"].delivered_per_s), 3),
                "p99": round(many.percentile(0.99) / max(0.1, by["synk"].percentile(0.99)), 3),
                "cpu_per_delivery": round(many.cpu_s_per_million / max(1e-9, by["synk"].cpu_s_per_million), 3),
            }
    out["targets_met"] = targets
    print(json.dumps(out))
    shutil.rmtree(logdir, ignore_errors=True)
    return 0


def sweep_line(step: SystemResult) -> str:
    """One step of a sweep, as its progress line says it."""
    ratio = step.delivered / step.expected if step.expected else 0.0
    return (
        f"{step.rate:g} changes/s: {step.delivered_per_s:,.0f} deliveries/s ({ratio:.0%} of expected), "
        f"p99 {step.percentile(0.99):.1f} ms, {step.cpu_s_per_million:.2f} server CPU-s/M, late ticks {step.sim.get('late_ticks', 0)}"
        + (f"; busy machine: {other:.0f}% of a core outside the bench" if (other := step.cpu_pct.get("other", 0.0)) > 50 else "")
    )


async def sweep_row(rig: Rig, args: argparse.Namespace) -> list[SystemResult]:
    """Step one row's rate up from ``--sweep-from``, doubling while p99 stays within 100 ms; then bisect each limit.

    A step fails a limit when its p99 is above it or it delivered under
    ``SWEEP_MIN_DELIVERY`` of what was expected (the server fell behind).
    Doubling stops after two steps in a row fail 100 ms, one falls behind, or past ``--sweep-to``;
    then, for 100 ms and 50 ms in turn, up to ``--sweep-refine`` steps halve
    the gap between the highest rate that met the limit and the lowest that
    did not. Before a lower rate after a failed step, the simulation pauses
    until the clients receive nothing more (the server's backlog is out),
    so that the step does not start behind.
    """
    steps: list[SystemResult] = []

    async def step(rate: float) -> None:
        if steps and not steps[-1].meets(SWEEP_LIMITS_MS[-1]) and rate < steps[-1].rate:
            took = await rig.drain(SWEEP_QUIET_S, SWEEP_DRAIN_TIMEOUT_S)
            print(f"  {rig.row.name}: drained for {took:.1f} s", file=sys.stderr, flush=True)
        result = await rig.measure(rate, args.sweep_warmup, args.sweep_seconds)
        steps.append(result)
        print(f"  {rig.row.name}: {sweep_line(result)}", file=sys.stderr, flush=True)

    rate = args.sweep_from
    while True:
        await step(rate)
        # One failed step may be the machine's other work (a shared machine's stalls): two in a row end the doubling.
        last = steps[-1]
        two_failed = len(steps) >= 2 and not any(s.meets(SWEEP_LIMITS_MS[-1]) for s in steps[-2:])
        # Falling behind (deliveries short of expected) is no accident of the machine: saturated.
        behind = last.delivered < SWEEP_MIN_DELIVERY * last.expected
        if two_failed or behind or rate * 2 > args.sweep_to:
            break
        rate *= 2
    for limit in reversed(SWEEP_LIMITS_MS):
        for _ in range(args.sweep_refine):
            good = max((s.rate for s in steps if s.meets(limit)), default=0.0)
            bad = min((s.rate for s in steps if s.rate > good and not s.meets(limit)), default=math.inf)
            if bad == math.inf or (good and bad / good < 1.1):
                break
            await step((good + bad) / 2 if good else bad / 2)
    return steps


def best_under(steps: Sequence[SystemResult], limit: float) -> SystemResult | None:
    """The step that delivered the most a second while meeting ``limit`` (ms, p99), if any did."""
    return max((s for s in steps if s.meets(limit)), key=lambda s: s.delivered_per_s, default=None)


def plot_sweep(sweeps: dict[str, list[SystemResult]], path: Path, title: str) -> None:
    """p99 latency against deliveries a second, one line per row (in the order of offered rates), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots(figsize=(9, 5.5))
    for name, steps in sweeps.items():
        points = sorted((s.rate, s.delivered_per_s, s.percentile(0.99)) for s in steps if s.delivered)
        ax.plot([x for _, x, _ in points], [y for _, _, y in points], marker="o", label=name)
    for limit in SWEEP_LIMITS_MS:
        ax.axhline(limit, color="grey", linestyle="--", linewidth=0.8)
        ax.annotate(f"{limit:g} ms", (0, limit), xycoords=("axes fraction", "data"), fontsize=7, color="grey", va="bottom")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x / 1000:,.0f}k"))
    ax.set_yscale("log")
    ax.set_xlabel("deliveries / s")
    ax.set_ylabel("p99 latency, ms (log)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


async def orchestrate_sweep(args: argparse.Namespace) -> int:
    """``--sweep``: each row's highest deliveries/s with p99 within 50 ms and 100 ms, and a plot of them all."""
    raise_nofile()
    cores = os.cpu_count() or 1
    redis = RedisProcess()
    logdir = Path(tempfile.mkdtemp(prefix="synk-fanout-logs-"))
    banner(args, "fanout --sweep")
    print(
        f"sweep: from {args.sweep_from:g} changes/s doubling up to {args.sweep_to:g}, then {args.sweep_refine} bisection step(s) "
        f"per limit; {args.sweep_seconds:g} s windows after {args.sweep_warmup:g} s at each rate",
        file=sys.stderr,
    )
    sweeps: dict[str, list[SystemResult]] = {}
    try:
        await asyncio.to_thread(redis.start)
        args.redis = redis.url
        pids = [redis.proc.pid] if redis.proc else []
        for row in rows_of(args):
            print(f"sweeping {row.name} ...", file=sys.stderr, flush=True)
            async with Rig(row, args, pids, logdir, rate=args.sweep_from) as rig:
                sweeps[row.name] = await sweep_row(rig, args)
    except BenchError as exc:
        print(f"fanout failed: {exc}\n(logs in {logdir})", file=sys.stderr)
        return 1
    finally:
        await asyncio.to_thread(redis.close)
    plot = Path(args.plot) if args.plot else Path(tempfile.gettempdir()) / f"synk-fanout-sweep-{time.strftime('%Y%m%d-%H%M%S')}.png"
    title = f"fan-out: {args.clients} clients x {args.keys_per_client} of {args.keys} keys, {cores} cores shared by everything"
    await asyncio.to_thread(plot_sweep, sweeps, plot, title)
    names = list(sweeps)
    col = max(18, *(len(n) for n in names))
    head = "highest deliveries/s with"
    print(f"{head:<34}" + "  ".join(f"{n:>{col}}" for n in names))
    for limit in SWEEP_LIMITS_MS:
        cells = []
        for n in names:
            best = best_under(sweeps[n], limit)
            cells.append(f"{best.delivered_per_s:,.0f} ({best.cpu_s_per_million:.2f})" if best else "-")
        print(f"{f'  p99 <= {limit:g} ms (CPU-s/M)':<34}" + "  ".join(f"{c:>{col}}" for c in cells))
    print(f"plot: {plot}")
    out: dict[str, Any] = {"bench": "fanout-sweep", **workload(args, cores), "plot": str(plot), "rows": {}}
    for k in ("rate", "seconds"):  # the sweep's own take their place
        del out[k]
    out["sweep"] = {
        "from": args.sweep_from,
        "to": args.sweep_to,
        "refine": args.sweep_refine,
        "seconds": args.sweep_seconds,
        "warmup": args.sweep_warmup,
        "p99_limits_ms": list(SWEEP_LIMITS_MS),
        "min_delivery_ratio": SWEEP_MIN_DELIVERY,
    }
    for n, steps in sweeps.items():
        entry: dict[str, Any] = {}
        for limit in SWEEP_LIMITS_MS:
            best = best_under(steps, limit)
            entry[f"max_delivered_per_s_p99_le_{limit:g}ms"] = round(best.delivered_per_s) if best else None
            entry[f"cpu_s_per_million_at_max_p99_le_{limit:g}ms"] = round(best.cpu_s_per_million, 3) if best else None
        entry["steps"] = [
            {
                "rate": s.rate,
                "delivered_per_s": round(s.delivered_per_s),
                "delivery_ratio": round(s.delivered / s.expected, 4) if s.expected else None,
                "p50_ms": round(s.percentile(0.5), 2),
                "p99_ms": round(s.percentile(0.99), 2),
                "cpu_s_per_million": round(s.cpu_s_per_million, 3),
                "bytes_per_client_s": round(s.bytes_per_client_s),
                "msgs_per_frame": round(s.msgs_per_frame, 2) if s.msgs_per_frame else None,
                "cpu_pct": {k: round(v, 1) for k, v in s.cpu_pct.items()},
                "sim_late_ticks": s.sim.get("late_ticks", 0),
            }
            for s in steps
        ]
        out["rows"][n] = entry
    print(json.dumps(out))
    shutil.rmtree(logdir, ignore_errors=True)
    return 0


async def orchestrate_cluster(args: argparse.Namespace) -> int:
    """``--cluster``: synk's fan-out on one Redis and on a 3-primary cluster, with 1 and 2 gateways each."""
    raise_nofile()
    cores = os.cpu_count() or 1
    logdir = Path(tempfile.mkdtemp(prefix="synk-fanout-logs-"))
    print(
        f"fanout --cluster: {args.clients} clients x {args.keys_per_client} of {args.keys} keys, {args.objects_per_key} objects/key, "
        f"{args.rate:g} changes/s at {args.tick_hz:g} Hz, {args.seconds:g} s window after {args.warmup:g} s warm-up; "
        f"{args.client_procs} client processes split between the gateways",
        file=sys.stderr,
    )
    results: list[SystemResult] = []
    keys_per_node: list[int] = []
    try:
        for backend in ("single", "cluster"):
            single = RedisProcess() if backend == "single" else None
            cluster = RedisCluster(CLUSTER_PRIMARIES) if backend == "cluster" else None
            try:
                if single is not None:
                    await asyncio.to_thread(single.start)
                    args.redis, primaries = single.url, [single.url]
                    nodes: list[RedisProcess] = [single]
                else:
                    assert cluster is not None
                    await asyncio.to_thread(cluster.start)
                    args.redis, primaries, nodes = cluster.url, await asyncio.to_thread(cluster.primary_urls), cluster.nodes
                pids = [n.proc.pid for n in nodes if n.proc is not None]
                if cluster is not None:
                    keys_per_node = await asyncio.to_thread(key_share, primaries, [key_name(k) for k in range(args.keys)])
                for gateways in CLUSTER_GATEWAYS:
                    name = f"{backend}-{gateways}gw"
                    print(f"running synk on {backend} with {gateways} gateway(s) ...", file=sys.stderr)
                    for url in primaries:
                        await asyncio.to_thread(_flushall, url)  # each run starts from empty nodes
                    row = Row("synk", name, args.variants[0])
                    results.append(await run_system(row, args, pids, logdir, gateways=gateways, primaries=primaries))
            finally:
                if single is not None:
                    await asyncio.to_thread(single.close)
                if cluster is not None:
                    await asyncio.to_thread(cluster.close)
    except BenchError as exc:
        print(f"fanout failed: {exc}\n(logs in {logdir})", file=sys.stderr)
        return 1
    print(table(results, extra=CLUSTER_ROWS))
    for r in results:
        if r.name.startswith("cluster"):
            print(f"{r.name}: {share_line(r.nodes, keys_per_node)}")
    by = {r.name: r for r in results}
    out: dict[str, Any] = {
        "bench": "fanout-cluster",
        **workload(args, cores),
        "primaries": CLUSTER_PRIMARIES,
        "keys_per_node": keys_per_node,
        "runs": {r.name: r.summary() for r in results},
    }
    # At a fixed rate, delivered/s is the same on both backends: the cost shows in CPU per message and latency.
    for gw in CLUSTER_GATEWAYS:
        one, many = by[f"single-{gw}gw"], by[f"cluster-{gw}gw"]
        out[f"cluster_vs_single_server_cpu_{gw}gw"] = round(many.cpu_s_per_million / one.cpu_s_per_million, 3) if one.delivered else None
    out["targets_met"] = {f"p99_under_50ms_{r.name}": r.percentile(0.99) < TARGET_P99_MS for r in results}
    print(json.dumps(out))
    shutil.rmtree(logdir, ignore_errors=True)
    return 0


def _flushall(url: str) -> None:
    with redis_py.Redis.from_url(url) as client:
        client.flushall()


def _systems(text: str) -> list[str]:
    """``--only``: comma-separated names out of ``SYSTEMS``."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    wrong = [n for n in names if n not in SYSTEMS]
    if wrong or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: name systems out of {', '.join(SYSTEMS)}, comma-separated")
    return list(dict.fromkeys(names))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.fanout", description=(fanout.__doc__ or "").split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--keys", type=int, default=100)
    ap.add_argument("--keys-per-client", dest="keys_per_client", type=int, default=10)
    ap.add_argument("--objects-per-key", dest="objects_per_key", type=int, default=100)
    ap.add_argument("--rate", type=float, default=500.0, help="object changes per second (default 500: see the module docstring)")
    ap.add_argument("--tick-hz", dest="tick_hz", type=float, default=50.0, help="simulation ticks per second")
    ap.add_argument("--seconds", type=float, default=20.0, help="the measured window of each system")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of load before the window")
    ap.add_argument(
        "--only",
        type=_systems,
        default=["synk", "socketio"],
        help=f"the systems to run, comma-separated, in order: {', '.join(SYSTEMS)} (default synk,socketio)",
    )
    ap.add_argument("--batch", action="store_true", help="synk's clients declare synk_batch=1 (batch frames): rows named 'synk batch'")
    ap.add_argument(
        "--resnap",
        action="store_true",
        help="synk's clients declare synk_resnap=1 (synk's own client, as synk-client does): rows named 'synk resnap'",
    )
    ap.add_argument(
        "--compact",
        action="store_true",
        help="synk's clients declare synk_resnap=1 and synk_compact=1 (compact mods, as synk-client does): rows named 'synk compact'",
    )
    ap.add_argument(
        "--write-interval",
        dest="write_interval",
        type=float,
        default=0.0,
        metavar="S",
        help="synk serve --write-interval S (seconds; default 0): rows named 'synk wi=S'",
    )
    ap.add_argument(
        "--synk-variants",
        dest="synk_variants",
        type=parse_variants,
        metavar="LIST",
        help="several synk variants side by side in one run, instead of --batch / --write-interval: comma-separated, "
        "each 'plain' or '+'-joined 'batch' and 'wiMS' (write interval in ms), e.g. plain,batch,batch+wi20; "
        "synk and synk-asgi get a row per variant, floor one per batch setting",
    )
    ap.add_argument(
        "--sweep", action="store_true", help="step each row's rate up: its highest deliveries/s with p99 <= 50 and 100 ms, a PNG"
    )
    ap.add_argument("--sweep-from", dest="sweep_from", type=float, default=50.0, help="--sweep: the first rate, changes/s (default 50)")
    ap.add_argument("--sweep-to", dest="sweep_to", type=float, default=12800.0, help="--sweep: the doubling stops past it (default 12800)")
    ap.add_argument("--sweep-refine", dest="sweep_refine", type=int, default=2, help="--sweep: bisection steps per p99 limit (default 2)")
    ap.add_argument("--sweep-seconds", dest="sweep_seconds", type=float, default=4.0, help="--sweep: each step's window (default 4)")
    ap.add_argument("--sweep-warmup", dest="sweep_warmup", type=float, default=2.0, help="--sweep: seconds at a rate before its window")
    ap.add_argument("--plot", metavar="PATH", help="--sweep: the PNG's path (default: synk-fanout-sweep-TIME.png in the temp folder)")
    ap.add_argument(
        "--cluster",
        action="store_true",
        help="synk only, on one Redis and on a private 3-primary cluster, with 1 and 2 gateways (clients split between them)",
    )
    ap.add_argument(
        "--workers",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1],
        help="synk serve --workers: a comma-separated list, one synk run each (default 1; 1,2 compares one and two)",
    )
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
    if args.synk_variants and (args.batch or args.write_interval):
        ap.error("--synk-variants names every variant: leave out --batch and --write-interval")
    args.variants = args.synk_variants or [Variant(args.batch, args.write_interval, args.compact, args.resnap or args.compact)]
    if not 1 <= args.keys_per_client <= args.keys:
        ap.error("--keys-per-client must be between 1 and --keys")
    if args.client_procs < 1 or args.clients < args.client_procs:
        ap.error("--client-procs must be between 1 and --clients")
    if args.cluster and (args.sweep or len(args.variants) > 1):
        ap.error("--cluster runs one synk variant at --rate: no --sweep, one variant")
    if args.cluster and (args.client_procs % max(CLUSTER_GATEWAYS) or "synk" not in args.only):
        ap.error(
            "--cluster runs synk only, its client processes split between the gateways: "
            f"--client-procs must be a multiple of {max(CLUSTER_GATEWAYS)}"
        )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    role = args.role
    if role == "main":
        if args.cluster:
            return asyncio.run(orchestrate_cluster(args))
        return asyncio.run(orchestrate_sweep(args) if args.sweep else orchestrate(args))
    if role == "socketio-server":
        socketio_server(args)
    elif role == "synk-asgi-server":
        synk_asgi_server(args)
    elif role == "floor-server":
        asyncio.run(floor_server(args))
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
