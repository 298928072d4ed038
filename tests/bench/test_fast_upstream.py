"""The benchmark's fast upstream (bench/fast_upstream.py) is an MCP server the gateway's upstream client and the
official SDK client accept, in each era it serves; the scale-out cells of `make bench` stand on it.

Spec references are to MCP 2025-11-25 basic/transports (streamable-http: sessions, 404 for an unknown session) and
2026-07-28 (server/discover; streamable-http "Request Metadata": the headers must match the body).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from mcp import Client

from tests.transports.upstream.conftest import free_port, make_config, wait_for_port
from transports.protocol.upstream import UpstreamUnavailable, create_client

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "fast_upstream.py"
JSON_AND_SSE = "application/json, text/event-stream"
META_VERSION = "io.modelcontextprotocol/protocolVersion"


@pytest.fixture(scope="module", params=["auto", "legacy", "modern"])
def upstream(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(era it serves, its URL)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--port", str(port), "--era", request.param],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process)
        yield request.param, f"http://127.0.0.1:{port}/mcp"
    finally:
        process.kill()
        process.wait(5)


@pytest.mark.parametrize("client_era", ["auto", "legacy", "modern"])
async def test_gateway_client_calls_echo(upstream: tuple[str, str], client_era: str) -> None:
    """The gateway's own upstream client detects the era, lists `echo` and calls it, in every era both sides
    share; a client pinned to an era the server does not serve is refused at connect."""
    served, url = upstream
    client = create_client(make_config("streamable-http", url, era=client_era))
    if {served, client_era} == {"legacy", "modern"}:
        with pytest.raises(UpstreamUnavailable):
            await client.connect()
        await client.aclose()
        return
    await client.connect()
    try:
        assert client.era == ("legacy" if "legacy" in (served, client_era) else "modern")
        tools = await client.request("tools/list", {})
        assert [t["name"] for t in tools["tools"]] == ["echo"]
        result = await client.request("tools/call", {"name": "echo", "arguments": {"message": "hi"}})
        assert result["content"] == [{"type": "text", "text": "hi"}]
        assert result["isError"] is False
    finally:
        await client.aclose()


async def test_sdk_client_calls_echo(upstream: tuple[str, str]) -> None:
    """The official SDK client (what ContextForge uses) negotiates with it and calls echo."""
    served, url = upstream
    async with Client(url, mode="legacy" if served == "legacy" else "auto") as client:
        assert [t.name for t in (await client.list_tools()).tools] == ["echo"]
        result = await client.call_tool("echo", {"message": "hi"})
        assert result.content[0].text == "hi"  # type: ignore[union-attr]


async def test_sessions_and_headers_are_checked(upstream: tuple[str, str]) -> None:
    """An unknown session id gets 404; a modern request whose Mcp-Name disagrees with the body gets 400 -32020."""
    served, url = upstream
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {}}}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        if served != "modern":
            headers = {"Accept": JSON_AND_SSE, "Mcp-Session-Id": "no-such-session"}
            async with http.post(url, json=call, headers=headers) as response:
                assert response.status == 404
        if served != "legacy":
            modern = {**call, "params": {**call["params"], "_meta": {META_VERSION: "2026-07-28"}}}
            headers = {"Accept": JSON_AND_SSE, "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call"}
            async with http.post(url, json=modern, headers={**headers, "Mcp-Name": "other"}) as response:
                assert response.status == 400
                assert (await response.json())["error"]["code"] == -32020
