"""The protocol core's Redis clients (the shared session store, the rate-limit buckets).

Each is made on a blocking connection pool: redis-py's default pool holds at most 100 connections and
raises "Too many connections" for the 101st command in flight, which under a burst (128 session openings
at once on one process, in the scale-out bench) surfaced as HTTP 500s. A blocking pool makes that command
wait for a connection to come free instead, up to ``WAIT_SECONDS``; past it the pool's ConnectionError is
what an unreachable Redis gives too (503 from the session store, a JSON-RPC error from the core).
"""

from __future__ import annotations

from typing import Any

MAX_CONNECTIONS = 100
WAIT_SECONDS = 5.0


def async_client(url: str) -> Any:
    """A ``redis.asyncio.Redis`` for ``url`` (it belongs to the running event loop, like its pool)."""
    import redis.asyncio as aioredis

    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=MAX_CONNECTIONS, timeout=WAIT_SECONDS)
    return aioredis.Redis.from_pool(pool)
