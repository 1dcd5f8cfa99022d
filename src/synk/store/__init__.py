"""Store backends: where objects live and how their messages are published.

``memory://`` keeps everything in this process; ``redis://`` uses a real
Redis. Both implement :class:`synk.store.base.Store` with the same rules, and
one conformance suite runs against both.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from synk.errors import ConfigError
from synk.store.base import Event, Store, Stored, Subscriber

__all__ = ["Event", "Store", "Stored", "Subscriber", "open_store"]


def open_store(url: str, *, prefix: str = "synk:", connect_timeout: float = 5.0) -> Store:
    """A store for ``url`` (``memory://`` or ``redis://``); not yet connected."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from synk.store.memory import MemoryStore

        return MemoryStore(url)
    if scheme in ("redis", "rediss", "unix"):
        from synk.store.redis import RedisStore

        return RedisStore(url, prefix=prefix, connect_timeout=connect_timeout)
    raise ConfigError(f"unknown store URL scheme {scheme!r} in {url!r}; use memory:// or redis://")
