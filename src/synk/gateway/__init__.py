"""The websocket gateway browsers connect to (see PROTOCOL.md).

Pure parts: ``protocol`` (client messages), ``routing`` (who gets what),
``snapshots`` (a client's key from its snapshot to live), ``compact``
(compact mods), ``original`` (what the original client takes), ``config``,
``lifecycle`` (the gateway's states), ``limits`` and ``metrics``;
``admission`` checks handshakes. Asyncio parts: ``session`` (one client),
``delivery`` (the fan-out's hot path), ``reads`` (snapshot reads),
``barriers`` (snapshots under way: reads, barriers, parked keys),
``writeout`` (one write per client per burst), ``hub`` (the gateway), and
the transports ``ws`` (standalone, websockets) and ``asgi`` (mountable in
Starlette or FastAPI).
"""

from __future__ import annotations

from synk.gateway.hub import Gateway, GatewayConfig, GatewaySettings, Handshake
from synk.gateway.session import Client

__all__ = ["Client", "Gateway", "GatewayConfig", "GatewaySettings", "Handshake"]
