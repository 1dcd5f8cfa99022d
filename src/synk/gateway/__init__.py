"""The websocket gateway browsers connect to (see PROTOCOL.md).

Pure parts: ``protocol`` (client messages), ``routing`` (who gets what),
``limits`` and ``metrics``. Asyncio parts: ``session`` (one client),
``hub`` (the gateway), and the transports ``ws`` (standalone, websockets)
and ``asgi`` (mountable in Starlette or FastAPI).
"""

from __future__ import annotations

from synk.gateway.hub import Gateway, GatewayConfig, Handshake
from synk.gateway.session import Client

__all__ = ["Client", "Gateway", "GatewayConfig", "Handshake"]
