"""The ``colyseus`` row: Colyseus 0.16 with ``StateView`` on the fan-out's workload, side by side with synk.

Issue 14's targets 7 and 8 hold synk against Colyseus *in the same run*:
``python -m bench.fanout --only synk,floor,colyseus`` runs this row
between the others (round after round with ``--repeat``). It is
``python -m bench.colyseus --only view`` at ``--rate`` (the same clients,
keys per client, objects per key and simulation rate; patches at
Colyseus's default 20 Hz), its figures put in a :class:`SystemResult` so
the table and the verdicts read it as any row. How the workloads differ (the
simulation runs inside Colyseus's server, whose CPU therefore includes
it; a change waits for the next 20 Hz patch): see ``bench/colyseus``.
The table's redis and sim columns are 0 for it: it has neither process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.colyseus.__main__ import BenchError as ColyseusError
from bench.colyseus.__main__ import ensure_node_modules, parse_args, run_mode
from bench.fanout.common import BenchError
from bench.fanout.rig import SystemResult

if TYPE_CHECKING:
    import argparse
    from pathlib import Path

__all__ = ["run_colyseus"]


async def run_colyseus(name: str, args: argparse.Namespace, logdir: Path) -> SystemResult:
    """One window of the Colyseus ``StateView`` row at ``args.rate`` (bench.fanout's options)."""
    # bench.colyseus's own options, so its defaults (the client, how many join at once) and checks apply.
    options = parse_args(
        [
            *("--clients", str(args.clients), "--keys", str(args.keys)),
            *("--objects-per-key", str(args.objects_per_key), "--keys-per-client", str(args.keys_per_client)),
            *("--tick-hz", str(args.tick_hz), "--rate", str(args.rate)),
            *("--warmup", str(args.warmup), "--seconds", str(args.seconds)),
            *("--client-procs", str(args.client_procs), "--connect-timeout", str(args.connect_timeout)),
        ]
    )
    try:
        ensure_node_modules()
        (row,) = await run_mode("view", options, logdir)
    except ColyseusError as exc:
        raise BenchError(f"the colyseus row failed: {exc}") from None
    return SystemResult(
        name,
        delivered=row.delivered,
        expected=row.expected,
        seconds=row.seconds,
        server_cpu_s=row.server_cpu_s,
        server_kernel_cpu_s=row.server_kernel_cpu_s,
        clients_cpu_s=row.clients_cpu_s,
        cpu_pct={"redis": 0.0, "sim": 0.0, **row.cpu_pct},
        machine_busy_pct=row.machine_busy_pct,
        hist=dict(row.hist),  # 0.1 ms bins, as the fan-out's (bench.fanout.common.BIN_S)
        subscribe_s=row.join_s,
        sim={"in_window": row.sim.get("in_window", 0), "late_ticks": row.sim.get("late_ticks_in_window", 0)},
        client_errors=list(row.client_errors),
        closed=row.closed,
        frames=row.messages,
        bytes=row.bytes,
        clients=args.clients,
        rate=args.rate,
        per_change=args.clients * args.keys_per_client / args.keys,
    )
