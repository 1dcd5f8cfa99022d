"""A model of the original synk-js v2.1.0 client's rules, to check what the gateway sends it.

It throws on an ``add`` of an object it holds and on a version gap, and
knows neither ``snap`` nor ``resnap`` (they reach it as custom messages).
:func:`violations` replays what a client received and lists where that
client would have thrown.
"""

from __future__ import annotations

from typing import Any

__all__ = ["violations"]


def violations(messages: list[dict[str, Any]], keys: set[str]) -> list[str]:
    """Where the original client would have thrown on ``messages``, following ``keys``."""
    held: dict[str, int] = {}
    out = []
    for m in messages:
        method = m.get("method")
        if method == "add":
            if m["id"] in held:
                out.append(f"add of {m['id']!r} at v{m['v']}, held at v{held[m['id']]}")
            held[m["id"]] = m["v"]
        elif method == "mod":
            if m["id"] not in held:
                continue
            if m["v"] != held[m["id"]] + 1:
                out.append(f"mod of {m['id']!r} at v{m['v']}, held at v{held[m['id']]}")
            held[m["id"]] = m["v"]
            if "nsKey" in m and m["nsKey"] not in keys:
                del held[m["id"]]
        elif method == "rem":
            held.pop(m["id"], None)
    return out
