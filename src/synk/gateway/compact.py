"""Compact mods: a client that declares ``synk_compact=1`` gets most ``mod``s in a fraction of the bytes.

A ``mod`` names its object in full (``t``, ``id``, ``sKey``, ``i``, and the
field names ``method``/``diff``), about 80 of a mod's 110 bytes. Here each
object a compact client is sent an ``add`` of gets a small integer, its
*handle*, in that add (``"h"``); the object's later plain mods (no move)
go as a *key's mods*, ``[sKey, [h, v, diff], [h, v, diff], ...]``: the
client knows ``t``, ``id`` and ``i`` from the handle's add. PROTOCOL.md,
"Compact mods", is the contract; this module is the gateway's half, pure
(no I/O), shared by every compact client of one gateway.

Why handles are the gateway's, not each connection's: a key's message is
converted once and the same bytes go to every compact client of the key,
as the full message goes to every other. That holds because a client that
gets an object's mod always got its add first on this connection (a key's
snapshot sends every object it holds, and an object arriving in a key is
an ``add``; PROTOCOL.md, "Subscribing"), and every add a compact client
gets carries the handle. A handle is never given to another object (they
only grow), so a stale one can only be unknown to a client, never wrong:
the client then asks for the key's snapshot again (``resync``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

__all__ = ["Compactor"]

_ADD = b'{"method":"add",'
_MOD = b'{"method":"mod",'
_REM = b'{"method":"rem",'
#: Converted messages kept for the other compact clients of the same fan-out round, at most.
CACHE_MOST = 50_000


class Compactor:
    """The handles of one gateway, and the compact form of each message (cached for a round)."""

    def __init__(self, followed: Callable[[str], bool]) -> None:
        #: (object id, incarnation) -> (handle, the key of its last add converted)
        self.handles: dict[tuple[str, str], tuple[int, str]] = {}
        #: key -> the objects with a handle whose last converted add was in it
        self.by_key: dict[str, set[tuple[str, str]]] = {}
        self._next = 1
        #: does any client of this gateway follow this key (a move into one nobody follows drops the handle)
        self._followed = followed
        self._cache: dict[bytes, bytes] = {}

    def new_round(self) -> None:
        """Forget the converted messages: a new fan-out round (or a handle dropped) may convert them differently."""
        self._cache.clear()

    def convert(self, data: bytes) -> bytes:
        """The compact form of one message (itself, when it has none)."""
        out = self._cache.get(data)
        if out is not None:
            return out
        if data.startswith(_MOD):
            out = self._mod(data)
        elif data.startswith(_ADD):
            out = self._add(data)
        elif data.startswith(_REM):
            out = self._rem(data)
        else:
            return data  # snap, resnap, error, custom messages: as they are
        if len(self._cache) >= CACHE_MOST:
            self._cache.clear()
        self._cache[data] = out
        return out

    def convert_run(self, run: list[bytes], joined: bytes) -> bytes:
        """One key's messages, in order, as batch-frame items joined by commas; consecutive short mods share one item.

        ``joined``: the messages joined by commas (made once for all clients), the key of the cache.
        """
        out = self._cache.get(joined)
        if out is not None:
            return out
        parts: list[bytes] = []
        shorts: list[bytes] = []  # entries of the key's-mods item being built
        head = b""
        for data in run:
            item = self.convert(data)
            if item[:1] == b"[":
                # [sKey,[h,v,diff]]: its sKey is the run's key; gather the entries. A
                # key has no "[" (PROTOCOL.md, Words): the first ",[" ends the sKey.
                start = item.index(b",[")
                if not shorts:
                    head = item[:start]
                shorts.append(item[start + 1 : -1])
                continue
            if shorts:
                parts.append(head + b"," + b",".join(shorts) + b"]")
                shorts = []
            parts.append(item)
        if shorts:
            parts.append(head + b"," + b",".join(shorts) + b"]")
        out = b",".join(parts)
        if len(self._cache) >= CACHE_MOST:
            self._cache.clear()
        self._cache[joined] = out
        return out

    def forget_key(self, key: str) -> None:
        """No client of this gateway follows ``key`` any more: drop the handles of its objects."""
        objects = self.by_key.pop(key, None)
        if objects:
            for obj in objects:
                self.handles.pop(obj, None)
            self._cache.clear()

    def _bind(self, obj: tuple[str, str], key: str) -> int:
        known = self.handles.get(obj)
        if known is not None:
            handle, was = known
            if was == key:
                return handle
            self._unfile(obj, was)
        else:
            handle = self._next
            self._next += 1
        self.handles[obj] = (handle, key)
        self.by_key.setdefault(key, set()).add(obj)
        return handle

    def _unfile(self, obj: tuple[str, str], key: str) -> None:
        objects = self.by_key.get(key)
        if objects is not None:
            objects.discard(obj)
            if not objects:
                del self.by_key[key]

    def _drop(self, obj: tuple[str, str]) -> None:
        known = self.handles.pop(obj, None)
        if known is not None:
            self._unfile(obj, known[1])

    def _add(self, data: bytes) -> bytes:
        msg = _load(data)
        if msg is None:
            return data
        handle = self._bind((msg["id"], msg.get("i") or ""), msg["sKey"])
        return b'{"h":%d,%b' % (handle, data[1:])

    def _mod(self, data: bytes) -> bytes:
        msg = _load(data)
        if msg is None:
            return data
        obj = (msg["id"], msg.get("i") or "")
        moved_to = msg.get("nsKey")
        if moved_to is not None:
            # A move stays whole (the client must see nsKey). The handle follows the
            # object, unless no client here follows its new key: none will need it.
            known = self.handles.get(obj)
            if known is not None and not self._followed(moved_to):
                self._drop(obj)
            return data
        known = self.handles.get(obj)
        if known is None:
            return data  # no compact client was sent its add yet: the full mod is always understood
        return b"[%b,[%d,%d,%b]]" % (orjson.dumps(msg["sKey"]), known[0], msg["v"], orjson.dumps(msg["diff"]))

    def _rem(self, data: bytes) -> bytes:
        msg = _load(data)
        if msg is not None:
            self._drop((msg["id"], msg.get("i") or ""))
        return data


def _load(data: bytes) -> dict[str, Any] | None:
    """The message, if it is an object message of the expected shape (else it is passed on whole)."""
    try:
        msg = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(msg, dict) or not isinstance(msg.get("id"), str) or not isinstance(msg.get("sKey"), str):
        return None
    if msg.get("method") == "mod" and not (isinstance(msg.get("v"), int) and isinstance(msg.get("diff"), dict)):
        return None
    return msg
