"""npm @modelcontextprotocol/server-everything behind the gateway, over stdio, Streamable HTTP and
legacy HTTP+SSE, used by the official Python SDK and by the Inspector CLI (the acceptance walk of
the protocol issue: get-sum 2 + 40 through /servers/demo/mcp answers 42)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.fixtures.servers import _accepts, free_port
from tests.live_gateway import start_live_gateway
from tests.tools import ensure_node_tools, everything_server_cmd, inspector_cmd, node_env

pytestmark = pytest.mark.conformance  # needs the Node tools (installed on first use)


@pytest.fixture(scope="module")
def everything_http():
    """server-everything over Streamable HTTP and over SSE, on loopback ports."""
    ensure_node_tools()
    started = {}
    for mode in ("streamableHttp", "sse"):
        port = free_port()
        process = subprocess.Popen(
            everything_server_cmd(mode),
            env=node_env({**os.environ, "PORT": str(port)}),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while not _accepts(port):
            assert process.poll() is None, f"server-everything {mode} exited"
            assert time.monotonic() < deadline, f"server-everything {mode} did not start"
            time.sleep(0.1)
        started[mode] = (process, port)
    yield {mode: port for mode, (_, port) in started.items()}
    for process, _ in started.values():
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)


def _add_everything(gateway, transport: str, ports: dict[str, int]) -> None:
    if transport == "stdio":
        node, *node_args = everything_server_cmd("stdio")
        args = [part for arg in node_args for part in ("--arg", arg)]
        gateway.manage("gateway_add", "everything", "--command", node, *args)
    elif transport == "streamable-http":
        gateway.manage("gateway_add", "everything", "--url", f"http://127.0.0.1:{ports['streamableHttp']}/mcp")
    else:
        gateway.manage("gateway_add", "everything", "--url", f"http://127.0.0.1:{ports['sse']}/sse")
    gateway.manage("server_add", "demo", "--gateway", "everything")


@pytest.fixture(scope="module", params=["stdio", "streamable-http", "sse"])
def everything_gateway(request, everything_http, tmp_path_factory):
    """A gateway with server-everything registered as 'everything' over one transport, in server 'demo'.
    (One gateway per transport: the three copies would expose the same resource URIs.)"""
    with start_live_gateway(tmp_path_factory.mktemp("everything")) as gateway:
        _add_everything(gateway, request.param, everything_http)
        yield gateway


async def test_server_everything_is_listed_and_used(everything_gateway):
    """Its tools, resources and prompts come through unrenamed; get-sum adds."""
    gateway = everything_gateway
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {gateway.token}"}, timeout=30) as http,
        Client(streamable_http_client(gateway.mcp_url("demo"), http_client=http), mode="legacy") as client,
    ):
        tools = {t.name for t in (await client.list_tools()).tools}
        assert {"echo", "get-sum", "get-tiny-image"} <= tools
        result = await client.call_tool("get-sum", {"a": 2, "b": 40})
        assert "42" in result.content[0].text
        resources = (await client.list_resources()).resources
        assert resources
        read = await client.read_resource(resources[0].uri)
        assert read.contents
        dynamic = await client.read_resource("demo://resource/dynamic/text/3")
        assert dynamic.contents
        prompts = {p.name for p in (await client.list_prompts()).prompts}
        assert "simple-prompt" in prompts
        assert (await client.get_prompt("args-prompt", {"city": "Paris"})).messages


def test_the_inspector_cli_gets_42(everything_gateway):
    """`mcp-inspector --cli URL --transport http --method tools/call --tool-name get-sum --tool-arg a=2 b=40`."""
    gateway = everything_gateway
    argv = [
        *inspector_cmd(),
        "--cli",
        gateway.mcp_url("demo"),
        "--transport",
        "http",
        "--header",
        f"Authorization: Bearer {gateway.token}",
        "--method",
        "tools/call",
        "--tool-name",
        "get-sum",
        "--tool-arg",
        "a=2",
        "b=40",
        "--format",
        "json",
        "-q",
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout)
    text = json.dumps(answer)
    assert "42" in text, text
