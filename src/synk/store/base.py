"""What every store backend does, and the flush algorithm they share.

A flush's writes go in two phases, each one batch of calls whatever the
number of objects:

1. guarded writes: id claims for creates, and per subscription key the
   updates, deletes and move-outs of objects in it (each checks the stored
   ``token:version`` guard, writes and publishes);
2. the writes that depend on phase 1: creates whose id was claimed and moves
   whose move-out landed are put into their key; deleted ids are released.

Each call touches one subscription key (or one id) only, which keeps every
Redis script within one hash slot, as Redis Cluster demands.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING

from synk.core.batch import Batch, Op, expected, kind, put_of
from synk.errors import ConfigError, Failure

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

__all__ = ["CONFLICT", "MISSING", "OK", "REFUSED", "Event", "Store", "Stored", "Subscriber"]

#: Result codes of guarded operations, shared with the Lua scripts; REFUSED
#: is the store refusing the whole call (out of memory, say): nothing applied.
OK, MISSING, CONFLICT, REFUSED = 0, 1, 2, 3
_REASONS = {MISSING: "missing", CONFLICT: "conflict"}


@dataclass(frozen=True, slots=True)
class Stored:
    """One object as stored: its guard and its record (an ``add`` message)."""

    id: str
    token: str
    version: int
    record: bytes

    @classmethod
    def parse(cls, key: str, oid: str, value: bytes) -> Stored:
        """Build from a stored value: the ``token:version`` guard line, then the record.

        Raises ConfigError for a value synk did not write (another program's
        data under the same prefix, say), naming the key and the id.
        """
        line, _, record = value.partition(b"\n")
        token, _, version = line.decode(errors="replace").rpartition(":")
        if not token or not version.isdigit() or not record.startswith(b"{"):
            raise ConfigError(f"object {oid!r} in key {key!r} is stored as {value[:40]!r}, which synk did not write; is the prefix shared?")
        return cls(oid, token, int(version), record)


@dataclass(frozen=True, slots=True)
class Event:
    """Something a subscriber receives.

    ``key`` and ``data`` for a message published on a key; ``key`` None
    means the subscription was re-established after the store broke, so
    messages may have been missed and snapshots should be taken again.
    """

    key: str | None
    data: bytes = b""


def _failure(key: str, op: Op, reason: str, detail: str | None = None) -> Failure:
    if detail is None:
        detail = f"in key {key!r}, expected {expected(op)[:-1].decode()}"
    return Failure(op[2], op[1], kind(op).value, reason, detail)


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
    async def _phase1(self, claims: list[Op], groups: dict[str, list[Op]]) -> tuple[list[int], dict[str, list[int]]]:
        """Claim the id of each create (OK, or CONFLICT when another incarnation
        holds it) and apply each key's guarded operations atomically (a code
        per operation), as one batch of calls."""

    @abc.abstractmethod
    async def _phase2(self, releases: list[Op], groups: dict[str, list[Op]]) -> tuple[dict[str, list[int]], list[int]]:
        """Apply each key's puts (a code per operation) and release the ids of
        the deleted objects (a code each: OK, MISSING when no longer held by
        that incarnation, REFUSED), as one batch of calls."""

    async def apply(self, batch: Batch) -> list[Failure]:
        """Apply one flush's operations; returns the writes that did not land."""
        failures: list[Failure] = []
        creates = batch.creates
        groups = batch.ops
        claimed, results = await self._phase1([op for _, op in creates], groups)
        puts: dict[str, list[Op]] = {}
        for (key, op), code in zip(creates, claimed, strict=True):
            if code == OK:
                puts.setdefault(key, []).append(op)
            elif code == REFUSED:
                failures.append(_failure(key, op, "refused", "the store refused the claim of its id; none of it was applied"))
            else:
                failures.append(_failure(key, op, "exists", "another object has this id"))
        for key, codes in results.items():
            if any(codes):  # the common case is every operation landing
                for op, code in zip(groups[key], codes, strict=True):
                    if code == REFUSED:
                        failures.append(_failure(key, op, "refused", f"the store refused the write in key {key!r}; none of it was applied"))
                    elif code != OK:
                        failures.append(_failure(key, op, _REASONS[code]))
        for key, i in batch.moves:
            if results[key][i] == OK:
                op = groups[key][i]
                puts.setdefault(op[7], []).append(put_of(key, op))
        deleted = [(key, groups[key][i]) for key, i in batch.deletes if results[key][i] == OK]
        if puts or deleted:
            put, released = await self._phase2([op for _, op in deleted], puts)
            for key, ops in puts.items():
                for op, code in zip(ops, put[key], strict=True):
                    if code != OK:
                        failures.append(_failure(key, op, "refused", f"the store refused the write into key {key!r}"))
            for (key, op), code in zip(deleted, released, strict=True):
                if code == REFUSED:
                    # The object is gone, but its id stays taken: say so, or a
                    # later create of this id would fail with no known cause.
                    detail = f"deleted from key {key!r}, but the store refused to free its id; a new object with this id is refused"
                    failures.append(_failure(key, op, "refused", detail))
        return failures

    @abc.abstractmethod
    async def snapshot(self, key: str) -> list[Stored]:
        """Every object in ``key``, read atomically."""

    @abc.abstractmethod
    async def fetch(self, key: str, ids: list[str]) -> dict[str, Stored]:
        """The objects of ``ids`` that are in ``key``."""

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
    async def post(self, data: bytes) -> None:
        """Append a client message for the simulation (``world.messages()``)."""

    @abc.abstractmethod
    def read_posts(self) -> AsyncIterator[bytes]:
        """Client messages posted from now on, in order."""
