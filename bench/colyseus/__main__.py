"""The orchestrator: ``python -m bench.colyseus`` (see the package docstring)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import colyseus
from bench.fanout.common import Child as FanoutChild

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

#: This folder: the Node project (server.js, clients.js, package.json).
NODE_DIR = Path(__file__).resolve().parent
#: State age histogram: 0.1 ms bins (as clients.js counts them).
BIN_MS = 0.1
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
#: The two rows: name, and whether the objects map is tagged @view().
MODES = {"view": ("colyseus StateView", True), "no-view": ("colyseus no view", False)}


class BenchError(Exception):
    """A process of the benchmark failed; the message says which and why."""


# -- the workload ------------------------------------------------------------------------------


def keys_of(client: int, keys: int, per_client: int) -> list[int]:
    """The keys client ``client`` follows (clients.js and server.js's ``keysOf``; bench.fanout's spread)."""
    stride = keys // per_client
    return [(client + j * stride) % keys for j in range(per_client)]


def subscribers(args: argparse.Namespace) -> list[int]:
    """How many clients see each key's objects through their StateView."""
    subs = [0] * args.keys
    for i in range(args.clients):
        for k in keys_of(i, args.keys, args.keys_per_client):
            subs[k] += 1
    return subs


# -- readings of processes and of the machine ---------------------------------------------------


def proc_rss_mb(pid: int) -> float:
    """Resident memory of a process, in MB (from /proc/PID/statm)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE_KB / 1024.0
    except OSError:
        return 0.0


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of every core, from /proc/stat."""
    with open("/proc/stat", "rb") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return float(sum(parts[:8]) - idle), float(sum(parts[:8]))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def raise_nofile() -> None:
    """Raise the open-file soft limit to the hard limit (the client processes inherit it)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if target > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


# -- the Node project ---------------------------------------------------------------------------


def node_exe() -> str:
    exe = shutil.which("node")
    if exe is None:
        raise BenchError("node is not on PATH: bench.colyseus runs its server and clients in Node (20 or later)")
    return exe


def ensure_node_modules(directory: Path = NODE_DIR) -> None:
    """Run ``npm ci`` in the Node project when its dependencies are not installed (its output to stderr)."""
    if (directory / "node_modules" / "@colyseus" / "core").is_dir() and (directory / "node_modules" / "colyseus.js").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise BenchError(f"{directory}/node_modules is missing and npm is not on PATH")
    print(f"bench.colyseus: {directory}/node_modules is missing: running npm ci there ...", file=sys.stderr, flush=True)
    result = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=directory, stdout=sys.stderr, stderr=sys.stderr, check=False)
    if result.returncode != 0:
        raise BenchError(f"npm ci in {directory} failed (exit code {result.returncode})")


class Child(FanoutChild):
    """A Node child process: a JSON config as its argument, JSON lines on stdin and stdout, stderr to a log."""

    @classmethod
    async def spawn(cls, name: str, script: str, config: dict[str, Any], logdir: Path) -> Child:
        """Start ``node script config`` in the Node project."""
        log = logdir / f"{name}.log"
        err = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            proc = await asyncio.create_subprocess_exec(
                node_exe(),
                script,
                json.dumps(config),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                cwd=NODE_DIR,
                limit=64 * 1024 * 1024,
            )
        finally:
            os.close(err)
        return cls(name, proc, log)

    async def stop(self, timeout: float = 10.0) -> None:
        """Ask it to exit (``stop``), then SIGTERM, then SIGKILL."""
        if not self.alive:
            return
        self.send({"cmd": "stop"})
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(sig)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), timeout)
                return


# -- one row: one mode at one rate --------------------------------------------------------------


@dataclass
class Row:
    name: str
    mode: str
    rate: float
    seconds: float = 0.0
    delivered: int = 0
    expected: int = 0
    bytes: int = 0
    messages: int = 0
    server_cpu_s: float = 0.0
    #: the part of server_cpu_s in the kernel (its socket sends, mostly)
    server_kernel_cpu_s: float = 0.0
    clients_cpu_s: float = 0.0
    cpu_pct: dict[str, float] = field(default_factory=dict)
    machine_busy_pct: float = 0.0
    rss_mb: float = 0.0
    hist: dict[int, int] = field(default_factory=dict)
    sim: dict[str, Any] = field(default_factory=dict)
    join_s: float = 0.0
    closed: int = 0
    unparsed: int = 0
    client_errors: list[str] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        total = sum(self.hist.values())
        if not total:
            return math.nan
        rank, seen = q * total, 0
        for b in sorted(self.hist):
            seen += self.hist[b]
            if seen >= rank:
                return (b + 0.5) * BIN_MS
        return math.nan

    @property
    def delivered_per_s(self) -> float:
        return self.delivered / self.seconds if self.seconds else 0.0

    @property
    def expected_per_s(self) -> float:
        return self.expected / self.seconds if self.seconds else 0.0

    @property
    def cpu_s_per_million(self) -> float:
        return self.server_cpu_s / (self.delivered / 1e6) if self.delivered else math.inf

    def bytes_per_client_s(self, clients: int) -> float:
        return self.bytes / clients / self.seconds if self.seconds else 0.0

    def summary(self, clients: int) -> dict[str, Any]:
        loop = self.sim.get("loop_delay") or {}
        return {
            "name": self.name,
            "mode": self.mode,
            "rate": self.rate,
            "delivered_per_s": round(self.delivered_per_s),
            "expected_per_s": round(self.expected_per_s),
            "delivered": self.delivered,
            "expected": self.expected,
            "delivery_ratio": round(self.delivered / self.expected, 4) if self.expected else None,
            "cpu_s_per_million": round(self.cpu_s_per_million, 3) if self.delivered else None,
            "bytes_per_client_per_s": round(self.bytes_per_client_s(clients)),
            "messages_per_client_per_s": round(self.messages / clients / self.seconds, 1) if self.seconds else 0,
            "p50_ms": round(self.percentile(0.50), 2),
            "p99_ms": round(self.percentile(0.99), 2),
            "max_ms": round(max(self.hist, default=0) * BIN_MS, 1),
            "server_rss_mb": round(self.rss_mb, 1),
            "server_cpu_s": round(self.server_cpu_s, 2),
            "clients_cpu_s_per_million": round(self.clients_cpu_s / (self.delivered / 1e6), 3) if self.delivered else None,
            "cpu_pct": {k: round(v, 1) for k, v in self.cpu_pct.items()},
            "machine_busy_pct": round(self.machine_busy_pct, 1),
            "sim_changes_per_s": round(self.sim.get("in_window", 0) / self.seconds) if self.seconds else 0,
            "sim_late_ticks": self.sim.get("late_ticks_in_window", 0),
            "loop_delay_p99_ms": loop.get("p99_ms"),
            "join_s": round(self.join_s, 1),
            "closed_clients": self.closed,
            "unparsed_patches": self.unparsed,
            "client_errors": self.client_errors[:3],
        }


async def run_mode(mode: str, args: argparse.Namespace, logdir: Path) -> list[Row]:
    """One server and its clients for ``mode``; a row for each rate of ``args.rates``."""
    name, view = MODES[mode]
    port = free_port()
    children: list[Child] = []
    rows: list[Row] = []
    try:
        config = {
            "port": port,
            "view": view,
            "keys": args.keys,
            "objectsPerKey": args.objects_per_key,
            "keysPerClient": args.keys_per_client,
            "tickHz": args.tick_hz,
            "patchMs": args.patch_ms,
        }
        server = await Child.spawn(f"{mode}-server", "server.js", config, logdir)
        children.append(server)
        ready = await server.read(60)
        bounds = [round(i * args.clients / args.client_procs) for i in range(args.client_procs + 1)]
        fleet: list[Child] = []
        joining = time.monotonic()
        for j in range(args.client_procs):
            cfg = {
                "port": port,
                "roomId": ready["roomId"],
                "first": bounds[j],
                "count": bounds[j + 1] - bounds[j],
                "gate": max(1, args.joining),
                "client": args.client,
            }
            c = await Child.spawn(f"{mode}-clients{j}", "clients.js", cfg, logdir)
            children.append(c)
            fleet.append(c)
        for c in fleet:
            answer = await c.read(args.connect_timeout)
            if not answer.get("ready"):
                raise BenchError(f"{c.name} could not join its clients: {answer.get('error')}\n{server.tail()}")
        join_s = time.monotonic() - joining
        print(f"  {name}: {args.clients} clients joined in {join_s:.1f} s", file=sys.stderr, flush=True)
        subs = subscribers(args)
        for rate in args.rates:
            row = Row(name, mode, rate, join_s=join_s)
            server.send({"cmd": "rate", "rate": rate})
            await asyncio.sleep(args.warmup)
            t0 = time.time() + 0.2
            t1 = t0 + args.seconds
            for c in [server, *fleet]:
                c.send({"cmd": "window", "window": [t0, t1]})
            procs: dict[str, Callable[[], float]] = {"server": server.cpu, "clients": lambda: sum(c.cpu() for c in fleet)}
            await asyncio.sleep(max(0.0, t0 - time.time()))
            cpu0 = {k: f() for k, f in procs.items()}
            kernel0 = server.kernel_cpu()
            busy0, w0 = machine_busy(), time.monotonic()
            await asyncio.sleep(max(0.0, t1 - time.time()))
            cpu1 = {k: f() for k, f in procs.items()}
            row.server_kernel_cpu_s = server.kernel_cpu() - kernel0
            busy1, wall = machine_busy(), time.monotonic() - w0
            row.rss_mb = proc_rss_mb(server.proc.pid)
            row.seconds = t1 - t0
            row.server_cpu_s = cpu1["server"] - cpu0["server"]
            row.clients_cpu_s = cpu1["clients"] - cpu0["clients"]
            row.cpu_pct = {k: 100.0 * (cpu1[k] - cpu0[k]) / wall for k in procs}
            row.machine_busy_pct = 100.0 * (busy1[0] - busy0[0]) / max(1.0, busy1[1] - busy0[1])
            cores = os.cpu_count() or 1
            row.cpu_pct["other"] = max(0.0, row.machine_busy_pct * cores - sum(row.cpu_pct.values()))
            server.send({"cmd": "report"})
            row.sim = await server.read(60)
            per_key: list[int] = row.sim["per_key"]
            row.expected = row.sim["in_window"] * args.clients if not view else sum(n * subs[k] for k, n in enumerate(per_key))
            for c in fleet:
                c.send({"cmd": "report"})
            for c in fleet:
                rep = await c.read(120)
                row.delivered += int(rep["count"])
                row.bytes += int(rep["bytes"])
                row.messages += int(rep["messages"])
                row.closed += int(rep["closed"])
                row.unparsed += int(rep["unparsed"])
                row.client_errors += rep["errors"]
                for b, n in rep["hist"].items():
                    row.hist[int(b)] = row.hist.get(int(b), 0) + int(n)
            print(f"  {progress_line(row, args.clients)}", file=sys.stderr, flush=True)
            rows.append(row)
    finally:
        for c in reversed(children):
            await c.stop()
    return rows


def progress_line(r: Row, clients: int) -> str:
    return (
        f"{r.name} at {r.rate:g} changes/s: {r.delivered_per_s:,.0f} client updates/s of {r.expected_per_s:,.0f} expected, "
        f"{r.cpu_s_per_million:.2f} server CPU-s/1M, age p50 {r.percentile(0.5):.1f} ms p99 {r.percentile(0.99):.1f} ms, "
        f"{r.bytes_per_client_s(clients):,.0f} B/client/s, RSS {r.rss_mb:.0f} MB, machine {r.machine_busy_pct:.0f}% busy"
    )


def table(rows: list[Row], clients: int) -> str:
    cols: list[tuple[str, Callable[[Row], str]]] = [
        ("row", lambda r: r.name),
        ("changes/s", lambda r: f"{r.rate:g}"),
        ("updates/s delivered", lambda r: f"{r.delivered_per_s:,.0f}"),
        ("expected", lambda r: f"{r.expected_per_s:,.0f}"),
        ("CPU-s/1M", lambda r: f"{r.cpu_s_per_million:.2f}"),
        ("B/client/s", lambda r: f"{r.bytes_per_client_s(clients):,.0f}"),
        ("age p50 ms", lambda r: f"{r.percentile(0.5):.1f}"),
        ("age p99 ms", lambda r: f"{r.percentile(0.99):.1f}"),
        ("RSS MB", lambda r: f"{r.rss_mb:.0f}"),
        ("CPU% srv", lambda r: f"{r.cpu_pct['server']:.0f}"),
        ("CPU% clients", lambda r: f"{r.cpu_pct['clients']:.0f}"),
        ("CPU% other", lambda r: f"{r.cpu_pct['other']:.0f}"),
        ("busy %", lambda r: f"{r.machine_busy_pct:.0f}"),
        ("late ticks", lambda r: str(r.sim.get("late_ticks_in_window", 0))),
        ("loop lag p99 ms", lambda r: f"{(r.sim.get('loop_delay') or {}).get('p99_ms', math.nan):.0f}"),
    ]
    cells = [[head for head, _ in cols]] + [[fmt(r) for _, fmt in cols] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(cols))]
    out = []
    for line in cells:
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))))
    return "\n".join(out)


async def orchestrate(args: argparse.Namespace) -> int:
    raise_nofile()
    cores = os.cpu_count() or 1
    logdir = Path(tempfile.mkdtemp(prefix="synk-colyseus-logs-"))
    modes = [args.only] if args.only else list(MODES)
    print(
        f"colyseus: {args.clients} clients x {args.keys_per_client} of {args.keys} keys, {args.objects_per_key} objects/key, "
        f"rates {', '.join(f'{r:g}' for r in args.rates)} changes/s (sim at {args.tick_hz:g} Hz, patches every {args.patch_ms:g} ms), "
        f"{args.seconds:g} s window after {args.warmup:g} s warm-up each; {args.client_procs} client process(es) of {args.client} clients",
        file=sys.stderr,
    )
    print(f"note: {cores} cores shared by the server and the clients (see the CPU % columns)", file=sys.stderr)
    rows: list[Row] = []
    try:
        ensure_node_modules()
        for mode in modes:
            print(f"running {MODES[mode][0]} ...", file=sys.stderr, flush=True)
            rows += await run_mode(mode, args, logdir)
    except BenchError as exc:
        print(f"bench.colyseus failed: {exc}\n(logs in {logdir})", file=sys.stderr)
        return 1
    print(table(rows, args.clients))
    if "no-view" in modes:
        print("(no view: every client sees every object, 10x the StateView row's updates at the same rate: a different workload)")
    out: dict[str, Any] = {
        "bench": "colyseus",
        "clients": args.clients,
        "keys": args.keys,
        "keys_per_client": args.keys_per_client,
        "objects_per_key": args.objects_per_key,
        "rates": args.rates,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "tick_hz": args.tick_hz,
        "patch_ms": args.patch_ms,
        "client_procs": args.client_procs,
        "client": args.client,
        "cores": cores,
        "node": await node_version(),
        "rows": [r.summary(args.clients) for r in rows],
    }
    print(json.dumps(out))
    shutil.rmtree(logdir, ignore_errors=True)
    return 0


async def node_version() -> str:
    proc = await asyncio.create_subprocess_exec(node_exe(), "--version", stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    return out.decode().strip()


def rates(text: str) -> list[float]:
    values = [float(x) for x in text.split(",") if x.strip()]
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError("a comma-separated list of positive rates")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.colyseus", description=(colyseus.__doc__ or "").split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--keys", type=int, default=100)
    ap.add_argument("--objects-per-key", dest="objects_per_key", type=int, default=100)
    ap.add_argument("--keys-per-client", dest="keys_per_client", type=int, default=10)
    ap.add_argument("--rate", type=float, default=500.0, help="object changes per second (default 500, as bench.fanout)")
    ap.add_argument(
        "--rates", type=rates, help="comma-separated rates to step through in one run (e.g. 250,500,1000,1500); overrides --rate"
    )
    ap.add_argument("--seconds", type=float, default=10.0, help="the measured window of each row")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds at each rate before its window")
    ap.add_argument("--client-procs", dest="client_procs", type=int, default=2)
    ap.add_argument("--only", choices=list(MODES), help="run one of the two rows' modes")
    ap.add_argument(
        "--tick-hz", dest="tick_hz", type=float, default=50.0, help="simulation ticks per second (50 as synk's; 20 = the patch rate)"
    )
    ap.add_argument("--patch-ms", dest="patch_ms", type=float, default=50.0, help="the room's patchRate (Colyseus's default 50 ms)")
    ap.add_argument(
        "--client",
        choices=["wire", "changes", "listen"],
        default="wire",
        help="the clients: Colyseus's protocol on a bare websocket (default) or colyseus.js (the decoder's raw changes, or listen('ts'))",
    )
    ap.add_argument("--joining", type=int, default=8, help="clients joining at once in each client process (default 8)")
    ap.add_argument("--connect-timeout", dest="connect_timeout", type=float, default=300.0)
    args = ap.parse_args(argv)
    if args.rates is None:
        args.rates = [args.rate]
    if not 1 <= args.keys_per_client <= args.keys:
        ap.error("--keys-per-client must be between 1 and --keys")
    if args.client_procs < 1 or args.clients < args.client_procs:
        ap.error("--client-procs must be between 1 and --clients")
    if min(args.keys, args.objects_per_key, args.seconds, args.tick_hz, args.patch_ms) <= 0 or args.warmup < 0:
        ap.error("--keys, --objects-per-key, --seconds, --tick-hz and --patch-ms must be positive, --warmup not negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(orchestrate(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
