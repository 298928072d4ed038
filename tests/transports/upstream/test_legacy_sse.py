"""Legacy HTTP+SSE (2024-11-05) specifics: the endpoint event and the life of the GET stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web

from tests.transports.upstream.conftest import ServerProcess, make_config, running
from transports.protocol.upstream import UpstreamUnavailable, create_client
from transports.protocol.upstream.legacy_sse import LegacySseClient


@pytest.fixture
def own_sse_server() -> Iterator[ServerProcess]:
    with running("sse") as server:
        yield server


async def test_endpoint_is_resolved_against_the_sse_url(sse_server: ServerProcess) -> None:
    client = create_client(make_config("sse", sse_server.url))
    assert isinstance(client, LegacySseClient)
    await client.connect()
    try:
        assert client.endpoint is not None
        assert client.endpoint.startswith(f"http://127.0.0.1:{sse_server.port}/messages/?session_id=")
    finally:
        await client.aclose()


async def test_server_killed_mid_call_then_reconnect(own_sse_server: ServerProcess) -> None:
    client = create_client(make_config("sse", own_sse_server.url))
    await client.connect()
    try:
        call = asyncio.create_task(client.request("tools/call", {"name": "sleep", "arguments": {"seconds": 30}}))
        await asyncio.sleep(0.3)
        own_sse_server.kill()
        with pytest.raises(UpstreamUnavailable):
            await asyncio.wait_for(call, 5)
        assert not client.connected
        own_sse_server.start()
        await client.connect()
        result = await client.request("tools/call", {"name": "echo", "arguments": {"text": "back"}})
        assert result["content"][0]["text"] == "back"
    finally:
        await client.aclose()


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[str, list[bytes]]]:
    """An SSE URL that sends the given chunks, then holds the stream open."""
    chunks: list[bytes] = []
    done = asyncio.Event()

    async def sse(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for chunk in chunks:
            await response.write(chunk)
        await done.wait()
        return response

    app = web.Application()
    app.router.add_get("/sse", sse)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/sse", chunks
    done.set()
    await runner.cleanup()


async def test_endpoint_on_another_origin_is_refused(scripted: tuple[str, list[bytes]]) -> None:
    url, chunks = scripted
    chunks.append(b"event: endpoint\ndata: http://elsewhere.example/messages\n\n")
    client = create_client(make_config("sse", url, connect_timeout=3.0))
    with pytest.raises(UpstreamUnavailable, match="another origin"):
        await client.connect()
    await client.aclose()


async def test_no_endpoint_event_times_out_as_unavailable(scripted: tuple[str, list[bytes]]) -> None:
    url, chunks = scripted
    chunks.append(b": just a comment\n\n")
    client = create_client(make_config("sse", url, connect_timeout=0.5))
    with pytest.raises(UpstreamUnavailable, match="handshake"):
        await client.connect()
    assert not client.connected
    await client.aclose()
