"""What each Redis node did during a benchmark's window: CPU, commands, bytes in and out.

Read from ``INFO cpu`` and ``INFO stats`` of every primary before and after
the window. On a cluster the per-node shares show whether the work spread
over the primaries or piled up on one of them (a serialisation point).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

__all__ = ["NodeDelta", "NodeSample", "deltas", "sample", "share_line"]


@dataclass(frozen=True)
class NodeSample:
    """One node's counters at one moment."""

    url: str
    cpu_s: float
    commands: int
    net_in: int
    net_out: int


@dataclass(frozen=True)
class NodeDelta:
    """What one node did between two samples."""

    url: str
    cpu_s: float
    commands: int
    net_in: int
    net_out: int

    def as_json(self) -> dict[str, Any]:
        """For the JSON line."""
        return {
            "url": self.url,
            "cpu_s": round(self.cpu_s, 3),
            "commands": self.commands,
            "bytes_in": self.net_in,
            "bytes_out": self.net_out,
        }


def _main_thread_cpu(info: dict[str, Any]) -> float:
    # Redis 7 reports the main thread apart from its I/O and background threads:
    # the main thread is the one that runs commands one at a time.
    if "used_cpu_user_main_thread" in info:
        return float(info["used_cpu_user_main_thread"]) + float(info["used_cpu_sys_main_thread"])
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def sample(urls: list[str]) -> list[NodeSample]:
    """The counters of every node in ``urls`` now (one short connection each)."""
    out = []
    for url in urls:
        with redis.Redis.from_url(url, socket_timeout=5) as client:
            cpu: dict[str, Any] = client.info("cpu")
            stats: dict[str, Any] = client.info("stats")
        out.append(
            NodeSample(
                url,
                _main_thread_cpu(cpu),
                int(stats["total_commands_processed"]),
                int(stats["total_net_input_bytes"]),
                int(stats["total_net_output_bytes"]),
            )
        )
    return out


def deltas(before: list[NodeSample], after: list[NodeSample]) -> list[NodeDelta]:
    """Per node, ``after`` minus ``before`` (the same nodes in the same order)."""
    return [
        NodeDelta(a.url, a.cpu_s - b.cpu_s, a.commands - b.commands, a.net_in - b.net_in, a.net_out - b.net_out)
        for b, a in zip(before, after, strict=True)
    ]


def share_line(nodes: list[NodeDelta]) -> str:
    """Each node's share of the commands, bytes received, bytes sent and CPU, as one line."""

    def pct(values: list[float]) -> str:
        total = sum(values)
        return "/".join(f"{100 * v / total:.0f}" if total else "-" for v in values)

    return (
        f"per-node share % ({len(nodes)} nodes): commands {pct([float(n.commands) for n in nodes])}, "
        f"bytes in {pct([float(n.net_in) for n in nodes])}, bytes out {pct([float(n.net_out) for n in nodes])}, "
        f"CPU {pct([n.cpu_s for n in nodes])}"
    )
