"""The Redis store's Lua scripts, and its writes encoded as RESP calls of them (no I/O).

Each script lives in ``lua/``, one per file with a KEYS/ARGV header, and is
called by SHA. The encoders here turn a flush's operations into the calls
the store sends: ``apply.lua`` per key (a chunk of operations each), ``SET NX
GET`` per claimed id, ``release.lua`` per freed id. Each call is ``(slot key,
RESP bytes)``: the slot key routes it on a Redis Cluster.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import TYPE_CHECKING

from synk.core.batch import wire
from synk.store.resp import bulk

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from synk.core.batch import Op
    from synk.store.resp import Call

__all__ = ["CHUNK", "LOADED", "Script", "apply_calls", "claim_calls", "evalsha_head", "release_calls"]

SCRIPTS = ("apply", "release", "post")
#: Operations per apply.lua call: bounds how long one call blocks Redis, and
#: keeps its unpack() calls (HMGET, HSET) within Lua's limit of about 8,000 values.
CHUNK = 2000


class Script:
    """One Lua script: its text and its SHA1 (what EVALSHA names)."""

    __slots__ = ("body", "sha")

    def __init__(self, name: str) -> None:
        self.body = resources.files("synk.store").joinpath(f"lua/{name}.lua").read_text("utf-8")
        self.sha = hashlib.sha1(self.body.encode()).hexdigest()


#: Every script, by name.
LOADED = {name: Script(name) for name in SCRIPTS}


def evalsha_head(script: str, keys: list[bytes], nargs: int) -> bytes:
    """The start of an EVALSHA command whose ``nargs`` arguments follow."""
    sha = LOADED[script].sha.encode()
    head = b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%b\r\n%b" % (3 + len(keys) + nargs, sha, bulk(b"%d" % len(keys)))
    return head + b"".join(map(bulk, keys))


def claim_calls(id_key: Callable[[str], str], ops: list[Op]) -> list[Call]:
    """A claim of each create's id for its incarnation."""
    # SET NX GET (Redis 7): sets the id's token unless the id is taken, and
    # answers what was there, so a retry by the same incarnation succeeds.
    command = b"*5\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$2\r\nNX\r\n$3\r\nGET\r\n"
    out = []
    for op in ops:
        name, token = id_key(op[2]).encode(), op[3].encode()
        out.append((name, command % (len(name), name, len(token), token)))
    return out


def release_calls(id_key: Callable[[str], str], ops: list[Op]) -> list[Call]:
    """A release.lua call per id freed (by the incarnation that holds it)."""
    out = []
    for op in ops:
        name = id_key(op[2]).encode()
        out.append((name, evalsha_head("release", [name], 1) + bulk(op[3].encode())))
    return out


def apply_calls(
    objects_key: Callable[[str], str], channel_of: Callable[[str], str], groups: dict[str, list[Op]], index: list[tuple[str, int]]
) -> Iterator[Call]:
    """apply.lua calls of each key's operations, encoded lazily; ``index`` records (key, count) per call.

    Lazily: the store sends the first calls while the rest are encoded.
    """
    types: dict[str, bytes] = {}  # type key -> its bytes: a handful of types, thousands of objects
    for key, ops in groups.items():
        keys = [objects_key(key).encode()]
        channel = bulk(channel_of(key).encode())
        skey = key.encode()
        for start in range(0, len(ops), CHUNK):
            chunk = ops[start : start + CHUNK]
            parts = [b""]  # the head, once the messages are known
            append = parts.append
            messages: list[bytes] = []
            publish = messages.append
            for op in chunk:
                code, t, oid_s, token, version, state, diff, _ = op
                oid = oid_s.encode()
                if code == "u":
                    # Most writes: wire()'s update, made here in one pass (15% less
                    # of this loop's CPU; tests/test_store_encoding.py holds the two
                    # to the same bytes): the names encoded once for the record and
                    # the message, no call per operation.
                    tb = types.get(t)
                    if tb is None:
                        tb = types[t] = t.encode()
                    inc = token.encode()
                    names = b'"t":"%b","id":"%b","sKey":"%b","v":%d,' % (tb, oid, skey, version)
                    tail = b',"i":"%b"}' % inc
                    guard = b"%b:%d\n{" % (inc, version - 1)
                    value = b'%b:%d\n{"method":"add",%b"state":%b%b' % (inc, version, names, state, tail)
                    publish(b'{"method":"mod",%b"diff":%b%b' % (names, diff, tail))
                else:
                    guard, value, message = wire(key, op)
                    publish(message)
                append(b"$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(oid), oid, len(guard), guard, len(value), value))
            codes = "".join([op[0] for op in chunk]).encode()
            parts[0] = evalsha_head("apply", keys, 3 + 3 * len(chunk)) + bulk(codes) + bulk(b"\n".join(messages))
            append(channel)
            index.append((key, len(chunk)))
            yield keys[0], b"".join(parts)
