"""The MCP hot path makes no database query in steady state (architecture: "Rules for the hot path").

The endpoint is driven in-process through ASGI; after one warm-up request, database access is
blocked outright, and tools/list, tools/call routing, resources/read and prompts/get still answer.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from asgiref.sync import sync_to_async

from registry import auth
from tests.factories import GatewayFactory, PromptFactory, ResourceFactory, ToolFactory, UserFactory
from transports import edge
from transports.protocol.upstream.base import UpstreamClient
from transports.routing import endpoint
from transports.runtime import get_core, reset_core


class EchoUpstream(UpstreamClient):
    """An in-memory upstream: tools/call echoes its arguments."""

    def __init__(self) -> None:
        self.initialize_result = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}}
        self.calls: list[tuple[str, dict]] = []

    async def connect(self) -> dict:
        return self.initialize_result

    async def request(self, method, params=None, *, timeout=None, on_message=None) -> dict:
        self.calls.append((method, params or {}))
        return {"content": [{"type": "text", "text": json.dumps(params.get("arguments"))}], "isError": False}

    async def notify(self, method, params=None) -> None:
        return None

    def set_notification_handler(self, handler) -> None:
        return None

    async def aclose(self) -> None:
        return None

    @property
    def connected(self) -> bool:
        return True


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}


async def asgi_post(
    body: dict, *, token: str, session: str | None = None, path: str = "/mcp", extra: dict | None = None
) -> tuple[int, dict, dict]:
    headers = [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"accept", b"application/json, text/event-stream"),
        (b"authorization", f"Bearer {token}".encode()),
    ]
    if session:
        headers += [(b"mcp-session-id", session.encode()), (b"mcp-protocol-version", b"2025-11-25")]
    headers += [(k.lower().encode(), v.encode()) for k, v in (extra or {}).items()]
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers, "url_route": {"kwargs": {}}}
    sent: list[dict] = []
    payload = json.dumps(body).encode()
    delivered = False

    async def receive() -> dict:
        nonlocal delivered
        if delivered:  # like a server: nothing more until the client goes away
            await asyncio.Event().wait()
        delivered = True
        return {"type": "http.request", "body": payload, "more_body": False}

    async def send(event: dict) -> None:
        sent.append(event)

    await endpoint(scope, receive, send)
    start = sent[0]
    response_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    raw = b"".join(e.get("body", b"") for e in sent[1:])
    if response_headers.get("content-type") == "text/event-stream":  # tools/call streams: take the answer
        data = [line[6:] for line in raw.decode().splitlines() if line.startswith("data: {")]
        return start["status"], response_headers, json.loads(data[-1])
    return start["status"], response_headers, (json.loads(raw) if raw else {})


def _close_connection() -> None:
    from django.db import connection

    connection.close()  # resolved in the worker thread: closes that thread's connection


@pytest.fixture(autouse=True)
async def _close_worker_connections():
    """The endpoint verifies credentials in the thread-sensitive worker: close its connection after
    each test, or PostgreSQL refuses to drop the test database."""
    yield
    await sync_to_async(_close_connection)()


@pytest.fixture
def world(db):
    reset_core()
    edge.credentials.clear()
    user = UserFactory(username="hot", is_staff=True)
    gateway = GatewayFactory(name="echo")
    for i in range(30):
        ToolFactory(name=f"tool_{i:02d}", gateway=gateway)
    ResourceFactory(uri="file:///hot.txt", text="warm")
    PromptFactory(name="hot_prompt", arguments=[{"name": "topic", "required": True}], template="About {{ topic }}")
    upstream = EchoUpstream()
    get_core().upstreams.override("echo", upstream)
    yield auth.token_issue(username=user.username), upstream
    reset_core()


@pytest.mark.django_db(transaction=True)
async def test_steady_state_requests_make_no_database_query(world, django_db_blocker):
    """After warm-up, tools/list, tools/call, resources/read and prompts/get run with the database blocked."""
    token, upstream = world
    status, headers, result = await asgi_post(
        INITIALIZE,
        token=token,
    )
    assert status == 200, result
    session = headers["mcp-session-id"]

    with django_db_blocker.block():
        for round_ in range(3):
            status, _, listed = await asgi_post(
                {"jsonrpc": "2.0", "id": 10 + round_, "method": "tools/list"}, token=token, session=session
            )
            assert status == 200
            assert [t["name"] for t in listed["result"]["tools"]][:2] == ["tool_00", "tool_01"]
            _, _, called = await asgi_post(
                {
                    "jsonrpc": "2.0",
                    "id": 20 + round_,
                    "method": "tools/call",
                    "params": {"name": "tool_07", "arguments": {"x": "y"}},
                },
                token=token,
                session=session,
            )
            assert called["result"]["content"][0]["text"] == '{"x": "y"}'
            _, _, read = await asgi_post(
                {"jsonrpc": "2.0", "id": 30 + round_, "method": "resources/read", "params": {"uri": "file:///hot.txt"}},
                token=token,
                session=session,
            )
            assert read["result"]["contents"][0]["text"] == "warm"
            _, _, prompt = await asgi_post(
                {
                    "jsonrpc": "2.0",
                    "id": 40 + round_,
                    "method": "prompts/get",
                    "params": {"name": "hot_prompt", "arguments": {"topic": "owls"}},
                },
                token=token,
                session=session,
            )
            assert prompt["result"]["messages"][0]["content"]["text"] == "About owls"
    calls = [call for call in upstream.calls if call[0] == "tools/call"]
    assert calls[0] == ("tools/call", {"name": "tool_07", "arguments": {"x": "y"}})


@pytest.mark.django_db(transaction=True)
async def test_a_catalog_change_rebuilds_the_snapshot_once(world):
    """A committed change makes the next request see it; requests in between share one snapshot."""
    from registry import services
    from registry.models import Tool

    token, _ = world
    _, headers, _ = await asgi_post(
        INITIALIZE,
        token=token,
    )
    session = headers["mcp-session-id"]
    first = await get_core().catalog.get()
    assert await get_core().catalog.get() is first
    tool = await sync_to_async(Tool.objects.get)(name="tool_00")
    await sync_to_async(services.entry_update)(tool, data={"enabled": False})
    _, _, listed = await asgi_post({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, token=token, session=session)
    assert "tool_00" not in [t["name"] for t in listed["result"]["tools"]]
    assert (await get_core().catalog.get()).version > first.version


@pytest.mark.django_db(transaction=True)
async def test_an_unreadable_catalog_keeps_the_last_snapshot(world, django_db_blocker):
    """When the database is unreachable, the last good snapshot keeps serving (and no 500 escapes)."""
    token, _ = world
    _, headers, _ = await asgi_post(
        INITIALIZE,
        token=token,
    )
    get_core().catalog.invalidate()
    with django_db_blocker.block():
        status, _, listed = await asgi_post(
            {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, token=token, session=headers["mcp-session-id"]
        )
    assert status == 200
    assert len(listed["result"]["tools"]) == 30


@pytest.mark.django_db(transaction=True)
async def test_no_catalog_at_all_is_503(world, django_db_blocker):
    """With no snapshot yet and no database, initialize answers 503 with a JSON-RPC error."""
    token, _ = world
    await asgi_post({"jsonrpc": "2.0", "id": 0, "method": "ping"}, token=token)  # warms the credential cache only
    with django_db_blocker.block():
        status, _, body = await asgi_post(
            INITIALIZE,
            token=token,
        )
    assert status == 503
    assert body["error"]["code"] == -32603


@pytest.mark.django_db(transaction=True)
async def test_upstream_subscriptions_are_shared_and_released(world):
    """Two sessions following one upstream resource cause one upstream resources/subscribe; the
    upstream hears resources/unsubscribe only when the last follower leaves."""
    from registry.models import Gateway, Resource

    token, upstream = world
    await sync_to_async(Resource.objects.create)(
        uri="up://shared", name="shared", gateway=await sync_to_async(Gateway.objects.get)(name="echo")
    )
    sessions = []
    for _ in range(2):
        _, headers, _ = await asgi_post(INITIALIZE, token=token)
        sessions.append(headers["mcp-session-id"])
    sub = {"jsonrpc": "2.0", "id": 2, "method": "resources/subscribe", "params": {"uri": "up://shared"}}
    unsub = {"jsonrpc": "2.0", "id": 3, "method": "resources/unsubscribe", "params": {"uri": "up://shared"}}
    for session in sessions:
        assert (await asgi_post(sub, token=token, session=session))[2]["result"] == {}
    assert [m for m, _ in upstream.calls] == ["resources/subscribe"]
    await asgi_post(unsub, token=token, session=sessions[0])
    assert [m for m, _ in upstream.calls] == ["resources/subscribe"]
    await asgi_post(unsub, token=token, session=sessions[1])
    assert [m for m, _ in upstream.calls] == ["resources/subscribe", "resources/unsubscribe"]


MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
}


def modern_request(request_id: int, method: str, params: dict | None = None) -> tuple[dict, dict]:
    """A 2026-07-28 request and its mirrored headers (basic/transports/streamable-http, Request Metadata)."""
    body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {**(params or {}), "_meta": MODERN_META}}
    headers = {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": method}
    name = (params or {}).get("name") or (params or {}).get("uri")
    if name:
        headers["Mcp-Name"] = name
    return body, headers


@pytest.mark.django_db(transaction=True)
async def test_stateless_requests_make_no_database_query(world, django_db_blocker):
    """2026-07-28 requests carry everything in themselves: after one warm-up they run with the database
    blocked too (server/discover, tools/list, tools/call, resources/read, prompts/get)."""
    token, upstream = world
    body, headers = modern_request(1, "server/discover")
    status, _, discovered = await asgi_post(body, token=token, extra=headers)
    assert status == 200, discovered
    assert discovered["result"]["supportedVersions"] == ["2026-07-28"]
    with django_db_blocker.block():
        for round_ in range(3):
            for method, params, check in [
                ("tools/list", None, lambda r: r["tools"][0]["name"] == "tool_00"),
                (
                    "tools/call",
                    {"name": "tool_07", "arguments": {"x": 1}},
                    lambda r: r["content"][0]["text"] == '{"x": 1}',
                ),
                ("resources/read", {"uri": "file:///hot.txt"}, lambda r: r["contents"][0]["text"] == "warm"),
                ("prompts/get", {"name": "hot_prompt", "arguments": {"topic": "owls"}}, lambda r: bool(r["messages"])),
            ]:
                body, headers = modern_request(10 + round_, method, params)
                status, _, answer = await asgi_post(body, token=token, extra=headers)
                assert status == 200, answer
                assert answer["id"] == 10 + round_
                assert answer["result"]["resultType"] == "complete"
                assert check(answer["result"]), answer
    method, params = next(call for call in upstream.calls if call[0] == "tools/call")
    assert params["arguments"] == {"x": 1}
    assert "io.modelcontextprotocol/protocolVersion" not in params.get("_meta", {})  # the client's envelope stays here


@pytest.mark.django_db(transaction=True)
async def test_client_log_levels_reach_the_shared_upstream_session_only_downwards(world):
    """A client's log level (a session's logging/setLevel, a 2026-07-28 request's `_meta` logLevel) is set
    on the upstream session before the call when the upstream is not already that detailed; the level only
    goes down, since the upstream session is shared (the gateway filters per client)."""
    token, upstream = world
    upstream.initialize_result["capabilities"]["logging"] = {}
    _, headers, _ = await asgi_post(INITIALIZE, token=token)
    session = headers["mcp-session-id"]
    set_level = {"jsonrpc": "2.0", "id": 2, "method": "logging/setLevel", "params": {"level": "warning"}}
    assert (await asgi_post(set_level, token=token, session=session))[2]["result"] == {}
    call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "tool_01", "arguments": {}}}
    await asgi_post(call, token=token, session=session)
    await asgi_post({**call, "id": 4}, token=token, session=session)
    body, extra = modern_request(5, "tools/call", {"name": "tool_01", "arguments": {}})
    body["params"]["_meta"] = {**body["params"]["_meta"], "io.modelcontextprotocol/logLevel": "debug"}
    await asgi_post(body, token=token, extra=extra)
    body, extra = modern_request(6, "tools/call", {"name": "tool_01", "arguments": {}})
    body["params"]["_meta"] = {**body["params"]["_meta"], "io.modelcontextprotocol/logLevel": "error"}
    await asgi_post(body, token=token, extra=extra)
    levels = [params["level"] for method, params in upstream.calls if method == "logging/setLevel"]
    assert levels == ["warning", "debug"]
    assert [m for m, _ in upstream.calls].count("tools/call") == 4


@pytest.mark.django_db(transaction=True)
async def test_no_query_with_metrics_and_the_access_log_on(world, django_db_blocker, settings):
    """The recorder's histograms, the access log with redacted arguments and /metrics' counters add no
    query to tools/list, tools/call, resources/read and prompts/get."""
    from transports.protocol import observe

    settings.GATEWAY_METRICS = True
    settings.GATEWAY_ACCESS_LOG = True
    settings.GATEWAY_LOG_ARGUMENTS = True
    assert observe.access is not None
    token, _upstream = world
    _, headers, _ = await asgi_post(INITIALIZE, token=token)
    session = headers["mcp-session-id"]
    requests = [
        {"method": "tools/list"},
        {"method": "tools/call", "params": {"name": "tool_07", "arguments": {"password": "p"}}},
        {"method": "resources/read", "params": {"uri": "file:///hot.txt"}},
        {"method": "prompts/get", "params": {"name": "hot_prompt", "arguments": {"topic": "owls"}}},
    ]
    with django_db_blocker.block():
        for request_id, request in enumerate(requests * 2, start=10):
            status, _, answer = await asgi_post(
                {"jsonrpc": "2.0", "id": request_id, **request}, token=token, session=session
            )
            assert status == 200, answer
            assert "result" in answer, answer
    found = {row[0]: row for row in observe.recorder.metrics()["requests"] if row[1] == "ok"}
    assert sum(found["tools/call"][2]) >= 2


@pytest.mark.django_db(transaction=True)
async def test_audited_calls_make_no_database_query(world, django_db_blocker, settings):
    """With GATEWAY_AUDIT_CALLS (and arguments) on, tools/call still runs with the database blocked: the call
    is only queued; the audit log has it once the writer flushes."""
    from registry import audit
    from registry.models import AuditEntry
    from transports import governance
    from transports.protocol import hooks

    settings.GATEWAY_AUDIT_CALLS = settings.GATEWAY_AUDIT_ARGUMENTS = True
    hooks.tool_called.connect(governance.tool_called)  # as ready() does with the setting on
    log = audit.call_log()
    log.clear()
    background, log.background = log.background, False
    token, _ = world
    try:
        _, headers, _ = await asgi_post(INITIALIZE, token=token)
        session = headers["mcp-session-id"]
        with django_db_blocker.block():
            for round_ in range(3):
                _, _, called = await asgi_post(
                    {
                        "jsonrpc": "2.0",
                        "id": 50 + round_,
                        "method": "tools/call",
                        "params": {"name": "tool_07", "arguments": {"x": "y", "token": "t"}},
                    },
                    token=token,
                    session=session,
                )
                assert "result" in called
        assert log.pending() == 3
        assert await sync_to_async(audit.flush)() == 3
        stored = await sync_to_async(list)(AuditEntry.objects.filter(action="call").values("actor", "target", "detail"))
        assert [(e["actor"], e["target"]) for e in stored] == [("hot", "tool_07")] * 3
        assert stored[0]["detail"]["arguments"] == {"x": "y", "token": "(redacted)"}
    finally:
        log.clear()
        log.background = background


@pytest.mark.django_db(transaction=True)
async def test_steady_state_with_every_limit_on_makes_no_database_query(world, django_db_blocker, settings):
    """Rate limits (every level, from settings and from the catalog's own values carried in the
    snapshot) and the upstream bound read no table per call."""
    from registry.models import Gateway, Tool
    from transports.protocol import limits

    for level in ("USER", "TOKEN", "SERVER", "TOOL", "GATEWAY"):
        setattr(settings, f"GATEWAY_RATE_LIMIT_PER_{level}", "1000/minute")
    settings.GATEWAY_UPSTREAM_MAX_CONCURRENCY = 4
    prefix = settings.GATEWAY_RATE_LIMIT_REDIS_PREFIX = f"mcpgw-hotpath-{uuid.uuid4().hex[:12]}:"  # with REDIS_URL
    await sync_to_async(Tool.objects.filter(name="tool_07").update)(rate_limit="500/minute")
    await sync_to_async(Gateway.objects.filter(name="echo").update)(rate_limit="900/minute", max_concurrency=8)
    limits.reset()
    token, _upstream = world
    _, headers, _ = await asgi_post(INITIALIZE, token=token)
    session = headers["mcp-session-id"]
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "tool_07", "arguments": {}}}
    with django_db_blocker.block():
        for round_ in range(3):
            _, _, called = await asgi_post({**call, "id": 20 + round_}, token=token, session=session)
            assert "result" in called, called
            status, _, listed = await asgi_post(
                {"jsonrpc": "2.0", "id": 30 + round_, "method": "tools/list"}, token=token, session=session
            )
            assert status == 200
            assert listed["result"]["tools"]
    assert limits.active().per_user == (1000, 60)
    limits.reset()
    if settings.REDIS_URL:  # only this test's buckets
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL)
        mine = list(client.scan_iter(match=f"{prefix}*"))
        if mine:
            client.delete(*mine)


class ReadingUpstream(EchoUpstream):
    """EchoUpstream that also answers resources/read (no cache hints: GATEWAY_CACHE_TTL applies)."""

    async def request(self, method, params=None, *, timeout=None, on_message=None) -> dict:
        if method == "resources/read":
            self.calls.append((method, params or {}))
            return {"contents": [{"uri": params["uri"], "text": "from upstream"}]}
        return await super().request(method, params, timeout=timeout, on_message=on_message)


@pytest.mark.django_db(transaction=True)
async def test_cached_upstream_reads_make_no_database_query(world, settings, django_db_blocker):
    """Caching on (GATEWAY_CACHE_TTL; the default cache: local memory, Redis with REDIS_URL): upstream reads of
    both eras come from the cache with the database blocked, and the upstream is asked once."""
    from registry.models import Gateway, Resource

    token, _ = world
    settings.GATEWAY_CACHE_TTL = 60.0
    reset_core()
    upstream = ReadingUpstream()
    core = get_core()
    core.upstreams.override("echo", upstream)
    assert core.relay.cache is not None
    await core.relay.cache.invalidate_gateway("echo")  # nothing kept by an earlier test of this process
    await sync_to_async(Resource.objects.create)(
        uri="up://hot", name="hot", gateway=await sync_to_async(Gateway.objects.get)(name="echo")
    )
    _, headers, _ = await asgi_post(INITIALIZE, token=token)
    session = headers["mcp-session-id"]
    body, extra = modern_request(1, "server/discover")
    await asgi_post(body, token=token, extra=extra)
    cache = core.relay.cache
    keys = [cache.generation_key("echo"), cache.uri_key("echo", "up://hot")]
    keys.append(cache.entry_key("echo", "resources/read", {"uri": "up://hot"}))
    try:
        await _read_cached(token, session, django_db_blocker)
    finally:  # with REDIS_URL the default cache is shared: leave nothing behind
        for key in keys:
            await cache.store.delete(key)
    assert [method for method, _ in upstream.calls] == ["resources/read"]
    assert cache.stats.hits == 5


async def _read_cached(token: str, session: str, django_db_blocker) -> None:
    with django_db_blocker.block():
        for round_ in range(3):
            read = {"jsonrpc": "2.0", "id": 30 + round_, "method": "resources/read", "params": {"uri": "up://hot"}}
            _, _, answer = await asgi_post(read, token=token, session=session)
            assert answer["result"]["contents"][0]["text"] == "from upstream", answer
            body, extra = modern_request(40 + round_, "resources/read", {"uri": "up://hot"})
            status, _, answer = await asgi_post(body, token=token, extra=extra)
            assert status == 200, answer
            assert answer["result"]["contents"][0]["text"] == "from upstream", answer
