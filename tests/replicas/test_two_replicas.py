"""Two gateway replicas sharing PostgreSQL and Redis behind nginx (round robin, no affinity): issue #6 item 7.

Any replica takes any request of any session. Real clients only: the official `mcp` SDK (Streamable HTTP in the
session era and in 2026-07-28, legacy HTTP+SSE, stdio through `manage.py mcp_stdio`), a WebSocket client with the
`mcp` subprotocol, and hand-made HTTP (httpx2) where a test must choose the replica of each request.

Spec references are to MCP 2025-11-25 (basic/transports: streamable-http, resumability and redelivery;
basic/utilities/progress; client/elicitation; server/tools#list-changed-notification), 2024-11-05 basic/transports
(HTTP with SSE) and 2026-07-28 (basic/patterns/mrtr; subscriptions). The fixtures are in conftest.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import secrets
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx2
import mcp.types as types
import pytest
import websockets
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from tests.jsonrpc import message as request
from tests.live_gateway import ROOT
from tests.replicas.conftest import Cluster

SESSION_VERSION = "2025-11-25"
MODERN = "2026-07-28"
ACCEPT = "application/json, text/event-stream"
META_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
META_SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
CLIENT_INFO = {"name": "replicas-test", "version": "0"}
ELICITATION: dict[str, Any] = {"elicitation": {}}

# What the upstream fixture answers (tests/fixtures/upstream_server.py).
FIXTURE_TOOLS = {"echo", "test_tool_with_progress", "test_elicitation", "test_streaming_elicitation"}
PROGRESS_TEXT = "Tool with progress executed successfully"
PROGRESS_STEPS = [(0, 100), (50, 100), (100, 100)]
USER_CONTENT: dict[str, str | int | float | bool | list[str] | None] = {"username": "ada", "email": "ada@example.com"}
USER = {"action": "accept", "content": USER_CONTENT}
USER_TEXT = 'User response: action=accept, content={"email": "ada@example.com", "username": "ada"}'
CONFIRM = {"action": "accept", "content": {"confirm": True}}
CONFIRM_TEXT = 'Confirmation: action=accept, content={"confirm": true}'

LIMIT = 30  # seconds a whole test may take
WAIT = 10  # seconds to wait for any one message


# --------------------------------------------------------------------------------------------------------------
# Server-sent events, read in the background
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Event:
    id: str | None
    event: str
    data: str
    retry: int | None = None

    @property
    def message(self) -> dict[str, Any] | None:
        """The JSON-RPC message of an `event: message` with data (None for priming events and `endpoint`)."""
        return json.loads(self.data) if self.event == "message" and self.data.strip() else None


class EventReader:
    """An SSE response parsed into a queue of events; `seen` keeps every JSON-RPC message read so far."""

    def __init__(self, response: httpx2.Response, what: str) -> None:
        self.response, self.what = response, what
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self.seen: list[dict[str, Any]] = []
        self.last_id: str | None = None
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        fields: dict[str, str] = {}
        data: list[str] = []
        try:
            async for line in self.response.aiter_lines():
                if line.startswith(":"):
                    continue
                if not line:
                    if data or fields:
                        retry = fields.get("retry", "")
                        kind = fields.get("event", "message")
                        event = Event(fields.get("id"), kind, "\n".join(data), int(retry) if retry.isdigit() else None)
                        await self.queue.put(event)
                    fields, data = {}, []
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    data.append(value)
                else:
                    fields[name] = value
        except httpx2.HTTPError:
            pass  # the connection went away: the stream ends here
        finally:
            await self.queue.put(None)

    async def event(self, timeout: float = WAIT) -> Event:
        try:
            async with asyncio.timeout(timeout):
                event = await self.queue.get()
        except TimeoutError:
            raise AssertionError(f"{self.what}: no event within {timeout} s (messages so far: {self.seen})") from None
        if event is None:
            self.queue.put_nowait(None)
            raise AssertionError(f"{self.what}: the stream ended (messages so far: {self.seen})")
        if event.id:
            self.last_id = event.id
        return event

    async def message(self, timeout: float = WAIT) -> dict[str, Any]:
        """The next JSON-RPC message (events without one, such as a priming event, are passed over)."""
        async with asyncio.timeout(timeout):
            while True:
                message = (await self.event(timeout)).message
                if message is not None:
                    self.seen.append(message)
                    return message

    async def until(self, accept: Callable[[dict[str, Any]], bool], what: str, timeout: float = WAIT) -> dict[str, Any]:
        """The next message ``accept`` likes; fails after ``timeout`` seconds naming ``what`` it waited for."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    message = await self.message(timeout)
                    if accept(message):
                        return message
        except TimeoutError:
            raise AssertionError(f"{self.what}: no {what} within {timeout} s (got: {self.seen})") from None

    async def answer(self, request_id: Any, timeout: float = WAIT) -> dict[str, Any]:
        """The response to ``request_id`` (what comes before it is kept in `seen`)."""
        return await self.until(
            lambda m: m.get("id") == request_id and "method" not in m, f"response {request_id!r}", timeout
        )


@contextlib.asynccontextmanager
async def event_stream(
    cluster: Cluster, http: httpx2.AsyncClient, method: str, url: str, headers: dict[str, str], body: Any = None
) -> AsyncIterator[EventReader]:
    """Send one request whose answer must be an SSE stream; leaving the block drops the connection."""
    content = None if body is None else json.dumps(body).encode()
    base = url.split("/servers/", 1)[0]
    what = f"{method} {url.removeprefix(base)} on {cluster.name_of(base)}"
    async with http.stream(method, url, headers=headers, content=content) as response:
        if response.status_code != 200 or not response.headers.get("content-type", "").startswith("text/event-stream"):
            text = (await response.aread()).decode(errors="replace")
            raise AssertionError(f"{what}: HTTP {response.status_code} {response.headers.get('content-type')} {text}")
        reader = EventReader(response, what)
        try:
            yield reader
        finally:
            reader.task.cancel()


def expect_status(response: httpx2.Response, status: int, what: str) -> None:
    """A precise one-line failure: what was sent where, and the answer."""
    if response.status_code != status:
        raise AssertionError(f"{what}: HTTP {response.status_code} (expected {status}) {response.text}")


def http_client(cluster: Cluster) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(headers=cluster.headers(), timeout=httpx2.Timeout(WAIT, read=LIMIT), trust_env=False)


def progress_of(messages: list[dict[str, Any]], token: str) -> list[tuple[float, float]]:
    return [
        (m["params"]["progress"], m["params"]["total"])
        for m in messages
        if m.get("method") == "notifications/progress" and m["params"]["progressToken"] == token
    ]


def text_of(answer: dict[str, Any]) -> str:
    assert "result" in answer, answer
    return answer["result"]["content"][0]["text"]


def outline(messages: list[dict[str, Any]], token: str) -> list[tuple[Any, ...]]:
    """Progress, elicitation requests and the response of one call, in order of arrival."""
    steps: list[tuple[Any, ...]] = []
    for m in messages:
        if m.get("method") == "notifications/progress" and m["params"]["progressToken"] == token:
            steps.append(("progress", m["params"]["progress"], m["params"]["total"]))
        elif m.get("method") == "elicitation/create":
            steps.append(("elicitation/create", m["params"]["message"]))
        elif "method" not in m:
            steps.append(("result", text_of(m)))
    return steps


# --------------------------------------------------------------------------------------------------------------
# Hand-made clients that choose the replica of every request
# --------------------------------------------------------------------------------------------------------------


@dataclass
class StreamableSession:
    """A 2025-11-25 Streamable HTTP session; every request names the base URL (a replica or the proxy) it goes to."""

    cluster: Cluster
    http: httpx2.AsyncClient
    id: str = ""
    version: str = SESSION_VERSION

    def url(self, base: str) -> str:
        return self.cluster.endpoint(base, "mcp")

    def where(self, base: str) -> str:
        return self.cluster.name_of(base)

    def headers(self, **extra: str) -> dict[str, str]:
        headers = {"Accept": ACCEPT, "Content-Type": "application/json"}
        if self.id:
            headers |= {"Mcp-Session-Id": self.id, "MCP-Protocol-Version": self.version}
        return headers | extra

    async def post(self, base: str, message: dict[str, Any]) -> httpx2.Response:
        return await self.http.post(self.url(base), content=json.dumps(message).encode(), headers=self.headers())

    async def initialize(self, base: str, capabilities: dict[str, Any] | None = None) -> dict[str, Any]:
        params = {"protocolVersion": SESSION_VERSION, "capabilities": capabilities or {}, "clientInfo": CLIENT_INFO}
        response = await self.post(base, request("initialize", params, "init"))
        expect_status(response, 200, f"initialize on {self.where(base)}")
        self.id = response.headers["mcp-session-id"]
        result = response.json()["result"]
        self.version = result["protocolVersion"]
        return result

    async def accepted(self, base: str, message: dict[str, Any]) -> None:
        """POST a notification or a response: 202 and no body."""
        response = await self.post(base, message)
        expect_status(response, 202, f"POST to {self.where(base)}")

    async def call(self, base: str, method: str, params: dict[str, Any] | None, request_id: Any) -> dict[str, Any]:
        """A request answered in JSON or on an SSE stream: its response."""
        response = await self.post(base, request(method, params, request_id))
        expect_status(response, 200, f"{method} on {self.where(base)}")
        if not response.headers["content-type"].startswith("text/event-stream"):
            return response.json()
        for block in response.text.replace("\r\n", "\n").split("\n\n"):
            data = "\n".join(line[5:].lstrip() for line in block.split("\n") if line.startswith("data:"))
            if data.strip() and (message := json.loads(data)).get("id") == request_id and "method" not in message:
                return message
        raise AssertionError(f"{method} on {self.where(base)}: no response in {response.text!r}")

    def stream(self, base: str, method: str, params: dict[str, Any], request_id: Any):
        """POST a request and read its SSE answer."""
        return event_stream(
            self.cluster, self.http, "POST", self.url(base), self.headers(), request(method, params, request_id)
        )

    def get(self, base: str, last_event_id: str | None = None):
        """The standalone stream, or with ``last_event_id`` the resumption of a stream of this session."""
        headers = self.headers(Accept="text/event-stream")
        del headers["Content-Type"]
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        return event_stream(self.cluster, self.http, "GET", self.url(base), headers)


@dataclass
class LegacySse:
    """A 2024-11-05 HTTP+SSE session: the stream held by one replica, messages POSTed to any."""

    cluster: Cluster
    http: httpx2.AsyncClient
    reader: EventReader
    endpoint: str  # /servers/demo/message?session_id=...

    async def post(self, base: str, message: dict[str, Any]) -> None:
        response = await self.http.post(
            base + self.endpoint, content=json.dumps(message).encode(), headers={"Content-Type": "application/json"}
        )
        expect_status(response, 202, f"POST {self.endpoint} to {self.cluster.name_of(base)}")

    async def call(self, base: str, method: str, params: dict[str, Any] | None, request_id: Any) -> dict[str, Any]:
        await self.post(base, request(method, params, request_id))
        return await self.reader.answer(request_id)

    async def initialize(self, base: str, capabilities: dict[str, Any] | None = None) -> dict[str, Any]:
        params = {"protocolVersion": SESSION_VERSION, "capabilities": capabilities or {}, "clientInfo": CLIENT_INFO}
        answer = await self.call(base, "initialize", params, "init")
        assert answer["result"]["protocolVersion"] == SESSION_VERSION, answer
        await self.post(base, request("notifications/initialized"))
        return answer["result"]


@contextlib.asynccontextmanager
async def legacy_stream(cluster: Cluster, http: httpx2.AsyncClient, base: str) -> AsyncIterator[LegacySse]:
    """GET /servers/demo/sse on ``base``; its first event names the message URL."""
    headers = {"Accept": "text/event-stream"}
    async with event_stream(cluster, http, "GET", cluster.endpoint(base, "sse"), headers) as reader:
        first = await reader.event()
        assert first.event == "endpoint", first
        assert first.data.startswith(f"/servers/{cluster.server}/message?session_id="), first
        yield LegacySse(cluster, http, reader, first.data)


def modern_request(
    method: str, params: dict[str, Any], request_id: Any, capabilities: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """A 2026-07-28 request (the `_meta` envelope) and the headers that mirror it."""
    meta = {META_VERSION: MODERN, META_CAPABILITIES: capabilities or {}, META_CLIENT_INFO: CLIENT_INFO}
    body = request(method, {**params, "_meta": meta}, request_id)
    headers = {"Accept": ACCEPT, "Content-Type": "application/json", "MCP-Protocol-Version": MODERN}
    headers["Mcp-Method"] = method
    if method in ("tools/call", "prompts/get"):
        headers["Mcp-Name"] = params["name"]
    return body, headers


async def modern_call(
    cluster: Cluster, http: httpx2.AsyncClient, base: str, method: str, params: dict[str, Any], request_id: Any, **kw
) -> dict[str, Any]:
    """POST one 2026-07-28 request to /servers/demo/mcp on ``base``; its response (JSON, or an SSE stream's last)."""
    body, headers = modern_request(method, params, request_id, **kw)
    response = await http.post(cluster.endpoint(base), content=json.dumps(body).encode(), headers=headers)
    expect_status(response, 200, f"{method} on {cluster.name_of(base)}")
    if not response.headers["content-type"].startswith("text/event-stream"):
        return response.json()
    messages = [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:") and line[5:]]
    return messages[-1]


# --------------------------------------------------------------------------------------------------------------
# The harness itself
# --------------------------------------------------------------------------------------------------------------


def test_the_proxy_balances_every_request_with_no_affinity(cluster):
    """nginx sends consecutive requests to alternating replicas, both of them (what every test below relies on)."""
    before = len(cluster.served_by())
    for _ in range(4):
        with urllib.request.urlopen(cluster.proxy_url + "/health", timeout=WAIT) as response:
            assert response.status == 200
    deadline = time.monotonic() + 2
    while len(cluster.served_by()) < before + 4 and time.monotonic() < deadline:
        time.sleep(0.05)  # nginx logs a request once it is finished
    ports = cluster.served_by()[before:]
    assert sorted(set(ports)) == sorted({cluster.a.port, cluster.b.port}), ports
    assert all(first != second for first, second in itertools.pairwise(ports)), ports


# --------------------------------------------------------------------------------------------------------------
# a. Real clients through nginx, in every mode
# --------------------------------------------------------------------------------------------------------------


async def lists_and_calls(client: Client) -> None:
    """tools/list shows the fixture's tools; echo answers; progress arrives 0, 50, 100 of 100."""
    names = {tool.name for tool in (await client.list_tools()).tools}
    assert names >= FIXTURE_TOOLS, names
    echoed = await client.call_tool("echo", {"message": "through nginx"})
    assert echoed.content[0].text == "through nginx"
    seen: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total))

    result = await client.call_tool("test_tool_with_progress", {}, progress_callback=on_progress)
    assert result.content[0].text == PROGRESS_TEXT
    assert seen == PROGRESS_STEPS


def sdk(cluster: Cluster, http: httpx2.AsyncClient, transport: str, mode: str, **options: Any) -> Client:
    """mcp.Client through nginx: Streamable HTTP (/servers/demo/mcp) or HTTP+SSE (/servers/demo/sse)."""
    if transport == "sse":
        stream = sse_client(cluster.endpoint(cluster.proxy_url, "sse"), headers=cluster.headers(), timeout=WAIT)
    else:
        stream = streamable_http_client(cluster.endpoint(cluster.proxy_url), http_client=http)
    return Client(stream, mode=mode, read_timeout_seconds=WAIT, **options)


SDK_MODES = [
    pytest.param("streamable-http", "legacy", SESSION_VERSION, id="streamable-http-2025-11-25"),
    pytest.param("streamable-http", MODERN, MODERN, id="streamable-http-2026-07-28"),
    pytest.param("sse", "legacy", SESSION_VERSION, id="http-sse-2025-11-25"),
]


@pytest.mark.parametrize(("transport", "mode", "version"), SDK_MODES)
async def test_the_sdk_through_the_proxy_lists_and_calls(cluster, transport, mode, version):
    """mcp.Client through nginx: a 2025-11-25 session over Streamable HTTP whose requests alternate between the
    replicas, 2026-07-28 requests that each stand alone, and an HTTP+SSE stream held by one replica whose POSTs go
    to either."""
    async with asyncio.timeout(LIMIT), http_client(cluster) as http, sdk(cluster, http, transport, mode) as client:
        assert client.protocol_version == version
        await lists_and_calls(client)


@pytest.mark.parametrize(("transport", "mode", "version"), SDK_MODES)
async def test_the_sdk_through_the_proxy_answers_an_elicitation(cluster, transport, mode, version):
    """client/elicitation through nginx: the call and the client's answer (a POSTed response in the session era,
    a retry with inputResponses in 2026-07-28) reach different replicas, and the call completes with the answer."""
    asked: list[str] = []

    async def elicit(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content=USER_CONTENT)

    before = len(cluster.served_by())
    async with (
        asyncio.timeout(LIMIT),
        http_client(cluster) as http,
        sdk(cluster, http, transport, mode, elicitation_callback=elicit) as client,
    ):
        assert client.protocol_version == version
        result = await client.call_tool("test_elicitation", {"message": "Who are you?"})
    assert asked == ["Who are you?"]
    assert not result.is_error
    assert result.content[0].text == USER_TEXT
    assert set(cluster.served_by()[before:]) == {cluster.a.port, cluster.b.port}


async def test_a_websocket_client_through_the_proxy(cluster):
    """The `websockets` library offering subprotocol `mcp`, one JSON-RPC message per text frame, through nginx's
    Upgrade handling: initialize, notifications/initialized, tools/list, tools/call (echo, and with progress)."""
    url = cluster.endpoint(cluster.proxy_url.replace("http://", "ws://"), "ws")
    async with (
        asyncio.timeout(LIMIT),
        websockets.connect(
            url,
            subprotocols=[websockets.Subprotocol("mcp")],
            additional_headers=cluster.headers(),
            proxy=None,
            open_timeout=WAIT,
        ) as ws,
    ):
        assert ws.subprotocol == "mcp"
        seen: list[dict[str, Any]] = []

        async def ask(method: str, params: dict[str, Any] | None, request_id: int) -> dict[str, Any]:
            await ws.send(json.dumps(request(method, params, request_id)))
            while True:
                frame = await asyncio.wait_for(ws.recv(), WAIT)
                assert isinstance(frame, str), frame
                message = json.loads(frame)
                if message.get("id") == request_id and "method" not in message:
                    return message
                seen.append(message)

        params = {"protocolVersion": SESSION_VERSION, "capabilities": {}, "clientInfo": CLIENT_INFO}
        assert (await ask("initialize", params, 1))["result"]["protocolVersion"] == SESSION_VERSION
        await ws.send(json.dumps(request("notifications/initialized")))
        names = {tool["name"] for tool in (await ask("tools/list", None, 2))["result"]["tools"]}
        assert names >= FIXTURE_TOOLS, names
        echoed = await ask("tools/call", {"name": "echo", "arguments": {"message": "over a websocket"}}, 3)
        assert text_of(echoed) == "over a websocket"
        call = {"name": "test_tool_with_progress", "arguments": {}, "_meta": {"progressToken": "ws"}}
        assert text_of(await ask("tools/call", call, 4)) == PROGRESS_TEXT
        assert progress_of(seen, "ws") == PROGRESS_STEPS


@pytest.mark.parametrize("mode", ["legacy", MODERN])
async def test_the_stdio_wrapper_through_the_proxy(cluster, mode):
    """`manage.py mcp_stdio --url <nginx>/servers/demo/mcp --token T`, driven by the SDK's stdio client."""
    argv = ["manage.py", "mcp_stdio", "--url", cluster.endpoint(cluster.proxy_url), "--token", cluster.token]
    params = StdioServerParameters(command=sys.executable, args=argv, env=cluster.a.env, cwd=str(ROOT))
    async with asyncio.timeout(LIMIT), Client(params, mode=mode, read_timeout_seconds=WAIT) as client:
        await lists_and_calls(client)


# --------------------------------------------------------------------------------------------------------------
# b. A call on B whose server-to-client traffic belongs to a stream on A, and the other way round
# --------------------------------------------------------------------------------------------------------------


async def test_legacy_sse_calls_posted_to_b_are_answered_on_the_stream_held_by_a(cluster):
    """HTTP+SSE: the stream is open on A; initialize goes to A, everything after to B. Progress, the elicitation
    request and the result arrive on A's stream; the client's answer to the elicitation is POSTed to B."""
    a, b = cluster.a.url, cluster.b.url
    async with asyncio.timeout(LIMIT), http_client(cluster) as http, legacy_stream(cluster, http, a) as sse:
        await sse.initialize(a, ELICITATION)

        progress_call = {"name": "test_tool_with_progress", "arguments": {}, "_meta": {"progressToken": "p1"}}
        answer = await sse.call(b, "tools/call", progress_call, "progress")
        assert text_of(answer) == PROGRESS_TEXT
        assert progress_of(sse.reader.seen, "p1") == PROGRESS_STEPS

        start = len(sse.reader.seen)
        confirm_call = {"name": "test_streaming_elicitation", "arguments": {}, "_meta": {"progressToken": "p2"}}
        await sse.post(b, request("tools/call", confirm_call, "confirm"))
        ask = await sse.reader.until(lambda m: m.get("method") == "elicitation/create", "elicitation/create")
        await sse.post(b, {"jsonrpc": "2.0", "id": ask["id"], "result": CONFIRM})
        await sse.reader.answer("confirm")
        assert outline(sse.reader.seen[start:], "p2") == [
            ("progress", 0, 1),
            ("elicitation/create", "Continue?"),
            ("progress", 1, 1),
            ("result", CONFIRM_TEXT),
        ]


async def test_a_streamable_http_call_on_b_of_a_session_begun_on_a_takes_its_answer_on_a(cluster):
    """Streamable HTTP: initialize on A, tools/call POSTed to B (progress and the elicitation request on B's
    response stream), the client's answer POSTed to A, and the result delivered on B's stream."""
    a, b = cluster.a.url, cluster.b.url
    async with asyncio.timeout(LIMIT), http_client(cluster) as http:
        session = StreamableSession(cluster, http)
        await session.initialize(a, ELICITATION)
        await session.accepted(b, request("notifications/initialized"))

        progress_call = {"name": "test_tool_with_progress", "arguments": {}, "_meta": {"progressToken": "p1"}}
        async with session.stream(b, "tools/call", progress_call, "progress") as stream:
            assert text_of(await stream.answer("progress")) == PROGRESS_TEXT
            assert progress_of(stream.seen, "p1") == PROGRESS_STEPS

        confirm_call = {"name": "test_streaming_elicitation", "arguments": {}, "_meta": {"progressToken": "p2"}}
        async with session.stream(b, "tools/call", confirm_call, "confirm") as stream:
            ask = await stream.until(lambda m: m.get("method") == "elicitation/create", "elicitation/create")
            await session.accepted(a, {"jsonrpc": "2.0", "id": ask["id"], "result": CONFIRM})
            await stream.answer("confirm")
            assert outline(stream.seen, "p2") == [
                ("progress", 0, 1),
                ("elicitation/create", "Continue?"),
                ("progress", 1, 1),
                ("result", CONFIRM_TEXT),
            ]


# --------------------------------------------------------------------------------------------------------------
# c. Last-Event-ID on B resumes a stream begun on A
# --------------------------------------------------------------------------------------------------------------


async def test_a_call_stream_begun_on_a_resumes_on_b_with_last_event_id(cluster):
    """2025-11-25 resumability: tools/call on A streams (a priming event with an id and `retry`); the client drops
    the connection after the first progress event and resumes with GET + Last-Event-ID on B, which replays what
    followed (nothing already seen), takes the elicitation answer, and ends with the call's result."""
    a, b = cluster.a.url, cluster.b.url
    async with asyncio.timeout(LIMIT), http_client(cluster) as http:
        session = StreamableSession(cluster, http)
        await session.initialize(a, ELICITATION)
        await session.accepted(a, request("notifications/initialized"))
        call = {"name": "test_streaming_elicitation", "arguments": {}, "_meta": {"progressToken": "resume"}}
        async with session.stream(a, "tools/call", call, "resumed") as first:
            priming = await first.event()
            assert priming.id, priming
            assert priming.retry is not None, priming
            assert priming.message is None, priming
            assert outline([await first.message()], "resume") == [("progress", 0, 1)]
            assert first.last_id
            assert first.last_id != priming.id
            resume_from = first.last_id
        # the connection to A is gone; the call goes on
        async with session.get(b, last_event_id=resume_from) as resumed:
            ask = await resumed.until(lambda m: m.get("method") == "elicitation/create", "elicitation/create")
            await session.accepted(b, {"jsonrpc": "2.0", "id": ask["id"], "result": CONFIRM})
            await resumed.answer("resumed")
            assert outline(resumed.seen, "resume") == [
                ("elicitation/create", "Continue?"),
                ("progress", 1, 1),
                ("result", CONFIRM_TEXT),
            ]


# --------------------------------------------------------------------------------------------------------------
# d. A catalog change through A reaches streams held by B within a second
# --------------------------------------------------------------------------------------------------------------

ListChanged = Callable[[], Awaitable[dict[str, Any]]]


@contextlib.asynccontextmanager
async def held_by_b(kind: str, cluster: Cluster, http: httpx2.AsyncClient) -> AsyncIterator[ListChanged]:
    """A stream of ``kind`` open on B; yields a function that waits for its next tools/list_changed."""
    a, b = cluster.a.url, cluster.b.url

    def changed(message: dict[str, Any]) -> bool:
        return message.get("method") == "notifications/tools/list_changed"

    if kind == "streamable-get":  # the session begun on A, its standalone GET stream on B
        session = StreamableSession(cluster, http)
        await session.initialize(a)
        await session.accepted(a, request("notifications/initialized"))
        async with session.get(b) as stream:
            yield lambda: stream.until(changed, "notifications/tools/list_changed")
    elif kind == "legacy-sse":
        async with legacy_stream(cluster, http, b) as sse:
            await sse.initialize(b)
            yield lambda: sse.reader.until(changed, "notifications/tools/list_changed")
    else:  # a 2026-07-28 subscriptions/listen stream
        body, headers = modern_request("subscriptions/listen", {"notifications": {"toolsListChanged": True}}, "sub")
        async with event_stream(cluster, http, "POST", cluster.endpoint(b), headers, body) as stream:
            ack = await stream.message()
            assert ack["method"] == "notifications/subscriptions/acknowledged", ack
            assert ack["params"]["notifications"] == {"toolsListChanged": True}

            async def listen_changed() -> dict[str, Any]:
                message = await stream.until(changed, "notifications/tools/list_changed")
                assert message["params"]["_meta"][META_SUBSCRIPTION_ID] == "sub", message
                return message

            yield listen_changed


@pytest.mark.parametrize("kind", ["streamable-get", "legacy-sse", "listen"])
async def test_a_catalog_change_through_a_reaches_a_stream_held_by_b_within_a_second(cluster, kind):
    """server/tools#list-changed-notification: a tool created through A's REST API is announced on B's stream of
    each kind (a 2025-11-25 GET stream of a session begun on A, an HTTP+SSE stream, a 2026-07-28 listen stream)
    less than a second after the API answered."""
    name = f"replica_{kind.replace('-', '_')}_{secrets.token_hex(3)}"
    async with asyncio.timeout(LIMIT), http_client(cluster) as http, held_by_b(kind, cluster, http) as list_changed:
        await asyncio.to_thread(cluster.add_tool, name)
        created = time.monotonic()
        await list_changed()
        delay = time.monotonic() - created
    assert delay < 1.0, f"list_changed took {delay:.2f} s"


async def test_an_upstream_resource_update_reaches_the_stream_held_by_the_other_replica(cluster):
    """server/resources#subscriptions: resources/subscribe taken by B (which holds the upstream subscription), the
    session's GET stream on A; the upstream's notifications/resources/updated, received by B, arrives on A."""
    a, b = cluster.a.url, cluster.b.url
    uri = "test://watched-resource"
    async with asyncio.timeout(LIMIT), http_client(cluster) as http:
        session = StreamableSession(cluster, http)
        await session.initialize(a)
        await session.accepted(a, request("notifications/initialized"))
        async with session.get(a) as stream:
            assert "result" in await session.call(b, "resources/subscribe", {"uri": uri}, "sub")
            assert "result" in await session.call(b, "tools/call", {"name": "test_trigger_resource_update"}, "t")
            update = await stream.until(
                lambda m: m.get("method") == "notifications/resources/updated", "notifications/resources/updated"
            )
            assert update["params"] == {"uri": uri}
            assert "result" in await session.call(b, "resources/unsubscribe", {"uri": uri}, "unsub")


# --------------------------------------------------------------------------------------------------------------
# e. A 2026-07-28 input_required round begun on A, completed on B
# --------------------------------------------------------------------------------------------------------------


async def test_an_input_required_round_begun_on_a_completes_by_retrying_on_b(cluster):
    """basic/patterns/mrtr: the session-era upstream's elicitation/create becomes input_required on A; the retry
    (a new id, inputResponses and the requestState) goes to B and completes the same upstream call. A is freshly
    restarted (as after a deploy) and serves nothing else first: the round must not depend on A having met a
    session-era client before."""
    arguments = {"message": "Who are you?"}
    async with asyncio.timeout(LIMIT + 20), http_client(cluster) as http:
        await asyncio.to_thread(cluster.stop_a)
        await asyncio.to_thread(cluster.start_a)
        first = await modern_call(
            cluster,
            http,
            cluster.a.url,
            "tools/call",
            {"name": "test_elicitation", "arguments": arguments},
            "ask",
            capabilities=ELICITATION,
        )
        assert first["id"] == "ask"
        result = first["result"]
        assert result["resultType"] == "input_required", result
        [(key, ask)] = result["inputRequests"].items()
        assert key == "user"
        assert ask["method"] == "elicitation/create"
        assert ask["params"]["message"] == "Who are you?"
        retry = {
            "name": "test_elicitation",
            "arguments": arguments,
            "inputResponses": {key: USER},
            "requestState": result["requestState"],
        }
        final = await modern_call(cluster, http, cluster.b.url, "tools/call", retry, "retry", capabilities=ELICITATION)
    assert final["id"] == "retry"
    assert final["result"]["resultType"] == "complete", final
    assert text_of(final) == USER_TEXT


async def test_a_retry_whose_replica_is_gone_gets_a_precise_error_on_b(cluster):
    """The parked call dies with A: B's forwarded retry is not taken within the mesh's 5 s, and the client gets
    -32602 saying the call ended and what to do, not a hang or a 500 (then A is started again)."""
    arguments = {"message": "Who are you?"}
    async with asyncio.timeout(LIMIT + 30), http_client(cluster) as http:
        first = await modern_call(
            cluster,
            http,
            cluster.a.url,
            "tools/call",
            {"name": "test_elicitation", "arguments": arguments},
            "ask",
            capabilities=ELICITATION,
        )
        result = first["result"]
        assert result["resultType"] == "input_required", result
        await asyncio.to_thread(cluster.stop_a)
        try:
            retry = {
                "name": "test_elicitation",
                "arguments": arguments,
                "inputResponses": {"user": USER},
                "requestState": result["requestState"],
            }
            body, headers = modern_request("tools/call", retry, "retry", capabilities=ELICITATION)
            response = await http.post(
                cluster.endpoint(cluster.b.url), content=json.dumps(body).encode(), headers=headers
            )
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert error["code"] == -32602
            assert "the call it continues has ended (the gateway replica running it is gone)" in error["message"]
            assert "send the request again without inputResponses and requestState" in error["message"]
        finally:
            await asyncio.to_thread(cluster.start_a)


# --------------------------------------------------------------------------------------------------------------
# f. Stopping A (last: the other tests expect both replicas up)
# --------------------------------------------------------------------------------------------------------------


async def test_a_session_begun_on_a_keeps_working_on_b_after_a_stops(cluster):
    """A is stopped (SIGTERM) after serving initialize and tools/list; the same session then lists and calls on B
    directly and through nginx, and, once A is started again, on A."""
    a, b = cluster.a.url, cluster.b.url
    async with asyncio.timeout(LIMIT + 20), http_client(cluster) as http:
        session = StreamableSession(cluster, http)
        await session.initialize(a)
        await session.accepted(a, request("notifications/initialized"))
        names = {tool["name"] for tool in (await session.call(a, "tools/list", None, 1))["result"]["tools"]}
        assert names >= FIXTURE_TOOLS
        await asyncio.to_thread(cluster.stop_a)
        try:
            listed = await session.call(b, "tools/list", None, 2)
            assert {tool["name"] for tool in listed["result"]["tools"]} == names
            echoed = await session.call(b, "tools/call", {"name": "echo", "arguments": {"message": "on B"}}, 3)
            assert text_of(echoed) == "on B"
            via = await session.call(
                cluster.proxy_url, "tools/call", {"name": "echo", "arguments": {"message": "via nginx"}}, 4
            )
            assert text_of(via) == "via nginx"
        finally:
            await asyncio.to_thread(cluster.start_a)
        assert (await session.call(a, "ping", None, 5))["result"] == {}
        echoed = await session.call(a, "tools/call", {"name": "echo", "arguments": {"message": "A again"}}, 6)
        assert text_of(echoed) == "A again"
