"""The ASGI outlet's writes (gateway/asgi.py): sends stepped by hand, and what happens when one waits or fails.

The ``send`` here is an ASGI server's side of the contract (a coroutine
function taking the message), written as a server would; the uvicorn tests
in test_gateway_ops.py run the same code against a real server and socket.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterator
from typing import Any

import pytest

from synk.gateway.asgi import _AsgiOutlet
from tests.gateway_env import session, until


class Server:
    """An ASGI server's ``send``: records a message (its text, or its type) at once while ``writable`` is set, else waits for it."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.writable = asyncio.Event()
        self.writable.set()
        self.fail: Exception | None = None
        self.cancelled = 0

    async def send(self, message: dict[str, Any]) -> None:
        try:
            await self.writable.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.fail is not None:
            raise self.fail
        self.sent.append(message.get("text", message["type"]))


async def test_sends_that_need_no_waiting_are_made_in_the_call() -> None:
    server = Server()
    outlet = _AsgiOutlet(server.send)  # type: ignore[arg-type]
    assert outlet.write_nowait([b"1", b"2"])
    assert server.sent == ["1", "2"] and outlet._rest is None


async def test_a_send_that_waits_finishes_in_order_before_the_next_write() -> None:
    server = Server()
    outlet = _AsgiOutlet(server.send)  # type: ignore[arg-type]
    server.writable.clear()  # the server paused writing: its socket is full
    assert outlet.write_nowait([b"1", b"2"])  # taken: the rest runs in a task
    await asyncio.sleep(0)  # (the task starts and waits on the server)
    assert outlet._rest is not None and server.sent == []
    assert not outlet.write_nowait([b"3"])  # the next write must wait for it: the writer task's
    later = asyncio.create_task(outlet.write([b"3"]))
    await asyncio.sleep(0)
    assert server.sent == []
    server.writable.set()
    await later
    assert server.sent == ["1", "2", "3"] and outlet._rest is None
    assert outlet.write_nowait([b"4"]) and server.sent[-1] == "4"


async def test_a_send_that_fails_in_the_call_fails_the_next_write_and_sends_nothing_twice() -> None:
    server = Server()
    outlet = _AsgiOutlet(server.send)  # type: ignore[arg-type]
    assert outlet.write_nowait([b"1"])
    server.fail = ConnectionResetError("client gone")
    assert not outlet.write_nowait([b"2", b"3"])
    server.fail = None
    with pytest.raises(ConnectionResetError, match="client gone"):
        await outlet.write([b"2", b"3"])
    assert server.sent == ["1"]


async def test_a_send_that_fails_after_waiting_fails_the_next_write() -> None:
    server = Server()
    outlet = _AsgiOutlet(server.send)  # type: ignore[arg-type]
    server.writable.clear()
    assert outlet.write_nowait([b"1", b"2"])
    await asyncio.sleep(0)
    server.fail = ConnectionResetError("client gone")
    server.writable.set()
    with pytest.raises(ConnectionResetError, match="client gone"):
        await outlet.write([b"3"])
    assert server.sent == []


async def test_cancelling_the_write_that_waits_for_a_send_cancels_the_send() -> None:
    """The writer task is cancelled when its client stops or its write is stuck: a send
    that waits on the socket is cancelled with it, as if the task had awaited it."""
    server = Server()
    outlet = _AsgiOutlet(server.send)  # type: ignore[arg-type]
    server.writable.clear()
    assert outlet.write_nowait([b"1"])
    rest = outlet._rest
    writer = asyncio.create_task(outlet.write([b"2"]))
    await asyncio.sleep(0)
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer
    assert rest is not None and rest.cancelled() and server.cancelled == 1 and server.sent == []


async def test_close_goes_after_a_send_that_waits() -> None:
    server = Server()
    outlet = _AsgiOutlet(server.send)  # type: ignore[arg-type]
    server.writable.clear()
    assert outlet.write_nowait([b"1"])
    closing = asyncio.create_task(outlet.close(1001, "going away"))
    await asyncio.sleep(0)
    assert server.sent == []
    server.writable.set()
    await closing
    assert server.sent == ["1", "websocket.close"]


class Draining(Server):
    """A server whose send writes at once, then waits for the socket to drain (legacy
    websockets, hypercorn): while ``full``, every send waits for the next ``drain()``."""

    def __init__(self) -> None:
        super().__init__()
        self.full = False

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message.get("text", message["type"]))
        if self.full:
            self.writable.clear()
            await self.writable.wait()


async def test_a_write_out_while_the_writer_task_is_in_a_write_does_not_overtake_it() -> None:
    """The writer task is between two sends of one write when more messages come: they
    wait for it, where a stepped send would have gone out before the writer's next one."""
    server = Draining()
    outlet = _AsgiOutlet(server.send)  # type: ignore[arg-type]
    s = session(outlet)
    server.full = True
    s.push(b"a")
    s.write_out()  # a is sent and its send waits: the rest goes on in a task
    s.push(b"b")
    s.push(b"c")
    s.write_out()  # the writer task takes b and c, after a
    server.writable.set()  # a's send ends; the writer sends b, which waits
    await until(lambda: server.sent == ["a", "b"], "b sent")
    s.push(b"d")
    s.write_out()
    server.full = False
    server.writable.set()
    await until(lambda: len(server.sent) == 4, "every message sent")
    assert server.sent == ["a", "b", "c", "d"]
    await s.stop()


async def test_a_cancelled_write_still_lets_the_close_go_out() -> None:
    """A stuck write is cancelled (the watch), then the client is closed with 4408: the
    close must be sent, or the client stays connected and never reconnects."""
    server = Server()
    outlet = _AsgiOutlet(server.send)  # type: ignore[arg-type]
    server.writable.clear()
    assert outlet.write_nowait([b"1"])
    writer = asyncio.create_task(outlet.write([b"2"]))
    await asyncio.sleep(0)
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer
    server.writable.set()
    await outlet.close(4408, "client too slow")
    assert server.sent == ["websocket.close"]
    with pytest.raises(ConnectionError):
        await outlet.write([b"3"])


class _Ready:
    """An awaitable as Granian's ``send`` returns: ``__await__`` gives an iterator with no ``send`` or ``throw``."""

    def __init__(self, sent: list[str], message: dict[str, Any], fut: asyncio.Future[None] | None) -> None:
        self._sent, self._message, self._fut = sent, message, fut

    def __await__(self) -> Iterator[Any]:
        return self

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        fut = self._fut
        if fut is not None and not fut.done():
            fut._asyncio_future_blocking = True
            return fut
        self._sent.append(self._message["text"])
        raise StopIteration


async def test_a_send_that_returns_a_bare_iterator_is_stepped_too() -> None:
    sent: list[str] = []
    gate: asyncio.Future[None] | None = None

    def send(message: dict[str, Any]) -> _Ready:
        return _Ready(sent, message, gate)

    outlet = _AsgiOutlet(send)  # type: ignore[arg-type]
    assert outlet.write_nowait([b"1", b"2"]) and sent == ["1", "2"]
    gate = asyncio.get_running_loop().create_future()
    assert outlet.write_nowait([b"3"]) and sent == ["1", "2"]  # waits, in a task
    gate.set_result(None)
    await outlet.write([b"4"])
    assert sent == ["1", "2", "3", "4"]


async def test_a_send_that_sets_a_context_variable_across_a_wait_runs_in_one_context() -> None:
    """Middleware sets a context variable around the server's send and resets it after
    (tracing, log context): the step and the rest of a send that waited share a context."""
    server = Server()
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var")

    async def traced(message: dict[str, Any]) -> None:
        token = var.set("in send")
        try:
            await server.send(message)
        finally:
            var.reset(token)  # ValueError if resumed in another context

    outlet = _AsgiOutlet(traced)  # type: ignore[arg-type]
    server.writable.clear()
    assert outlet.write_nowait([b"1"])
    server.writable.set()
    await outlet.write([b"2"])
    assert server.sent == ["1", "2"]


async def test_a_send_that_raises_a_cancellation_in_the_step_fails_the_next_write_only() -> None:
    """Not an exception of the write-out (which goes on to the other clients): the next write's."""

    async def send(message: dict[str, Any]) -> None:
        raise asyncio.CancelledError

    outlet = _AsgiOutlet(send)  # type: ignore[arg-type]
    assert not outlet.write_nowait([b"1"])
    with pytest.raises(ConnectionError, match="CancelledError"):
        await outlet.write([b"1"])
