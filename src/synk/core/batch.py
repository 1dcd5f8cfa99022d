"""Turning a world's pending changes into the writes of one flush.

A flush is planned here, purely, then handed to a store backend. Planning
fixes what the flush sends (later changes belong to the next one): it takes
each object's diff as committed, advances its version by exactly 1 and
encodes the messages, so the backend only moves bytes.

Every write carries a guard: the incarnation ``token`` written at create
time and the version it expects to find. A backend applies a write only if
the stored object matches, which closes the design note's outstanding issue
(a modification must never land on another object that took the same id).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from synk.core.messages import encode_add, encode_mod, encode_rem, encode_update
from synk.core.names import new_token
from synk.errors import SynkError, ValidationError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from synk.core.model import Object

__all__ = ["Kind", "Write", "plan"]


class Kind(str, Enum):
    """What a write does to the stored object."""

    CREATE = "create"
    UPDATE = "update"
    MOVE = "move"
    DELETE = "delete"


@dataclass(slots=True)
class Write:
    """One object's write in a flush.

    ``key`` is where the object is before the write (its new key for a
    create); ``new_key`` is where a move takes it. ``state`` (every field)
    and ``diff`` are copies taken when the flush was called, so encoding can
    wait until the store is ready to send: ``record`` is what the store
    keeps (the object's ``add`` message without ``psKey``), ``message`` is
    published on ``key`` and ``new_message`` on ``new_key``.
    """

    kind: Kind
    id: str
    type: str
    token: str
    key: str
    version: int
    state: dict[str, Any] | None = None
    diff: dict[str, Any] | None = None
    new_key: str | None = None

    @property
    def record(self) -> bytes | None:
        """The stored form: an ``add`` message of this version (None for a delete)."""
        if self.state is None:
            return None
        return encode_add(self.type, self.id, self.new_key or self.key, self.version, self.state, None, self.token)

    @property
    def message(self) -> bytes:
        """Published on ``key``: ``add`` (create), ``mod`` (update, move) or ``rem``."""
        kind = self.kind
        if kind is Kind.CREATE:
            assert self.state is not None
            return encode_add(self.type, self.id, self.key, 1, self.state, None, self.token)
        if kind is Kind.DELETE:
            return encode_rem(self.type, self.id, self.key, self.token)
        assert self.diff is not None
        return encode_mod(self.type, self.id, self.key, self.version, self.diff, self.new_key, self.token)

    @property
    def new_message(self) -> bytes | None:
        """Published on ``new_key`` by a move: an ``add`` with ``psKey``."""
        if self.new_key is None:
            return None
        assert self.state is not None
        return encode_add(self.type, self.id, self.new_key, self.version, self.state, self.key, self.token)

    def encode_update(self) -> tuple[bytes, bytes]:
        """``(record, message)`` of an update, encoded together (the hot path)."""
        assert self.state is not None and self.diff is not None
        return encode_update(self.type, self.id, self.key, self.version, self.state, self.diff, self.token)

    @property
    def meta(self) -> str:
        """The guard value stored after this write: ``token:version``."""
        return f"{self.token}:{self.version}"

    @property
    def expected(self) -> str:
        """The guard value this write expects to find (none for a create)."""
        prev = self.version if self.kind is Kind.DELETE else self.version - 1
        return f"{self.token}:{prev}"


def plan(created: Iterable[Object], changed: Iterable[Object], deleted: Iterable[Object]) -> list[Write]:
    """The writes of one flush; commits diffs and advances versions of the objects.

    ``changed`` may hold objects without a pending change (they are skipped)
    or objects also in ``created`` / ``deleted`` (those win). Nothing is
    encoded here: a flush call stays cheap, and the store encodes as it sends.
    """
    created = list(created)
    changed = list({o._synk_id: o for o in changed if o._synk_base}.values())
    # Every new key is checked before anything is touched, so that a bad
    # sub_key leaves the whole batch pending instead of half-planned.
    try:
        keys = [o._synk_current_key() for o in created] + [o._synk_current_key() for o in changed]
    except SynkError:
        for obj in (*created, *changed):
            try:
                obj._synk_current_key()
            except SynkError as exc:
                raise ValidationError(f"{obj.type_key} {obj.id!r}: {exc}") from None
        raise
    writes: list[Write] = []
    append = writes.append
    done: set[str] = set()
    create, update, move, delete = Kind.CREATE, Kind.UPDATE, Kind.MOVE, Kind.DELETE
    for obj, key in zip(created, keys, strict=False):
        obj._synk_base = {}
        obj._synk_token = new_token()
        obj._synk_version = 1
        obj._synk_skey = key
        append(Write(create, obj._synk_id, obj.type_key, obj._synk_token, key, 1, dict(obj._synk_values)))
        done.add(obj._synk_id)
    for obj in deleted:
        gone = obj._synk_skey
        assert gone is not None
        append(Write(delete, obj._synk_id, obj.type_key, obj._synk_token, gone, obj._synk_version))
        done.add(obj._synk_id)
    for obj, new in zip(changed, keys[len(created) :], strict=True):
        oid = obj._synk_id
        if done and oid in done:
            continue
        values = obj._synk_values
        diff = {}
        for name in obj._synk_base:  # a loop: cheaper than a comprehension's frame, per object
            diff[name] = values[name]
        obj._synk_base = {}
        version = obj._synk_version + 1
        obj._synk_version = version
        old = obj._synk_skey
        # Values are immutable (frozen), so a shallow copy fixes the state.
        if new == old:
            append(Write(update, oid, obj.type_key, obj._synk_token, old, version, dict(values), diff))
        else:
            assert old is not None
            obj._synk_skey = new
            append(Write(move, oid, obj.type_key, obj._synk_token, old, version, dict(values), diff, new))
    return writes
