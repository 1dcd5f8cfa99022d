"""A test client of the gateway: a real websocket, every message recorded.

``mirror`` applies add / mod / rem / snap the simple way (no holding, no
resync), which is enough to compare what a client saw with the store.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

__all__ = ["WsClient"]


class WsClient:
    """Connects, reads in the background, and waits on conditions with deadlines."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        #: every frame received, as it came (a batch frame holds several messages)
        self.frames: list[str | bytes] = []
        self.messages: list[dict[str, Any]] = []
        self.mirror: dict[str, dict[str, Any]] = {}
        self.keys: set[str] = set()
        self.close_code: int | None = None
        #: compact mods: handle -> (t, id, i) from the adds that carried one
        self.handles: dict[int, tuple[str, str, str | None]] = {}
        #: a key's compact mods received, and their entries whose handle was unknown
        self.compact_items = 0
        self.unknown_handles = 0
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str, *, resnap: bool = True, batch: bool | None = None, compact: bool = False, **kwargs: Any) -> WsClient:
        """Connect to ``url`` and wait for the gateway's ``hello``.

        ``resnap``: declare (``synk_resnap=1``) that it takes re-snapshots on
        the live socket, as synk-client does; False connects as the original
        synk-js client. ``batch``: declare (``synk_batch=1``) that it takes
        batch frames, as synk-client does (by default, when ``resnap``).
        ``compact``: declare (``synk_compact=1``) that it takes compact mods,
        as synk-client does; they are expanded into ``messages`` as full mods.
        """
        if resnap:
            url += ("&" if "?" in url else "?") + "synk_resnap=1"
        if resnap if batch is None else batch:
            url += ("&" if "?" in url else "?") + "synk_batch=1"
        if compact:
            url += ("&" if "?" in url else "?") + "synk_compact=1"
        client = cls(await connect(url, **kwargs))
        await client.wait(lambda: any(m["method"] == "hello" for m in client.messages))
        return client

    async def _read(self) -> None:
        try:
            async for frame in self.conn:
                self.frames.append(frame)
                decoded = orjson.loads(frame)
                items = decoded if isinstance(decoded, list) and not (decoded and isinstance(decoded[0], str)) else [decoded]
                for item in items:
                    for msg in self._expand(item):
                        self.messages.append(msg)
                        self._apply(msg)
                async with self._changed:
                    self._changed.notify_all()
        except ConnectionClosed:
            pass
        finally:
            self.close_code = self.conn.close_code
            async with self._changed:
                self._changed.notify_all()

    def _expand(self, item: Any) -> list[dict[str, Any]]:
        """A message, or a key's compact mods as the full mods they stand for (PROTOCOL.md)."""
        if isinstance(item, dict):
            if item.get("method") == "add" and "h" in item:
                handle = item.pop("h")
                self.handles[handle] = (item["t"], item["id"], item.get("i"))
            return [item]
        key, *entries = item
        self.compact_items += 1
        out = []
        for handle, version, diff in entries:
            if handle not in self.handles:
                self.unknown_handles += 1
                continue
            t, oid, inc = self.handles[handle]
            mod = {"method": "mod", "t": t, "id": oid, "sKey": key, "v": version, "diff": diff}
            if inc is not None:
                mod["i"] = inc
            out.append(mod)
        return out

    def _apply(self, msg: dict[str, Any]) -> None:
        method = msg.get("method")
        if method == "add" and msg["sKey"] in self.keys:
            cur = self.mirror.get(msg["id"])
            if cur is None or msg["v"] > cur["v"]:
                self.mirror[msg["id"]] = {"sKey": msg["sKey"], "v": msg["v"], "state": dict(msg["state"])}
        elif method == "mod":
            cur = self.mirror.get(msg["id"])
            if cur is None or msg["v"] <= cur["v"]:
                return
            cur["state"].update(msg["diff"])
            cur["v"] = msg["v"]
            if "nsKey" in msg:
                if msg["nsKey"] in self.keys:
                    cur["sKey"] = msg["nsKey"]
                else:
                    del self.mirror[msg["id"]]
        elif method == "rem":
            self.mirror.pop(msg["id"], None)
        elif method == "snap":
            ids = set(msg["ids"])
            for oid in [i for i, o in self.mirror.items() if o["sKey"] == msg["sKey"] and i not in ids]:
                del self.mirror[oid]

    async def send(self, msg: dict[str, Any] | str | bytes) -> None:
        """Send a message (a dict is JSON-encoded)."""
        await self.conn.send(msg if isinstance(msg, (str, bytes)) else orjson.dumps(msg).decode())

    async def subscribe(self, add: list[str], remove: list[str] | None = None, *, wait: bool = True) -> None:
        """updateSubscription; waits for the ``snap`` of each added key."""
        remove = remove or []
        self.keys.update(add)
        self.keys.difference_update(remove)
        for key in remove:
            for oid in [i for i, o in self.mirror.items() if o["sKey"] == key]:
                del self.mirror[oid]
        start = len(self.messages)
        await self.send({"method": "updateSubscription", "add": add, "remove": remove})
        if wait:
            await self.wait(lambda: {m["sKey"] for m in self.messages[start:] if m["method"] == "snap"} >= set(add))

    async def wait(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds, re-checking on every message."""

        async def check() -> None:
            async with self._changed:
                while not predicate():
                    if self._reader.done() and not predicate():
                        raise AssertionError("connection closed before the condition held")
                    await self._changed.wait()

        await asyncio.wait_for(check(), timeout)

    def of(self, method: str) -> list[dict[str, Any]]:
        """The messages received with this method, in order."""
        return [m for m in self.messages if m.get("method") == method]

    def assert_consecutive_versions(self) -> None:
        """After an object's (snapshot) add, each of its mods is exactly one version on."""
        seen: dict[str, int] = {}
        for m in self.messages:
            if m["method"] == "add":
                seen[m["id"]] = m["v"]
            elif m["method"] == "mod":
                assert m["v"] == seen[m["id"]] + 1, m
                seen[m["id"]] = m["v"]

    async def close(self) -> None:
        """Close the connection and stop reading."""
        await self.conn.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
