"""Plain HTTP requests to the gateway (pure): ``/metrics``, the JS client's files, ``static_dir``.

Files are served with CORS headers to the pages allowed to connect (the
gateway's ``origins``, and its own origin), so a page from another origin
can ``import`` the client from the gateway; ``/metrics`` is not (it is for
scrapers, not pages). Only GET and HEAD are answered (OPTIONS too, as a
CORS preflight); other methods get 405.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from synk.gateway import admission, static

if TYPE_CHECKING:
    from synk.gateway.config import GatewayConfig

__all__ = ["Response", "respond", "unauthorized", "wrong_host"]

_TEXT = "text/plain; charset=utf-8"
_METRICS = "text/plain; version=0.0.4; charset=utf-8"
_ALLOW = "GET, HEAD, OPTIONS"


@dataclass
class Response:
    """A status, headers (lowercase names) and a body."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


def wrong_host(host: str | None) -> Response:
    """403: the request names a host the gateway does not answer to as itself (DNS rebinding)."""
    return Response(403, [("content-type", _TEXT)], f"host {host!r} is not one of this gateway's names\n".encode())


def unauthorized() -> Response:
    """401: the request lacks what ``authenticate`` accepts (a token, say)."""
    return Response(401, [("content-type", _TEXT), ("www-authenticate", "Bearer")], b"unauthorized\n")


def _cors(config: GatewayConfig, headers: dict[str, str], trusted: frozenset[str] | None) -> list[tuple[str, str]]:
    """The CORS headers for a request from ``Origin`` (none if it is absent or not allowed)."""
    origin = headers.get("origin")
    if origin is None or not admission.origin_allowed(config.origins, origin, headers.get("host"), config.allow_own_origin, trusted):
        return [("vary", "Origin")]
    return [("access-control-allow-origin", "*" if config.origins == "*" else origin), ("vary", "Origin")]


def respond(
    config: GatewayConfig, metrics_text: str | None, method: str, path: str, headers: dict[str, str], trusted: frozenset[str] | None = None
) -> Response:
    """The answer to one plain HTTP request; ``headers`` have lowercase names.

    ``metrics_text`` is the rendered ``/metrics`` page, or None when it
    is not served; ``trusted``, the Host names the gateway answers to as itself.
    """
    method = method.upper()
    local = path.split("?", 1)[0]
    if method not in ("GET", "HEAD", "OPTIONS"):
        return Response(405, [("content-type", _TEXT), ("allow", _ALLOW)], f"method {method} is not allowed; use GET\n".encode())
    if local == "/metrics":
        if metrics_text is None:
            return Response(404, [("content-type", _TEXT)], b"not found\n")
        if method == "OPTIONS":
            return Response(204, [("allow", "GET, HEAD")])
        return Response(200, [("content-type", _METRICS), ("cache-control", "no-cache")], metrics_text.encode() if method == "GET" else b"")
    found = static.resolve(path, config.static_dir)
    if found is None:
        return Response(404, [("content-type", _TEXT)], b"not found\n")
    cors = _cors(config, headers, trusted)
    if method == "OPTIONS":
        # A preflight: a module script's plain GET needs none, but a page's fetch() with headers does.
        return Response(204, [*cors, ("allow", _ALLOW), ("access-control-allow-methods", "GET, HEAD")])
    ctype, body = found
    return Response(200, [("content-type", ctype), ("cache-control", "no-cache"), *cors], body if method == "GET" else b"")
