"""A tiny TCP proxy in front of a Redis, which can cut or stall the network.

The storm harness puts one between each gateway and Redis; the write-path
fault tests (tests/test_write_faults.py) put one between a world and Redis.
It runs in the caller's event loop:

- ``cut()`` resets every connection through it and refuses new ones until
  ``heal()``: a network that fails;
- ``stall()`` keeps every connection open but stops moving bytes (both
  ways) until ``heal()``: a network that silently drops packets;
- ``hold_replies()`` forwards requests but holds Redis's replies: calls
  land, their outcome unknown to the client;
- ``hold_existing()`` holds what the connections open now send, while new
  connections flow: at ``heal()`` Redis runs those requests late, even if
  their client gave up and closed the connection meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Self

__all__ = ["Proxy"]

#: Bytes read from one side before they are written to the other.
CHUNK = 64 * 1024


class Proxy:
    """Listens on a free loopback port and forwards each connection to ``127.0.0.1:target``."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.refusing = False
        #: set while bytes may flow; cleared by ``stall()``
        self._flowing = asyncio.Event()
        self._flowing.set()
        #: set while Redis's replies may flow; cleared by ``hold_replies()``
        self._replies = asyncio.Event()
        self._replies.set()
        #: per connection, set while its requests may flow; cleared by ``hold_existing()``
        self._gates: set[asyncio.Event] = set()
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """The Redis URL a client of the proxy uses."""
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Listen (on a free port the first time, then on the same one)."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and reset every connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self._abort_all()
        self.heal()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def cut(self) -> None:
        """Reset every connection, and refuse new ones until ``heal()``."""
        self.refusing = True
        self._abort_all()

    def stall(self) -> None:
        """Stop forwarding bytes (connections stay open) until ``heal()``."""
        self._flowing.clear()

    def hold_replies(self) -> None:
        """Forward requests, but hold Redis's replies until ``heal()``."""
        self._replies.clear()

    def hold_existing(self) -> None:
        """Hold what the connections open now send to Redis until ``heal()``; new connections flow."""
        for gate in self._gates:
            gate.clear()

    def heal(self) -> None:
        """Accept and forward again, what was held back included."""
        self.refusing = False
        self._flowing.set()
        self._replies.set()
        for gate in self._gates:
            gate.set()

    @property
    def healthy(self) -> bool:
        """Neither cut nor stalled."""
        return not self.refusing and self._flowing.is_set() and self._replies.is_set() and all(g.is_set() for g in self._gates)

    def _abort_all(self) -> None:
        for writer in list(self._links):
            writer.transport.abort()  # RST, as a broken network or a firewall reset would
        self._links.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()  # Redis is down: so is the connection through us
            return
        if self.refusing:  # cut while we connected upstream
            writer.transport.abort()
            up_writer.transport.abort()
            return
        self._links.update((writer, up_writer))
        gate = asyncio.Event()
        gate.set()
        self._gates.add(gate)
        requests = asyncio.create_task(self._pipe(reader, up_writer, (gate,), writer, up_writer))
        replies = asyncio.create_task(self._pipe(up_reader, writer, (self._replies,), writer, up_writer))
        for task in (requests, replies):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        replies.add_done_callback(lambda _t: self._gates.discard(gate))

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, gates: tuple[asyncio.Event, ...], *ends: asyncio.StreamWriter
    ) -> None:
        """Copy ``src`` to ``dst`` while flowing. When ``src`` closes, close ``dst`` after what
        it sent (as TCP does); when either side breaks, reset both connections."""
        try:
            while True:
                data = await src.read(CHUNK)
                if not data:
                    break
                await self._flowing.wait()
                for gate in gates:
                    await gate.wait()
                if dst.transport.is_closing():
                    return
                dst.write(data)
                await dst.drain()
            with contextlib.suppress(OSError):
                dst.write_eof()
            return
        except (OSError, asyncio.IncompleteReadError):
            pass
        for end in ends:
            self._links.discard(end)
            with contextlib.suppress(Exception):
                end.transport.abort()
