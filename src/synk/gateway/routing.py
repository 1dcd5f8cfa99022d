"""Which clients follow which keys, and what each message means for them (pure).

The gateway decodes each message from the store once, into a
:class:`Routed`, and forwards the very same bytes to every client that
should get it. Move filtering (a client following both keys of a moving
object gets only the ``mod`` with ``nsKey``) and the stale-message filter
of a snapshot window are decided here.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["Routed", "Router", "replay", "route"]


@dataclass(frozen=True, slots=True)
class Routed:
    """A message from the store, with what routing needs to know of it."""

    data: bytes
    method: str
    id: str | None
    version: int | None
    prev_key: str | None
    leaves: bool

    @property
    def is_object(self) -> bool:
        """Whether it is an add, mod or rem (not a custom message)."""
        return self.id is not None


def route(data: bytes) -> Routed:
    """Decode a store message once."""
    try:
        msg: Any = orjson.loads(data)
    except orjson.JSONDecodeError:
        return Routed(data, "", None, None, None, False)
    if not isinstance(msg, dict):
        return Routed(data, "", None, None, None, False)
    method = msg.get("method")
    if method not in ("add", "mod", "rem"):
        return Routed(data, str(method), None, None, None, False)
    v = msg.get("v")
    return Routed(
        data,
        method,
        str(msg.get("id")),
        v if isinstance(v, int) else None,
        msg.get("psKey") if method == "add" else None,
        method == "rem" or (method == "mod" and "nsKey" in msg),
    )


def replay(buffered: list[Routed], versions: dict[str, int]) -> list[bytes]:
    """What to send of messages that raced with a snapshot.

    ``versions`` are the snapshot's objects and versions. For an object in
    the snapshot, only messages with a higher version (and ``rem``) are
    news. For one not in it, its messages before its last departure (``rem``
    or ``mod`` with ``nsKey``) came before the snapshot and are dropped;
    what follows (starting with an ``add``) came after it.
    """
    last_leave: dict[str, int] = {}
    for i, m in enumerate(buffered):
        if m.id is not None and m.id not in versions and m.leaves:
            last_leave[m.id] = i
    out = []
    for i, m in enumerate(buffered):
        if m.id is None:
            out.append(m.data)
        elif m.id in versions:
            if m.version is None or m.version > versions[m.id]:
                out.append(m.data)
        elif i > last_leave.get(m.id, -1):
            out.append(m.data)
    return out


class Router:
    """Reference-counted key subscriptions of clients.

    ``add`` and ``remove`` say when a key gains its first client or loses
    its last one, which is when the store subscription changes.
    """

    def __init__(self) -> None:
        self._clients: dict[str, set[Hashable]] = {}

    def add(self, client: Hashable, key: str) -> bool:
        """Client follows key; True if the key had no client before."""
        clients = self._clients.get(key)
        if clients is None:
            self._clients[key] = {client}
            return True
        clients.add(client)
        return False

    def remove(self, client: Hashable, key: str) -> bool:
        """Client stops following key; True if it was the key's last client."""
        clients = self._clients.get(key)
        if clients is None or client not in clients:
            return False
        clients.discard(client)
        if not clients:
            del self._clients[key]
            return True
        return False

    def clients(self, key: str) -> set[Hashable]:
        """The clients following key (do not mutate)."""
        return self._clients.get(key, _EMPTY)

    def keys(self) -> list[str]:
        """Every key with at least one client."""
        return list(self._clients)

    def __len__(self) -> int:
        return len(self._clients)


_EMPTY: set[Hashable] = set()
