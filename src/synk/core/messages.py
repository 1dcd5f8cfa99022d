"""Encoding of the messages published to subscription keys (see PROTOCOL.md).

Field names match the original synk-js client: ``method``, ``t``, ``id``,
``sKey``, ``v``, ``state`` / ``diff``, and ``psKey`` / ``nsKey`` on moves.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["RESERVED_METHODS", "add_json", "encode_add", "encode_mod", "mod_json", "rem_json", "update_json"]

#: Methods a custom message may not use: the gateway gives them meaning.
RESERVED_METHODS = frozenset({"add", "mod", "rem", "snap", "resnap", "hello", "error", "updateSubscription", "resync"})


# The names in a message (type, id, key, incarnation) are validated to be
# plain printable ASCII without quotes or backslashes (synk.core.names), so
# they go into JSON as they are; only state and diff go through orjson. This
# is the hot path of every flush.


def add_json(t: str, oid: str, key: str, v: int, state: bytes, prev_key: str | None = None, inc: str | None = None) -> bytes:
    """An ``add`` message: the whole object (``state`` already JSON); ``prev_key`` when it moved in.

    ``inc`` names the object's incarnation: versions count within one, so a
    client seeing an ``add`` of another incarnation takes it whatever its
    version (the id was deleted and created again, or the store was reset).
    """
    out = b'{"method":"add","t":"%b","id":"%b","sKey":"%b","v":%d,"state":%b' % (t.encode(), oid.encode(), key.encode(), v, state)
    if inc is not None:
        out += b',"i":"%b"' % inc.encode()
    if prev_key is not None:
        out += b',"psKey":"%b"' % prev_key.encode()
    return out + b"}"


def mod_json(t: str, oid: str, key: str, v: int, diff: bytes, next_key: str | None = None, inc: str | None = None) -> bytes:
    """A ``mod`` message: changed fields (``diff`` already JSON); ``next_key`` when it moves out of ``key``."""
    out = b'{"method":"mod","t":"%b","id":"%b","sKey":"%b","v":%d,"diff":%b' % (t.encode(), oid.encode(), key.encode(), v, diff)
    if inc is not None:
        out += b',"i":"%b"' % inc.encode()
    if next_key is not None:
        out += b',"nsKey":"%b"' % next_key.encode()
    return out + b"}"


def rem_json(t: str, oid: str, key: str, inc: str | None = None) -> bytes:
    """A ``rem`` message: the object was deleted."""
    out = b'{"method":"rem","t":"%b","id":"%b","sKey":"%b"' % (t.encode(), oid.encode(), key.encode())
    if inc is not None:
        out += b',"i":"%b"' % inc.encode()
    return out + b"}"


def encode_add(t: str, oid: str, key: str, v: int, state: dict[str, Any], prev_key: str | None = None, inc: str | None = None) -> bytes:
    """``add_json`` of a state given as a dict."""
    return add_json(t, oid, key, v, orjson.dumps(state), prev_key, inc)


def encode_mod(t: str, oid: str, key: str, v: int, diff: dict[str, Any], next_key: str | None = None, inc: str | None = None) -> bytes:
    """``mod_json`` of a diff given as a dict."""
    return mod_json(t, oid, key, v, orjson.dumps(diff), next_key, inc)


def update_json(t: str, oid: str, key: str, v: int, state: bytes, diff: bytes, inc: str) -> tuple[bytes, bytes]:
    """An update's record and message at once: ``add_json(...)`` and ``mod_json(...)``.

    The two share their names, encoded once: this is what most writes are.
    """
    names = b'"t":"%b","id":"%b","sKey":"%b","v":%d,' % (t.encode(), oid.encode(), key.encode(), v)
    tail = b',"i":"%b"}' % inc.encode()
    return b'{"method":"add",%b"state":%b%b' % (names, state, tail), b'{"method":"mod",%b"diff":%b%b' % (names, diff, tail)
