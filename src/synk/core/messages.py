"""Encoding of the messages published to subscription keys (see PROTOCOL.md).

Field names match the original synk-js client: ``method``, ``t``, ``id``,
``sKey``, ``v``, ``state`` / ``diff``, and ``psKey`` / ``nsKey`` on moves.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["RESERVED_METHODS", "encode_add", "encode_mod", "encode_rem", "encode_update"]

#: Methods a custom message may not use: the gateway gives them meaning.
RESERVED_METHODS = frozenset({"add", "mod", "rem", "snap", "resnap", "hello", "error", "updateSubscription", "resync"})


# The names in a message (type, id, key, incarnation) are validated to be
# plain printable ASCII without quotes or backslashes (synk.core.names), so
# they go into JSON as they are; only state and diff go through orjson. This
# is the hot path of every flush.


def encode_add(t: str, oid: str, key: str, v: int, state: dict[str, Any], prev_key: str | None = None, inc: str | None = None) -> bytes:
    """An ``add`` message: the whole object; ``prev_key`` when it moved in.

    ``inc`` names the object's incarnation: versions count within one, so a
    client seeing an ``add`` of another incarnation takes it whatever its
    version (the id was deleted and created again, or the store was reset).
    """
    out = b'{"method":"add","t":"%b","id":"%b","sKey":"%b","v":%d,"state":%b' % (
        t.encode(),
        oid.encode(),
        key.encode(),
        v,
        orjson.dumps(state),
    )
    if inc is not None:
        out += b',"i":"%b"' % inc.encode()
    if prev_key is not None:
        out += b',"psKey":"%b"' % prev_key.encode()
    return out + b"}"


def encode_mod(t: str, oid: str, key: str, v: int, diff: dict[str, Any], next_key: str | None = None, inc: str | None = None) -> bytes:
    """A ``mod`` message: changed fields; ``next_key`` when it moves out of ``key``."""
    out = b'{"method":"mod","t":"%b","id":"%b","sKey":"%b","v":%d,"diff":%b' % (
        t.encode(),
        oid.encode(),
        key.encode(),
        v,
        orjson.dumps(diff),
    )
    if inc is not None:
        out += b',"i":"%b"' % inc.encode()
    if next_key is not None:
        out += b',"nsKey":"%b"' % next_key.encode()
    return out + b"}"


#: An update's record is ``ADD_HEAD + names + b'"state":' + state + tail``
#: and its message ``MOD_HEAD + names + b'"diff":' + diff + tail``.
ADD_HEAD = b'{"method":"add",'
MOD_HEAD = b'{"method":"mod",'


def update_names(t: bytes, oid: bytes, key: bytes, v: int) -> bytes:
    """The names shared by an update's record and message."""
    return b'"t":"%b","id":"%b","sKey":"%b","v":%d,' % (t, oid, key, v)


def update_tail(inc: bytes) -> bytes:
    """The end shared by an update's record and message."""
    return b',"i":"%b"}' % inc


def encode_update(t: str, oid: str, key: str, v: int, state: dict[str, Any], diff: dict[str, Any], inc: str) -> tuple[bytes, bytes]:
    """An update's record and message at once: ``encode_add(...)`` and ``encode_mod(...)``.

    The two share their names, encoded once: this is what most writes are.
    A store may assemble the same bytes from ``update_names`` and
    ``update_tail`` straight into its wire format.
    """
    names = update_names(t.encode(), oid.encode(), key.encode(), v)
    tail = update_tail(inc.encode())
    return (
        b'%b%b"state":%b%b' % (ADD_HEAD, names, orjson.dumps(state), tail),
        b'%b%b"diff":%b%b' % (MOD_HEAD, names, orjson.dumps(diff), tail),
    )


def encode_rem(t: str, oid: str, key: str, inc: str | None = None) -> bytes:
    """A ``rem`` message: the object was deleted."""
    out = b'{"method":"rem","t":"%b","id":"%b","sKey":"%b"' % (t.encode(), oid.encode(), key.encode())
    if inc is not None:
        out += b',"i":"%b"' % inc.encode()
    return out + b"}"
