"""One row of the fan-out benchmark: its processes (the rig), its measured window, its result and the table."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import shutil
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.fanout.common import (
    BIN_S,
    PREFIX,
    BenchError,
    Child,
    keys_of,
    machine_busy,
    proc_cpu,
    wait_port,
)
from bench.node_stats import NodeDelta, deltas, sample
from bench.redis_process import free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

#: ``--sweep``: the p99 limits (ms) a rate is judged against, and the share of the expected
#: deliveries a step must make to count as keeping up (a step that delivers less fell behind).
SWEEP_LIMITS_MS = (50.0, 100.0)
SWEEP_MIN_DELIVERY = 0.97
#: ``--sweep``: after a failed step, a lower rate waits until no client has received anything


@dataclass
class SystemResult:
    name: str
    delivered: int = 0
    expected: int = 0
    seconds: float = 0.0
    server_cpu_s: float = 0.0
    #: the part of server_cpu_s in the kernel (system time: mostly its socket sends)
    server_kernel_cpu_s: float = 0.0
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
    #: deliveries one change makes on average (the clients' subscriptions over the keys)
    per_change: float = 0.0
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
    def kernel_cpu_s_per_million(self) -> float:
        """The kernel's part of cpu_s_per_million (the server's system time)."""
        return self.server_kernel_cpu_s / (self.delivered / 1e6) if self.delivered else math.inf

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

    @property
    def kept_up(self) -> bool:
        """(Nearly) every delivery made: of the changes the simulation made, and of those the rate offered.

        The second matters where the simulation runs late because the machine is
        full: the floor's runs in its server, and its late ticks lower what it
        expects while the rate offered goes undelivered.
        """
        offered = self.rate * self.per_change * self.seconds
        return bool(self.delivered) and self.delivered >= SWEEP_MIN_DELIVERY * max(self.expected, offered)

    def meets(self, p99_ms: float) -> bool:
        """Whether this window kept up (:attr:`kept_up`) with p99 at most ``p99_ms``."""
        return self.kept_up and self.percentile(0.99) <= p99_ms

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
            "server_kernel_cpu_s_per_million": round(self.kernel_cpu_s_per_million, 3),
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
    #: the gateway freezes what survives full collections (``gc_freeze``, on in ``synk serve``); ``nofreeze`` turns it off
    gc_freeze: bool = True

    @property
    def label(self) -> str:
        """What a row's name adds for it: ``" batch compact wi=0.02"``, or nothing for the plain variant."""
        parts = (["batch"] if self.batch else []) + (["resnap"] if self.resnap and not self.compact else [])
        parts += ["compact"] if self.compact else []
        parts += [f"wi={self.write_interval:g}"] if self.write_interval else []
        parts += [] if self.gc_freeze else ["nofreeze"]
        return "".join(f" {p}" for p in parts)


def parse_variants(text: str) -> list[Variant]:
    """``--synk-variants``: comma-separated variants, each ``plain`` or ``+``-joined ``batch``, ``resnap``, ``compact``,
    ``nofreeze`` and ``wiMS``.

    ``wi20`` is a write interval of 20 ms: ``plain,batch,batch+compact,batch+wi20``; ``nofreeze`` runs the
    gateway without ``gc_freeze`` (to compare full collections with and without it).
    """
    out: list[Variant] = []
    for spec in text.split(","):
        batch, interval, compact, resnap, freeze = False, 0.0, False, False, True
        for token in spec.strip().split("+"):
            if token == "nofreeze":
                freeze = False
            elif token == "batch":
                batch = True
            elif token == "compact":
                compact = resnap = True
            elif token == "resnap":
                resnap = True
            elif token.startswith("wi") and token[2:].replace(".", "", 1).isdigit():
                interval = float(token[2:]) / 1000.0
            elif token != "plain":
                raise argparse.ArgumentTypeError(
                    f"{spec!r}: a variant is 'plain' or '+'-joined 'batch', 'resnap', 'compact', 'nofreeze' and 'wiMS'"
                    " (e.g. batch+compact+wi20)"
                )
        variant = Variant(batch, interval, compact, resnap, freeze)
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
            argv += [] if row.variant.gc_freeze else ["--no-gc-freeze"]
            return [*argv, "--workers", str(row.workers), "--write-interval", str(row.variant.write_interval)]
        if row.system == "synk-asgi":
            freeze = [] if row.variant.gc_freeze else ["--no-gc-freeze"]
            return child_argv("synk-asgi-server", args, "--port", str(port), "--write-interval", str(row.variant.write_interval), *freeze)
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
        kernel0 = sum(srv.kernel_cpu() for srv in servers)
        busy0 = machine_busy()
        w0 = time.monotonic()
        await asyncio.sleep(max(0.0, t1 - time.time()))
        cpu1 = {k: f() for k, f in procs.items()}
        kernel1 = sum(srv.kernel_cpu() for srv in servers)
        busy1 = machine_busy()
        if scrape:
            result.pauses = pauses_between(metrics0, await asyncio.to_thread(histograms, self.ports[0]))
        wall = time.monotonic() - w0
        result.nodes = deltas(nodes0, await asyncio.to_thread(sample, self.primaries))
        if spy is not None:
            await spy.wait()
        result.seconds = t1 - t0
        result.server_cpu_s = cpu1["server"] - cpu0["server"]
        result.server_kernel_cpu_s = kernel1 - kernel0
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
        result.per_change = sum(subs) / args.keys
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
        # Since the gateway started, subscribing included (where a crowd's arrival makes them long).
        "full_gcs_since_start": int(after.get("synk_gc_seconds", {}).get("_count", 0.0)),
        "full_gc_s_since_start": round(after.get("synk_gc_seconds", {}).get("_sum", 0.0), 3),
    }


def _since_start(pauses: dict[str, Any]) -> str:
    return f"{pauses['full_gcs_since_start']} ({pauses['full_gc_s_since_start']:.2f})" if pauses else "-"


def table(results: list[SystemResult], extra: Sequence[tuple[str, Callable[[SystemResult], str]]] = ()) -> str:
    rows: list[tuple[str, Callable[[SystemResult], str]]] = [
        ("delivered msgs/s", lambda r: f"{r.delivered_per_s:,.0f}"),
        ("delivered / expected", lambda r: f"{r.delivered:,} / {r.expected:,}"),
        ("server CPU s / 1M msgs", lambda r: f"{r.cpu_s_per_million:.2f}"),
        ("... of which in the kernel", lambda r: f"{r.kernel_cpu_s_per_million:.2f}"),
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
        ("full GCs since start (total s)", lambda r: _since_start(r.pauses)),
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
        + ("" if args.sweep or args.at_floor else f"{args.rate:g} changes/s, {args.seconds:g} s window after {args.warmup:g} s warm-up, ")
        + f"ticks at {args.tick_hz:g} Hz; {args.client_procs} client process(es) ({args.client_lib}, {args.client_loop}); "
        f"socketio served by {args.socketio_server}",
        file=sys.stderr,
    )
    print(
        f"note: {os.cpu_count() or 1} cores shared by the server, redis, the simulation and the clients (see the CPU % rows)",
        file=sys.stderr,
    )
