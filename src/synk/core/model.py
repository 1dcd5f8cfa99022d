"""``synk.Object``: a Python object whose fields are tracked as diffs.

A subclass declares its fields as annotated class attributes with defaults
and a ``sub_key`` (a property derived from fields, or a plain ``sub_key: str``
field)::

    class Agent(synk.Object):
        type_key = "agent"
        x: int = 0
        name: str = ""

        @property
        def sub_key(self) -> str:
            return f"world:{self.x // 16}"

Reading a field gives its pending value. Assigning a value different from
the committed one records it in ``diff``; assigning the committed value back
removes it (the design note's rule: a:0, set 1, set 0 leaves no diff).
"""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING, Any, ClassVar

from synk.core.fieldtypes import SUPPORTED, FieldType, Unsupported, compile_annotation, resolve
from synk.core.names import check_id, check_key, new_id
from synk.core.values import MAX_SAFE_INT, freeze, thaw
from synk.errors import ConfigError, ValidationError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Object", "field_names"]

_FINITE_MAX = sys.float_info.max
_FINITE_MIN = -_FINITE_MAX
_RESERVED = frozenset({"id", "version", "diff", "changed", "state", "type_key"})
_TYPE_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


class _Missing:
    def __repr__(self) -> str:
        return "<required>"


_MISSING: Any = _Missing()


class _Field:
    """The descriptor that stands for one synced field on the class."""

    __slots__ = ("default", "name")

    def __init__(self, name: str, default: Any) -> None:
        self.name = name
        self.default = default

    def __get__(self, obj: Object | None, owner: type | None = None) -> Any:
        if obj is None:
            return self.default
        return obj._synk_values[self.name]

    def __set__(self, obj: Object, value: Any) -> None:
        # Only for object.__setattr__(obj, ...): Object.__setattr__ handles fields itself.
        obj._synk_set(self.name, value)


def _same(a: Any, b: Any) -> bool:
    # 1, 1.0 and True are equal in Python but not to a JS client.
    return type(a) is type(b) and a == b


def _is_classvar(annotation: object) -> bool:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return "ClassVar" in text.split("[", 1)[0]


def _field_type(cls: type, name: str, annotation: Any, globalns: dict[str, Any], localns: dict[str, Any]) -> FieldType:
    """The compiled annotation of field ``name``, or a ConfigError naming the class and field."""
    if isinstance(annotation, str):
        text = annotation
    else:
        text = annotation.__qualname__ if isinstance(annotation, type) else repr(annotation).replace("typing.", "")
    try:
        resolved = resolve(annotation, globalns, localns)
    except Exception as exc:  # whatever evaluating the annotation raised
        raise ConfigError(
            f"{cls.__name__}.{name}: annotation {text!r} cannot be resolved ({type(exc).__name__}: {exc}); synk reads annotations"
            " when the class is defined, so the names they use must exist at module level by then"
        ) from None
    try:
        return compile_annotation(resolved)
    except Unsupported as exc:
        raise ConfigError(f"{cls.__name__}.{name}: annotation {text!r} is not supported: {exc}; supported: {SUPPORTED}") from None


class Object:
    """Base class of synced objects.

    Attributes: ``id`` (str), ``version`` (int, 0 until created), ``diff``
    (dict of pending changes), ``changed`` (bool), ``state()`` (every field,
    pending values included) and ``sub_key`` (the interest area).

    Each field's annotation is checked on assignment (and in the
    constructor): a value that does not fit raises ``synk.ValidationError``
    and records nothing. Supported: ``int``, ``float`` (an int is stored as a
    float), ``str``, ``bool``, ``X | None``, ``list[X]``, ``tuple[X, ...]``,
    ``dict[str, X]``, ``Literal[...]``, nested, and ``Any`` to opt out (the
    value must still be JSON). Any other annotation is a ``ConfigError`` when
    the class is defined. See ``synk.core.fieldtypes``.

    Assigning a name that is neither a field nor declared by the class (a
    property, a ``ClassVar``, a method) raises ``AttributeError``, with the
    field it was probably meant to be. Attributes kept on the object but
    never synced (a cache, a handle) take a name starting with ``_``::

        class Agent(synk.Object):
            type_key = "agent"
            x: int = 0
            _path: list[int]  # local to this process: not a field, not sent

        agent._path = [1, 2]  # fine; agent.pth = [] raises AttributeError
    """

    type_key: ClassVar[str] = ""
    _synk_fields: ClassVar[dict[str, Any]] = {}
    _synk_types: ClassVar[dict[str, FieldType]] = {}
    #: field name to the exact value types taken on the fast path of assignment
    _synk_accept: ClassVar[dict[str, frozenset[type]]] = {}

    _synk_id: str
    _synk_values: dict[str, Any]
    _synk_base: dict[str, Any]
    _synk_version: int
    _synk_token: str
    _synk_skey: str | None
    _synk_world: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fields: dict[str, Any] = dict(cls._synk_fields)
        ftypes: dict[str, FieldType] = dict(cls._synk_types)
        module = sys.modules.get(cls.__module__)
        globalns: dict[str, Any] = dict(vars(module)) if module is not None else {}
        localns: dict[str, Any] = dict(vars(cls))
        for name, annotation in cls.__dict__.get("__annotations__", {}).items():
            if name.startswith("_") or _is_classvar(annotation):
                continue
            if name in _RESERVED:
                raise ConfigError(f"{cls.__name__}.{name}: {name!r} is reserved by synk.Object and cannot be a field")
            ftype = _field_type(cls, name, annotation, globalns, localns)
            default = cls.__dict__.get(name, _MISSING)
            if isinstance(default, _Field):
                default = default.default
            if default is not _MISSING:
                default = ftype.convert(default, f"{cls.__name__}.{name} default")
            fields[name] = default
            ftypes[name] = ftype
            setattr(cls, name, _Field(name, default))
        cls._synk_fields = fields
        cls._synk_types = ftypes
        cls._synk_accept = {name: t.exact for name, t in ftypes.items()}

    def __init__(self, id: str | None = None, **fields: Any) -> None:
        cls = type(self)
        oid = new_id() if id is None else check_id(id)
        values: dict[str, Any] = {}
        for name, default in cls._synk_fields.items():
            if name in fields:
                values[name] = cls._synk_types[name].convert(fields.pop(name), f"{cls.type_key or cls.__name__} {oid!r} field {name!r}")
            elif default is _MISSING:
                raise ValidationError(f"{cls.__name__} {oid!r}: field {name!r} has no default and was not given")
            else:
                values[name] = default
        if fields:
            raise ValidationError(f"{cls.__name__} has no field(s) {', '.join(sorted(fields))}")
        # Straight into the instance dict: these are internals, not fields.
        vars(self).update(
            _synk_id=oid, _synk_values=values, _synk_base={}, _synk_version=0, _synk_token="", _synk_skey=None, _synk_world=None
        )

    # -- public attributes -------------------------------------------------

    @property
    def id(self) -> str:
        """The object's id: unique across the store."""
        return self._synk_id

    @property
    def version(self) -> int:
        """1 once created; each flush that carries a change adds 1."""
        return self._synk_version

    @property
    def diff(self) -> dict[str, Any]:
        """The pending changes: field name to new value."""
        values = self._synk_values
        return {name: values[name] for name in self._synk_base}

    @property
    def changed(self) -> bool:
        """Whether any field has a pending change."""
        return bool(self._synk_base)

    def state(self) -> dict[str, Any]:
        """Every field with its current value, pending values included (a plain copy)."""
        return {name: thaw(value) for name, value in self._synk_values.items()}

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self._synk_values.items())
        return f"{type(self).__name__}(id={self._synk_id!r}, v={self._synk_version}, {fields})"

    # -- internals used by the world ----------------------------------------

    def _synk_set(self, name: str, value: Any) -> None:
        """Assign ``name``: a field is checked and its change recorded; see ``__setattr__``."""
        try:
            accept = self._synk_accept[name]
        except KeyError:
            self._synk_set_other(name, value)
            return
        kind = type(value)
        # The hot path of a simulation: a plain scalar of a type the field
        # takes needs only the JSON checks, and the error location is only
        # built when something is wrong.
        if not (
            kind in accept
            and (
                (kind is str and value.isascii())
                or (kind is float and _FINITE_MIN <= value <= _FINITE_MAX)
                or (kind is int and -MAX_SAFE_INT <= value <= MAX_SAFE_INT)
                or kind is bool
                or value is None
            )
        ):
            value = self._synk_types[name].convert(value, f"{self.type_key or type(self).__name__} {self._synk_id!r} field {name!r}")
            kind = type(value)
        base = self._synk_base
        values = self._synk_values
        # _same(), inlined: this runs on every assignment.
        if name in base:
            old = base[name]
            if kind is type(old) and value == old:
                del base[name]
            values[name] = value
            return
        old = values[name]
        if kind is type(old) and value == old:
            return
        if not base and self._synk_world is not None:
            self._synk_world._mark(self)
        base[name] = old
        values[name] = value

    if not TYPE_CHECKING:
        # Every assignment, fields and others, in one call (no descriptor
        # call on top). Hidden from type checkers, which would otherwise take
        # any attribute name as assignable and miss the typos this catches.
        __setattr__ = _synk_set

    def _synk_set_other(self, name: str, value: Any) -> None:
        """Assign a name that is not a field: a local (``_name``) or declared attribute, else AttributeError."""
        cls = type(self)
        if name.startswith("_") or any(name in vars(k) or name in vars(k).get("__annotations__", {}) for k in cls.__mro__):
            object.__setattr__(self, name, value)
            return
        import difflib

        names = [*cls._synk_fields, *(n for k in cls.__mro__[:-1] for n in vars(k) if not n.startswith("_") and n not in cls._synk_fields)]
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"its fields are {', '.join(cls._synk_fields) or 'none'}"
        raise AttributeError(
            f"{cls.__name__} {self._synk_id!r} has no field or attribute {name!r}; {hint}"
            " (an attribute kept on the object but never synced takes a name starting with '_')"
        )

    def _synk_discard(self) -> None:
        """Drop pending changes, going back to the committed values."""
        self._synk_values.update(self._synk_base)
        self._synk_base = {}

    def _synk_current_key(self) -> str:
        # sub_key is the subclass's: a property or a field (checked at registration).
        return check_key(getattr(self, "sub_key"))  # noqa: B009

    @classmethod
    def _synk_restore(cls, oid: str, state: Mapping[str, Any], version: int, token: str, key: str) -> Object:
        """Build an object from stored state, bypassing ``__init__``.

        Stored values are frozen but not checked against the annotations:
        synk wrote them, and a class changed since must still load them.
        """
        obj = cls.__new__(cls)
        values: dict[str, Any] = {}
        for name, default in cls._synk_fields.items():
            values[name] = freeze(state[name], f"{cls.type_key} {oid!r} field {name!r}") if name in state else default
        vars(obj).update(
            _synk_id=oid, _synk_values=values, _synk_base={}, _synk_version=version, _synk_token=token, _synk_skey=key, _synk_world=None
        )
        return obj

    @classmethod
    def _synk_check_class(cls) -> None:
        """Refuse a class that cannot be synced: no type_key or no sub_key."""
        if not isinstance(cls.type_key, str) or _TYPE_RE.fullmatch(cls.type_key) is None:
            raise ConfigError(f"{cls.__name__}.type_key is {cls.type_key!r}; set it to 1 to 64 letters, digits, '_', '.' or '-'")
        if not hasattr(cls, "sub_key") and "sub_key" not in cls._synk_fields:
            raise ConfigError(f"{cls.__name__} has no sub_key; define a sub_key property or a sub_key: str field")


def field_names(cls: type[Object]) -> list[str]:
    """The names of a synced class's fields, in declaration order."""
    return list(cls._synk_fields)
