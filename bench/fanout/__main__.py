"""The orchestrator: ``python -m bench.fanout`` (see the package docstring)."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis as redis_py

from bench import fanout
from bench.fanout.anchor import run_colyseus
from bench.fanout.clients import clients
from bench.fanout.common import (
    TARGET_CPU_RATIO,
    TARGET_P99_MS,
    BenchError,
    key_name,
    raise_nofile,
)
from bench.fanout.floor import floor_server
from bench.fanout.rig import (
    Row,
    SystemResult,
    Variant,
    banner,
    parse_variants,
    rows_of,
    run_system,
    table,
    workload,
)
from bench.fanout.sims import sim_socketio, sim_synk, socketio_server, synk_asgi_server
from bench.fanout.sweep import orchestrate_at_floor, orchestrate_sweep
from bench.fanout.targets import ASGI_VS_SERVE, VS_COLYSEUS, VS_FLOOR, judge, median_round
from bench.node_stats import key_share, share_line
from bench.redis_cluster import RedisCluster
from bench.redis_process import RedisProcess

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

#: ``--cluster``: the cluster's primaries, and the gateway counts measured on each backend.
CLUSTER_PRIMARIES = 3
CLUSTER_GATEWAYS = (1, 2)
#: The systems ``--only`` can name (the default runs synk and socketio).
SYSTEMS = ("synk", "synk-asgi", "floor", "socketio", "colyseus")


#: The ``--cluster`` table's extra rows.
CLUSTER_ROWS: list[tuple[str, Callable[[SystemResult], str]]] = [
    ("redis CPU s / 1M msgs (all nodes)", lambda r: f"{r.redis_cpu_s / (r.delivered / 1e6):.2f}" if r.delivered else "-"),
]


async def orchestrate(args: argparse.Namespace) -> int:
    limit = raise_nofile()
    needed = args.clients + 200
    if limit < needed:
        print(f"warning: the open-file limit is {limit}, under the {needed} the clients need", file=sys.stderr)
    cores = os.cpu_count() or 1
    redis = RedisProcess()
    logdir = Path(tempfile.mkdtemp(prefix="synk-fanout-logs-"))
    rows = rows_of(args)
    # --repeat: every row once a round, round after round, so that the machine's
    # moods fall on every row alike; the table shows each row's median round.
    rounds: list[dict[str, SystemResult]] = []
    banner(args, "fanout")
    try:
        await asyncio.to_thread(redis.start)
        args.redis = redis.url
        pids = [redis.proc.pid] if redis.proc else []
        for n in range(args.repeat):
            rounds.append({})
            for row in rows:
                print(f"running {row.name}" + (f", round {n + 1} of {args.repeat}" if args.repeat > 1 else "") + " ...", file=sys.stderr)
                if row.system == "colyseus":
                    rounds[-1][row.name] = await run_colyseus(row.name, args, logdir)
                else:
                    rounds[-1][row.name] = await run_system(row, args, pids, logdir)
            if args.repeat > 1:
                print(f"round {n + 1}: " + ", ".join(f"{k} {r.cpu_s_per_million:.2f}" for k, r in rounds[-1].items()), file=sys.stderr)
    except BenchError as exc:
        print(f"fanout failed: {exc}\n(logs in {logdir})", file=sys.stderr)
        return 1
    finally:
        await asyncio.to_thread(redis.close)
    results = [median_round([r[row.name] for r in rounds]) for row in rows]
    every = {row.name: [r[row.name] for r in rounds] for row in rows}
    extra: list[tuple[str, Callable[[SystemResult], str]]] = []
    if args.repeat > 1:
        extra = [
            ("CPU s / 1M msgs, every round", lambda r: " ".join(f"{x.cpu_s_per_million:.1f}" for x in every[r.name])),
            ("latency p99 ms, every round", lambda r: " ".join(f"{x.percentile(0.99):.0f}" for x in every[r.name])),
        ]
        print(f"each row's median round of {args.repeat} (by CPU per delivery):")
    print(table(results, extra=extra))
    verdicts, judged = judge(rows, rounds)
    for line in verdicts:
        print(line)
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
        if args.repeat > 1:
            out[r.name]["rounds"] = [
                {"cpu_s_per_million": round(x.cpu_s_per_million, 3), "p99_ms": round(x.percentile(0.99), 2)} for x in every[r.name]
            ]
    out["repeat"] = args.repeat
    out.update(judged)
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
    # Targets 2 and 3 (--repeat with a floor or synk-asgi row): their verdicts, as the table prints them.
    for name, spread in judged.get("cpu_vs_floor", {}).items():
        targets[f"cpu_vs_floor_le_{VS_FLOOR:g}_{name}"] = spread["met"]
    for name, both in judged.get("asgi_vs_serve", {}).items():
        targets[f"asgi_vs_serve_le_{ASGI_VS_SERVE:g}_{name}"] = both["cpu"]["met"] and both["p99"]["met"]
    for name, both in judged.get("vs_colyseus", {}).items():
        if not name.startswith("floor"):
            targets[f"cpu_vs_colyseus_le_{VS_COLYSEUS:g}_{name}"] = both["cpu"]["met"]
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
        "each 'plain' or '+'-joined 'batch', 'resnap', 'compact', 'nofreeze' (no gc_freeze) and 'wiMS' (write interval in ms), "
        "e.g. plain,batch,batch+wi20; "
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
    ap.add_argument(
        "--at-floor",
        dest="at_floor",
        type=float,
        default=0.0,
        metavar="F",
        help="issue 14's target 1: sweep the floor row(s) to saturation (the --sweep options apply), then run every other row "
        "for one --seconds window at F times it (e.g. 0.8); judged on p99 <= 100 ms and no loop stall over 50 ms",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="run every row N times, round after round: the table shows each row's median round, "
        "and the targets against the floor (and ASGI against synk serve) are judged on the median of the rounds' ratios",
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
    ap.add_argument("--no-gc-freeze", dest="gc_freeze", action="store_false", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.per_client = args.keys_per_client
    if args.synk_variants and (args.batch or args.write_interval):
        ap.error("--synk-variants names every variant: leave out --batch and --write-interval")
    args.variants = args.synk_variants or [Variant(args.batch, args.write_interval, args.compact, args.resnap or args.compact)]
    if args.at_floor and (not 0 < args.at_floor <= 1 or "floor" not in args.only or args.only == ["floor"] or args.sweep or args.cluster):
        ap.error("--at-floor F takes 0 < F <= 1, a floor row and another (--only synk,floor), and not --sweep or --cluster")
    if args.repeat < 1 or (args.repeat > 1 and (args.sweep or args.cluster)):
        ap.error("--repeat must be at least 1, and runs rows at --rate: not with --sweep or --cluster")
    if "colyseus" in args.only and (args.sweep or args.at_floor or args.cluster):
        ap.error("the colyseus row runs at --rate: not with --sweep, --at-floor or --cluster (bench.colyseus --rates sweeps it)")
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
        if args.at_floor:
            return asyncio.run(orchestrate_at_floor(args))
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
