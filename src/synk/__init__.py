"""synk: keep server-side Python objects in sync with JavaScript clients, through Redis.

The layers, from the pure core outwards::

    synk.core      objects, diffs, ids, messages (pure: no I/O)
    synk.store     backends: memory:// and redis://
    synk.world     the simulation's write path (connect, flush, load, reload)
    synk.gateway   the websocket gateway browsers connect to
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from synk.core.model import Object
from synk.errors import (
    ConfigError,
    ConnectionError,
    Failure,
    FrozenValueError,
    ProtocolError,
    SynkError,
    ValidationError,
    WriteError,
)

if TYPE_CHECKING:
    from synk.gateway import Gateway
    from synk.world import ClientMessage, FlushHandle, ReloadReport, World, connect

# The I/O layers load on first use, so that importing the pure core (synk.core)
# never pulls in asyncio, redis or websockets.
_LAZY = {
    "ClientMessage": "synk.world",
    "FlushHandle": "synk.world",
    "ReloadReport": "synk.world",
    "World": "synk.world",
    "connect": "synk.world",
    "Gateway": "synk.gateway",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'synk' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "ClientMessage",
    "ConfigError",
    "ConnectionError",
    "Failure",
    "FlushHandle",
    "FrozenValueError",
    "Gateway",
    "Object",
    "ProtocolError",
    "ReloadReport",
    "SynkError",
    "ValidationError",
    "World",
    "WriteError",
    "connect",
]

__version__ = "0.1.0"
