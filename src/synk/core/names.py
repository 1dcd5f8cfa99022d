"""Object ids and subscription keys: how they are made and what is allowed.

Both end up inside Redis key names (``synk:{KEY}:o``, ``synk:id:{ID}``) and,
unescaped, inside JSON messages, so braces (Redis hash tags), double quotes,
backslashes, whitespace and control characters are refused everywhere, and
``:`` in ids (the original synk's separator).
"""

from __future__ import annotations

import re
import secrets

from synk.errors import ValidationError

__all__ = ["MAX_ID_LENGTH", "MAX_KEY_LENGTH", "check_id", "check_key", "new_id", "new_token", "new_tokens"]

MAX_ID_LENGTH = 128
MAX_KEY_LENGTH = 200

_ID_RE = re.compile(r"[A-Za-z0-9_.\-~+=@#|/,!$%&*;<>?^`'()\[\]]+")
_KEY_RE = re.compile(r"[A-Za-z0-9_.:|/@#+=,~\-]+")


def new_id() -> str:
    """A random, URL-safe object id with 128 bits of entropy (22 characters)."""
    return secrets.token_urlsafe(16)


def new_token() -> str:
    """A random incarnation token (48 bits), written with an object when it is created.

    It tells incarnations of one id apart (the id deleted and created again,
    or created by two processes), and rides in every message as ``"i"``, so
    it is kept short.
    """
    return secrets.token_hex(6)


def new_tokens(count: int) -> list[str]:
    """``count`` tokens as ``new_token()`` makes them, from one read of the system's randomness."""
    pool = secrets.token_hex(6 * count)
    return [pool[i : i + 12] for i in range(0, 12 * count, 12)]


def check_id(value: object) -> str:
    """Return ``value`` if it is a valid object id, else raise ValidationError."""
    if not isinstance(value, str):
        raise ValidationError(f"object id must be a string, not {type(value).__name__}")
    if not value:
        raise ValidationError("object id is empty")
    if len(value) > MAX_ID_LENGTH:
        raise ValidationError(f"object id is {len(value)} characters long, over the limit of {MAX_ID_LENGTH}")
    if _ID_RE.fullmatch(value) is None:
        bad = next(ch for ch in value if _ID_RE.fullmatch(ch) is None)
        raise ValidationError(
            f"object id {value!r} contains {bad!r}; ids may not contain ':', braces, quotes, backslashes, whitespace or control characters"
        )
    return value


def check_key(value: object) -> str:
    """Return ``value`` if it is a valid subscription key, else raise ValidationError."""
    if type(value) is str and value in _GOOD_KEYS:
        return value
    _check_key(value)
    if len(_GOOD_KEYS) >= _GOOD_KEYS_MAX:
        # A bounded cache: keys repeat tick after tick, and a world has far
        # fewer distinct keys than writes.
        _GOOD_KEYS.clear()
    _GOOD_KEYS.add(value)  # type: ignore[arg-type]
    return value  # type: ignore[return-value]


_GOOD_KEYS: set[str] = set()
_GOOD_KEYS_MAX = 100_000


def _check_key(value: object) -> None:
    if not isinstance(value, str):
        raise ValidationError(f"subscription key must be a string, not {type(value).__name__}")
    if not value:
        raise ValidationError("subscription key is empty")
    if len(value) > MAX_KEY_LENGTH:
        raise ValidationError(f"subscription key is {len(value)} characters long, over the limit of {MAX_KEY_LENGTH}")
    if _KEY_RE.fullmatch(value) is None:
        bad = next(ch for ch in value if _KEY_RE.fullmatch(ch) is None)
        raise ValidationError(f"subscription key {value[:50]!r} contains {bad!r}; allowed are letters, digits and _ . : | / @ # + = , ~ -")
