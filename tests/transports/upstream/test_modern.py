"""The 2026-07-28 ("modern") era of the upstream clients: era detection, the per-request envelope,
multi-round-trip requests bridged to `on_message`, subscriptions, cache hints and HTTP headers.

Real servers: the project's fixture upstream (`tests/fixtures/upstream_server.py --era auto|legacy|modern`)
over Streamable HTTP and stdio, and the SDK server of `mcp_fixture_server.py` (dual-era) for cancellation.
Scripted servers (`fake_modern.py`, `raw_stdio_server.py`) for what real servers do not show.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from tests.fixtures.servers import (
    RunningUpstream,
    start_upstream,
    upstream_command,
    upstream_factory,  # noqa: F401
)
from tests.transports.upstream.conftest import CAPABILITIES, ServerProcess, eventually, make_config
from tests.transports.upstream.fake_modern import DISCOVER, FakeModern
from tests.transports.upstream.fake_upstream import FakeUpstream
from transports.protocol.upstream import (
    UpstreamClient,
    UpstreamConfig,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    create_client,
)

RAW = Path(__file__).with_name("raw_stdio_server.py")
WATCHED = "test://watched-resource"
MODERN = "2026-07-28"
ALL_CAPABILITIES = {**CAPABILITIES, "roots": {}}


# ---- servers and clients ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixture_http() -> Iterator[Callable[[str], RunningUpstream]]:
    """The fixture upstream over Streamable HTTP, one process per era (started on first use)."""
    started: dict[str, RunningUpstream] = {}

    def get(era: str) -> RunningUpstream:
        if era not in started:
            started[era] = start_upstream("streamable-http", era=era)  # type: ignore[arg-type]
        return started[era]

    yield get
    for upstream in started.values():
        upstream.stop()


def fixture_config(
    transport: str, server_era: str, fixture_http: Callable[[str], RunningUpstream], **overrides: Any
) -> UpstreamConfig:
    """A client config for the fixture upstream serving `server_era`; the client's own era is `auto`."""
    options: dict[str, Any] = {
        "name": f"fixture-{transport}-{server_era}",
        "transport": transport,
        "client_capabilities": ALL_CAPABILITIES,
        "connect_timeout": 20.0,
        "request_timeout": 15.0,
    }
    if transport == "stdio":
        argv = upstream_command("stdio", era=server_era)  # type: ignore[arg-type]
        options.update(command=argv[0], args=tuple(argv[1:]))
    else:
        options["url"] = fixture_http(server_era).url
    options.update(overrides)
    return UpstreamConfig(**options)


@pytest.fixture(params=["streamable-http", "stdio"])
async def modern(
    request: pytest.FixtureRequest, fixture_http: Callable[[str], RunningUpstream]
) -> AsyncIterator[UpstreamClient]:
    """A client of the modern-only fixture upstream, over each transport with a 2026-07-28 binding."""
    client = create_client(fixture_config(request.param, "modern", fixture_http))
    await client.connect()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def fake() -> AsyncIterator[FakeModern]:
    upstream = FakeModern()
    await upstream.start()
    yield upstream
    await upstream.stop()


def fake_client(fake: FakeModern, **overrides: Any) -> UpstreamClient:
    options: dict[str, Any] = {"name": "fake", "transport": "streamable-http", "url": fake.url, "connect_timeout": 5.0}
    options.update(overrides)
    return create_client(UpstreamConfig(**options))


def text_of(result: dict[str, Any]) -> str:
    return str(result["content"][0]["text"])


async def call(client: UpstreamClient, tool: str, arguments: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    return await client.request("tools/call", {"name": tool, "arguments": arguments or {}}, **kwargs)


class Recorder:
    """An on_message / notification handler that records what it gets and answers input requests."""

    def __init__(self, answers: dict[str, dict[str, Any] | None] | None = None) -> None:
        self.messages: list[dict[str, Any]] = []
        self.answers = answers or {}

    async def __call__(self, message: dict[str, Any]) -> dict[str, Any] | None:
        self.messages.append(message)
        if "id" in message:
            return self.answers.get(message["method"])
        return None

    def methods(self) -> list[str]:
        return [m["method"] for m in self.messages]

    def requests(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if "id" in m]


ELICIT_ANSWER = {"result": {"action": "accept", "content": {"username": "ada", "email": "ada@example.org"}}}
SAMPLE_ANSWER = {
    "result": {
        "role": "assistant",
        "content": {"type": "text", "text": "Paris"},
        "model": "test-model",
        "stopReason": "endTurn",
    }
}


# ---- era detection -------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["streamable-http", "stdio"])
@pytest.mark.parametrize(("server_era", "detected"), [("auto", "modern"), ("modern", "modern"), ("legacy", "legacy")])
async def test_era_detection(
    transport: str, server_era: str, detected: str, fixture_http: Callable[[str], RunningUpstream]
) -> None:
    """versioning, "Backward Compatibility with Initialization-Based Versions": a dual-era client tries
    2026-07-28 first (HTTP: a modern request; stdio: the `server/discover` probe) and falls back to
    `initialize` when the answer is not modern. A dual-era server is spoken to in the modern era."""
    client = create_client(fixture_config(transport, server_era, fixture_http))
    try:
        result = await client.connect()
        assert client.era == detected
        assert client.server_info == {"name": "gateway-upstream-fixture", "version": "1.0.0"}
        assert "tools" in client.server_capabilities
        assert client.instructions is not None
        assert client.instructions.startswith("Test upstream")
        if detected == "modern":
            assert result is client.discover_result
            assert client.initialize_result is None
            assert client.protocol_version == MODERN
            assert MODERN in result["supportedVersions"]
        else:
            assert result is client.initialize_result
            assert client.discover_result is None
            assert client.protocol_version == "2025-11-25"
        assert text_of(await call(client, "echo", {"message": "hi"})) == "hi"
        assert await client.connect() is result  # idempotent while connected
    finally:
        await client.aclose()


@pytest.mark.parametrize("transport", ["streamable-http", "stdio"])
async def test_a_forced_era(transport: str, fixture_http: Callable[[str], RunningUpstream]) -> None:
    """`era="legacy"` runs the handshake even with a dual-era server; `era="modern"` against a server of the
    session era fails with a clear reason instead of falling back."""
    legacy = create_client(fixture_config(transport, "auto", fixture_http, era="legacy"))
    try:
        await legacy.connect()
        assert legacy.era == "legacy"
        assert legacy.initialize_result is not None
    finally:
        await legacy.aclose()
    forced = create_client(fixture_config(transport, "legacy", fixture_http, era="modern", probe_timeout=2.0))
    try:
        with pytest.raises(UpstreamUnavailable, match="does not speak MCP 2026-07-28"):
            await forced.connect()
        assert not forced.connected
    finally:
        await forced.aclose()


def test_the_modern_era_exists_only_for_streamable_http_and_stdio() -> None:
    for transport in ("sse", "websocket"):
        with pytest.raises(ValueError, match="2026-07-28 has no"):
            create_client(UpstreamConfig(name="u", transport=transport, url="http://x/", era="modern"))
    with pytest.raises(ValueError, match="unknown upstream era"):
        create_client(UpstreamConfig(name="u", transport="stdio", command="x", era="future"))


async def test_sse_and_websocket_speak_the_session_era_without_probing(sse_server: ServerProcess) -> None:
    client = create_client(make_config("sse", sse_server.url, era="auto"))
    try:
        await client.connect()
        assert client.era == "legacy"
    finally:
        await client.aclose()


async def test_stdio_probe_without_answer_falls_back_after_the_probe_timeout() -> None:
    """stdio, "Backward Compatibility": a probe that times out means a legacy server."""
    client = create_client(make_config("stdio", args=(str(RAW), "silent-discover"), era="auto", probe_timeout=0.5))
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await client.connect()
        assert client.era == "legacy"
        assert loop.time() - started >= 0.5
    finally:
        await client.aclose()


async def test_a_stdio_upstream_that_dies_of_the_probe_is_started_again_for_the_handshake() -> None:
    """stdio, "Backward Compatibility": any error means a legacy server, even one that exits on a request
    before `initialize`; the client starts it again and runs the handshake."""
    client = create_client(make_config("stdio", args=(str(RAW), "die-on-discover"), era="auto"))
    try:
        await client.connect()
        assert client.era == "legacy"
        assert await client.request("anything") == {}
    finally:
        await client.aclose()


async def test_stdio_probe_answered_with_something_else_falls_back() -> None:
    """Not a DiscoverResult (here an empty result): not modern evidence, so the handshake follows."""
    client = create_client(make_config("stdio", args=(str(RAW), "env"), era="auto"))
    try:
        await client.connect()
        assert client.era == "legacy"
        assert client.server_info == {"name": "raw", "version": "0"}
    finally:
        await client.aclose()


async def test_http_4xx_without_a_modern_error_body_falls_back() -> None:
    """streamable-http, "Backward Compatibility": a 400 whose body is not a recognised modern error means
    a legacy server; the client continues with `initialize`."""
    upstream = FakeUpstream()
    upstream.refuse_modern = True
    await upstream.start()
    try:
        client = create_client(UpstreamConfig(name="old", transport="streamable-http", url=upstream.url))
        await client.connect()
        assert client.era == "legacy"
        assert client.session_id == upstream.session_id  # type: ignore[attr-defined]
        methods = [body["method"] for method, _, body in upstream.requests if method == "POST" and body]
        assert methods[:3] == ["server/discover", "initialize", "notifications/initialized"]
        await client.aclose()
    finally:
        await upstream.stop()


async def test_http_unsupported_version_error_naming_only_other_modern_versions_fails(fake: FakeModern) -> None:
    """versioning, "Protocol Version Negotiation": -32022 is a recognised modern error, so the client does
    not fall back; sharing no version, it reports the incompatibility."""
    fake.handlers["server/discover"] = lambda request, body: fake.error(
        body,
        -32022,
        "Unsupported protocol version",
        status=400,
        data={"supported": ["2099-01-01"], "requested": MODERN},
    )
    client = fake_client(fake)
    with pytest.raises(UpstreamUnavailable, match="refused server/discover"):
        await client.connect()
    await client.aclose()
    assert not fake.bodies("initialize")


async def test_http_authentication_failure_is_no_era_verdict(fake: FakeModern) -> None:
    fake.handlers["server/discover"] = lambda request, body: web.Response(status=401)
    client = fake_client(fake)
    with pytest.raises(UpstreamUnavailable) as caught:
        await client.connect()
    assert caught.value.status == 401
    assert not fake.bodies("initialize")
    await client.aclose()


async def test_a_replaced_upstream_is_detected_again(
    upstream_factory: Callable[..., RunningUpstream],  # noqa: F811
) -> None:
    """The era is a property of the server process (versioning): when a modern upstream is replaced by a
    session-era one on the same URL, the next request fails, the connection is dropped, and connect()
    detects the session era."""
    first = upstream_factory("streamable-http", era="modern")
    client = create_client(
        UpstreamConfig(name="swap", transport="streamable-http", url=first.url, client_capabilities=ALL_CAPABILITIES)
    )
    try:
        await client.connect()
        assert client.era == "modern"
        first.stop()
        upstream_factory("streamable-http", era="legacy", port=first.port)
        with pytest.raises(UpstreamUnavailable):
            await call(client, "echo", {"message": "x"})
        assert not client.connected
        await client.connect()
        assert client.era == "legacy"
        assert text_of(await call(client, "echo", {"message": "back"})) == "back"
    finally:
        await client.aclose()


# ---- requests --------------------------------------------------------------------------------------------


async def test_a_tool_call_with_progress(modern: UpstreamClient) -> None:
    """basic/patterns/progress: the call's progress reaches `on_message` with the caller's token."""
    seen = Recorder()
    params = {"name": "test_tool_with_progress", "arguments": {}, "_meta": {"progressToken": "tok-1"}}
    result = await modern.request("tools/call", params, on_message=seen)
    assert text_of(result) == "Tool with progress executed successfully"
    progress = [m["params"] for m in seen.messages if m["method"] == "notifications/progress"]
    assert [(p["progressToken"], p["progress"]) for p in progress] == [("tok-1", 0), ("tok-1", 50), ("tok-1", 100)]


async def test_results_are_passed_on_as_the_upstream_sent_them(modern: UpstreamClient) -> None:
    """basic/index, "ResultType": the result keeps `resultType` and the server's `_meta`."""
    result = await call(modern, "test_simple_text")
    assert result["resultType"] == "complete"
    assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "gateway-upstream-fixture"


async def test_an_elicitation_round_trip(modern: UpstreamClient) -> None:
    """basic/patterns/mrtr: an `input_required` result becomes an `elicitation/create` request to
    `on_message` (the upstream's key for it in `_meta`); its answer goes back as an input response and
    the tool completes."""
    seen = Recorder({"elicitation/create": ELICIT_ANSWER})
    result = await call(modern, "test_elicitation", {"message": "Who are you?"}, on_message=seen)
    assert text_of(result) == 'User response: action=accept, content={"email": "ada@example.org", "username": "ada"}'
    [asked] = seen.requests()
    assert asked["jsonrpc"] == "2.0"
    assert asked["method"] == "elicitation/create"
    assert asked["params"]["message"] == "Who are you?"
    assert asked["params"]["_meta"] == {"dev.mcp-gateway/inputKey": "user"}  # the upstream's name for it


async def test_a_sampling_round_trip(modern: UpstreamClient) -> None:
    seen = Recorder({"sampling/createMessage": SAMPLE_ANSWER})
    result = await call(modern, "test_sampling", {"prompt": "Capital of France?"}, on_message=seen)
    assert text_of(result) == "LLM response: Paris"
    [asked] = seen.requests()
    assert asked["params"]["messages"][0]["content"]["text"] == "Capital of France?"


async def test_a_declined_elicitation_is_an_ordinary_input_response(modern: UpstreamClient) -> None:
    """client/elicitation: declining is a result (`action: decline`), not an error."""
    seen = Recorder({"elicitation/create": {"result": {"action": "decline"}}})
    result = await call(modern, "test_input_required_result_elicitation", on_message=seen)
    assert text_of(result) == "Hello, stranger!"


async def test_several_rounds_and_several_inputs(modern: UpstreamClient) -> None:
    """basic/patterns/mrtr: round after round until complete; several input requests in one round are
    answered concurrently, each once; requestState is echoed."""
    answers: dict[str, dict[str, Any] | None] = {
        "elicitation/create": {"result": {"action": "accept", "content": {"name": "Ada", "color": "green"}}},
        "sampling/createMessage": SAMPLE_ANSWER,
        "roots/list": {"result": {"roots": [{"uri": "file:///work", "name": "work"}]}},
    }
    seen = Recorder(answers)
    result = await call(modern, "test_input_required_result_multi_round", on_message=seen)
    assert text_of(result) == "Ada likes green"
    assert len(seen.requests()) == 2
    seen = Recorder(answers)
    result = await call(modern, "test_input_required_result_multiple_inputs", on_message=seen)
    assert text_of(result) == "Paris Ada; roots: work <file:///work>"
    assert sorted(seen.methods()) == ["elicitation/create", "roots/list", "sampling/createMessage"]
    assert len({m["id"] for m in seen.requests()}) == 3
    seen = Recorder(answers)
    result = await call(modern, "test_input_required_result_request_state", on_message=seen)
    assert text_of(result).startswith("state-ok: action=accept")


async def test_an_input_request_without_on_message_goes_to_the_notification_handler(modern: UpstreamClient) -> None:
    handler = Recorder({"elicitation/create": ELICIT_ANSWER})
    modern.set_notification_handler(handler)
    result = await call(modern, "test_input_required_result_elicitation")
    assert text_of(result) == "Hello, stranger!"  # accepted, but without a `name` field
    assert handler.methods() == ["elicitation/create"]


async def test_a_refused_input_request_ends_the_call_with_that_error(modern: UpstreamClient) -> None:
    """2026-07-28 has no error form for an input response: the refusal is the call's error, as the
    session era's upstream would typically report it, and nothing more is sent."""
    refuse = {"elicitation/create": {"error": {"code": -32601, "message": "The client did not declare elicitation."}}}
    with pytest.raises(UpstreamError) as caught:
        await call(modern, "test_elicitation", {"message": "x"}, on_message=Recorder(refuse))
    assert caught.value.code == -32601
    assert "did not declare" in caught.value.message
    with pytest.raises(UpstreamError) as unanswered:  # no handler at all: -32601, as in the session era
        await call(modern, "test_elicitation", {"message": "x"})
    assert unanswered.value.code == -32601


async def test_unknown_methods_and_errors(modern: UpstreamClient) -> None:
    """streamable-http, "Protocol Version Header": an unknown method is -32601 (HTTP 404)."""
    with pytest.raises(UpstreamError) as caught:
        await modern.request("no/such/method")
    assert caught.value.code == -32601
    with pytest.raises(UpstreamError) as unknown_tool:
        await call(modern, "no_such_tool")
    assert unknown_tool.value.code == -32602
    assert text_of(await call(modern, "echo", {"message": "still fine"})) == "still fine"


async def test_ping_and_set_level_are_bridged(modern: UpstreamClient) -> None:
    """`ping` and `logging/setLevel` were removed in 2026-07-28: ping becomes server/discover, and the
    level is sent as `_meta` logLevel on later requests (server/utilities/logging). Until a level is set
    the client asks for every log message (`config.log_level`, "debug"), as a session-era server sends
    them unasked."""
    assert await modern.request("ping") == {}
    expected = ["Tool execution started", "Tool processing data", "Tool execution completed"]
    seen = Recorder()
    await call(modern, "test_tool_with_logging", on_message=seen)
    assert [m["params"]["data"] for m in seen.messages if m["method"] == "notifications/message"] == expected
    assert await modern.request("logging/setLevel", {"level": "error"}) == {}
    seen = Recorder()
    await call(modern, "test_tool_with_logging", on_message=seen)
    assert "notifications/message" not in seen.methods()  # info messages, below the level
    seen = Recorder()  # a level the caller puts in _meta wins over the remembered one
    params = {"name": "test_tool_with_logging", "arguments": {}, "_meta": {"io.modelcontextprotocol/logLevel": "info"}}
    await modern.request("tools/call", params, on_message=seen)
    assert [m["params"]["data"] for m in seen.messages if m["method"] == "notifications/message"] == expected
    with pytest.raises(UpstreamError) as caught:
        await modern.request("logging/setLevel", {"level": "loud"})
    assert caught.value.code == -32602


async def test_no_log_level_no_logs(fixture_http: Callable[[str], RunningUpstream]) -> None:
    """server/utilities/logging (2026-07-28): without a logLevel in `_meta` the server sends no log messages."""
    client = create_client(fixture_config("streamable-http", "modern", fixture_http, log_level=None))
    await client.connect()
    try:
        seen = Recorder()
        await call(client, "test_tool_with_logging", on_message=seen)
        assert "notifications/message" not in seen.methods()
    finally:
        await client.aclose()


# ---- cancellation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["streamable-http", "stdio"])
async def test_a_request_given_up_is_cancelled_upstream(transport: str, http_server: ServerProcess) -> None:
    """basic/patterns/cancellation: on HTTP closing the response stream cancels the request
    (streamable-http, "Cancellation"); on stdio the client sends `notifications/cancelled`."""
    url = http_server.url if transport == "streamable-http" else ""
    client = create_client(make_config(transport, url, era="auto"))
    await client.connect()
    try:
        assert client.era == "modern"

        async def sleeps() -> dict[str, list[str]]:
            return dict((await call(client, "cancelled"))["structuredContent"])

        before = await sleeps()
        with pytest.raises(UpstreamTimeout):
            await call(client, "sleep", {"seconds": 10}, timeout=0.5)

        async def cancelled() -> bool:
            seen = await sleeps()
            return len(seen["cancelled"]) > len(before["cancelled"])

        await eventually(cancelled)
        count = len((await sleeps())["cancelled"])
        task = asyncio.create_task(call(client, "sleep", {"seconds": 10}))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        async def cancelled_again() -> bool:
            return len((await sleeps())["cancelled"]) > count

        await eventually(cancelled_again)
    finally:
        await client.aclose()


# ---- subscriptions ---------------------------------------------------------------------------------------


async def test_subscribe_and_resource_updates_through_listen(modern: UpstreamClient) -> None:
    """basic/patterns/subscriptions: `resources/subscribe` becomes a `subscriptions/listen` stream naming the
    URI; `notifications/resources/updated` reaches the notification handler without the subscription id;
    after `resources/unsubscribe` no more updates come."""
    handler = Recorder()
    modern.set_notification_handler(handler)
    assert await modern.request("resources/subscribe", {"uri": WATCHED}) == {}
    await call(modern, "test_trigger_resource_update")

    async def updated() -> bool:
        return any(m["method"] == "notifications/resources/updated" for m in handler.messages)

    await eventually(updated)
    update = next(m for m in handler.messages if m["method"] == "notifications/resources/updated")
    assert update["params"] == {"uri": WATCHED}
    assert await modern.request("resources/unsubscribe", {"uri": WATCHED}) == {}
    handler.messages.clear()
    await call(modern, "test_trigger_resource_update")
    await asyncio.sleep(0.5)
    assert "notifications/resources/updated" not in handler.methods()


async def test_list_changes_reach_the_notification_handler(modern: UpstreamClient) -> None:
    """The listen stream opened at connect asks for the list changes the upstream declares."""
    handler = Recorder()
    modern.set_notification_handler(handler)
    await call(modern, "test_trigger_tool_change")
    try:

        async def changed() -> bool:
            return "notifications/tools/list_changed" in handler.methods()

        await eventually(changed)
    finally:
        await call(modern, "test_trigger_tool_change")  # the server is shared: put the tool list back


async def test_subscribing_to_an_upstream_without_subscriptions_fails(fake: FakeModern) -> None:
    fake.handlers["server/discover"] = lambda request, body: fake.result(body, {**DISCOVER, "capabilities": {}})
    client = fake_client(fake)
    await client.connect()
    try:
        with pytest.raises(UpstreamError) as caught:
            await client.request("resources/subscribe", {"uri": "test://x"})
        assert caught.value.code == -32601
        assert not fake.bodies("subscriptions/listen")
    finally:
        await client.aclose()


# ---- scripted upstream: envelope, headers, rounds, cache -------------------------------------------------


async def test_every_request_carries_the_envelope_and_headers(fake: FakeModern) -> None:
    """basic/index "_meta" and streamable-http "Request Metadata": protocol version, client capabilities and
    client info in `_meta`; MCP-Protocol-Version, Mcp-Method and Mcp-Name headers, Base64 for a name that
    is not plain ASCII; no session id."""
    fake.handlers["tools/call"] = lambda request, body: fake.result(body, {"content": [], "resultType": "complete"})
    client = fake_client(fake, client_capabilities={"sampling": {}}, client_info={"name": "gw", "version": "9"})
    await client.connect()
    try:
        params = {"name": "héllo", "arguments": {}, "_meta": {"progressToken": 7}}
        await client.request("tools/call", params)
        [headers] = fake.headers_of("tools/call")
        [body] = fake.bodies("tools/call")
        assert headers["MCP-Protocol-Version"] == MODERN
        assert headers["Mcp-Method"] == "tools/call"
        assert headers["Mcp-Name"] == "=?base64?" + base64.b64encode("héllo".encode()).decode() + "?="
        assert "Mcp-Session-Id" not in headers
        assert body["params"]["_meta"] == {
            "progressToken": 7,
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {"sampling": {}},
            "io.modelcontextprotocol/clientInfo": {"name": "gw", "version": "9"},
            "io.modelcontextprotocol/logLevel": "debug",
        }
        assert params["_meta"] == {"progressToken": 7}  # the caller's params are not changed
        [discover_headers] = fake.headers_of("server/discover")
        assert discover_headers["Mcp-Method"] == "server/discover"
        assert "Mcp-Name" not in discover_headers
    finally:
        await client.aclose()


async def test_caller_headers_are_forwarded_but_never_override_ours(fake: FakeModern) -> None:
    """`request(..., headers=...)` adds headers such as `Mcp-Param-*` (streamable-http, "Server Behavior for
    Custom Headers": intermediaries forward them); credentials and protocol headers cannot be replaced."""
    fake.handlers["tools/call"] = lambda request, body: fake.result(body, {"content": []})
    client = fake_client(fake, headers={"Authorization": "Bearer gateway"})
    await client.connect()
    try:
        extra = {
            "Mcp-Param-Region": "eu-west-1",
            "authorization": "Bearer stolen",
            "Mcp-Method": "tools/list",
            "X-Bad": "a\r\nInjected: yes",
        }
        await client.request("tools/call", {"name": "t", "arguments": {}}, headers=extra)
        [headers] = fake.headers_of("tools/call")
        assert headers["Mcp-Param-Region"] == "eu-west-1"
        assert headers["Authorization"] == "Bearer gateway"
        assert headers["Mcp-Method"] == "tools/call"
        assert "X-Bad" not in headers
        assert "Injected" not in headers
    finally:
        await client.aclose()


async def test_caller_headers_on_a_session_era_post() -> None:
    upstream = FakeUpstream()
    await upstream.start()
    try:

        async def tool(request: web.Request, payload: dict[str, Any]) -> web.StreamResponse:
            return upstream.json(payload, {"content": []})

        upstream.tools["t"] = tool
        client = create_client(make_config("streamable-http", upstream.url))
        await client.connect()
        await client.request("tools/call", {"name": "t"}, headers={"Mcp-Param-Region": "eu"})
        headers = next(h for _, h, body in upstream.requests if body and body.get("method") == "tools/call")
        assert headers["Mcp-Param-Region"] == "eu"
        await client.aclose()
    finally:
        await upstream.stop()


async def test_the_envelope_is_stripped_for_a_session_era_upstream() -> None:
    """The per-request `_meta` fields of 2026-07-28 mean nothing in a session, and could make a dual-era
    server serve the request statelessly: they never reach a session-era upstream."""
    upstream = FakeUpstream()
    await upstream.start()
    try:

        async def tool(request: web.Request, payload: dict[str, Any]) -> web.StreamResponse:
            return upstream.json(payload, {"content": []})

        upstream.tools["t"] = tool
        client = create_client(make_config("streamable-http", upstream.url))
        await client.connect()
        meta = {
            "progressToken": 1,
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/logLevel": "info",
        }
        await client.request("tools/call", {"name": "t", "_meta": meta})
        body = next(body for _, _, body in upstream.requests if body and body.get("method") == "tools/call")
        assert body["params"]["_meta"] == {"progressToken": 1}
        await client.aclose()
    finally:
        await upstream.stop()


async def test_too_many_rounds_give_a_clear_error(fake: FakeModern) -> None:
    """basic/patterns/mrtr, "Client Requirements": each retry has a new id and echoes requestState; an
    upstream that never completes is given up after `max_input_rounds`."""
    rounds = 0

    def ask(request: web.Request, body: dict[str, Any]) -> web.Response:
        nonlocal rounds
        rounds += 1
        requests = {"q": {"method": "elicitation/create", "params": {"message": f"round {rounds}"}}}
        result = {"resultType": "input_required", "inputRequests": requests, "requestState": f"s{rounds}"}
        return fake.result(body, result)

    fake.handlers["tools/call"] = ask
    client = fake_client(fake, max_input_rounds=3)
    await client.connect()
    try:
        seen = Recorder({"elicitation/create": {"result": {"action": "accept", "content": {"n": 1}}}})
        with pytest.raises(UpstreamError, match="after 3 rounds"):
            await client.request("tools/call", {"name": "nag", "arguments": {"a": 1}}, on_message=seen)
        bodies = fake.bodies("tools/call")
        assert len(bodies) == 4
        assert len({body["id"] for body in bodies}) == 4
        assert "requestState" not in bodies[0]["params"]
        assert "inputResponses" not in bodies[0]["params"]
        for number, body in enumerate(bodies[1:], start=1):
            assert body["params"]["requestState"] == f"s{number}"
            assert body["params"]["inputResponses"] == {"q": {"action": "accept", "content": {"n": 1}}}
            assert body["params"]["arguments"] == {"a": 1}
        assert len(seen.requests()) == 3
    finally:
        await client.aclose()


async def test_request_state_only_rounds_and_absent_state(fake: FakeModern) -> None:
    """basic/patterns/mrtr: without inputRequests the client may retry at once; without requestState the
    retry MUST NOT carry one."""
    answers = [
        {"resultType": "input_required", "requestState": "working"},
        {"resultType": "input_required", "inputRequests": {"k": {"method": "roots/list"}}},
        {"resultType": "complete", "content": [{"type": "text", "text": "done"}]},
    ]
    fake.handlers["tools/call"] = lambda request, body: fake.result(body, answers.pop(0))
    client = fake_client(fake)
    await client.connect()
    try:
        seen = Recorder({"roots/list": {"result": {"roots": []}}})
        result = await client.request("tools/call", {"name": "slow"}, on_message=seen)
        assert text_of(result) == "done"
        first, second, third = (body["params"] for body in fake.bodies("tools/call"))
        assert "requestState" not in first
        assert second["requestState"] == "working"
        assert "inputResponses" not in second
        assert "requestState" not in third
        assert third["inputResponses"] == {"k": {"roots": []}}
    finally:
        await client.aclose()


async def test_an_unknown_result_type_is_invalid(fake: FakeModern) -> None:
    """basic/index, "ResultType": a value the client does not recognise MUST be considered invalid."""
    fake.handlers["tools/call"] = lambda request, body: fake.result(body, {"resultType": "task", "taskId": "1"})
    client = fake_client(fake)
    await client.connect()
    try:
        with pytest.raises(UpstreamUnavailable, match="unknown resultType"):
            await client.request("tools/call", {"name": "t"})
    finally:
        await client.aclose()


async def test_cache_hints_are_honoured(fake: FakeModern) -> None:
    """Results with `ttlMs` are reused for that long (keyed by method and params); `ttlMs: 0` is never
    cached; a cached result cannot be changed by whoever got it."""
    clock = {"ttl": 60_000}

    def listing(request: web.Request, body: dict[str, Any]) -> web.Response:
        tools = [{"name": f"t{len(fake.bodies('tools/list'))}", "inputSchema": {"type": "object"}}]
        return fake.result(body, {"tools": tools, "ttlMs": clock["ttl"], "cacheScope": "private"})

    fake.handlers["tools/list"] = listing
    client = fake_client(fake)
    await client.connect()
    try:
        first = await client.request("tools/list")
        first["tools"].clear()
        again = await client.request("tools/list", {"_meta": {"progressToken": 3}})
        assert again["tools"][0]["name"] == "t1"
        assert len(fake.bodies("tools/list")) == 1
        await client.request("tools/list", {"cursor": "abc"})  # other params: another entry
        assert len(fake.bodies("tools/list")) == 2
        clock["ttl"] = 0
        client2 = fake_client(fake)
        await client2.connect()
        await client2.request("tools/list", {"cursor": "zero"})
        await client2.request("tools/list", {"cursor": "zero"})
        assert len(fake.bodies("tools/list")) == 4
        await client2.aclose()
    finally:
        await client.aclose()


async def test_cached_results_expire_and_list_changes_make_them_stale(fake: FakeModern) -> None:
    """A list change announced on the listen stream drops the cached list (caching: a cached entry must
    not outlive what the server says changed)."""
    announce = asyncio.Event()

    async def listen(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        meta = {"io.modelcontextprotocol/subscriptionId": body["id"]}
        ack = {
            "jsonrpc": "2.0",
            "method": "notifications/subscriptions/acknowledged",
            "params": {"notifications": body["params"]["notifications"], "_meta": meta},
        }
        await response.write(b"data: " + orjson.dumps(ack) + b"\n\n")
        await announce.wait()
        changed = {"jsonrpc": "2.0", "method": "notifications/tools/list_changed", "params": {"_meta": meta}}
        await response.write(b"data: " + orjson.dumps(changed) + b"\n\n")
        await fake.closing.wait()
        return response

    fake.handlers["subscriptions/listen"] = listen
    fake.handlers["tools/list"] = lambda request, body: fake.result(body, {"tools": [], "ttlMs": 60_000})
    fake.handlers["resources/read"] = lambda request, body: fake.result(
        body, {"contents": [{"uri": "x", "text": "1"}], "ttlMs": 150}
    )
    client = fake_client(fake)
    handler = Recorder()
    client.set_notification_handler(handler)
    await client.connect()
    try:
        await client.request("tools/list")
        await client.request("tools/list")
        assert len(fake.bodies("tools/list")) == 1
        announce.set()

        async def changed() -> bool:
            return "notifications/tools/list_changed" in handler.methods()

        await eventually(changed)
        assert handler.messages[0]["params"] == {}  # the subscription id is gone
        await client.request("tools/list")
        assert len(fake.bodies("tools/list")) == 2
        await client.request("resources/read", {"uri": "x"})
        await client.request("resources/read", {"uri": "x"})
        assert len(fake.bodies("resources/read")) == 1
        await asyncio.sleep(0.2)
        await client.request("resources/read", {"uri": "x"})
        assert len(fake.bodies("resources/read")) == 2
        [listen_body] = fake.bodies("subscriptions/listen")
        assert listen_body["params"]["notifications"] == {"toolsListChanged": True}
    finally:
        await client.aclose()


HEADER_ITEM = {"type": "string", "x-mcp-header": "V"}


def schema_with(prop: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {"v": prop}}


async def test_x_mcp_header_parameters(fake: FakeModern) -> None:
    """streamable-http, "Custom Headers from Tool Parameters": tools with invalid `x-mcp-header` annotations
    are left out of tools/list; calls of valid ones mirror the annotated arguments into `Mcp-Param-*`
    headers (Base64 when not plain ASCII); a HeaderMismatch makes the client re-read the tools and retry."""
    tools = [
        {
            "name": "valid",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "region": {"type": "string", "x-mcp-header": "Region"},
                    "count": {"type": "integer", "x-mcp-header": "Count"},
                    "nested": {"type": "object", "properties": {"flag": {"type": "boolean", "x-mcp-header": "Flag"}}},
                    "plain": {"type": "string"},
                },
            },
        },
        {"name": "empty", "inputSchema": schema_with({"type": "string", "x-mcp-header": ""})},
        {"name": "number", "inputSchema": schema_with({"type": "number", "x-mcp-header": "V"})},
        {"name": "in-array", "inputSchema": schema_with({"type": "array", "items": HEADER_ITEM})},
    ]
    fake.handlers["tools/list"] = lambda request, body: fake.result(body, {"tools": tools, "ttlMs": 0})

    def tool_call(request: web.Request, body: dict[str, Any]) -> web.Response:
        if "Mcp-Param-Region" not in request.headers:
            return fake.error(body, -32020, "Header mismatch: Mcp-Param-Region missing", status=400)
        return fake.result(body, {"content": []})

    fake.handlers["tools/call"] = tool_call
    client = fake_client(fake)
    await client.connect()
    try:
        # Not listed yet: the first attempt lacks the header, the mismatch makes the client list and retry.
        arguments = {"region": "Zürich", "count": 42, "nested": {"flag": False}, "plain": "p"}
        await client.request("tools/call", {"name": "valid", "arguments": arguments})
        first, second = fake.headers_of("tools/call")
        assert "Mcp-Param-Region" not in first
        assert second["Mcp-Param-Region"] == "=?base64?" + base64.b64encode("Zürich".encode()).decode() + "?="
        assert second["Mcp-Param-Count"] == "42"
        assert second["Mcp-Param-Flag"] == "false"
        assert not any(name.lower() == "mcp-param-plain" for name in second)
        listed = await client.request("tools/list")
        assert [tool["name"] for tool in listed["tools"]] == ["valid"]
        await client.request("tools/call", {"name": "valid", "arguments": {"region": "us-west1", "count": None}})
        headers = fake.headers_of("tools/call")[-1]
        assert headers["Mcp-Param-Region"] == "us-west1"
        assert "Mcp-Param-Count" not in headers  # null: omitted
    finally:
        await client.aclose()


async def test_the_pool_passes_the_era_and_rebuilds_the_client_when_it_changes() -> None:
    from transports.protocol.upstream_pool import UpstreamPool

    argv = upstream_command("stdio", era="auto")
    row = {
        "name": "fx",
        "transport": "stdio",
        "era": "auto",
        "url": "",
        "command": argv[0],
        "args": argv[1:],
        "env": {},
        "cwd": None,
        "auth_type": "none",
        "credentials": {},
        "verify_tls": True,
        "ca_bundle": None,
    }
    pool = UpstreamPool(request_timeout=10.0)
    try:
        first = await pool.get("fx", row)
        assert first.era == "modern"
        assert await pool.get("fx", row) is first
        second = await pool.get("fx", {**row, "era": "legacy"})
        assert second is not first
        assert second.era == "legacy"
        assert not first.connected
    finally:
        await pool.aclose()


def http_row(url: str, era: str = "auto") -> dict[str, Any]:
    return {
        "name": "fx",
        "transport": "streamable-http",
        "era": era,
        "url": url,
        "command": "",
        "args": [],
        "env": {},
        "cwd": None,
        "auth_type": "none",
        "credentials": {},
        "verify_tls": True,
        "ca_bundle": None,
    }


@pytest.mark.parametrize(
    ("server_era", "expected", "both"),
    [
        ("auto", ("modern", "legacy"), True),
        ("modern", ("modern", "modern"), False),
        ("legacy", ("legacy", "legacy"), False),
    ],
)
async def test_the_pool_reaches_an_auto_upstream_in_the_era_of_the_request(
    fixture_http: Callable[[str], RunningUpstream], server_era: str, expected: tuple[str, str], both: bool
) -> None:
    """Era setting `auto`: a dual-era upstream (discover answered and initialize accepted) gets a client per
    era, a single-era upstream one client whatever the request's era (the core bridges)."""
    from transports.protocol.upstream_pool import UpstreamPool

    row = http_row(fixture_http(server_era).url)
    pool = UpstreamPool(request_timeout=10.0)
    try:
        modern = await pool.get("fx", row, era="modern")
        legacy = await pool.get("fx", row, era="legacy")
        assert (modern.era, legacy.era) == expected
        assert (modern is legacy) is not both
        assert pool.speaks_both_eras("fx") is both
        assert await pool.get("fx", row, era="legacy") is legacy
        assert await pool.get("fx", row) is modern  # catalog reads and subscriptions: the detected era
        profile = {"elicitation": {"form": {}}}
        profiled = await pool.get("fx", row, profile, era="legacy")
        assert profiled is not legacy
        assert profiled.era == expected[1]
        assert profiled.config.client_capabilities == profile
    finally:
        await pool.aclose()


async def test_an_explicit_era_setting_wins_over_the_request_era(
    fixture_http: Callable[[str], RunningUpstream],
) -> None:
    """Era setting `legacy` or `modern` in front of a dual-era upstream: always that era (the core bridges the
    other era's clients), and the per-era sessions of `auto` are closed when the setting changes."""
    from transports.protocol.upstream_pool import UpstreamPool

    url = fixture_http("auto").url
    pool = UpstreamPool(request_timeout=10.0)
    try:
        split = await pool.get("fx", http_row(url), era="legacy")
        assert split.era == "legacy"
        for setting in ("legacy", "modern"):
            for asked in ("legacy", "modern", None):
                client = await pool.get("fx", http_row(url, setting), era=asked)
                assert client.era == setting, (setting, asked)
        assert not split.connected
    finally:
        await pool.aclose()


async def test_unsupported_protocol_version_is_retried_with_a_supported_one(fake: FakeModern) -> None:
    """versioning, "Protocol Version Negotiation": a request refused with -32022 whose `supported` lists a
    version the client speaks is retried with it (a new id), and the connection stays."""
    refusals = [True]

    def tool_call(request: web.Request, body: dict[str, Any]) -> web.Response:
        if refusals and refusals.pop():
            data = {
                "supported": [MODERN],
                "requested": body["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"],
            }
            return fake.error(body, -32022, "Unsupported protocol version", status=400, data=data)
        return fake.result(body, {"content": [{"type": "text", "text": "ok"}]})

    fake.handlers["tools/call"] = tool_call
    client = fake_client(fake)
    await client.connect()
    try:
        assert text_of(await client.request("tools/call", {"name": "t"})) == "ok"
        first, second = fake.bodies("tools/call")
        assert first["id"] != second["id"]
        assert client.connected
    finally:
        await client.aclose()


async def test_an_abandoned_http_request_sends_no_cancellation_notice(fake: FakeModern) -> None:
    """streamable-http, "Cancellation": closing the response stream is the cancellation; 2026-07-28 defines
    no client notification over HTTP, so none is sent."""
    closed = asyncio.Event()

    async def slow(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            while True:
                await asyncio.sleep(0.05)
                await response.write(b": keep-alive\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            closed.set()
            raise

    fake.handlers["tools/call"] = slow
    client = fake_client(fake)
    await client.connect()
    try:
        with pytest.raises(UpstreamTimeout):
            await client.request("tools/call", {"name": "slow"}, timeout=0.3)
        await asyncio.wait_for(closed.wait(), 5)
        await asyncio.sleep(0.2)
        assert not fake.bodies("notifications/cancelled")
        assert client.connected
    finally:
        await client.aclose()


async def test_a_result_that_took_input_is_not_cached(fake: FakeModern) -> None:
    """A read that asked the user (basic/patterns/mrtr) is theirs: even with `ttlMs` it is not reused."""

    def read(request: web.Request, body: dict[str, Any]) -> web.Response:
        if "inputResponses" not in body["params"]:
            asks = {"ok": {"method": "elicitation/create", "params": {"message": "Show it?"}}}
            return fake.result(body, {"resultType": "input_required", "inputRequests": asks})
        return fake.result(body, {"contents": [{"uri": "secret://x", "text": "s"}], "ttlMs": 60_000})

    fake.handlers["resources/read"] = read
    client = fake_client(fake)
    await client.connect()
    try:
        seen = Recorder({"elicitation/create": {"result": {"action": "accept", "content": {}}}})
        for _ in range(2):
            result = await client.request("resources/read", {"uri": "secret://x"}, on_message=seen)
            assert result["contents"][0]["text"] == "s"
        assert len(seen.requests()) == 2
        assert len(fake.bodies("resources/read")) == 4
    finally:
        await client.aclose()
