"""Every error synk raises, under one root.

::

    SynkError
     ├── ConfigError          a bad URL, option or type registry
     ├── ValidationError      a bad id, subscription key or field value (also a ValueError)
     │    └── FrozenValueError   in-place mutation of a synced list or dict (also a TypeError)
     ├── ConnectionError      the store cannot be reached, or the connection broke
     ├── WriteError           a flush was not applied in full; lists each failed object
     └── ProtocolError        a client sent something the gateway refuses; carries a wire ``code``

Messages are lowercase facts with the numbers in them, so that a log line
says what was wrong without a debugger.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass

__all__ = [
    "ConfigError",
    "ConnectionError",
    "Failure",
    "FrozenValueError",
    "ProtocolError",
    "SynkError",
    "ValidationError",
    "WriteError",
]


class SynkError(Exception):
    """The root of every error synk raises."""


class ConfigError(SynkError):
    """A URL, option or type registry that synk cannot work with."""


class ValidationError(SynkError, ValueError):
    """A value that synk refuses: an id, a subscription key, a field value."""


class FrozenValueError(ValidationError, TypeError):
    """A synced list or dict was mutated in place; assign a new value instead."""


class ConnectionError(SynkError, builtins.ConnectionError):
    """The store could not be reached in time, or the connection broke."""


@dataclass(frozen=True)
class Failure:
    """One object whose write a flush could not apply.

    ``reason`` is one of ``"exists"`` (a create found the id taken),
    ``"missing"`` (the object is no longer in the store), ``"conflict"``
    (another incarnation or an unexpected version is stored), ``"refused"``
    (the store refused the write, out of memory say; ``detail`` says what
    was not applied), ``"connection"`` (the outcome is unknown because the
    store broke) or ``"error"`` (the store answered something unforeseen,
    which was logged; the outcome is unknown).
    """

    id: str
    type: str
    op: str
    reason: str
    detail: str = ""

    def __str__(self) -> str:
        text = f"{self.op} of {self.type} {self.id!r}: {self.reason}"
        return f"{text} ({self.detail})" if self.detail else text


class WriteError(SynkError):
    """A flush whose writes did not all land; ``failures`` names each object."""

    def __init__(self, failures: list[Failure]) -> None:
        self.failures = list(failures)
        shown = "; ".join(str(f) for f in self.failures[:5])
        more = f"; and {len(self.failures) - 5} more" if len(self.failures) > 5 else ""
        super().__init__(f"{len(self.failures)} object write(s) failed: {shown}{more}")


class ProtocolError(SynkError):
    """A client message the gateway refuses; ``code`` is stable on the wire."""

    def __init__(self, code: str, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"{code}: {reason}")
