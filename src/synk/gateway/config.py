"""The gateway's settings, checked, and what it knows of a connection request (pure).

Every setting is a field of :class:`GatewayConfig`, typed for the type
checker in :class:`GatewaySettings` (``synk.Gateway(source, **settings)``)
and documented in docs/gateway.md; a test checks that the three agree.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, TypedDict

from synk.errors import ConfigError

__all__ = ["GatewayConfig", "GatewaySettings", "Handshake"]


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


class GatewaySettings(TypedDict, total=False):
    """The keyword settings of ``synk.Gateway`` (each documented on :class:`GatewayConfig`)."""

    max_frame: int
    max_keys: int
    max_backlog_bytes: int
    max_backlog_messages: int
    write_high_water: int
    stuck_timeout: float
    rate: float
    burst: float
    key_rate: float
    key_burst: float | None
    max_barriers: int
    ping_interval: float | None
    ping_timeout: float | None
    write_interval: float
    gc_freeze: bool
    deflate: bool
    origins: list[str] | str | None
    allow_own_origin: bool
    authenticate: Callable[[Handshake], Any] | None
    authorize: Callable[[Any, str], Any] | None
    admin: Callable[[Any], Any] | None
    hosts: list[str] | None
    forward_to_world: bool
    static_dir: str | os.PathLike[str] | None
    metrics: str
    inspect: bool


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _origins(value: object) -> bool:
    return value is None or isinstance(value, str) or (isinstance(value, (list, tuple, set)) and all(isinstance(o, str) for o in value))


#: setting -> (what it must be, in words; the check). Sizes and counts are
#: positive integers, rates and durations positive numbers.
_KINDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "max_frame": ("a positive integer (bytes)", lambda v: _integer(v) and v > 0),
    "max_keys": ("a positive integer", lambda v: _integer(v) and v > 0),
    "max_backlog_bytes": ("a positive integer (bytes)", lambda v: _integer(v) and v > 0),
    "max_backlog_messages": ("a positive integer", lambda v: _integer(v) and v > 0),
    "write_high_water": ("a positive integer (bytes)", lambda v: _integer(v) and v > 0),
    "stuck_timeout": ("a positive number (seconds)", lambda v: _number(v) and v > 0),
    "rate": ("a positive number (messages a second)", lambda v: _number(v) and v > 0),
    "burst": ("a positive number (messages)", lambda v: _number(v) and v > 0),
    "key_rate": ("a positive number (keys a second)", lambda v: _number(v) and v > 0),
    "key_burst": ("None or a positive number (keys)", lambda v: v is None or (_number(v) and v > 0)),
    "max_barriers": ("a positive integer", lambda v: _integer(v) and v > 0),
    "ping_interval": ("None or a positive number (seconds)", lambda v: v is None or (_number(v) and v > 0)),
    "ping_timeout": ("None or a positive number (seconds)", lambda v: v is None or (_number(v) and v > 0)),
    "write_interval": ("a number of seconds from 0 to 10", lambda v: _number(v) and 0 <= v <= 10),
    "gc_freeze": ("True or False", lambda v: isinstance(v, bool)),
    "deflate": ("True or False", lambda v: isinstance(v, bool)),
    "origins": ('None, "*", or a list of origins such as "https://example.com"', _origins),
    "allow_own_origin": ("True or False", lambda v: isinstance(v, bool)),
    "authenticate": ("None or a function (handshake) -> identity, sync or async", lambda v: v is None or callable(v)),
    "authorize": ("None or a function (identity, key) -> bool, sync or async", lambda v: v is None or callable(v)),
    "admin": ("None or a function (identity) -> bool, sync or async", lambda v: v is None or callable(v)),
    "hosts": (
        "None or a list of host names",
        lambda v: v is None or (isinstance(v, (list, tuple)) and all(isinstance(h, str) and h for h in v)),
    ),
    "forward_to_world": ("True or False", lambda v: isinstance(v, bool)),
    "static_dir": ("None or a folder's path", lambda v: v is None or isinstance(v, (str, os.PathLike))),
    "metrics": ('"public", "authenticated" or "off"', lambda v: v in ("public", "authenticated", "off")),
    "inspect": ("True or False", lambda v: isinstance(v, bool)),
}


@dataclass
class GatewayConfig:
    """The gateway's settings; every one has a working default.

    ========================  ===================  ==========================================
    setting                   default              what it does
    ========================  ===================  ==========================================
    ``origins``               None                 Origin values allowed to connect; None:
                                                   the gateway's own host only; ``"*"``: any
    ``allow_own_origin``      True                 the gateway's own pages are allowed
                                                   besides ``origins``
    ``authenticate``          None                 ``(handshake) -> identity`` (sync or
                                                   async): None or raising refuses (4401)
    ``authorize``             None                 ``(identity, key) -> bool``: may this
                                                   client subscribe to ``key``
    ``admin``                 None                 ``(identity) -> bool``: may this client
                                                   see ``/inspect`` (and guarded metrics)
    ``hosts``                 None                 Host names trusted for own pages,
                                                   ``/inspect``, ``/metrics``
    ``forward_to_world``      True                 post custom client messages to the store,
                                                   for ``world.messages()``
    ``static_dir``            None                 a folder served at ``/``
    ``metrics``               "public"             ``/metrics``: "public", "authenticated"
                                                   (behind ``authenticate``) or "off"
    ``inspect``               False                serve the inspector page at ``/inspect``
    ``max_frame``             65,536               bytes of one client message at most
    ``max_keys``              1,000                keys one client may follow at once
    ``rate`` / ``burst``      50 / 200             client messages a second (token bucket)
    ``key_rate`` /            1,000 / 2 x          keys a client may ask to snapshot a
    ``key_burst``             ``max_keys``         second, and at once
    ``max_backlog_bytes``     4 MiB                a slow client's queued bytes before its
                                                   backlog is dropped and re-snapshotted
    ``max_backlog_messages``  20,000               the same, in messages
    ``write_high_water``      256 KiB              socket buffer above which a client's
                                                   messages queue in its backlog
    ``stuck_timeout``         10 s                 a client reading nothing for this long
                                                   with a full buffer is closed (4408)
    ``max_barriers``          10,000               snapshot reads awaiting their barrier at
                                                   once, gateway-wide
    ``ping_interval`` /       20 s / 20 s          websocket keepalive (None: off)
    ``ping_timeout``
    ``write_interval``        0                    seconds between two writes to a client at
                                                   least (0: as soon as messages are ready)
    ``gc_freeze``             False                freeze what survives full garbage
                                                   collections (a process of its own only)
    ``deflate``               False                offer permessage-deflate to clients
                                                   (standalone server; fewer bytes, more CPU)
    ========================  ===================  ==========================================

    A name that is not a setting, or a value of the wrong kind, is a
    ``synk.ConfigError`` naming it (see :meth:`from_settings`).
    """

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
    #: writes to clients come at most this often (seconds): under load a client gets
    #: more messages per write, for less CPU per message and up to this much latency
    write_interval: float = 0.0
    #: freeze (``gc.freeze()``) what survives each full garbage collection, so the next ones
    #: walk only newer objects; process-wide: for a process that is the gateway's alone
    #: (``synk serve`` turns it on), see synk/gateway/freezer.py
    gc_freeze: bool = False
    #: offer permessage-deflate (RFC 7692) to clients, on the standalone server: a client that
    #: takes it (browsers do) gets compressed frames, about 60-74% fewer bytes for more CPU and
    #: about 45 KB more memory per client (its compressor and decompressor); see docs/gateway.md
    deflate: bool = False
    #: allowed Origin values; None means the gateway's own host only, "*" any
    origins: list[str] | str | None = None
    #: pages the gateway serves itself (Origin matching Host) may connect besides ``origins``
    allow_own_origin: bool = True
    authenticate: Callable[[Handshake], Any] | None = None
    authorize: Callable[[Any, str], Any] | None = None
    #: who may see ``/inspect`` (and ``/metrics`` when "authenticated"): given what ``authenticate``
    #: returned; needed for the inspector when ``authenticate`` is set
    admin: Callable[[Any], Any] | None = None
    #: Host names the gateway answers to for its own pages, ``/inspect`` and ``/metrics``
    #: (DNS rebinding); None: loopback names when it listens on loopback, else any
    hosts: list[str] | None = None
    #: post custom client messages to the store for ``world.messages()``
    forward_to_world: bool = True
    #: a folder served at "/" (the demo's page, say)
    static_dir: str | os.PathLike[str] | None = None
    #: ``/metrics``: "public", "authenticated" (behind ``authenticate``, as connections are) or "off"
    metrics: str = "public"
    #: serve the inspector page at ``/inspect`` (behind ``authenticate``, as connections are)
    inspect: bool = False

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> GatewayConfig:
        """The config of these keyword settings; an unknown name is a ConfigError listing the valid ones."""
        valid = [f.name for f in fields(cls)]
        for name in settings:
            if name not in valid:
                close = difflib.get_close_matches(name, valid, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"{name!r} is not a gateway setting{hint}; the settings are {', '.join(valid)}")
        return cls(**settings)

    def __post_init__(self) -> None:
        for name, (kind, ok) in _KINDS.items():
            value = getattr(self, name)
            if not ok(value):
                raise ConfigError(f"gateway setting {name} is {value!r}; it must be {kind}")
        if self.inspect and self.authenticate is not None and self.admin is None:
            raise ConfigError(
                "gateway setting inspect is on with an authenticate hook but no admin hook: every client that may connect"
                " could read every other client's identity; give admin=(identity) -> bool"
            )
        if self.metrics == "authenticated" and self.authenticate is None:
            raise ConfigError('gateway setting metrics is "authenticated" but no authenticate hook is set to check requests with')
        if self.key_burst is None:
            self.key_burst = 2.0 * self.max_keys
        elif self.key_burst < self.max_keys:
            raise ConfigError(
                f"key_burst is {self.key_burst:g}, below max_keys {self.max_keys}: a whole subscription could never be asked for"
            )
        # One rule for every caller: "*" anywhere allows any origin, and a
        # single origin given as a string is that origin, not its substrings.
        origins = self.origins
        if isinstance(origins, str):
            self.origins = "*" if origins == "*" else [origins]
        elif origins is not None:
            self.origins = "*" if "*" in origins else list(origins)
