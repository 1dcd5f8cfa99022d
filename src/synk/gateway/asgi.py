"""The ASGI transport: mount the gateway in Starlette, FastAPI or any ASGI server.

Websocket connections at any path, ``GET /metrics``, and the JS client's
files. The ASGI server frames and pings; messages leave one ``send`` each,
since ASGI has no way to coalesce frames (the standalone server does): a
client that takes batch frames gets one ``send`` per write.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from synk.gateway import protocol as p
from synk.gateway.session import Outlet

if TYPE_CHECKING:
    from synk.gateway.hub import Gateway

__all__ = ["AsgiApp"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class _AsgiOutlet(Outlet):
    # Every write goes through the client's writer task (an ASGI send must be
    # awaited): while the client is busy, one task serves its writes.
    linger = 5.0

    def __init__(self, send: Send) -> None:
        self._send = send
        self.closed = False

    async def write(self, batch: list[bytes]) -> None:
        if self.closed:
            raise ConnectionError("websocket is closed")
        for data in batch:
            await self._send({"type": "websocket.send", "text": data.decode()})

    async def close(self, code: int, reason: str) -> None:
        if not self.closed:
            self.closed = True
            await self._send({"type": "websocket.close", "code": code, "reason": reason})


def _local_path(scope: Scope) -> str:
    """The request path below the app's mount point (``root_path``, as Starlette's ``Mount`` sets it)."""
    path: str = scope.get("path", "/")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


class AsgiApp:
    """``gateway.asgi_app()``: an ASGI 3 application."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "http":
            await self._http(scope, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.gateway.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.gateway.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, send: Send) -> None:
        request = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        client = scope.get("client") or ("", 0)
        query = scope.get("query_string", b"").decode("latin-1")
        path = _local_path(scope) + (f"?{query}" if query else "")
        answer = await self.gateway.http(scope.get("method", "GET"), path, request, str(client[0]))
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers]
        headers.append((b"content-length", str(len(answer.body)).encode()))
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        query = scope.get("query_string", b"").decode("latin-1")
        path = scope.get("path", "/") + (f"?{query}" if query else "")
        client = scope.get("client") or ("", 0)
        refused, identity = await self.gateway.admit(path, headers, str(client[0]))
        await send({"type": "websocket.accept"})
        outlet = _AsgiOutlet(send)
        if refused:  # a close code the browser can read, unlike a refused handshake's status
            await outlet.close(refused, p.REFUSALS[refused])
            return
        limit = self.gateway.config.max_frame

        async def frames() -> AsyncIterator[str | bytes]:
            while True:
                msg = await receive()
                if msg["type"] == "websocket.disconnect":
                    outlet.closed = True
                    return
                frame = msg.get("text")
                if frame is None:
                    frame = msg.get("bytes") or b""
                # The limit is in bytes, as the standalone server counts it.
                size = len(frame) if isinstance(frame, bytes) or frame.isascii() else len(frame.encode())
                if size > limit:
                    with contextlib.suppress(Exception):
                        await outlet.close(p.CLOSE_TOO_BIG, f"frame of {size} bytes is over the limit of {limit}")
                    return
                yield frame

        await self.gateway.attach(outlet, identity, frames(), path)
