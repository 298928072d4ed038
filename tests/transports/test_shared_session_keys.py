"""What a session leaves in Redis when it ends (shared store): nothing. Its record, the logs of its streams
(standalone and request streams, with their counters, runner records and readers), its notification claims and
its entries in the session counts go with it, whether its client deletes it (on any replica) or it expires
(bench/soak_findings.md: request-stream logs used to live the idle timeout + 60 s after their session).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable

import pytest
from channels.layers import InMemoryChannelLayer

from tests.redis_keys import delete_keys, new_prefix
from tests.transports.test_limits import SESSION_FIELDS as FIELDS
from transports.protocol.replicas import Mesh
from transports.protocol.shared_sessions import RedisSessionStore

pytestmark = pytest.mark.redis


def message(n: int) -> dict[str, object]:
    return {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": "t", "progress": n}}


@pytest.fixture
async def stores() -> AsyncIterator[Callable[..., RedisSessionStore]]:
    """Makes the session stores of replicas (each with its own mesh: what one does, the others find in Redis)
    under a key prefix of this test's own; their keys are deleted afterwards."""
    url, prefix = os.environ["REDIS_URL"], new_prefix("keys")
    made: list[RedisSessionStore] = []

    def store(idle_timeout: float = 60.0) -> RedisSessionStore:
        made.append(
            RedisSessionStore(url, Mesh(InMemoryChannelLayer()), idle_timeout=idle_timeout, prefix=prefix + ":")
        )
        return made[-1]

    yield store
    for each in made:
        await each.mesh.stop()
        await each.redis().aclose()
    delete_keys(url, prefix)


async def keys_of(store: RedisSessionStore, session_id: str) -> list[str]:
    """Every key under the store's prefix that names the session, and its entries in the session counts."""
    client = store.redis()
    found = [k.decode() async for k in client.scan_iter(match=f"{store.prefix}*{session_id}*", count=1000)]
    for counted in (f"{store.prefix}all", f"{store.prefix}u:{FIELDS['username']}"):
        if await client.zscore(counted, session_id) is not None:
            found.append(f"{counted} (member)")
    return sorted(found)


async def with_everything(store: RedisSessionStore) -> str:
    """A session with what a busy one owns in Redis: request streams (one finished, one answered by a replica
    that is gone and ended by another), the standalone stream with a reader, and a notification claim."""
    session = await store.create(**FIELDS)
    for request_id in (1, 2):
        log = store.open_stream(session, request_id)
        await log.append(message(1))
        await log.append({"jsonrpc": "2.0", "id": request_id, "result": {}}, last=request_id == 1)
    standalone = store.standalone(session)
    await standalone.append(message(2))
    assert not await standalone.wait(await standalone.position(), 0.01)  # leaves the readers' key
    assert await store.claim(session, "v7")
    assert not await store.claim(session, "v7")  # the second replica to claim it does not send it
    assert len(await keys_of(store, session.id)) > 8
    return session.id


async def test_delete_on_any_replica_removes_every_key_of_the_session(stores):
    """DELETE on another replica than the one that wrote the session's streams leaves none of its keys."""
    a, b = stores(), stores()
    session_id = await with_everything(a)
    other = await with_everything(a)
    assert await b.delete(session_id)
    assert await keys_of(b, session_id) == []
    assert len(await keys_of(b, other)) > 8  # another session's keys stay
    assert not await b.delete(session_id)


async def test_an_expired_session_leaves_no_keys(stores):
    """A session that expires leaves no key once a replica finds it gone (a request for it) or makes a new
    session, whichever comes first, not the idle timeout + 60 s later; a late write to its logs or record (a
    call that was still running) creates nothing."""
    store = stores(idle_timeout=1.0)
    seen_again = await with_everything(store)
    abandoned = await with_everything(store)
    late = store.open_stream(await store.get(seen_again), 9)
    await asyncio.sleep(1.3)
    assert await store.get(seen_again) is None
    assert await keys_of(store, seen_again) == []
    await store.create(**FIELDS)
    assert await keys_of(store, abandoned) == []
    await late.append(message(3))
    assert await keys_of(store, seen_again) == []


async def test_saving_a_session_that_ended_does_not_bring_its_record_back(stores):
    """A request that ends after its session was deleted writes nothing: a record without an expiry would stay."""
    store = stores()
    session = await store.create(**FIELDS)
    await store.delete(session.id)
    session.initialized = True
    await store.save(session, "initialized")
    assert await keys_of(store, session.id) == []
