"""Reading a world back from its store, and finishing what its writes left half-way.

``World.load()`` takes objects over from the store, ``World.reload()``
re-reads the world's own after a failed flush, and ``World.recreate()``
writes again what a store lost. A flush that stopped between its two round
trips left marks (``synk.core.batch``); these complete or undo each such
write, so that the store invariant holds again: every object live in exactly
one key, every id claim held by an object that exists (docs/faults.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

from synk.core.batch import DELETED, MOVED, PENDING, Batch, Op
from synk.core.model import Object
from synk.core.names import check_key
from synk.errors import ConfigError, ValidationError, WriteError
from synk.errors import ConnectionError as SynkConnectionError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from synk.store.base import Store, Stored

__all__ = ["Recovery", "ReloadReport"]

#: Keys followed along an object's move marks: each failed flush between two
#: reloads adds at most one; marks beyond are not swept (nobody flushes 16
#: times into a failing store without a reload in between).
_TRAIL_HOPS = 16


@dataclass(frozen=True)
class ReloadReport:
    """What ``reload()`` found: objects gone from the store (no longer owned)."""

    missing: list[Object] = field(default_factory=list)
    reloaded: int = 0


class Recovery:
    """The reading half of ``synk.World`` (a mixin: the state is the world's)."""

    store: Store
    types: dict[str, type[Object]]
    _owned: dict[str, Object]
    _created: dict[str, Object]
    _dirty: dict[str, Object]
    _deleted: dict[str, Object]
    _moved_from: dict[str, str]
    _unsure: dict[str, tuple[str, Op]]
    _sweeps: dict[str, list[Op]]
    _unreported: dict[int, WriteError]

    if TYPE_CHECKING:  # World's, used here: declared for the type checker only

        async def drain(self) -> None: ...

        def create(self, obj: Object) -> Object: ...

    def _restore(self, key: str, stored: Stored) -> Object:
        try:
            msg = orjson.loads(stored.record)
            type_key, state = msg["t"], msg["state"]
            if not isinstance(state, dict):
                raise TypeError(f"its state is a {type(state).__name__}")
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(f"object {stored.id!r} in key {key!r} has a record synk cannot read ({exc}); is the prefix shared?") from None
        cls = self.types.get(type_key)
        if cls is None:
            raise ConfigError(
                f"object {stored.id!r} in key {key!r} has type {type_key!r}, which is not registered; pass its class in types="
            )
        return cls._synk_restore(stored.id, state, stored.version, stored.token, key)

    async def load(self, keys: Iterable[str]) -> list[Object]:
        """The objects now stored in ``keys``, owned by this world from now on.

        An object this world already owns is returned as it is, unless the
        store holds another incarnation of its id (a create of this world
        that failed, say): then the stored one is returned, and owned
        instead. Writes found half-way in these keys (their writer stopped
        between the two round trips of a flush) are completed or undone
        first, so that what is returned is whole.
        """
        out: list[Object] = []
        wanted = list(dict.fromkeys(check_key(k) for k in keys))
        found = {key: await self.store.snapshot(key, marks=True) for key in wanted}
        settled = False
        for key, values in found.items():
            # Marks of this world's own finished writes wait for its next flush's sweep.
            swept = {(op[2], op[3], op[4]) for op in self._sweeps.get(key, ())}
            marks = [s for s in values if not s.live and (s.id, s.token, s.version) not in swept]
            if marks:
                await self._settle(key, marks)
                settled = True
        if settled:  # a move completed may have put objects in keys read before
            found = {key: await self.store.snapshot(key) for key in wanted}
        for key, stored_objects in found.items():
            for stored in stored_objects:
                if not stored.live:
                    continue
                obj = self._owned.get(stored.id)
                if obj is None or obj._synk_token != stored.token:
                    if obj is not None:
                        self._forget(obj)
                    obj = self._restore(key, stored)
                    obj._synk_world = self
                    self._owned[obj.id] = obj
                out.append(obj)
        return out

    def _forget(self, obj: Object) -> None:
        """Stop owning ``obj``, dropping whatever it had pending."""
        for table in (self._owned, self._created, self._dirty, self._deleted):
            if table.get(obj.id) is obj:
                del table[obj.id]
        obj._synk_world = None

    async def _settle(self, key: str, marks: list[Stored]) -> None:
        """Complete or undo the half-way writes whose marks ``key`` holds."""
        claims = await self.store.claims([m.id for m in marks])
        repair = Batch()
        for m in marks:
            held = claims.get(m.id) == m.token
            t, state = self._record(key, m) if m.record else ("", b"")
            if m.mark == PENDING and held:  # a create whose id was claimed: make it live
                self._repair_create(repair, key, ("c", t, m.id, m.token, 1, state, b"", ""))
            elif m.mark == MOVED and held:
                there = (await self.store.fetch(m.moved_to, [m.id])).get(m.id)
                # This incarnation reached the new key (and may have moved on, or been
                # deleted, since): the mark is only garbage.
                if there is not None and there.token == m.token and there.version >= m.version:
                    repair.sweeps.setdefault(key, []).append(("x", t, m.id, m.token, m.version, b"", b"", MOVED))
                else:  # taken out, never put: put it where it was going
                    repair.repairs.setdefault(m.moved_to, []).append(("p", t, m.id, m.token, m.version, state, b"", key))
            elif m.mark == DELETED:  # deleted: release its id (only if still this incarnation's), sweep the mark
                repair.releases.append((key, ("d", t, m.id, m.token, m.version, b"", b"", "")))
            else:  # a pending create that lost its claim, or a move of an incarnation gone since
                repair.sweeps.setdefault(key, []).append(("x", t, m.id, m.token, m.version, b"", b"", m.mark))
        applied = await self.store.apply(repair)
        for k, ops in applied.sweeps.items():
            self._sweeps.setdefault(k, []).extend(ops)

    def _record(self, key: str, stored: Stored) -> tuple[str, bytes]:
        """The type and state (JSON) of a stored record."""
        obj = self._restore(key, stored)
        return obj.type_key, orjson.dumps(obj._synk_values)

    @staticmethod
    def _repair_create(repair: Batch, key: str, op: Op) -> None:
        in_key = repair.ops.setdefault(key, [])
        repair.creates.append((key, len(in_key)))
        in_key.append(op)

    async def reload(self) -> ReloadReport:
        """Re-read every owned object from the store, dropping pending changes.

        Writes this world sent that stopped half-way (the connection broke
        between the two round trips of a flush, say) are finished first: a
        move whose take-out landed is put into its new key, a create whose
        object was stored is made live, a delete that landed has its id
        released; a create that stored nothing gives its id back. Objects
        the store no longer holds (deleted, or taken over by another
        incarnation of their id) are no longer owned, and are reported:
        ``recreate()`` puts them back from this world's memory.
        Objects created while it runs are kept, to be written by the next flush.
        Raises ``synk.ConnectionError`` when the store is unreachable, or
        refuses a repair (out of memory, say): nothing is given up then, and
        a later ``reload()`` finishes what this one could not.
        """
        await self.drain()
        self._unreported.clear()
        for obj in self._deleted.values():
            self._owned[obj.id] = obj
            obj._synk_world = self
        self._deleted.clear()
        before = list(self._created)
        owned = list(self._owned.values())
        unsure, self._unsure = self._unsure, {}
        moved_from, self._moved_from = self._moved_from, {}
        try:
            report = await self._recover(owned, unsure, moved_from)
        except BaseException:
            for oid, entry in unsure.items():
                self._unsure.setdefault(oid, entry)
            for oid, src in moved_from.items():
                self._moved_from.setdefault(oid, src)
            raise
        for oid in before:
            self._created.pop(oid, None)
        # Changes made while reloading, to objects still owned, stay pending.
        self._dirty = {oid: o for oid, o in self._dirty.items() if o._synk_base and self._owned.get(oid) is o}
        return report

    async def _recover(self, owned: list[Object], unsure: dict[str, tuple[str, Op]], moved_from: dict[str, str]) -> ReloadReport:
        wanted: dict[str, list[str]] = {}
        for obj in owned:
            if obj._synk_skey is not None:
                wanted.setdefault(obj._synk_skey, []).append(obj.id)
            if obj.id in moved_from:
                wanted.setdefault(moved_from[obj.id], []).append(obj.id)
        for oid, (key, _op) in unsure.items():
            wanted.setdefault(key, []).append(oid)
        found = {key: await self.store.fetch(key, list(dict.fromkeys(ids))) for key, ids in wanted.items()}
        # A move that landed after this world last looked (Redis ran it late) left
        # its mark where the world thinks the object is: read where it went.
        further: dict[str, list[str]] = {}
        for obj in owned:
            here = found.get(obj._synk_skey or "", {}).get(obj.id)
            if here is not None and here.token == obj._synk_token and here.mark == MOVED and here.moved_to not in found:
                further.setdefault(here.moved_to, []).append(obj.id)
        for key, ids in further.items():
            found[key] = await self.store.fetch(key, ids)
        trails = await self._trails(owned, moved_from, wanted, found)
        #: marks of moves that did land (their replies lost): swept by the next flushes, oldest first
        stale: dict[str, list[Op]] = {}
        repair = Batch()
        missing: list[Object] = []
        fixed: dict[str, Object] = {}
        #: id -> the key a repair moves it from: if the repair fails, the next reload() looks there
        putting: dict[str, str] = {}
        count = 0

        def complete_move(obj: Object, src: str, mark: Stored) -> None:
            """Finish a move whose take-out from ``src`` landed: the object is where it went, or is put there."""
            dest = found.get(mark.moved_to, {}).get(obj.id)
            if dest is not None and dest.token == mark.token and dest.live:
                self._refresh(obj, mark.moved_to, dest)
                repair.sweeps.setdefault(src, []).append(("x", obj.type_key, obj.id, mark.token, mark.version, b"", b"", MOVED))
                return
            self._refresh(obj, mark.moved_to, mark)
            state = orjson.dumps(obj._synk_values)
            repair.repairs.setdefault(mark.moved_to, []).append(("p", obj.type_key, obj.id, mark.token, mark.version, state, b"", src))
            fixed[obj.id] = obj
            putting[obj.id] = src

        for obj in owned:
            token = obj._synk_token
            if obj._synk_skey is None:  # never flushed: dropped with the other pending changes
                missing.append(obj)
                continue
            key = obj._synk_skey
            here = found[key].get(obj.id)
            if here is not None and here.token == token:
                if here.live:
                    self._refresh(obj, key, here)
                    count += 1
                    # It got here, so every mark its unsure moves left on the way is
                    # stale: unswept, one would later point at a key the object has
                    # left, and read as a move left half-way.
                    for k, mark in trails.get(obj.id, ()):
                        if k != key:
                            stale.setdefault(k, []).append(("x", obj.type_key, obj.id, token, mark.version, b"", b"", MOVED))
                    continue
                if here.mark == PENDING:  # stored, but its claim unknown: claim again, then make it live
                    obj._synk_discard()
                    self._repair_create(repair, key, ("c", obj.type_key, obj.id, token, 1, orjson.dumps(obj._synk_values), b"", ""))
                    obj._synk_version = 1
                    fixed[obj.id] = obj
                    continue
                if here.mark == MOVED:
                    complete_move(obj, key, here)
                    if obj.id not in fixed:
                        count += 1
                    continue
            src = moved_from.get(obj.id)
            there = found[src].get(obj.id) if src is not None else None
            if src is not None and there is not None and there.token == token:
                if there.live:  # the move did not land: it is where it was
                    self._refresh(obj, src, there)
                    count += 1
                    continue
                if there.mark == MOVED:  # taken out, never put: put it where it was going
                    complete_move(obj, src, there)
                    if obj.id not in fixed:
                        count += 1
                    continue
            entry = unsure.get(obj.id)
            if entry is not None and entry[1][0] == "c":
                repair.releases.append(entry)  # it stored nothing: give its id back
            missing.append(obj)
        for oid, (key, op) in unsure.items():
            here = found[key].get(oid)
            if op[0] != "d" or here is None or here.token != op[3]:
                continue
            if here.live:  # the delete did not land: this world asked for it, so send it again
                in_key = repair.ops.setdefault(key, [])
                repair.deletes.append((key, len(in_key)))
                in_key.append(("d", op[1], oid, op[3], here.version, b"", b"", ""))
            elif here.mark == DELETED:  # deleted, its id not released
                repair.releases.append((key, op))
        if len(repair) or repair.repairs or repair.releases:
            applied = await self.store.apply(repair)
            for k, ops in applied.sweeps.items():
                self._sweeps.setdefault(k, []).extend(ops)
            # A refused give-back of a lost create's id counts too: a missing object
            # whose id stays claimed by its old incarnation could never be created
            # again (recreate() makes a new one, and every create of the id would fail
            # with "exists"). Its unsure entry is kept (reload() restores them when this
            # raises), so the next reload() releases it again. (A deleted object's
            # refused release is not: the delete's own failure said so, and the
            # object is gone on purpose; reload() must not fail for good on it.)
            releasing = {op[2] for _, op in repair.releases if op[0] == "c"}
            transient = [
                f for f in applied.failures if (f.id in fixed or f.id in releasing) and f.reason not in ("exists", "missing", "conflict")
            ]
            if transient:
                # Refused, or cut off: nothing says the object is gone (its mark still
                # says where it was going), so it stays owned, and so do the half-way
                # writes; the next reload() tries again, from the mark's key (reload()
                # keeps what is in moved_from when this raises).
                for oid, src in putting.items():
                    moved_from.setdefault(oid, src)
                f = transient[0]
                raise SynkConnectionError(
                    f"reload() could not finish {len(transient)} half-way write(s), such as the {f.op} of {f.type} {f.id!r}"
                    f" ({f.reason}: {f.detail}); call reload() again"
                )
            for failure in applied.failures:
                lost = fixed.pop(failure.id, None)
                if lost is not None:
                    missing.append(lost)
            count += len(fixed)
        for obj in missing:
            if self._owned.get(obj.id) is obj:
                del self._owned[obj.id]
            obj._synk_world = None
        for k, ops in stale.items():
            self._sweeps.setdefault(k, []).extend(ops)
        return ReloadReport(missing, count)

    async def _trails(
        self, owned: list[Object], moved_from: dict[str, str], wanted: dict[str, list[str]], found: dict[str, dict[str, Stored]]
    ) -> dict[str, list[tuple[str, Stored]]]:
        """The move marks each object of an unsure move left, from the key it left, in order.

        A flush whose move failed (its outcome unknown) may still have
        landed whole, and later flushes may have moved the object on: its
        marks form a trail, each naming the next key. Read hop by hop, each
        hop's keys at once.
        """
        seen = {(key, oid): found[key].get(oid) for key, ids in wanted.items() for oid in ids}
        tokens = {obj.id: obj._synk_token for obj in owned}
        at = {oid: src for oid, src in moved_from.items() if oid in tokens}
        out: dict[str, list[tuple[str, Stored]]] = {}
        for _hop in range(_TRAIL_HOPS):
            need: dict[str, list[str]] = {}
            for oid, key in at.items():
                if (key, oid) not in seen:
                    need.setdefault(key, []).append(oid)
            for key, ids in need.items():
                got = await self.store.fetch(key, ids)
                for oid in ids:
                    seen[(key, oid)] = got.get(oid)
            onward: dict[str, str] = {}
            for oid, key in at.items():
                mark = seen[(key, oid)]
                if mark is not None and mark.token == tokens[oid] and mark.mark == MOVED and mark.moved_to != key:
                    out.setdefault(oid, []).append((key, mark))
                    onward[oid] = mark.moved_to
            at = onward
            if not at:
                break
        return out

    def recreate(self, objects: Iterable[Object]) -> list[Object]:
        """Create again, from this world's memory, objects that ``reload()`` reported missing.

        For a store that lost its data (a Redis restarted without
        persistence): this world's copy is then the best truth left. Each
        object keeps its id and current values and becomes a new incarnation
        at version 1, written by the next flush; clients see it added. An
        object deleted on purpose by another world comes back too: pass only
        what should. Raises ValidationError for an object this world owns.
        """
        out: list[Object] = []
        for obj in objects:
            if not isinstance(obj, Object):
                raise ValidationError(f"recreate() takes synk.Objects, not {type(obj).__name__}")
            if self._owned.get(obj.id) is not None:
                raise ValidationError(f"this world already owns an object with id {obj.id!r}")
        for obj in objects:
            obj._synk_base = {}
            obj._synk_version = 0
            obj._synk_token = ""
            obj._synk_skey = None
            obj._synk_world = None
            out.append(self.create(obj))
        return out

    def _refresh(self, obj: Object, key: str, stored: Stored) -> None:
        """Take the stored state of ``obj`` (its incarnation's record, or the record a mark keeps)."""
        fresh = self._restore(key, stored)
        obj._synk_values = fresh._synk_values
        obj._synk_base = {}
        obj._synk_version = stored.version
        obj._synk_skey = key
