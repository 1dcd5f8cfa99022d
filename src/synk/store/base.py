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
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from synk.core.batch import Kind, Write
from synk.errors import Failure

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

__all__ = ["CONFLICT", "MISSING", "OK", "REFUSED", "Event", "KeyOp", "Store", "Stored", "Subscriber", "op_message"]

#: Result codes of guarded operations, shared with the Lua scripts; REFUSED
#: is the store refusing the whole call (out of memory, say): nothing applied.
OK, MISSING, CONFLICT, REFUSED = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class Stored:
    """One object as stored: its guard and its record (an ``add`` message)."""

    id: str
    token: str
    version: int
    record: bytes

    @classmethod
    def parse(cls, oid: str, meta: str, record: bytes) -> Stored:
        """Build from the stored ``token:version`` guard and record."""
        token, _, version = meta.rpartition(":")
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


#: One guarded operation on a subscription key: (op, write), op being
#: u (update), t (take out: a move's first half), d (delete) or p (put: a
#: create, or a move's second half). Tuples, since a flush makes thousands.
KeyOp = tuple[str, Write]


def op_message(op: str, w: Write) -> bytes:
    """What an operation publishes on its key."""
    if op == "p" and w.kind is Kind.MOVE:
        message = w.new_message
        assert message is not None
        return message
    return w.message


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
    async def _phase1(self, claims: list[Write], groups: dict[str, list[KeyOp]]) -> tuple[list[int], dict[str, list[int]]]:
        """Claim each create's id (OK, or CONFLICT when another incarnation holds
        it) and apply each key's guarded operations atomically (a code per
        operation), as one batch of calls."""

    @abc.abstractmethod
    async def _phase2(self, releases: list[Write], groups: dict[str, list[KeyOp]]) -> dict[str, list[int]]:
        """Apply each key's puts (a code per operation) and release the ids of
        deleted objects, as one batch of calls."""

    async def apply(self, writes: list[Write]) -> list[Failure]:
        """Apply one flush's writes; returns the ones that did not land."""
        failures: list[Failure] = []
        claims: list[Write] = []
        groups: dict[str, list[KeyOp]] = defaultdict(list)
        for w in writes:
            kind = w.kind
            if kind is Kind.CREATE:
                claims.append(w)
            else:
                groups[w.key].append(("u" if kind is Kind.UPDATE else "t" if kind is Kind.MOVE else "d", w))
        claimed, results = await self._phase1(claims, groups)
        puts: dict[str, list[KeyOp]] = defaultdict(list)
        releases: list[Write] = []
        for w, code in zip(claims, claimed, strict=True):
            if code == OK:
                puts[w.key].append(("p", w))
            elif code == REFUSED:
                failures.append(Failure(w.id, w.type, w.kind.value, "refused", "the store refused the write"))
            else:
                failures.append(Failure(w.id, w.type, w.kind.value, "exists", "another object has this id"))
        for key, ops in groups.items():
            codes = results[key]
            if not any(codes) and not any(op != "u" for op, _ in ops):
                continue  # the common case: every update landed
            for (op, w), code in zip(ops, codes, strict=True):
                if code != OK:
                    reason = {MISSING: "missing", CONFLICT: "conflict"}.get(code, "refused")
                    failures.append(Failure(w.id, w.type, w.kind.value, reason, f"in key {key!r}, expected {w.expected}"))
                elif op == "t":
                    assert w.new_key is not None
                    puts[w.new_key].append(("p", w))
                elif op == "d":
                    releases.append(w)
        if puts or releases:
            put = await self._phase2(releases, puts)
            for key, ops in puts.items():
                for (_op, w), code in zip(ops, put[key], strict=True):
                    if code != OK:
                        failures.append(Failure(w.id, w.type, w.kind.value, "refused", f"the store refused the write into key {key!r}"))
        return failures

    @abc.abstractmethod
    async def snapshot(self, key: str) -> list[Stored]:
        """Every object in ``key``, read atomically."""

    @abc.abstractmethod
    async def fetch(self, key: str, ids: list[str]) -> dict[str, Stored]:
        """The objects of ``ids`` that are in ``key``."""

    @abc.abstractmethod
    async def publish(self, key: str, data: bytes) -> None:
        """Send ``data`` to the subscribers of ``key``."""

    @abc.abstractmethod
    def subscriber(self) -> Subscriber:
        """A new subscriber, with no keys yet."""

    @abc.abstractmethod
    async def post(self, data: bytes) -> None:
        """Append a client message for the simulation (``world.messages()``)."""

    @abc.abstractmethod
    def read_posts(self) -> AsyncIterator[bytes]:
        """Client messages posted from now on, in order."""
