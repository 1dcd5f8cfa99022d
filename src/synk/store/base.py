"""What every store backend does, and the flush algorithm they share.

A flush's writes go in two phases, each one batch of calls whatever the
number of objects:

1. guarded writes, per subscription key: updates, take-outs (a move's first
   half), deletes, and creates stored as pending (hidden from snapshots);
   then the id claims of the creates; and the sweeps of marks that earlier
   flushes no longer need;
2. the writes that depend on phase 1: pending creates whose id was claimed
   are activated (published), others are dropped and their claims given
   back; moves whose take-out landed are put into their new key; deleted
   ids are released.

Each call touches one subscription key (or one id) only, which keeps every
Redis script within one hash slot, as Redis Cluster demands. So nothing is
atomic across keys: instead, a write that phase 1 starts leaves a *mark*
where it started (``synk.core.batch``), and a flush that stops half-way,
whatever stopped it, leaves the store in a state that ``World.reload()``
(the writer's) or ``World.load()`` (anyone's) completes or undoes. The
marks of writes that finished are swept by the writer's next flush.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from synk.core.batch import DELETED, MOVED, PENDING, Batch, Op, expected, kind, put_of, sweep_of
from synk.errors import ConfigError, Failure

if TYPE_CHECKING:
    import asyncio
    from collections.abc import AsyncIterator, Iterable

__all__ = ["CONFLICT", "MISSING", "OK", "REFUSED", "Applied", "Event", "Store", "Stored", "Subscriber", "queued_events", "take_ready"]

#: Result codes of guarded operations, shared with the Lua scripts; REFUSED
#: is the store refusing the whole call (out of memory, say): nothing applied.
OK, MISSING, CONFLICT, REFUSED = 0, 1, 2, 3
_REASONS = {MISSING: "missing", CONFLICT: "conflict"}


@dataclass(frozen=True, slots=True)
class Stored:
    """One object as stored: its guard and its record (an ``add`` message).

    ``mark`` is ``""`` for a live object, else the mark of a write left
    half-way (``synk.core.batch``: MOVED, PENDING, DELETED); ``moved_to``
    names the new key of a MOVED one, whose ``record`` is its record there.
    """

    id: str
    token: str
    version: int
    record: bytes
    mark: str = ""
    moved_to: str = ""

    @property
    def live(self) -> bool:
        """Whether this is the object itself, not a mark."""
        return not self.mark

    @classmethod
    def parse(cls, key: str, oid: str, value: bytes) -> Stored:
        """Build from a stored value: the ``token:version`` guard line, then the record or a mark.

        Raises ConfigError for a value synk did not write (another program's
        data under the same prefix, say), naming the key and the id.
        """
        line, _, rest = value.partition(b"\n")
        token, _, version = line.decode(errors="replace").rpartition(":")
        first = rest[:1]
        if token and version.isdigit():
            if first == b"{":
                return cls(oid, token, int(version), rest)
            if first == b">":
                dest, _, rec = rest[1:].partition(b"\n")
                if rec.startswith(b"{"):
                    return cls(oid, token, int(version), rec, MOVED, dest.decode())
            elif first == b"?" and rest[1:2] == b"{":
                return cls(oid, token, int(version), rest[1:], PENDING)
            elif first == b"!":
                return cls(oid, token, int(version), b"", DELETED)
        raise ConfigError(f"object {oid!r} in key {key!r} is stored as {value[:40]!r}, which synk did not write; is the prefix shared?")


@dataclass(slots=True)
class Applied:
    """What a store did with a batch: the writes that did not land, and the
    marks that the writer's next flush should sweep (per key, ``x`` ops)."""

    failures: list[Failure] = field(default_factory=list)
    sweeps: dict[str, list[Op]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Event:
    """Something a subscriber receives.

    ``key`` and ``data`` for a message published on a key. ``key`` None is
    a gap: messages may have been missed (the subscription was re-established
    after the store broke, or its slot moved to another node of a cluster),
    so snapshots should be taken again: of the keys in ``gap``, or of every
    key when ``gap`` is None (the consumer fell behind and events of any key
    were dropped).
    """

    key: str | None
    data: bytes = b""
    gap: frozenset[str] | None = None


def _failure(key: str, op: Op, reason: str, detail: str | None = None) -> Failure:
    if detail is None:
        line = expected(op).partition(b"\n")[0].decode()
        detail = f"in key {key!r}, expected {line}"
    return Failure(op[2], op[1], kind(op).value, reason, detail)


def take_ready(queue: asyncio.Queue[Any], most: int, end: object = None) -> list[Event]:
    """Up to ``most`` events on ``queue`` now, taken without waiting; ``end`` (the closing
    sentinel) is left for the iteration, which ends on it."""
    out: list[Event] = []
    while len(out) < most and not queue.empty():
        event = queue.get_nowait()
        if event is end:
            queue.put_nowait(end)  # nothing follows it: back at the end is back in place
            break
        out.append(event)
    return out


async def queued_events(queue: asyncio.Queue[Event | None]) -> AsyncIterator[Event]:
    """The events put on ``queue``, until a None says the subscriber closed."""
    while True:
        event = await queue.get()
        if event is None:
            return
        yield event


class Subscriber(abc.ABC):
    """A stream of the messages of a changing set of subscription keys."""

    @abc.abstractmethod
    async def subscribe(self, keys: Iterable[str]) -> None:
        """Start receiving the messages of ``keys``; returns once subscribed."""

    @abc.abstractmethod
    async def unsubscribe(self, keys: Iterable[str]) -> None:
        """Stop receiving the messages of ``keys``."""

    @abc.abstractmethod
    def __aiter__(self) -> AsyncIterator[Event]:
        """Events until ``close()``."""

    def ready(self, most: int) -> list[Event]:
        """The next events of the iteration that are here already, up to ``most``, without waiting.

        A consumer that handles what arrived together as one batch (the
        gateway: a flush's messages of one key) takes them with this between
        two steps of its iteration. ``[]`` when none, or when the subscriber
        cannot tell (the default).
        """
        return []

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop; the iteration ends."""


class Store(abc.ABC):
    """A backend: object storage, publishing, and the client message stream."""

    url: str

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect; raises synk.ConnectionError when the store cannot be reached."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections."""

    @abc.abstractmethod
    async def _phase1(
        self, sweeps: dict[str, list[Op]], groups: dict[str, list[Op]], claims: list[Op]
    ) -> tuple[dict[str, list[int]], dict[str, list[int]], list[int]]:
        """As one batch of calls, in this order: apply each key's sweeps, then
        each key's guarded operations, atomically per key (a code per
        operation, REFUSED for a call refused whole); then claim the id of
        each create (OK, or CONFLICT when another incarnation holds it).

        Claims go last: on one connection, a claim that landed means the
        pending create it protects was applied or refused before it."""

    @abc.abstractmethod
    async def _phase2(self, groups: dict[str, list[Op]], releases: list[Op]) -> tuple[dict[str, list[int]], list[int]]:
        """Apply each key's operations (a code per operation) and release
        the ids of ``releases`` (a code each: OK, MISSING when no longer held
        by that incarnation, REFUSED), as one batch of calls."""

    @abc.abstractmethod
    async def claims(self, ids: list[str]) -> dict[str, str | None]:
        """The incarnation token holding each id, or None when it is free."""

    async def apply(self, batch: Batch) -> Applied:
        """Apply one flush's operations; returns the writes that did not land and the marks to sweep."""
        out = Applied()
        failures = out.failures
        later = out.sweeps
        groups = batch.ops
        creates = [(key, groups[key][i]) for key, i in batch.creates]
        swept, results, claimed = await self._phase1(batch.sweeps, groups, [op for _, op in creates])
        for key, codes in swept.items():
            for op, code in zip(batch.sweeps[key], codes, strict=True):
                if code == REFUSED:  # still there: try again next time
                    later.setdefault(key, []).append(op)
        phase2: dict[str, list[Op]] = {key: list(ops) for key, ops in batch.repairs.items()}
        releases: list[tuple[str, Op]] = list(batch.releases)
        gives_back: list[Op] = []  # claims of creates that did not get stored
        for (key, i), claim in zip(batch.creates, claimed, strict=True):
            op, pending = groups[key][i], results[key][i]
            if claim == OK and pending == OK:
                phase2.setdefault(key, []).append(("a", op[1], op[2], op[3], 1, b"", b"", ""))
                continue
            if claim == OK:
                gives_back.append(op)
            if pending == OK:
                phase2.setdefault(key, []).append(sweep_of(op, PENDING))
            if REFUSED in (claim, pending):
                failures.append(_failure(key, op, "refused", "the store refused its create; none of it was applied"))
            elif claim != OK:
                failures.append(_failure(key, op, "exists", "another object has this id"))
            else:
                failures.append(_failure(key, op, "exists", f"key {key!r} holds another object with this id"))
        for key, codes in results.items():
            if any(codes):  # the common case is every operation landing
                for op, code in zip(groups[key], codes, strict=True):
                    if op[0] == "c":
                        continue  # reported above
                    if code == REFUSED:
                        failures.append(_failure(key, op, "refused", f"the store refused the write in key {key!r}; none of it was applied"))
                    elif code != OK:
                        failures.append(_failure(key, op, _REASONS[code]))
        for key, i in batch.moves:
            if results[key][i] == OK:
                op = groups[key][i]
                phase2.setdefault(op[7], []).append(put_of(key, op))
        releases += [(key, groups[key][i]) for key, i in batch.deletes if results[key][i] == OK]
        if phase2 or releases or gives_back:
            put, released = await self._phase2(phase2, [op for _, op in releases] + gives_back)
            for key, ops in phase2.items():
                for op, code in zip(ops, put[key], strict=True):
                    if op[0] == "x":
                        if code == REFUSED:
                            later.setdefault(key, []).append(op)
                    elif code == OK:
                        if op[0] == "p" and op[7]:  # moved in: the mark where it came from is no longer needed
                            later.setdefault(op[7], []).append(("x", op[1], op[2], op[3], op[4], b"", b"", MOVED))
                    else:
                        # The object stays half-way, its mark kept: reload() completes it.
                        failures.append(_failure(key, op, "refused", f"the store refused the write into key {key!r}"))
            for (key, op), code in zip(releases, released, strict=False):
                if code == REFUSED:
                    # The object is gone, but its id stays taken: say so, or a
                    # later create of this id would fail with no known cause.
                    detail = f"deleted from key {key!r}, but the store refused to free its id; a new object with this id is refused"
                    failures.append(_failure(key, op, "refused", detail))
                else:
                    later.setdefault(key, []).append(sweep_of(op, DELETED))
        return out

    @abc.abstractmethod
    async def snapshot(self, key: str, *, marks: bool = False) -> list[Stored]:
        """Every object in ``key``, read atomically; with ``marks``, the marks of half-way writes too."""

    @abc.abstractmethod
    async def fetch(self, key: str, ids: list[str]) -> dict[str, Stored]:
        """What ``key`` holds of ``ids``: objects, or marks of half-way writes."""

    @abc.abstractmethod
    async def publish(self, key: str, data: bytes) -> None:
        """Send ``data``, one message, to the subscribers of ``key``.

        A message holds no newline (JSON from orjson never does): a store may
        join several into one, and its subscribers split them again.
        """

    @abc.abstractmethod
    def subscriber(self) -> Subscriber:
        """A new subscriber, with no keys yet."""

    @abc.abstractmethod
    async def post(self, data: bytes) -> bool:
        """Pass a client message to the simulation (``world.messages()``); False when
        no simulation reads them now, and it was dropped. A store keeps a bounded
        backlog of them (the Redis store: 10,000 messages and 8 MiB).

        Raises synk.ConnectionError when the store cannot confirm it took the
        message (Redis down, or on a cluster no replica held it in time): the
        message may or may not reach the simulation, and is never sent twice."""

    @abc.abstractmethod
    def read_posts(self) -> AsyncIterator[bytes]:
        """Client messages posted from now on, in order."""
