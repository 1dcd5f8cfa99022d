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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from synk.core.batch import Batch, Kind, Op, kind, plan
from synk.core.histogram import Histogram
from synk.core.messages import RESERVED_METHODS
from synk.core.model import Object
from synk.core.names import check_key
from synk.errors import ConfigError, ConnectionError, Failure, SynkError, ValidationError, WriteError
from synk.recovery import Recovery, ReloadReport
from synk.store import open_store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from types import TracebackType

    from synk.store.base import Applied, Store, Subscriber

__all__ = ["ClientMessage", "FlushHandle", "ReloadReport", "World", "connect"]

log = logging.getLogger("synk")

ObjectT = TypeVar("ObjectT", bound=Object)


@dataclass(frozen=True)
class ClientMessage:
    """A custom message a client sent through a gateway.

    ``client`` is the connection's id (one per websocket); ``identity`` is
    who the gateway's ``authenticate`` hook said the client is, as JSON
    (None without the hook; values JSON cannot hold arrive as strings).
    """

    client: str
    method: str
    data: dict[str, Any]
    identity: Any = None


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


class World(Recovery):
    """The objects a simulation owns, and the store they are written to.

    Reading back (``load``, ``reload``, ``recreate``) is in ``synk.recovery``.
    """

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
        #: seconds from a batch's turn (the flushes before it done) to the store's answer, failed ones too;
        #: a gateway in the same process shows it on /metrics (``Gateway(world)``)
        self.flush_seconds = Histogram("synk_flush_seconds", "From a flush's turn to the store's answer (world.flush()).")

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
        batch.sweeps = self._take_sweeps()
        task = asyncio.get_running_loop().create_task(self._apply(self._tail, batch))
        handle = FlushHandle(self, size, task)
        task.add_done_callback(lambda t: self._settled(handle, t))
        self._tail = task
        return handle

    def _take_sweeps(self) -> dict[str, list[Op]]:
        """The sweeps for the next batch: of each object, only its oldest mark.

        A mark is swept only once every older mark of its object is gone, so
        that whoever finds a mark left (this world died) can trust that the
        object reached the key it names: a newer mark swept before an older
        one, and the older one would send the object back there.
        """
        sweeps = self._sweeps
        if not sweeps:
            return {}
        ids = [op[2] for ops in sweeps.values() for op in ops]
        if len(ids) == len(set(ids)):  # the common case: one mark per object
            self._sweeps = {}
            return sweeps
        now: dict[str, list[Op]] = {}
        later: dict[str, list[Op]] = {}
        oldest: dict[str, int] = {}
        for ops in sweeps.values():
            for op in ops:
                oldest[op[2]] = min(op[4], oldest.get(op[2], op[4]))
        taken: set[str] = set()
        for key, ops in sweeps.items():
            for op in ops:
                first = op[4] == oldest[op[2]] and op[2] not in taken
                if first:
                    taken.add(op[2])
                (now if first else later).setdefault(key, []).append(op)
        self._sweeps = later
        return now

    async def _apply(self, previous: asyncio.Task[None] | None, batch: Batch) -> None:
        if previous is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(previous)
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            applied = await self._send(batch)
        finally:
            self.flush_seconds.observe(loop.time() - start)
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
                yield ClientMessage(msg["client"], msg["method"], msg["data"], msg.get("identity"))
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
