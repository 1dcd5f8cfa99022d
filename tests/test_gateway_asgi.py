"""The ASGI outlet's writes (gateway/asgi.py): sends stepped by hand, and what happens when one waits or fails.

The ``send`` here is an ASGI server's side of the contract (a coroutine
function taking the message), written as a server would; the uvicorn tests
in test_gateway_ops.py run the same code against a real server and socket.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from synk.gateway.asgi import _AsgiOutlet


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
