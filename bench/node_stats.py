"""What each Redis node did during a benchmark's window: CPU, commands, bytes in and out.

Read from ``INFO cpu`` and ``INFO stats`` of every primary before and after
the window. On a cluster the per-node shares show whether the work spread
over the primaries or piled up on one of them (a serialisation point).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.crc import key_slot

__all__ = ["NodeDelta", "NodeSample", "deltas", "key_share", "sample", "share_line"]


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


def share_line(nodes: list[NodeDelta], keys: list[int] | None = None) -> str:
    """Each node's share of the commands, bytes received, bytes sent and CPU, as one line.

    ``keys``, when given, is each node's count of subscription keys (``key_share``): the share to expect.
    """

    def pct(values: list[float]) -> str:
        total = sum(values)
        return "/".join(f"{100 * v / total:.0f}" if total else "-" for v in values)

    expect = f"subscription keys {pct([float(k) for k in keys])}, " if keys else ""
    return (
        f"per-node share % ({len(nodes)} nodes): {expect}commands {pct([float(n.commands) for n in nodes])}, "
        f"bytes in {pct([float(n.net_in) for n in nodes])}, bytes out {pct([float(n.net_out) for n in nodes])}, "
        f"CPU {pct([n.cpu_s for n in nodes])}"
    )


def key_share(primaries: list[str], keys: list[str]) -> list[int]:
    """How many of the subscription ``keys`` each primary serves (their hash slots, from CLUSTER SLOTS).

    synk's keys of one subscription key share its hash tag ``{key}``: the
    commands of a node follow its share of the keys, not an even third.
    """
    with redis.Redis.from_url(primaries[0], socket_timeout=5) as client:
        slots: list[Any] = client.execute_command("CLUSTER", "SLOTS")
    owner: dict[tuple[str, int], int] = {}
    for i, url in enumerate(primaries):
        parts = urlsplit(url)
        owner[(parts.hostname or "127.0.0.1", parts.port or 6379)] = i
    counts = [0] * len(primaries)
    for key in keys:
        slot = key_slot(key.encode())
        for lo, hi, node, *_ in slots:
            host = node[0].decode() if isinstance(node[0], bytes) else str(node[0])
            if lo <= slot <= hi and (host, int(node[1])) in owner:
                counts[owner[(host, int(node[1]))]] += 1
                break
    return counts
