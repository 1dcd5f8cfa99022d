"""Field values: what can be synced, and freezing of lists and dicts.

A synced list or dict is frozen when it is assigned, so that an in-place
mutation (``obj.items.append(x)``) raises instead of being lost: the diff is
recorded on assignment, and a mutation that bypasses assignment would never
reach a client. Assign a new value instead (``obj.items = [*obj.items, x]``).

Values must survive a trip through JSON to a JavaScript client unchanged, so
integers must be within JavaScript's safe range and floats finite.
"""

from __future__ import annotations

import math
from typing import Any, NoReturn

from synk.errors import FrozenValueError, ValidationError

__all__ = ["MAX_DEPTH", "MAX_SAFE_INT", "FrozenDict", "FrozenList", "freeze", "thaw"]

MAX_SAFE_INT = 2**53 - 1
#: Lists and dicts nested in a field value, at most: well within the 254
#: levels orjson encodes (a message wraps the value in two more), so that a
#: value accepted on assignment can always be encoded when it is flushed.
MAX_DEPTH = 128


def _refuse(*_args: object, **_kwargs: object) -> NoReturn:
    raise FrozenValueError("synced lists and dicts are immutable; assign a new value to the field instead")


class FrozenList(list[Any]):
    """A list whose mutating methods raise FrozenValueError."""

    __slots__ = ()
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenList, (list(self),))


class FrozenDict(dict[str, Any]):
    """A dict whose mutating methods raise FrozenValueError."""

    __slots__ = ()
    pop = popitem = clear = update = setdefault = _refuse
    __setitem__ = __delitem__ = __ior__ = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))


def freeze(value: Any, where: str) -> Any:
    """Check that ``value`` is JSON-safe and return it with containers frozen.

    ``where`` names the object and field for the error message.
    """
    return _freeze(value, where, 0)


def _freeze(value: Any, where: str, depth: int) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        # A str subclass (a str Enum, say) is stored as the plain string it holds.
        return _text(value if type(value) is str else str.__str__(value), where)
    if isinstance(value, int):
        if -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
            return int(value)
        raise ValidationError(f"{where}: integer {value} is outside JavaScript's safe range of ±{MAX_SAFE_INT}")
    if isinstance(value, float):
        if math.isfinite(value):
            return float(value)
        raise ValidationError(f"{where}: float {value} is not finite and has no JSON form")
    if isinstance(value, (list, tuple, dict)) and depth >= MAX_DEPTH:
        raise ValidationError(f"{where}: lists and dicts are nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, (FrozenList, FrozenDict)):
        # Checked when it was frozen; nested into a new value, it adds its levels.
        if depth and depth + _levels(value) > MAX_DEPTH:
            raise ValidationError(f"{where}: lists and dicts are nested more than {MAX_DEPTH} levels deep")
        return value
    if isinstance(value, (list, tuple)):
        return FrozenList(_freeze(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value))
    if isinstance(value, dict):
        out = {}
        for k, item in value.items():
            if not isinstance(k, str):
                raise ValidationError(f"{where}: dict key {k!r} is a {type(k).__name__}; JSON keys must be strings")
            name = _text(k if type(k) is str else str.__str__(k), f"{where} key")
            out[name] = _freeze(item, f"{where}[{name!r}]", depth + 1)
        return FrozenDict(out)
    raise ValidationError(f"{where}: a {type(value).__name__} cannot be encoded as JSON")


def _text(value: str, where: str) -> str:
    # JSON is UTF-8: a lone surrogate (from a bad decode, say) has no encoding.
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            bad = value[exc.start]
            raise ValidationError(f"{where}: string holds the lone surrogate {bad!r} at {exc.start}, which UTF-8 cannot encode") from None
    return value


def _levels(value: Any) -> int:
    """How many lists and dicts deep ``value`` is (0 for a scalar)."""
    if isinstance(value, list):
        return 1 + max(map(_levels, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_levels, value.values()), default=0)
    return 0


def thaw(value: Any) -> Any:
    """A plain, mutable deep copy of a frozen value."""
    if isinstance(value, list):
        return [thaw(v) for v in value]
    if isinstance(value, dict):
        return {k: thaw(v) for k, v in value.items()}
    return value
