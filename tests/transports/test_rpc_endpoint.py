"""JSON-RPC over plain HTTP: `POST /rpc` and `POST /servers/<name>/rpc` answer one request with one JSON body,
with no session, through the same protocol core as the MCP endpoints.

In-process through Django's ASGI handler (middleware, ninja) against an in-memory upstream, then once
against a live gateway with the project's fixture upstream. Spec references: JSON-RPC 2.0 sections 4-6
(request, notification, response, error codes, batch); MCP 2025-11-25 server/tools, server/resources,
server/prompts, server/utilities/completion, basic/utilities/ping; 2026-07-28 basic/index (the `_meta`
envelope, -32021 MissingRequiredClientCapability, -32022), basic/patterns/mrtr, server/tools
`x-mcp-header`. The HTTP status follows the plain JSON-RPC-over-HTTP habit: 200 for every JSON-RPC
answer, errors included; 400 for a body that is not one request; 401 for credentials.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from registry import auth
from tests.factories import GatewayFactory, PromptFactory, ResourceFactory, ToolFactory, UserFactory
from tests.fixtures.servers import running_upstream
from tests.live_gateway import start_live_gateway
from transports import edge
from transports.protocol.upstream.base import UpstreamClient
from transports.runtime import get_core, reset_core

REGION_SCHEMA = {
    "type": "object",
    "properties": {"region": {"type": "string", "x-mcp-header": "Region"}},
    "required": ["region"],
}


class FakeUpstream(UpstreamClient):
    """An in-memory upstream: tools/call echoes (or, for 'asker', asks the client first), completions and
    reads answer from fixed data; it records every request and the headers that came with it."""

    def __init__(self) -> None:
        self.initialize_result = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}, "completions": {}}}
        self.calls: list[tuple[str, dict, dict | None]] = []

    async def connect(self) -> dict:
        return self.initialize_result

    async def request(self, method, params=None, *, timeout=None, on_message=None, headers=None) -> dict:
        params = params or {}
        self.calls.append((method, params, headers))
        if method == "tools/call" and params.get("name") == "asker":
            question = {"mode": "form", "message": "Your name?", "requestedSchema": {"type": "object"}}
            answer = await on_message(
                {"jsonrpc": "2.0", "id": "up-1", "method": "elicitation/create", "params": question}
            )
            if "error" in answer:
                return {
                    "content": [{"type": "text", "text": f"refused: {answer['error']['message']}"}],
                    "isError": True,
                }
            return {"content": [{"type": "text", "text": f"hello {answer['result']['content']['name']}"}]}
        if method == "tools/call":
            text = json.dumps(params.get("arguments"), sort_keys=True)
            return {"content": [{"type": "text", "text": text}], "isError": False}
        if method == "completion/complete":
            return {"completion": {"values": ["paris", "parma"], "total": 2, "hasMore": False}}
        if method == "resources/read":
            return {"contents": [{"uri": params["uri"], "text": "from upstream"}]}
        return {}

    async def notify(self, method, params=None) -> None:
        return None

    def set_notification_handler(self, handler) -> None:
        return None

    async def aclose(self) -> None:
        return None

    @property
    def connected(self) -> bool:
        return True


def _close_connection() -> None:
    from django.db import connection

    connection.close()


@pytest.fixture(autouse=True)
async def _close_worker_connections():
    yield
    await sync_to_async(_close_connection)()


@pytest.fixture
def world(db):
    """A staff user and a read-only token, an upstream 'up' with three tools, a templated upstream prompt, a
    local resource and prompt, a virtual server 'demo' with one tool."""
    from registry.models import ResourceTemplate, VirtualServer

    reset_core()
    edge.credentials.clear()
    user = UserFactory(username="rpc", is_staff=True)
    gateway = GatewayFactory(name="up")
    echo = ToolFactory(name="echo", gateway=gateway)
    ToolFactory(name="asker", gateway=gateway)
    ToolFactory(name="regional", gateway=gateway, input_schema=REGION_SCHEMA)
    ResourceFactory(uri="file:///local.txt", text="local text")
    ResourceTemplate.objects.create(uri_template="up://items/{id}", name="items", gateway=gateway)
    PromptFactory(name="local_prompt", arguments=[{"name": "topic", "required": True}], template="About {{ topic }}")
    PromptFactory(name="city_prompt", gateway=gateway, arguments=[{"name": "city"}], template="")
    server = VirtualServer.objects.create(name="demo")
    server.tools.add(echo)
    upstream = FakeUpstream()
    get_core().upstreams.override("up", upstream)
    yield {
        "token": auth.token_issue(username=user.username),
        "reader": auth.token_issue(username=user.username, scopes=["read"]),
        "upstream": upstream,
    }
    reset_core()


async def rpc(
    body, *, token: str | None, path: str = "/rpc", raw: bytes | None = None, **headers: str
) -> tuple[int, dict | None, dict]:
    """POST to the endpoint; (status, decoded JSON body or None, response headers)."""
    client = AsyncClient()
    if token:
        headers.setdefault("Authorization", f"Bearer {token}")
    content_type = headers.pop("content_type", "application/json")
    data = raw if raw is not None else json.dumps(body)
    response = await client.post(path, data=data, content_type=content_type, headers=headers)
    content = response.content
    return response.status_code, (json.loads(content) if content else None), dict(response.headers)


def call(method: str, params: dict | None = None, request_id=1) -> dict:
    message = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


METHODS = [
    ("ping", None, lambda r: r == {}),
    ("tools/list", None, lambda r: [t["name"] for t in r["tools"]] == ["asker", "echo", "regional"]),
    ("tools/call", {"name": "echo", "arguments": {"x": 1}}, lambda r: r["content"][0]["text"] == '{"x": 1}'),
    ("resources/list", None, lambda r: [x["uri"] for x in r["resources"]] == ["file:///local.txt"]),
    ("resources/templates/list", None, lambda r: r["resourceTemplates"][0]["uriTemplate"] == "up://items/{id}"),
    ("resources/read", {"uri": "file:///local.txt"}, lambda r: r["contents"][0]["text"] == "local text"),
    ("resources/read", {"uri": "up://items/7"}, lambda r: r["contents"][0]["text"] == "from upstream"),
    ("prompts/list", None, lambda r: {p["name"] for p in r["prompts"]} == {"city_prompt", "local_prompt"}),
    (
        "prompts/get",
        {"name": "local_prompt", "arguments": {"topic": "owls"}},
        lambda r: r["messages"][0]["content"]["text"] == "About owls",
    ),
    (
        "completion/complete",
        {"ref": {"type": "ref/prompt", "name": "city_prompt"}, "argument": {"name": "city", "value": "pa"}},
        lambda r: r["completion"]["values"] == ["paris", "parma"],
    ),
    ("server/discover", None, lambda r: r["supportedVersions"] == ["2026-07-28"]),
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("method", "params", "check"), METHODS, ids=[f"{m[0]}-{i}" for i, m in enumerate(METHODS)])
async def test_each_method_answers_in_one_json_body(world, method, params, check):
    """Every method of the MCP endpoints that fits one request and one answer is served, with the
    request's id, as JSON (HTTP 200): the same method table as /mcp."""
    status, body, headers = await rpc(call(method, params, request_id="r-1"), token=world["token"])
    assert status == 200, body
    assert headers["Content-Type"] == "application/json"
    assert body["jsonrpc"] == "2.0"
    assert body["id"] == "r-1"
    assert check(body["result"]), body


@pytest.mark.django_db(transaction=True)
async def test_a_virtual_server_has_its_own_rpc_endpoint(world):
    """/servers/<name>/rpc sees that server's entries only; an unknown server is 404 (-32602)."""
    status, body, _ = await rpc(call("tools/list"), token=world["token"], path="/servers/demo/rpc")
    assert status == 200
    assert [t["name"] for t in body["result"]["tools"]] == ["echo"]
    status, body, _ = await rpc(call("tools/list"), token=world["token"], path="/servers/nope/rpc")
    assert status == 404
    assert body["error"]["code"] == -32602


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("message", "code"),
    [
        (call("no/such/method"), -32601),
        (call("tools/call", {"name": "missing", "arguments": {}}), -32602),
        (call("tools/call", {"name": "echo", "arguments": "not an object"}), -32602),
        (call("prompts/get", {"name": "local_prompt", "arguments": {}}), -32602),
        (call("resources/read", {"uri": "file:///nowhere"}), -32602),
        (call("tools/list", {"cursor": "not-a-cursor"}), -32602),
    ],
)
async def test_errors_are_json_rpc_errors_with_http_200(world, message, code):
    """An error of the called method is the core's JSON-RPC error (2026-07-28 codes: an unknown resource
    is -32602), carried with HTTP 200 like any answer."""
    status, body, _ = await rpc(message, token=world["token"])
    assert status == 200
    assert body["id"] == 1
    assert body["error"]["code"] == code, body


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "method", ["initialize", "logging/setLevel", "resources/subscribe", "resources/unsubscribe", "subscriptions/listen"]
)
async def test_what_needs_a_session_or_a_stream_points_at_the_mcp_endpoint(world, method):
    """initialize, logging levels, subscriptions and listen streams mean nothing without a session or a
    stream: -32601 naming the MCP endpoint to use instead."""
    status, body, _ = await rpc(call(method, {}), token=world["token"], path="/servers/demo/rpc")
    assert status == 200
    assert body["error"]["code"] == -32601
    assert "/servers/demo/mcp" in body["error"]["message"]


@pytest.mark.django_db(transaction=True)
async def test_a_call_that_needs_the_client_fails_with_a_clear_error(world):
    """2026-07-28 basic/index: the upstream asks the client to elicit, which /rpc cannot relay; the call
    ends at once with -32021 naming the capability (not after a timeout), and the upstream is refused."""
    status, body, _ = await rpc(call("tools/call", {"name": "asker", "arguments": {}}), token=world["token"])
    assert status == 200
    assert body["error"]["code"] == -32021
    assert "elicitation" in body["error"]["message"]
    assert body["error"]["data"] == {"requiredCapabilities": {"elicitation": {"form": {}}}}


@pytest.mark.django_db(transaction=True)
async def test_a_request_with_its_own_envelope_can_answer_input_rounds(world):
    """basic/patterns/mrtr: a body carrying a 2026-07-28 `_meta` that declares elicitation gets the
    input_required result, and its retry with inputResponses and requestState completes the call."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}}},
    }
    params = {"name": "asker", "arguments": {}, "_meta": meta}
    status, first, _ = await rpc(call("tools/call", params), token=world["token"])
    assert status == 200
    result = first["result"]
    assert result["resultType"] == "input_required"
    (key,) = result["inputRequests"]
    retry = {**params, "inputResponses": {key: {"action": "accept", "content": {"name": "Ada"}}}}
    retry["requestState"] = result["requestState"]
    status, second, _ = await rpc(call("tools/call", retry, request_id=2), token=world["token"])
    assert second["result"]["content"][0]["text"] == "hello Ada"
    bad = {**params, "_meta": {**meta, "io.modelcontextprotocol/protocolVersion": "2099-01-01"}}
    status, refused, _ = await rpc(call("tools/call", bad, request_id=3), token=world["token"])
    assert refused["error"]["code"] == -32022
    assert refused["error"]["data"]["supported"] == ["2026-07-28"]


@pytest.mark.django_db(transaction=True)
async def test_header_mirrored_arguments_need_no_headers(world):
    """server/tools `x-mcp-header`: /rpc has no Mcp-Param-* headers of its own; the adapter derives them
    from the arguments, so the call passes the core's check and the upstream gets the header."""
    status, body, _ = await rpc(
        call("tools/call", {"name": "regional", "arguments": {"region": "eu"}}), token=world["token"]
    )
    assert status == 200, body
    assert body["result"]["content"][0]["text"] == '{"region": "eu"}'
    method, _, headers = world["upstream"].calls[-1]
    assert method == "tools/call"
    assert headers == {"mcp-param-region": "eu"}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", -32700),
        (b"   ", -32700),  # (the test client drops the Content-Type of an empty body)
        (b'[{"jsonrpc": "2.0", "id": 1, "method": "ping"}]', -32600),
        (b'"a string"', -32600),
        (b'{"jsonrpc": "1.0", "id": 1, "method": "ping"}', -32600),
        (b'{"jsonrpc": "2.0", "id": [1], "method": "ping"}', -32600),
        (b'{"jsonrpc": "2.0", "id": 1, "result": {}}', -32600),
    ],
    ids=["malformed", "empty", "batch", "not-an-object", "wrong-version", "bad-id", "a-response"],
)
async def test_a_body_that_is_not_one_request_is_400(world, raw, code):
    """JSON-RPC 2.0 section 5.1: unparseable JSON is -32700, anything but one well-formed request is
    -32600 (batches included: one request per POST here); both with HTTP 400."""
    status, body, _ = await rpc(None, token=world["token"], raw=raw)
    assert status == 400
    assert body["error"]["code"] == code
    assert body["id"] in (None, 1)


@pytest.mark.django_db(transaction=True)
async def test_a_notification_gets_204_and_no_body(world):
    """JSON-RPC 2.0 section 4.1: a notification is not answered."""
    status, body, _ = await rpc(
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {}}, token=world["token"]
    )
    assert status == 204
    assert body is None


@pytest.mark.django_db(transaction=True)
async def test_credentials_are_those_of_the_rest_api(world):
    """No or bad credentials: 401 with WWW-Authenticate and a JSON-RPC error; a bearer token or HTTP Basic
    works; a token without the 'call' scope may list but not call (the core's error)."""
    status, body, headers = await rpc(call("ping"), token=None)
    assert status == 401
    assert "Bearer" in headers["WWW-Authenticate"]
    assert body["error"]["code"] == -32600
    status, body, _ = await rpc(call("ping"), token="not-a-token")
    assert status == 401
    user = await sync_to_async(UserFactory)(username="basic-user")
    await sync_to_async(user.set_password)("correct-horse-battery")
    await sync_to_async(user.save)()
    basic = "Basic " + base64.b64encode(b"basic-user:correct-horse-battery").decode()
    status, body, _ = await rpc(call("tools/list"), token=None, Authorization=basic)
    assert status == 200
    assert body["result"]["tools"]
    status, body, _ = await rpc(call("tools/list"), token=world["reader"])
    assert status == 200
    assert body["result"]["tools"]
    status, body, _ = await rpc(call("tools/call", {"name": "echo", "arguments": {}}), token=world["reader"])
    assert status == 200
    assert "Forbidden" in body["error"]["message"]


@pytest.mark.django_db(transaction=True)
async def test_edge_checks(world):
    """A foreign browser Origin is 403 (as on /mcp); a body that is not declared JSON is 415."""
    status, body, _ = await rpc(call("ping"), token=world["token"], Origin="http://evil.example")
    assert status == 403
    assert body["error"]["code"] == -32600
    status, body, _ = await rpc(call("ping"), token=world["token"], content_type="text/plain")
    assert status == 415


@pytest.mark.django_db(transaction=True)
async def test_steady_state_requests_make_no_database_query(world, django_db_blocker):
    """architecture "Rules for the hot path": after one warm-up request, /rpc answers with the database
    blocked (credentials cached by the edge, catalog from the snapshot, no session, no Django user)."""
    token = world["token"]
    status, _, _ = await rpc(call("ping"), token=token)
    assert status == 200
    with django_db_blocker.block():
        for round_ in range(3):
            for method, params, check in METHODS:
                status, body, _ = await rpc(call(method, params, request_id=round_), token=token)
                assert status == 200, body
                assert check(body["result"]), body


# -- a live gateway in front of the fixture upstream -----------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with (
        running_upstream("streamable-http", era="auto") as upstream,
        start_live_gateway(tmp_path_factory.mktemp("rpc-live")) as gateway,
    ):
        gateway.manage("gateway_add", "fx", "--url", upstream.url)
        gateway.manage("server_add", "demo", "--gateway", "fx")
        yield gateway


def live_rpc(gateway, message: dict, path: str = "/rpc") -> tuple[int, dict]:
    request = urllib.request.Request(gateway.url + path, data=json.dumps(message).encode(), method="POST")
    request.add_header("Authorization", f"Bearer {gateway.token}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def test_a_live_gateway_serves_rpc_for_scripts_and_probes(live):
    """Through daphne: ping for a probe, an upstream tool call (its progress has nowhere to go and is
    dropped), a read, and an upstream that needs elicitation refused with -32021."""
    assert live_rpc(live, call("ping")) == (200, {"jsonrpc": "2.0", "id": 1, "result": {}})
    status, body = live_rpc(
        live, call("tools/call", {"name": "echo", "arguments": {"message": "plain"}}), "/servers/demo/rpc"
    )
    assert status == 200
    assert body["result"]["content"][0]["text"] == "plain"
    status, body = live_rpc(
        live, call("tools/call", {"name": "test_tool_with_progress", "arguments": {}, "_meta": {"progressToken": "p"}})
    )
    assert status == 200
    assert not body["result"].get("isError")
    status, body = live_rpc(live, call("resources/read", {"uri": "test://static-text"}))
    assert body["result"]["contents"][0]["text"]
    status, body = live_rpc(live, call("tools/call", {"name": "test_elicitation", "arguments": {"message": "Who?"}}))
    assert status == 200
    assert body["error"]["code"] == -32021
    assert "elicitation" in json.dumps(body["error"])
