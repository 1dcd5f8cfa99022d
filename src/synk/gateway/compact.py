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
#: Ended incarnations remembered (a stale snapshot's add of one would bind it a handle for good).
ENDED_MOST = 10_000
#: Converted messages kept, at most (then they are all forgotten). Every compact client of a
#: key gets the same messages, and every one subscribing gets the same snapshot records: each
#: is converted once. A conversion stays right until a handle is dropped (the cache is then
#: cleared): a handle is only ever added, moved to another key (which no conversion reads),
#: or dropped.
CACHE_MOST = 50_000


class Compactor:
    """The handles of one gateway, and the compact form of each message (cached)."""

    def __init__(self, followed: Callable[[str], bool]) -> None:
        #: (object id, incarnation) -> (handle, the key it is in, the version that says so): the
        #: newest message converted decides where it is, so a stale one (an old snapshot's add,
        #: a move replayed late) can neither file it under a key it left nor drop its handle
        self.handles: dict[tuple[str, str], tuple[int, str, int]] = {}
        #: key -> the objects with a handle that are in it
        self.by_key: dict[str, set[tuple[str, str]]] = {}
        self._next = 1
        #: does a compact client of this gateway follow this key (a move into one none follows
        #: drops the handle: no compact client gets the object's messages there)
        self._followed = followed
        self._cache: dict[bytes, bytes] = {}
        #: incarnations a rem ended, the newest ENDED_MOST: a stale add of one binds no handle
        self._ended: dict[tuple[str, str], None] = {}

    def convert(self, data: bytes) -> bytes:
        """The compact form of one message (itself, when it has none)."""
        out = self._cache.get(data)
        if out is not None:
            return out
        if data.startswith(_MOD):
            out = self._mod(data)
            if out is data:
                return data  # a move (its side effect must run each time), or no handle yet: not cached
        elif data.startswith(_ADD):
            out = self._add(data)
        elif data.startswith(_REM):
            return self._rem(data)  # not cached: dropping the handle must run each time
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
        """No compact client of this gateway follows ``key`` any more: drop the handles of its objects."""
        objects = self.by_key.pop(key, None)
        if objects:
            for obj in objects:
                self.handles.pop(obj, None)
            self._cache.clear()

    def _bind(self, obj: tuple[str, str], key: str, version: int) -> int:
        known = self.handles.get(obj)
        if known is None:
            handle = self._next
            self._next += 1
            self.handles[obj] = (handle, key, version)
            self.by_key.setdefault(key, set()).add(obj)
            return handle
        handle, was, seen = known
        if version >= seen:
            self._place(obj, handle, was, key, version)
        return handle

    def _place(self, obj: tuple[str, str], handle: int, was: str, key: str, version: int) -> None:
        """The object is in ``key`` at ``version`` (the newest message of it converted so far)."""
        if was != key:
            self._unfile(obj, was)
            self.by_key.setdefault(key, set()).add(obj)
        self.handles[obj] = (handle, key, version)

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
            # A cached add would carry the dropped handle without binding it again.
            self._cache.clear()

    def _add(self, data: bytes) -> bytes:
        msg = _load(data)
        if msg is None or not isinstance(msg.get("v"), int):
            return data
        obj = (msg["id"], msg.get("i") or "")
        if obj in self._ended:
            return data  # a stale add of a deleted object: no handle, its mods (none) go whole
        handle = self._bind(obj, msg["sKey"], msg["v"])
        return b'{"h":%d,%b' % (handle, data[1:])

    def _mod(self, data: bytes) -> bytes:
        msg = _load(data)
        if msg is None:
            return data
        obj = (msg["id"], msg.get("i") or "")
        known = self.handles.get(obj)
        if known is None:
            return data  # no compact client was sent its add yet: the full mod is always understood
        handle, was, seen = known
        version: int = msg["v"]
        moved_to = msg.get("nsKey")
        if moved_to is not None:
            # A move stays whole (the client must see nsKey). The handle follows the
            # object, unless no compact client follows its new key: none will need it.
            if version >= seen:
                if self._followed(moved_to):
                    self._place(obj, handle, was, moved_to, version)
                else:
                    self._drop(obj)
            return data
        if version > seen:
            self.handles[obj] = (handle, was, version)
        return b"[%b,[%d,%d,%b]]" % (orjson.dumps(msg["sKey"]), handle, version, orjson.dumps(msg["diff"]))

    def _rem(self, data: bytes) -> bytes:
        msg = _load(data)
        if msg is not None:
            obj = (msg["id"], msg.get("i") or "")
            self._drop(obj)
            if obj[1]:  # (an object without incarnations may come back under the same name)
                self._ended[obj] = None
            if len(self._ended) > ENDED_MOST:
                del self._ended[next(iter(self._ended))]
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
