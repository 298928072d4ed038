"""Issue #6's acceptance walk, taken as a new user takes it (docs/new-user-walks.md has it by hand).

One gateway with the fixture upstream registered by `manage.py gateway_add`, a virtual server made by
`manage.py server_add` and a token from `manage.py issue_token` (done by `start_live_gateway`). Four kinds of
client then list the server's tools and call `echo`: the Inspector CLI over `/servers/<slug>/sse` and over
`/servers/<slug>/mcp`, the Inspector launching the stdio wrapper the way a desktop client does (absolute paths,
another working directory, only the environment it is given), through `manage.py mcp_stdio --token` and through
`scripts/mcp-gateway-stdio` with `MCP_GATEWAY_TOKEN`, and a plain `websockets` client on `/servers/<slug>/ws`.
Each must see the catalog's tools and get the same answer.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from tests.fixtures.servers import running_upstream
from tests.live_gateway import LiveGateway, start_live_gateway
from tests.tools import ROOT, ensure_node_tools, inspector_cmd
from tests.transports.test_stdio_bridge import ENTRIES

SERVER = "demo"
TOOL = "echo"
MESSAGE = "hello from a new user"
ANSWER = {"content": [{"type": "text", "text": MESSAGE}], "isError": False}

Walk = tuple[dict, dict]  # (the tools/list result, the tools/call result)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory):
    """The README's steps: register the upstream, make a virtual server of it (before any client comes, so the
    running gateway's first catalog snapshot already holds it)."""
    ensure_node_tools()
    with (
        running_upstream("streamable-http", era="auto") as upstream,
        start_live_gateway(tmp_path_factory.mktemp("new-user-walks")) as live,
    ):
        assert "Registered 'fx'" in live.manage("gateway_add", "fx", "--url", upstream.url)
        assert f"Endpoints: /servers/{SERVER}/mcp (Streamable HTTP), /servers/{SERVER}/sse (HTTP+SSE)" in live.manage(
            "server_add", SERVER, "--gateway", "fx"
        )
        yield live
        log = live.log.read_text() if live.log else ""
        assert "Traceback" not in log, log[-5000:]


@pytest.fixture(scope="module")
def catalog_tools(gateway: LiveGateway) -> set[str]:
    """The fixture's tools as the REST API lists them: what every walk should see."""
    status, body = gateway.api("GET", "/api/tools?gateway=fx&limit=1000")
    assert status == 200, body
    names = {item["name"] for item in body["items"]}
    assert TOOL in names
    return names


def inspector(options: list[str], server_command: list[str] | None = None, *, cwd: Path = ROOT) -> Walk:
    """`mcp-inspector --cli OPTIONS --method tools/list`, then `... tools/call --tool-name echo`; with a
    `server_command` the Inspector starts it as its stdio server (after `--`, so its options stay its own)."""
    results = []
    for method in (["tools/list"], ["tools/call", "--tool-name", TOOL, "--tool-arg", f"message={MESSAGE}"]):
        argv = [*inspector_cmd(), "--cli", *options, "--method", *method, "--format", "json", "-q"]
        argv += ["--", *server_command] if server_command else []
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, f"{argv}\n{done.stderr[-3000:]}{done.stdout[-3000:]}"
        results.append(json.loads(done.stdout)["result"])
    return results[0], results[1]


def walk_sse(gateway: LiveGateway, tmp_path: Path) -> Walk:
    url = f"{gateway.url}/servers/{SERVER}/sse"
    return inspector([url, "--transport", "sse", "--header", f"Authorization: Bearer {gateway.token}"])


def walk_http(gateway: LiveGateway, tmp_path: Path) -> Walk:
    url = gateway.mcp_url(SERVER)
    return inspector([url, "--transport", "http", "--header", f"Authorization: Bearer {gateway.token}"])


def walk_stdio_manage(gateway: LiveGateway, tmp_path: Path) -> Walk:
    """`python /abs/manage.py mcp_stdio --url URL --token T`, started from elsewhere. SECRET_KEY only spares
    the checkout a `.secret_key` file: Django's settings would create one (the wrapper itself needs no key)."""
    command = [sys.executable, str(ROOT / "manage.py"), "mcp_stdio", "--url", gateway.mcp_url(SERVER)]
    options = ["-e", f"SECRET_KEY={gateway.env['SECRET_KEY']}"]
    return inspector(options, [*command, "--token", gateway.token], cwd=tmp_path)


def walk_stdio_script(gateway: LiveGateway, tmp_path: Path) -> Walk:
    """README's desktop config: scripts/mcp-gateway-stdio with the token in MCP_GATEWAY_TOKEN."""
    options = ["-e", f"MCP_GATEWAY_TOKEN={gateway.token}", "-e", f"MCP_GATEWAY_PYTHON={sys.executable}"]
    return inspector(options, [*ENTRIES["script"], "--url", gateway.mcp_url(SERVER)], cwd=tmp_path)


async def _websocket(url: str, token: str) -> Walk:
    async with connect(url, subprotocols=["mcp"], additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        assert ws.subprotocol == "mcp"

        async def request(request_id: int, method: str, params: dict | None = None) -> dict:
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}))
            while True:  # notifications may come first
                message = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if message.get("id") == request_id and "method" not in message:
                    assert "result" in message, message
                    return message["result"]

        client = {"name": "new-user-ws", "version": "0"}
        initialized = await request(
            1, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": client}
        )
        assert initialized["protocolVersion"] == "2025-11-25"
        await ws.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        listed = await request(2, "tools/list")
        called = await request(3, "tools/call", {"name": TOOL, "arguments": {"message": MESSAGE}})
        return listed, called


def walk_websocket(gateway: LiveGateway, tmp_path: Path) -> Walk:
    url = f"{gateway.url.replace('http://', 'ws://')}/servers/{SERVER}/ws"
    return asyncio.run(_websocket(url, gateway.token))


WALKS: dict[str, Callable[[LiveGateway, Path], Walk]] = {
    "inspector-sse": walk_sse,
    "inspector-http": walk_http,
    "stdio-manage-py": walk_stdio_manage,
    "stdio-script": walk_stdio_script,
    "websocket": walk_websocket,
}


@pytest.mark.parametrize("walk", list(WALKS))
def test_each_client_lists_the_tools_and_gets_the_same_answer(gateway, catalog_tools, walk, tmp_path):
    """Every way in lists the virtual server's tools (all of them, on one page) and `echo` answers the same."""
    listed, called = WALKS[walk](gateway, tmp_path)
    assert {tool["name"] for tool in listed["tools"]} == catalog_tools
    assert not listed.get("nextCursor")
    assert {key: called.get(key) for key in ANSWER} == ANSWER
