"""Field annotations, compiled: what a field accepts, checked on assignment.

A synced field's annotation says what its value may be, and that promise
reaches JavaScript (``synk types`` writes it as TypeScript), so synk holds
the field to it. Each annotation is resolved and compiled once, when the
class is defined, into a ``FieldType``; an annotation synk cannot check or
cannot send to JavaScript is a ``ConfigError`` then, not at first use.

Supported: ``int``, ``float`` (an int is accepted and stored as a float),
``str``, ``bool``, ``None``, ``X | Y`` (and ``Optional``/``Union``),
``list[X]``, ``tuple[X, ...]``, ``tuple[X, Y]``, ``dict[str, X]``,
``Literal[...]`` of strings, ints, bools and None, any nesting of these,
``Annotated[X, "doc"]`` (the string documents the field) and ``Any``, which
opts out of the check (the value must still be JSON).

A list and a tuple are both JSON arrays: either is accepted for a ``list[X]``
or ``tuple[X, ...]`` field, and stored as a frozen list.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, NoReturn, Union

from synk.core.values import MAX_SAFE_INT, freeze
from synk.errors import ValidationError

__all__ = ["SUPPORTED", "FieldType", "Unsupported", "compile_annotation", "resolve"]

#: What the error messages list as supported.
SUPPORTED = "int, float, str, bool, None, X | Y, list[X], tuple[X, ...], tuple[X, Y], dict[str, X], Literal[...], Any"

_NONE = type(None)
_SCALARS: dict[Any, str] = {int: "int", float: "float", str: "str", bool: "bool", _NONE: "None", None: "None"}
#: The exact types each scalar kind takes as they are (an int for a float is converted first).
_EXACT: dict[str, frozenset[type]] = {
    "int": frozenset({int}),
    "float": frozenset({float}),
    "str": frozenset({str}),
    "bool": frozenset({bool}),
    "None": frozenset({_NONE}),
    "any": frozenset({int, float, str, bool, _NONE}),
}
#: Why the usual suspects are refused, and what to use instead.
_HINTS: dict[Any, str] = {
    set: "a set has no JSON form; use list[X]",
    frozenset: "a frozenset has no JSON form; use list[X]",
    bytes: "bytes have no JSON form; use str (base64, say)",
    bytearray: "bytes have no JSON form; use str (base64, say)",
    list: "say what the list holds: list[X] (list[Any] to opt out)",
    tuple: "say what the tuple holds: tuple[X, ...] or tuple[X, Y]",
    dict: "say what the dict holds: dict[str, X] (dict[str, Any] to opt out)",
    object: "use Any to opt out of the check",
    complex: "a complex number has no JSON form",
}


class Unsupported(Exception):
    """An annotation synk cannot check or send to JavaScript; the message says why."""


class FieldType:
    """One compiled annotation (or a part of one).

    ``kind`` is one of ``any``, ``int``, ``float``, ``str``, ``bool``,
    ``None``, ``literal``, ``list`` (also ``tuple[X, ...]``: ``items``
    holds X), ``tuple`` (fixed length: ``items`` holds each), ``dict``
    (``items`` holds the value type) and ``union`` (``items`` holds the
    members). ``text`` is the Python spelling, used in messages; ``doc`` is
    the string of an ``Annotated[X, "doc"]``, if any.

    ``exact`` is the set of exact types a value may have to be taken as it
    is, with only the JSON checks of scalars: the fast path of assignment.
    Any other value goes through ``convert``.
    """

    __slots__ = ("_keys", "array", "doc", "exact", "items", "kind", "literals", "text", "to_float")

    def __init__(self, kind: str, items: tuple[FieldType, ...] = (), literals: tuple[Any, ...] = (), array: str = "") -> None:
        self.kind = kind
        self.items = items
        self.literals = literals
        #: for kind "list", how the annotation spelled it: "list" or "tuple"
        self.array = array
        self.doc = ""
        self.text = self._spell()
        self.exact: frozenset[type] = _EXACT.get(kind, frozenset())
        if kind == "union":
            self.exact = frozenset().union(*(m.exact for m in items))
        # JSON has one number type: an int assigned where only floats are
        # expected is stored as the float a client reads back anyway, so that
        # 1 then 1.0 is no change.
        kinds = {m.kind for m in items} if kind == "union" else {kind}
        self.to_float = "float" in kinds and not kinds & {"int", "any"}
        self._keys = frozenset(_literal_key(v) for v in literals)

    def _spell(self) -> str:
        k, items = self.kind, self.items
        if k == "any":
            return "Any"
        if k == "literal":
            return f"Literal[{', '.join(repr(v) for v in self.literals)}]"
        if k == "list":
            return f"tuple[{items[0].text}, ...]" if self.array == "tuple" else f"list[{items[0].text}]"
        if k == "tuple":
            return f"tuple[{', '.join(m.text for m in items)}]" if items else "tuple[()]"
        if k == "dict":
            return f"dict[str, {items[0].text}]"
        if k == "union":
            return " | ".join(m.text for m in items)
        return k

    def __repr__(self) -> str:
        return f"<FieldType {self.text}>"

    # -- checking ---------------------------------------------------------------

    def convert(self, value: Any, where: str) -> Any:
        """``value`` checked against this type and frozen (``freeze``), or ValidationError.

        ``where`` names the object and field for the message.
        """
        self._check(value, where)
        # (Beyond the safe range an int stays one, for freeze to refuse it.)
        if self.to_float and type(value) is not bool and isinstance(value, int) and -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
            value = float(value)
        return freeze(value, where)

    def _fits(self, value: Any) -> bool:
        """Whether the outside of ``value`` fits (its items are not looked at)."""
        k = self.kind
        if k == "any":
            return True
        if k in ("int", "float"):
            return type(value) is not bool and isinstance(value, (int, float) if k == "float" else int)
        if k == "str":
            return isinstance(value, str)
        if k == "bool":
            return type(value) is bool
        if k == "None":
            return value is None
        if k == "literal":
            return _literal_key(value) in self._keys
        if k == "list":
            return isinstance(value, (list, tuple))
        if k == "tuple":
            return isinstance(value, (list, tuple)) and len(value) == len(self.items)
        if k == "dict":
            return isinstance(value, dict)
        return any(m._fits(value) for m in self.items)

    def _check(self, value: Any, where: str) -> None:
        k = self.kind
        if k == "union":
            fitting = [m for m in self.items if m._fits(value)]
            if len(fitting) == 1:
                fitting[0]._check(value, where)  # the one candidate: its message points inside
                return
            for member in fitting:
                try:
                    member._check(value, where)
                except ValidationError:
                    continue
                return
            self._refuse(value, where)
        if not self._fits(value):
            self._refuse(value, where)
        if k == "list":
            item = self.items[0]
            if item.kind != "any":
                for i, v in enumerate(value):
                    item._check(v, f"{where}[{i}]")
        elif k == "tuple":
            for i, (item, v) in enumerate(zip(self.items, value, strict=True)):
                item._check(v, f"{where}[{i}]")
        elif k == "dict":
            item = self.items[0]
            for key, v in value.items():
                if not isinstance(key, str):
                    raise ValidationError(f"{where}: expected {self.text}, got a {type(key).__name__} key {key!r}")
                if item.kind != "any":
                    item._check(v, f"{where}[{key!r}]")

    def _refuse(self, value: Any, where: str) -> NoReturn:
        got = "None" if value is None else type(value).__name__
        if isinstance(value, (list, tuple)) and any(m.kind == "tuple" for m in self._members()):
            got += f" of {len(value)}"
        elif isinstance(value, (str, int, float)) and any(m.kind == "literal" for m in self._members()):
            text = repr(value)
            got += f" {text if len(text) <= 40 else text[:37] + '...'}"
        raise ValidationError(f"{where}: expected {self.text}, got {got}")

    def _members(self) -> tuple[FieldType, ...]:
        return self.items if self.kind == "union" else (self,)


def _literal_key(value: Any) -> tuple[type, Any]:
    # Type-aware: Literal[1] takes neither True nor 1.0, as JSON tells them apart.
    # A str or int subclass (a str Enum, say) counts as the plain value it holds.
    if value is None or type(value) is bool:
        return (type(value), value)
    if isinstance(value, str):
        return (str, str.__str__(value))
    if isinstance(value, int):
        return (int, int(value))
    return (type(value), None) if not isinstance(value, float) else (float, value)


# -- compiling -------------------------------------------------------------------


def resolve(annotation: Any, globalns: dict[str, Any], localns: dict[str, Any]) -> Any:
    """The annotation as an object: a string (``from __future__ import annotations``) is evaluated.

    Raises whatever evaluating raises (NameError, say); the caller names the field.
    """
    holder = types.SimpleNamespace(__annotations__={"field": annotation})
    return typing.get_type_hints(holder, globalns, localns, include_extras=True)["field"]


def compile_annotation(annotation: Any) -> FieldType:
    """The ``FieldType`` of a resolved annotation; ``Unsupported`` says why not."""
    doc = ""
    if typing.get_origin(annotation) is typing.Annotated:
        doc = next((m for m in annotation.__metadata__ if isinstance(m, str)), "")
    compiled = _compile(annotation)
    compiled.doc = doc
    return compiled


def _compile(t: Any) -> FieldType:
    origin = typing.get_origin(t)
    args = typing.get_args(t)
    if origin is typing.Annotated:
        return _compile(args[0])
    if t is Any:
        return FieldType("any")
    if isinstance(t, typing.NewType):
        return _compile(t.__supertype__)  # UserId = NewType("UserId", str) is a str on the wire
    if t in _SCALARS if _hashable(t) else False:
        return FieldType(_SCALARS[t])
    if origin in (Union, types.UnionType):
        members: list[FieldType] = []
        for arg in args:
            m = _compile(arg)
            for part in m.items if m.kind == "union" else (m,):
                if part.text not in {x.text for x in members}:
                    members.append(part)
        if any(m.kind == "any" for m in members):
            return FieldType("any")
        return FieldType("union", tuple(members))
    if origin is Literal:
        for v in args:
            if not (v is None or type(v) in (str, int, bool)):
                raise Unsupported(f"Literal value {v!r} is a {type(v).__name__}; JSON literals are str, int, bool or None")
        # Deduplicated by type and value: 1 and True are one dict key but two JSON values.
        return FieldType("literal", literals=tuple({(type(v), v): v for v in args}.values()))
    if origin is list:
        if len(args) != 1:
            raise Unsupported(_HINTS[list])
        return FieldType("list", (_compile(args[0]),), array="list")
    if origin is tuple:
        if t is typing.Tuple:  # noqa: UP006  # the bare typing.Tuple, whose args look like tuple[()]'s
            raise Unsupported(_HINTS[tuple])
        if len(args) == 2 and args[1] is Ellipsis:
            return FieldType("list", (_compile(args[0]),), array="tuple")
        if Ellipsis in args:
            raise Unsupported("a tuple is tuple[X, ...] or tuple[X, Y, ...] without the ellipsis")
        if args == ((),):  # tuple[()] on older spellings
            args = ()
        return FieldType("tuple", tuple(_compile(a) for a in args))
    if origin is dict:
        if len(args) != 2:
            raise Unsupported(_HINTS[dict])
        if args[0] is not str:
            raise Unsupported(f"dict keys are {_name(args[0])}; JSON object keys are strings: use dict[str, X]")
        return FieldType("dict", (_compile(args[1]),))
    hint = _HINTS.get(origin if origin is not None else t) if _hashable(origin if origin is not None else t) else None
    if hint is None:
        hint = f"{_name(t)} is not a JSON value synk knows how to check and send"
        if isinstance(t, type) and t.__module__ == "datetime":
            hint += "; use a float timestamp or an ISO 8601 str"
    raise Unsupported(hint)


def _hashable(t: Any) -> bool:
    try:
        hash(t)
    except TypeError:
        return False
    return True


def _name(t: Any) -> str:
    if isinstance(t, type) and typing.get_origin(t) is None:
        return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
    return repr(t).replace("typing.", "")
