"""The simulation's handle on the store: create, change, flush, load, reload.

``World`` is a thin asyncio layer: the diff and message logic is in
``synk.core``, the storage in ``synk.store``. What it adds is ownership (the
objects this world writes), the ordered queue of flushes, and the reporting
of write failures the design note asks for: a failed write stops the
simulation, which can then ``reload()`` the stored state and go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from synk.core.batch import DELETED, MOVED, PENDING, Batch, Kind, Op, kind, plan
from synk.core.messages import RESERVED_METHODS
from synk.core.model import Object
from synk.core.names import check_key
from synk.errors import ConfigError, ConnectionError, Failure, SynkError, ValidationError, WriteError
from synk.store import open_store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from types import TracebackType

    from synk.store.base import Applied, Store, Stored, Subscriber

__all__ = ["ClientMessage", "FlushHandle", "ReloadReport", "World", "connect"]

log = logging.getLogger("synk")

ObjectT = TypeVar("ObjectT", bound=Object)


@dataclass(frozen=True)
class ReloadReport:
    """What ``reload()`` found: objects gone from the store (no longer owned)."""

    missing: list[Object] = field(default_factory=list)
    reloaded: int = 0


@dataclass(frozen=True)
class ClientMessage:
    """A custom message a client sent through a gateway."""

    client: str
    method: str
    data: dict[str, Any]


class FlushHandle:
    """Returned by ``world.flush()`` at once; await it for the store's confirmation.

    Awaiting raises ``WriteError`` when some writes did not land. A handle
    that is never awaited reports its failure through ``world.on_error`` and
    the next ``world.flush()`` call raises it.
    """

    def __init__(self, world: World, writes: int, task: asyncio.Task[None] | None) -> None:
        self._world = world
        self._task = task
        self.writes = writes
        self._awaited = False

    def __await__(self) -> Generator[Any, None, None]:
        if self._task is None:
            return
        self._world._unreported.pop(id(self), None)
        self._awaited = True
        try:
            yield from asyncio.shield(self._task).__await__()
        except asyncio.CancelledError:
            # Nobody got the outcome: it is reported as unawaited. The flush
            # may also have failed in the very loop turn of the cancellation,
            # after _settled saw this handle awaited: report it here then.
            self._awaited = False
            task = self._task
            if task.done() and not task.cancelled() and isinstance(task.exception(), WriteError):
                self._world._settled(self, task)
            raise

    def done(self) -> bool:
        """Whether the store has answered."""
        return self._task is None or self._task.done()


class World:
    """The objects a simulation owns, and the store they are written to."""

    def __init__(self, store: Store, types: Iterable[type[Object]] = ()) -> None:
        self.store = store
        self.types: dict[str, type[Object]] = {}
        for cls in types:
            self.register(cls)
        #: Called with the WriteError of a flush that nobody awaited.
        self.on_error: Callable[[WriteError], None] | None = None
        self._owned: dict[str, Object] = {}
        self._created: dict[str, Object] = {}
        self._dirty: dict[str, Object] = {}
        self._deleted: dict[str, Object] = {}
        self._tail: asyncio.Task[None] | None = None
        #: id -> the key it moved from, for moves that may not have landed
        self._moved_from: dict[str, str] = {}
        #: id -> (key, op) of creates and deletes whose outcome is unknown
        self._unsure: dict[str, tuple[str, Op]] = {}
        #: marks of finished writes, swept by the next flush
        self._sweeps: dict[str, list[Op]] = {}
        self._unreported: dict[int, WriteError] = {}

    def register(self, cls: type[Object]) -> None:
        """Make ``cls`` known, so that stored objects of its type can be loaded."""
        if not (isinstance(cls, type) and issubclass(cls, Object)):
            raise ConfigError(f"{cls!r} is not a synk.Object subclass")
        cls._synk_check_class()
        other = self.types.get(cls.type_key)
        if other is not None and other is not cls:
            raise ConfigError(f"type_key {cls.type_key!r} is used by both {other.__name__} and {cls.__name__}")
        self.types[cls.type_key] = cls

    # -- the write path ---------------------------------------------------------

    def _mark(self, obj: Object) -> None:
        self._dirty[obj.id] = obj

    def create(self, obj: ObjectT) -> ObjectT:
        """Own ``obj`` and write it with the next flush; returns it."""
        if not isinstance(obj, Object):
            raise ValidationError(f"create() takes a synk.Object, not {type(obj).__name__}")
        cls = type(obj)
        if cls.type_key not in self.types:
            self.register(cls)
        if obj._synk_world is not None or obj._synk_version:
            raise ValidationError(f"{cls.type_key} {obj.id!r} was already created")
        if obj.id in self._owned:
            raise ValidationError(f"this world already owns an object with id {obj.id!r}")
        if obj.id in self._deleted:
            raise ValidationError(f"{cls.type_key} {obj.id!r} is being deleted; flush before creating it again")
        try:
            obj._synk_current_key()
        except SynkError as exc:
            raise ValidationError(f"{cls.type_key} {obj.id!r}: {exc}") from None
        obj._synk_world = self
        self._owned[obj.id] = obj
        self._created[obj.id] = obj
        return obj

    def delete(self, obj: Object) -> None:
        """Delete ``obj`` from the store with the next flush."""
        if self._owned.get(obj.id) is not obj:
            raise ValidationError(f"{obj.type_key} {obj.id!r} is not owned by this world")
        del self._owned[obj.id]
        self._dirty.pop(obj.id, None)
        obj._synk_world = None
        if self._created.pop(obj.id, None) is None:
            obj._synk_discard()
            self._deleted[obj.id] = obj

    def flush(self) -> FlushHandle:
        """Send every pending create, change and delete as one batch.

        Returns at once; what is sent is fixed now, and batches land in the
        order of the calls. Raises the WriteError of an earlier flush that was
        not awaited, before sending anything; raises ValidationError, sending
        nothing and leaving every change pending, when an object's new
        ``sub_key`` is invalid or a value cannot be encoded.
        """
        if self._unreported:
            errors = list(self._unreported.values())
            self._unreported.clear()
            raise errors[0] if len(errors) == 1 else WriteError([f for e in errors for f in e.failures])
        batch = plan(self._created.values(), self._dirty.values(), self._deleted.values())
        self._created.clear()
        self._dirty.clear()
        self._deleted.clear()
        size = len(batch)
        if not size:
            return FlushHandle(self, 0, None)
        batch.sweeps, self._sweeps = self._sweeps, {}
        task = asyncio.get_running_loop().create_task(self._apply(self._tail, batch))
        handle = FlushHandle(self, size, task)
        task.add_done_callback(lambda t: self._settled(handle, t))
        self._tail = task
        return handle

    async def _apply(self, previous: asyncio.Task[None] | None, batch: Batch) -> None:
        if previous is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(previous)
        applied = await self._send(batch)
        if applied.failures:
            failures = applied.failures
            unsure = {f.id for f in failures if f.reason not in ("exists", "missing", "conflict")}
            moved = {f.id for f in failures if f.op == Kind.MOVE.value}
            # Writes that may have landed half-way: reload() finishes them.
            for key, ops in batch.ops.items():
                for op in ops:
                    oid = op[2]
                    if op[0] == "t" and oid in moved:
                        self._moved_from.setdefault(oid, key)
                    elif op[0] in "cd" and oid in unsure:
                        self._unsure[oid] = (key, op)
            raise WriteError(failures)

    async def _send(self, batch: Batch) -> Applied:
        """``store.apply(batch)``, its marks to sweep kept; a store that failed fails every write."""
        from synk.store.base import Applied

        try:
            applied = await self.store.apply(batch)
        except ConnectionError as exc:
            reason, detail = "connection", str(exc)
            applied = Applied()
        except Exception as exc:  # the store answered something unforeseen: the outcome is unknown
            log.exception("synk flush failed unexpectedly")
            reason, detail = "error", f"{type(exc).__name__}: {exc}"
            applied = Applied()
        else:
            for key, ops in applied.sweeps.items():
                self._sweeps.setdefault(key, []).extend(ops)
            return applied
        for key, ops in batch.sweeps.items():  # maybe not swept: again next time
            self._sweeps.setdefault(key, []).extend(ops)
        applied.failures = [Failure(op[2], op[1], kind(op).value, reason, detail) for _, op in batch.writes()]
        return applied

    def _settled(self, handle: FlushHandle, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if not isinstance(exc, WriteError) or handle._awaited:
            if exc is not None and not isinstance(exc, WriteError):
                log.error("synk flush failed unexpectedly", exc_info=exc)
            return
        self._unreported[id(handle)] = exc
        if self.on_error is not None:
            try:
                self.on_error(exc)
            except Exception:
                log.exception("synk world.on_error callback raised")
        else:
            log.error("synk flush failed and was not awaited: %s", exc)

    async def drain(self) -> None:
        """Wait until every flush sent so far has been answered."""
        if self._tail is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._tail)

    # -- reading -------------------------------------------------------------------

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
                if there is not None and there.token == m.token and (there.live or there.mark == DELETED):
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
        repair = Batch()
        missing: list[Object] = []
        fixed: dict[str, Object] = {}
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
            for failure in applied.failures:
                lost = fixed.pop(failure.id, None)
                if lost is not None:
                    missing.append(lost)
            count += len(fixed)
        for obj in missing:
            if self._owned.get(obj.id) is obj:
                del self._owned[obj.id]
            obj._synk_world = None
        return ReloadReport(missing, count)

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

    # -- messages --------------------------------------------------------------------

    async def publish(self, sub_key: str, message: dict[str, Any]) -> None:
        """Send a custom message to the subscribers of ``sub_key``.

        ``message`` needs a ``"method"`` other than the reserved ones.
        """
        check_key(sub_key)
        method = message.get("method") if isinstance(message, dict) else None
        if not isinstance(method, str) or not method or method in RESERVED_METHODS or method.startswith("~"):
            raise ValidationError(
                f"a custom message needs a 'method' other than {sorted(RESERVED_METHODS)} and not starting with '~', got {method!r}"
            )
        try:
            data = orjson.dumps(message)
        except TypeError as exc:
            raise ValidationError(f"custom message for {sub_key!r} cannot be encoded as JSON: {exc}") from None
        await self.store.publish(sub_key, data)

    def subscribe(self) -> Subscriber:
        """A subscriber to keys' messages: ``await sub.subscribe([...])``, then ``async for event in sub``."""
        return self.store.subscriber()

    async def messages(self) -> AsyncIterator[ClientMessage]:
        """Custom messages sent by clients through gateways, from now on."""
        async for data in self.store.read_posts():
            try:
                msg = orjson.loads(data)
                yield ClientMessage(msg["client"], msg["method"], msg["data"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                log.warning("synk dropped a malformed client message of %d bytes", len(data))

    async def close(self) -> None:
        """Wait for pending flushes, sweep the marks they left, then release the store."""
        await self.drain()
        if self._sweeps:
            batch = Batch(sweeps=self._sweeps)
            self._sweeps = {}
            with contextlib.suppress(SynkError):
                await self.store.apply(batch)
        await self.store.close()


class _Connect:
    def __init__(self, url: str, types: Iterable[type[Object]], prefix: str, connect_timeout: float) -> None:
        self._args = (url, list(types), prefix, connect_timeout)
        self._world: World | None = None

    async def _open(self) -> World:
        url, types, prefix, timeout = self._args
        world = World(open_store(url, prefix=prefix, connect_timeout=timeout), types)
        await world.store.open()
        return world

    def __await__(self) -> Generator[Any, None, World]:
        return self._open().__await__()

    async def __aenter__(self) -> World:
        self._world = await self._open()
        return self._world

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self._world is not None:
            await self._world.close()


def connect(url: str = "memory://", *, types: Iterable[type[Object]] = (), prefix: str = "synk:", connect_timeout: float = 5.0) -> _Connect:
    """Open a world on a store: ``async with synk.connect(url, types=[...]) as world``.

    ``url`` is ``memory://`` (embedded) or ``redis://HOST:PORT/DB``. Also
    awaitable: ``world = await synk.connect(url)``, then ``await world.close()``.
    """
    return _Connect(url, types, prefix, connect_timeout)
