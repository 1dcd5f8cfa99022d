"""A tiny TCP proxy between a gateway and Redis, which can cut or stall the network.

It runs in the orchestrator's event loop. ``cut()`` resets every
connection through it and refuses new ones until ``heal()``: what a
gateway sees when the network between it and Redis fails. ``stall()``
keeps every connection open but stops moving bytes (both ways) until
``heal()``: a network that silently drops packets, or a Redis that is
alive but unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib

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
        self._flowing.set()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self) -> None:
        """Reset every connection, and refuse new ones until ``heal()``."""
        self.refusing = True
        self._abort_all()

    def stall(self) -> None:
        """Stop forwarding bytes (connections stay open) until ``heal()``."""
        self._flowing.clear()

    def heal(self) -> None:
        """Accept and forward again."""
        self.refusing = False
        self._flowing.set()

    @property
    def healthy(self) -> bool:
        """Neither cut nor stalled."""
        return not self.refusing and self._flowing.is_set()

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
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst, writer, up_writer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *ends: asyncio.StreamWriter) -> None:
        """Copy ``src`` to ``dst`` while flowing; when either side ends, end both connections."""
        try:
            while True:
                data = await src.read(CHUNK)
                if not data:
                    break
                await self._flowing.wait()
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for end in ends:
                self._links.discard(end)
                with contextlib.suppress(Exception):
                    end.transport.abort()
