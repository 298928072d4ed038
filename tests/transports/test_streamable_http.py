"""Streamable HTTP, session era, against a live gateway (daphne) with real clients: raw HTTP for the
transport rules, and the official `mcp` SDK client for whole conversations.

Spec references are to the MCP specification 2025-11-25 unless noted:
basic/transports#streamable-http, basic/lifecycle, server/tools, server/resources, server/prompts,
server/utilities/pagination.
"""

from __future__ import annotations

import base64
import json

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

ACCEPT = "application/json, text/event-stream"


def init_body(version: str = "2025-11-25", request_id: int = 1) -> dict:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "initialize",
        "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "raw-test", "version": "0"}},
    }


class Raw:
    """Hand-made HTTP requests, to check the transport's rules exactly."""

    def __init__(self, live, path: str = "/mcp", token: str | None = None) -> None:
        self.url = live.url + path
        self.http = httpx2.Client(timeout=20, headers={"Authorization": f"Bearer {token or live.token}"})
        self.session_id: str | None = None
        self.version = "2025-11-25"

    def post(self, body, *, headers: dict | None = None, raw: bytes | None = None) -> httpx2.Response:
        base = {"Accept": ACCEPT, "Content-Type": "application/json"}
        if self.session_id:
            base["Mcp-Session-Id"] = self.session_id
            base["MCP-Protocol-Version"] = self.version
        base.update(headers or {})
        content = raw if raw is not None else json.dumps(body).encode()
        return self.http.post(self.url, content=content, headers={k: v for k, v in base.items() if v is not None})

    def initialize(self, version: str = "2025-11-25") -> dict:
        response = self.post(init_body(version))
        assert response.status_code == 200, response.text
        self.session_id = response.headers["mcp-session-id"]
        self.version = response.json()["result"]["protocolVersion"]
        assert self.post({"jsonrpc": "2.0", "method": "notifications/initialized"}).status_code == 202
        return response.json()["result"]

    def call(self, method: str, params: dict | None = None, request_id: int = 7) -> dict:
        message = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        response = self.post(message)
        assert response.status_code == 200, response.text
        if response.headers["content-type"].startswith("text/event-stream"):
            events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]
            return events[-1]
        return response.json()


@pytest.fixture(scope="module")
def catalog(live_gateway):
    """A gateway nobody listens on, 12 tools from it, local resources and a local prompt, and a virtual server."""
    live = live_gateway
    status, _ = live.api("POST", "/api/gateways?sync=false", {"name": "dead", "url": "http://127.0.0.1:9/mcp"})
    assert status == 201
    for i in range(12):
        status, body = live.api(
            "POST", "/api/tools", {"name": f"t{i:02d}", "gateway": "dead", "description": f"tool {i}"}
        )
        assert status == 201, body
    live.api(
        "POST",
        "/api/resources",
        {"uri": "file:///notes.txt", "name": "notes", "mime_type": "text/plain", "text": "hello"},
    )
    live.api(
        "POST",
        "/api/resources",
        {
            "uri": "file:///logo.bin",
            "name": "logo",
            "mime_type": "application/octet-stream",
            "blob": base64.b64encode(b"\x00\x01\xff").decode(),
        },
    )
    live.api(
        "POST",
        "/api/prompts",
        {
            "name": "greet",
            "description": "Say hello",
            "arguments": [{"name": "who", "required": True}],
            "template": "Hello {{ who }}!",
        },
    )
    status, body = live.api("POST", "/api/servers", {"name": "pair", "tools": ["t00", "t01"], "prompts": ["greet"]})
    assert status == 201, body
    return live


# -- lifecycle (basic/lifecycle, basic/transports#session-management) ---------------------------


@pytest.mark.parametrize("version", ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"])
def test_initialize_agrees_on_each_session_era_version(catalog, version):
    """A supported requested version is answered with the same version, a session id and our capabilities."""
    raw = Raw(catalog)
    result = raw.initialize(version)
    assert result["protocolVersion"] == version
    assert raw.session_id
    assert all(0x21 <= ord(c) <= 0x7E for c in raw.session_id)
    assert set(result["capabilities"]) >= {"tools", "resources", "prompts", "logging", "completions"}
    assert result["serverInfo"]["name"] == "mcp-gateway"


def test_initialize_with_an_unknown_version_offers_the_newest(catalog):
    """lifecycle#version-negotiation: otherwise the server answers with the latest version it supports."""
    assert Raw(catalog).initialize("1999-01-01")["protocolVersion"] == "2025-11-25"


def test_initialize_without_client_info_is_invalid_params(catalog):
    body = init_body()
    del body["params"]["clientInfo"]
    response = Raw(catalog).post(body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32602


def test_requests_need_a_session(catalog):
    """A request other than initialize without Mcp-Session-Id is 400 (session-management, point 2)."""
    response = Raw(catalog).post({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert response.status_code == 400
    assert "Mcp-Session-Id" in response.json()["error"]["message"]


def test_an_unknown_session_is_404(catalog):
    raw = Raw(catalog)
    raw.session_id = "no-such-session"
    assert raw.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}).status_code == 404


def test_delete_ends_the_session(catalog):
    """session-management point 5: after DELETE the session id answers 404."""
    raw = Raw(catalog)
    raw.initialize()
    response = raw.http.delete(raw.url, headers={"Mcp-Session-Id": raw.session_id})
    assert response.status_code == 200
    assert raw.post({"jsonrpc": "2.0", "id": 2, "method": "ping"}).status_code == 404


def test_a_session_belongs_to_its_user(catalog):
    """A session id presented by another user is unknown to them (sessions are bound to the caller)."""
    raw = Raw(catalog)
    raw.initialize()
    catalog.manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import User; "
        "User.objects.filter(username='eve').exists() or User.objects.create_user('eve', password='eve-password-1')",
    )
    other = catalog.manage("issue_token", "eve").strip().splitlines()[-1]
    thief = Raw(catalog, token=other)
    thief.session_id = raw.session_id
    assert thief.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}).status_code == 404


def test_ping_and_notifications(catalog):
    """ping answers {}; notifications and responses are accepted with 202 and no body."""
    raw = Raw(catalog)
    raw.initialize()
    assert raw.call("ping") == {"jsonrpc": "2.0", "id": 7, "result": {}}
    response = raw.post({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 99}})
    assert response.status_code == 202
    assert response.content == b""
    assert raw.post({"jsonrpc": "2.0", "id": "gw-404", "result": {}}).status_code == 202


# -- HTTP rules -------------------------------------------------------------------------------


def test_without_credentials_the_answer_is_401_with_a_challenge(catalog):
    response = httpx2.post(catalog.url + "/mcp", json=init_body(), headers={"Accept": ACCEPT})
    assert response.status_code == 401
    assert "Bearer" in response.headers["www-authenticate"]


def test_a_foreign_origin_is_403(catalog):
    """transports#security-warning: servers MUST validate the Origin header."""
    response = Raw(catalog).post(init_body(), headers={"Origin": "http://evil.example"})
    assert response.status_code == 403


def test_a_foreign_host_is_refused(catalog):
    """DNS-rebinding protection: a Host the gateway does not serve is refused (421)."""
    response = Raw(catalog).post(init_body(), headers={"Host": "evil.example.com"})
    assert response.status_code == 421


def test_own_origin_is_allowed(catalog):
    response = Raw(catalog).post(init_body(), headers={"Origin": catalog.url})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("headers", "status"),
    [({"Accept": "application/json"}, 406), ({"Content-Type": "text/plain"}, 415)],
)
def test_accept_and_content_type_are_checked(catalog, headers, status):
    assert Raw(catalog).post(init_body(), headers=headers).status_code == status


def test_malformed_json_is_a_parse_error(catalog):
    response = Raw(catalog).post(None, raw=b'{"jsonrpc": "2.0", "id": 1,')
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32700
    assert response.json()["id"] is None


def test_an_invalid_envelope_is_invalid_request(catalog):
    raw = Raw(catalog)
    raw.initialize()
    response = raw.post({"jsonrpc": "1.0", "id": 3, "method": "ping"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32600


def test_an_unsupported_protocol_version_header_is_400(catalog):
    """transports#protocol-version-header: an unsupported MCP-Protocol-Version gets 400."""
    raw = Raw(catalog)
    raw.initialize()
    response = raw.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers={"MCP-Protocol-Version": "1999-01-01"})
    assert response.status_code == 400


def test_an_oversize_body_is_413(catalog):
    raw = Raw(catalog)
    response = raw.post(None, raw=b'{"x": "' + b"a" * (11 * 1024 * 1024) + b'"}')
    assert response.status_code == 413


def test_unknown_methods_are_method_not_found(catalog):
    raw = Raw(catalog)
    raw.initialize()
    assert raw.call("tools/frobnicate")["error"]["code"] == -32601


def test_batches_are_refused_after_2025_03_26(catalog):
    """Batching was removed in 2025-06-18: such sessions get -32600 for an array body."""
    raw = Raw(catalog)
    raw.initialize("2025-06-18")
    response = raw.post([{"jsonrpc": "2.0", "id": 1, "method": "ping"}])
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32600


def test_batches_work_for_2025_03_26_sessions(catalog):
    """2025-03-26 allowed batches: every request is answered in one array."""
    raw = Raw(catalog)
    raw.initialize("2025-03-26")
    response = raw.post(
        [
            {"jsonrpc": "2.0", "id": 1, "method": "ping"},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        ]
    )
    assert response.status_code == 200
    answers = response.json()
    assert [a["id"] for a in answers] == [1, 2]
    assert answers[1]["result"]["tools"]


# -- methods ----------------------------------------------------------------------------------


def test_tools_list_pages_in_name_order(catalog):
    """utilities/pagination: opaque cursors, deterministic order; GATEWAY_MCP_PAGE_SIZE=5 here."""
    raw = Raw(catalog)
    raw.initialize()
    names, cursor = [], None
    for _ in range(10):
        result = raw.call("tools/list", {"cursor": cursor} if cursor else {})["result"]
        assert len(result["tools"]) <= 5
        names += [tool["name"] for tool in result["tools"]]
        cursor = result.get("nextCursor")
        if not cursor:
            break
    assert names == sorted(names)
    assert [n for n in names if n.startswith("t")] == [f"t{i:02d}" for i in range(12)]
    tool = raw.call("tools/list")["result"]["tools"][0]
    assert tool["inputSchema"]["type"] == "object"


def test_an_unknown_cursor_is_invalid_params(catalog):
    raw = Raw(catalog)
    raw.initialize()
    assert raw.call("tools/list", {"cursor": "bm9wZQ"})["error"]["code"] == -32602


def test_calling_an_unknown_tool_is_invalid_params(catalog):
    """server/tools#error-handling: unknown tools are a protocol error."""
    raw = Raw(catalog)
    raw.initialize()
    assert raw.call("tools/call", {"name": "nope", "arguments": {}})["error"]["code"] == -32602


def test_an_unreachable_upstream_is_a_clean_error(catalog):
    """A tool whose upstream cannot be reached answers a JSON-RPC error naming the upstream, not a 500."""
    raw = Raw(catalog)
    raw.initialize()
    error = raw.call("tools/call", {"name": "t03", "arguments": {}})["error"]
    assert error["code"] == -32000
    assert "dead" in error["message"]


def test_local_resources_are_read_as_text_and_blob(catalog):
    raw = Raw(catalog)
    raw.initialize()
    text = raw.call("resources/read", {"uri": "file:///notes.txt"})["result"]["contents"][0]
    assert text == {"uri": "file:///notes.txt", "mimeType": "text/plain", "text": "hello"}
    blob = raw.call("resources/read", {"uri": "file:///logo.bin"})["result"]["contents"][0]
    assert base64.b64decode(blob["blob"]) == b"\x00\x01\xff"
    missing = raw.call("resources/read", {"uri": "file:///nope"})["error"]
    assert missing["code"] == -32002


def test_local_prompts_render_their_arguments(catalog):
    raw = Raw(catalog)
    raw.initialize()
    result = raw.call("prompts/get", {"name": "greet", "arguments": {"who": "Ada"}})["result"]
    assert result["messages"] == [{"role": "user", "content": {"type": "text", "text": "Hello Ada!"}}]
    assert raw.call("prompts/get", {"name": "greet", "arguments": {}})["error"]["code"] == -32602


def test_logging_set_level_validates_the_level(catalog):
    raw = Raw(catalog)
    raw.initialize()
    assert raw.call("logging/setLevel", {"level": "warning"})["result"] == {}
    assert raw.call("logging/setLevel", {"level": "loud"})["error"]["code"] == -32602


def test_a_virtual_server_serves_only_its_members(catalog):
    raw = Raw(catalog, "/servers/pair/mcp")
    raw.initialize()
    assert [t["name"] for t in raw.call("tools/list")["result"]["tools"]] == ["t00", "t01"]
    assert [p["name"] for p in raw.call("prompts/list")["result"]["prompts"]] == ["greet"]
    assert raw.call("resources/list")["result"]["resources"] == []


def test_an_unknown_virtual_server_is_404(catalog):
    assert Raw(catalog, "/servers/nope/mcp").post(init_body()).status_code == 404


def test_the_session_is_bound_to_its_endpoint(catalog):
    raw = Raw(catalog, "/servers/pair/mcp")
    raw.initialize()
    other = Raw(catalog)
    other.session_id = raw.session_id
    assert other.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}).status_code == 404


# -- the official SDK client ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "negotiated"), [("legacy", "2025-11-25"), ("auto", "2026-07-28"), ("2026-07-28", "2026-07-28")]
)
async def test_the_python_sdk_lists_reads_and_renders(catalog, mode, negotiated):
    """mcp 2.x Client in every mode: the whole conversation works through the gateway; `auto` probes
    server/discover and stays in the stateless era (2026-07-28 basic/versioning)."""
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {catalog.token}"}, timeout=30) as http:
        transport = streamable_http_client(catalog.mcp_url("pair"), http_client=http)
        async with Client(transport, mode=mode) as client:
            assert client.protocol_version == negotiated
            tools = await client.list_tools()
            assert [t.name for t in tools.tools] == ["t00", "t01"]
            prompt = await client.get_prompt("greet", {"who": "SDK"})
            assert prompt.messages[0].content.text == "Hello SDK!"
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {catalog.token}"}, timeout=30) as http,
        Client(streamable_http_client(catalog.mcp_url(), http_client=http), mode=mode) as client,
    ):
        contents = (await client.read_resource("file:///notes.txt")).contents
        assert contents[0].text == "hello"


def test_the_get_stream_announces_catalog_changes(catalog):
    """transports#listening-for-messages-from-the-server: list_changed reaches the standalone GET stream."""
    import threading

    raw = Raw(catalog)
    raw.initialize()
    received: list[dict] = []
    opened = threading.Event()

    def listen() -> None:
        headers = {"Accept": "text/event-stream", "Mcp-Session-Id": raw.session_id, "MCP-Protocol-Version": raw.version}
        with raw.http.stream("GET", raw.url, headers=headers, timeout=20) as response:
            assert response.status_code == 200
            opened.set()
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    received.append(json.loads(line[6:]))
                    if any(m.get("method") == "notifications/tools/list_changed" for m in received):
                        return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    assert opened.wait(10)
    status, tool = catalog.api("POST", "/api/tools", {"name": "announced_tool", "gateway": "dead"})
    assert status == 201
    thread.join(10)
    assert {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"} in received
    catalog.api("DELETE", f"/api/tools/{tool['id']}")


def test_get_needs_an_event_stream_accept(catalog):
    raw = Raw(catalog)
    raw.initialize()
    response = raw.http.get(raw.url, headers={"Accept": "application/json", "Mcp-Session-Id": raw.session_id})
    assert response.status_code == 406
