"""synk: keep server-side Python objects in sync with JavaScript clients, through Redis.

The layers, from the pure core outwards::

    synk.core      objects, diffs, ids, messages (pure: no I/O)
    synk.store     backends: memory:// and redis://
    synk.world     the simulation's write path (connect, flush, load, reload)
    synk.gateway   the websocket gateway browsers connect to
"""

from __future__ import annotations

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
from synk.world import ClientMessage, FlushHandle, ReloadReport, World, connect

__all__ = [
    "ClientMessage",
    "ConfigError",
    "ConnectionError",
    "Failure",
    "FlushHandle",
    "FrozenValueError",
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
