"""Which clients follow which keys, and what each message means for them (pure).

The gateway decodes each message from the store once, into a
:class:`Routed`, and forwards the very same bytes to every client that
should get it. What a message means (``prev_key``, ``leaves``) and the
stale-message filter of a snapshot window (:func:`replay`) are decided
here; the gateway's fan-out applies them per client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Generic, TypeVar

import orjson

__all__ = ["Routed", "Router", "replay", "replay_routed", "route"]

F = TypeVar("F")


@dataclass(frozen=True, slots=True)
class Routed:
    """A message from the store, with what routing needs to know of it."""

    data: bytes
    method: str
    id: str | None
    version: int | None
    prev_key: str | None
    leaves: bool
    inc: str | None = None
    #: the key a ``mod`` with ``nsKey`` moves the object to
    next_key: str | None = None


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
    inc = msg.get("i")
    return Routed(
        data,
        method,
        str(msg.get("id")),
        v if isinstance(v, int) else None,
        msg.get("psKey") if method == "add" else None,
        method == "rem" or (method == "mod" and "nsKey" in msg),
        inc if isinstance(inc, str) else None,
        msg.get("nsKey") if method == "mod" else None,
    )


def replay(buffered: Sequence[Routed], snapshot: Mapping[str, tuple[int, str]]) -> list[bytes]:
    """What to send of messages that raced with a snapshot (see :func:`replay_routed`)."""
    return [m.data for m in replay_routed(buffered, snapshot)]


def replay_routed(buffered: Sequence[Routed], snapshot: Mapping[str, tuple[int, str]]) -> list[Routed]:
    """The messages to send of those that raced with a snapshot.

    ``snapshot`` maps the snapshot's objects to their (version, incarnation).
    Each object's messages are in publish order, and the snapshot was taken
    at one point of that order, so:

    - for an object in the snapshot, messages of its incarnation are news
      when their version is above the snapshot's (a ``rem`` always is); once
      that incarnation has left the key, everything after is news, and
      messages of other incarnations before that are from before it;
    - for an object not in the snapshot, its messages up to its last
      departure (``rem`` or ``mod`` with ``nsKey``) came before the snapshot;
      what follows (starting with an ``add``) came after it.
    """
    last_leave: dict[str, int] = {}
    for i, m in enumerate(buffered):
        if m.id is not None and m.id not in snapshot and m.leaves:
            last_leave[m.id] = i
    ended: set[str] = set()
    out: list[Routed] = []
    for i, m in enumerate(buffered):
        oid = m.id
        if oid is None:
            out.append(m)
        elif oid in snapshot:
            version, inc = snapshot[oid]
            if oid in ended:
                out.append(m)
            elif (m.inc is None or m.inc == inc) and (m.version is None or m.version > version):
                out.append(m)
                if m.leaves:
                    ended.add(oid)
        elif i > last_leave.get(oid, -1):
            out.append(m)
    return out


class Router(Generic[F]):
    """Reference-counted key subscriptions of clients, each with what the fan-out needs of it.

    ``add`` and ``remove`` say when a key gains its first client or loses
    its last one, which is when the store subscription changes. Each
    (client, key) carries a follower value (the gateway's: the session and
    its state of the key), so that fan-out goes from a key straight to its
    followers: no lookup of the client, then of its key, per message and client.
    """

    def __init__(self) -> None:
        self._clients: dict[str, dict[str, F]] = {}

    def add(self, client: str, key: str, follower: F) -> bool:
        """Client follows key (``follower`` replaces what it had); True if the key had no client before."""
        clients = self._clients.get(key)
        if clients is None:
            self._clients[key] = {client: follower}
            return True
        clients[client] = follower
        return False

    def remove(self, client: str, key: str) -> bool:
        """Client stops following key; True if it was the key's last client."""
        clients = self._clients.get(key)
        if clients is None or clients.pop(client, _MISSING) is _MISSING:
            return False
        if not clients:
            del self._clients[key]
            return True
        return False

    def clients(self, key: str) -> Mapping[str, F]:
        """The clients following key, each with its follower value (do not mutate)."""
        return self._clients.get(key, _EMPTY)

    def keys(self) -> list[str]:
        """Every key with at least one client."""
        return list(self._clients)

    def __len__(self) -> int:
        return len(self._clients)


_MISSING = object()
_EMPTY: Mapping[str, Any] = MappingProxyType({})
