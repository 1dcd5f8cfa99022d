"""The orchestrator: ``python -m bench.fanout`` (see the package docstring)."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import math
import os
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
from bench.fanout.sims import sim_socketio, sim_synk, socketio_server
from bench.node_stats import NodeDelta, deltas, key_share, sample, share_line
from bench.redis_cluster import RedisCluster
from bench.redis_process import RedisProcess, free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

#: ``--cluster``: the cluster's primaries, and the gateway counts measured on each backend.
CLUSTER_PRIMARIES = 3
CLUSTER_GATEWAYS = (1, 2)


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


async def run_system(
    system: str,
    args: argparse.Namespace,
    redis_pids: list[int],
    logdir: Path,
    *,
    name: str = "",
    gateways: int = 1,
    primaries: Sequence[str] = (),
    workers: int = 1,
) -> SystemResult:
    """One system's run: server(s), simulation, clients, warm-up, the measured window.

    ``redis_pids`` are the Redis processes whose CPU is reported (every node
    of a cluster); ``gateways`` synk servers share the client processes
    (client process j talks to gateway j modulo ``gateways``); ``primaries``,
    when given, are the Redis nodes whose counters (``bench.node_stats``) are
    read at the window's edges; ``workers``: ``synk serve --workers``, whose
    CPU is summed over its worker processes.
    """
    result = SystemResult(name or system)
    ports = [free_port() for _ in range(gateways if system == "synk" else 1)]
    children: list[Child] = []
    try:
        servers: list[Child] = []
        for i, port in enumerate(ports):
            if system == "synk":
                server_argv = [sys.executable, "-m", "synk.cli", "serve", "--redis", args.redis, "--port", str(port), "--prefix", PREFIX]
                server_argv += ["--workers", str(workers)]
            else:
                server_argv = child_argv("socketio-server", args, "--port", str(port), "--server", args.socketio_server)
            server = await Child.start(f"{system}-server{i}", server_argv, logdir, talk=False)
            children.append(server)
            servers.append(server)
        for port, srv in zip(ports, servers, strict=True):
            await wait_port(port, time.monotonic() + 30, _alive(srv), srv.name)
        sim = await Child.start(f"{system}-sim", child_argv(f"sim-{system}", args), logdir)
        children.append(sim)
        await sim.read(120)
        bounds = [round(i * args.clients / args.client_procs) for i in range(args.client_procs + 1)]
        fleet = []
        for j in range(args.client_procs):
            port = ports[j % len(ports)]
            extra = ["--system", system, "--port", str(port), "--first", str(bounds[j]), "--count", str(bounds[j + 1] - bounds[j])]
            extra += ["--lib", args.client_lib, "--gate", str(max(1, args.subscribing // args.client_procs)), "--loop", args.client_loop]
            c = await Child.start(f"{system}-clients{j}", child_argv("clients", args, *extra), logdir)
            children.append(c)
            fleet.append(c)
        for c in fleet:
            ready = await c.read(args.connect_timeout)
            if not ready.get("ready"):
                raise BenchError(f"{c.name} could not subscribe its clients: {ready}\n{servers[0].tail()}")
            result.subscribe_s = max(result.subscribe_s, float(ready["subscribe_s"]))
        sim.send({"cmd": "go"})
        await asyncio.sleep(args.warmup)
        t0 = time.time() + 0.2
        t1 = t0 + args.seconds
        for c in [sim, *fleet]:
            c.send({"cmd": "window", "window": [t0, t1]})
        procs: dict[str, Callable[[], float]] = {
            "server": lambda: sum(srv.cpu() for srv in servers),
            "redis": lambda: sum(proc_cpu(pid) for pid in redis_pids),
            "sim": sim.cpu,
            "clients": lambda: sum(c.cpu() for c in fleet),
        }
        await asyncio.sleep(max(0.0, t0 - time.time()))
        # Behind one port, /metrics is any one worker's: read only a single process's.
        scrape = system == "synk" and workers == 1 and gateways == 1
        metrics0 = await asyncio.to_thread(histograms, ports[0]) if scrape else {}
        spy = await start_py_spy(args, system, servers[0].proc.pid)
        nodes0 = await asyncio.to_thread(sample, list(primaries))
        cpu0 = {k: f() for k, f in procs.items()}
        busy0 = machine_busy()
        w0 = time.monotonic()
        await asyncio.sleep(max(0.0, t1 - time.time()))
        cpu1 = {k: f() for k, f in procs.items()}
        busy1 = machine_busy()
        if scrape:
            result.pauses = pauses_between(metrics0, await asyncio.to_thread(histograms, ports[0]))
        wall = time.monotonic() - w0
        result.nodes = deltas(nodes0, await asyncio.to_thread(sample, list(primaries)))
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


def _alive(child: Child) -> Callable[[], bool]:
    """A check that ``child`` still runs (a closure per child, not one over a loop variable)."""
    return lambda: child.alive


async def start_py_spy(args: argparse.Namespace, system: str, pid: int) -> asyncio.subprocess.Process | None:
    """``--py-spy DIR``: sample the server during the window into DIR/fanout-SYSTEM.txt (py-spy's raw format)."""
    if not args.py_spy:
        return None
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out = Path(args.py_spy) / f"fanout-{system}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [exe, "record", "-p", str(pid), "-d", str(max(1, int(args.seconds))), "-r", "100", "-f", "raw", "-o", str(out)]
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
    out = [f"{'':<{width}}  " + "  ".join(f"{c:>18}" for c in cols)]
    for name, fmt in rows:
        out.append(f"{name:<{width}}  " + "  ".join(f"{fmt(r):>18}" for r in results))
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


async def orchestrate(args: argparse.Namespace) -> int:
    limit = raise_nofile()
    needed = args.clients + 200
    if limit < needed:
        print(f"warning: the open-file limit is {limit}, under the {needed} the clients need", file=sys.stderr)
    cores = os.cpu_count() or 1
    redis = RedisProcess()
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
        pids = [redis.proc.pid] if redis.proc else []
        for system in systems:
            for n in args.workers if system == "synk" else [1]:
                name = system if n == 1 else f"{system}_{n}_workers"
                print(f"running {name} ...", file=sys.stderr)
                results.append(await run_system(system, args, pids, logdir, name=name, workers=n))
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
                    results.append(await run_system("synk", args, pids, logdir, name=name, gateways=gateways, primaries=primaries))
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
    ap.add_argument("--only", choices=["synk", "socketio"])
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
    if not 1 <= args.keys_per_client <= args.keys:
        ap.error("--keys-per-client must be between 1 and --keys")
    if args.client_procs < 1 or args.clients < args.client_procs:
        ap.error("--client-procs must be between 1 and --clients")
    if args.cluster and (args.client_procs % max(CLUSTER_GATEWAYS) or args.only == "socketio"):
        ap.error(
            "--cluster runs synk only, its client processes split between the gateways: "
            f"--client-procs must be a multiple of {max(CLUSTER_GATEWAYS)}"
        )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    role = args.role
    if role == "main":
        return asyncio.run(orchestrate_cluster(args) if args.cluster else orchestrate(args))
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
