"""A request stream whose replica is gone (issue #16, fault 2; live in tests/faults/test_replica_faults.py): with
the Redis session store, each request stream records which replica runs the request and the request's id, so a
replica resuming the stream (GET + Last-Event-ID) ends it with the JSON-RPC error the client waits for once the
running replica no longer answers, instead of holding the client's stream open for ever. Two stores on one Redis
(a key prefix of their own, removed afterwards) and a pub/sub layer, as two replicas have them."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator

import pytest

from transports.protocol import jsonrpc
from transports.protocol.shared_sessions import ORPHANED, RedisSessionStore

pytestmark = pytest.mark.redis


@contextlib.asynccontextmanager
async def two_stores() -> AsyncIterator[tuple[RedisSessionStore, RedisSessionStore]]:
    import redis.asyncio as redis
    from channels_redis.pubsub import RedisPubSubChannelLayer

    from transports.protocol.replicas import Mesh

    url = os.environ["REDIS_URL"]
    client = redis.Redis.from_url(url)
    try:
        await client.ping()
    except Exception as exc:
        pytest.skip(f"needs Redis at {url}: {exc}")
    prefix = f"orphantest-{secrets.token_hex(4)}:"
    stores = [
        RedisSessionStore(url, Mesh(RedisPubSubChannelLayer(hosts=[url], prefix=prefix)), prefix=prefix) for _ in "ab"
    ]
    try:
        for store in stores:
            await store.mesh.start()
        yield stores[0], stores[1]
    finally:
        for store in stores:
            with contextlib.suppress(Exception):
                await store.mesh.stop()
                await store.mesh.layer.flush()
        async for key in client.scan_iter(f"{prefix}*"):
            await client.delete(key)
        await client.aclose()


async def _session(store: RedisSessionStore):
    return await store.create(
        username="ada",
        scopes=frozenset({"read", "call"}),
        server=None,
        protocol_version="2025-11-25",
        client_capabilities={"elicitation": {}},
        client_info={},
    )


async def test_a_stream_of_a_replica_that_is_gone_ends_with_an_error_for_its_request():
    async with two_stores() as (a, b):
        session = await _session(a)
        running = a.open_stream(session, "call-7")
        await running.append({"jsonrpc": "2.0", "id": "gw-a-1", "method": "elicitation/create", "params": {}})
        await a.mesh.stop()  # replica A is gone: its channel no longer answers

        on_b = await b.find_stream(await b.get(session.id), running.id)
        assert on_b is not None
        assert await on_b.end_if_orphaned()
        events, done = await on_b.read(1)
        assert done
        assert [message for _, message in events] == [
            jsonrpc.error_response("call-7", jsonrpc.JsonRpcError(jsonrpc.SERVER_ERROR, ORPHANED))
        ]
        assert not await on_b.end_if_orphaned()  # once


async def test_a_stream_of_a_live_replica_is_left_alone():
    async with two_stores() as (a, b):
        session = await _session(a)
        running = a.open_stream(session, 8)
        await running.append({"jsonrpc": "2.0", "method": "notifications/progress", "params": {}})
        on_b = await b.find_stream(await b.get(session.id), running.id)
        assert on_b is not None
        assert not await on_b.end_if_orphaned()
        assert await on_b.read(1) == ([], False)
        await running.append({"jsonrpc": "2.0", "id": 8, "result": {}}, last=True)
        assert (await on_b.read(1))[1]


async def test_the_standalone_stream_is_never_taken_for_an_orphan():
    async with two_stores() as (a, b):
        session = await _session(a)
        await a.standalone(session).append({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
        await a.mesh.stop()
        assert not await b.standalone(await b.get(session.id)).end_if_orphaned()
