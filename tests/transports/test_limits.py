"""Limits and lifecycle of sessions and streams (issue #6 item 8), with the in-memory store and with
the shared Redis store: idle sessions expire, sessions per user and open streams per user are
bounded with an error that names the setting, and the bound frees up when a session or stream ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Iterator

import httpx2
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.live_gateway import start_live_gateway
from tests.redis_keys import scoped_prefix
from tests.transports.test_streamable_http import Raw, init_body
from transports.protocol.sessions import SessionStore

IDLE = 3.0


@pytest.fixture(scope="module", params=["in-memory", pytest.param("shared-redis", marks=pytest.mark.redis)])
def gateway(request, tmp_path_factory):
    overrides = {
        "GATEWAY_MAX_SESSIONS_PER_USER": "2",
        "GATEWAY_MAX_STREAMS_PER_USER": "2",
        "GATEWAY_SESSION_IDLE_TIMEOUT": str(IDLE),
        "GATEWAY_SSE_KEEPALIVE": "1",
    }
    with contextlib.ExitStack() as stack:
        if request.param == "shared-redis":
            # REDIS_URL's database, under a key prefix of this module's own (its keys deleted afterwards).
            url = overrides["REDIS_URL"] = os.environ["REDIS_URL"]
            overrides["GATEWAY_REDIS_PREFIX"] = stack.enter_context(scoped_prefix(url, "limits"))
        live = stack.enter_context(start_live_gateway(tmp_path_factory.mktemp(f"limits-{request.param}"), **overrides))
        yield live


def _delete(raw: Raw) -> None:
    assert raw.http.delete(raw.url, headers={"Mcp-Session-Id": raw.session_id or ""}).status_code == 200


def test_sessions_per_user_are_bounded_and_freed_by_delete(gateway):
    first, second, third = Raw(gateway), Raw(gateway), Raw(gateway)
    first.initialize()
    second.initialize()
    refused = third.post(init_body())
    assert refused.status_code == 429, refused.text
    message = refused.json()["error"]["message"]
    assert "GATEWAY_MAX_SESSIONS_PER_USER" in message
    assert "user 'admin' already holds its maximum of 2 sessions" in message
    _delete(first)
    third.initialize()
    _delete(second)
    _delete(third)


def test_an_idle_session_expires(gateway):
    raw = Raw(gateway)
    raw.initialize()
    assert "result" in raw.call("ping")
    time.sleep(IDLE + 1.5)
    response = raw.post({"jsonrpc": "2.0", "id": 2, "method": "ping"})
    assert response.status_code == 404
    assert "Session not found" in response.json()["error"]["message"]


SESSION_FIELDS = {
    "username": "u",
    "scopes": frozenset(),
    "server": None,
    "protocol_version": "2025-11-25",
    "client_capabilities": {},
    "client_info": {},
}


async def test_idle_sessions_behind_a_held_connection_still_expire():
    """In-memory store: a session held open by its connection (WebSocket, HTTP+SSE, a GET stream) at
    the front of the line does not keep the idle sessions made after it: they are dropped once expired,
    and the store goes on taking new sessions (it used to fill up with expired ones and refuse them)."""
    store = SessionStore(idle_timeout=0.05, max_sessions=10)
    held = await store.create(connection=True, **SESSION_FIELDS)
    held.listeners += 1
    for _ in range(30):  # three times the bound, each left without DELETE by its client
        await store.create(**SESSION_FIELDS)
        await asyncio.sleep(0.02)
    assert len(store) < 10
    assert held.id in {s.id for s in store.known()}
    held.listeners -= 1


async def test_a_stream_that_asks_keeps_its_session_seen():
    """In-memory store: ``alive`` (asked by an open GET stream at each keep-alive) counts as use, as it
    does in the shared store: the session outlives its stream by a whole idle period."""
    store = SessionStore(idle_timeout=0.2)
    session = await store.create(**SESSION_FIELDS)
    session.listeners += 1
    for _ in range(4):
        await asyncio.sleep(0.1)
        assert await store.alive(session)
    session.listeners -= 1
    assert await store.get(session.id) is session


@pytest.mark.redis
async def test_the_shared_store_lets_go_of_idle_copies():
    """Shared Redis store: the copies a process keeps of sessions nobody used for an idle period (their
    clients went away without DELETE) are dropped when the next session is made, while a session held by a
    connection of this process stays (they used to pile up until LOCAL_CACHE of them)."""
    from channels.layers import InMemoryChannelLayer

    from tests.redis_keys import delete_keys, new_prefix
    from transports.protocol.replicas import Mesh
    from transports.protocol.shared_sessions import RedisSessionStore

    url, prefix = os.environ["REDIS_URL"], new_prefix("shed")
    store = RedisSessionStore(url, Mesh(InMemoryChannelLayer()), idle_timeout=1.0, prefix=prefix + ":")
    try:
        held = await store.create(connection=True, **SESSION_FIELDS)
        held.listeners += 1
        for _ in range(5):
            await store.create(**SESSION_FIELDS)
        assert len(store) == 6
        await asyncio.sleep(1.2)
        fresh = await store.create(**SESSION_FIELDS)
        assert {s.id for s in store.known()} == {held.id, fresh.id}
    finally:
        await store.redis().aclose()
        delete_keys(url, prefix)


def test_a_session_outlives_its_get_stream_by_the_idle_timeout(gateway):
    """A session that only listens on its GET stream for longer than the idle timeout is still there
    when the stream closes (its client then sends DELETE, or opens the stream again after a network
    blip), in both stores."""
    raw = Raw(gateway)
    raw.initialize()
    with _get_stream(raw) as stream:
        assert stream.status_code == 200
        time.sleep(IDLE + 1.5)  # GATEWAY_SSE_KEEPALIVE is 1 s: the stream asks after its session meanwhile
    assert "result" in raw.call("ping")
    _delete(raw)


@contextlib.contextmanager
def _get_stream(raw: Raw) -> Iterator[httpx2.Response]:
    headers = {"Accept": "text/event-stream", "Mcp-Session-Id": raw.session_id, "MCP-Protocol-Version": raw.version}
    with raw.http.stream("GET", raw.url, headers=headers) as response:
        yield response


def test_open_streams_per_user_are_bounded_on_every_transport(gateway):
    raw = Raw(gateway)
    raw.initialize()
    with _get_stream(raw) as one, _get_stream(raw) as two:
        assert one.status_code == two.status_code == 200
        with _get_stream(raw) as three:
            assert three.status_code == 429
            message = json.loads(three.read())["error"]["message"]
            assert "GATEWAY_MAX_STREAMS_PER_USER=2" in message
        sse = raw.http.get(gateway.url + "/sse", headers={"Accept": "text/event-stream"})
        assert sse.status_code == 429
        assert "GATEWAY_MAX_STREAMS_PER_USER" in sse.json()["error"]["message"]
        ws_url = gateway.url.replace("http://", "ws://") + "/ws"
        with connect(
            ws_url, subprotocols=["mcp"], additional_headers={"Authorization": f"Bearer {gateway.token}"}
        ) as ws:
            refusal = json.loads(ws.recv(timeout=10))
            assert "GATEWAY_MAX_STREAMS_PER_USER" in refusal["error"]["message"]
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 4429
    # both streams closed: a new one opens again (the server notices the disconnects promptly)
    deadline = time.monotonic() + 10
    while True:
        with _get_stream(raw) as again:
            if again.status_code == 200 or time.monotonic() > deadline:
                assert again.status_code == 200
                break
        time.sleep(0.2)
    _delete(raw)


def _session_keys(live, session_id: str) -> list[bytes]:
    """The keys under the gateway's Redis prefix that name the session."""
    import redis

    client = redis.Redis.from_url(live.env["REDIS_URL"])
    try:
        return sorted(client.scan_iter(match=f"{live.env['GATEWAY_REDIS_PREFIX']}:*{session_id}*", count=1000))
    finally:
        client.close()


def test_delete_takes_the_logs_of_the_session_s_streams_along(gateway):
    """Shared store: DELETE removes the logs of the session's request streams (2025-11-25 answers tools/call on
    a resumable stream) with the session, instead of leaving them for the idle timeout + 60 s."""
    if "REDIS_URL" not in gateway.env:
        pytest.skip("the in-memory store keeps nothing in Redis")
    raw = Raw(gateway)
    raw.initialize()
    for n in range(3):
        assert raw.call("tools/call", {"name": "missing", "arguments": {}}, request_id=n)["id"] == n
    assert len(_session_keys(gateway, raw.session_id or "")) > 3
    _delete(raw)
    assert _session_keys(gateway, raw.session_id or "") == []


SHORT_IDLE = 2.0


@pytest.fixture(scope="module")
def long_keepalive(tmp_path_factory):
    """Shared store, with keep-alives on idle streams less often than the idle timeout."""
    url = os.environ["REDIS_URL"]
    with scoped_prefix(url, "keepalive") as prefix:
        overrides = {
            "REDIS_URL": url,
            "GATEWAY_REDIS_PREFIX": prefix,
            "GATEWAY_SESSION_IDLE_TIMEOUT": str(SHORT_IDLE),
            "GATEWAY_SSE_KEEPALIVE": str(SHORT_IDLE * 2),
        }
        with start_live_gateway(tmp_path_factory.mktemp("keepalive"), **overrides) as live:
            yield live


@pytest.mark.redis
def test_an_open_get_stream_keeps_its_session_whatever_the_keep_alive(long_keepalive):
    """Shared store: a GET stream refreshes its session often enough for the idle timeout, however seldom it
    sends keep-alives (GATEWAY_SSE_KEEPALIVE at or above GATEWAY_SESSION_IDLE_TIMEOUT expired the session under
    its stream: bench/soak_findings.md)."""
    raw = Raw(long_keepalive)
    raw.initialize()
    other = Raw(long_keepalive)
    other.session_id, other.version = raw.session_id, raw.version
    with _get_stream(raw) as stream:
        assert stream.status_code == 200
        time.sleep(SHORT_IDLE * 2 + 1)
        assert "result" in other.call("ping")
    assert "result" in raw.call("ping")
    _delete(raw)
