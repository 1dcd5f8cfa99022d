"""The inspector: a live page of the gateway's clients, keys and objects, at ``/inspect``.

Served only with the ``inspect`` setting, behind the ``authenticate`` hook.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from synk.gateway import http

if TYPE_CHECKING:
    from synk.gateway.http import Response
    from synk.gateway.hub import Gateway

__all__ = ["respond"]


async def respond(gateway: Gateway, method: str, path: str, headers: dict[str, str], peer: str) -> Response:
    """The answer to a request under ``/inspect`` (the gateway checks ``inspect`` is on)."""
    return http.Response(404, [("content-type", "text/plain; charset=utf-8")], b"not found\n")
