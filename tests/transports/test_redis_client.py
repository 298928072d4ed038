"""The protocol core's Redis clients wait for a free connection rather than fail past the pool's size."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

from transports.protocol import redis_client

pytestmark = pytest.mark.redis


async def test_more_commands_in_flight_than_connections_wait_their_turn(monkeypatch):
    """30 commands that each hold a connection 0.2 s, on a pool of 10: all answer (redis-py's default pool
    raised "Too many connections" for the 11th: HTTP 500s under a burst of session openings)."""
    monkeypatch.setattr(redis_client, "MAX_CONNECTIONS", 10)
    client = redis_client.async_client(os.environ["REDIS_URL"])
    key = f"mcpgw-test-pool-{uuid.uuid4().hex}"  # never written: BLPOP only waits on it
    try:
        answers = await asyncio.wait_for(
            asyncio.gather(*(client.blpop([key], timeout=0.2) for _ in range(30))), timeout=20
        )
    finally:
        await client.aclose()
    assert answers == [None] * 30


async def test_a_command_that_waits_too_long_for_a_connection_fails_like_an_unreachable_redis(monkeypatch):
    from redis.exceptions import ConnectionError as RedisConnectionError

    monkeypatch.setattr(redis_client, "MAX_CONNECTIONS", 1)
    monkeypatch.setattr(redis_client, "WAIT_SECONDS", 0.1)
    client = redis_client.async_client(os.environ["REDIS_URL"])
    key = f"mcpgw-test-pool-{uuid.uuid4().hex}"
    try:
        holder = asyncio.ensure_future(client.blpop([key], timeout=1))
        await asyncio.sleep(0.05)
        with pytest.raises(RedisConnectionError):
            await client.ping()
        assert await holder is None
    finally:
        await client.aclose()
