"""RESP, as synk's write path speaks it, and what a broken connection raises.

The write path encodes its calls straight into RESP (the Redis
serialization protocol, https://redis.io/docs/latest/develop/reference/protocol-spec/)
rather than through redis-py's command packing: a flush of 100,000 writes
is a few buffers, not 100,000 argument lists.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis import exceptions as rexc

from synk.errors import ConnectionError as SynkConnectionError

__all__ = ["ASKING", "ERRORS", "Call", "bulk", "command", "down", "keyed", "last_of"]

#: A call to send: a key it touches (its hash slot says where it goes), and the call in RESP.
Call = tuple[bytes, bytes]

#: What a broken or unreachable connection raises.
ERRORS = (rexc.ConnectionError, rexc.TimeoutError, OSError, asyncio.TimeoutError)

#: Sent just before a call that follows an ASK redirection.
ASKING = b"*1\r\n$6\r\nASKING\r\n"


def bulk(data: bytes) -> bytes:
    """One bulk string."""
    return b"$%d\r\n%b\r\n" % (len(data), data)


def command(*args: bytes) -> bytes:
    """One command: an array of bulk strings."""
    return b"*%d\r\n%b" % (len(args), b"".join(map(bulk, args)))


def keyed(*args: bytes) -> Call:
    """A command whose first argument is its key: (key, RESP)."""
    return args[1], command(*args)


def last_of(replies: list[Any], counts: list[int]) -> list[Any]:
    """The reply of each call, from the replies of its commands (``counts`` per call): its last."""
    if len(counts) == len(replies):
        return replies
    out, j = [], 0
    for count in counts:
        j += count
        out.append(replies[j - 1])
    return out


def down(url: str, exc: BaseException) -> SynkConnectionError:
    """The synk error for a Redis that could not be reached or answer."""
    return SynkConnectionError(f"redis at {url} is unreachable: {str(exc) or type(exc).__name__}")
