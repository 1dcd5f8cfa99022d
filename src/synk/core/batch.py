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
from typing import TYPE_CHECKING

from synk.core.messages import encode_add, encode_mod, encode_rem
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
    create); ``new_key`` is where a move takes it. ``record`` is what the
    store keeps (the object's ``add`` message without ``psKey``);
    ``message`` is published on ``key`` and ``new_message`` on ``new_key``.
    """

    kind: Kind
    id: str
    type: str
    token: str
    key: str
    version: int
    record: bytes | None
    message: bytes
    new_key: str | None = None
    new_message: bytes | None = None

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
    or objects also in ``created`` / ``deleted`` (those win).
    """
    created = list(created)
    changed = [o for o in changed if o._synk_base]
    # Every new key is checked before anything is touched, so that a bad
    # sub_key leaves the whole batch pending instead of half-planned.
    keys: dict[int, str] = {}
    for obj in (*created, *changed):
        try:
            keys[id(obj)] = obj._synk_current_key()
        except SynkError as exc:
            raise ValidationError(f"{obj.type_key} {obj.id!r}: {exc}") from None
    writes: list[Write] = []
    done: set[str] = set()
    for obj in created:
        key = keys[id(obj)]
        obj._synk_commit()
        obj._synk_token = new_token()
        obj._synk_version = 1
        obj._synk_skey = key
        record = encode_add(obj.type_key, obj.id, key, 1, obj._synk_values, inc=obj._synk_token)
        writes.append(Write(Kind.CREATE, obj.id, obj.type_key, obj._synk_token, key, 1, record, record))
        done.add(obj.id)
    for obj in deleted:
        gone = obj._synk_skey
        assert gone is not None
        writes.append(
            Write(
                Kind.DELETE,
                obj.id,
                obj.type_key,
                obj._synk_token,
                gone,
                obj._synk_version,
                None,
                encode_rem(obj.type_key, obj.id, gone, inc=obj._synk_token),
            )
        )
        done.add(obj.id)
    for obj in changed:
        if obj.id in done:
            continue
        done.add(obj.id)
        old = obj._synk_skey
        assert old is not None
        new = keys[id(obj)]
        diff = obj._synk_commit()
        version = obj._synk_version + 1
        obj._synk_version = version
        record = encode_add(obj.type_key, obj.id, new, version, obj._synk_values, inc=obj._synk_token)
        if new == old:
            writes.append(
                Write(
                    Kind.UPDATE,
                    obj.id,
                    obj.type_key,
                    obj._synk_token,
                    old,
                    version,
                    record,
                    encode_mod(obj.type_key, obj.id, old, version, diff, inc=obj._synk_token),
                )
            )
            continue
        obj._synk_skey = new
        writes.append(
            Write(
                Kind.MOVE,
                obj.id,
                obj.type_key,
                obj._synk_token,
                old,
                version,
                record,
                encode_mod(obj.type_key, obj.id, old, version, diff, next_key=new, inc=obj._synk_token),
                new_key=new,
                new_message=encode_add(obj.type_key, obj.id, new, version, obj._synk_values, prev_key=old, inc=obj._synk_token),
            )
        )
    return writes
