"""Client → gateway messages: parsing and validation (pure).

Every frame a client sends goes through :func:`parse`, which returns a
command or raises :class:`synk.ProtocolError` with a stable wire code
(PROTOCOL.md lists them). Nothing here does I/O.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import orjson

from synk.core.messages import RESERVED_METHODS
from synk.core.names import check_key
from synk.core.values import MAX_DEPTH
from synk.errors import ProtocolError, ValidationError

__all__ = [
    "Custom",
    "Resync",
    "UpdateSubscription",
    "encode_error",
    "encode_hello",
    "encode_resnap",
    "encode_snap",
    "parse",
]

#: Codes of ``error`` messages, stable on the wire.
BAD_JSON = "bad_json"
BAD_MESSAGE = "bad_message"
BAD_KEY = "bad_key"
TOO_MANY_KEYS = "too_many_keys"
FORBIDDEN = "forbidden"
NOT_SUBSCRIBED = "not_subscribed"
RATE_LIMITED = "rate_limited"
UNKNOWN_METHOD = "unknown_method"
UNAVAILABLE = "unavailable"
INTERNAL = "internal"

#: Close codes.
CLOSE_GOING_AWAY = 1001
CLOSE_TOO_BIG = 1009
CLOSE_RESTART = 1012
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
#: The close codes of refused connections, and their reasons: final, a client does not reconnect.
REFUSALS = {CLOSE_UNAUTHORIZED: "unauthorized", CLOSE_FORBIDDEN: "origin not allowed"}
CLOSE_TOO_SLOW = 4408

_MAX_METHOD = 64


@dataclass(frozen=True, slots=True)
class UpdateSubscription:
    """Add and remove subscription keys."""

    add: tuple[str, ...]
    remove: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Resync:
    """Send fresh snapshots of these keys."""

    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Custom:
    """Any other method: for a gateway handler and the simulation."""

    method: str
    data: dict[str, Any]


Command = UpdateSubscription | Resync | Custom


def _keys(msg: dict[str, Any], field: str, max_keys: int) -> tuple[str, ...]:
    value = msg.get(field, [])
    if not isinstance(value, list):
        raise ProtocolError(BAD_MESSAGE, f"{msg['method']}.{field} must be a list of keys, not {type(value).__name__}")
    if len(value) > max_keys:
        raise ProtocolError(TOO_MANY_KEYS, f"{msg['method']}.{field} has {len(value)} keys, over the limit of {max_keys}")
    out = []
    for i, key in enumerate(value):
        if not isinstance(key, str):
            raise ProtocolError(BAD_MESSAGE, f"{msg['method']}.{field}[{i}] must be a string, not {type(key).__name__}")
        try:
            # Interned: the clients of a key share one string (10,000 clients on 10
            # keys each hold 100,000 references, not 100,000 copies). Interned
            # strings are freed with their last reference.
            out.append(sys.intern(check_key(key)))
        except ValidationError as exc:
            raise ProtocolError(BAD_KEY, f"{msg['method']}.{field}[{i}]: {exc}") from None
    return tuple(dict.fromkeys(out))


def _only(msg: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(msg) - allowed)
    if unknown:
        shown = ", ".join(repr(u[:40]) for u in unknown[:5])
        raise ProtocolError(BAD_MESSAGE, f"{msg['method']} has unknown field(s) {shown}")


def _depth(value: Any) -> int:
    """How many lists and dicts deep ``value`` is (0 for a scalar), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def _check_depth(frame: str | bytes, data: dict[str, Any]) -> None:
    # orjson parses up to 1,024 levels but encodes only 254: a deeper custom
    # message could not be forwarded (nor a handler's reply built from it),
    # and would fail inside the gateway. The same bound as field values.
    opening = frame.count(b"[") + frame.count(b"{") if isinstance(frame, bytes) else frame.count("[") + frame.count("{")
    if opening <= MAX_DEPTH:
        return  # too few brackets to be that deep: the common case costs two scans
    depth = max((_depth(v) for v in data.values()), default=0)
    if depth > MAX_DEPTH:
        raise ProtocolError(BAD_MESSAGE, f"custom message fields are nested {depth} levels deep, over the limit of {MAX_DEPTH}")


_SUB_FIELDS = frozenset({"method", "add", "remove"})
_RESYNC_FIELDS = frozenset({"method", "keys"})


def parse(frame: str | bytes, max_keys: int = 1000) -> Command:
    """The command in one client frame; raises ProtocolError when refused."""
    try:
        msg = orjson.loads(frame)
    except orjson.JSONDecodeError:
        size = len(frame if isinstance(frame, bytes) else frame.encode(errors="replace"))
        raise ProtocolError(BAD_JSON, f"frame of {size} bytes is not valid JSON") from None
    if not isinstance(msg, dict):
        raise ProtocolError(BAD_JSON, f"frame is a JSON {type(msg).__name__}, not an object")
    method = msg.get("method")
    if not isinstance(method, str) or not method or len(method) > _MAX_METHOD:
        raise ProtocolError(BAD_MESSAGE, f"'method' must be a string of 1 to {_MAX_METHOD} characters")
    if method == "updateSubscription":
        _only(msg, _SUB_FIELDS)
        return UpdateSubscription(_keys(msg, "add", max_keys), _keys(msg, "remove", max_keys))
    if method == "resync":
        _only(msg, _RESYNC_FIELDS)
        return Resync(_keys(msg, "keys", max_keys))
    if method in RESERVED_METHODS:
        raise ProtocolError(BAD_MESSAGE, f"method {method!r} is sent by the gateway, not to it")
    data = {k: v for k, v in msg.items() if k != "method"}
    _check_depth(frame, data)
    return Custom(method, data)


def encode_error(code: str, reason: str) -> bytes:
    """An ``error`` message."""
    return orjson.dumps({"method": "error", "code": code, "reason": reason})


def encode_hello(client: str) -> bytes:
    """The first message of a connection."""
    return orjson.dumps({"method": "hello", "client": client})


def encode_resnap(keys: list[str]) -> bytes:
    """Notice that the gateway re-snapshots these keys on its own."""
    return orjson.dumps({"method": "resnap", "keys": keys})


def encode_snap(key: str, ids: list[str]) -> bytes:
    """The end of a key's snapshot, naming every object in it."""
    return orjson.dumps({"method": "snap", "sKey": key, "ids": ids})
