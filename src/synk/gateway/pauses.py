"""How long the gateway's event loop stalls, and how much of it is the garbage collector.

Every delivery waits for the loop: a 250 ms stall is 250 ms added to every
message in flight. Two histograms say where stalls come from:

- ``synk_loop_lag_seconds``: a timer asks to run every ``PERIOD`` seconds
  and records how late it ran. Lag is anything that held the loop: a long
  callback, a full garbage collection, a machine out of CPU.
- ``synk_gc_seconds``: each collection of the oldest generation (the full
  ones, which walk every tracked object: at 10,000 clients, hundreds of
  thousands), timed with ``gc.callbacks``. Young collections are short and
  frequent, and are not recorded.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from synk.core.histogram import Histogram

__all__ = ["PERIOD", "Pauses"]

#: Seconds between two lag probes.
PERIOD = 0.1


class Pauses:
    """Loop lag and full garbage collections, as histograms (``start`` in the loop, ``stop`` to end)."""

    def __init__(self) -> None:
        self.lag = Histogram("synk_loop_lag_seconds", f"How late a timer due every {PERIOD:g} s ran in the gateway's event loop.")
        self.gc = Histogram("synk_gc_seconds", "Full (oldest generation) garbage collections in the gateway's process.")
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._gc_start = 0.0

    def start(self) -> None:
        """Begin measuring (in the running loop)."""
        if self._timer is not None:
            return
        loop = asyncio.get_running_loop()
        self._due = loop.time() + PERIOD
        self._timer = loop.call_at(self._due, self._probe)
        gc.callbacks.append(self._on_gc)

    def stop(self) -> None:
        """Stop measuring."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _probe(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self.lag.observe(max(0.0, now - self._due))
        # Due PERIOD after it ran, not after it was due: a long stall counts once.
        self._due = now + PERIOD
        self._timer = loop.call_at(self._due, self._probe)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._gc_start = time.perf_counter()
        elif self._gc_start:
            self.gc.observe(time.perf_counter() - self._gc_start)
            self._gc_start = 0.0
