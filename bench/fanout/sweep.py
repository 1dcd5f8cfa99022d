"""``--sweep``: each row's rate stepped up until its p99 passes 100 ms; the highest rates within 50 and 100 ms, and a plot."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.fanout.common import (
    BenchError,
    raise_nofile,
)
from bench.fanout.rig import SWEEP_LIMITS_MS, SWEEP_MIN_DELIVERY, Rig, SystemResult, banner, rows_of, table, workload
from bench.fanout.targets import at_floor_lines, floor_of
from bench.redis_process import RedisProcess

if TYPE_CHECKING:
    from collections.abc import Sequence

#: ``--sweep``: after a failed step, a lower rate waits until no client has received anything
#: for this long (the server's backlog is out), for at most the timeout
SWEEP_QUIET_S = 0.5
SWEEP_DRAIN_TIMEOUT_S = 60.0


def sweep_line(step: SystemResult) -> str:
    """One step of a sweep, as its progress line says it."""
    offered = step.rate * step.per_change * step.seconds
    ratio = step.delivered / max(step.expected, offered) if step.expected or offered else 0.0
    return (
        f"{step.rate:g} changes/s: {step.delivered_per_s:,.0f} deliveries/s ({ratio:.0%} of expected or offered), "
        f"p99 {step.percentile(0.99):.1f} ms, {step.cpu_s_per_million:.2f} server CPU-s/M, late ticks {step.sim.get('late_ticks', 0)}"
        + (f"; busy machine: {other:.0f}% of a core outside the bench" if (other := step.cpu_pct.get("other", 0.0)) > 50 else "")
    )


async def sweep_step(rig: Rig, args: argparse.Namespace, steps: list[SystemResult], rate: float) -> None:
    """One step of a sweep at ``rate``, appended to ``steps``; after a failed step, a lower rate waits for the backlog."""
    if steps and not steps[-1].meets(SWEEP_LIMITS_MS[-1]) and rate < steps[-1].rate:
        took = await rig.drain(SWEEP_QUIET_S, SWEEP_DRAIN_TIMEOUT_S)
        print(f"  {rig.row.name}: drained for {took:.1f} s", file=sys.stderr, flush=True)
    result = await rig.measure(rate, args.sweep_warmup, args.sweep_seconds)
    steps.append(result)
    print(f"  {rig.row.name}: {sweep_line(result)}", file=sys.stderr, flush=True)


async def sweep_row(rig: Rig, args: argparse.Namespace) -> list[SystemResult]:
    """Step one row's rate up from ``--sweep-from``, doubling while p99 stays within 100 ms; then bisect each limit.

    A step fails a limit when its p99 is above it or it delivered under
    ``SWEEP_MIN_DELIVERY`` of what was expected or offered (it fell behind: ``SystemResult.kept_up``).
    Doubling stops after two steps in a row fail 100 ms, one falls behind, or past ``--sweep-to``;
    then, for 100 ms and 50 ms in turn, up to ``--sweep-refine`` steps halve
    the gap between the highest rate that met the limit and the lowest that
    did not. Before a lower rate after a failed step, the simulation pauses
    until the clients receive nothing more (the server's backlog is out),
    so that the step does not start behind.
    """
    steps: list[SystemResult] = []

    async def step(rate: float) -> None:
        await sweep_step(rig, args, steps, rate)

    rate = args.sweep_from
    while True:
        await step(rate)
        # One failed step may be the machine's other work (a shared machine's stalls): two in a row end the doubling.
        last = steps[-1]
        two_failed = len(steps) >= 2 and not any(s.meets(SWEEP_LIMITS_MS[-1]) for s in steps[-2:])
        # Falling behind (deliveries short of those expected or offered) is no accident of the machine: saturated.
        behind = not last.kept_up
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


def saturation(steps: Sequence[SystemResult]) -> SystemResult | None:
    """The step that delivered the most a second while keeping up (``SystemResult.kept_up``), if any did."""
    kept = [s for s in steps if s.kept_up]
    return max(kept, key=lambda s: s.delivered_per_s, default=None)


async def orchestrate_at_floor(args: argparse.Namespace) -> int:
    """``--at-floor F`` (issue 14, target 1): sweep the floor to its saturation, then run each other row at F of it.

    The floor's saturation throughput is the most it delivered a second in a
    step of its sweep that kept up (made nearly every delivery the rate
    offered: ``SystemResult.kept_up``), bisected further between that step
    and the slowest faster one that fell behind (``--sweep-refine`` steps).
    Each other row then runs one
    ``--seconds`` window at ``F`` times that, in deliveries a second, against
    the floor with its own kind of frames; the verdict is p99 <= 100 ms and
    no event-loop stall over 50 ms (the gateway's /metrics lag probes).
    """
    raise_nofile()
    cores = os.cpu_count() or 1
    rows = rows_of(args)
    redis = RedisProcess()
    logdir = Path(tempfile.mkdtemp(prefix="synk-fanout-logs-"))
    banner(args, f"fanout --at-floor {args.at_floor:g}")
    per_change = args.clients * args.keys_per_client / args.keys  # deliveries one change makes (every key has as many clients)
    sweeps: dict[str, list[SystemResult]] = {}
    saturated: dict[str, SystemResult] = {}
    results: list[SystemResult] = []
    #: each measured row's floor saturation, deliveries a second
    against: dict[str, float] = {}
    try:
        await asyncio.to_thread(redis.start)
        args.redis = redis.url
        pids = [redis.proc.pid] if redis.proc else []
        for row in (r for r in rows if r.system == "floor"):
            print(f"sweeping {row.name} to its saturation ...", file=sys.stderr, flush=True)
            async with Rig(row, args, pids, logdir, rate=args.sweep_from) as rig:
                steps = sweeps[row.name] = await sweep_row(rig, args)
                # The sweep bisects on p99; its saturation lies between the fastest
                # step that kept up and the slowest faster one that did not.
                for _ in range(args.sweep_refine):
                    good = saturation(steps)
                    bad = min((s.rate for s in steps if not s.kept_up and (good is None or s.rate > good.rate)), default=None)
                    if good is None or bad is None or bad / good.rate < 1.1:
                        break
                    await sweep_step(rig, args, steps, (good.rate + bad) / 2)
            top = saturation(sweeps[row.name])
            if top is None:
                raise BenchError(f"{row.name} kept up at no rate from {args.sweep_from:g} changes/s: start lower (--sweep-from)")
            saturated[row.name] = top
            print(f"  {row.name}: saturation {top.delivered_per_s:,.0f} deliveries/s", file=sys.stderr, flush=True)
        for row in (r for r in rows if r.system != "floor"):
            top = saturated[floor_of(row)]
            rate = args.at_floor * top.delivered_per_s / per_change
            against[row.name] = top.delivered_per_s
            print(f"running {row.name} at {rate:g} changes/s ({args.at_floor:g} of {floor_of(row)}'s saturation) ...", file=sys.stderr)
            async with Rig(row, args, pids, logdir, rate=rate) as rig:
                results.append(await rig.measure(rate, args.warmup, args.seconds, profile=True))
    except BenchError as exc:
        print(f"fanout failed: {exc}\n(logs in {logdir})", file=sys.stderr)
        return 1
    finally:
        await asyncio.to_thread(redis.close)
    for name, top in saturated.items():
        # Saturated means a faster step fell behind or passed 100 ms; else the sweep only stopped at --sweep-to.
        beyond = any(s.rate > top.rate for s in sweeps[name])
        print(
            f"{name}: saturation {top.delivered_per_s:,.0f} deliveries/s (p99 {top.percentile(0.99):.1f} ms) at {top.rate:g} changes/s"
            + ("" if beyond else " (it kept up at every rate swept: not saturated, raise --sweep-to)")
        )
    print(table(results))
    lines, judged = at_floor_lines(results, against)
    for line in lines:
        print(line)
    out: dict[str, Any] = {"bench": "fanout-at-floor", **workload(args, cores), "at_floor": args.at_floor}
    del out["rate"]
    out["floor"] = {
        name: {
            "saturation_per_s": round(top.delivered_per_s),
            "rate": top.rate,
            "p99_ms": round(top.percentile(0.99), 2),
            "saturated": any(s.rate > top.rate for s in sweeps[name]),
            "steps": [
                {"rate": s.rate, "delivered_per_s": round(s.delivered_per_s), "p99_ms": round(s.percentile(0.99), 2)} for s in sweeps[name]
            ],
        }
        for name, top in saturated.items()
    }
    out["rows"] = {r.name: r.summary() for r in results}
    out["target_1"] = judged
    print(json.dumps(out))
    shutil.rmtree(logdir, ignore_errors=True)
    return 0
