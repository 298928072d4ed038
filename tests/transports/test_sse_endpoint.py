"""The legacy HTTP+SSE server endpoint (MCP 2024-11-05) against a live gateway, with real clients: the
official `mcp` SDK's `sse_client`, the Inspector CLI, and hand-made HTTP for the transport's rules.

Spec: 2024-11-05 basic/transports "HTTP with SSE" (the `endpoint` event, POSTed messages, every
server message as `event: message`); 2025-11-25 basic/lifecycle (initialize first, version
negotiation), basic/transports#security-warning (Origin), basic/utilities/progress,
client/elicitation, client/sampling, server/tools#list-changed-notification.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import AsyncIterator

import httpx2
import mcp.types as types
import pytest
from mcp import Client
from mcp.client.sse import sse_client

from tests.fixtures.servers import running_upstream
from tests.live_gateway import start_live_gateway
from tests.tools import ensure_node_tools, inspector_cmd

MAX_BODY = 65536
CLIENT_INFO = {"name": "raw-sse-test", "version": "0"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """A gateway (authentication on, 1 s keep-alives, 64 KiB bodies) with the upstream fixture registered
    as 'fx', a virtual server 'demo' of it, and a second user 'eve'."""
    with (
        running_upstream("streamable-http", era="auto") as upstream,
        start_live_gateway(
            tmp_path_factory.mktemp("sse"), GATEWAY_SSE_KEEPALIVE="1", GATEWAY_MAX_BODY_BYTES=str(MAX_BODY)
        ) as live,
    ):
        assert "Registered 'fx'" in live.manage("gateway_add", "fx", "--url", upstream.url)
        live.manage("server_add", "demo", "--gateway", "fx")
        live.manage(
            "shell",
            "-c",
            "from django.contrib.auth.models import User; User.objects.create_user('eve', password='eve-password-1')",
        )
        live.eve_token = live.manage("issue_token", "eve").strip().splitlines()[-1]
        yield live
        log = live.log.read_text() if live.log else ""
        assert "Traceback" not in log, log[-5000:]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sdk(gateway, server: str | None = "demo", mode: str = "legacy", **options) -> Client:
    url = f"{gateway.url}/servers/{server}/sse" if server else f"{gateway.url}/sse"
    return Client(sse_client(url, headers=auth(gateway.token), timeout=30), mode=mode, **options)


class RawSse:
    """One stream opened by hand: its events in a queue, and POSTs to its message URL."""

    def __init__(self, http: httpx2.AsyncClient, base: str) -> None:
        self.http, self.base = http, base
        self.events: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.comments: list[str] = []
        self.endpoint = ""
        self.status = 0

    async def post(self, body=None, *, raw: bytes | None = None, headers: dict | None = None, url: str | None = None):
        content = raw if raw is not None else json.dumps(body).encode()
        merged = {"Content-Type": "application/json", **(headers or {})}
        return await self.http.post(url or self.base + self.endpoint, content=content, headers=merged)

    async def message(self, timeout: float = 10) -> dict:
        while True:
            event, data = await asyncio.wait_for(self.events.get(), timeout)
            if event == "message":
                return json.loads(data)

    async def answer(self, request_id, timeout: float = 10) -> dict:
        """The response to `request_id` (other messages on the way are skipped)."""
        while True:
            message = await self.message(timeout)
            if message.get("id") == request_id and "method" not in message:
                return message

    async def request(self, method: str, params: dict | None = None, request_id: int = 7) -> dict:
        body = {"jsonrpc": "2.0", "id": request_id, "method": method, **({"params": params} if params else {})}
        response = await self.post(body)
        assert response.status_code == 202, response.text
        return await self.answer(request_id)

    async def initialize(self, version: str = "2025-11-25") -> dict:
        params = {"protocolVersion": version, "capabilities": {}, "clientInfo": CLIENT_INFO}
        answer = await self.request("initialize", params, request_id=1)
        assert (await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})).status_code == 202
        return answer


@contextlib.asynccontextmanager
async def raw_stream(gateway, path: str = "/servers/demo/sse", token: str | None = None) -> AsyncIterator[RawSse]:
    async with httpx2.AsyncClient(headers=auth(token or gateway.token), timeout=20) as http:
        raw = RawSse(http, gateway.url)

        async def read(response) -> None:
            event, data = "message", []
            async for line in response.aiter_lines():
                if line.startswith(":"):
                    raw.comments.append(line)
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif not line:
                    if data:
                        await raw.events.put((event, "\n".join(data)))
                    event, data = "message", []

        async with http.stream("GET", gateway.url + path, headers={"Accept": "text/event-stream"}) as response:
            raw.status = response.status_code
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")
            reader = asyncio.ensure_future(read(response))
            try:
                event, data = await asyncio.wait_for(raw.events.get(), 10)
                assert event == "endpoint"
                raw.endpoint = data
                yield raw
            finally:
                reader.cancel()


# -- the transport ------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "prefix"), [("/sse", "/message"), ("/servers/demo/sse", "/servers/demo/message")])
async def test_the_stream_starts_with_the_endpoint_event(gateway, path, prefix):
    """2024-11-05 transports: "the server MUST send an endpoint event containing a URI for the client to use
    for sending messages"; the session id is in it."""
    async with raw_stream(gateway, path) as raw:
        assert raw.endpoint.startswith(prefix + "?session_id=")
        assert len(raw.endpoint.split("=", 1)[1]) >= 32


@pytest.mark.parametrize("version", ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"])
async def test_initialize_is_answered_on_the_stream_with_the_negotiated_version(gateway, version):
    """The POST is accepted with 202 and the InitializeResult arrives on the stream as event: message."""
    async with raw_stream(gateway) as raw:
        answer = await raw.initialize(version)
        assert answer["result"]["protocolVersion"] == version
        assert answer["result"]["capabilities"]["tools"] == {"listChanged": True}
        listed = await raw.request("tools/list", request_id=2)
        assert "echo" in {tool["name"] for tool in listed["result"]["tools"]}


async def test_an_unknown_version_is_offered_the_newest(gateway):
    async with raw_stream(gateway) as raw:
        assert (await raw.initialize("1999-01-01"))["result"]["protocolVersion"] == "2025-11-25"


async def test_requests_before_initialize_are_refused_but_ping_is_answered(gateway):
    """basic/lifecycle: initialize MUST be the first interaction (ping is allowed before it)."""
    async with raw_stream(gateway) as raw:
        early = await raw.request("tools/list", request_id=3)
        assert early["error"]["code"] == -32600
        assert "initialize" in early["error"]["message"]
        assert (await raw.request("ping", request_id=4))["result"] == {}
        await raw.initialize()
        params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": CLIENT_INFO}
        again = await raw.request("initialize", params, request_id=5)
        assert again["error"]["code"] == -32600


async def test_keep_alive_comments_flow_on_an_idle_stream(gateway):
    """GATEWAY_SSE_KEEPALIVE=1: comments arrive while nothing else does."""
    async with raw_stream(gateway) as raw:
        await asyncio.sleep(2.5)
        assert ": keep-alive" in raw.comments


async def test_closing_the_stream_ends_the_session(gateway):
    """The session lives as long as its stream: afterwards its message URL is unknown (404)."""
    async with raw_stream(gateway) as raw:
        await raw.initialize()
        endpoint = raw.endpoint
    await asyncio.sleep(0.5)
    async with httpx2.AsyncClient(headers=auth(gateway.token), timeout=20) as http:
        response = await http.post(gateway.url + endpoint, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == -32600


# -- bad input --------------------------------------------------------------------------------------


async def test_the_stream_needs_credentials_a_served_host_and_an_allowed_origin(gateway):
    """401 with a WWW-Authenticate challenge; 403 for a foreign Origin; 421 for a Host not served."""
    async with httpx2.AsyncClient(timeout=20) as http:
        url = gateway.url + "/servers/demo/sse"
        anonymous = await http.get(url, headers={"Accept": "text/event-stream"})
        assert anonymous.status_code == 401
        assert "Bearer" in anonymous.headers["www-authenticate"]
        assert anonymous.json()["error"]["code"] == -32600
        foreign = await http.get(url, headers={**auth(gateway.token), "Origin": "http://evil.example"})
        assert foreign.status_code == 403
        rebinding = await http.get(url, headers={**auth(gateway.token), "Host": "evil.example"})
        assert rebinding.status_code == 421
        own = gateway.url  # the gateway's own origin is fine
        async with http.stream("GET", url, headers={**auth(gateway.token), "Origin": own}) as response:
            assert response.status_code == 200


async def test_wrong_methods_accept_and_unknown_servers(gateway):
    async with httpx2.AsyncClient(headers=auth(gateway.token), timeout=20) as http:
        assert (await http.post(gateway.url + "/sse", json={})).status_code == 405
        wrong = await http.get(gateway.url + "/message?session_id=x")
        assert wrong.status_code == 405
        assert wrong.headers["allow"] == "POST"
        assert (await http.get(gateway.url + "/sse", headers={"Accept": "application/json"})).status_code == 406
        missing = await http.get(gateway.url + "/servers/nowhere/sse", headers={"Accept": "text/event-stream"})
        assert missing.status_code == 404
        assert "nowhere" in missing.json()["error"]["message"]


async def test_unknown_missing_and_foreign_session_ids(gateway):
    """A session id that is unknown, belongs to another user, or to another endpoint is 404; none is 400."""
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    async with raw_stream(gateway) as raw:
        await raw.initialize()
        session_id = raw.endpoint.split("=", 1)[1]
        assert (await raw.post(ping, url=gateway.url + "/servers/demo/message?session_id=nope")).status_code == 404
        assert (await raw.post(ping, url=gateway.url + "/servers/demo/message")).status_code == 400
        assert (await raw.post(ping, url=gateway.url + f"/message?session_id={session_id}")).status_code == 404
        stolen = await raw.post(ping, headers=auth(gateway.eve_token))
        assert stolen.status_code == 404
        # the owner's session is untouched by all that
        assert (await raw.request("ping", request_id=9))["result"] == {}


async def test_body_errors_are_precise_and_the_session_stays_usable(gateway):
    """Malformed JSON -32700, a bad envelope -32600 (with its id), a batch -32600, all 400; a non-JSON
    Content-Type 415; a body over GATEWAY_MAX_BODY_BYTES 413. None of them ends the session."""
    async with raw_stream(gateway) as raw:
        await raw.initialize()
        malformed = await raw.post(raw=b'{"jsonrpc": "2.0", "id": 1, "method": ')
        assert malformed.status_code == 400
        assert malformed.json()["error"]["code"] == -32700
        envelope = await raw.post({"jsonrpc": "1.0", "id": 12, "method": "ping"})
        assert envelope.status_code == 400
        assert envelope.json() == {
            "jsonrpc": "2.0",
            "id": 12,
            "error": {"code": -32600, "message": 'Invalid Request: "jsonrpc" must be "2.0".'},
        }
        batch = await raw.post([{"jsonrpc": "2.0", "id": 1, "method": "ping"}])
        assert batch.status_code == 400
        assert batch.json()["error"]["code"] == -32600
        text = await raw.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers={"Content-Type": "text/plain"})
        assert text.status_code == 415
        huge = await raw.post({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "x" * MAX_BODY}})
        assert huge.status_code == 413
        unknown = await raw.request("no/such/method", request_id=21)
        assert unknown["error"]["code"] == -32601
        assert (await raw.request("ping", request_id=22))["result"] == {}


# -- real clients -------------------------------------------------------------------------------------


async def test_the_python_sdk_lists_calls_reads_and_renders(gateway):
    """mcp.client.sse.sse_client with mcp.Client(mode="legacy"): a whole conversation over the stream."""
    async with sdk(gateway) as client:
        assert client.protocol_version == "2025-11-25"
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"echo", "test_tool_with_progress", "test_elicitation", "test_sampling"} <= names
        assert (await client.call_tool("echo", {"message": "over sse"})).content[0].text == "over sse"
        assert (await client.read_resource("test://static-text")).contents[0].text
        assert (await client.get_prompt("test_prompt_with_arguments", {"arg1": "a", "arg2": "b"})).messages
        assert (await client.call_tool("test_error_handling", {})).is_error


async def test_the_python_sdk_in_auto_mode_falls_back_to_initialize(gateway):
    """mcp 2.x probes server/discover first; the session transport refuses it and the client initializes."""
    async with sdk(gateway, server=None, mode="auto") as client:
        assert client.protocol_version == "2025-11-25"
        assert (await client.call_tool("echo", {"message": "auto"})).content[0].text == "auto"


async def test_progress_arrives_on_the_stream(gateway):
    """basic/utilities/progress: the upstream's progress reaches the client's callback, in order."""
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with sdk(gateway) as client:
        result = await client.call_tool("test_tool_with_progress", {}, progress_callback=on_progress)
    assert not result.is_error
    assert seen == [0, 50, 100]


async def test_an_elicitation_and_a_sampling_round_trip(gateway):
    """client/elicitation and client/sampling: the upstream's requests arrive on the stream, the client's
    answers are POSTed to the message URL, and the calls complete."""
    asked: list[str] = []

    async def elicit(context, params):
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"username": "ada", "email": "ada@example.com"})

    async def sample(context, params):
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="42"), model="test"
        )

    async with sdk(gateway, elicitation_callback=elicit, sampling_callback=sample) as client:
        elicited = await client.call_tool("test_elicitation", {"message": "Who are you?"})
        sampled = await client.call_tool("test_sampling", {"prompt": "What is the answer?"})
    assert asked == ["Who are you?"]
    assert "accept" in elicited.content[0].text
    assert "ada" in elicited.content[0].text
    assert "42" in sampled.content[0].text


async def test_list_changed_reaches_the_stream(gateway):
    """server/tools#list-changed-notification: an upstream's list change, re-read by the gateway, and a
    change made through the REST API both arrive on the stream."""
    changed = asyncio.Event()

    async def on_message(message) -> None:
        if getattr(getattr(message, "root", message), "method", None) == "notifications/tools/list_changed":
            changed.set()

    async with sdk(gateway, message_handler=on_message) as client:
        before = {tool.name for tool in (await client.list_tools()).tools}
        await client.call_tool("test_trigger_tool_change", {})
        await asyncio.wait_for(changed.wait(), 10)
        after = {tool.name for tool in (await client.list_tools()).tools}
        assert after ^ before == {"test_dynamic_tool"}
        changed.clear()
        await client.call_tool("test_trigger_tool_change", {})  # back as it was
        # ...and settled before the next part: a late list_changed of this re-read must not be taken for the
        # REST change's (nor arrive while that client is closing).
        await asyncio.wait_for(changed.wait(), 10)
        async with asyncio.timeout(10):
            while {tool.name for tool in (await client.list_tools()).tools} != before:
                await asyncio.sleep(0.1)
    # a REST change, seen by a client of /sse (every enabled entry)
    changed.clear()
    status, _ = gateway.api("POST", "/api/gateways?sync=false", {"name": "dead", "url": "http://127.0.0.1:9/mcp"})
    assert status == 201
    async with sdk(gateway, server=None, message_handler=on_message) as client:
        await client.list_tools()
        new_tool = {"name": "sse_rest_tool", "gateway": "dead"}
        status, tool = await asyncio.to_thread(gateway.api, "POST", "/api/tools", new_tool)
        assert status == 201, tool
        await asyncio.wait_for(changed.wait(), 10)
        assert "sse_rest_tool" in {t.name for t in (await client.list_tools()).tools}
    await asyncio.to_thread(gateway.api, "DELETE", f"/api/tools/{tool['id']}")


@pytest.mark.conformance
def test_the_inspector_cli_calls_a_tool_over_sse(gateway):
    """`mcp-inspector --cli URL/servers/demo/sse --transport sse --method tools/list|tools/call`."""
    ensure_node_tools()
    base = [
        *inspector_cmd(),
        "--cli",
        f"{gateway.url}/servers/demo/sse",
        "--transport",
        "sse",
        "--header",
        f"Authorization: Bearer {gateway.token}",
        "--format",
        "json",
        "-q",
    ]
    listed = subprocess.run([*base, "--method", "tools/list"], capture_output=True, text=True, timeout=120, check=False)
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert "echo" in {tool["name"] for tool in json.loads(listed.stdout)["result"]["tools"]}
    argv = [*base, "--method", "tools/call", "--tool-name", "echo", "--tool-arg", "message=via-inspector"]
    called = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert called.returncode == 0, called.stderr[-3000:]
    assert json.loads(called.stdout)["result"]["content"][0]["text"] == "via-inspector"
