"""The ASGI transport: mount the gateway in Starlette, FastAPI or any ASGI server.

Websocket connections at any path, ``GET /metrics``, and the JS client's
files. The ASGI server frames and pings; messages leave one ``send`` each,
since ASGI has no way to coalesce frames (the standalone server does): a
client that takes batch frames gets one ``send`` per write.

An ASGI ``send`` is a coroutine, but a server's completes without waiting
while the socket takes writes (uvicorn's does). Awaiting it from a task
per client cost a task switch per write: under uvicorn, 1.45 times the CPU
of ``synk serve`` per delivery and a saturated process at 50,000
deliveries/s (bench/README.md). So a write first *steps* the send's
coroutine by hand, from the gateway's write-out, as ``transport.write`` is
called under ``synk serve``: when it finishes in that step, no task is
involved; when it suspends (the socket is full, the server paused
writing), a task runs the rest of it and the rest of the batch, and the
client's next write waits for that task (and the client's writer task,
while it runs, takes every write: nothing overtakes). The step runs in
the connection's context (its context variables), but in no task: a
send that needs ``asyncio.current_task()`` (an ``asyncio.timeout`` in a
middleware; none of uvicorn's websocket implementations) fails its write,
and the client is closed and reconnects. Python 3.12's eager tasks make
the same first step inside a task of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, MutableMapping
from types import CoroutineType
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
    def __init__(self, send: Send) -> None:
        self._send = send
        self.closed = False
        #: the context the ASGI server runs the connection in (a middleware's context
        #: variables, say): a stepped send runs in it, and the rest of one that waited too
        self._context = contextvars.copy_context()
        #: the rest of a write whose send suspended (a full socket): the next write waits for it
        self._rest: asyncio.Task[None] | None = None
        #: what a send stepped by hand raised: the writer task's next write raises it
        self._failed: BaseException | None = None

    async def write(self, batch: list[bytes]) -> None:
        rest = self._rest
        if rest is not None:
            if not rest.done():
                await rest  # (a cancel of this write cancels the send it waits in)
            elif rest.cancelled():
                raise ConnectionError("an earlier write to this client was cancelled")
            else:
                rest.result()  # raises what the rest of the earlier write raised
            self._rest = None
        failed = self._failed
        if failed is not None:
            if isinstance(failed, Exception):
                raise failed
            raise ConnectionError(f"the ASGI server's send raised {failed!r}") from failed
        if self.closed:
            raise ConnectionError("websocket is closed")
        await self._send_all(batch)

    async def _send_all(self, batch: list[bytes]) -> None:
        for data in batch:
            await self._send({"type": "websocket.send", "text": data.decode()})

    def write_nowait(self, batch: list[bytes]) -> bool:
        if self.closed or self._rest is not None or self._failed is not None:
            return False  # the writer task waits for the earlier write, or fails
        run = self._context.run
        send = self._send
        for i, data in enumerate(batch):
            try:
                step = send({"type": "websocket.send", "text": data.decode()})
                if type(step) is not CoroutineType:
                    step = _stepped(step)
                waiting = run(step.send, None)
            except StopIteration:
                continue  # sent, without waiting: the common case
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:
                # The send failed (the client is gone): the writer task's write
                # raises it, and the session ends as after any failed write. What
                # this batch sent before it is not sent again. (Any exception,
                # a CancelledError too: this runs in the gateway's write-out of
                # every client, which must go on to the others.)
                self._failed = exc
                return False
            rest = asyncio.get_running_loop().create_task(self._finish(step, waiting, batch[i + 1 :]), context=self._context)
            rest.add_done_callback(_retrieve)
            self._rest = rest
            return True
        return True

    async def _finish(self, step: Coroutine[Any, Any, None], waiting: Any, more: list[bytes]) -> None:
        """Run a send that suspended on ``waiting`` to its end, as a task would have, then send ``more``."""
        while True:
            try:
                if waiting is None:
                    await asyncio.sleep(0)  # a bare yield: one pass of the loop
                else:
                    # The future the send waits on. Its await marked it as yielded to a
                    # task (asyncio's future protocol), and a task unmarks it before it
                    # waits on it: else awaiting it again raises "await wasn't used
                    # with future".
                    waiting._asyncio_future_blocking = False
                    await waiting
            except BaseException as exc:
                # It failed, or this task was cancelled (a stuck write, a stopped
                # client): the send sees it where it waits, as under a task.
                try:
                    waiting = step.throw(exc)
                except StopIteration:
                    break
                continue
            try:
                waiting = step.send(None)
            except StopIteration:
                break
        await self._send_all(more)

    async def close(self, code: int, reason: str) -> None:
        if not self.closed:
            self.closed = True
            rest = self._rest
            if rest is not None and not rest.done():
                # The close frame goes after what was written. Whatever became of
                # that write (it failed, or a stuck write was cancelled), the close
                # is sent: a client left open with no more messages would never
                # reconnect.
                await asyncio.wait([rest])
            await self._send({"type": "websocket.close", "code": code, "reason": reason})


async def _stepped(sending: Awaitable[None]) -> None:
    """What a server's ``send`` returned, as a coroutine to step by hand: an awaitable that is
    not a coroutine may have no ``send`` or ``throw`` (Granian's is a bare iterator)."""
    await sending


def _retrieve(task: asyncio.Task[None]) -> None:
    """The rest of a write failed with nobody left to await it (the client is gone): not an error to log."""
    if not task.cancelled():
        task.exception()


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
