"""The Redis channel layer of the settings sends again over a new connection when Redis dropped the one it had
(what a Redis restart does to every replica; issue #16, fault 3, live in tests/faults/test_replica_faults.py):
without that, the first message each replica sends after a restart, such as a client's answer forwarded to
the replica that asked, is lost with a ConnectionError. Uses REDIS_URL's server under a prefix of its own and
drops only the layer's own connection."""

from __future__ import annotations

import asyncio
import os
import secrets

import pytest

pytestmark = pytest.mark.redis


async def test_a_message_sent_after_redis_dropped_the_connection_arrives(settings):
    import redis.asyncio as redis
    from channels_redis.pubsub import RedisPubSubChannelLayer

    config = {**settings.CHANNEL_LAYERS["default"]["CONFIG"], "prefix": f"layertest-{secrets.token_hex(4)}:"}
    layer = RedisPubSubChannelLayer(**config)
    admin = redis.Redis.from_url(os.environ["REDIS_URL"])
    try:
        channel = await layer.new_channel()
        await layer.group_add("g", channel)
        await layer.group_send("g", {"type": "t", "n": 1})
        assert (await asyncio.wait_for(layer.receive(channel), 5))["n"] == 1

        shard = layer._shards[0]  # the connection group_send publishes on (the subscriber's is another)
        connection = await shard._redis.client_id()
        assert await admin.execute_command("CLIENT", "KILL", "ID", connection) == 1

        await layer.group_send("g", {"type": "t", "n": 2})
        assert (await asyncio.wait_for(layer.receive(channel), 5))["n"] == 2
    finally:
        await layer.flush()
        await admin.aclose()
