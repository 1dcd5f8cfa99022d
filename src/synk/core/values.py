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

__all__ = ["MAX_SAFE_INT", "FrozenDict", "FrozenList", "freeze", "thaw"]

MAX_SAFE_INT = 2**53 - 1


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
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        # A str subclass (a str Enum, say) is stored as the plain string it holds.
        return value if type(value) is str else str.__str__(value)
    if isinstance(value, int):
        if -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
            return int(value)
        raise ValidationError(f"{where}: integer {value} is outside JavaScript's safe range of ±{MAX_SAFE_INT}")
    if isinstance(value, float):
        if math.isfinite(value):
            return float(value)
        raise ValidationError(f"{where}: float {value} is not finite and has no JSON form")
    if isinstance(value, (list, tuple)):
        if isinstance(value, FrozenList):
            return value
        return FrozenList(freeze(item, f"{where}[{i}]") for i, item in enumerate(value))
    if isinstance(value, dict):
        if isinstance(value, FrozenDict):
            return value
        out = {}
        for k, item in value.items():
            if not isinstance(k, str):
                raise ValidationError(f"{where}: dict key {k!r} is a {type(k).__name__}; JSON keys must be strings")
            out[k] = freeze(item, f"{where}[{k!r}]")
        return FrozenDict(out)
    raise ValidationError(f"{where}: a {type(value).__name__} cannot be encoded as JSON")


def thaw(value: Any) -> Any:
    """A plain, mutable deep copy of a frozen value."""
    if isinstance(value, list):
        return [thaw(v) for v in value]
    if isinstance(value, dict):
        return {k: thaw(v) for k, v in value.items()}
    return value
