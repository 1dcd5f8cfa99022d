"""A latency histogram with fixed buckets, rendered in Prometheus's text format (pure).

The format is Prometheus's text exposition format, version 0.0.4
(https://prometheus.io/docs/instrumenting/exposition_formats/).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

__all__ = ["BUCKETS", "Histogram"]

#: Upper bounds (seconds) of the latency buckets: 0.5 ms to 10 s.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Histogram:
    """Observations counted in fixed buckets, with their sum (a Prometheus histogram)."""

    name: str
    help: str
    bounds: tuple[float, ...] = BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound

    def observe(self, value: float) -> None:
        """Count one observation."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(le label, observations at or below it), the last being ``+Inf``."""
        out, running = [], 0
        for bound, n in zip((*(f"{b:g}" for b in self.bounds), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out

    def render(self) -> list[str]:
        """The histogram's lines in the text format."""
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        lines += [f'{self.name}_bucket{{le="{le}"}} {n}' for le, n in self.cumulative()]
        lines += [f"{self.name}_sum {self.total:.6f}", f"{self.name}_count {self.count}"]
        return lines
