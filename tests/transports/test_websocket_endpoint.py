"""The WebSocket server endpoint against a live gateway, with real clients: aiohttp's WebSocket client
offering the `mcp` subprotocol (the mcp 2.x SDK has no WebSocket client), and the TypeScript SDK's
own WebSocketClientTransport (1.32.2, Node 22's WebSocket; it cannot set headers, so ?token=).

WebSocket is not an MCP standard transport; the gateway follows what the SDKs that ship one do
(mcp 1.x `websocket_client`, TS SDK `client/websocket.js`): subprotocol `mcp`, one JSON-RPC message per
text frame. Spec for the exchanges: 2025-11-25 basic/lifecycle, basic/transports#security-warning
(Origin), basic/utilities/progress, client/elicitation, client/sampling,
server/tools#list-changed-notification; close codes from RFC 6455 section 7.4.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.fixtures.servers import running_upstream
from tests.live_gateway import start_live_gateway
from tests.tools import NODE_DIR, ensure_node_tools, node_bin

MAX_BODY = 65536
CLIENT_INFO = {"name": "raw-ws-test", "version": "0"}
ELICITATION_ANSWER = {"action": "accept", "content": {"username": "ada", "email": "ada@example.com"}}


@pytest.fixture(scope="module")
def upstream():
    with running_upstream("streamable-http", era="auto") as running:
        yield running


def _prepare(live, upstream) -> None:
    assert "Registered 'fx'" in live.manage("gateway_add", "fx", "--url", upstream.url)
    live.manage("server_add", "demo", "--gateway", "fx")
    status, _ = live.api("POST", "/api/gateways?sync=false", {"name": "dead", "url": "http://127.0.0.1:9/mcp"})
    assert status == 201


@pytest.fixture(scope="module")
def gateway(upstream, tmp_path_factory):
    """A gateway (authentication on, ?token= not allowed, 64 KiB messages) with the upstream fixture
    registered as 'fx', a virtual server 'demo' of it, and an unreachable gateway 'dead' for REST changes."""
    with start_live_gateway(tmp_path_factory.mktemp("ws"), GATEWAY_MAX_BODY_BYTES=str(MAX_BODY)) as live:
        _prepare(live, upstream)
        yield live
        log = live.log.read_text() if live.log else ""
        assert "Traceback" not in log, log[-5000:]


@pytest.fixture(scope="module")
def token_gateway(upstream, tmp_path_factory):
    """The same, with GATEWAY_WS_QUERY_TOKEN=true."""
    with start_live_gateway(tmp_path_factory.mktemp("ws-token"), GATEWAY_WS_QUERY_TOKEN="true") as live:
        _prepare(live, upstream)
        yield live


def ws_url(gateway, server: str | None = "demo", query: str = "") -> str:
    base = gateway.url.replace("http://", "ws://")
    return (f"{base}/servers/{server}/ws" if server else f"{base}/ws") + query


class Peer:
    """One WebSocket connection: JSON-RPC messages in and out, one per text frame."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.seen: list[dict] = []  # messages that were not what the test waited for

    async def send(self, message: dict) -> None:
        await self.ws.send_str(json.dumps(message))

    async def next(self, timeout: float = 10) -> dict:
        frame = await self.ws.receive(timeout=timeout)
        assert frame.type == aiohttp.WSMsgType.TEXT, (frame.type, frame.data, frame.extra)
        return json.loads(frame.data)

    async def until(self, accept, timeout: float = 10) -> dict:
        """The next message `accept` likes (the ones skipped are kept in `seen`)."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self.next(timeout)
                if accept(message):
                    return message
                self.seen.append(message)

    async def request(self, method: str, params: dict | None = None, request_id: int | str = 7) -> dict:
        await self.send(
            {"jsonrpc": "2.0", "id": request_id, "method": method, **({"params": params} if params else {})}
        )
        return await self.until(lambda m: m.get("id") == request_id and "method" not in m)

    async def initialize(self, version: str = "2025-11-25", capabilities: dict | None = None) -> dict:
        params = {"protocolVersion": version, "capabilities": capabilities or {}, "clientInfo": CLIENT_INFO}
        answer = await self.request("initialize", params, request_id=1)
        await self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return answer

    async def closed(self, timeout: float = 10) -> int | None:
        """Read until the server closes; its close code."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.ws.receive()
                if frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                    return self.ws.close_code
                self.seen.append(json.loads(frame.data))


@contextlib.asynccontextmanager
async def connect(
    gateway, server: str | None = "demo", *, token: str | None = "", headers=None, query: str = "", protocols=("mcp",)
) -> AsyncIterator[Peer]:
    base_headers = {} if token is None else {"Authorization": f"Bearer {token or gateway.token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(
            ws_url(gateway, server, query),
            protocols=protocols,
            headers={**base_headers, **(headers or {})},
            autoclose=False,
        ) as ws,
    ):
        yield Peer(ws)


# -- the transport -----------------------------------------------------------------------------------


@pytest.mark.parametrize("server", [None, "demo"])
async def test_the_handshake_selects_mcp_and_a_session_begins_with_initialize(gateway, server):
    """The server selects the `mcp` subprotocol; initialize negotiates as on every transport."""
    async with connect(gateway, server) as peer:
        assert peer.ws.protocol == "mcp"
        answer = await peer.initialize("2025-06-18")
        assert answer["result"]["protocolVersion"] == "2025-06-18"
        assert answer["result"]["capabilities"]["tools"] == {"listChanged": True}
        assert (await peer.request("ping", request_id="p"))["result"] == {}
        names = {tool["name"] for tool in (await peer.request("tools/list", request_id=2))["result"]["tools"]}
        assert "echo" in names


async def test_requests_before_initialize_are_refused(gateway):
    """basic/lifecycle: initialize MUST be the first interaction; ping is allowed before it."""
    async with connect(gateway) as peer:
        early = await peer.request("tools/list", request_id=3)
        assert early["error"]["code"] == -32600
        assert (await peer.request("ping", request_id=4))["result"] == {}
        await peer.initialize()
        assert "result" in await peer.request("tools/list", request_id=5)


async def test_a_call_with_progress(gateway):
    """basic/utilities/progress: progress frames carry the client's token and precede the result."""
    async with connect(gateway) as peer:
        await peer.initialize()
        params = {"name": "test_tool_with_progress", "arguments": {}, "_meta": {"progressToken": "tok-1"}}
        result = await peer.request("tools/call", params, request_id=10)
        assert not result["result"].get("isError")
        progress = [m["params"] for m in peer.seen if m.get("method") == "notifications/progress"]
        assert [p["progress"] for p in progress] == [0, 50, 100]
        assert {p["progressToken"] for p in progress} == {"tok-1"}


async def test_elicitation_and_sampling_requests_are_answered_over_the_socket(gateway):
    """client/elicitation, client/sampling: the upstream's request arrives as a frame with an id; the
    client's answer frame goes back upstream and the call completes."""
    async with connect(gateway) as peer:
        await peer.initialize(capabilities={"elicitation": {}, "sampling": {}})
        await peer.send(
            {
                "jsonrpc": "2.0",
                "id": 11,
                "method": "tools/call",
                "params": {"name": "test_elicitation", "arguments": {"message": "Who?"}},
            }
        )
        asked = await peer.until(lambda m: m.get("method") == "elicitation/create")
        assert asked["params"]["message"] == "Who?"
        await peer.send({"jsonrpc": "2.0", "id": asked["id"], "result": ELICITATION_ANSWER})
        result = await peer.until(lambda m: m.get("id") == 11)
        assert "ada" in result["result"]["content"][0]["text"]

        await peer.send(
            {
                "jsonrpc": "2.0",
                "id": 12,
                "method": "tools/call",
                "params": {"name": "test_sampling", "arguments": {"prompt": "6*7?"}},
            }
        )
        sampling = await peer.until(lambda m: m.get("method") == "sampling/createMessage")
        answer = {"role": "assistant", "content": {"type": "text", "text": "42"}, "model": "test"}
        await peer.send({"jsonrpc": "2.0", "id": sampling["id"], "result": answer})
        result = await peer.until(lambda m: m.get("id") == 12)
        assert "42" in result["result"]["content"][0]["text"]


async def test_list_changed_after_a_rest_catalog_change(gateway):
    """server/tools#list-changed-notification: a tool added through the REST API is announced."""
    async with connect(gateway, None) as peer:
        await peer.initialize()
        status, tool = await asyncio.to_thread(
            gateway.api, "POST", "/api/tools", {"name": "ws_rest_tool", "gateway": "dead"}
        )
        assert status == 201, tool
        await peer.until(lambda m: m.get("method") == "notifications/tools/list_changed")
        listed = await peer.request("tools/list", request_id=13)
        assert "ws_rest_tool" in {t["name"] for t in listed["result"]["tools"]}
    await asyncio.to_thread(gateway.api, "DELETE", f"/api/tools/{tool['id']}")


async def test_cancelling_a_call_sends_no_answer(gateway):
    """basic/utilities/cancellation: after notifications/cancelled the request gets no response; the
    connection goes on."""
    async with connect(gateway) as peer:
        await peer.initialize(capabilities={"elicitation": {}})
        await peer.send(
            {
                "jsonrpc": "2.0",
                "id": 14,
                "method": "tools/call",
                "params": {"name": "test_elicitation", "arguments": {"message": "Wait"}},
            }
        )
        await peer.until(lambda m: m.get("method") == "elicitation/create")
        await peer.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 14}})
        assert (await peer.request("ping", request_id=15))["result"] == {}
        await asyncio.sleep(0.5)
        assert (await peer.request("ping", request_id=16))["result"] == {}
        assert not [m for m in peer.seen if m.get("id") == 14]


# -- bad input ----------------------------------------------------------------------------------------


async def test_without_credentials_the_socket_says_why_and_closes_4401(gateway):
    async with connect(gateway, token=None) as peer:
        error = await peer.next()
        assert error["id"] is None
        assert error["error"]["code"] == -32600
        assert "Authentication required" in error["error"]["message"]
        assert await peer.closed() == 4401
    async with connect(gateway, headers={"Authorization": "Bearer not-a-token"}, token=None) as peer:
        assert (await peer.next())["error"]["code"] == -32600
        assert await peer.closed() == 4401


async def test_a_query_token_counts_only_when_the_setting_allows_it(gateway, token_gateway):
    """GATEWAY_WS_QUERY_TOKEN: off by default (4401), on: ?token= authenticates."""
    async with connect(gateway, token=None, query=f"?token={gateway.token}") as peer:
        assert "Authentication required" in (await peer.next())["error"]["message"]
        assert await peer.closed() == 4401
    async with connect(token_gateway, token=None, query=f"?token={token_gateway.token}") as peer:
        assert (await peer.initialize())["result"]["protocolVersion"] == "2025-11-25"
    async with connect(token_gateway, token=None, query="?token=forged") as peer:
        assert (await peer.next())["error"]["code"] == -32600
        assert await peer.closed() == 4401


@pytest.mark.parametrize(
    ("headers", "protocols"),
    [
        ({"Origin": "http://evil.example"}, ("mcp",)),
        ({"Host": "evil.example"}, ("mcp",)),
        ({}, ()),
        ({}, ("graphql-ws",)),
    ],
    ids=["foreign-origin", "foreign-host", "no-subprotocol", "wrong-subprotocol"],
)
async def test_the_handshake_is_refused(gateway, headers, protocols):
    """basic/transports#security-warning: Origin validated (and Host, against DNS rebinding); a client that
    does not speak the `mcp` subprotocol is refused before any session exists."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        async with connect(gateway, headers=headers, protocols=protocols):
            pass
    assert refused.value.status == 403


async def test_the_gateways_own_origin_is_allowed(gateway):
    async with connect(gateway, headers={"Origin": gateway.url}) as peer:
        assert (await peer.initialize())["result"]


async def test_an_unknown_virtual_server_closes_4404(gateway):
    async with connect(gateway, "nowhere") as peer:
        assert "nowhere" in (await peer.next())["error"]["message"]
        assert await peer.closed() == 4404


async def test_malformed_frames_are_answered_and_the_connection_stays_usable(gateway):
    """Malformed JSON -32700 (id null); a bad envelope -32600 with its id; a batch -32600; an unknown
    method -32601; after all of them the session still answers."""
    async with connect(gateway) as peer:
        await peer.initialize()
        await peer.ws.send_str('{"jsonrpc": "2.0", "id": 1, "method": ')
        parse = await peer.next()
        assert parse["id"] is None
        assert parse["error"]["code"] == -32700
        await peer.send({"jsonrpc": "1.0", "id": 17, "method": "ping"})
        assert await peer.next() == {
            "jsonrpc": "2.0",
            "id": 17,
            "error": {"code": -32600, "message": 'Invalid Request: "jsonrpc" must be "2.0".'},
        }
        await peer.ws.send_str(json.dumps([{"jsonrpc": "2.0", "id": 18, "method": "ping"}]))
        assert (await peer.next())["error"]["code"] == -32600
        assert (await peer.request("no/such/method", request_id=19))["error"]["code"] == -32601
        assert (await peer.request("ping", request_id=20))["result"] == {}


async def test_a_binary_frame_is_refused_with_4415(gateway):
    """MCP messages are text frames: a binary one is answered with a JSON-RPC error saying so, then the
    socket closes with 4415 (RFC 6455's 1003 cannot be sent by daphne; 4000 + HTTP 415)."""
    async with connect(gateway) as peer:
        await peer.initialize()
        await peer.ws.send_bytes(json.dumps({"jsonrpc": "2.0", "id": 21, "method": "ping"}).encode())
        error = await peer.next()
        assert error["id"] is None
        assert "binary" in error["error"]["message"]
        assert await peer.closed() == 4415


async def test_a_frame_over_the_size_limit_is_refused_with_4413(gateway):
    """A message over GATEWAY_MAX_BODY_BYTES: an error naming the limit, then close 4413 (4000 + HTTP 413;
    RFC 6455's 1009 cannot be sent by daphne). Just under the limit is fine."""
    async with connect(gateway) as peer:
        await peer.initialize()
        await peer.send({"jsonrpc": "2.0", "id": 22, "method": "ping", "params": {"pad": "x" * MAX_BODY}})
        assert str(MAX_BODY) in (await peer.next())["error"]["message"]
        assert await peer.closed() == 4413
    async with connect(gateway) as peer:
        await peer.initialize()
        answer = await peer.request("ping", {"pad": "x" * (MAX_BODY - 100)}, request_id=23)
        assert answer["result"] == {}


# -- the TypeScript SDK's own WebSocket client ------------------------------------------------------------

TS_CLIENT = """
import { pathToFileURL } from "node:url";
const sdk = (p) => import(pathToFileURL(process.env.SDK_DIR + "/dist/esm/" + p).href);
const { Client } = await sdk("client/index.js");
const { WebSocketClientTransport } = await sdk("client/websocket.js");
const { ElicitRequestSchema } = await sdk("types.js");

const client = new Client({ name: "ts-ws-test", version: "0" }, { capabilities: { elicitation: {} } });
client.setRequestHandler(ElicitRequestSchema, async (request) => ({
  action: "accept", content: { username: "grace", email: "grace@example.com" },
}));
await client.connect(new WebSocketClientTransport(new URL(process.argv[2])));
const progress = [];
const tools = await client.listTools();
const echo = await client.callTool({ name: "echo", arguments: { message: "via ts websocket" } });
const slow = await client.callTool({ name: "test_tool_with_progress", arguments: {} }, undefined, {
  onprogress: (p) => progress.push(p.progress),
});
const elicited = await client.callTool({ name: "test_elicitation", arguments: { message: "Name?" } });
console.log(JSON.stringify({
  version: client.getServerVersion(),
  tools: tools.tools.map((t) => t.name),
  echo: echo.content[0].text,
  progress,
  slow: slow.content[0].text,
  elicited: elicited.content[0].text,
}));
await client.close();
"""


@pytest.mark.conformance
def test_the_typescript_sdk_websocket_client(token_gateway, tmp_path):
    """TS SDK 1.32.2 WebSocketClientTransport (subprotocol `mcp`; Node's WebSocket sends no headers, so
    the token rides in ?token=): lists, calls with progress, and answers an elicitation."""
    ensure_node_tools()
    script = tmp_path / "ts_ws_client.mjs"
    script.write_text(TS_CLIENT)
    sdk_dir = NODE_DIR / "node_modules" / "@modelcontextprotocol" / "sdk"
    url = ws_url(token_gateway, "demo", f"?token={token_gateway.token}")
    result = subprocess.run(
        [str(node_bin()), str(script), url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"SDK_DIR": str(sdk_dir), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["version"]["name"] == "mcp-gateway"
    assert "echo" in seen["tools"]
    assert seen["echo"] == "via ts websocket"
    # The last progress frame and the result often share one TCP read: Node's WebSocket then fires both
    # message events in one task, the SDK handles the response at once and the progress in a microtask,
    # after it has forgotten the token. The order on the wire is checked by test_a_call_with_progress.
    assert seen["progress"][:2] == [0, 50]
    assert "grace" in seen["elicited"]
