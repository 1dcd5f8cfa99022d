"""A TCP proxy for fault tests: between synk and a private redis-server, it
cuts every connection, or stalls all traffic, on command."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["Proxy"]


class Proxy:
    """Forwards 127.0.0.1:``port`` to ``target_port``; ``cut()``, ``stall()``, ``resume()``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._replies = asyncio.Event()
        self._replies.set()
        self.blocked = False
        self._held: list[asyncio.Event] = []
        self._links: set[asyncio.StreamWriter] = set()
        self._gates: set[asyncio.Event] = set()
        self.connections = 0

    def url(self, query: str = "") -> str:
        """A redis URL through the proxy (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0{query}"

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.resume()
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        """Close every connection at once (a reset: whatever is in flight is lost)."""
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()

    def stall(self) -> None:
        """Stop forwarding in both directions; connections stay open."""
        self._flowing.clear()

    def hold_replies(self) -> None:
        """Forward requests, but hold Redis's replies (so a call lands, its outcome unknown)."""
        self._replies.clear()

    def hold_existing(self) -> None:
        """Hold what the connections open now send to Redis; new connections flow.

        Whatever a held connection sent reaches Redis at ``resume()``, even
        if its client has closed it meanwhile: a request Redis runs late.
        """
        for gate in self._gates:
            gate.clear()
            self._held.append(gate)

    def resume(self) -> None:
        """Forward again what was held back."""
        self._flowing.set()
        self._replies.set()
        for gate in self._held:
            gate.set()
        self._held.clear()

    def block(self) -> None:
        """Cut every connection, and every new one at once, until ``unblock()``."""
        self.blocked = True
        self.cut()

    def unblock(self) -> None:
        """Let new connections through again."""
        self.blocked = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.blocked:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._links |= {writer, up_writer}
        gate = asyncio.Event()
        gate.set()
        self._gates.add(gate)
        # A test that ends cancels this; the links are closed below either way.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(self._pump(reader, up_writer, gate), self._pump(up_reader, writer, self._replies))
        self._gates.discard(gate)
        for w in (writer, up_writer):
            self._links.discard(w)
            w.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gate: asyncio.Event) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await reader.read(65536):
                await self._flowing.wait()
                await gate.wait()
                if writer.transport.is_closing():
                    return
                writer.write(data)
                await writer.drain()
            # The sender closed: pass that on after what it sent (not a reset, which would drop it).
            writer.close()
            return
        writer.transport.abort()
