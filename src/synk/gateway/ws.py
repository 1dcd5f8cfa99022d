"""The standalone transport: a websockets server around the gateway.

The websockets library does the HTTP handshake, pings, close handshake and
frame-size limit. Outbound data messages bypass its per-message send path:
the frames of a batch are built here and leave in one ``transport.write``,
since one write per frame costs more CPU than everything else in fan-out.
That is sound because websockets itself never sends a data frame on these
connections (only control frames: pings, pongs, the close), and the
protocol state is checked before each write. With permessage-deflate
negotiated (the ``deflate`` setting), each frame is compressed here through
the connection's own extension object, in the order the frames leave, so the
compression context the client keeps matches ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
import weakref
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State

from synk.gateway import protocol as p
from synk.gateway.keepalive import Keepalive
from synk.gateway.session import Outlet

if TYPE_CHECKING:
    from websockets.http11 import Request

    from synk.gateway.http import Response as HttpResponse
    from synk.gateway.hub import Gateway

__all__ = ["WebsocketOutlet", "answered", "ping", "serve"]

log = logging.getLogger("synk.gateway")

_TEXT_FIN = 0x81
#: FIN, RSV1 (the frame is compressed: RFC 7692 §6), text.
_DEFLATED_TEXT_FIN = 0xC1
#: Seconds a close handshake may take before the connection is dropped.
CLOSE_WAIT = 1.0
OPEN = State.OPEN


_SMALL_HEADERS = [bytes((_TEXT_FIN, n)) for n in range(126)]
#: Every connection's request headers once its handshake is over (see ``serve``).
_NO_HEADERS = Headers()
#: An unmasked final ping frame with a 4-byte payload (RFC 6455 §5.5.2).
_PING_HEAD = bytes((0x89, 4))


def _tick_seconds(interval: float) -> float:
    """How often the keepalive timer runs: a quarter of the interval, at most a second.

    A connection is pinged at most this late, and a missing pong noticed at
    most this late after ``ping_timeout``.
    """
    return min(1.0, interval / 4)


def frame_header(size: int, first: int = _TEXT_FIN) -> bytes:
    """The header of an unmasked, final text frame of ``size`` bytes (RFC 6455 §5.2).

    ``first``: its first byte (FIN, the RSV bits, the opcode).
    """
    if size < 126:
        return _SMALL_HEADERS[size] if first == _TEXT_FIN else bytes((first, size))
    if size < 65536:
        return struct.pack("!BBH", first, 126, size)
    return struct.pack("!BBQ", first, 127, size)


def deflated(batch: list[bytes], deflate: PerMessageDeflate) -> bytes:
    """The compressed frames of these messages, back to back (RFC 7692).

    ``deflate`` is the connection's negotiated extension: it keeps the
    compression context between messages (unless the client asked for none).
    """
    parts: list[bytes] = []
    for data in batch:
        payload = deflate.encode(Frame(Opcode.TEXT, data)).data
        parts.append(frame_header(len(payload), _DEFLATED_TEXT_FIN))
        parts.append(bytes(payload))
    return b"".join(parts)


def framed(batch: list[bytes]) -> bytes:
    """The frames of these messages, back to back."""
    if len(batch) == 1:  # the most common write: one message, or one batch frame
        data = batch[0]
        n = len(data)
        return (_SMALL_HEADERS[n] if n < 126 else frame_header(n)) + data
    parts: list[bytes] = []
    append = parts.append
    small = _SMALL_HEADERS
    for data in batch:
        n = len(data)
        append(small[n] if n < 126 else frame_header(n))
        append(data)
    return b"".join(parts)


class WebsocketOutlet(Outlet):
    """Writes batches of frames to one websockets connection."""

    def __init__(self, connection: ServerConnection) -> None:
        self.connection = connection
        #: permessage-deflate, if the gateway offered it and the client took it
        self.deflate = next((e for e in connection.protocol.extensions if isinstance(e, PerMessageDeflate)), None)
        # A connection keeps its protocol and transport: read once, not at every write.
        self._protocol = connection.protocol
        self._transport = connection.transport

    def _frames(self, batch: list[bytes]) -> bytes:
        return framed(batch) if self.deflate is None else deflated(batch, self.deflate)

    async def write(self, batch: list[bytes]) -> None:
        conn = self.connection
        if conn.protocol.state is not State.OPEN:
            raise ConnectionError("websocket is not open")
        if batch:
            conn.transport.write(self._frames(batch))
        await conn.drain()

    def write_nowait(self, batch: list[bytes]) -> bool:
        # The hot path's write, once per client and write-out.
        if self.connection.paused or self._protocol.state is not OPEN:
            return False  # the writer task waits for the drain, or fails
        self._transport.write(self._frames(batch))
        return True

    async def close(self, code: int, reason: str) -> None:
        # websockets' close() drains the socket before its close_timeout
        # starts: a client that stopped reading never takes the close frame,
        # and the connection would stay open for good. Drop it instead.
        try:
            async with asyncio.timeout(CLOSE_WAIT):
                await self.connection.close(code, reason)
        except TimeoutError:
            self.connection.transport.abort()


def _response(answer: HttpResponse) -> Response:
    status = HTTPStatus(answer.status)
    headers = Headers([*answer.headers, ("content-length", str(len(answer.body)))])
    return Response(status.value, status.phrase, headers, answer.body)


def serve(gateway: Gateway, host: str, port: int, *, reuse_port: bool = False) -> Any:
    """A websockets server for ``gateway``; use as ``async with`` (``reuse_port``: SO_REUSEPORT)."""
    cfg = gateway.config

    #: what the handshake decided, for the handler: (refusal close code, identity, path). Not
    #: attributes of the connection: three more would grow its __dict__ by 1.5 KB a client.
    #: Weak: a handshake that fails after process_request never reaches the handler.
    admitted: weakref.WeakKeyDictionary[ServerConnection, tuple[int, Any, str]] = weakref.WeakKeyDictionary()

    async def process_request(connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            addr = connection.remote_address
            request_headers = {k.lower(): v for k, v in request.headers.raw_items()}
            # Recent websockets parse any method (older ones, GET only): HEAD, OPTIONS
            # and the refused ones must get their own answers, not GET's.
            method = getattr(request, "method", "GET")
            answer = await gateway.http(method, request.path, request_headers, str(addr[0]) if addr else "")
            return _response(answer)
        addr = connection.remote_address
        headers = {k.lower(): v for k, v in request.headers.raw_items()}
        refused, identity = await gateway.admit(request.path, headers, str(addr[0]) if addr else "")
        admitted[connection] = (refused, identity, request.path)
        return None

    keepalive: Keepalive[ServerConnection] | None = None
    if cfg.ping_interval is not None:
        keepalive = Keepalive(cfg.ping_interval, cfg.ping_timeout)

    async def handler(connection: ServerConnection) -> None:
        refused, identity, path = admitted.pop(connection, (0, None, "/"))
        # The handshake's request and response (their headers) are not read again:
        # kept, they would cost every client about 2 KB for as long as it stays.
        # The request object itself stays (websockets reads a request of None as
        # "handshake under way", and its parser keeps a reference): its headers go.
        if connection.request is not None:
            connection.request.headers = _NO_HEADERS
        connection.response = None
        if refused:
            await connection.close(refused, p.REFUSALS[refused])
            return

        async def frames() -> AsyncIterator[str | bytes]:
            with contextlib.suppress(ConnectionClosed):
                async for frame in connection:
                    yield frame

        if keepalive is not None:
            keepalive.add(connection, connection.loop.time())
        try:
            await gateway.attach(WebsocketOutlet(connection), identity, frames(), path)
        finally:
            if keepalive is not None:
                keepalive.remove(connection)

    return _Server(
        gateway,
        ws_serve(
            handler,
            host,
            port,
            process_request=process_request,
            # websockets negotiates it (its defaults: 12-bit windows, memLevel 5); the
            # frames are compressed by WebsocketOutlet, since it writes them itself.
            compression="deflate" if cfg.deflate else None,
            max_size=cfg.max_frame,
            # Pings come from one timer for every connection (``_Server``), not a task each.
            ping_interval=None,
            ping_timeout=None,
            write_limit=cfg.write_high_water,
            close_timeout=2,
            reuse_port=reuse_port,
        ),
        keepalive,
    )


def ping(connection: ServerConnection, done: asyncio.Future[float]) -> bytes | None:
    """Send a ping now, without waiting; its payload, the token ``answered`` checks (None: not open).

    websockets' own ``ping()`` awaits the socket's drain, which a slow
    client would hold up for every other connection's ping, and makes a
    future per ping. Here the pong is matched by websockets as for its own
    pings (``pending_pings``, which drops the entry when the pong comes),
    against ``done``, one future that is done already: nothing per ping
    lives on for the garbage collector to walk.
    """
    if connection.protocol.state is not State.OPEN:
        return None
    pings = connection.pending_pings
    data = struct.pack("!I", random.getrandbits(32))
    while data in pings:
        data = struct.pack("!I", random.getrandbits(32))
    pings[data] = (done, connection.loop.time())
    connection.transport.write(_PING_HEAD + data)
    return data


def answered(connection: ServerConnection, token: bytes) -> bool:
    """Whether the pong of ping ``token`` came (websockets removed it from ``pending_pings``)."""
    return token not in connection.pending_pings


class _Server:
    """Starts the gateway with the server, pings its clients, and closes them with 1001 on exit."""

    def __init__(self, gateway: Gateway, inner: Any, keepalive: Keepalive[ServerConnection] | None = None) -> None:
        self.gateway = gateway
        self._inner = inner
        self.server: Any = None
        self._keepalive = keepalive
        self._timer: asyncio.TimerHandle | None = None
        #: what websockets resolves when a pong comes: done already (see ``ping``)
        self._done: asyncio.Future[float] | None = None

    def _tick(self) -> None:
        keepalive = self._keepalive
        assert keepalive is not None
        loop = asyncio.get_running_loop()
        now = loop.time()
        # Scheduled first: an error below must not end every client's keepalive.
        self._timer = loop.call_later(_tick_seconds(keepalive.interval), self._tick)
        to_ping, late = keepalive.tick(now, answered)
        for connection in late:
            # No pong within ping_timeout: a dead peer or a dead network. There is
            # nobody to hand a close frame to: drop it (its handler then ends).
            log.info("synk gateway dropped a client that left a keepalive ping unanswered")
            connection.transport.abort()
        assert self._done is not None
        for connection in to_ping:
            token = ping(connection, self._done)
            if token is not None:
                keepalive.pinged(connection, token, now)

    @property
    def port(self) -> int:
        """The port it listens on (useful with port 0)."""
        return int(self.server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> _Server:
        await self.gateway.start()
        self.server = await self._inner.__aenter__()
        if self._keepalive is not None:
            loop = asyncio.get_running_loop()
            self._done = loop.create_future()
            self._done.set_result(0.0)
            self._timer = loop.call_later(_tick_seconds(self._keepalive.interval), self._tick)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.server.close(close_connections=False)
        await self.gateway.close()
        await asyncio.wait_for(self._inner.__aexit__(None, None, None), 10)
