"""``python -m bench.flush --cluster``: synk's flush on one Redis against a 3-primary Redis Cluster.

One run starts a private single ``redis-server``, a private cluster of 3
primaries (``bench.redis_cluster``, no replicas: throughput only) and one
of 3 primaries with a replica each (``replicated``: each primary's batch
then ends with ``WAIT 1``, what durability across a failover costs), and on
each measures ``await world.flush()`` (the workload of ``bench.flush``) in 1
and then 2 simulation processes writing at once, each its own objects in the
same subscription keys. A process is a child (``python -m bench.flush --role
writer``) that creates its objects, flushes a warm-up tick and says ready;
the parent then starts every child at once (the start barrier: a line on
each one's stdin) and sums their writes over the span from the first start
to the last end.

The naive, raw and subscriber variants of ``bench.flush`` are not run: they
write through one plain socket, which cannot address a cluster.

Besides the figures of ``bench.flush`` (CPU per write of the simulation
processes and of Redis, summed over the primaries), each row gives each
node's share of the commands, bytes and CPU (``INFO stats``, ``INFO cpu``):
on a cluster, a node far above a third would be where writes serialise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import select
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis

import synk
from bench.flush import PREFIX, Unit, Workload
from bench.node_stats import NodeDelta, deltas, key_share, sample, share_line
from bench.redis_cluster import RedisCluster
from bench.redis_process import RedisProcess

if TYPE_CHECKING:
    from collections.abc import Generator

#: The issue's target: one simulation process on the cluster at least this fraction of the same on one node.
TARGET_CLUSTER_FRACTION = 0.7
PRIMARIES = 3
PROCESSES = (1, 2)


# -- the child: one simulation process ------------------------------------------------------


async def writer(args: argparse.Namespace) -> None:
    """The child's work: set up, say ready, wait for the go line, flush ``args.ticks`` ticks, report."""
    Unit.keys = args.keys
    world = await synk.connect(args.redis, types=[Unit], prefix=PREFIX)
    try:
        work = Workload(args.objects, args.move_fraction)
        for u in work.units:
            world.create(u)
        await world.flush()
        work.tick()  # warm-up tick, not measured (first calls load the scripts on every node)
        await world.flush()
        print(json.dumps({"ready": True}), flush=True)
        # The start barrier: every child is set up before any is timed. Blocking is
        # fine, this process has nothing else to do until then.
        if not sys.stdin.readline():
            return
        times: list[float] = []
        plan = cpu = 0.0
        start = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process of the machine
        for _ in range(args.ticks):
            work.tick()
            c0 = time.process_time()
            t0 = time.perf_counter()
            handle = world.flush()
            t1 = time.perf_counter()
            await handle
            times.append(time.perf_counter() - t0)
            plan += t1 - t0
            cpu += time.process_time() - c0
            if handle.writes != len(work.units):
                raise SystemExit(f"a tick flushed {handle.writes} writes, expected {len(work.units)}")
        end = time.monotonic()
        report = {"start": start, "end": end, "tick_times": times, "plan_s": plan, "client_cpu_s": cpu, "writes": args.objects * args.ticks}
        print(json.dumps(report), flush=True)
    finally:
        await world.close()


# -- the parent ----------------------------------------------------------------------------------


@dataclass
class Row:
    """One backend x processes measurement."""

    backend: str
    processes: int
    writes: int = 0
    span_s: float = 0.0
    tick_times: list[float] = field(default_factory=list)
    client_cpu_s: float = 0.0
    plan_s: float = 0.0
    nodes: list[NodeDelta] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The row's key in the JSON line: ``single_1``, ``cluster_2``..."""
        return f"{self.backend}_{self.processes}"

    @property
    def writes_per_s(self) -> float:
        return self.writes / self.span_s if self.span_s else 0.0

    @property
    def median_ms(self) -> float:
        return statistics.median(self.tick_times) * 1000 if self.tick_times else 0.0

    @property
    def client_us(self) -> float:
        """The simulation processes' CPU time per object write (summed over processes), in µs."""
        return 1e6 * self.client_cpu_s / self.writes if self.writes else 0.0

    @property
    def redis_us(self) -> float:
        """Redis's main-thread CPU time per object write (summed over the primaries), in µs."""
        return 1e6 * sum(n.cpu_s for n in self.nodes) / self.writes if self.writes else 0.0

    def as_json(self) -> dict[str, Any]:
        """For the JSON line."""
        return {
            "backend": self.backend,
            "processes": self.processes,
            "writes_per_s": round(self.writes_per_s),
            "median_ms_per_tick": round(self.median_ms, 2),
            "cpu_us_per_write": {"client": round(self.client_us, 2), "redis": round(self.redis_us, 2)},
            "plan_fraction": round(self.plan_s / sum(self.tick_times), 3) if self.tick_times else None,
            "nodes": [n.as_json() for n in self.nodes],
        }


def _read_json(proc: subprocess.Popen[bytes], deadline: float, what: str) -> dict[str, Any]:
    """The next JSON line of a child, waiting at most until ``deadline``."""
    assert proc.stdout is not None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise SystemExit(f"a writer process did not report {what} in time")
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if not ready:
            continue
        line = proc.stdout.readline()
        if not line:
            proc.wait(10)
            raise SystemExit(f"a writer process exited with code {proc.returncode} before reporting {what}")
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            return obj


def measure(backend: str, url: str, primaries: list[str], processes: int, args: argparse.Namespace) -> Row:
    """``processes`` writer children on ``url``, started together; their summed figures and each node's share."""
    for node in primaries:
        # Each measurement starts from empty nodes, whatever the previous one left.
        with redis.Redis.from_url(node) as client:
            client.flushall()
    argv = [sys.executable, "-m", "bench.flush", "--role", "writer", "--redis", url, "--objects", str(args.objects)]
    argv += ["--keys", str(args.keys), "--ticks", str(args.ticks), "--move-fraction", str(args.move_fraction)]
    procs = [subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE) for _ in range(processes)]
    row = Row(backend, processes)
    try:
        for p in procs:
            if not _read_json(p, time.monotonic() + 120, "ready").get("ready"):
                raise SystemExit("a writer process did not get ready")
        before = sample(primaries)
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(b"go\n")
            p.stdin.flush()
        reports = [_read_json(p, time.monotonic() + 600, "its ticks") for p in procs]
        row.nodes = deltas(before, sample(primaries))
    finally:
        for p in procs:
            if p.stdin is not None:
                p.stdin.close()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
    row.writes = sum(int(r["writes"]) for r in reports)
    row.span_s = max(float(r["end"]) for r in reports) - min(float(r["start"]) for r in reports)
    row.tick_times = [float(t) for r in reports for t in r["tick_times"]]
    row.client_cpu_s = sum(float(r["client_cpu_s"]) for r in reports)
    row.plan_s = sum(float(r["plan_s"]) for r in reports)
    return row


def _backends() -> Generator[tuple[str, str, list[str]]]:
    """(name, url, primary urls) of one node, then of the cluster: each started when reached, closed when left."""
    single = RedisProcess()
    single.start()
    try:
        yield "single", single.url, [single.url]
    finally:
        single.close()
    for name, replicas in (("cluster", False), ("replicated", True)):
        cluster = RedisCluster(PRIMARIES, replicas=replicas)
        try:
            cluster.start()
            yield name, cluster.url, cluster.primary_urls()
        finally:
            cluster.close()


def compare(args: argparse.Namespace) -> int:
    """The whole ``--cluster`` run: measure, print the table and the JSON line."""
    load = os.getloadavg()[0]
    rows: list[Row] = []
    keys_per_node: list[int] = []
    # closing(): a failed measurement stops the backend in use at once, not when the generator is collected
    with contextlib.closing(_backends()) as backends:
        for backend, url, primaries in backends:
            if backend != "single":
                keys_per_node = key_share(primaries, [f"k{i}" for i in range(args.keys)])
            for n in PROCESSES:
                print(f"flush on {backend} ({len(primaries)} primaries), {n} process(es) ...", file=sys.stderr)
                rows.append(measure(backend, url, primaries, n, args))
    by = {r.name: r for r in rows}
    ratio = by["cluster_1"].writes_per_s / by["single_1"].writes_per_s if by["single_1"].writes_per_s else 0.0
    ratio2 = by["cluster_2"].writes_per_s / by["single_2"].writes_per_s if by["single_2"].writes_per_s else 0.0
    waited = by["replicated_1"].writes_per_s / by["cluster_1"].writes_per_s if by["cluster_1"].writes_per_s else 0.0
    met = ratio >= TARGET_CLUSTER_FRACTION
    moves = round(args.objects * args.move_fraction)
    print(
        f"\nflush, one node against a {PRIMARIES}-primary cluster: {args.objects:,} objects per process in {args.keys} keys, "
        f"all changed every tick, {moves:,} moving keys per tick; {args.ticks} ticks per process"
    )
    head = f"{'backend':<24} {'procs':>5} {'writes/s':>12} {'median ms/tick':>14} {'CPU µs/write: sims':>18} {'redis':>6}"
    print(head)
    print("-" * len(head))
    for r in rows:
        n = len(r.nodes)
        label = {"single": "one node", "cluster": f"cluster, {n} primaries"}.get(r.backend, f"cluster, {n} + {n} replicas")
        print(f"{label:<24} {r.processes:>5} {r.writes_per_s:>12,.0f} {r.median_ms:>14.1f} {r.client_us:>18.2f} {r.redis_us:>6.2f}")
    for r in rows:
        if r.backend != "single":
            print(f"{r.backend}, {r.processes} process(es): {share_line(r.nodes, keys_per_node)}")
    cpus = os.cpu_count() or 1
    busy = " (busy machine: wall-clock figures are skewed, the CPU columns less so)" if load > 0.5 * cpus else ""
    print(f"load average at start: {load:.2f} on {cpus} CPUs{busy}")
    print(f"cluster / one node: {ratio:.0%} with 1 process, {ratio2:.0%} with 2 processes")
    print(f"with a replica per primary (each batch waits for it) / without: {waited:.0%} with 1 process")
    print(f"target: 1 process on the cluster >= {TARGET_CLUSTER_FRACTION:.0%} of one node: {'MET' if met else 'MISSED'}\n")
    out = {
        "bench": "flush-cluster",
        "objects": args.objects,
        "keys": args.keys,
        "move_fraction": args.move_fraction,
        "ticks": args.ticks,
        "primaries": PRIMARIES,
        "keys_per_node": keys_per_node,
        "rows": {r.name: r.as_json() for r in rows},
        "cluster_vs_single_1proc": round(ratio, 3),
        "cluster_vs_single_2proc": round(ratio2, 3),
        "replicated_vs_cluster_1proc": round(waited, 3),
        "targets_met": {f"cluster_1proc_ge_{TARGET_CLUSTER_FRACTION:g}_of_single": met},
        "loadavg_1m": round(load, 2),
        "cpus": cpus,
    }
    print(json.dumps(out, separators=(",", ":")))
    return 0


def run_writer(args: argparse.Namespace) -> int:
    """The ``--role writer`` child's entry point."""
    asyncio.run(writer(args))
    return 0
