"""The orchestrator: ``python -m bench.chaos`` (see the package docstring)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import chaos
from bench.chaos.common import PREFIX
from bench.chaos.compare import Divergence, compare
from bench.chaos.faults import CLUSTER_ONLY, FAULTS, SINGLE_ONLY
from bench.chaos.redis_ctl import StoredObject, read_store
from bench.chaos.run import Run
from bench.fanout.common import BenchError

if TYPE_CHECKING:
    from collections.abc import Sequence

#: Seconds between two looks at the mirrors while waiting for convergence.
POLL_S = 0.5
#: Faults per second of storm (at least one per storm).
FAULT_RATE = 1 / 5


@dataclass
class StormResult:
    """One row of the table."""

    index: int
    seed: int
    faults: list[str] = field(default_factory=list)
    objects: int = 0
    clients: int = 0
    missing: int = 0
    extra: int = 0
    wrong: int = 0
    diverged_clients: int = 0
    converge_s: float | None = None
    #: objects a simulation owns that the store lacks, and stored objects no simulation owns
    sim_lost: int = 0
    sim_orphans: int = 0
    #: owned objects stored with another key, version, incarnation or state than their simulation believes
    sim_wrong: int = 0
    #: the simulations' counters over the storm, summed
    sim_stats: dict[str, int] = field(default_factory=dict)
    #: the longest stretch of failed flushes of any simulation (s), and the slowest flush that landed
    write_outage_s: float = 0.0
    max_flush_s: float = 0.0
    #: the longest time no client (of any process) received an update while the simulations wrote
    delivery_gap_s: float = 0.0
    #: clients' reconnections during the storm (a killed gateway or a stuck client causes some)
    reconnects: int = 0
    #: what breaks the store invariant (tests/store_invariant.py) once the simulations settled, and did not after the last storm
    invariant: list[str] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)
    orphans: list[dict[str, Any]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    #: the keys whose slot moved to another primary during the storm
    resharded: list[str] = field(default_factory=list)
    #: keys a gateway gave up serving to a client ("cannot serve key" in its log): the client got an error
    refusals: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)

    @property
    def diverged(self) -> bool:
        """Some mirror still differed from the store at the deadline."""
        return self.converge_s is None

    @property
    def broken(self) -> bool:
        """The store broke its invariant, or holds an owned object otherwise than its simulation believes, or applied a write twice."""
        return bool(self.invariant) or self.sim_wrong > 0 or self.sim_stats.get("doubled", 0) > 0

    def summary(self) -> dict[str, Any]:
        """The storm in the JSON line."""
        return {
            "storm": self.index,
            "seed": self.seed,
            "faults": self.faults,
            "objects": self.objects,
            "clients": self.clients,
            "missing": self.missing,
            "extra": self.extra,
            "wrong": self.wrong,
            "diverged_clients": self.diverged_clients,
            "converge_s": None if self.converge_s is None else round(self.converge_s, 2),
            "sim_lost": self.sim_lost,
            "sim_orphans": self.sim_orphans,
            "sim_wrong": self.sim_wrong,
            "sim": self.sim_stats,
            "write_outage_s": round(self.write_outage_s, 2),
            "max_flush_s": round(self.max_flush_s, 2),
            "delivery_gap_s": round(self.delivery_gap_s, 2),
            "reconnects": self.reconnects,
            "invariant": self.invariant[:20],
            "resharded": self.resharded,
            "refusals": self.refusals[:20],
            "crashes": self.crashes,
            "examples": self.examples,
            "orphans": self.orphans,
        }


async def mirrors_vs_store(run: Run) -> tuple[dict[str, StoredObject], dict[str, Divergence]]:
    """The store, and each client's divergence from it."""
    store = await read_store(await run.store_urls())
    divergences: dict[str, Divergence] = {}
    reports = await asyncio.gather(*(f.ask({"cmd": "report"}) for f in run.fleets if f is not None))
    for report in reports:
        for client in report["clients"]:
            divergences[client["name"]] = compare(store, client)
    return store, divergences


def longest_common_gap(answers: list[dict[str, Any]], since: float) -> float:
    """The longest stretch (s) that is a delivery gap of every client process: no client received anything.

    ``answers`` are the processes' ``gaps`` answers (``clients.mjs``); a
    process started after ``since`` (epoch ms, the storm's start) knows
    nothing before it started, which counts as a gap of its own.
    """
    if not answers:
        return 0.0
    common: list[tuple[float, float]] | None = None
    for answer in answers:
        gaps = [(float(a), float(b)) for a, b in answer["gaps"]]
        if answer["since"] > since:
            gaps.insert(0, (since, float(answer["since"])))
        if common is None:
            common = gaps
            continue
        common = [(max(a, c), min(b, d)) for a, b in common for c, d in gaps if max(a, c) < min(b, d)]
    return max((b - a for a, b in common or []), default=0.0) / 1000


async def run_storm(run: Run, args: argparse.Namespace, index: int) -> StormResult:
    """One storm: run with faults, heal, quiet, then wait for every mirror to equal the store."""
    seed = args.seed * 1000 + index
    rng = random.Random(seed)
    result = StormResult(index, seed)
    run.events = []
    run.resharded = []
    crashes_before = len(run.crashes)
    kinds = args.faults
    count = args.faults_per_storm or max(1, round(args.duration * FAULT_RATE))
    plan = sorted((rng.uniform(0.5, max(0.6, args.duration * 0.8)), rng.choice(kinds)) for _ in range(count))
    result.faults = [kind for _, kind in plan]
    run.log(f"storm {index} (seed {seed}): {args.duration:g} s, faults {', '.join(f'{k}@{t:.1f}s' for t, k in plan)}")

    async def strike(at: float, kind: str, fault_rng: random.Random) -> None:
        await asyncio.sleep(at)  # the fault's moment in the storm
        try:
            what = await FAULTS[kind](run, fault_rng)
        except (BenchError, OSError, RuntimeError) as exc:
            run.log(f"fault {kind} could not complete: {exc}")
            return
        run.log(f"fault {kind}: {what}")

    for sim in run.sims:
        sim.send({"cmd": "go"})
    began = time.time() * 1000
    await run.tell_fleets({"cmd": "mark"})
    await run.tell_fleets({"cmd": "churn", "on": True})
    strikes = [asyncio.create_task(strike(at, kind, random.Random(rng.random()))) for at, kind in plan]
    try:
        await asyncio.sleep(args.duration)  # the storm's length
        # Faults heal themselves; a long one may outlast the storm.
        await asyncio.wait_for(asyncio.gather(*strikes), 60)
    finally:
        for task in strikes:
            task.cancel()
    # Measured while the simulations still write: the delivery gaps and reconnections of the storm.
    answers = await run.ask_fleets({"cmd": "gaps"})
    result.delivery_gap_s = longest_common_gap(answers, began)
    result.reconnects = sum(int(a.get("reconnects", 0)) for a in answers)
    closes: Counter[str] = Counter()
    for a in answers:
        closes.update(a.get("closes", {}))
    if closes:
        run.log(f"clients' sockets closed during the storm, by close code: {dict(closes)}")
    await run.heal_all()
    await run.tell_fleets({"cmd": "churn", "on": False})
    for sim in run.sims:
        sim.send({"cmd": "quiet"})
    quiets = [await sim.read(120) for sim in run.sims]
    stats: Counter[str] = Counter()
    for n, quiet in enumerate(quiets):
        # A simulation counts since it started: the storm's share is the difference.
        totals: dict[str, int] = quiet.get("stats", {})
        stats.update({k: v - run.sim_totals[n].get(k, 0) for k, v in totals.items()})
        run.sim_totals[n] = totals
        result.write_outage_s = max(result.write_outage_s, float(quiet.get("outage_s", 0.0)))
        result.max_flush_s = max(result.max_flush_s, float(quiet.get("max_flush_s", 0.0)))
    result.sim_stats = dict(stats)
    run.log("simulations quiet; waiting for the mirrors")

    t0 = time.monotonic()
    deadline = t0 + args.converge_timeout
    while True:
        store, divergences = await mirrors_vs_store(run)
        if all(d.total == 0 for d in divergences.values()):
            result.converge_s = time.monotonic() - t0
            break
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(POLL_S)  # poll interval; the deadline bounds the wait
    owned: dict[str, list[Any]] = {}
    failed_deletes: set[str] = set()
    dropped: set[str] = set()
    for quiet in quiets:
        owned.update(quiet.get("owned", {}))
        failed_deletes |= set(quiet.get("failed_deletes", []))
        dropped |= set(quiet.get("dropped", []))
    result.objects = len(store)
    result.clients = len(divergences)
    result.sim_lost = len(set(owned) - set(store))
    for oid, believed in sorted(owned.items()):
        stored = store.get(oid)
        if stored is not None and believed != [stored.key, stored.version, stored.incarnation, stored.state]:
            result.sim_wrong += 1
            if result.sim_wrong <= 5:
                run.log(f"  {oid}: a simulation believes {believed}, the store holds {stored}")
    orphans = set(store) - set(owned)
    result.sim_orphans = len(orphans)
    for oid in sorted(orphans)[:5]:
        why = "its delete failed" if oid in failed_deletes else "reload() reported it missing" if oid in dropped else "unknown"
        run.log(f"  orphan {oid} (stored, not owned by a simulation: {why}): {store[oid]}")
        result.orphans.append({"id": oid, "why": why, "store": [store[oid].key, store[oid].version, store[oid].incarnation]})
    # The store keeps what an earlier storm broke: this storm's row counts what is new.
    now_broken = await check_invariant(run)
    result.invariant = [v for v in now_broken if v not in run.violations]
    run.violations = set(now_broken)
    for line in result.invariant[:10]:
        run.log(f"  store invariant: {line}")
    result.crashes = run.crashes[crashes_before:]
    for name, d in sorted(divergences.items()):
        result.missing += d.missing
        result.extra += d.extra
        result.wrong += d.wrong
        if d.total:
            result.diverged_clients += 1
            for kind, oid, mirror, stored_obj in d.examples:
                result.examples.append({"client": name, "kind": kind, "id": oid, "mirror": mirror, "store": stored_obj})
    if result.diverged:
        counts = f"missing {result.missing}, extra {result.extra}, wrong {result.wrong}"
        run.log(f"storm {index} DIVERGED: {result.diverged_clients} clients, {counts}")
        for e in result.examples[:12]:
            run.log(f"  {e['client']} {e['kind']} {e['id']}: mirror {e['mirror']} store {e['store']}")
        await save_traces(run, index, divergences)
    else:
        run.log(f"storm {index} converged in {result.converge_s:.2f} s")
    result.resharded = sorted(set(run.resharded))
    result.refusals = run.gateway_refusals()
    for line in result.refusals[:10]:
        run.log(f"  gateway refused a key: {line}")
    result.events = list(run.events)
    return result


async def check_invariant(run: Run) -> list[str]:
    """The store invariant (``tests/store_invariant.py``), settled: the simulations have recovered and are quiet."""
    from tests.store_invariant import read_state, violations

    return violations(await read_state(await run.store_urls(), PREFIX), settled=True)


async def save_traces(run: Run, index: int, divergences: dict[str, Divergence]) -> None:
    """What each diverged client saw of its diverged objects, into the log folder (``trace-S-CLIENT.json``)."""
    for name, d in divergences.items():
        if not d.total:
            continue
        ids = [oid for _, oid, _, _ in d.examples]
        for fleet in run.fleets:
            if fleet is None or not name.startswith(fleet.child.name.replace("clients", "c") + "."):
                continue
            answer = await fleet.ask({"cmd": "trace", "client": name, "ids": ids})
            path = run.logdir / f"trace-{index}-{name}.json"
            path.write_text(json.dumps({"client": name, "ids": ids, "trace": answer.get("trace", [])}, indent=None))
            run.log(f"  trace of {name}: {path}")


def table(results: list[StormResult]) -> str:
    """One row per storm.

    ``writes out s``: the longest stretch of failed flushes of a simulation
    (first failing flush to the next that landed); ``slowest flush s``; ``no
    delivery s``: the longest time in which no client received an update
    while the simulations wrote; ``reconn``: clients' reconnections; ``inv``:
    store invariant violations; ``sim lost/orphans/wrong``: owned objects the
    store lacks, stored objects nobody owns, owned objects stored otherwise
    than believed.
    """
    head = (
        "storm",
        "seed",
        "faults",
        "objects",
        "clients",
        "missing",
        "extra",
        "wrong v",
        "converge s",
        "writes out s",
        "slowest flush s",
        "no delivery s",
        "reconn",
        "inv",
        "sim lost/orphans/wrong",
    )
    rows = [head]
    for r in results:
        faults = ", ".join(f"{k}x{n}" if n > 1 else k for k, n in Counter(r.faults).items())
        conv = f"{r.converge_s:.2f}" if r.converge_s is not None else "DIVERGED"
        counts = (str(r.objects), str(r.clients), str(r.missing), str(r.extra), str(r.wrong))
        outage = (f"{r.write_outage_s:.2f}", f"{r.max_flush_s:.2f}", f"{r.delivery_gap_s:.2f}", str(r.reconnects), str(len(r.invariant)))
        rows.append((str(r.index), str(r.seed), faults, *counts, conv, *outage, f"{r.sim_lost}/{r.sim_orphans}/{r.sim_wrong}"))
    widths = [max(len(row[c]) for row in rows) for c in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


async def orchestrate(args: argparse.Namespace) -> int:
    """The whole run; returns the exit code."""
    logdir = Path(tempfile.mkdtemp(prefix="synk-chaos-logs-"))
    run = Run(args, logdir)
    results: list[StormResult] = []
    failed: str | None = None
    started = time.monotonic()
    print(
        f"chaos: {args.storms} storm(s) of {args.duration:g} s, seed {args.seed}, {args.clients} clients in {args.client_procs} "
        f"process(es), {args.gateways} gateway(s), {args.sims} simulation(s), {'a 3+3 Redis Cluster' if args.cluster else 'one Redis'}, "
        f"faults {','.join(args.faults)}; logs in {logdir}",
        file=sys.stderr,
    )
    try:
        await run.start()
        for index in range(args.storms):
            result = await run_storm(run, args, index)
            results.append(result)
            if result.diverged and index + 1 < args.storms:
                run.log("replacing every client process, so that the next storm starts from fresh mirrors")
                await run.replace_fleets()
        for sim in run.sims:
            sim.send({"cmd": "stop"})
        for sim in run.sims:
            with contextlib.suppress(BenchError):
                await sim.read(30)
    except (BenchError, OSError, RuntimeError, ValueError, TimeoutError) as exc:
        failed = f"{type(exc).__name__}: {exc}"
        print(f"chaos: the harness failed: {failed}", file=sys.stderr)
    finally:
        await run.close()
    diverged = [r for r in results if r.diverged]
    broken = [r for r in results if r.broken]
    print(table(results))
    out = {
        "bench": "chaos",
        "seed": args.seed,
        "storms": len(results),
        "diverged": len(diverged),
        "converged": len(results) - len(diverged),
        "broken": len(broken),
        "clients": args.clients,
        "gateways": args.gateways,
        "sims": args.sims,
        "cluster": args.cluster,
        "faults": args.faults,
        "duration": args.duration,
        "max_converge_s": max((r.converge_s for r in results if r.converge_s is not None), default=None),
        "max_write_outage_s": round(max((r.write_outage_s for r in results), default=0.0), 2),
        "max_delivery_gap_s": round(max((r.delivery_gap_s for r in results), default=0.0), 2),
        "invariant_violations": sum(len(r.invariant) for r in results),
        "error": failed,
        "seconds": round(time.monotonic() - started, 1),
        "results": [r.summary() for r in results],
        "logs": str(logdir) if (diverged or broken or failed or args.keep_logs) else None,
    }
    print(json.dumps(out))
    if not (diverged or broken or failed or args.keep_logs):
        shutil.rmtree(logdir, ignore_errors=True)
    if failed:
        return 2
    return 1 if diverged or broken else 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (``--role`` is internal: the simulation child)."""
    ap = argparse.ArgumentParser(prog="python -m bench.chaos", description=(chaos.__doc__ or "").split("\n\n")[0])
    ap.add_argument("--storms", type=int, default=5, help="storms in the run (default 5)")
    ap.add_argument("--seed", type=int, default=1, help="replays the same faults, churn and simulation (timing aside)")
    ap.add_argument("--clients", type=int, default=30, help="Node clients (default 30)")
    ap.add_argument("--client-procs", dest="client_procs", type=int, default=3, help="Node processes the clients run in (default 3)")
    ap.add_argument("--gateways", type=int, default=2, help="gateway processes (default 2)")
    ap.add_argument("--duration", type=float, default=12.0, help="seconds of simulation and faults per storm (default 12)")
    ap.add_argument(
        "--faults",
        default=None,
        help=f"comma list of fault kinds (default: every kind that applies; {','.join(FAULTS)})",
    )
    ap.add_argument(
        "--faults-per-storm", dest="faults_per_storm", type=int, default=0, help="faults in each storm (default one per 5 s of storm)"
    )
    ap.add_argument("--cluster", action="store_true", help="run on a private Redis Cluster (3 primaries, 3 replicas) instead of one Redis")
    ap.add_argument("--sims", type=int, default=1, help="simulation processes writing the world (default 1)")
    ap.add_argument("--converge-timeout", dest="converge_timeout", type=float, default=25.0, help="seconds mirrors get to converge")
    ap.add_argument("--keep-logs", dest="keep_logs", action="store_true", help="keep the processes' logs even when all is well")
    ap.add_argument("--role", default="main", help=argparse.SUPPRESS)
    ap.add_argument("--redis", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    # Proxies cannot stand in front of a cluster, and one Redis has no primary to fail over.
    refused = SINGLE_ONLY if args.cluster else CLUSTER_ONLY
    given = args.faults if args.faults is not None else ",".join(k for k in FAULTS if k not in refused)
    kinds = [k.strip() for k in given.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in FAULTS]
    if unknown or not kinds:
        ap.error(f"unknown fault kind(s) {unknown}; choose from {','.join(FAULTS)}")
    wrong = [k for k in kinds if k in refused]
    if wrong:
        why = "need one Redis behind the gateways' proxies" if args.cluster else "need --cluster"
        ap.error(f"fault kind(s) {','.join(wrong)} {why}")
    args.faults = kinds
    if args.storms < 1 or args.gateways < 1 or args.client_procs < 1 or args.clients < args.client_procs or args.sims < 1:
        ap.error("--storms, --gateways, --sims and --client-procs must be at least 1, and --clients at least --client-procs")
    return args


async def main_async(args: argparse.Namespace) -> int:
    """``orchestrate`` with SIGTERM turned into a cancellation, so that cleanup runs."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    return await orchestrate(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: the orchestrator, or the simulation child with ``--role sim``."""
    args = parse_args(argv)
    if args.role == "sim":
        from bench.chaos import sim

        sim.main(args)
        return 0
    try:
        return asyncio.run(main_async(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("chaos: interrupted; every process it started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
