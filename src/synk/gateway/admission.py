"""Admission of a websocket handshake: the page's origin and the ``authenticate`` hook."""

from __future__ import annotations

import inspect
import ipaddress
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from synk.gateway.config import Handshake

__all__ = ["LOOPBACK_NAMES", "authenticate", "host_trusted", "loopback", "maybe_await", "origin_allowed"]

log = logging.getLogger("synk.gateway")


async def maybe_await(value: Any) -> Any:
    """``value``, awaited first if it is awaitable (hooks may be sync or async)."""
    return await value if inspect.isawaitable(value) else value


def loopback(host: str) -> bool:
    """Whether a listening address is the loopback interface only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost: it may resolve anywhere


#: The names of the loopback interface, as a Host header gives them.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def host_trusted(host: str | None, trusted: frozenset[str] | None) -> bool:
    """Whether a request's Host header names the gateway (None: any name does).

    A DNS-rebinding page reaches the gateway under the attacker's host name:
    its requests carry that name in Host (and Origin), so a gateway that
    knows its own names tells them apart.
    """
    if trusted is None:
        return True
    if not host:
        return False
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name.strip("[]").lower() in trusted


def origin_allowed(
    allowed: list[str] | str | None, origin: str | None, host: str | None, own: bool = True, trusted: frozenset[str] | None = None
) -> bool:
    """Whether a browser page from ``origin`` may connect, given the configured ``origins``.

    ``own``: the gateway's own pages (an Origin whose host is the request's
    Host, a Host among ``trusted`` names) are allowed besides ``origins``.
    With no ``origins``, they are the only ones allowed (whatever ``own``
    says: otherwise none would be).
    """
    if origin is None:
        return True  # not a browser: browsers always send Origin
    if allowed == "*":
        return True
    same = host is not None and urlsplit(origin).netloc == host and host_trusted(host, trusted)
    if allowed is None:
        return same
    return origin in allowed or (own and same)


async def authenticate(hook: Callable[[Handshake], Any] | None, handshake: Handshake) -> tuple[bool, Any]:
    """Run the ``authenticate`` hook: (accepted, identity); a hook that raises refuses."""
    if hook is None:
        return True, None
    try:
        identity = await maybe_await(hook(handshake))
    except Exception:
        log.exception("synk authenticate hook raised; connection refused")
        return False, None
    return identity is not None, identity
