"""The protocol core's relay bookkeeping, in process: refreshes after an upstream's list changes, and the
upstream resource subscriptions held for sessions and listen streams."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from transports.protocol import hooks
from transports.protocol.catalog import build_snapshot
from transports.protocol.core import McpCore
from transports.protocol.outcome import Caller
from transports.protocol.sessions import SessionStore
from transports.protocol.upstream.base import UpstreamClient


async def test_list_changes_during_a_refresh_cause_one_more_refresh():
    """Notifications of one change (one per connection to the upstream) make one refresh, at once; a change
    announced while a refresh runs makes one more after it (that refresh may have read the old lists)."""
    core = McpCore()
    started: list[float] = []
    release = asyncio.Event()

    async def receiver(gateway: str, pool: object = None) -> None:
        started.append(asyncio.get_running_loop().time())
        await release.wait()

    hooks.upstream_lists_changed.connect(receiver)
    try:
        begun = asyncio.get_running_loop().time()
        for _ in range(3):
            core.fanout.upstream_lists_changed("fx")
        while not started:
            await asyncio.sleep(0.005)
        assert started[0] - begun < 5  # a bound on the wait; the debounce itself is REFRESH_DEBOUNCE
        core.fanout.upstream_lists_changed("fx")  # during the refresh
        core.fanout.upstream_lists_changed("fx")
        release.set()
        await asyncio.wait_for(core.fanout._refreshing["fx"], 5)
        assert len(started) == 2
    finally:
        hooks.upstream_lists_changed.disconnect(receiver)


# -- upstream resource subscriptions and the sessions that wanted them ---------------------------------------

WATCHED = "up://watched"


class RecordingUpstream(UpstreamClient):
    """An in-memory upstream that records resources/subscribe and unsubscribe."""

    def __init__(self) -> None:
        self.initialize_result = {"protocolVersion": "2025-11-25", "capabilities": {"resources": {"subscribe": True}}}
        self.era = "legacy"
        self.seen: list[tuple[str, str]] = []

    async def connect(self) -> dict:
        return self.initialize_result

    async def request(self, method, params=None, *, timeout=None, on_message=None, headers=None) -> dict:
        if method in ("resources/subscribe", "resources/unsubscribe"):
            self.seen.append((method, (params or {})["uri"]))
        return {}

    async def notify(self, method, params=None) -> None:
        return None

    def set_notification_handler(self, handler) -> None:
        return None

    async def aclose(self) -> None:
        return None

    @property
    def connected(self) -> bool:
        return True


def snapshot_rows() -> dict[str, Any]:
    resource = {
        "id": 1,
        "uri": WATCHED,
        "name": "watched",
        "title": "",
        "description": "",
        "mime_type": "text/plain",
        "annotations": {},
        "text": None,
        "blob": None,
        "gateway": "up",
        "upstream_uri": WATCHED,
    }
    empty: list[Any] = []
    return {
        "version": 1,
        "tools": empty,
        "resources": [resource],
        "resource_templates": empty,
        "prompts": empty,
        "servers": empty,
        "gateways": empty,
    }


def make_core(upstream: RecordingUpstream, **options: Any) -> McpCore:
    """A core whose catalog is one upstream resource (no database) and whose upstream 'up' is ``upstream``."""
    core = McpCore(**options)
    core.catalog._snapshot = build_snapshot(snapshot_rows())
    core.catalog._built = core.catalog._wanted
    core.upstreams.override("up", upstream)
    return core


async def subscribe(core: McpCore) -> str:
    """A new session of ``core`` that subscribes to the watched resource; its id."""
    message = {
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}
    }
    session, _ = await core.initialize(message, Caller("ada", frozenset({"read", "call"}), None))

    async def emit(message: dict) -> None:
        return None

    request = {"jsonrpc": "2.0", "id": 1, "method": "resources/subscribe", "params": {"uri": WATCHED}}
    answer = await core.answer(session, request, emit)
    assert answer is not None
    assert answer.get("result") == {}, answer
    return session.id


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


SUBSCRIBE = ("resources/subscribe", WATCHED)
UNSUBSCRIBE = ("resources/unsubscribe", WATCHED)


async def test_the_last_session_to_end_releases_the_upstream_subscription():
    """One upstream subscription however many sessions follow the resource; it is ended upstream when the
    last of them ends (here: deleted), not before."""
    upstream = RecordingUpstream()
    core = make_core(upstream)
    first, second = await subscribe(core), await subscribe(core)
    assert upstream.seen == [SUBSCRIBE]
    await core.sessions.delete(first)
    await asyncio.sleep(0.1)
    assert upstream.seen == [SUBSCRIBE]
    await core.sessions.delete(second)
    await eventually(lambda: upstream.seen == [SUBSCRIBE, UNSUBSCRIBE], "the upstream unsubscribe")
    assert core.fanout._followers == {}


async def test_an_expired_session_releases_the_upstream_subscription():
    """A session that expires sends no event: the core looks for expired followers now and then."""
    upstream = RecordingUpstream()
    core = make_core(upstream, sessions=SessionStore(idle_timeout=0.3))
    core.fanout.subscription_sweep = 0.1
    await subscribe(core)
    assert upstream.seen == [SUBSCRIBE]
    await eventually(lambda: upstream.seen == [SUBSCRIBE, UNSUBSCRIBE], "the upstream unsubscribe", timeout=5)
    assert core.fanout._followers == {}
    assert core.fanout._sweeper is not None
    await eventually(core.fanout._sweeper.done, "the sweep to stop once nobody follows")


def _redis_url() -> str:
    return os.environ["REDIS_URL"]  # the tests that use it are marked redis: skipped without REDIS_URL


@contextlib.asynccontextmanager
async def two_replicas(upstream: RecordingUpstream) -> AsyncIterator[tuple[McpCore, McpCore]]:
    """Two cores sharing sessions in Redis (under a key prefix of their own, removed afterwards) and a
    Channels pub/sub layer, as two gateway replicas do."""
    redis = pytest.importorskip("redis.asyncio")
    from channels_redis.pubsub import RedisPubSubChannelLayer

    from transports.protocol.replicas import Mesh
    from transports.protocol.shared_sessions import RedisSessionStore

    url = _redis_url()
    client = redis.Redis.from_url(url)
    try:
        await client.ping()
    except Exception as exc:
        pytest.skip(f"needs Redis at {url}: {exc}")
    prefix = f"relaytest-{secrets.token_hex(4)}:"
    cores = []
    try:
        for _ in range(2):
            layer = RedisPubSubChannelLayer(hosts=[url], prefix=prefix)
            store = RedisSessionStore(url, Mesh(layer), prefix=prefix)
            core = make_core(upstream, sessions=store, mesh=store.mesh)
            await core.joined()
            cores.append(core)
        yield cores[0], cores[1]
    finally:
        for core in cores:
            assert core.mesh is not None
            with contextlib.suppress(Exception):
                await core.mesh.stop()
                await core.mesh.layer.flush()
        async for key in client.scan_iter(f"{prefix}*"):
            await client.delete(key)
        await client.aclose()


@pytest.mark.redis
async def test_a_session_ended_on_another_replica_releases_the_upstream_subscription():
    """Redis session store: the replica that holds the upstream subscription hears that the session was
    deleted on another replica, and ends the subscription upstream."""
    upstream = RecordingUpstream()
    async with two_replicas(upstream) as (a, b):
        session_id = await subscribe(a)
        assert upstream.seen == [SUBSCRIBE]
        assert await b.sessions.delete(session_id)
        await eventually(lambda: upstream.seen == [SUBSCRIBE, UNSUBSCRIBE], "the upstream unsubscribe")


@pytest.mark.redis
async def test_a_session_expired_in_redis_releases_the_upstream_subscription():
    """Redis session store: a session whose record expired (nobody deletes it, no event) is found by the
    replica holding its upstream subscription, which ends it upstream."""
    upstream = RecordingUpstream()
    async with two_replicas(upstream) as (a, _b):
        a.fanout.subscription_sweep = 0.1
        session_id = await subscribe(a)
        assert upstream.seen == [SUBSCRIBE]
        await a.sessions.redis().delete(a.sessions._key(session_id))  # what the record's TTL does
        await eventually(lambda: upstream.seen == [SUBSCRIBE, UNSUBSCRIBE], "the upstream unsubscribe")
