"""The store invariant, checked against what a Redis really holds.

After any fault, every object is in at most one key and each id claim
belongs to an object that exists or to a mark that completes or undoes it;
once the writers have recovered (``settled``), every claim has its live
object, no write is left half-way, and every object a world owns is stored
at the world's version.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import synk
from synk.core.batch import DELETED, MOVED, PENDING
from synk.store.base import Stored
from synk.store.redis import RedisStore

__all__ = ["StoreState", "read_state", "violations"]


@dataclass
class StoreState:
    """Everything under a prefix: per key its stored values, per id its claim."""

    keys: dict[str, dict[str, Stored]] = field(default_factory=dict)
    claims: dict[str, str] = field(default_factory=dict)

    def live(self, oid: str) -> list[tuple[str, Stored]]:
        """Where ``oid`` is stored as an object (not a mark)."""
        return [(key, s[oid]) for key, s in self.keys.items() if oid in s and s[oid].live]


async def read_state(url: str | list[str], prefix: str) -> StoreState:
    """Read every key and claim under ``prefix`` (SCAN, fine for a test's few keys);
    on a cluster, give the URL of each primary."""
    state = StoreState()
    for one in [url] if isinstance(url, str) else url:
        await _read_into(state, one, prefix)
    return state


async def _read_into(state: StoreState, url: str, prefix: str) -> None:
    store = RedisStore(url, prefix=prefix)
    try:
        r = store.redis
        async for name in r.scan_iter(match=f"{prefix}{{*}}:o", count=1000):
            key = name.decode()[len(prefix) + 1 : -3]
            values: dict[bytes, bytes] = await r.hgetall(name)  # type: ignore[assignment]
            state.keys[key] = {oid.decode(): Stored.parse(key, oid.decode(), v) for oid, v in values.items()}
        async for name in r.scan_iter(match=f"{prefix}id:{{*}}", count=1000):
            token: bytes | None = await r.get(name)  # type: ignore[assignment]
            if token is not None:
                state.claims[name.decode()[len(prefix) + 4 : -1]] = token.decode()
    finally:
        await store.close()


def violations(state: StoreState, *, settled: bool, worlds: tuple[synk.World, ...] = ()) -> list[str]:
    """What breaks the invariant; empty when it holds."""
    out: list[str] = []
    ids = set(state.claims)
    for values in state.keys.values():
        ids |= set(values)
    for oid in sorted(ids):
        live = state.live(oid)
        claim = state.claims.get(oid)
        if len(live) > 1:
            out.append(f"{oid}: live in {len(live)} keys {[k for k, _ in live]}")
        for key, s in live:
            if s.token != claim:
                out.append(f"{oid}: live in {key!r} as {s.token}, but its id is claimed by {claim}")
        marks = [(key, v[oid]) for key, v in state.keys.items() if oid in v and not v[oid].live]
        if claim is not None and not live and (settled or not any(m.token == claim for _, m in marks)):
            out.append(f"{oid}: claimed by {claim}, but stored nowhere (marks: {[(k, m.mark) for k, m in marks]})")
        for key, m in marks:
            if m.mark == MOVED and m.token == claim and not any(k == m.moved_to and s.token == m.token for k, s in live):
                if settled:
                    out.append(f"{oid}: a move from {key!r} to {m.moved_to!r} left half-way")
            elif m.mark == PENDING and settled and m.token == claim:
                out.append(f"{oid}: a create in {key!r} left pending")
            elif m.mark == DELETED and settled and m.token == claim:
                out.append(f"{oid}: deleted from {key!r}, but its id is still claimed")
    if settled:
        for world in worlds:
            for obj in world._owned.values():
                where = state.live(obj.id)
                if obj._synk_skey is None:
                    continue
                if not where:
                    out.append(f"{obj.id}: owned at v{obj.version} in {obj._synk_skey!r}, but not stored")
                    continue
                key, s = where[0]
                if (key, s.token, s.version) != (obj._synk_skey, obj._synk_token, obj.version):
                    owned = f"{obj._synk_skey!r} {obj._synk_token}:{obj.version}"
                    out.append(f"{obj.id}: owned as {owned}, stored as {key!r} {s.token}:{s.version}")
    return out
