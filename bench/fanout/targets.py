"""Issue 14's fan-out targets, judged on rows measured side by side in one run.

- Target 2 (``--repeat N`` with a ``floor`` row): each synk row's server CPU
  per delivery at most ``VS_FLOOR`` (1.3) times the floor's, at the same
  rate. One window moves by 20% or more on a shared machine, so the verdict
  is on the median of the rounds' ratios (each round runs every row once,
  one after the other), with the range printed beside it.
- Target 3 (a ``synk-asgi`` row and its ``synk`` row): the ASGI transport's
  CPU per delivery and p99 at most ``ASGI_VS_SERVE`` (1.3) times
  ``synk serve``'s, on the same variant; medians of the rounds as well.
- Target 7 (a ``colyseus`` row, :mod:`bench.fanout.anchor`): each synk
  row's server CPU per client update at most ``VS_COLYSEUS`` (0.5) times
  Colyseus's with ``StateView`` at the same rate; medians of the rounds. A
  floor row's own ratio is printed beside it: what any server that writes
  each client's messages from Python, as the floor does, can reach.
  Bytes per client update against Colyseus's (target 8) are printed too,
  without a verdict: synk's are judged with permessage-deflate, which the
  load generator does not speak (``python -m bench.deflate``).
- Target 1 (``--at-floor F``, in :mod:`bench.fanout.sweep`): at ``F`` (0.8)
  of the floor's saturation throughput, p99 at most ``AT_FLOOR_P99_MS``
  (100 ms) and no event-loop stall over 50 ms.

Nothing here asserts: the benchmark prints MET / MISSED and the figures.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from bench.fanout.rig import Row, SystemResult

#: target 2: synk's CPU per delivery against the floor's
VS_FLOOR = 1.3
#: target 3: the ASGI row's CPU per delivery and p99 against ``synk serve``'s
ASGI_VS_SERVE = 1.3
#: target 7: synk's CPU per client update against Colyseus's with StateView
VS_COLYSEUS = 0.5
#: target 1: the share of the floor's saturation throughput, and the p99 bound there
AT_FLOOR = 0.8
AT_FLOOR_P99_MS = 100.0


def floor_of(row: Row) -> str:
    """The floor row a synk row is held against: the one with the same frames (batch or not)."""
    return "floor batch" if row.variant.batch else "floor"


def serve_of(row: Row) -> str:
    """The ``synk serve`` row an ASGI row is held against: the same variant."""
    return "synk" + row.name.removeprefix("synk-asgi")


def median_round(results: Sequence[SystemResult]) -> SystemResult:
    """The round whose CPU per delivery is the median (the lower one of an even count): a real run's figures."""
    ordered = sorted(results, key=lambda r: r.cpu_s_per_million)
    return ordered[(len(ordered) - 1) // 2]


def _spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


def _says(spread: dict[str, float], bound: float) -> str:
    met = "MET" if spread["median"] <= bound else "MISSED"
    return f"median {spread['median']:.2f} (range {spread['min']:.2f}-{spread['max']:.2f}): {met}"


def judge(rows: Sequence[Row], rounds: Sequence[dict[str, SystemResult]]) -> tuple[list[str], dict[str, Any]]:
    """Targets 2, 3 and 7 over ``rounds`` (each maps a row's name to its result): lines to print, and the JSON part."""
    lines: list[str] = []
    out: dict[str, Any] = {}
    names = {row.name for row in rows}
    for row in rows:
        if row.system == "synk" and floor_of(row) in names:
            floor = floor_of(row)
            spread = _spread([r[row.name].cpu_s_per_million / max(1e-9, r[floor].cpu_s_per_million) for r in rounds])
            spread["met"] = spread["median"] <= VS_FLOOR
            out.setdefault("cpu_vs_floor", {})[row.name] = spread
            lines.append(f"target 2, {row.name}: CPU per delivery / {floor}'s <= {VS_FLOOR:g}: {_says(spread, VS_FLOOR)}")
        if row.system == "synk-asgi" and serve_of(row) in names:
            serve = serve_of(row)
            cpu = _spread([r[row.name].cpu_s_per_million / max(1e-9, r[serve].cpu_s_per_million) for r in rounds])
            p99 = _spread([r[row.name].percentile(0.99) / max(0.1, r[serve].percentile(0.99)) for r in rounds])
            cpu["met"] = cpu["median"] <= ASGI_VS_SERVE
            p99["met"] = p99["median"] <= ASGI_VS_SERVE
            out.setdefault("asgi_vs_serve", {})[row.name] = {"cpu": cpu, "p99": p99}
            lines.append(f"target 3, {row.name}: CPU per delivery / {serve}'s <= {ASGI_VS_SERVE:g}: {_says(cpu, ASGI_VS_SERVE)}")
            lines.append(f"target 3, {row.name}: p99 / {serve}'s <= {ASGI_VS_SERVE:g}: {_says(p99, ASGI_VS_SERVE)}")
        if row.system in ("synk", "floor") and "colyseus" in names:
            lines += _vs_colyseus(row, rounds, out)
    return lines, out


def _vs_colyseus(row: Row, rounds: Sequence[dict[str, SystemResult]], out: dict[str, Any]) -> list[str]:
    """Target 7 for a synk row (for a floor row, the same ratio as its bound), and the bytes of target 8."""
    cpu = _spread([r[row.name].cpu_s_per_million / max(1e-9, r["colyseus"].cpu_s_per_million) for r in rounds])
    size = _spread([_bytes_per_update(r[row.name]) / max(1e-9, _bytes_per_update(r["colyseus"])) for r in rounds])
    cpu["met"] = cpu["median"] <= VS_COLYSEUS
    out.setdefault("vs_colyseus", {})[row.name] = {"cpu": cpu, "bytes": size}
    span = f"median {cpu['median']:.2f} (range {cpu['min']:.2f}-{cpu['max']:.2f})"
    if row.system == "floor":
        # The floor only frames and writes each client's messages: what Python servers built so cost at least.
        return [f"bound of target 7, {row.name}: CPU per client update / colyseus's: {span}"]
    return [
        f"target 7, {row.name}: CPU per client update / colyseus's <= {VS_COLYSEUS:g}: {_says(cpu, VS_COLYSEUS)}",
        f"target 8 (informational, no deflate), {row.name}: bytes per client update / colyseus's: median {size['median']:.2f}"
        f" (range {size['min']:.2f}-{size['max']:.2f})",
    ]


def _bytes_per_update(r: SystemResult) -> float:
    return r.bytes / r.delivered if r.delivered else float("inf")


def at_floor_lines(results: Sequence[SystemResult], saturations: dict[str, float]) -> tuple[list[str], dict[str, Any]]:
    """Target 1 for each row measured at a share of its floor's saturation (``saturations``: row name to deliveries/s)."""
    lines: list[str] = []
    out: dict[str, Any] = {}
    for r in results:
        saturation = saturations[r.name]
        p99 = r.percentile(0.99)
        stalls = r.pauses.get("lag_over_50ms") if r.pauses else None
        # Falling behind (as a sweep's step) is no pass, whatever the p99 of what did arrive.
        kept_up = r.kept_up
        met = p99 <= AT_FLOOR_P99_MS and stalls == 0 and kept_up
        out[r.name] = {"p99_ms": round(p99, 2), "loop_stalls_over_50ms": stalls, "kept_up": kept_up, "met": met}
        lines.append(
            f"target 1, {r.name}: at {r.delivered_per_s:,.0f} deliveries/s ({r.delivered_per_s / max(1.0, saturation):.0%} of the "
            f"floor's {saturation:,.0f}), p99 {p99:.1f} ms <= {AT_FLOOR_P99_MS:g}, loop stalls over 50 ms {stalls} = 0: "
            + ("MET" if met else "MISSED")
        )
    return lines, out
