"""Three gateway processes in a chain, A ← B ← C: C fronts the upstream fixture server, B federates C, A
federates B. Each is a real daphne process with its own SQLite database and its in-process scheduler (the
embedded default: no broker), with short health and sync intervals.

- a tool of the fixture is callable through A, with its progress notifications passed through B and C;
- a tool added on C reaches a client connected to A as notifications/tools/list_changed after the syncs;
- stopping C makes B mark it unreachable within the configured intervals, and a call through A then fails
  fast with B's sentence (no waiting for a timeout: the gateways' tool timeout here is 120 s);
- starting C again on the same port brings it back with no hand: B's health check finds it healthy and the
  call through A works again.

Spec: MCP 2025-11-25 basic/utilities/progress (progress tokens), server/tools (list_changed); docs/federation.md.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.fixtures.servers import start_upstream
from tests.live_gateway import LiveGateway, free_port, start_live_gateway

INTERVALS = {
    "GATEWAY_SCHEDULER": "inprocess",
    "GATEWAY_SCHEDULER_TICK": "0.3",
    "GATEWAY_HEALTH_INTERVAL": "1",
    "GATEWAY_HEALTH_FAILURES": "2",
    "GATEWAY_HEALTH_MAX_BACKOFF": "2",
    "GATEWAY_SYNC_INTERVAL": "2",
    "GATEWAY_TOOL_TIMEOUT": "120",
    "GATEWAY_FUNCTION_TOOLS": "tests.fixtures.functions.*",
}


def wait_for(what: str, condition: Callable[[], Any], seconds: float = 60.0) -> Any:
    """Poll ``condition`` until it returns something true; fail naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def register(gateway: LiveGateway, name: str, url: str, token: str | None = None) -> None:
    body: dict[str, Any] = {"name": name, "transport": "streamable-http", "url": url}
    if token:
        body |= {"auth_type": "bearer", "credentials": {"token": token}}
    status, answer = gateway.api("POST", "/api/gateways", body)
    assert status == 201, answer


def gateway_row(gateway: LiveGateway, name: str) -> dict[str, Any]:
    status, body = gateway.api("GET", f"/api/gateways?name={name}")
    assert status == 200, body
    items = body["items"] if isinstance(body, dict) else body
    (row,) = [item for item in items if item["name"] == name]
    return row


def client(gateway: LiveGateway, **options: Any) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {gateway.token}"}, timeout=30)
    return Client(streamable_http_client(gateway.mcp_url(), http_client=http), mode="legacy", **options)


@contextlib.contextmanager
def chain(tmp_path) -> Iterator[dict[str, Any]]:
    upstream = start_upstream("streamable-http")
    c_port = free_port()
    state = {name: tmp_path / name for name in "abc"}
    for path in state.values():
        path.mkdir()
    with contextlib.ExitStack() as stack:
        stack.callback(upstream.stop)
        c = stack.enter_context(start_live_gateway(state["c"], port=c_port, **INTERVALS))
        register(c, "fixture", upstream.url)
        b = stack.enter_context(start_live_gateway(state["b"], **INTERVALS))
        register(b, "c", c.mcp_url(), c.token)
        a = stack.enter_context(start_live_gateway(state["a"], **INTERVALS))
        register(a, "b", b.mcp_url(), b.token)
        yield {"a": a, "b": b, "c": c}


@pytest.fixture(scope="module")
def gateways(tmp_path_factory):
    with chain(tmp_path_factory.mktemp("chain")) as found:
        yield found


def test_a_tool_is_callable_through_three_gateways_with_its_progress(gateways):
    """tools/call through A reaches the fixture behind C; the progress it reports arrives at A's client."""
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async def scenario() -> None:
        async with client(gateways["a"]) as session:
            names = {tool.name for tool in (await session.list_tools()).tools}
            assert "test_tool_with_progress" in names
            result = await session.call_tool("test_tool_with_progress", {}, progress_callback=on_progress)
            assert not result.is_error
            assert result.content[0].text == "Tool with progress executed successfully"

    anyio.run(scenario)
    assert progress == [0, 50, 100]


def test_a_tool_added_on_c_reaches_a_client_of_a_as_list_changed(gateways):
    """A catalog change on C travels B's and A's syncs; A's connected client hears tools/list_changed."""
    heard: list[str] = []

    async def on_message(message: Any) -> None:
        method = getattr(getattr(message, "root", message), "method", None)
        if method:
            heard.append(method)

    async def scenario() -> None:
        async with client(gateways["a"], message_handler=on_message) as session:
            assert "added_on_c" not in {tool.name for tool in (await session.list_tools()).tools}
            status, body = await anyio.to_thread.run_sync(
                lambda: gateways["c"].api(
                    "POST",
                    "/api/tools",
                    {
                        "name": "added_on_c",
                        "integration_type": "function",
                        "backend_config": {"function": "tests.fixtures.functions.add"},
                    },
                )
            )
            assert status == 201, body
            with anyio.fail_after(60):
                while "notifications/tools/list_changed" not in heard:
                    await anyio.sleep(0.2)
            with anyio.fail_after(30):
                while "added_on_c" not in {tool.name for tool in (await session.list_tools()).tools}:
                    await anyio.sleep(0.2)
            result = await session.call_tool("added_on_c", {"a": 2, "b": 3})
            assert not result.is_error
            assert result.content[0].text == "2 + 3 = 5"

    anyio.run(scenario)


def test_a_stopped_c_turns_unreachable_calls_fail_fast_and_it_recovers_by_itself(tmp_path):
    """Stop C: B's checks mark it unreachable and a call through A fails fast naming it. Start C again on the
    same port and state: B finds it healthy by itself and the call through A works again."""
    upstream = start_upstream("streamable-http")
    c_port = free_port()
    for name in "abc":
        (tmp_path / name).mkdir()
    try:
        c_context = start_live_gateway(tmp_path / "c", port=c_port, **INTERVALS)
        c = c_context.__enter__()
        register(c, "fixture", upstream.url)
        with (
            start_live_gateway(tmp_path / "b", **INTERVALS) as b,
            start_live_gateway(tmp_path / "a", **INTERVALS) as a,
        ):
            register(b, "c", c.mcp_url(), c.token)
            register(a, "b", b.mcp_url(), b.token)

            async def call() -> str:
                """'ok', or the error the client got (a JSON-RPC error, or an isError result)."""
                async with client(a) as session:
                    try:
                        result = await session.call_tool("test_simple_text", {})
                    except MCPError as exc:
                        return str(exc)
                    return result.content[0].text if result.is_error else "ok"

            assert anyio.run(call) == "ok"
            c_context.__exit__(None, None, None)
            wait_for("B to mark C unreachable", lambda: gateway_row(b, "c")["health"] == "unreachable")
            row = gateway_row(b, "c")
            assert "connection refused" in row["last_error"], row
            error = anyio.run(call)
            assert "unreachable" in error, error
            assert "connection refused" in error, error

            c_context = start_live_gateway(tmp_path / "c", port=c_port, **INTERVALS)
            c_context.__enter__()
            wait_for("B to find C healthy again", lambda: gateway_row(b, "c")["health"] == "healthy")
            assert anyio.run(call) == "ok"
    finally:
        with contextlib.suppress(Exception):
            c_context.__exit__(None, None, None)
        upstream.stop()
