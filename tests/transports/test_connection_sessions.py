"""The session of an open HTTP+SSE or WebSocket connection lives as long as its connection, in both stores.

With the shared store (Redis) the session's record used to be refreshed only when a POST of the session reached a
replica: after the idle timeout with no POST it expired while its stream was still open, so a POST routed to a
replica that does not hold the stream got 404, and the session dropped out of the session counts
(GATEWAY_MAX_SESSIONS, GATEWAY_MAX_SESSIONS_PER_USER). Here two gateway processes share one Redis prefix (and one
database) as two replicas do; the in-memory store runs one process, where "the other replica" is the same one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator

import httpx2
import pytest

from tests.live_gateway import LiveGateway, start_live_gateway
from tests.redis_keys import scoped_prefix
from tests.transports.test_sse_endpoint import raw_stream
from tests.transports.test_streamable_http import init_body
from tests.transports.test_websocket_endpoint import connect

IDLE = 2.0
HELD = IDLE * 3 + 0.5  # several idle timeouts without a message from the client
ACCEPT = "application/json, text/event-stream"


@pytest.fixture(scope="module", params=["in-memory", pytest.param("shared-redis", marks=pytest.mark.redis)])
def replicas(request, tmp_path_factory) -> Iterator[tuple[LiveGateway, LiveGateway]]:
    """(A, B): two processes on one Redis prefix and one database for the shared store, one process twice for the
    in-memory store. One session per user, so a session that still counts refuses the next one; keep-alives
    seldom, so that it is not them that keep the session."""
    overrides = {
        "GATEWAY_SESSION_IDLE_TIMEOUT": str(IDLE),
        "GATEWAY_MAX_SESSIONS_PER_USER": "1",
        "GATEWAY_SSE_KEEPALIVE": "30",
    }
    with contextlib.ExitStack() as stack:
        state = tmp_path_factory.mktemp(f"connections-{request.param}")
        (state / "a").mkdir()
        (state / "b").mkdir()
        if request.param == "in-memory":
            a = stack.enter_context(start_live_gateway(state / "a", **overrides))
            yield a, a
            return
        url = overrides["REDIS_URL"] = os.environ["REDIS_URL"]
        overrides["GATEWAY_REDIS_PREFIX"] = stack.enter_context(scoped_prefix(url, "connections"))
        a = stack.enter_context(start_live_gateway(state / "a", **overrides))
        b = stack.enter_context(start_live_gateway(state / "b", DATABASE_URL=a.env["DATABASE_URL"], **overrides))
        b.token = a.token  # one database: A's token is good on B
        yield a, b


async def _new_session_status(live: LiveGateway) -> int:
    """The status of an `initialize` on Streamable HTTP (a session made there is deleted again)."""
    headers = {"Authorization": f"Bearer {live.token}", "Accept": ACCEPT}
    async with httpx2.AsyncClient(timeout=20, headers=headers) as http:
        response = await http.post(live.url + "/mcp", json=init_body())
        if response.status_code == 200:
            session = {"Mcp-Session-Id": response.headers["mcp-session-id"]}
            assert (await http.delete(live.url + "/mcp", headers=session)).status_code == 200
        return response.status_code


async def _freed(live: LiveGateway, timeout: float = 10) -> None:
    """A new session is allowed again within ``timeout`` (the closed connection's session has ended)."""
    async with asyncio.timeout(timeout):
        while (status := await _new_session_status(live)) != 200:
            assert status == 429, status
            await asyncio.sleep(0.2)


async def test_an_open_legacy_sse_stream_keeps_its_session(replicas):
    """A POST on the other replica reaches the stream after several idle timeouts without one, and the session
    still counts for the user's bound; once the stream closes, its message URL is unknown and the bound frees."""
    a, b = replicas
    async with raw_stream(a, "/sse") as sse:
        await sse.initialize()
        await asyncio.sleep(HELD)
        ping = {"jsonrpc": "2.0", "id": 5, "method": "ping"}
        response = await sse.post(ping, url=b.url + sse.endpoint)
        assert response.status_code == 202, response.text
        assert (await sse.answer(5))["result"] == {}
        assert await _new_session_status(b) == 429
        endpoint = sse.endpoint
    await _freed(b)
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {a.token}"}, timeout=20) as http:
        for live in {a.url: a, b.url: b}.values():
            gone = await http.post(live.url + endpoint, json={"jsonrpc": "2.0", "id": 6, "method": "ping"})
            assert gone.status_code == 404, gone.text


async def test_an_open_websocket_keeps_its_session(replicas):
    """The session of an open WebSocket still counts for the user's bound after several idle timeouts without a
    frame from the client, and answers; once the socket closes, the bound frees."""
    a, b = replicas
    async with connect(a, None) as peer:
        await peer.initialize()
        await asyncio.sleep(HELD)
        assert await _new_session_status(b) == 429
        assert (await peer.request("ping", request_id=5))["result"] == {}
    await _freed(b)
