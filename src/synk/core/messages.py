"""Encoding of the messages published to subscription keys (see PROTOCOL.md).

Field names match the original synk-js client: ``method``, ``t``, ``id``,
``sKey``, ``v``, ``state`` / ``diff``, and ``psKey`` / ``nsKey`` on moves.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["RESERVED_METHODS", "encode", "encode_add", "encode_mod", "encode_rem"]

#: Methods a custom message may not use: the gateway gives them meaning.
RESERVED_METHODS = frozenset({"add", "mod", "rem", "snap", "hello", "error", "updateSubscription", "resync"})

encode = orjson.dumps


def encode_add(t: str, oid: str, key: str, v: int, state: dict[str, Any], prev_key: str | None = None, inc: str | None = None) -> bytes:
    """An ``add`` message: the whole object; ``prev_key`` when it moved in.

    ``inc`` names the object's incarnation: versions count within one, so a
    client seeing an ``add`` of another incarnation takes it whatever its
    version (the id was deleted and created again, or the store was reset).
    """
    msg: dict[str, Any] = {"method": "add", "t": t, "id": oid, "sKey": key, "v": v, "state": state}
    if inc is not None:
        msg["i"] = inc
    if prev_key is not None:
        msg["psKey"] = prev_key
    return orjson.dumps(msg)


def encode_mod(t: str, oid: str, key: str, v: int, diff: dict[str, Any], next_key: str | None = None, inc: str | None = None) -> bytes:
    """A ``mod`` message: changed fields; ``next_key`` when it moves out of ``key``."""
    msg: dict[str, Any] = {"method": "mod", "t": t, "id": oid, "sKey": key, "v": v, "diff": diff}
    if inc is not None:
        msg["i"] = inc
    if next_key is not None:
        msg["nsKey"] = next_key
    return orjson.dumps(msg)


def encode_rem(t: str, oid: str, key: str, inc: str | None = None) -> bytes:
    """A ``rem`` message: the object was deleted."""
    msg: dict[str, Any] = {"method": "rem", "t": t, "id": oid, "sKey": key}
    if inc is not None:
        msg["i"] = inc
    return orjson.dumps(msg)
