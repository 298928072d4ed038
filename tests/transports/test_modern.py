"""The stateless 2026-07-28 ("modern") side of the gateway, against live gateways (daphne), by hand-made
HTTP requests: the `_meta` envelope and the request headers, server/discover and cache hints,
multi-round-trip requests bridged onto a session-era upstream, cancellation by closing the stream, and
subscriptions/listen.

Spec references are to the MCP specification 2026-07-28 (docs/specification/2026-07-28/...):
basic/index ("Messages", "Error Codes", "_meta"), basic/versioning ("Protocol Version Negotiation"),
basic/transports/streamable-http ("Sending Messages", "Receiving Messages", "Cancellation", "Request
Metadata", "Value Encoding", "Case Sensitivity", "Server Validation", "Security & Endpoint"),
basic/patterns/mrtr, basic/patterns/subscriptions, basic/patterns/cancellation, server/discover,
server/utilities/caching, server/utilities/pagination, server/utilities/logging, server/resources
("Error Handling").

Upstreams: the project's fixture server (tests/fixtures/upstream_server.py) started session-era only
(`era="legacy"`, and registered with `gateway_add --era legacy` where that option exists), so every
input_required round is the gateway's own bridging of the upstream's server-to-client requests; and a
small session-era stdio upstream written below (`STUB`) that records what reaches it: its `stub_slow`
tool never answers (cancellation), its resources ask the client (resources/read rounds), and
`stub://held` answers only when the test releases it (concurrent retries).

Gateways: `gw` (authentication on, GATEWAY_CACHE_TTL_MS=1234, 5 entries per page) and `short`
(authentication off, GATEWAY_REQUEST_STATE_TTL=1, GATEWAY_MAX_PARKED_CALLS=1, GATEWAY_CACHE_TTL_MS=0),
one process each for the module.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.fixtures.servers import running_upstream
from tests.live_gateway import LiveGateway, start_live_gateway

VERSION = "2026-07-28"
ACCEPT = "application/json, text/event-stream"
META_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
META_LOG_LEVEL = "io.modelcontextprotocol/logLevel"
META_SERVER_INFO = "io.modelcontextprotocol/serverInfo"
META_SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
NAME_FIELD = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
WATCHED = "test://watched-resource"
CACHE_TTL_MS = 1234
ELICITATION = {"elicitation": {}}
USER = {"action": "accept", "content": {"username": "ada", "email": "ada@example.com"}}
_ABSENT = object()


# --------------------------------------------------------------------------------------------------------------
# A hand-made 2026-07-28 client
# --------------------------------------------------------------------------------------------------------------


def sse_messages(text: str) -> list[dict[str, Any]]:
    """The JSON-RPC messages of an SSE body (comments and empty data skipped)."""
    messages = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        data = [line[5:].lstrip() for line in block.split("\n") if line.startswith("data:")]
        if data and "".join(data).strip():
            messages.append(json.loads("\n".join(data)))
    return messages


@dataclass
class Reply:
    """One HTTP answer: its status and headers, and the JSON-RPC messages it carried (the last one is the
    response on an SSE stream)."""

    response: httpx2.Response
    messages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> int:
        return self.response.status_code

    @property
    def content_type(self) -> str:
        return self.response.headers.get("content-type", "")

    @property
    def final(self) -> dict[str, Any]:
        assert self.messages, f"no JSON-RPC message in the answer (HTTP {self.status}): {self.response.text!r}"
        return self.messages[-1]

    @property
    def result(self) -> dict[str, Any]:
        assert "result" in self.final, self.final
        return self.final["result"]

    @property
    def error(self) -> dict[str, Any]:
        assert "error" in self.final, self.final
        return self.final["error"]

    @property
    def notifications(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if "method" in m and "id" not in m]


class Modern:
    """A 2026-07-28 client by hand: every request carries the `_meta` envelope and the mirrored headers
    (streamable-http "Request Metadata"), unless a test takes them away."""

    def __init__(
        self,
        gateway: LiveGateway,
        path: str = "/mcp",
        *,
        token: str | None = None,
        capabilities: dict[str, Any] | None = None,
        auth: bool = True,
    ) -> None:
        self.gateway = gateway
        self.url = gateway.url + path
        headers = {"Authorization": f"Bearer {token or gateway.token}"} if auth else {}
        self.http = httpx2.Client(timeout=httpx2.Timeout(30.0, read=20.0), headers=headers)
        self.capabilities = capabilities or {}
        self._ids = itertools.count(1)

    def meta(self, capabilities: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        meta = {
            META_VERSION: VERSION,
            META_CAPABILITIES: self.capabilities if capabilities is None else capabilities,
            META_CLIENT_INFO: {"name": "test-modern", "version": "0"},
        }
        meta.update(extra)
        return meta

    def body(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        request_id: Any = None,
        meta: Any = _ABSENT,
        capabilities: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        params = dict(params or {})
        if meta is _ABSENT:
            params["_meta"] = self.meta(capabilities)
        elif meta is not None:
            params["_meta"] = meta
        return {
            "jsonrpc": "2.0",
            "id": f"req-{next(self._ids)}" if request_id is None else request_id,
            "method": method,
            "params": params,
        }

    @staticmethod
    def headers_for(body: dict[str, Any]) -> dict[str, str]:
        headers = {"Accept": ACCEPT, "Content-Type": "application/json", "MCP-Protocol-Version": VERSION}
        method = body.get("method")
        if isinstance(method, str):
            headers["Mcp-Method"] = method
            target = (body.get("params") or {}).get(NAME_FIELD.get(method, ""))
            if isinstance(target, str):
                headers["Mcp-Name"] = target
        return headers

    def send(self, body: Any, *, headers: dict[str, str | None] | None = None, raw: bytes | None = None) -> Reply:
        """POST ``body`` with the headers it implies; ``headers`` overrides them (None removes one)."""
        wanted: dict[str, str | None] = dict(self.headers_for(body) if isinstance(body, dict) else {})
        wanted.setdefault("Accept", ACCEPT)
        wanted.setdefault("Content-Type", "application/json")
        lowered = {name.lower(): name for name in wanted}
        for name, value in (headers or {}).items():
            wanted.pop(lowered.get(name.lower(), name), None)
            wanted[name] = value
        final = {name: value for name, value in wanted.items() if value is not None}
        content = raw if raw is not None else json.dumps(body).encode()
        response = self.http.post(self.url, content=content, headers=final)
        reply = Reply(response)
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            reply.messages = sse_messages(response.text)
        elif response.content:
            reply.messages = [response.json()]
        return reply

    def request(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        request_id: Any = None,
        capabilities: dict[str, Any] | None = None,
        headers: dict[str, str | None] | None = None,
    ) -> Reply:
        body = self.body(method, params, request_id=request_id, capabilities=capabilities)
        return self.send(body, headers=headers)

    def call(self, name: str, arguments: dict[str, Any] | None = None, **params: Any) -> Reply:
        capabilities = params.pop("capabilities", None)
        request_id = params.pop("request_id", None)
        return self.request(
            "tools/call",
            {"name": name, "arguments": arguments or {}, **params},
            capabilities=capabilities,
            request_id=request_id,
        )

    @contextlib.contextmanager
    def stream(self, body: dict[str, Any]) -> Iterator[EventStream]:
        """POST ``body`` and read its SSE answer message by message; leaving the block closes the stream."""
        with self.http.stream("POST", self.url, content=json.dumps(body).encode(), headers=self.headers_for(body)) as r:
            yield EventStream(r)

    def listen(self, notifications: dict[str, Any], request_id: Any = None) -> contextlib.AbstractContextManager:
        return self.stream(self.body("subscriptions/listen", {"notifications": notifications}, request_id=request_id))

    def close(self) -> None:
        self.http.close()


class EventStream:
    """An SSE response read one JSON-RPC message at a time (a missing message fails on the read timeout)."""

    def __init__(self, response: httpx2.Response) -> None:
        self.response = response
        self._lines = response.iter_lines()

    def next(self) -> dict[str, Any]:
        data: list[str] = []
        for line in self._lines:
            if line.startswith("data:"):
                data.append(line[5:].lstrip())
            elif line == "" and data:
                text = "\n".join(data)
                data = []
                if text.strip():
                    return json.loads(text)
        raise AssertionError("the stream ended before the next message")


def raw_http(gateway: LiveGateway, head: str, body: bytes) -> tuple[int, bytes]:
    """One request written byte for byte (for header forms an HTTP library would normalise)."""
    host = gateway.url.removeprefix("http://")
    address, port = host.split(":")
    request = head.replace("\n", "\r\n").encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    with socket.create_connection((address, int(port)), timeout=20) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    answer = b"".join(chunks)
    status = int(answer.split(b" ", 2)[1])
    return status, answer.split(b"\r\n\r\n", 1)[1]


def assert_error(reply: Reply, status: int, code: int, request_id: Any) -> dict[str, Any]:
    assert reply.status == status, (reply.status, reply.response.text)
    assert reply.final["id"] == request_id, reply.final
    assert reply.error["code"] == code, reply.final
    return reply.error


# --------------------------------------------------------------------------------------------------------------
# A stdio upstream (session era) for cancellation and a resources/read that asks the client
# --------------------------------------------------------------------------------------------------------------

STUB = r"""
import json, os, sys, threading, time

LOG = sys.argv[1]
RELEASE = LOG + ".release"  # a file the test creates to let the held reads answer
TOOLS = [
    {"name": "stub_slow", "description": "Reports progress once, then never answers.",
     "inputSchema": {"type": "object", "properties": {}}},
    {"name": "stub_quick", "description": "Answers at once.", "inputSchema": {"type": "object", "properties": {}}},
]
RESOURCES = [
    {"uri": "stub://asks", "name": "asks", "mimeType": "text/plain"},
    {"uri": "stub://held", "name": "held", "mimeType": "text/plain"},
]
out_lock, held_lock = threading.Lock(), threading.Lock()
reads = {}  # our elicitation/create id -> (the read's id, its uri)
held = []  # stub://held reads the client answered, waiting for RELEASE
asked = 0


def send(message):
    with out_lock:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()


def note(event, request_id):
    # request ids are per process (the gateway runs one process per client capability profile): add the pid
    with open(LOG, "a") as log:
        log.write(f"{event} {os.getpid()}:{json.dumps(request_id)}\n")


def contents(rid, uri, text):
    send({"jsonrpc": "2.0", "id": rid, "result": {"contents": [{"uri": uri, "mimeType": "text/plain", "text": text}]}})


def releaser():
    while True:
        time.sleep(0.02)
        if os.path.exists(RELEASE):
            with held_lock:
                pending = held[:]
                held.clear()
            for rid, uri, action in pending:
                contents(rid, uri, f"released: {action}")
            if pending:
                os.remove(RELEASE)


threading.Thread(target=releaser, daemon=True).start()
for line in sys.stdin:
    message = json.loads(line)
    method, rid = message.get("method"), message.get("id")
    params = message.get("params") or {}
    if method is None:  # the answer to one of our elicitation/create requests
        if rid in reads:
            read, uri = reads.pop(rid)
            action = (message.get("result") or {}).get("action", "no answer")
            if uri == "stub://held":
                with held_lock:
                    held.append((read, uri, action))
            else:
                contents(read, uri, f"answer: {action}")
            note("answered", read)
        continue
    if rid is None:
        if method == "notifications/cancelled":
            note("cancelled", params.get("requestId"))
        continue
    if method == "initialize":
        send({"jsonrpc": "2.0", "id": rid, "result": {
            "protocolVersion": "2025-11-25", "capabilities": {"tools": {}, "resources": {}},
            "serverInfo": {"name": "stub", "version": "1"}}})
    elif method == "ping":
        send({"jsonrpc": "2.0", "id": rid, "result": {}})
    elif method == "tools/list":
        send({"jsonrpc": "2.0", "id": rid, "result": {"tools": TOOLS}})
    elif method == "resources/list":
        send({"jsonrpc": "2.0", "id": rid, "result": {"resources": RESOURCES}})
    elif method == "resources/templates/list":
        send({"jsonrpc": "2.0", "id": rid, "result": {"resourceTemplates": []}})
    elif method == "tools/call" and params.get("name") == "stub_slow":
        note("started", rid)
        token = (params.get("_meta") or {}).get("progressToken")
        if token is not None:
            send({"jsonrpc": "2.0", "method": "notifications/progress",
                  "params": {"progressToken": token, "progress": 1, "total": 2}})
    elif method == "tools/call":
        send({"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": "quick"}]}})
    elif method == "resources/read":
        note("asked", rid)
        asked += 1
        ask = f"stub-ask-{asked}"
        reads[ask] = (rid, params.get("uri"))
        send({"jsonrpc": "2.0", "id": ask, "method": "elicitation/create", "params": {
            "message": "May I?", "requestedSchema": {"type": "object", "properties": {}}}})
    else:
        send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "Method not found"}})
"""


@dataclass
class Stub:
    """What the stub upstream recorded: calls started, reads asked and answered, requests cancelled."""

    log: Path

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def ids(self, event: str) -> list[str]:
        return [line.split(" ", 1)[1] for line in self.lines() if line.startswith(event + " ")]

    def release(self) -> None:
        """Let the held stub://held reads answer."""
        Path(f"{self.log}.release").touch()


def add_stub(gateway: LiveGateway, state: Path) -> Stub:
    script = state / "stub_upstream.py"
    script.write_text(STUB)
    log = state / "stub.log"
    out = gateway.manage("gateway_add", "stub", "--command", sys.executable, "--arg", str(script), "--arg", str(log))
    assert "Registered 'stub'" in out, out
    return Stub(log)


def wait_for(predicate, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixture_upstream():
    """The fixture server, session era only: every input_required round below is the gateway's bridge."""
    with running_upstream("streamable-http", era="legacy") as upstream:
        yield upstream


def add_fixture(gateway: LiveGateway, url: str) -> None:
    era = ["--era", "legacy"] if "--era" in gateway.manage("gateway_add", "--help") else []
    out = gateway.manage("gateway_add", "fx", "--url", url, *era)
    assert "Registered 'fx'" in out, out
    assert "protocol 2025-11-25" in out, out


@pytest.fixture(scope="module")
def gw(fixture_upstream, tmp_path_factory):
    """Authentication on, 5 entries per list page, ttlMs 1234; the fixture as 'fx' (also in server 'demo'),
    a gateway nobody listens on ('dead') for catalog changes made through the REST API, the stub as 'stub'."""
    state = tmp_path_factory.mktemp("modern")
    with start_live_gateway(state, GATEWAY_MCP_PAGE_SIZE="5", GATEWAY_CACHE_TTL_MS=str(CACHE_TTL_MS)) as gateway:
        add_fixture(gateway, fixture_upstream.url)
        assert "demo" in gateway.manage("server_add", "demo", "--gateway", "fx")
        status, body = gateway.api(
            "POST", "/api/gateways?sync=false", {"name": "dead", "url": "http://127.0.0.1:9/mcp"}
        )
        assert status == 201, body
        add_stub(gateway, state)  # before the first MCP request: the gateway reads its catalog then
        yield gateway


@pytest.fixture(scope="module")
def gw_stub(gw) -> Stub:
    """The stub upstream registered on ``gw``."""
    return Stub(gw.log.parent / "stub.log")


@pytest.fixture(scope="module")
def client(gw) -> Iterator[Modern]:
    modern = Modern(gw)
    yield modern
    modern.close()


@pytest.fixture(scope="module")
def eve_token(gw) -> str:
    """A second user's token."""
    gw.manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import User; "
        "User.objects.filter(username='eve').exists() or User.objects.create_user('eve', password='eve-password-1')",
    )
    return gw.manage("issue_token", "eve").strip().splitlines()[-1]


@dataclass
class Short:
    gateway: LiveGateway
    stub: Stub


@pytest.fixture(scope="module")
def short(fixture_upstream, tmp_path_factory):
    """Authentication off, requestState and parked calls live 1 s, one parked call at most, ttlMs 0; the
    fixture as 'fx' and the stdio stub as 'stub'."""
    state = tmp_path_factory.mktemp("modern-short")
    with start_live_gateway(
        state,
        GATEWAY_AUTH_REQUIRED="false",
        GATEWAY_REQUEST_STATE_TTL="1",
        GATEWAY_MAX_PARKED_CALLS="1",
        GATEWAY_CACHE_TTL_MS="0",
    ) as gateway:
        add_fixture(gateway, fixture_upstream.url)
        yield Short(gateway, add_stub(gateway, state))


@pytest.fixture
def open_client(short) -> Iterator[Modern]:
    modern = Modern(short.gateway, auth=False)
    yield modern
    modern.close()


# --------------------------------------------------------------------------------------------------------------
# 1. Bad input: exact code, HTTP status, the request id; and nothing else is affected
# --------------------------------------------------------------------------------------------------------------


def still_fine(client: Modern) -> None:
    """A well-formed request right after answers normally (statelessness: basic/index "Statelessness")."""
    reply = client.request("tools/list", request_id="after")
    assert reply.status == 200, reply.response.text
    assert reply.final["id"] == "after"
    assert reply.result["resultType"] == "complete"
    assert reply.result["tools"]


def _without(meta_key: str):
    def change(client: Modern, body: dict, headers: dict) -> None:
        del body["params"]["_meta"][meta_key]

    return change


def _missing_meta(client, body, headers):
    del body["params"]["_meta"]


def _meta_not_object(client, body, headers):
    body["params"]["_meta"] = "2026-07-28"


def _capabilities_not_object(client, body, headers):
    body["params"]["_meta"][META_CAPABILITIES] = ["elicitation"]


def _bad_log_level(client, body, headers):
    body["params"]["_meta"][META_LOG_LEVEL] = "loud"


def _header(name: str, value: str | None):
    def change(client, body, headers):
        headers[name] = value

    return change


BAD_ENVELOPES = {
    # basic/index "_meta": "A request missing any required field is malformed; the server MUST reject it with
    # JSON-RPC error code -32602 (Invalid params). On HTTP, the response status MUST be 400 Bad Request."
    "no _meta": (_missing_meta, 400, -32602),
    "_meta not an object": (_meta_not_object, 400, -32602),
    "_meta without protocolVersion": (_without(META_VERSION), 400, -32602),
    "_meta without clientCapabilities": (_without(META_CAPABILITIES), 400, -32602),
    "clientCapabilities not an object": (_capabilities_not_object, 400, -32602),
    "unknown logLevel": (_bad_log_level, 400, -32602),
    # streamable-http "Protocol Version Header" / "Server Validation": -32020 HeaderMismatch, 400.
    "no MCP-Protocol-Version header": (_header("MCP-Protocol-Version", None), 400, -32020),
    "MCP-Protocol-Version differs from _meta": (_header("MCP-Protocol-Version", "2025-11-25"), 400, -32020),
    "no Mcp-Method header": (_header("Mcp-Method", None), 400, -32020),
    "Mcp-Method names another method": (_header("Mcp-Method", "prompts/list"), 400, -32020),
    # "Header values (such as method names) are case-sensitive."
    "Mcp-Method in another case": (_header("Mcp-Method", "TOOLS/LIST"), 400, -32020),
}


@pytest.mark.parametrize("case", list(BAD_ENVELOPES))
def test_a_malformed_envelope_or_header_is_refused_with_its_code(client, case):
    """basic/index "_meta" (-32602, 400) and streamable-http "Server Validation" (-32020 HeaderMismatch,
    400): the error names the request's id and the next request is served normally."""
    change, status, code = BAD_ENVELOPES[case]
    body = client.body("tools/list", request_id=f"bad-{case}")
    headers: dict[str, str | None] = {}
    change(client, body, headers)
    reply = client.send(body, headers=headers)
    error = assert_error(reply, status, code, f"bad-{case}")
    assert error["message"]
    still_fine(client)


def test_an_unsupported_version_lists_what_is_supported(client):
    """basic/versioning "Protocol Version Negotiation": UnsupportedProtocolVersionError, -32022, HTTP 400
    (streamable-http "Protocol Version Header"), data.supported and data.requested."""
    body = client.body("tools/list", request_id=42)
    body["params"]["_meta"][META_VERSION] = "2099-01-01"
    reply = client.send(body, headers={"MCP-Protocol-Version": "2099-01-01"})
    error = assert_error(reply, 400, -32022, 42)
    assert error["data"] == {"supported": [VERSION], "requested": "2099-01-01"}
    # server/discover too (a client probing with a version we do not speak)
    body = client.body("server/discover", request_id="d")
    body["params"]["_meta"][META_VERSION] = "2026-01-01"
    error = assert_error(client.send(body, headers={"MCP-Protocol-Version": "2026-01-01"}), 400, -32022, "d")
    assert error["data"] == {"supported": [VERSION], "requested": "2026-01-01"}
    still_fine(client)


TARGETS = {
    "tools/call": {"name": "echo", "arguments": {"message": "hi"}},
    "resources/read": {"uri": "test://static-text"},
    "prompts/get": {"name": "test_simple_prompt"},
}


@pytest.mark.parametrize("method", list(TARGETS))
@pytest.mark.parametrize("mcp_name", [None, "something-else", "=?base64?c29tZXRoaW5nLWVsc2U=?=", "=?base64?%%%?="])
def test_mcp_name_is_required_and_must_match(client, method, mcp_name):
    """streamable-http "Standard Request Headers": Mcp-Name is required for tools/call, resources/read and
    prompts/get; a missing, different (also once Base64-decoded) or undecodable value is -32020, 400."""
    body = client.body(method, TARGETS[method], request_id=7)
    reply = client.send(body, headers={"Mcp-Name": mcp_name})
    error = assert_error(reply, 400, -32020, 7)
    assert "Mcp-Name" in error["message"] or "Base64" in error["message"]
    still_fine(client)


@pytest.mark.parametrize("method", list(TARGETS))
def test_a_base64_sentinel_mcp_name_is_decoded(client, method):
    """streamable-http "Value Encoding": servers MUST decode `=?base64?...?=` before comparing to the body."""
    target = TARGETS[method]["name" if method != "resources/read" else "uri"]
    encoded = "=?base64?" + base64.b64encode(target.encode()).decode() + "?="
    reply = client.send(client.body(method, TARGETS[method], request_id="b64"), headers={"Mcp-Name": encoded})
    assert reply.status == 200, reply.response.text
    assert reply.final["id"] == "b64"
    assert reply.result["resultType"] == "complete"


def test_the_x_mcp_header_annotation_is_listed(client):
    """server/tools `x-mcp-header`: clients learn from tools/list which arguments to mirror into headers, so the
    annotation reaches them unchanged."""
    tools = {tool["name"]: tool for tool in walk(client)[2]}
    assert tools["test_header_param"]["inputSchema"]["properties"]["region"]["x-mcp-header"] == "Region"


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (None, 400),
        ("eu-north1", 400),
        ("=?base64?ZXUtbm9ydGgx?=", 400),
        ("US-WEST1", 400),
        ("us-west1", 200),
        ("=?base64?dXMtd2VzdDE=?=", 200),
    ],
    ids=["missing", "different", "different-base64", "other-case", "equal", "equal-base64"],
)
def test_mcp_param_headers_must_match_the_annotated_arguments(client, header, status):
    """streamable-http "Custom Headers from Tool Parameters" / "Server Behavior for Custom Headers": the
    fixture's test_header_param annotates `region` with x-mcp-header "Region"; a missing or different
    Mcp-Param-Region (compared after Base64 decoding) is -32020, 400."""
    body = client.body("tools/call", {"name": "test_header_param", "arguments": {"region": "us-west1"}}, request_id="p")
    reply = client.send(body, headers={"Mcp-Param-Region": header})
    if status == 200:
        assert reply.status == 200, reply.response.text
        assert reply.result["content"][0]["text"] == "region=us-west1"
    else:
        assert "Mcp-Param-region" in assert_error(reply, 400, -32020, "p")["message"]


def test_header_names_are_case_insensitive(client):
    """streamable-http "Case Sensitivity": header names compare case-insensitively."""
    body = client.body("tools/call", TARGETS["tools/call"], request_id="case")
    headers = {"accept": ACCEPT, "content-type": "application/json"}
    headers |= {"mcp-protocol-version": VERSION, "MCP-METHOD": "tools/call", "mCp-NaMe": "echo"}
    response = client.http.post(client.url, content=json.dumps(body).encode(), headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["result"]["content"][0]["text"] == "hi"


def test_header_values_with_surrounding_whitespace_are_accepted(gw):
    """RFC 9110 5.5: optional whitespace around a field value is not part of it (streamable-http "Request
    Metadata" headers are compared after it is removed)."""
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": "ws",
            "method": "tools/call",
            "params": {
                "name": "echo",
                "arguments": {"message": "spaced"},
                "_meta": {META_VERSION: VERSION, META_CAPABILITIES: {}},
            },
        }
    ).encode()
    head = (
        "POST /mcp HTTP/1.1\n"
        f"Host: {gw.url.removeprefix('http://')}\n"
        f"Authorization: Bearer {gw.token}\n"
        f"Accept: {ACCEPT}\n"
        "Content-Type: application/json\n"
        f"MCP-Protocol-Version:   {VERSION}  \n"
        "Mcp-Method: \t tools/call \t\n"
        "Mcp-Name:  echo \n"
        "Connection: close\n"
    )
    status, answer = raw_http(gw, head, body)
    assert status == 200, answer
    assert json.loads(answer)["result"]["content"][0]["text"] == "spaced"


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("no/such/method", {}),
        # changelog items 2, 4, 5: initialize, resources/(un)subscribe, ping and logging/setLevel are gone.
        ("initialize", {"protocolVersion": VERSION, "capabilities": {}, "clientInfo": {"name": "x", "version": "0"}}),
        ("ping", {}),
        ("logging/setLevel", {"level": "debug"}),
        ("resources/subscribe", {"uri": WATCHED}),
        ("resources/unsubscribe", {"uri": WATCHED}),
    ],
)
def test_unknown_and_removed_methods_are_404_method_not_found(client, method, params):
    """streamable-http "Protocol Version Header": "If the server does not implement the requested RPC method,
    it MUST respond with 404 Not Found and a JSON-RPC error with code -32601"."""
    reply = client.request(method, params, request_id=f"m-{method}")
    assert_error(reply, 404, -32601, f"m-{method}")
    still_fine(client)


@pytest.mark.parametrize("request_id", [None, True, 1.5, ["x"]], ids=["null", "bool", "float", "array"])
def test_a_request_id_must_be_a_string_or_an_integer(client, request_id):
    """basic/index "Requests": "Requests MUST include a string or integer ID"; "Unlike base JSON-RPC, the ID
    MUST NOT be null". An unreadable id is answered -32600 with id null ("Error Responses"), HTTP 400."""
    body = client.body("tools/list")
    body["id"] = request_id
    reply = client.send(body)
    assert reply.status == 400, reply.response.text
    assert reply.error["code"] == -32600
    assert reply.final["id"] is None
    still_fine(client)


def test_a_batch_is_refused(client):
    """streamable-http "Sending Messages" 4: the body is a single request or notification (no batching)."""
    reply = client.send(
        [client.body("tools/list")], headers={"MCP-Protocol-Version": VERSION, "Mcp-Method": "tools/list"}
    )
    assert reply.status == 400
    assert reply.error["code"] == -32600
    still_fine(client)


def test_a_body_that_is_not_json_is_a_parse_error(client):
    """JSON-RPC 2.0 (basic/index "Error Codes"): -32700 Parse error, id null; HTTP 400."""
    reply = client.send(client.body("tools/list"), raw=b'{"jsonrpc": "2.0", "id": 1, "method": ')
    assert reply.status == 400
    assert reply.error["code"] == -32700
    assert reply.final["id"] is None
    still_fine(client)


def test_session_era_headers_are_ignored(client):
    """streamable-http "Earlier Streamable HTTP Revisions": on the modern wire an Mcp-Session-Id header is
    ignored (no session id minted or echoed) and so is Last-Event-ID."""
    body = client.body("tools/list", request_id="nosession")
    reply = client.send(body, headers={"Mcp-Session-Id": "no-such-session", "Last-Event-ID": "stream:3"})
    assert reply.status == 200, reply.response.text
    assert reply.final["id"] == "nosession"
    assert "mcp-session-id" not in reply.response.headers


def test_a_json_rpc_response_body_is_refused(client):
    """streamable-http "Sending Messages" 4: "The client MUST NOT send JSON-RPC responses" -> 400."""
    reply = client.send(
        {"jsonrpc": "2.0", "id": "gw-1", "result": {}}, headers={"MCP-Protocol-Version": VERSION, "Mcp-Method": None}
    )
    assert reply.status == 400, reply.response.text
    assert reply.error["code"] == -32600
    still_fine(client)


def test_a_notification_is_accepted_with_202_and_no_body(client):
    """streamable-http "Sending Messages" 5: an accepted notification -> 202 Accepted, no body."""
    body = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "x", "_meta": client.meta()}}
    reply = client.send(body)
    assert reply.status == 202
    assert reply.response.content == b""
    still_fine(client)


def test_a_foreign_origin_is_403(client, gw):
    """streamable-http "Security & Endpoint" 1: an invalid Origin MUST get 403 (body: an id-less JSON-RPC
    error); the gateway's own origin is fine."""
    body = client.body("tools/list", request_id="o")
    reply = client.send(body, headers={"Origin": "http://evil.example"})
    assert reply.status == 403
    assert reply.final.get("id") is None
    assert client.send(body, headers={"Origin": gw.url}).status == 200
    still_fine(client)


def test_no_credentials_is_401_with_a_challenge(gw):
    """basic/authorization: a request without a token gets 401 and WWW-Authenticate (authentication on)."""
    anonymous = Modern(gw, auth=False)
    try:
        reply = anonymous.request("server/discover", request_id="anon")
        assert reply.status == 401
        assert "Bearer" in reply.response.headers["www-authenticate"]
        assert reply.error["code"] == -32600
        bad = Modern(gw, token="not-a-token")
        assert bad.request("server/discover").status == 401
        bad.close()
    finally:
        anonymous.close()


def test_get_and_delete_are_not_the_modern_wire(client):
    """streamable-http "Backward Compatibility": GET/DELETE without a session are refused (a modern-only
    server answers 405; this dual-era gateway keeps them for session clients and wants Mcp-Session-Id)."""
    for method in ("GET", "DELETE"):
        response = client.http.request(method, client.url, headers={"Accept": "text/event-stream"})
        assert 400 <= response.status_code < 500, (method, response.status_code)


# --------------------------------------------------------------------------------------------------------------
# 2. server/discover, resultType and cache hints, deterministic pagination, resource not found
# --------------------------------------------------------------------------------------------------------------


def test_server_discover(client):
    """server/discover (and basic/versioning): supportedVersions, capabilities, serverInfo in `_meta`,
    resultType complete, and cache hints (server/utilities/caching): ttlMs = GATEWAY_CACHE_TTL_MS and
    cacheScope "private" because answers are for authenticated callers."""
    reply = client.request("server/discover", request_id="discover-1")
    assert reply.status == 200
    assert reply.content_type.startswith("application/json")
    result = reply.result
    assert reply.final["id"] == "discover-1"
    assert result["resultType"] == "complete"
    assert result["supportedVersions"] == [VERSION]
    assert {"tools", "resources", "prompts"} <= set(result["capabilities"])
    assert result["capabilities"]["tools"].get("listChanged") is True
    info = result["_meta"][META_SERVER_INFO]
    assert info["name"] == "mcp-gateway"
    assert info["version"]
    assert result["ttlMs"] == CACHE_TTL_MS
    assert result["cacheScope"] == "private"


def test_discover_without_authentication_is_public(open_client):
    """server/utilities/caching "Cache Scope Field": with authentication off nothing is per caller, and
    GATEWAY_CACHE_TTL_MS=0 gives ttlMs 0 (">= 0", "immediately stale")."""
    result = open_client.request("server/discover").result
    assert result["cacheScope"] == "public"
    assert result["ttlMs"] == 0


@pytest.mark.parametrize(
    ("method", "params", "key"),
    [
        ("tools/list", {}, "tools"),
        ("prompts/list", {}, "prompts"),
        ("resources/list", {}, "resources"),
        ("resources/templates/list", {}, "resourceTemplates"),
        ("resources/read", {"uri": "test://static-text"}, "contents"),
        ("resources/read", {"uri": "test://template/7/data"}, "contents"),
    ],
)
@pytest.mark.parametrize("path", ["/mcp", "/servers/demo/mcp"])
def test_lists_and_reads_carry_result_type_and_cache_hints(gw, method, params, key, path):
    """server/utilities/caching "Cacheable Results": servers MUST include ttlMs and cacheScope on complete
    results of the lists and resources/read; basic/index: every result has resultType; serverInfo in _meta."""
    modern = Modern(gw, path)
    try:
        reply = modern.request(method, params, request_id=f"{method}-1")
        assert reply.status == 200, reply.response.text
        result = reply.result
        assert result["resultType"] == "complete"
        assert result[key]
        assert result["ttlMs"] == CACHE_TTL_MS
        assert result["cacheScope"] == "private"
        assert result["_meta"][META_SERVER_INFO]["name"] == "mcp-gateway"
    finally:
        modern.close()


def test_a_tool_result_has_result_type_complete(client):
    """basic/index "Result Responses": "The result MUST include a resultType field"."""
    reply = client.call("echo", {"message": "typed"}, request_id=5)
    assert reply.final["id"] == 5
    assert reply.result["resultType"] == "complete"
    assert reply.result["content"] == [{"type": "text", "text": "typed"}]
    assert reply.result["_meta"][META_SERVER_INFO]["name"] == "mcp-gateway"


def walk(client: Modern, method: str = "tools/list", key: str = "tools") -> tuple[list[str], list[dict], list[dict]]:
    """Every page of a list: (names in order, the page results, the items)."""
    names, pages, items, cursor = [], [], [], None
    for _ in range(100):
        reply = client.request(method, {"cursor": cursor} if cursor else {})
        assert reply.status == 200, reply.response.text
        pages.append(reply.result)
        items += reply.result[key]
        names += [item.get("name") or item.get("uri") for item in reply.result[key]]
        cursor = reply.result.get("nextCursor")
        if not cursor:
            return names, pages, items
    raise AssertionError("the cursor never ended")


def test_tools_list_is_deterministic_and_paginated(client):
    """server/tools (2026-07-28: the order of tools/list is deterministic) and server/utilities/pagination
    (opaque cursors; every page its own cacheable result with the same cacheScope: caching "Interaction
    with Pagination")."""
    first, pages, _ = walk(client)
    second, _, _ = walk(client)
    assert first == second
    assert len(first) == len(set(first)) > 5
    assert len(pages) > 1
    assert all(len(page["tools"]) <= 5 for page in pages)
    assert {page["cacheScope"] for page in pages} == {"private"}
    assert all(page["ttlMs"] == CACHE_TTL_MS and page["resultType"] == "complete" for page in pages)
    assert "nextCursor" not in pages[-1]


def test_an_unknown_cursor_is_invalid_params(client):
    """server/utilities/pagination: an invalid cursor is -32602 (400 on the modern wire)."""
    reply = client.request("tools/list", {"cursor": "not-a-cursor"}, request_id="cur")
    assert_error(reply, 400, -32602, "cur")


def test_reading_an_unknown_resource_is_invalid_params_with_the_uri(client):
    """server/resources "Error Handling" (SEP-2164): a resource that does not exist is -32602 with
    data.uri (never -32002 in 2026-07-28, basic/index "Error Codes"); 400 on HTTP."""
    reply = client.request("resources/read", {"uri": "test://no-such-thing"}, request_id="nf")
    error = assert_error(reply, 400, -32602, "nf")
    assert error["data"]["uri"] == "test://no-such-thing"
    still_fine(client)


def test_an_unknown_tool_is_invalid_params(client):
    """server/tools "Error Handling": an unknown tool is a protocol error, -32602."""
    reply = client.call("no_such_tool", request_id="nt")
    assert_error(reply, 400, -32602, "nt")


# --------------------------------------------------------------------------------------------------------------
# 3. Multi round-trip requests through a session-era upstream (basic/patterns/mrtr)
# --------------------------------------------------------------------------------------------------------------


def elicitation_round(client: Modern, message: str = "Who are you?", **kwargs: Any) -> dict[str, Any]:
    reply = client.call("test_elicitation", {"message": message}, capabilities=ELICITATION, **kwargs)
    assert reply.status == 200, reply.response.text
    result = reply.result
    assert result["resultType"] == "input_required", result
    return result


def retry(
    client: Modern,
    state: str,
    responses: Any,
    *,
    name: str = "test_elicitation",
    arguments: dict[str, Any] | None = None,
    capabilities: dict[str, Any] | None = None,
    request_id: Any = None,
) -> Reply:
    arguments = {"message": "Who are you?"} if arguments is None else arguments
    return client.call(
        name,
        arguments,
        inputResponses=responses,
        requestState=state,
        capabilities=ELICITATION if capabilities is None else capabilities,
        request_id=request_id,
    )


def test_an_elicitation_round_trip(client):
    """mrtr "InputRequiredResult" and "Basic Workflow": the upstream's elicitation/create becomes an
    input_required result (inputRequests keyed, requestState opaque, no cache hints: caching "Cacheable
    Results"); the retry with a new id, the answers and the requestState completes the same call."""
    first = client.call("test_elicitation", {"message": "Who are you?"}, capabilities=ELICITATION, request_id=1)
    assert first.status == 200
    assert first.final["id"] == 1
    result = first.result
    assert result["resultType"] == "input_required"
    assert "content" not in result
    assert "ttlMs" not in result
    assert "cacheScope" not in result
    assert isinstance(result["requestState"], str)
    assert result["requestState"]
    [(key, ask)] = result["inputRequests"].items()
    assert key == "user"  # the upstream's own name for its question
    assert ask["method"] == "elicitation/create"
    assert ask["params"]["message"] == "Who are you?"
    assert ask["params"]["requestedSchema"]["required"] == ["username", "email"]
    final = retry(client, result["requestState"], {key: USER}, request_id=2)
    assert final.status == 200, final.response.text
    assert final.final["id"] == 2
    assert final.result["resultType"] == "complete"
    assert "action=accept" in final.result["content"][0]["text"]
    assert "ada@example.com" in final.result["content"][0]["text"]


def test_input_responses_without_a_request_state_answer_the_question_they_name(client):
    """mrtr: a first request that already carries inputResponses (and no requestState of the gateway's) goes
    on with them: the session-era upstream's question of that key is answered with them, not asked again
    (the alpha suite's input-required-result-ignore-extra-params); keys nobody asks are ignored; an answer
    that is not a result object answers nothing, so its question is asked."""
    extra = {"unknown_extra_key": {"action": "accept", "content": {"foo": "bar"}}}
    reply = client.call(
        "test_elicitation", {"message": "Who?"}, capabilities=ELICITATION, inputResponses={"user": USER, **extra}
    )
    assert reply.status == 200, reply.response.text
    assert reply.result["resultType"] == "complete", reply.result
    assert "ada@example.com" in reply.result["content"][0]["text"]
    invalid = client.call(
        "test_elicitation", {"message": "Who?"}, capabilities=ELICITATION, inputResponses={"user": 12345}
    )
    assert invalid.result["resultType"] == "input_required"
    assert list(invalid.result["inputRequests"]) == ["user"]


def test_a_sampling_round_trip(client):
    """mrtr "InputRequests": sampling/createMessage asked the same way, answered with a CreateMessageResult."""
    sampling = {"sampling": {}}
    first = client.call("test_sampling", {"prompt": "What is the answer?"}, capabilities=sampling).result
    assert first["resultType"] == "input_required"
    [(key, ask)] = first["inputRequests"].items()
    assert ask["method"] == "sampling/createMessage"
    answer = {"role": "assistant", "content": {"type": "text", "text": "42"}, "model": "test"}
    final = retry(
        client,
        first["requestState"],
        {key: answer},
        name="test_sampling",
        arguments={"prompt": "What is the answer?"},
        capabilities=sampling,
    )
    assert final.result["resultType"] == "complete"
    assert final.result["content"][0]["text"] == "LLM response: 42"


def test_several_questions_and_several_rounds(client):
    """mrtr: questions asked together may share a round; every key asked is answered in the retry, until the
    call completes (here elicitation, sampling and roots of test_input_required_result_multiple_inputs)."""
    capabilities = {"elicitation": {}, "sampling": {}, "roots": {}}
    answers = {
        "elicitation/create": {"action": "accept", "content": {"name": "Ada"}},
        "sampling/createMessage": {"role": "assistant", "content": {"type": "text", "text": "Hi"}, "model": "m"},
        "roots/list": {"roots": [{"uri": "file:///work", "name": "work"}]},
    }
    arguments: dict[str, Any] = {}
    reply = client.call("test_input_required_result_multiple_inputs", arguments, capabilities=capabilities)
    asked: set[str] = set()
    for _ in range(5):
        result = reply.result
        if result["resultType"] == "complete":
            break
        asked |= set(result["inputRequests"])
        responses = {key: answers[ask["method"]] for key, ask in result["inputRequests"].items()}
        reply = retry(
            client,
            result["requestState"],
            responses,
            name="test_input_required_result_multiple_inputs",
            arguments=arguments,
            capabilities=capabilities,
        )
    assert asked == {"user_name", "greeting", "client_roots"}
    assert reply.result["content"][0]["text"] == "Hi Ada; roots: work <file:///work>"


def test_a_multi_round_call_and_a_used_request_state(client):
    """mrtr: a call may ask again after a retry (a second round, a new requestState). A requestState that
    already continued its round is refused (-32602, 400): "Servers for which a given requestState must be
    consumed at most once MUST enforce that invariant server-side" (the call it drives is in the gateway)."""
    name, arguments = "test_input_required_result_multi_round", {}
    first = client.call(name, arguments, capabilities=ELICITATION).result
    assert list(first["inputRequests"]) == ["step1"]
    step1 = {"step1": {"action": "accept", "content": {"name": "Ada"}}}
    second = retry(client, first["requestState"], step1, name=name, arguments=arguments).result
    assert second["resultType"] == "input_required"
    assert list(second["inputRequests"]) == ["step2"]
    assert second["requestState"] != first["requestState"]
    replay = retry(client, first["requestState"], step1, name=name, arguments=arguments, request_id="replay")
    error = assert_error(replay, 400, -32602, "replay")
    assert "already used" in error["message"]
    step2 = {"step2": {"action": "accept", "content": {"color": "blue"}}}
    final = retry(client, second["requestState"], step2, name=name, arguments=arguments)
    assert final.result["content"][0]["text"] == "Ada likes blue"


def test_a_prompt_asks_through_input_required(client):
    """mrtr "Supported Requests": prompts/get may answer input_required too."""
    params = {"name": "test_input_required_result_prompt"}
    first = client.request("prompts/get", params, capabilities=ELICITATION).result
    assert first["resultType"] == "input_required"
    [(key, ask)] = first["inputRequests"].items()
    assert ask["method"] == "elicitation/create"
    responses = {key: {"action": "accept", "content": {"context": "MCP"}}}
    final = client.request(
        "prompts/get",
        {**params, "inputResponses": responses, "requestState": first["requestState"]},
        capabilities=ELICITATION,
    )
    assert final.result["resultType"] == "complete"
    assert final.result["messages"][0]["content"]["text"] == "Answer using this context: MCP"


def test_a_tampered_request_state_is_refused(client):
    """mrtr "Server Requirements" 4: requestState is attacker-controlled input; its integrity is protected
    and state that fails verification is rejected (-32602, HTTP 400, saying why)."""
    state = elicitation_round(client)["requestState"]
    body, tag = state.split(".")
    for forged in (
        body + "." + ("A" if tag[0] != "A" else "B") + tag[1:],
        ("x" if body[0] != "x" else "y") + body[1:] + "." + tag,
        "not-a-request-state",
    ):
        reply = retry(client, forged, {"user": USER}, request_id="forged")
        error = assert_error(reply, 400, -32602, "forged")
        assert "requestState" in error["message"]
    error = assert_error(retry(client, body + ".AAAA", {"user": USER}, request_id=3), 400, -32602, 3)
    assert "signature" in error["message"]
    # the genuine state still continues its call
    assert retry(client, state, {"user": USER}).result["resultType"] == "complete"


def test_a_request_state_presented_by_another_user_is_refused(client, gw, eve_token):
    """mrtr "Server Requirements" 5: "the authenticated principal, rejecting state presented by a different
    principal"."""
    state = elicitation_round(client)["requestState"]
    eve = Modern(gw, token=eve_token)
    try:
        reply = retry(eve, state, {"user": USER}, request_id="eve")
        error = assert_error(reply, 400, -32602, "eve")
        assert "another caller" in error["message"]
    finally:
        eve.close()
    assert retry(client, state, {"user": USER}).result["resultType"] == "complete"


def test_a_request_state_replayed_after_the_call_ended_is_refused(client):
    """mrtr "Server Requirements" 5 (replay): once its call completed, its requestState continues nothing."""
    state = elicitation_round(client)["requestState"]
    assert retry(client, state, {"user": USER}).result["resultType"] == "complete"
    error = assert_error(retry(client, state, {"user": USER}, request_id="again"), 400, -32602, "again")
    assert "ended or expired" in error["message"]


@pytest.mark.parametrize(
    ("name", "arguments"),
    [("test_elicitation", {"message": "Someone else?"}), ("echo", {"message": "Who are you?"})],
    ids=["other-arguments", "other-tool"],
)
def test_a_request_state_for_another_request_is_refused(client, name, arguments):
    """mrtr "Server Requirements" 5: "an identifier for the originating request, e.g. the method name and a
    digest of its salient parameters, rejecting state presented on a request that does not match"."""
    state = elicitation_round(client)["requestState"]
    reply = retry(client, state, {"user": USER}, name=name, arguments=arguments, request_id="other")
    error = assert_error(reply, 400, -32602, "other")
    assert "different request" in error["message"]
    assert retry(client, state, {"user": USER}).result["resultType"] == "complete"


def test_a_request_state_presented_at_another_endpoint_is_refused(client, gw):
    """mrtr "Server Requirements" 5: state issued for a call on /mcp does not continue anything on
    /servers/demo/mcp (another endpoint, another catalog view)."""
    state = elicitation_round(client)["requestState"]
    demo = Modern(gw, "/servers/demo/mcp")
    try:
        error = assert_error(retry(demo, state, {"user": USER}, request_id="elsewhere"), 400, -32602, "elsewhere")
        assert "another caller" in error["message"]
    finally:
        demo.close()
    assert retry(client, state, {"user": USER}).result["resultType"] == "complete"


def test_a_request_state_continues_its_round_once_even_when_retried_concurrently(gw, gw_stub, client):
    """mrtr "Server Requirements" 5, Warning: "Servers for which a given requestState must be consumed at most
    once (e.g., one-time redemptions) MUST enforce that invariant server-side". The gateway does enforce it
    (the call behind a state lives in the gateway; a used state is refused: see
    test_a_multi_round_call_and_a_used_request_state), so a second retry with the same state, sent while the
    first is still running, must be refused as well rather than join the same round. The stub's stub://held
    read waits (after getting the client's answer) until the test releases it."""
    stub = gw_stub
    first = client.request("resources/read", {"uri": "stub://held"}, capabilities=ELICITATION).result
    assert first["resultType"] == "input_required"
    [key] = first["inputRequests"]
    params = {
        "uri": "stub://held",
        "inputResponses": {key: {"action": "accept", "content": {}}},
        "requestState": first["requestState"],
    }
    replies: dict[str, Reply] = {}

    def send_retry(name: str) -> None:
        other = Modern(gw)
        try:
            replies[name] = other.request("resources/read", params, capabilities=ELICITATION, request_id=name)
        finally:
            other.close()

    answered = len(stub.ids("answered"))
    threads = {name: threading.Thread(target=send_retry, args=(name,)) for name in ("first", "second")}
    threads["first"].start()
    wait_for(lambda: len(stub.ids("answered")) > answered, "the first retry to reach the upstream")
    threads["second"].start()
    threads["second"].join(timeout=3)  # refused at once, or stuck in the running round
    stub.release()
    for thread in threads.values():
        thread.join(timeout=30)
    assert replies["first"].result["contents"][0]["text"] == "released: accept"
    error = assert_error(replies["second"], 400, -32602, "second")
    assert "requestState" in error["message"]


def test_an_expired_request_state_is_refused(open_client):
    """mrtr "Server Requirements" 5: "a short expiry (TTL), rejecting state presented after it lapses"
    (GATEWAY_REQUEST_STATE_TTL=1)."""
    state = elicitation_round(open_client)["requestState"]
    time.sleep(1.3)
    error = assert_error(retry(open_client, state, {"user": USER}, request_id="late"), 400, -32602, "late")
    assert "expired" in error["message"]
    # the parked call was dropped with it: the one slot for parked calls is free again
    fresh = elicitation_round(open_client)
    assert retry(open_client, fresh["requestState"], {"user": USER}).result["resultType"] == "complete"


def test_an_abandoned_call_is_stopped_upstream_when_its_state_expires(short, open_client):
    """mrtr "Server Requirements" 8: "Servers MUST NOT assume that clients will fulfill the inputRequests or
    retry the original request": a call whose client never comes back is dropped after
    GATEWAY_REQUEST_STATE_TTL (1 s here) and its upstream request cancelled (notifications/cancelled)."""
    before = set(short.stub.ids("asked"))
    first = open_client.request("resources/read", {"uri": "stub://asks"}, capabilities=ELICITATION).result
    assert first["resultType"] == "input_required"
    [read_id] = set(short.stub.ids("asked")) - before
    wait_for(lambda: read_id in short.stub.ids("cancelled"), "the expired call to be cancelled upstream")
    # and its slot (GATEWAY_MAX_PARKED_CALLS=1) is free again
    assert open_client.call("echo", {"message": "free"}).result["content"][0]["text"] == "free"


@pytest.mark.parametrize("responses", [["user"], "user", 3, True])
def test_input_responses_that_are_not_an_object_are_invalid_params(client, responses):
    """mrtr "Error Handling": servers SHOULD validate that inputResponses is an InputResponses object
    (a map); anything else is a protocol error, -32602."""
    state = elicitation_round(client)["requestState"]
    error = assert_error(retry(client, state, responses, request_id="shape"), 400, -32602, "shape")
    assert "inputResponses" in error["message"]
    assert retry(client, state, {"user": USER}).result["resultType"] == "complete"


def test_an_answer_that_is_not_a_result_object_is_invalid_params(client):
    """mrtr "InputResponses": each value is the client's result for that request (an object)."""
    state = elicitation_round(client)["requestState"]
    error = assert_error(retry(client, state, {"user": "accept"}, request_id="val"), 400, -32602, "val")
    assert "user" in error["message"]
    assert retry(client, state, {"user": USER}).result["resultType"] == "complete"


def test_a_retry_answering_the_wrong_key_is_asked_again(client):
    """mrtr "Error Handling": unknown keys are ignored, and when the needed answer is missing "the server
    SHOULD respond with a new InputRequiredResult requesting the missing information again"."""
    first = elicitation_round(client)
    again = retry(client, first["requestState"], {"someone-else": USER}).result
    assert again["resultType"] == "input_required"
    assert list(again["inputRequests"]) == ["user"]
    assert again["inputRequests"]["user"] == first["inputRequests"]["user"]
    final = retry(client, again["requestState"], {"user": USER, "extra": {"ignored": True}})
    assert final.result["resultType"] == "complete"


@pytest.mark.parametrize(
    ("tool", "arguments", "capabilities", "required"),
    [
        ("test_elicitation", {"message": "?"}, {}, {"elicitation": {}}),
        ("test_elicitation", {"message": "?"}, {"elicitation": {"url": {}}}, {"elicitation": {"form": {}}}),
        ("test_sampling", {"prompt": "?"}, ELICITATION, {"sampling": {}}),
        ("test_input_required_result_list_roots", {}, {"sampling": {}}, {"roots": {}}),
    ],
    ids=["elicitation", "url-mode-only", "sampling", "roots"],
)
def test_a_client_without_the_capability_gets_missing_capability(client, tool, arguments, capabilities, required):
    """basic/index "_meta": a request that needs an undeclared capability gets
    MissingRequiredClientCapabilityError, -32021, with data.requiredCapabilities, HTTP 400; mrtr "Server
    Requirements" 7: no input request is sent that the client did not declare (a client declaring only URL-mode
    elicitation gets no form)."""
    reply = client.call(tool, arguments, capabilities=capabilities, request_id="nocap")
    error = assert_error(reply, 400, -32021, "nocap")
    assert error["data"]["requiredCapabilities"] == required
    still_fine(client)


@pytest.mark.parametrize("token", ["my-token", 17])
def test_progress_arrives_on_the_response_stream(client, token):
    """basic/patterns/progress and streamable-http "Receiving Messages": with a progressToken the answer is
    an SSE stream (X-Accel-Buffering: no) carrying that request's notifications/progress, then the response."""
    body = client.body("tools/call", {"name": "test_tool_with_progress", "arguments": {}}, request_id="p")
    body["params"]["_meta"]["progressToken"] = token
    reply = client.send(body)
    assert reply.status == 200
    assert reply.content_type.startswith("text/event-stream")
    assert reply.response.headers.get("x-accel-buffering") == "no"
    progress = [m["params"] for m in reply.notifications if m["method"] == "notifications/progress"]
    assert [p["progress"] for p in progress] == [0, 50, 100]
    assert [p["progressToken"] for p in progress] == [token] * 3
    assert reply.final["id"] == "p"
    assert reply.result["resultType"] == "complete"
    # without a token: one JSON response, no notifications
    plain = client.call("test_tool_with_progress", request_id="np")
    assert plain.content_type.startswith("application/json")
    assert plain.result["content"][0]["text"] == "Tool with progress executed successfully"


@pytest.mark.parametrize(("level", "expected"), [(None, 0), ("debug", 1), ("info", 1), ("error", 0)])
def test_log_messages_only_when_the_request_asks(client, level, expected):
    """server/utilities/logging "Per-request log level": "The server MUST NOT emit notifications/message for
    a request that does not include this field"; with it, messages at or above the level arrive on that
    request's stream."""
    body = client.body("tools/call", {"name": "test_logging_tool", "arguments": {}}, request_id="log")
    if level is not None:
        body["params"]["_meta"][META_LOG_LEVEL] = level
    reply = client.send(body)
    assert reply.status == 200
    logs = [m for m in reply.notifications if m["method"] == "notifications/message"]
    assert len(logs) == expected, reply.messages
    if expected:
        assert logs[0]["params"]["level"] == "info"
        assert logs[0]["params"]["data"] == "test_logging_tool ran"
    assert reply.result["content"][0]["text"] == "Logged one message"


def test_parked_calls_are_bounded(open_client):
    """GATEWAY_MAX_PARKED_CALLS=1: while one call waits for its client, another call is refused with a
    JSON-RPC error (not left hanging); once the first completes, calls are served again."""
    first = elicitation_round(open_client)
    refused = open_client.call("echo", {"message": "second"}, request_id="full")
    assert refused.final["id"] == "full"
    assert "Too many calls" in refused.error["message"]
    assert retry(open_client, first["requestState"], {"user": USER}).result["resultType"] == "complete"
    assert open_client.call("echo", {"message": "second"}).result["content"][0]["text"] == "second"


def test_closing_the_stream_cancels_the_call(short, open_client):
    """streamable-http "Cancellation": "Closing the SSE response stream MUST be treated by the server as
    cancellation of that request"; the gateway stops the upstream call (a session-era upstream is sent
    notifications/cancelled for it, basic/patterns/cancellation) and releases the call's slot."""
    body = open_client.body("tools/call", {"name": "stub_slow", "arguments": {}}, request_id="slow")
    body["params"]["_meta"]["progressToken"] = "slow-token"
    before = len(short.stub.ids("started"))
    with open_client.stream(body) as stream:
        progress = stream.next()  # the upstream has the call
        assert progress["method"] == "notifications/progress"
        assert progress["params"]["progressToken"] == "slow-token"
        wait_for(lambda: len(short.stub.ids("started")) > before, "the upstream to record the call")
    upstream_id = short.stub.ids("started")[-1]
    wait_for(lambda: upstream_id in short.stub.ids("cancelled"), "notifications/cancelled at the upstream")
    # the cancelled call no longer holds the gateway's only parked-call slot (GATEWAY_MAX_PARKED_CALLS=1)
    assert open_client.call("stub_quick").result["content"][0]["text"] == "quick"
    assert open_client.call("echo", {"message": "after"}).result["content"][0]["text"] == "after"


def test_a_resource_read_can_ask_the_client(open_client):
    """mrtr "Supported Requests": resources/read may answer input_required; the completed read carries the
    cache hints of server/utilities/caching."""
    first = open_client.request("resources/read", {"uri": "stub://asks"}, capabilities=ELICITATION).result
    assert first["resultType"] == "input_required"
    [(key, ask)] = first["inputRequests"].items()
    assert ask["method"] == "elicitation/create"
    final = open_client.request(
        "resources/read",
        {
            "uri": "stub://asks",
            "inputResponses": {key: {"action": "accept", "content": {}}},
            "requestState": first["requestState"],
        },
        capabilities=ELICITATION,
    )
    assert final.result["resultType"] == "complete"
    assert final.result["contents"][0]["text"] == "answer: accept"
    assert final.result["ttlMs"] == 0
    assert final.result["cacheScope"] == "public"


def test_an_input_required_read_carries_no_cache_hints(open_client):
    """server/utilities/caching "Cacheable Results": "Interim results with resultType: input_required ... are
    not cacheable and carry no caching hints"."""
    first = open_client.request("resources/read", {"uri": "stub://asks"}, capabilities=ELICITATION).result
    try:
        assert first["resultType"] == "input_required"
        assert "ttlMs" not in first, first
        assert "cacheScope" not in first, first
    finally:  # complete it, so the one parked-call slot is free for the next test
        [key] = first["inputRequests"]
        open_client.request(
            "resources/read",
            {
                "uri": "stub://asks",
                "inputResponses": {key: {"action": "decline"}},
                "requestState": first["requestState"],
            },
            capabilities=ELICITATION,
        )


# --------------------------------------------------------------------------------------------------------------
# 4. subscriptions/listen (basic/patterns/subscriptions)
# --------------------------------------------------------------------------------------------------------------


def expect(stream: EventStream, method: str, subscription: Any) -> dict[str, Any]:
    message = stream.next()
    assert message.get("method") == method, message
    assert "id" not in message
    assert message["params"]["_meta"][META_SUBSCRIPTION_ID] == subscription
    return message["params"]


def test_listen_acknowledges_first_with_the_subscription_id(client):
    """subscriptions "Acknowledgment": the first message is notifications/subscriptions/acknowledged with the
    listen request's id in _meta; its filter is what the server agreed to honour (an unknown URI is left
    out). streamable-http "Receiving Messages": the stream is SSE with X-Accel-Buffering: no."""
    wanted = {"toolsListChanged": True, "resourceSubscriptions": [WATCHED, "test://no-such-resource"]}
    with client.listen(wanted, request_id="sub-1") as stream:
        assert stream.response.status_code == 200
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        assert stream.response.headers.get("x-accel-buffering") == "no"
        ack = expect(stream, "notifications/subscriptions/acknowledged", "sub-1")
        assert ack["notifications"] == {"toolsListChanged": True, "resourceSubscriptions": [WATCHED]}
    with client.listen({"promptsListChanged": True}, request_id=99) as stream:
        ack = expect(stream, "notifications/subscriptions/acknowledged", 99)
        assert ack["notifications"] == {"promptsListChanged": True}


def test_listen_needs_a_filter(client):
    """subscriptions "Opening a Stream": the request carries a notifications filter; without one -32602."""
    reply = client.request("subscriptions/listen", {}, request_id="nofilter")
    assert_error(reply, 400, -32602, "nofilter")


def test_listen_delivers_only_what_each_stream_asked_for(gw, client):
    """subscriptions "Opening a Stream": "The server MUST NOT send notification types the client has not
    explicitly requested"; "Receiving Notifications": each carries the subscription id. Catalog changes made
    through the REST API, an upstream's own list change, and an upstream resource update all arrive; the
    request-scoped progress and log notifications never do (streamable-http "Receiving Messages")."""
    tools_and_resource = {"toolsListChanged": True, "resourceSubscriptions": [WATCHED]}
    with (
        client.listen(tools_and_resource, request_id="A") as a,
        client.listen({"promptsListChanged": True}, request_id=7) as b,
    ):
        expect(a, "notifications/subscriptions/acknowledged", "A")
        expect(b, "notifications/subscriptions/acknowledged", 7)

        # a tool added through the REST API: only A hears of it
        status, tool = gw.api("POST", "/api/tools", {"name": "added_by_rest", "gateway": "dead"})
        assert status == 201, tool
        expect(a, "notifications/tools/list_changed", "A")
        # a prompt added: only B; B's next message proves no tools/list_changed went to it before
        status, prompt = gw.api("POST", "/api/prompts", {"name": "added_prompt", "template": "Hello"})
        assert status == 201, prompt
        expect(b, "notifications/prompts/list_changed", 7)

        # the tool disabled with PATCH: A again
        status, _ = gw.api("PATCH", f"/api/tools/{tool['id']}", {"enabled": False})
        assert status == 200
        expect(a, "notifications/tools/list_changed", "A")

        # request-scoped notifications stay on their own request's stream
        body = client.body("tools/call", {"name": "test_tool_with_progress", "arguments": {}})
        body["params"]["_meta"] |= {"progressToken": "t", META_LOG_LEVEL: "debug"}
        assert client.send(body).result["resultType"] == "complete"

        # the upstream changes its own tool list (a session-era list_changed the gateway follows)
        assert "now listed" in client.call("test_trigger_tool_change").result["content"][0]["text"]
        expect(a, "notifications/tools/list_changed", "A")
        names, _, _ = walk(client)
        assert "test_dynamic_tool" in names

        # the upstream updates the watched resource
        client.call("test_trigger_resource_update")
        assert expect(a, "notifications/resources/updated", "A")["uri"] == WATCHED

        # and back: the dynamic tool goes away
        assert "now gone" in client.call("test_trigger_tool_change").result["content"][0]["text"]
        expect(a, "notifications/tools/list_changed", "A")

        # B asked for prompts only: the next thing it hears is the next prompt change
        status, _ = gw.api("PATCH", f"/api/prompts/{prompt['id']}", {"enabled": False})
        assert status == 200
        expect(b, "notifications/prompts/list_changed", 7)
    names, _, _ = walk(client)
    assert "test_dynamic_tool" not in names


def test_closing_a_listen_stream_releases_it(client):
    """subscriptions "Cancellation": the client ends a subscription by closing the stream; a new listen for the
    same resource works afterwards and hears the next update (the gateway followed the resource upstream
    again after the last listener left)."""
    for round_ in range(2):
        with client.listen({"resourceSubscriptions": [WATCHED]}, request_id=f"again-{round_}") as stream:
            ack = expect(stream, "notifications/subscriptions/acknowledged", f"again-{round_}")
            assert ack["notifications"] == {"resourceSubscriptions": [WATCHED]}
            client.call("test_trigger_resource_update")
            assert expect(stream, "notifications/resources/updated", f"again-{round_}")["uri"] == WATCHED
    still_fine(client)
