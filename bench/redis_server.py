"""Kept for the imports of ``bench.chaos``: the benchmarks' private ``redis-server`` is ``bench.redis_process``.

``RedisServer`` was a near copy of ``RedisProcess``; it is now that class
under its old name, and ``free_port`` the same function.
"""

from __future__ import annotations

from bench.redis_process import RedisProcess, free_port

__all__ = ["RedisServer", "free_port"]

#: The old name: ``close()`` (not ``stop()``) also removes its working folder.
RedisServer = RedisProcess
