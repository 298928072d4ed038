"""Rate and concurrency limits (issue #15 item 1; docs/governance.md "Rate and concurrency limits").

Token buckets alone (refill, burst, retry time, all or none) in memory and in Redis; then every limit
level through the real endpoints driven in-process over ASGI: per user, per token and per virtual
server at the edge (HTTP 429 with Retry-After on Streamable HTTP and /rpc; a JSON-RPC error per
request on WebSocket), per tool and per gateway on tools/call, a catalog entry's own value beating the
setting, and the bound on calls in flight to one upstream (queues, then refuses).
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.test import override_settings

from registry import auth
from registry.models import Gateway, Tool, VirtualServer
from tests.factories import GatewayFactory, ToolFactory, UserFactory
from tests.transports.test_hot_path import INITIALIZE, EchoUpstream
from transports import edge
from transports import websocket as ws_adapter
from transports.protocol import limits
from transports.protocol.limits import Bucket, Limiter, MemoryStore, RateLimited, RedisStore
from transports.runtime import get_core, reset_core
from transports.streamable_http import endpoint

# -- buckets ------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def bucket(key: str = "u:alice", rate: tuple[int, float] = (3, 60), limit: str = limits.USER) -> Bucket:
    return Bucket(key, limit, rate, "alice")


async def test_a_bucket_allows_a_burst_then_refills_at_its_rate():
    """3/minute: three at once, the fourth waits 20 s (one token per 20 s), and passes after it."""
    clock = Clock()
    store = MemoryStore(clock=clock)
    for _ in range(3):
        assert await store.take([bucket()]) is None
    refused = await store.take([bucket()])
    assert refused is not None
    assert refused[0].key == "u:alice"
    assert refused[1] == pytest.approx(20.0)
    clock.now += 10
    assert (await store.take([bucket()]))[1] == pytest.approx(10.0)  # type: ignore[index]
    clock.now += 10
    assert await store.take([bucket()]) is None
    clock.now += 3600  # never more than the capacity: a long rest gives a burst of 3 again, not more
    assert all([await store.take([bucket()]) is None for _ in range(3)])
    assert await store.take([bucket()]) is not None


async def test_several_buckets_take_all_or_none_and_name_the_longest_wait():
    """A request refused by one bucket takes no token from the others."""
    clock = Clock()
    store = MemoryStore(clock=clock)
    user, tool = bucket("u:a", (5, 60)), bucket("tool:t:a", (1, 60), limits.TOOL)
    assert await store.take([user, tool]) is None
    refused = await store.take([user, tool])
    assert refused is not None
    assert refused[0] is tool
    assert refused[1] == pytest.approx(60.0)
    for _ in range(4):  # the user's bucket still holds its 4 tokens
        assert await store.take([user]) is None
    assert await store.take([user]) is not None


async def test_the_memory_store_is_bounded_and_drops_idle_buckets():
    clock = Clock()
    store = MemoryStore(max_buckets=10, clock=clock)
    for i in range(50):
        await store.take([bucket(f"u:{i}", (2, 1))])
    assert len(store) == 10
    clock.now += 5  # every bucket is full again: the same as none
    await store.take([bucket("u:new", (2, 1))])
    assert len(store) == 1


def test_rate_limited_rounds_the_retry_time_up_and_names_the_limit():
    refused = RateLimited.for_bucket(Bucket("u:bob", limits.USER, (100, 60), "bob"), 11.2)
    assert refused.retry_after == 12
    assert refused.message == "Rate limit GATEWAY_RATE_LIMIT_PER_USER (100/minute) reached for bob: retry in 12 s."
    error = refused.error().to_error()
    assert error["code"] == limits.RATE_LIMITED
    assert error["data"] == {"retryAfter": 12, "limit": "GATEWAY_RATE_LIMIT_PER_USER"}


class ExplodingStore:
    async def take(self, buckets):
        raise AssertionError("no limit is configured: the store must not be asked")


def test_no_limit_anywhere_means_no_bucket_at_all():
    """With no setting and no entry value, a request and a call count against nothing (no store call)."""
    limiter = Limiter(store=ExplodingStore())
    assert limiter.request_buckets("alice", "tok", "srv", None) == []
    assert limiter.call_buckets("alice", "t", None, "gw", {"gw": {"rate_limit": None}}) == []
    assert limiter.upstream_bound({"max_concurrency": None}) == (0, limits.CONCURRENCY)


def _redis_url() -> str | None:
    return os.environ.get("REDIS_URL")


@pytest.fixture
def redis_prefix():
    url = _redis_url()
    if not url:
        pytest.skip("REDIS_URL is not set: the Redis bucket store is not tested")
    import redis

    prefix = f"mcpgw-rltest-{uuid.uuid4().hex[:12]}:"
    yield url, prefix
    client = redis.Redis.from_url(url)
    mine = list(client.scan_iter(match=f"{prefix}*"))
    if mine:
        client.delete(*mine)


async def test_the_redis_store_counts_like_the_memory_one(redis_prefix):
    """One script call per check: burst, refusal with the wait, all or none; keys expire with the window."""
    url, prefix = redis_prefix
    store = RedisStore(url, prefix=prefix)
    user, tool = bucket("u:a", (2, 60)), bucket("tool:t:a", (1, 60), limits.TOOL)
    assert await store.take([user, tool]) is None
    refused = await store.take([user, tool])
    assert refused is not None
    assert refused[0] == tool
    assert 59 < refused[1] <= 60
    assert await store.take([user]) is None  # the refused request took nothing from the user's bucket
    refused = await store.take([user])
    assert refused is not None
    assert refused[0] == user
    assert 0 < refused[1] <= 30
    import redis

    ttl = redis.Redis.from_url(url).pttl(f"{prefix}u:a")
    assert 0 < ttl <= 60_000


class ScriptCalls:
    """Counts the calls of ``store``'s take script (one Redis round trip each), each delayed ``delay`` seconds."""

    def __init__(self, store: RedisStore, delay: float = 0.0) -> None:
        self.count = 0
        script = store._take_script()

        async def counted(**kwargs):
            self.count += 1
            if delay:
                await asyncio.sleep(delay)
            return await script(**kwargs)

        store._take_script = lambda: counted  # type: ignore[method-assign]


async def test_the_redis_store_leases_a_share_of_large_buckets_and_checks_small_ones_every_time(redis_prefix):
    """A bucket of 10,000/minute is taken from in leases of 100 tokens (1 %): 250 requests make 3 script
    calls, and the shared bucket shows what was leased; a bucket of 50/minute (a share under one token) is
    checked in Redis on every request, exactly."""
    import redis

    url, prefix = redis_prefix
    store = RedisStore(url, prefix=prefix)
    calls = ScriptCalls(store)
    big = bucket("u:big", (10_000, 60))
    for _ in range(250):
        assert await store.take([big]) is None
    assert calls.count == 3
    left = float(redis.Redis.from_url(url).hget(f"{prefix}u:big", "t"))
    assert 9_699 <= left <= 9_701  # three leases of 100 taken from the shared bucket (plus a trickle of refill)
    small = bucket("u:small", (50, 60))
    calls.count = 0
    for _ in range(50):
        assert await store.take([small]) is None
    assert calls.count == 50
    refused = await store.take([small])
    assert refused is not None
    assert refused[0] == small


async def test_concurrent_requests_share_one_lease_renewal(redis_prefix):
    """32 requests at once on a spent lease of a 10,000/minute bucket: one of them renews it (one script
    call, 100 tokens from the shared bucket), the others wait for that renewal and spend it; before, each
    took a lease of its own (32 x 100 tokens), draining the shared bucket far below its rate."""
    import redis

    url, prefix = redis_prefix
    store = RedisStore(url, prefix=prefix)
    calls = ScriptCalls(store, delay=0.01)  # a round trip long enough for every request to find the lease spent
    big = bucket("u:big", (10_000, 60))
    assert await asyncio.gather(*(store.take([big]) for _ in range(32))) == [None] * 32
    assert calls.count == 1
    left = float(redis.Redis.from_url(url).hget(f"{prefix}u:big", "t"))
    assert 9_899 <= left <= 9_901


# -- through the endpoints ----------------------------------------------------------------------


async def post(body: dict, *, token: str, session: str | None = None, server: str | None = None):
    headers = [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"accept", b"application/json, text/event-stream"),
        (b"authorization", f"Bearer {token}".encode()),
    ]
    if session:
        headers += [(b"mcp-session-id", session.encode()), (b"mcp-protocol-version", b"2025-11-25")]
    path = f"/servers/{server}/mcp" if server else "/mcp"
    kwargs = {"server": server} if server else {}
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers, "url_route": {"kwargs": kwargs}}
    sent: list[dict] = []
    delivered = False

    async def receive() -> dict:
        nonlocal delivered
        if delivered:
            await asyncio.Event().wait()
        delivered = True
        return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}

    async def send(event: dict) -> None:
        sent.append(event)

    await endpoint(scope, receive, send)
    head = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    raw = b"".join(e.get("body", b"") for e in sent[1:])
    if head.get("content-type") == "text/event-stream":
        data = [line[6:] for line in raw.decode().splitlines() if line.startswith("data: {")]
        return sent[0]["status"], head, json.loads(data[-1])
    return sent[0]["status"], head, (json.loads(raw) if raw else {})


def _close_connection() -> None:
    from django.db import connection

    connection.close()


@pytest.fixture(autouse=True)
async def _close_worker_connections():
    yield
    await sync_to_async(_close_connection)()


@pytest.fixture
def world(db):
    """A user, a gateway "echo" with tools "first" and "second" answered in memory; buckets of this
    test alone (a private Redis prefix, its keys deleted afterwards, when REDIS_URL is set)."""
    prefix = f"mcpgw-rltest-{uuid.uuid4().hex[:12]}:"
    private = override_settings(GATEWAY_RATE_LIMIT_REDIS_PREFIX=prefix)
    private.enable()
    reset_core()
    limits.reset()
    limits.refusals.clear()
    edge.credentials.clear()
    user = UserFactory(username="alice", is_staff=True)
    gateway = GatewayFactory(name="echo")
    ToolFactory(name="first", gateway=gateway)
    ToolFactory(name="second", gateway=gateway)
    upstream = EchoUpstream()
    get_core().upstreams.override("echo", upstream)
    yield auth.token_issue(username=user.username), upstream
    reset_core()
    limits.reset()
    private.disable()
    if _redis_url():
        import redis

        client = redis.Redis.from_url(_redis_url())
        mine = list(client.scan_iter(match=f"{prefix}*"))
        if mine:
            client.delete(*mine)


def call(request_id: int, tool: str = "first") -> dict:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": tool, "arguments": {}}}


def ping(request_id: int) -> dict:
    return {"jsonrpc": "2.0", "id": request_id, "method": "ping"}


@pytest.mark.django_db(transaction=True)
@override_settings(GATEWAY_RATE_LIMIT_PER_USER="3/minute")
async def test_the_per_user_limit_answers_429_with_retry_after(world):
    """The fourth request in a minute (initialize, two pings, then one more) is refused at the edge:
    HTTP 429, Retry-After, a JSON-RPC error naming the limit, the user and the retry time."""
    token, _ = world
    status, headers, _ = await post(INITIALIZE, token=token)
    session = headers["mcp-session-id"]
    assert (await post(ping(2), token=token, session=session))[0] == 200
    assert (await post(ping(3), token=token, session=session))[0] == 200
    status, headers, body = await post(ping(4), token=token, session=session)
    assert status == 429
    assert 1 <= int(headers["retry-after"]) <= 20
    error = body["error"]
    assert error["code"] == limits.RATE_LIMITED
    assert error["data"] == {"retryAfter": int(headers["retry-after"]), "limit": "GATEWAY_RATE_LIMIT_PER_USER"}
    assert error["message"].startswith("Rate limit GATEWAY_RATE_LIMIT_PER_USER (3/minute) reached for alice: retry in")
    assert limits.refusals == {"GATEWAY_RATE_LIMIT_PER_USER": 1}


@pytest.mark.django_db(transaction=True)
@override_settings(GATEWAY_RATE_LIMIT_PER_TOKEN="2/minute")
async def test_the_per_token_limit_counts_each_token_apart(world):
    token, _ = world
    other = await sync_to_async(auth.token_issue)(username="alice")
    status, headers, _ = await post(INITIALIZE, token=token)
    assert status == 200
    assert (await post(ping(2), token=token, session=headers["mcp-session-id"]))[0] == 200
    status, _, body = await post(ping(3), token=token, session=headers["mcp-session-id"])
    assert status == 429
    assert body["error"]["data"]["limit"] == "GATEWAY_RATE_LIMIT_PER_TOKEN"
    assert (await post(INITIALIZE, token=other))[0] == 200  # the same user's other token has its own bucket


@pytest.mark.django_db(transaction=True)
@override_settings(GATEWAY_RATE_LIMIT_PER_SERVER="100/minute")
async def test_a_virtual_servers_own_limit_beats_the_setting(world):
    """VirtualServer.rate_limit 2/minute wins over GATEWAY_RATE_LIMIT_PER_SERVER; /mcp is not a server."""
    token, _ = world
    await sync_to_async(VirtualServer.objects.create)(name="tight", rate_limit="2/minute")
    status, headers, _ = await post(INITIALIZE, token=token, server="tight")
    assert status == 200
    assert (await post(ping(2), token=token, server="tight", session=headers["mcp-session-id"]))[0] == 200
    status, _, body = await post(ping(3), token=token, server="tight", session=headers["mcp-session-id"])
    assert status == 429
    assert body["error"]["data"]["limit"] == "VirtualServer.rate_limit"
    assert "(2/minute) reached for alice on virtual server 'tight'" in body["error"]["message"]
    assert (await post(INITIALIZE, token=token))[0] == 200


@pytest.mark.django_db(transaction=True)
@override_settings(GATEWAY_RATE_LIMIT_PER_TOOL="100/minute")
async def test_a_tools_own_limit_beats_the_setting_and_refuses_with_a_jsonrpc_error(world):
    """Tool.rate_limit 1/minute: the second call of that tool is a JSON-RPC error (the session stays
    usable, HTTP 200 like every answer of a session); another tool still answers."""
    token, upstream = world
    await sync_to_async(Tool.objects.filter(name="first").update)(rate_limit="1/minute")
    from registry import events

    await sync_to_async(events.catalog_changed)()
    _, headers, _ = await post(INITIALIZE, token=token)
    session = headers["mcp-session-id"]
    assert "result" in (await post(call(2), token=token, session=session))[2]
    status, _, body = await post(call(3), token=token, session=session)
    assert status == 200
    assert body["error"]["code"] == limits.RATE_LIMITED
    assert body["error"]["data"]["limit"] == "Tool.rate_limit"
    assert "for alice on tool 'first'" in body["error"]["message"]
    assert "result" in (await post(call(4, "second"), token=token, session=session))[2]
    assert [m for m, _ in upstream.calls].count("tools/call") == 2


@pytest.mark.django_db(transaction=True)
@override_settings(GATEWAY_RATE_LIMIT_PER_GATEWAY="2/minute")
async def test_the_gateway_limit_counts_every_call_to_its_tools(world):
    token, _ = world
    other = await sync_to_async(UserFactory)(username="bob", is_staff=True)
    bobs = await sync_to_async(auth.token_issue)(username=other.username)
    sessions = []
    for who in (token, bobs):
        sessions.append((await post(INITIALIZE, token=who))[1]["mcp-session-id"])
    assert "result" in (await post(call(2, "first"), token=token, session=sessions[0]))[2]
    assert "result" in (await post(call(3, "second"), token=bobs, session=sessions[1]))[2]
    body = (await post(call(4, "first"), token=bobs, session=sessions[1]))[2]
    assert body["error"]["data"]["limit"] == "GATEWAY_RATE_LIMIT_PER_GATEWAY"
    assert "gateway 'echo'" in body["error"]["message"]
    await sync_to_async(Gateway.objects.filter(name="echo").update)(rate_limit="10/minute")
    from registry import events

    await sync_to_async(events.catalog_changed)()
    body = (await post(call(5, "first"), token=bobs, session=sessions[1]))[2]
    # Gateway.rate_limit wins over the setting: the same (empty) bucket now refills at 10/minute.
    assert body["error"]["data"]["limit"] == "Gateway.rate_limit"
    assert "(10/minute)" in body["error"]["message"]
    assert body["error"]["data"]["retryAfter"] <= 6


@pytest.mark.django_db(transaction=True)
async def test_a_bad_entry_value_is_refused_by_the_api_with_the_validators_message(world, client):
    token, _ = world
    response = await sync_to_async(client.post)(
        "/api/servers",
        data=json.dumps({"name": "s1", "rate_limit": "lots"}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code in (400, 422), response.content
    assert "is not a rate like 100/minute" in response.content.decode()
    response = await sync_to_async(client.post)(
        "/api/servers",
        data=json.dumps({"name": "s2", "rate_limit": "5/second"}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 201, response.content
    assert response.json()["rate_limit"] == "5/second"


@pytest.mark.django_db(transaction=True)
@override_settings(GATEWAY_RATE_LIMIT_PER_USER="1/minute")
async def test_rpc_answers_429_with_retry_after(world, async_client):
    token, _ = world
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    first = await async_client.post(
        "/rpc", data=body, content_type="application/json", headers={"Authorization": f"Bearer {token}"}
    )
    assert first.status_code == 200
    second = await async_client.post(
        "/rpc", data=body, content_type="application/json", headers={"Authorization": f"Bearer {token}"}
    )
    assert second.status_code == 429
    assert int(second.headers["Retry-After"]) >= 1
    assert second.json()["error"]["data"]["limit"] == "GATEWAY_RATE_LIMIT_PER_USER"


class WebSocketClient:
    """Drives the WebSocket adapter in-process: frames in through a queue, frames out collected."""

    def __init__(self, token: str) -> None:
        self.inbox: asyncio.Queue[dict] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict] = asyncio.Queue()
        headers = [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {token}".encode())]
        self.scope = {"type": "websocket", "path": "/ws", "headers": headers, "subprotocols": ["mcp"]}

    async def __aenter__(self) -> WebSocketClient:
        await self.inbox.put({"type": "websocket.connect"})
        self.task = asyncio.ensure_future(ws_adapter.endpoint(self.scope, self.inbox.get, self.outbox.put))
        assert (await self.outbox.get())["type"] == "websocket.accept"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.inbox.put({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(self.task, 5)

    async def ask(self, message: dict) -> dict:
        await self.inbox.put({"type": "websocket.receive", "text": json.dumps(message)})
        while True:
            event = await asyncio.wait_for(self.outbox.get(), 5)
            assert event["type"] == "websocket.send", event
            answer = json.loads(event["text"])
            if answer.get("id") == message["id"]:
                return answer


@pytest.mark.django_db(transaction=True)
@override_settings(GATEWAY_RATE_LIMIT_PER_USER="4/minute")
async def test_websocket_requests_count_one_by_one_and_the_connection_stays_open(world):
    """The connection counts once (admission), then every request; a refused one is answered with its
    id, and the connection keeps answering (here: no; the bucket is empty, so the next is refused too)."""
    token, _ = world
    async with WebSocketClient(token) as ws:
        assert "result" in await ws.ask(INITIALIZE)
        assert "result" in await ws.ask(ping(2))
        assert "result" in await ws.ask(ping(3))
        refused = await ws.ask(ping(4))
        assert refused["error"]["code"] == limits.RATE_LIMITED
        assert refused["error"]["data"]["limit"] == "GATEWAY_RATE_LIMIT_PER_USER"
        assert (await ws.ask(ping(5)))["id"] == 5  # still open, still answering


class SlowUpstream(EchoUpstream):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.in_flight = self.most = 0

    async def request(self, method, params=None, *, timeout=None, on_message=None) -> dict:
        if method == "tools/call":
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            try:
                await asyncio.sleep(self.seconds)
            finally:
                self.in_flight -= 1
        return await super().request(method, params, timeout=timeout, on_message=on_message)


@pytest.mark.django_db(transaction=True)
@override_settings(GATEWAY_UPSTREAM_MAX_CONCURRENCY=1, GATEWAY_UPSTREAM_QUEUE_TIMEOUT=5.0)
async def test_calls_beyond_the_upstream_bound_queue_for_a_slot(world):
    token, _ = world
    upstream = SlowUpstream(0.2)
    get_core().upstreams.override("echo", upstream)
    session = (await post(INITIALIZE, token=token))[1]["mcp-session-id"]
    answers = await asyncio.gather(*(post(call(i), token=token, session=session) for i in range(2, 5)))
    assert all("result" in body for _, _, body in answers)
    assert upstream.most == 1


@pytest.mark.django_db(transaction=True)
@override_settings(GATEWAY_UPSTREAM_MAX_CONCURRENCY=5, GATEWAY_UPSTREAM_QUEUE_TIMEOUT=0.2)
async def test_a_call_that_waits_too_long_for_a_slot_is_refused_naming_the_bound(world):
    """Gateway.max_concurrency 1 beats the setting's 5: with one slow call in flight, a second waits
    GATEWAY_UPSTREAM_QUEUE_TIMEOUT and is refused; the refusal is counted."""
    token, _ = world
    await sync_to_async(Gateway.objects.filter(name="echo").update)(max_concurrency=1)
    upstream = SlowUpstream(1.0)
    get_core().upstreams.override("echo", upstream)
    session = (await post(INITIALIZE, token=token))[1]["mcp-session-id"]
    slow = asyncio.ensure_future(post(call(2), token=token, session=session))
    await asyncio.sleep(0.1)
    _, _, body = await post(call(3, "second"), token=token, session=session)
    assert body["error"]["code"] == limits.RATE_LIMITED
    assert body["error"]["data"]["limit"] == "Gateway.max_concurrency"
    assert "Upstream 'echo' is busy: 1 calls at once" in body["error"]["message"]
    assert "result" in (await slow)[2]
    assert limits.refusals == {"Gateway.max_concurrency": 1}
    assert "result" in (await post(call(4, "second"), token=token, session=session))[2]


@pytest.mark.django_db
def test_the_admin_forms_show_the_limits_and_refuse_a_bad_rate(admin_client):
    """Tool, virtual server and gateway forms carry rate_limit (and the gateway max_concurrency); a
    malformed rate gets the validator's message, not a 500."""
    for model, fields in (
        ("tool", ["rate_limit"]),
        ("virtualserver", ["rate_limit"]),
        ("gateway", ["rate_limit", "max_concurrency"]),
    ):
        page = admin_client.get(f"/admin/registry/{model}/add/").content.decode()
        for field in fields:
            assert f'name="{field}"' in page, (model, field)
    response = admin_client.post("/admin/registry/virtualserver/add/", {"name": "srv", "rate_limit": "often"})
    assert response.status_code == 200
    assert "is not a rate like 100/minute" in response.content.decode()
    assert not VirtualServer.objects.filter(name="srv").exists()


def _rpc(gateway, request_id: int) -> tuple[int, dict, dict]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        gateway.url + "/rpc",
        data=json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/list"}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {gateway.token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def test_two_replicas_share_a_per_user_limit_through_redis(tmp_path):
    """Two live gateways on one Redis (a private key prefix): the user's 3/minute holds across them."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    url = _redis_url()
    if not url:
        pytest.skip("REDIS_URL is not set: limits across replicas need Redis")
    import redis

    from tests.live_gateway import start_live_gateway

    prefix = f"mcpgw-rltest-{uuid.uuid4().hex[:12]}:"
    overrides = {"REDIS_URL": url, "GATEWAY_RATE_LIMIT_REDIS_PREFIX": prefix, "GATEWAY_RATE_LIMIT_PER_USER": "3/minute"}
    try:
        with (
            start_live_gateway(tmp_path / "a", **overrides) as first,
            start_live_gateway(tmp_path / "b", **overrides) as second,
        ):
            assert _rpc(first, 1)[0] == 200
            assert _rpc(second, 2)[0] == 200
            assert _rpc(first, 3)[0] == 200
            status, headers, body = _rpc(second, 4)
            assert status == 429, body
            assert int(headers["Retry-After"]) >= 1
            assert body["error"]["data"]["limit"] == "GATEWAY_RATE_LIMIT_PER_USER"
    finally:
        client = redis.Redis.from_url(url)
        mine = list(client.scan_iter(match=f"{prefix}*"))
        if mine:
            client.delete(*mine)
