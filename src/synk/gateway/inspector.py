"""The inspector: a live page of the gateway's clients, keys and objects, at ``/inspect``.

Served only with the ``inspect`` setting (``synk serve --inspect``), behind
the ``authenticate`` hook: when one is set, the page and its state answer
only requests it accepts (a browser passes ``?token=...``, which the page
carries on to its own requests and websocket), and 401 otherwise. Routes:

``/inspect``
    the page (``static/inspector/index.html``)
``/inspect/state``
    the gateway's state, read now, as JSON (:func:`state`); the page polls it
``/inspect/app.js``, ``/inspect/style.css``
    the page's script and style sheet: the same for everyone (they ship in
    the package) and free of any state, so served without a token, as a
    page's module script cannot carry one
``/inspect/``
    a redirect to ``/inspect``, so the page's relative URLs resolve

The page shows a key's objects with synk's own JS client, over an ordinary
connection to the gateway (so it needs ``authorize`` to allow the key).
"""

from __future__ import annotations

import asyncio
import logging
from importlib import resources
from typing import TYPE_CHECKING, Any

import orjson

from synk.gateway import http

if TYPE_CHECKING:
    from synk.gateway.http import Response
    from synk.gateway.hub import Gateway

__all__ = ["MAX_ROWS", "respond", "state"]

log = logging.getLogger("synk.gateway")

#: Keys and clients listed at most in one state (the counts are always whole): a gateway
#: with 50,000 clients would otherwise answer each poll with megabytes.
MAX_ROWS = 500
#: Keys listed per client at most.
MAX_CLIENT_KEYS = 20

_TEXT = "text/plain; charset=utf-8"
#: the page's files: name -> content type
_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
#: Every answer: never cached (it is live, and may be behind a token), and the token in the
#: page's URL never leaks through a Referer header.
_COMMON = [("cache-control", "no-store"), ("referrer-policy", "no-referrer"), ("x-content-type-options", "nosniff")]


def _file(name: str) -> bytes:
    return resources.files("synk.gateway").joinpath(f"static/inspector/{name}").read_bytes()


def state(gateway: Gateway) -> dict[str, Any]:
    """The gateway's state, read now: what ``/inspect/state`` serves (JSON-ready).

    ``time`` is the gateway's monotonic clock (seconds), so that the page
    turns the ``totals`` counters of two reads into rates. ``keys`` (most
    subscribed first) and ``clients`` (most lagging first) list at most
    :data:`MAX_ROWS` each; ``counts`` are whole. A client's ``identity`` is
    what ``authenticate`` returned, as JSON; ``lag`` is how many seconds the
    oldest message queued for it has waited; ``lagging`` means its backlog
    passed its bound and was dropped (it is re-snapshotted once it drains).
    """
    m = gateway.metrics
    router = gateway.router
    followed = router.keys()  # a list (Router is not a dict)
    keys = sorted(((key, len(router.clients(key))) for key in followed), key=lambda kv: (-kv[1], kv[0]))
    sessions = list(gateway.sessions.values())
    subscriptions = sum(len(s.keys) for s in sessions)
    sessions.sort(key=lambda s: (not s.lagging, -s.lag, -s.backlog_bytes, s.id))
    clients = []
    for s in sessions[:MAX_ROWS]:
        own = list(s.keys)
        clients.append(
            {
                "id": s.id,
                "identity": s.identity_json,  # an orjson.Fragment: JSON already
                "keys": own[:MAX_CLIENT_KEYS],
                "key_count": len(own),
                "backlog_messages": s.backlog_messages,
                "backlog_bytes": s.backlog_bytes,
                "lag": round(s.lag, 6),
                "lagging": s.lagging,
                "resnap": s.resnap,
                "batch": s.batch,
            }
        )
    return {
        "time": asyncio.get_running_loop().time(),
        "counts": {"clients": len(gateway.sessions), "keys": len(router), "subscriptions": subscriptions},
        "totals": {
            "messages_in": m.messages_in,
            "bytes_in": m.bytes_in,
            "messages_out": m.messages_out,
            "bytes_out": m.bytes_out,
            "store_messages": m.store_messages,
            "slow_resyncs": m.slow_resyncs,
            "slow_closes": m.slow_closes,
            "store_reconnects": m.store_reconnects,
            "errors": sum(m.errors.values()),
        },
        "keys": [{"key": key, "subscribers": n} for key, n in keys[:MAX_ROWS]],
        "clients": clients,
        "max_rows": MAX_ROWS,
    }


def _answer(status: int, ctype: str, body: bytes, method: str, extra: list[tuple[str, str]] | None = None) -> Response:
    headers = [("content-type", ctype), *_COMMON, *(extra or [])]
    return http.Response(status, headers, body if method != "HEAD" else b"")


async def respond(gateway: Gateway, method: str, path: str, headers: dict[str, str], peer: str) -> Response:
    """The answer to a request under ``/inspect`` (the gateway checks ``inspect`` is on)."""
    method = method.upper()
    local, _, query = path.partition("?")
    if method not in ("GET", "HEAD"):
        return http.Response(405, [("content-type", _TEXT), ("allow", "GET, HEAD")], f"method {method} is not allowed; use GET\n".encode())
    if local == "/inspect/":
        # Relative, so that it holds under a mount point too (an ASGI app at /sync, say).
        return _answer(308, _TEXT, b"see /inspect\n", method, [("location", "../inspect" + (f"?{query}" if query else ""))])
    name = local.removeprefix("/inspect/")
    if name in ("app.js", "style.css"):
        return _answer(200, _FILES[name], _file(name), method)
    if local not in ("/inspect", "/inspect/state"):
        return _answer(404, _TEXT, b"not found\n", method)
    refusal = await gateway.admit_admin(path, headers, peer)
    if refusal is not None:
        return refusal
    if local == "/inspect":
        return _answer(200, _FILES["index.html"], _file("index.html"), method)
    return _answer(200, "application/json", orjson.dumps(state(gateway)), method)
