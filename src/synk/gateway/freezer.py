"""Short full garbage collections in a gateway process: freeze what survived one.

A full collection walks every tracked object: at 10,000 clients, about
80 per client (their connection, tasks, key states), 800,000 objects and a
few hundred milliseconds during which no client gets anything. And while a
crowd connects, the collector runs a full collection each time the oldest
generation grows by a quarter: ten of them on the way to 10,000 clients.

After each full collection, what survived it is alive and long-lived: the
:class:`Freezer` moves it out of the collector's sight with ``gc.freeze()``,
so the next full collection walks only what came since. The cost: a
reference cycle among frozen objects is never collected while frozen, and
a closed client's connection holds such cycles. So once a share of the
clients frozen have left (``THAW_SHARE``, at least ``THAW_MIN``), the
freezer thaws everything and collects it once (one long pause, at a time of
churn), then freezes again; and at least every ``THAW_EVERY`` seconds,
for cycles that are not clients' (a Redis connection replaced after a
blip). Memory held by departed clients is bounded by that share; the
pauses come once per that many departures or ten minutes, not once per
quarter of growth.

``gc`` is process-wide: only a process that is the gateway's alone (``synk
serve``) should freeze; a gateway embedded in a simulation does not by
default (the ``gc_freeze`` setting).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from typing import Any

__all__ = ["THAW_EVERY", "THAW_MIN", "THAW_SHARE", "Freezer"]

#: Departed clients, as a share of those alive at the last freeze, that make the freezer thaw.
THAW_SHARE = 0.25
#: ... and at least this many.
THAW_MIN = 1000
#: Seconds after which the next freeze is a thaw instead, however few clients left.
THAW_EVERY = 600.0


class Freezer:
    """Freezes the survivors of each full collection; thaws and collects once enough clients left.

    ``clients`` says how many clients the gateway has now.
    """

    def __init__(self, clients: Callable[[], int], *, share: float = THAW_SHARE, least: int = THAW_MIN) -> None:
        self._clients = clients
        self._share = share
        self._least = least
        #: clients alive at the last freeze, and departed since the last thaw
        self._frozen_clients = 0
        self._departed = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: asyncio.Handle | None = None
        #: when the last thaw ran (the loop's clock)
        self._thawed_at = 0.0
        #: thaws so far (for tests and curiosity)
        self.thaws = 0

    @property
    def running(self) -> bool:
        """Whether the freezer watches the collector."""
        return self._loop is not None

    def start(self) -> None:
        """Watch full collections (in the running loop)."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._thawed_at = self._loop.time()
        gc.callbacks.append(self._on_gc)

    def stop(self) -> None:
        """Stop, and give everything frozen back to the collector."""
        if self._loop is None:
            return
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        self._loop = None
        gc.unfreeze()

    def departed(self) -> None:
        """A client left: its frozen cycles wait for a thaw."""
        self._departed += 1
        if self._loop is not None and self._departed >= max(self._least, self._share * self._frozen_clients):
            self._departed = 0
            # At the loop's next turn: the departing client's own objects are garbage by then.
            self._loop.call_soon(self.thaw)

    def thaw(self) -> None:
        """Give every frozen object back to the collector and collect once (the survivors are frozen again)."""
        if self._loop is None:
            return
        self.thaws += 1
        self._departed = 0
        self._thawed_at = self._loop.time()
        gc.unfreeze()
        gc.collect()

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        loop = self._loop
        if phase != "stop" or info.get("generation") != 2 or loop is None or self._pending is not None:
            return
        if loop.is_closed():  # its gateway was never closed: nothing will run the freeze
            self.stop()
            return
        # Not from inside the collector's callback, which may run in another thread
        # (one of the loop's executor's): the loop's next turn freezes.
        self._pending = loop.call_soon_threadsafe(self._freeze)

    def _freeze(self) -> None:
        self._pending = None
        if self._loop is None:
            return
        # Garbage of the young generations would be frozen with the rest: collect them
        # first (a few thousand objects at most, unlike the full collection just done).
        gc.collect(1)
        if self._loop.time() - self._thawed_at > THAW_EVERY:
            # Not only departed clients leave frozen cycles behind: a Redis
            # connection replaced after a blip, an old subscriber. However few
            # clients leave, everything is collected once in a while.
            self.thaw()
            return  # the thaw's collection freezes again
        gc.freeze()
        # Departures still count: the cycles of those frozen before wait for a thaw.
        self._frozen_clients = self._clients()
