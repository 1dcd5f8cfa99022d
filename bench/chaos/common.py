"""What the orchestrator and the simulation share: names, sizes, the world's object type."""

from __future__ import annotations

from pathlib import Path

import synk

ROOT = Path(__file__).resolve().parents[2]
#: The Node fleet of clients (one process runs several).
CLIENTS_JS = Path(__file__).with_name("clients.mjs")
#: synk's default key prefix: the store layout is ``synk:{KEY}:o``.
PREFIX = "synk:"
KEYS = 20
OBJECTS = 270
TICK_HZ = 20.0


def key_name(k: int) -> str:
    """The subscription key of index ``k``."""
    return f"zone:{k}"


ALL_KEYS = [key_name(k) for k in range(KEYS)]


class Thing(synk.Object):
    """A simulated object: in key ``zone:{k}``; ``n`` counts its changes, ``tag`` is renamed now and then."""

    type_key = "thing"
    k: int = 0
    n: int = 0
    tag: str = ""

    @property
    def sub_key(self) -> str:
        return key_name(self.k)
