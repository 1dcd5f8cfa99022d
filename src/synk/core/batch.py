"""Turning a world's pending changes into the operations of one flush.

A flush is planned here, purely, then handed to a store backend. Planning
fixes what the flush sends (later changes belong to the next one): it takes
each object's diff as committed, advances its version by exactly 1 and
encodes its state and diff as JSON, so the backend only assembles bytes.

The plan is a set of operations on subscription keys. Each one carries a
guard: the incarnation ``token`` written at create time and a version. A
backend applies an operation only if the stored object matches, which
closes the design note's outstanding issue (a modification must never land
on another object that took the same id).

An operation is a plain tuple, ``Op``: a flush makes thousands, and a tuple
of strings, bytes and ints is soon left alone by the garbage collector, so
a large world does not trigger full collections at every flush::

    (code, type, id, token, version, state, diff, other)

``code``
    ``u`` update; ``t`` take out (a move's first half, on the old key);
    ``d`` delete; ``c`` create, pending (a create's first half: stored but
    hidden until its id is claimed); ``a`` activate a pending create (its
    second half); ``p`` put (a move's second half, on the new key, or a
    repair); ``x`` sweep a mark (below) once it is no longer needed
``version``
    the version the object has once the operation lands (for ``d`` and
    ``x``: the version it has now)
``state``, ``diff``
    every field, and the changed fields, as JSON (``b""`` where unused)
``other``
    for ``t`` the key it moves to; for a ``p`` of a move the key it came
    from; for ``x`` the mark swept; else ``""``

What a store keeps per object id in a key is ``token:version``, a newline,
then either the object's record (an ``add`` message, so it starts with
``{``) or a *mark* left by a write that is half-way: ``>KEY`` newline
record (moved out to KEY, with its record there), ``?`` record (a create
whose id claim is not yet known to have landed) or ``!`` (deleted, its id
not yet known to be released). Marks are never shown to clients; they let
anyone complete or undo a write whose writer died half-way (see
``synk.store.base``), which is how a flush of two round trips stays safe
without a transaction across keys (Redis Cluster has none).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

import orjson

from synk.core.messages import add_json, mod_json, rem_json, update_json
from synk.core.names import new_tokens
from synk.errors import SynkError, ValidationError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from synk.core.model import Object

__all__ = [
    "DELETED",
    "LIVE",
    "MOVED",
    "PENDING",
    "Batch",
    "Kind",
    "Op",
    "apply_op",
    "expected",
    "guard",
    "kind",
    "message",
    "plan",
    "put_of",
    "record",
    "stored",
    "sweep_of",
    "wire",
]

Op = tuple[str, str, str, str, int, bytes, bytes, str]

#: The first byte after a stored value's guard line: a live record, or one of the marks.
LIVE, MOVED, PENDING, DELETED = "{", ">", "?", "!"


class Kind(str, Enum):
    """What a write does to the stored object (as failures report it)."""

    CREATE = "create"
    UPDATE = "update"
    MOVE = "move"
    DELETE = "delete"


_KINDS = {"u": Kind.UPDATE, "t": Kind.MOVE, "d": Kind.DELETE, "c": Kind.CREATE, "a": Kind.CREATE}


def kind(op: Op) -> Kind:
    """The kind of write an operation belongs to."""
    code = op[0]
    if code == "p":
        return Kind.MOVE if op[7] else Kind.CREATE
    if code == "x":
        return {MOVED: Kind.MOVE, PENDING: Kind.CREATE}.get(op[7], Kind.DELETE)
    return _KINDS[code]


def guard(op: Op) -> bytes:
    """The guard line stored with the object once ``op`` lands: ``token:version\n``."""
    return b"%b:%d\n" % (op[3].encode(), op[4])


def expected(op: Op) -> bytes:
    """What the stored value must start with for ``op`` to apply (``b""``: see ``apply_op``)."""
    code = op[0]
    if code in "ut":
        return b"%b:%d\n{" % (op[3].encode(), op[4] - 1)
    if code == "d":
        return b"%b:%d\n{" % (op[3].encode(), op[4])
    if code in "ca":
        return b"%b:1\n?" % op[3].encode()
    if code == "x":
        return b"%b:%d\n%b" % (op[3].encode(), op[4], op[7].encode())
    return b""


def record(key: str, op: Op) -> bytes:
    """The object's record in ``key`` once ``op`` lands: its ``add`` message, without ``psKey``."""
    return add_json(op[1], op[2], key, op[4], op[5], None, op[3])


def stored(key: str, op: Op) -> bytes:
    """What a store keeps for an update or put: the guard line, then the record."""
    return guard(op) + record(key, op)


def message(key: str, op: Op) -> bytes:
    """What ``op`` publishes on ``key`` when it lands (``b""``: nothing; ``a`` publishes its stored record)."""
    code, t, oid, token, version, state, diff, other = op
    if code == "p":
        return add_json(t, oid, key, version, state, other or None, token)
    if code == "d":
        return rem_json(t, oid, key, token)
    if code in "ut":
        return mod_json(t, oid, key, version, diff, other or None, token)
    return b""


def wire(key: str, op: Op) -> tuple[bytes, bytes, bytes]:
    """What a store needs of ``op`` in ``key``: ``(expected(op), value to store or b"", message)``.

    The same bytes as those functions give, each encoded once: an update's
    record and message share their names.
    """
    code, t, oid, token, version, state, diff, other = op
    if code == "u":
        rec, msg = update_json(t, oid, key, version, state, diff, token)
        inc = token.encode()
        return b"%b:%d\n{" % (inc, version - 1), b"%b:%d\n%b" % (inc, version, rec), msg
    if code == "p":
        return b"", guard(op) + record(key, op), message(key, op)
    if code == "t":
        # The mark keeps the object's record in its new key: whoever finds the
        # move half-way can put it there.
        mark = b"%b>%b\n%b" % (guard(op), other.encode(), record(other, op))
        return expected(op), mark, message(key, op)
    if code == "d":
        return expected(op), guard(op) + DELETED.encode(), message(key, op)
    if code == "c":
        return expected(op), guard(op) + PENDING.encode() + record(key, op), b""
    return expected(op), b"", b""


def apply_op(current: bytes | None, key: str, op: Op) -> tuple[int, bytes | None, bytes]:
    """The rule apply.lua follows for one operation, for stores written in Python.

    Returns ``(code, value, message)``: code 0 applied, 1 missing, 2
    conflict; the value to store once applied (``None``: remove the field)
    and the message to publish (``b""``: none).
    """
    code = op[0]
    exp, value, msg = wire(key, op)
    if code == "p":  # absent, or a mark (the object is not live here)
        nl = -1 if current is None else current.find(b"\n")
        if current is not None and current[nl + 1 : nl + 2] == b"{":
            return 2, None, b""
    elif code == "c":  # absent, or this same pending create (sent again)
        if current is not None and not current.startswith(exp):
            return 2, None, b""
    elif current is None:
        return 1, None, b""
    elif not current.startswith(exp):
        nl = current.find(b"\n")
        return (2 if current[nl + 1 : nl + 2] == b"{" else 1), None, b""  # a mark is not the object
    if code == "x":
        return 0, None, b""
    if code == "a":
        assert current is not None
        rec = current[len(exp) :]
        return 0, exp[:-1] + rec, rec
    return 0, value, msg


def put_of(key: str, op: Op) -> Op:
    """The second half of a move: the put into the new key of take-out ``op`` from ``key``."""
    return ("p", op[1], op[2], op[3], op[4], op[5], b"", key)


def sweep_of(op: Op, mark: str) -> Op:
    """The sweep of the mark ``op`` left (``t``: MOVED, ``d``: DELETED, ``c``: PENDING)."""
    return ("x", op[1], op[2], op[3], op[4], b"", b"", mark)


@dataclass(slots=True)
class Batch:
    """The operations of one flush.

    ``ops`` holds, per key, the operations of the first phase (``c``, ``u``,
    ``t``, ``d``); ``creates``, ``moves`` and ``deletes`` point into it
    (key, index) at the writes whose second phase (activation once the id is
    claimed, put into the new key, release of the id) waits for them.
    ``sweeps`` are marks left by earlier flushes, removed first. A repair
    (``World.reload()``, ``World.load()``) also has ``repairs``, puts of the
    second phase given outright, and ``releases``, deletes that landed whose
    id is to be released (their ``d`` ops).
    """

    ops: dict[str, list[Op]] = field(default_factory=dict)
    creates: list[tuple[str, int]] = field(default_factory=list)
    moves: list[tuple[str, int]] = field(default_factory=list)
    deletes: list[tuple[str, int]] = field(default_factory=list)
    sweeps: dict[str, list[Op]] = field(default_factory=dict)
    repairs: dict[str, list[Op]] = field(default_factory=dict)
    releases: list[tuple[str, Op]] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(map(len, self.ops.values()))

    def writes(self) -> Iterator[tuple[str, Op]]:
        """Every object's write, as (key, operation): creates first."""
        for key, i in self.creates:
            yield key, self.ops[key][i]
        for key, ops in self.ops.items():
            for op in ops:
                if op[0] != "c":
                    yield key, op


def plan(created: Iterable[Object], changed: Iterable[Object], deleted: Iterable[Object]) -> Batch:
    """The operations of one flush; commits diffs and advances versions of the objects.

    ``changed`` may hold objects without a pending change (they are skipped)
    or objects also in ``created`` / ``deleted`` (those win). Raises
    ValidationError, leaving every object as it was, when a new key is
    invalid or a value cannot be encoded.
    """
    created, deleted = list(created), list(deleted)
    done = {o._synk_id for o in created} | {o._synk_id for o in deleted}
    changed = list({o._synk_id: o for o in changed if o._synk_base and o._synk_id not in done}.values())
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
    try:
        batch = _encode(created, changed, deleted, keys)
    except TypeError as exc:  # orjson's error; values are checked on assignment, so only a bypass gets here
        for obj in (*created, *changed):
            _check_encodes(obj)
        raise ValidationError(f"the flush cannot be encoded as JSON: {exc}") from exc
    _commit(created, changed, keys, batch)
    return batch


def _encode(created: list[Object], changed: list[Object], deleted: list[Object], keys: list[str]) -> Batch:
    """The operations, touching no object (a failure leaves the flush pending)."""
    batch = Batch()
    groups = batch.ops
    dumps = orjson.dumps
    for obj, key, token in zip(created, keys, new_tokens(len(created)), strict=False):
        in_key = groups.setdefault(key, [])
        batch.creates.append((key, len(in_key)))
        in_key.append(("c", obj.type_key, obj._synk_id, token, 1, dumps(obj._synk_values), b"", ""))
    for obj in deleted:
        gone = obj._synk_skey
        assert gone is not None
        in_key = groups.setdefault(gone, [])
        batch.deletes.append((gone, len(in_key)))
        in_key.append(("d", obj.type_key, obj._synk_id, obj._synk_token, obj._synk_version, b"", b"", ""))
    for obj, new in zip(changed, keys[len(created) :], strict=True):
        oid = obj._synk_id
        values = obj._synk_values
        diff = {}
        for name in obj._synk_base:  # a loop: cheaper than a comprehension's frame, per object
            diff[name] = values[name]
        old = obj._synk_skey
        assert old is not None
        ops = groups.get(old)
        if ops is None:
            ops = groups[old] = []
        if new == old:
            ops.append(("u", obj.type_key, oid, obj._synk_token, obj._synk_version + 1, dumps(values), dumps(diff), ""))
        else:
            batch.moves.append((old, len(ops)))
            ops.append(("t", obj.type_key, oid, obj._synk_token, obj._synk_version + 1, dumps(values), dumps(diff), new))
    return batch


def _commit(created: list[Object], changed: list[Object], keys: list[str], batch: Batch) -> None:
    """Take the planned changes as committed: new versions and keys, nothing pending."""
    # Straight into each instance dict: Object.__setattr__ is for fields, and
    # going through it here would cost every write a Python call per line.
    for obj, (key, i) in zip(created, batch.creates, strict=True):
        op = batch.ops[key][i]
        d = obj.__dict__
        d["_synk_base"] = {}
        d["_synk_token"] = op[3]
        d["_synk_version"] = 1
        d["_synk_skey"] = key
    for obj, new in zip(changed, keys[len(created) :], strict=True):
        d = obj.__dict__
        d["_synk_base"] = {}
        d["_synk_version"] += 1
        d["_synk_skey"] = new


def _check_encodes(obj: Object) -> None:
    for name, value in obj._synk_values.items():
        try:
            orjson.dumps(value)
        except TypeError as exc:
            raise ValidationError(f"{obj.type_key} {obj.id!r} field {name!r} cannot be encoded as JSON: {exc}") from None
    try:
        orjson.dumps(obj._synk_values)
    except TypeError as exc:
        raise ValidationError(f"{obj.type_key} {obj.id!r} cannot be encoded as JSON: {exc}") from None
