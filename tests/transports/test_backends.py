"""Tool backends (architecture: "Backends behind a tool"): one interface, chosen per catalog entry by
its integration type; a tool whose backend is not available is never advertised and cannot be called.

Spec: 2025-11-25 server/tools ("Listing Tools", "Calling Tools"), basic/utilities/progress.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from registry.choices import IntegrationType
from tests.factories import ToolFactory
from tests.transports.test_hot_path import INITIALIZE, _close_worker_connections, asgi_post, world  # noqa: F401
from transports.protocol.backends import ToolBackend, load_backend
from transports.protocol.backends.memory import InMemoryBackend
from transports.routing import endpoint
from transports.runtime import get_core


@pytest.fixture
def rest_tool(world):  # noqa: F811
    """Two REST tools in the catalog beside MCP tools, with the process's REST backend taken away, so
    each test decides which backend (if any) serves the kind."""
    ToolFactory(
        name="weather",
        integration_type=IntegrationType.REST,
        gateway=None,
        backend_config={"url": "https://example.invalid/weather/{city}", "method": "GET"},
    )
    ToolFactory(name="forecast", integration_type=IntegrationType.REST, gateway=None)
    get_core().backends.unregister(IntegrationType.REST)
    return world


async def _session(token: str) -> str:
    status, headers, _ = await asgi_post(INITIALIZE, token=token)
    assert status == 200
    return headers["mcp-session-id"]


async def _tool_names(token: str, session: str) -> set[str]:
    body = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
    names: set[str] = set()
    while True:
        status, _, answer = await asgi_post(body, token=token, session=session)
        assert status == 200
        names |= {tool["name"] for tool in answer["result"]["tools"]}
        cursor = answer["result"].get("nextCursor")
        if not cursor:
            return names
        body = {**body, "params": {"cursor": cursor}}


def _call(name: str, arguments: dict, **meta) -> dict:
    params: dict = {"name": name, "arguments": arguments}
    if meta:
        params["_meta"] = meta
    return {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": params}


@pytest.mark.django_db(transaction=True)
async def test_a_tool_without_a_backend_is_not_advertised_and_cannot_be_called(rest_tool):
    """With no REST backend enabled, the REST tool is left out of tools/list, and calling it is the
    same -32602 "Unknown tool" as any name the client was never offered."""
    token, _ = rest_tool
    session = await _session(token)
    names = await _tool_names(token, session)
    assert "weather" not in names
    assert "tool_00" in names  # MCP tools of an enabled gateway are served by the upstream backend
    status, _, answer = await asgi_post(_call("weather", {"city": "Oslo"}), token=token, session=session)
    assert status == 200
    assert answer["error"]["code"] == -32602
    assert answer["error"]["message"] == "Unknown tool: weather"


@pytest.mark.django_db(transaction=True)
async def test_a_registered_backend_makes_its_tools_listed_and_callable_with_progress(rest_tool):
    """Registering a backend for a kind rebuilds the snapshot: its tools appear, a call reaches the
    backend with the arguments, and progress it reports reaches a client that asked for it."""
    token, _ = rest_tool

    async def weather(arguments: dict, context) -> dict:
        await context.progress(1, 2, "asking the sky")
        await context.log("info", {"city": arguments["city"]})
        return {"content": [{"type": "text", "text": f"Sunny in {arguments['city']}"}], "isError": False}

    backend = InMemoryBackend({"weather": weather})
    core = get_core()
    await core.catalog.get()
    core.backends.register(IntegrationType.REST, backend)
    session = await _session(token)
    assert "weather" in await _tool_names(token, session)
    status, headers, answer = await asgi_post(
        _call("weather", {"city": "Oslo"}, progressToken="p-1"), token=token, session=session
    )
    assert status == 200
    assert headers["content-type"] == "text/event-stream"
    assert answer["result"]["content"][0]["text"] == "Sunny in Oslo"
    assert backend.calls == [("weather", {"city": "Oslo"})]

    # Logs go to a client that chose a level (none by default).
    set_level = {"jsonrpc": "2.0", "id": 4, "method": "logging/setLevel", "params": {"level": "info"}}
    assert (await asgi_post(set_level, token=token, session=session))[0] == 200
    messages = await _stream(_call("weather", {"city": "Rome"}, progressToken="p-2"), token, session)
    progress = [m for m in messages if m.get("method") == "notifications/progress"]
    assert progress == [
        {
            "jsonrpc": "2.0",
            "method": "notifications/progress",
            "params": {"progressToken": "p-2", "progress": 1, "total": 2, "message": "asking the sky"},
        }
    ]
    logs = [m for m in messages if m.get("method") == "notifications/message"]
    assert logs[0]["params"] == {"level": "info", "data": {"city": "Rome"}}
    assert messages[-1]["result"]["content"][0]["text"] == "Sunny in Rome"


async def _stream(body: dict, token: str, session: str) -> list[dict]:
    """Every message of a streamed answer, in order."""
    headers = [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"accept", b"application/json, text/event-stream"),
        (b"authorization", f"Bearer {token}".encode()),
        (b"mcp-session-id", session.encode()),
        (b"mcp-protocol-version", b"2025-11-25"),
    ]
    scope = {"type": "http", "method": "POST", "path": "/mcp", "headers": headers, "url_route": {"kwargs": {}}}
    sent: list[dict] = []
    payload = json.dumps(body).encode()
    delivered = False

    async def receive() -> dict:
        nonlocal delivered
        if delivered:
            await asyncio.Event().wait()
        delivered = True
        return {"type": "http.request", "body": payload, "more_body": False}

    async def send(event: dict) -> None:
        sent.append(event)

    await endpoint(scope, receive, send)
    raw = b"".join(e.get("body", b"") for e in sent[1:]).decode()
    return [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: {")]


@pytest.mark.django_db(transaction=True)
async def test_unregistering_a_backend_withdraws_its_tools(rest_tool):
    """A backend that goes away takes its tools out of the next snapshot."""
    token, _ = rest_tool
    core = get_core()
    await core.catalog.get()
    core.backends.register(IntegrationType.REST, InMemoryBackend({"weather": lambda arguments, context: {}}))
    session = await _session(token)
    assert "weather" in await _tool_names(token, session)
    core.backends.unregister(IntegrationType.REST)
    assert "weather" not in await _tool_names(token, session)


@pytest.mark.django_db(transaction=True)
async def test_a_backend_serves_only_the_tools_it_can(rest_tool):
    """``available(tool)`` is asked per tool: a backend without a handler for a tool leaves it out."""
    token, _ = rest_tool
    core = get_core()
    await core.catalog.get()
    core.backends.register(IntegrationType.REST, InMemoryBackend({"forecast": lambda arguments, context: {}}))
    names = await _tool_names(token, await _session(token))
    assert "forecast" in names
    assert "weather" not in names


def test_backends_load_by_dotted_path():
    """The loader takes a dotted path to a ToolBackend class (like Django's mail backends), and says
    clearly when the path names something else."""
    backend = load_backend("transports.protocol.backends.memory.InMemoryBackend", handlers={})
    assert isinstance(backend, ToolBackend)
    with pytest.raises(ImportError, match="not a ToolBackend class"):
        load_backend("json.JSONDecoder")
    with pytest.raises(ImportError, match="not a dotted path"):
        load_backend("InMemoryBackend")
