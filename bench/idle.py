"""Idle clients: what connected, subscribed, silent websocket clients cost the synk gateway.

Workload (defaults): 10,000 websocket clients, each following 10 of 100
subscription keys (every key has 1,000 clients), 10 objects per key written
once by a ``synk.World`` before the gateway starts. Nothing changes after
that: once subscribed, the clients only answer the gateway's keepalive pings.

One run per ``--workers`` value (a comma list, default ``1``): a fresh
``synk serve`` (``--workers N``) on a private redis-server, then the
clients, in ``--client-procs`` load-generator processes (the fan-out
benchmark's, ``python -m bench.fanout --role clients``: a bare asyncio
websocket client on uvloop). Measured on the gateway's process tree (the
supervisor and its workers for ``--workers N``), from /proc:

rss before / after
    VmRSS summed over the tree once the gateway listens with no client, and
    again once every client has its snapshots and ``--settle`` seconds have
    passed. KB per client is their difference over the clients: what one
    idle, subscribed connection holds (its socket buffers in the kernel are
    not in RSS).
CPU
    CPU seconds of the tree over a window of ``--seconds`` with every client
    connected and idle, as a percentage of one core: the keepalive pings
    (every 20 s per client, the gateway's default; ``synk serve`` has no
    option to change it) and whatever else runs without traffic.
subscribe time
    The slowest client process's time from its first connection to its
    last client's last snapshot.

Targets (from the issue; the 1-worker row): at most 16 KB per idle client,
at most 3% of one core. The benchmark exits 0 whether or not they are met
(1 when the harness fails); the last line is one JSON object with every
figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import synk
from bench.fanout.common import BenchError, Child, key_name, raise_nofile, wait_port
from bench.fanout.rig import child_argv, histograms, pauses_between
from bench.redis_process import RedisProcess, free_port

if TYPE_CHECKING:
    from collections.abc import Sequence

#: Redis key prefix of the benchmark's world (its own redis-server: any prefix would do).
PREFIX = "idle:"
#: ``synk.GatewayConfig``'s default keepalive; ``synk serve`` has no option to change it.
PING_INTERVAL_S = 20.0
#: The issue's targets, judged on the 1-worker row.
TARGET_KB_PER_CLIENT = 16.0
TARGET_CPU_PCT = 3.0
#: What ``synk serve`` prints once it listens (every worker, with ``--workers N``).
READY_LINE = b"synk gateway on "
#: The table's column widths.
WIDTHS = (7, 13, 12, 9, 13, 11, 6)


class Item(synk.Object):
    """An object of the idle world: ``sub_key`` is a plain field, set once."""

    type_key = "idle_item"
    sub_key: str = "k0"
    n: int = 0


@dataclass
class Row:
    """One ``--workers`` value's figures."""

    workers: int
    rss_before_kb: int = 0
    rss_after_kb: int = 0
    cpu_s: float = 0.0
    window_s: float = 0.0
    subscribe_s: float = 0.0
    #: clients whose connection ended before the end of the window (should be 0)
    closed: int = 0
    errors: tuple[str, ...] = ()
    #: full GCs and loop stalls from the gateway's start to the window's end (its /metrics; 1 worker only)
    pauses: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.workers}_worker" + ("" if self.workers == 1 else "s")

    def kb_per_client(self, clients: int) -> float:
        return (self.rss_after_kb - self.rss_before_kb) / clients

    @property
    def cpu_pct(self) -> float:
        return 100.0 * self.cpu_s / self.window_s if self.window_s else 0.0

    def summary(self, clients: int) -> dict[str, Any]:
        """The row's figures for the JSON line."""
        return {
            "rss_before_mb": round(self.rss_before_kb / 1024, 1),
            "rss_after_mb": round(self.rss_after_kb / 1024, 1),
            "kb_per_client": round(self.kb_per_client(clients), 2),
            "cpu_pct_of_core": round(self.cpu_pct, 2),
            "subscribe_s": round(self.subscribe_s, 1),
            "closed_clients": self.closed,
            "client_errors": list(self.errors[:3]),
            **({"pauses_since_start": self.pauses} if self.pauses else {}),
        }


# -- memory of a process tree (Linux /proc) ---------------------------------------------------


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its running descendants (``synk serve --workers``'s workers), from /proc/PID/task/TID/children."""
    pids = [pid]
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                for child in f.read().split():
                    pids += tree_pids(int(child))
    return pids


def rss_kb(pid: int) -> int:
    """VmRSS of a process in KB (0 once it has exited)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kb(pid: int) -> int:
    """VmRSS in KB summed over ``pid`` and its descendants."""
    return sum(rss_kb(p) for p in tree_pids(pid))


# -- the run -----------------------------------------------------------------------------------


async def write_world(args: argparse.Namespace) -> None:
    """``--objects-per-key`` objects in each of ``--keys`` keys, written once: the snapshots the clients get."""
    async with synk.connect(args.redis, types=[Item], prefix=PREFIX) as world:
        for k in range(args.keys):
            for n in range(args.objects_per_key):
                world.create(Item(sub_key=key_name(k), n=n))
        await world.flush()


async def wait_ready_line(server: Child, timeout: float) -> None:
    """Wait for ``synk serve``'s first line: with ``--workers N`` it comes once every worker listens, not just the first."""
    assert server.proc.stdout is not None
    try:
        line = await asyncio.wait_for(server.proc.stdout.readline(), timeout)
    except TimeoutError:
        raise BenchError(f"{server.name} did not say it listens within {timeout:g} s\n{server.tail()}") from None
    if not line.startswith(READY_LINE):
        await server.proc.wait()
        raise BenchError(f"{server.name} exited with code {server.proc.returncode}\n{server.tail()}")


async def run_workers(args: argparse.Namespace, workers: int, logdir: Path) -> Row:
    """One row: a fresh gateway with ``workers`` workers, the idle clients, the readings; every child stopped on the way out."""
    row = Row(workers)
    port = free_port()
    children: list[Child] = []
    try:
        argv = [sys.executable, "-m", "synk.cli", "serve", "--redis", args.redis, "--port", str(port), "--prefix", PREFIX]
        argv += ["--ping-interval", str(args.ping_interval)]
        argv += ["--workers", str(workers)]
        if not args.gc_freeze:
            argv += ["--no-gc-freeze"]
        # talk=True: its stdout is a pipe, read for the ready line (its stderr, the log, goes to the log file).
        server = await Child.start(f"gateway-{workers}w", argv, logdir, talk=True)
        children.append(server)
        await wait_port(port, time.monotonic() + 60, lambda: server.alive, server.name)
        await wait_ready_line(server, 60)
        row.rss_before_kb = tree_rss_kb(server.proc.pid)

        # The load generator's workload options (the rate and tick are the simulation's; no simulation runs here).
        gen = argparse.Namespace(
            redis=args.redis,
            keys=args.keys,
            keys_per_client=args.keys_per_client,
            objects_per_key=args.objects_per_key,
            rate=0.0,
            tick_hz=1.0,
        )
        bounds = [round(i * args.clients / args.client_procs) for i in range(args.client_procs + 1)]
        fleet: list[Child] = []
        for j in range(args.client_procs):
            extra = ["--system", "synk", "--port", str(port), "--first", str(bounds[j]), "--count", str(bounds[j + 1] - bounds[j])]
            extra += ["--lib", "raw", "--gate", str(max(1, args.subscribing // args.client_procs)), "--loop", args.client_loop]
            c = await Child.start(f"clients{j}-{workers}w", child_argv("clients", gen, *extra), logdir)
            children.append(c)
            fleet.append(c)
        for c in fleet:
            ready = await c.read(args.connect_timeout)
            if not ready.get("ready"):
                raise BenchError(f"{c.name} could not subscribe its clients: {ready}\n{server.tail()}")
            row.subscribe_s = max(row.subscribe_s, float(ready["subscribe_s"]))
        if not server.alive:
            raise BenchError(f"{server.name} exited while the clients subscribed\n{server.tail()}")

        # A measurement, not a wait for a condition: what the gateway holds once the subscriptions are done.
        await asyncio.sleep(args.settle)
        row.rss_after_kb = tree_rss_kb(server.proc.pid)

        cpu0 = server.cpu()
        w0 = time.monotonic()
        await asyncio.sleep(args.seconds)
        cpu1 = server.cpu()
        row.window_s = time.monotonic() - w0
        row.cpu_s = cpu1 - cpu0
        if not server.alive:
            raise BenchError(f"{server.name} exited during the window\n{server.tail()}")
        if workers == 1:  # behind one port, /metrics is any one worker's
            row.pauses = pauses_between({}, await asyncio.to_thread(histograms, port))

        # Did every client stay connected (a gateway that dropped idle clients would look cheap)?
        for c in fleet:
            c.send({"cmd": "report"})
        errors: list[str] = []
        for c in fleet:
            rep = await c.read(60)
            row.closed += int(rep["closed"])
            errors += rep["errors"]
        row.errors = tuple(errors)
        for c in fleet:
            c.send({"cmd": "stop"})
        for c in fleet:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(c.proc.wait(), 10)
    finally:
        # Clients first (they were started last): the gateway then has no connection left to close politely.
        for c in reversed(children):
            await c.stop()
    return row


def table(rows: list[Row], clients: int) -> str:
    """The human table: one line per ``--workers`` value."""
    titles = ("workers", "RSS before MB", "RSS after MB", "KB/client", "CPU % of core", "subscribe s", "closed")
    head = "  ".join(f"{t:>{w}}" for t, w in zip(titles, WIDTHS, strict=True))
    out = [head, "-" * len(head)]
    for r in rows:
        cells = (
            f"{r.workers}",
            f"{r.rss_before_kb / 1024:.1f}",
            f"{r.rss_after_kb / 1024:.1f}",
            f"{r.kb_per_client(clients):.2f}",
            f"{r.cpu_pct:.2f}",
            f"{r.subscribe_s:.1f}",
            f"{r.closed}",
        )
        out.append("  ".join(f"{c:>{w}}" for c, w in zip(cells, WIDTHS, strict=True)))
    return "\n".join(out)


def targets(rows: list[Row], clients: int) -> dict[str, bool]:
    """The issue's targets, on the 1-worker row (none without one)."""
    one = next((r for r in rows if r.workers == 1), None)
    if one is None:
        return {}
    return {
        "kb_per_client_le_16": one.kb_per_client(clients) <= TARGET_KB_PER_CLIENT,
        "cpu_le_3pct_of_core": one.cpu_pct <= TARGET_CPU_PCT,
    }


async def orchestrate(args: argparse.Namespace) -> int:
    """Redis, the world, then one run per ``--workers`` value; prints the table and the JSON line."""
    limit = raise_nofile()  # the gateway and the client processes inherit it
    needed = args.clients + 200
    if limit < needed:
        print(f"warning: the open-file limit is {limit}, under the {needed} the gateway needs", file=sys.stderr)
    cores = os.cpu_count() or 1
    logdir = Path(tempfile.mkdtemp(prefix="synk-idle-logs-"))
    print(
        f"idle: {args.clients} clients x {args.keys_per_client} of {args.keys} keys, {args.objects_per_key} objects/key, "
        f"{args.client_procs} client process(es) ({args.client_loop}); settle {args.settle:g} s, CPU window {args.seconds:g} s; "
        f"websocket ping every {args.ping_interval:g} s (synk serve --ping-interval; its default is {PING_INTERVAL_S:g}); {cores} cores",
        file=sys.stderr,
    )
    redis: RedisProcess | None = None
    rows: list[Row] = []
    try:
        redis = RedisProcess()  # raises RuntimeError when redis-server is not installed
        await asyncio.to_thread(redis.start)
        args.redis = redis.url
        await write_world(args)
        for n in args.workers:
            print(f"running {n} worker(s) ...", file=sys.stderr)
            rows.append(await run_workers(args, n, logdir))
    except (BenchError, RuntimeError, OSError, synk.SynkError) as exc:
        print(f"idle failed: {type(exc).__name__}: {exc}\n(logs in {logdir})", file=sys.stderr)
        return 1
    finally:
        if redis is not None:
            await asyncio.to_thread(redis.close)
    print(table(rows, args.clients))
    met = targets(rows, args.clients)
    for r in rows:
        if r.pauses:
            p = r.pauses
            print(
                f"{r.workers} worker, from its start (the clients subscribing included): {p['full_gcs']} full GCs taking"
                f" {p['full_gc_s']:.2f} s, {p['lag_over_50ms']} of {p['lag_probes']} loop-lag probes over 50 ms,"
                f" the worst at most {p['lag_worst_at_most_s']} s"
            )
    for name, ok in met.items():
        print(f"target {name} (1 worker): {'MET' if ok else 'MISSED'}")
    for r in rows:
        if r.closed or r.errors:
            print(f"warning: {r.name}: {r.closed} client(s) closed, errors {list(r.errors[:3])}", file=sys.stderr)
    out: dict[str, Any] = {
        "bench": "idle",
        "clients": args.clients,
        "keys": args.keys,
        "keys_per_client": args.keys_per_client,
        "objects_per_key": args.objects_per_key,
        "client_procs": args.client_procs,
        "settle_s": args.settle,
        "seconds": args.seconds,
        "cores": cores,
        "ping_interval_s": args.ping_interval,
        "gc_freeze": args.gc_freeze,
        "rows": {r.name: r.summary(args.clients) for r in rows},
        "targets_met": met,
    }
    print(json.dumps(out))
    shutil.rmtree(logdir, ignore_errors=True)
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m bench.idle", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=10_000, help="idle websocket clients (default %(default)s)")
    ap.add_argument("--keys", type=int, default=100, help="subscription keys (default %(default)s)")
    ap.add_argument(
        "--keys-per-client", dest="keys_per_client", type=int, default=10, help="keys each client follows (default %(default)s)"
    )
    ap.add_argument("--objects-per-key", dest="objects_per_key", type=int, default=10, help="objects written per key (default %(default)s)")
    ap.add_argument("--client-procs", dest="client_procs", type=int, default=2, help="load-generator processes (default %(default)s)")
    ap.add_argument(
        "--workers",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1],
        help="synk serve --workers: a comma-separated list, one run each (default 1)",
    )
    ap.add_argument(
        "--settle", type=float, default=5.0, help="seconds between the last subscription and the RSS reading (default %(default)s)"
    )
    ap.add_argument("--seconds", type=float, default=30.0, help="the idle CPU window (default %(default)s)")
    ap.add_argument(
        "--no-gc-freeze", dest="gc_freeze", action="store_false", help="serve with synk serve --no-gc-freeze (to compare its full GCs)"
    )
    ap.add_argument(
        "--ping-interval",
        dest="ping_interval",
        type=float,
        default=PING_INTERVAL_S,
        help="synk serve --ping-interval: seconds between keepalive pings to each client (default %(default)s, the gateway's)",
    )
    ap.add_argument(
        "--subscribing", type=int, default=8, help="clients connecting and subscribing at once, over all client processes (default 8)"
    )
    ap.add_argument(
        "--client-loop",
        dest="client_loop",
        choices=["uvloop", "asyncio"],
        default="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        help="the clients' event loop (default uvloop when installed)",
    )
    ap.add_argument(
        "--connect-timeout", dest="connect_timeout", type=float, default=600.0, help="seconds for every client to subscribe (default 600)"
    )
    args = ap.parse_args(argv)
    if not 1 <= args.keys_per_client <= args.keys:
        ap.error("--keys-per-client must be between 1 and --keys")
    if args.client_procs < 1 or args.clients < args.client_procs:
        ap.error("--client-procs must be between 1 and --clients")
    if any(n < 1 for n in args.workers):
        ap.error("--workers: each value must be at least 1")
    if args.settle < 0 or args.seconds <= 0:
        ap.error("--settle must be >= 0 and --seconds > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.idle``: 0 once measured (targets met or not), 1 when the harness failed."""
    args = parse_args(argv)

    async def run() -> int:
        # SIGTERM cancels the run like Ctrl-C does, so that the finally blocks stop every child.
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await orchestrate(args)

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        print("idle: interrupted", file=sys.stderr)
        return 130
    except asyncio.CancelledError:
        print("idle: terminated", file=sys.stderr)
        return 143


if __name__ == "__main__":
    sys.exit(main())
