"""Comparing a client's mirror with the store (pure: no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.chaos.redis_ctl import StoredObject

__all__ = ["Divergence", "compare"]

#: Examples kept per client and kind, for the report.
EXAMPLES = 3


@dataclass
class Divergence:
    """How one client's mirror differs from the store, over the keys it follows.

    ``missing``: stored in a followed key, not mirrored. ``extra``: mirrored
    but not stored in a followed key (deleted, moved away, or mirrored in a
    key the client no longer follows). ``wrong``: mirrored with another key,
    version, incarnation or state than stored. ``examples`` shows a few of
    each as ``(kind, id, mirror, store)``.
    """

    missing: int = 0
    extra: int = 0
    wrong: int = 0
    examples: list[tuple[str, str, Any, Any]] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Objects that differ."""
        return self.missing + self.extra + self.wrong

    def _example(self, kind: str, oid: str, mirror: Any, store: Any) -> None:
        if sum(1 for e in self.examples if e[0] == kind) < EXAMPLES:
            self.examples.append((kind, oid, mirror, store))


def compare(store: dict[str, StoredObject], report: dict[str, Any]) -> Divergence:
    """Compare a client's report (``clients.mjs``: ``keys``, ``size``, ``objects``) with the store.

    Only the keys the client follows count: an object stored elsewhere is
    none of its business. Objects the mirror holds outside those keys (its
    ``size`` beyond the listed ``objects``) count as extra.
    """
    keys = set(report["keys"])
    mirror: dict[str, list[Any]] = report["objects"]
    out = Divergence()
    for oid, obj in store.items():
        if obj.key not in keys:
            continue
        seen = mirror.get(oid)
        if seen is None:
            out.missing += 1
            out._example("missing", oid, None, _show(obj))
            continue
        key, version, incarnation, state = seen
        if (key, version, incarnation, state) != (obj.key, obj.version, obj.incarnation, obj.state):
            out.wrong += 1
            out._example("wrong", oid, seen, _show(obj))
    for oid, seen in mirror.items():
        stored = store.get(oid)
        if stored is None or stored.key not in keys:
            out.extra += 1
            out._example("extra", oid, seen, _show(stored) if stored else None)
    unlisted = int(report.get("size", len(mirror))) - len(mirror)
    if unlisted > 0:
        out.extra += unlisted
        out._example("extra", f"({unlisted} outside the followed keys)", None, None)
    return out


def _show(obj: StoredObject) -> list[Any]:
    return [obj.key, obj.version, obj.incarnation, obj.state]
