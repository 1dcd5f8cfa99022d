"""The gateway's configuration, and what it knows of a connection request (pure)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from synk.errors import ConfigError

__all__ = ["GatewayConfig", "Handshake"]


@dataclass(frozen=True)
class Handshake:
    """What the gateway knows of a connection request, for ``authenticate``."""

    path: str
    headers: dict[str, str]
    client_addr: str = ""

    @property
    def query(self) -> dict[str, str]:
        """The query string's parameters (last value wins)."""
        from urllib.parse import parse_qsl, urlsplit

        return dict(parse_qsl(urlsplit(self.path).query))


@dataclass
class GatewayConfig:
    """Limits and hooks; every field has a working default."""

    max_frame: int = 64 * 1024
    max_keys: int = 1000
    max_backlog_bytes: int = 4 * 1024 * 1024
    max_backlog_messages: int = 20_000
    write_high_water: int = 256 * 1024
    stuck_timeout: float = 10.0
    rate: float = 50.0
    burst: float = 200.0
    #: keys a client may ask to snapshot (subscribe or resync) a second, and at once
    key_rate: float = 1000.0
    #: None: twice ``max_keys``; at least ``max_keys``, so a whole subscription can be asked for
    key_burst: float | None = None
    #: snapshot barriers awaited at once, gateway-wide: each holds a snapshot read in memory
    #: until it comes back; past it a read is dropped and done again once one comes back
    max_barriers: int = 10_000
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    #: allowed Origin values; None means the gateway's own host only, "*" any
    origins: list[str] | str | None = None
    authenticate: Callable[[Handshake], Any] | None = None
    authorize: Callable[[Any, str], Any] | None = None
    #: post custom client messages to the store for ``world.messages()``
    forward_to_world: bool = True
    #: a folder served at "/" (the demo's page, say)
    static_dir: str | os.PathLike[str] | None = None

    def __post_init__(self) -> None:
        if self.key_burst is None:
            self.key_burst = 2.0 * self.max_keys
        elif self.key_burst < self.max_keys:
            raise ConfigError(
                f"key_burst is {self.key_burst:g}, below max_keys {self.max_keys}: a whole subscription could never be asked for"
            )
        if self.max_barriers < 1:
            raise ConfigError(f"max_barriers is {self.max_barriers}: no snapshot could ever be served")
        # One rule for every caller: "*" anywhere allows any origin, and a
        # single origin given as a string is that origin, not its substrings.
        origins = self.origins
        if isinstance(origins, str):
            self.origins = "*" if origins == "*" else [origins]
        elif origins is not None:
            self.origins = "*" if "*" in origins else list(origins)
