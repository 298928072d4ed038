"""Caching of upstream answers (docs/governance.md, "Caching"): resources/read answers kept for their TTL
(the upstream's ttlMs hint, else GATEWAY_CACHE_TTL), private ones per user, invalidated by the upstream's
resources/updated and list_changed and by catalog changes, one upstream request for concurrent identical
misses; on the Django cache framework (local memory, Redis)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
from typing import Any

import pytest

from tests.fixtures.servers import start_upstream
from transports.cache import DjangoCacheStore, upstream_cache
from transports.protocol.cache import MemoryStore, UpstreamCache
from transports.protocol.catalog import build_snapshot
from transports.protocol.core import McpCore
from transports.protocol.fanout import changed_gateways
from transports.protocol.outcome import Caller
from transports.protocol.sessions import Session
from transports.protocol.upstream.base import UpstreamClient

DOC = "up://doc"
TEMPLATE = "up://items/{id}"


class Clock:
    """A settable clock for the cache and its memory store."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class CountingUpstream(UpstreamClient):
    """An in-memory upstream whose resources/read answers say how many reads it has served (so a cached
    answer is told from a fresh one); ``hints`` are added to each answer; ``gate`` holds reads back."""

    def __init__(self, hints: dict[str, Any] | None = None) -> None:
        self.initialize_result = {"protocolVersion": "2025-11-25", "capabilities": {"resources": {"subscribe": True}}}
        self.era = "legacy"
        self.hints = hints or {}
        self.reads: list[str] = []
        self.gate: asyncio.Event | None = None
        self.fail_with: dict[str, Any] | None = None
        self.ask_client = False

    async def connect(self) -> dict:
        return self.initialize_result

    async def request(self, method, params=None, *, timeout=None, on_message=None, headers=None) -> dict:
        if method != "resources/read":
            return {}
        uri = (params or {})["uri"]
        self.reads.append(uri)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with is not None:
            from transports.protocol.upstream.base import UpstreamError

            raise UpstreamError(self.fail_with["code"], self.fail_with["message"])
        if self.ask_client and on_message is not None:
            await on_message({"jsonrpc": "2.0", "id": 1, "method": "roots/list", "params": {}})
        return {"contents": [{"uri": uri, "text": f"read {len(self.reads)}"}], **self.hints}

    async def notify(self, method, params=None) -> None:
        return None

    def set_notification_handler(self, handler) -> None:
        return None

    async def aclose(self) -> None:
        return None

    @property
    def connected(self) -> bool:
        return True


def gateway_row(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "transport": "streamable-http",
        "era": "auto",
        "url": "http://127.0.0.1:9/mcp",
        "command": "",
        "args": [],
        "env": {},
        "cwd": None,
        "auth_type": "none",
        "credentials": {},
        "verify_tls": True,
        "ca_bundle": None,
        "capabilities": {},
        "health": "healthy",
        "last_error": "",
        "redundancy_group": "",
        "priority": 0,
        "per_user_process": False,
        "start_at_boot": False,
        **fields,
    }


def resource_row(ident: int, uri: str, gateway: str | None, upstream_uri: str | None = None) -> dict[str, Any]:
    return {
        "id": ident,
        "uri": uri,
        "name": uri.rsplit("/", 1)[-1],
        "title": "",
        "description": "",
        "mime_type": "text/plain",
        "annotations": {},
        "text": None,
        "blob": None,
        "gateway": gateway,
        "upstream_uri": upstream_uri or uri,
    }


def catalog_rows(*, version: int = 1, gateway: dict[str, Any] | None = None, extra: list | None = None) -> dict:
    template = {
        "id": 1,
        "uri_template": TEMPLATE,
        "name": "items",
        "title": "",
        "description": "",
        "mime_type": "text/plain",
        "annotations": {},
        "gateway": "up",
    }
    return {
        "version": version,
        "tools": [],
        "resources": [resource_row(1, DOC, "up"), *(extra or [])],
        "resource_templates": [template],
        "prompts": [],
        "servers": [],
        "gateways": [gateway or gateway_row("up")],
    }


def make_core(upstream: UpstreamClient, cache: UpstreamCache | None, rows: dict | None = None) -> McpCore:
    core = McpCore()
    core.catalog._snapshot = build_snapshot(rows or catalog_rows())
    core.catalog._built = core.catalog._wanted
    core.upstreams.override("up", upstream)
    core.relay.cache = cache
    return core


def memory_cache(clock: Clock | None = None, **options: Any) -> UpstreamCache:
    clock = clock or Clock()
    return UpstreamCache(MemoryStore(clock), clock=clock, **{"default_ttl": 60.0, "max_ttl": 300.0, **options})


async def session_of(core: McpCore, username: str = "ada") -> Session:
    message = {
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}
    }
    session, _ = await core.initialize(message, Caller(username, frozenset({"read", "call"}), None))
    return session


async def read(core: McpCore, session: Session, uri: str = DOC) -> dict[str, Any]:
    async def emit(message: dict) -> None:
        return None

    answer = await core.answer(
        session, {"jsonrpc": "2.0", "id": 7, "method": "resources/read", "params": {"uri": uri}}, emit
    )
    assert answer is not None
    return answer


def text(answer: dict[str, Any]) -> str:
    return answer["result"]["contents"][0]["text"]


# -- hits, TTLs, hints ---------------------------------------------------------------------------------------


async def test_a_second_read_is_answered_from_the_cache():
    """Two client reads of an upstream resource: the upstream sees one (an upstream without hints is
    cached for GATEWAY_CACHE_TTL); a templated resource is cached under its concrete URI."""
    upstream = CountingUpstream()
    core = make_core(upstream, memory_cache())
    session = await session_of(core)
    assert text(await read(core, session)) == "read 1"
    assert text(await read(core, session)) == "read 1"
    assert upstream.reads == [DOC]
    assert text(await read(core, session, "up://items/4")) == "read 2"
    assert text(await read(core, session, "up://items/4")) == "read 2"
    assert text(await read(core, session, "up://items/5")) == "read 3"
    assert upstream.reads == [DOC, "up://items/4", "up://items/5"]
    assert core.relay.cache is not None
    assert core.relay.cache.stats.hits == 2


async def test_no_cache_and_no_hint_ttl_mean_every_read_goes_upstream():
    """No cache on the relay, or GATEWAY_CACHE_TTL 0 with an upstream that gives no hint: no caching."""
    for cache in (None, memory_cache(default_ttl=0.0)):
        upstream = CountingUpstream()
        core = make_core(upstream, cache)
        session = await session_of(core)
        await read(core, session)
        await read(core, session)
        assert len(upstream.reads) == 2


async def test_entries_expire_after_their_ttl():
    """GATEWAY_CACHE_TTL seconds later the upstream is asked again."""
    clock = Clock()
    upstream = CountingUpstream()
    core = make_core(upstream, memory_cache(clock, default_ttl=10.0))
    session = await session_of(core)
    await read(core, session)
    clock.now += 9.9
    assert text(await read(core, session)) == "read 1"
    clock.now += 0.2
    assert text(await read(core, session)) == "read 2"
    assert len(upstream.reads) == 2


async def test_the_upstreams_ttl_hint_is_honoured_and_bounded():
    """An upstream's ttlMs wins over GATEWAY_CACHE_TTL (also when that is 0), a cached answer says what is
    left of it, ttlMs 0 is never kept (immediately stale), and GATEWAY_CACHE_MAX_TTL bounds the hint."""
    clock = Clock()
    upstream = CountingUpstream({"ttlMs": 2000, "cacheScope": "public"})
    core = make_core(upstream, memory_cache(clock, default_ttl=0.0))
    session = await session_of(core)
    assert (await read(core, session))["result"]["ttlMs"] == 2000
    clock.now += 1.5
    cached = await read(core, session)
    assert text(cached) == "read 1"
    assert cached["result"]["ttlMs"] == 500
    clock.now += 0.6
    assert text(await read(core, session)) == "read 2"

    upstream = CountingUpstream({"ttlMs": 0, "cacheScope": "public"})
    core = make_core(upstream, memory_cache(clock, default_ttl=60.0))
    session = await session_of(core)
    await read(core, session)
    await read(core, session)
    assert len(upstream.reads) == 2

    upstream = CountingUpstream({"ttlMs": 3_600_000, "cacheScope": "public"})
    core = make_core(upstream, memory_cache(clock, max_ttl=5.0))
    session = await session_of(core)
    await read(core, session)
    clock.now += 4.9
    assert text(await read(core, session)) == "read 1"
    clock.now += 0.2
    assert text(await read(core, session)) == "read 2"


async def test_private_answers_are_never_shared_between_users():
    """cacheScope private: each user gets their own entry; a public answer is shared. A gateway with a
    process per user is private whatever it says; an answer with ttlMs and no scope counts as private."""
    for hints, row, shared in [
        ({"ttlMs": 60_000, "cacheScope": "private"}, gateway_row("up"), False),
        ({"ttlMs": 60_000}, gateway_row("up"), False),
        ({}, gateway_row("up", per_user_process=True), False),
        ({"ttlMs": 60_000, "cacheScope": "public"}, gateway_row("up"), True),
    ]:
        upstream = CountingUpstream(hints)
        core = make_core(upstream, memory_cache(), catalog_rows(gateway=row))
        ada, bob = await session_of(core, "ada"), await session_of(core, "bob")
        assert text(await read(core, ada)) == "read 1"
        assert text(await read(core, bob)) == ("read 1" if shared else "read 2"), hints
        assert text(await read(core, ada)) == "read 1"
        assert text(await read(core, bob)) == ("read 1" if shared else "read 2")
        assert len(upstream.reads) == (1 if shared else 2)


async def test_errors_error_results_and_answers_that_asked_the_client_are_not_cached():
    """Errors and isError answers are never kept, nor an answer for which the upstream asked the client
    something (it depends on that client's reply)."""
    upstream = CountingUpstream()
    upstream.fail_with = {"code": -32002, "message": "Resource not found"}
    core = make_core(upstream, memory_cache())
    session = await session_of(core)
    assert (await read(core, session))["error"]["code"] == -32002
    assert (await read(core, session))["error"]["code"] == -32002
    assert len(upstream.reads) == 2

    for attribute, value in [("hints", {"isError": True}), ("ask_client", True)]:
        upstream = CountingUpstream()
        setattr(upstream, attribute, value)
        core = make_core(upstream, memory_cache())
        session = await session_of(core)
        await read(core, session)
        await read(core, session)
        assert len(upstream.reads) == 2, attribute


async def test_local_resources_and_other_methods_do_not_touch_the_cache():
    """Only upstream resources/read answers are cached: a local resource is answered from the snapshot."""
    upstream = CountingUpstream()
    local = resource_row(2, "file:///local.txt", None) | {"text": "here"}
    cache = memory_cache()
    core = make_core(upstream, cache, catalog_rows(extra=[local]))
    session = await session_of(core)
    assert text(await read(core, session, "file:///local.txt")) == "here"
    assert cache.stats.misses == 0
    assert cache.stats.hits == 0
    assert not cache.cacheable("prompts/get", {"name": "x"})
    assert not cache.cacheable("resources/read", {"uri": DOC, "inputResponses": {}})


# -- invalidation --------------------------------------------------------------------------------------------


async def test_resources_updated_invalidates_that_uri_only():
    """The upstream's notifications/resources/updated makes the next read of that URI go upstream; other
    URIs of the gateway stay cached."""
    upstream = CountingUpstream()
    core = make_core(upstream, memory_cache())
    session = await session_of(core)
    await read(core, session)
    await read(core, session, "up://items/1")
    await core.fanout.upstream_message(
        "up", {"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": DOC}}
    )
    assert text(await read(core, session)) == "read 3"
    assert text(await read(core, session, "up://items/1")) == "read 2"
    assert upstream.reads == [DOC, "up://items/1", DOC]


@pytest.mark.parametrize("kind", ["resources", "tools", "prompts"])
async def test_list_changed_invalidates_the_whole_gateway(kind):
    """Any list_changed of the upstream makes every cached answer of that gateway stale."""
    upstream = CountingUpstream()
    core = make_core(upstream, memory_cache())
    session = await session_of(core)
    await read(core, session)
    await read(core, session, "up://items/1")
    await core.fanout.upstream_message("up", {"jsonrpc": "2.0", "method": f"notifications/{kind}/list_changed"})
    assert text(await read(core, session)) == "read 3"
    assert text(await read(core, session, "up://items/1")) == "read 4"


async def test_a_catalog_change_of_the_gateway_invalidates_it():
    """A new snapshot in which the gateway's resources or connection changed (a sync, an edit) makes its
    cached answers stale; health changes and other gateways' changes do not."""
    old = build_snapshot(catalog_rows())
    assert changed_gateways(old, build_snapshot(catalog_rows(version=2))) == []
    healthier = catalog_rows(version=2, gateway=gateway_row("up", health="degraded", last_error="slow"))
    assert changed_gateways(old, build_snapshot(healthier)) == []
    moved = catalog_rows(version=2, gateway=gateway_row("up", url="http://127.0.0.1:10/mcp"))
    assert changed_gateways(old, build_snapshot(moved)) == ["up"]
    more = catalog_rows(version=2, extra=[resource_row(3, "up://new", "up")])
    assert changed_gateways(old, build_snapshot(more)) == ["up"]

    upstream = CountingUpstream()
    core = make_core(upstream, memory_cache())
    session = await session_of(core)
    await read(core, session)
    core.fanout.catalog_changed(old, build_snapshot(more))
    await asyncio.sleep(0.05)
    assert text(await read(core, session)) == "read 2"


# -- single flight -------------------------------------------------------------------------------------------


async def test_concurrent_identical_misses_make_one_upstream_request():
    """Ten concurrent reads of one resource: one upstream read, every caller gets its answer. Private
    answers are shared only with the same user: another user's concurrent read makes its own request."""
    upstream = CountingUpstream()
    upstream.gate = asyncio.Event()
    core = make_core(upstream, memory_cache())
    sessions = [await session_of(core, "ada") for _ in range(10)]
    reads = [asyncio.ensure_future(read(core, s)) for s in sessions]
    await asyncio.sleep(0.05)
    upstream.gate.set()
    answers = await asyncio.gather(*reads)
    assert {text(a) for a in answers} == {"read 1"}
    assert upstream.reads == [DOC]

    upstream = CountingUpstream({"ttlMs": 60_000, "cacheScope": "private"})
    upstream.gate = asyncio.Event()
    core = make_core(upstream, memory_cache())
    users = ["ada"] * 5 + ["bob"] * 5
    sessions = [await session_of(core, u) for u in users]
    reads = [asyncio.ensure_future(read(core, s)) for s in sessions]
    await asyncio.sleep(0.05)
    upstream.gate.set()
    answers = await asyncio.gather(*reads)
    ada_texts = {text(a) for a, u in zip(answers, users, strict=True) if u == "ada"}
    bob_texts = {text(a) for a, u in zip(answers, users, strict=True) if u == "bob"}
    assert len(ada_texts) == 1
    assert len(bob_texts) == 1
    assert ada_texts != bob_texts
    assert len(upstream.reads) == 2  # ada's five share the first read; bob's five one of their own


async def test_a_failed_leader_lets_the_others_ask_for_themselves():
    """When the shared upstream request fails, the waiting callers each ask (an error is not shared)."""
    upstream = CountingUpstream()
    upstream.gate = asyncio.Event()
    upstream.fail_with = {"code": -32603, "message": "boom"}
    core = make_core(upstream, memory_cache())
    sessions = [await session_of(core) for _ in range(3)]
    reads = [asyncio.ensure_future(read(core, s)) for s in sessions]
    await asyncio.sleep(0.05)
    upstream.gate.set()
    answers = await asyncio.gather(*reads)
    assert all(a["error"]["message"] == "boom" for a in answers)
    assert len(upstream.reads) == 3


# -- the Django adapter --------------------------------------------------------------------------------------


def test_the_django_adapter_follows_the_settings(settings):
    from django.core.cache import caches
    from django.core.cache.backends.locmem import LocMemCache

    """GATEWAY_CACHE_MAX_TTL 0: no cache; else one on caches[GATEWAY_CACHE_ALIAS] with the TTL settings."""
    settings.GATEWAY_CACHE_MAX_TTL = 0
    assert upstream_cache() is None
    settings.GATEWAY_CACHE_MAX_TTL = 120
    settings.GATEWAY_CACHE_TTL = 600
    cache = upstream_cache()
    assert cache is not None
    assert cache.max_ttl == 120
    assert cache.default_ttl == 120
    assert isinstance(cache.store, DjangoCacheStore)
    assert cache.store.in_process == isinstance(caches["default"], LocMemCache)  # Redis with REDIS_URL


async def test_local_memory_backend():
    """The Django local-memory backend as the store: a hit and an invalidation."""
    from django.core.cache.backends.locmem import LocMemCache

    store = DjangoCacheStore(LocMemCache(f"test-{secrets.token_hex(4)}", {}))
    upstream = CountingUpstream()
    core = make_core(upstream, UpstreamCache(store, default_ttl=60.0))
    session = await session_of(core)
    await read(core, session)
    await read(core, session)
    assert len(upstream.reads) == 1
    await core.fanout.upstream_message("up", {"jsonrpc": "2.0", "method": "notifications/resources/list_changed"})
    await read(core, session)
    assert len(upstream.reads) == 2


@contextlib.asynccontextmanager
async def redis_backend():
    """A Django RedisCache under a key prefix of its own; only its keys are deleted afterwards."""
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.skip("needs Redis: set REDIS_URL (CI sets it)")
    redis = pytest.importorskip("redis")
    from django.core.cache.backends.redis import RedisCache

    prefix = f"cachetest-{secrets.token_hex(4)}"
    backend = RedisCache(url, {"KEY_PREFIX": prefix})
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except Exception as exc:
        pytest.skip(f"needs Redis at {url}: {exc}")
    try:
        yield backend
    finally:
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)
        client.close()


@pytest.mark.redis
async def test_redis_backend_is_shared_by_replicas():
    """Two replicas on one Redis cache: what one read, the other serves; an invalidation heard by one
    reaches both; private answers stay per user there too."""
    async with redis_backend() as backend:
        upstream = CountingUpstream({"ttlMs": 60_000, "cacheScope": "private"})
        a = make_core(upstream, UpstreamCache(DjangoCacheStore(backend)))
        b = make_core(upstream, UpstreamCache(DjangoCacheStore(backend)))
        assert not DjangoCacheStore(backend).in_process
        assert text(await read(a, await session_of(a, "ada"))) == "read 1"
        assert text(await read(b, await session_of(b, "ada"))) == "read 1"
        assert text(await read(b, await session_of(b, "bob"))) == "read 2"
        await a.fanout.upstream_message(
            "up", {"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": DOC}}
        )
        assert text(await read(b, await session_of(b, "ada"))) == "read 3"
        assert len(upstream.reads) == 3


# -- against the fixture upstream server ---------------------------------------------------------------------

WATCHED = "test://watched-resource"


def fixture_rows(url: str, era: str) -> dict[str, Any]:
    rows = catalog_rows(gateway=gateway_row("fx", url=url, era=era))
    rows["resources"] = [resource_row(1, WATCHED, "fx"), resource_row(2, "test://static-text", "fx")]
    rows["resource_templates"] = []
    return rows


@contextlib.asynccontextmanager
async def fixture_core(era: str):
    upstream = await asyncio.to_thread(start_upstream, "streamable-http", era=era)
    core = McpCore()
    core.catalog._snapshot = build_snapshot(fixture_rows(upstream.url, era))
    core.catalog._built = core.catalog._wanted
    core.relay.cache = memory_cache(default_ttl=60.0)
    try:
        yield core
    finally:
        await core.upstreams.aclose()
        await asyncio.to_thread(upstream.stop)


async def test_fixture_upstream_resource_update_invalidates_the_cached_read():
    """A session-era fixture upstream (no hints: GATEWAY_CACHE_TTL 60 s applies): the second read is the
    cached one; test_trigger_resource_update changes the resource and notifies the gateway's upstream
    subscription, and the next read shows the new version at once."""
    async with fixture_core("legacy") as core:
        session = await session_of(core)

        async def emit(message: dict) -> None:
            return None

        subscribe = {"jsonrpc": "2.0", "id": 2, "method": "resources/subscribe", "params": {"uri": WATCHED}}
        assert (await core.answer(session, subscribe, emit))["result"] == {}
        first = text(await read(core, session, WATCHED))
        assert first.endswith("version 0")
        assert text(await read(core, session, WATCHED)) == first
        cache = core.relay.cache
        assert cache is not None
        assert cache.stats.hits == 1
        row = (await core.catalog.get()).upstreams["fx"]
        client = await core.upstreams.get("fx", row)
        await client.request("tools/call", {"name": "test_trigger_resource_update", "arguments": {}}, timeout=10)
        deadline = asyncio.get_running_loop().time() + 10
        while not (latest := text(await read(core, session, WATCHED))).endswith("version 1"):
            assert asyncio.get_running_loop().time() < deadline, f"still {latest!r}"
            await asyncio.sleep(0.05)


async def test_fixture_modern_upstream_hints_of_zero_are_honoured():
    """The 2026-07-28 fixture marks reads ttlMs 0, private: never kept, even with GATEWAY_CACHE_TTL set."""
    async with fixture_core("modern") as core:
        session = await session_of(core)
        answers = [json.dumps(await read(core, session, "test://static-text")) for _ in range(2)]
        assert "static text resource" in answers[0]
        cache = core.relay.cache
        assert cache is not None
        assert cache.stats.stored == 0
        assert cache.stats.hits == 0
