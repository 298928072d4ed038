"""One conformance table for every transport (issue #6 item 5): the same protocol exchanges, run over
Streamable HTTP in both eras (a 2025-11-25 session; stateless 2026-07-28), legacy HTTP+SSE, WebSocket, the
stdio wrapper in both eras, and POST /rpc, each driven by a real client (tests/transports/table_clients.py:
the official `mcp` SDK for HTTP, SSE and stdio, aiohttp's WebSocket client offering the `mcp` subprotocol
under the same SDK session, and plain HTTP for /rpc).

Where an exchange has another shape on a transport, the test says which, and checks what the transport
gives instead, with its exact answer. Session era = HTTP 2025-11-25, SSE, WebSocket, stdio 2025-11-25;
stateless = HTTP and stdio 2026-07-28; one-shot = POST /rpc.

- lifecycle. Session era: initialize negotiates 2025-11-25; ping; a second initialize is refused; closing
  ends the session. Stateless: no handshake, server/discover; initialize and ping are removed (-32601).
  One-shot: server/discover and ping; initialize is -32601 naming the MCP endpoint.
- lists: tools/list in pages of GATEWAY_MCP_PAGE_SIZE by cursor, everywhere.
- progress: notifications/progress with the caller's token before the result (stateless: on the call's
  response stream). One-shot: nowhere to go, the result alone.
- cancellation. Session era: notifications/cancelled. Stateless: closing the call's response stream.
  One-shot: closing the connection. Everywhere: the upstream request is cancelled, no answer arrives.
- elicitation and sampling. Session era: server-to-client requests, answered by the SDK's callbacks.
  Stateless: input_required rounds, retried by the SDK. One-shot: -32021 naming the capability, or, for a
  body with its own 2026-07-28 envelope declaring it, input_required rounds.
- list_changed after a REST catalog change. Session era: notifications/tools/list_changed. Stateless: on a
  subscriptions/listen stream. One-shot: subscriptions/listen is -32601 (it needs a stream).
- errors: unknown tool, unknown method, invalid params: the same code and message everywhere.
- wrapped tools (a Python function tool): called like an upstream's, and arguments that fail its input
  schema are a tool error naming the field (SEP-1303, 2025-11-25 server/tools "Error Handling"), everywhere.

Spec references (MCP 2025-11-25 and 2026-07-28): basic/lifecycle, server/discover,
server/utilities/pagination, basic/utilities/progress, basic/utilities/cancellation (2026-07-28:
basic/transports/streamable-http "Cancellation"), client/elicitation, client/sampling, basic/patterns/mrtr,
server/tools#list-changed-notification, basic/patterns/subscriptions, basic/index "Error Codes".

One gateway for the module (authentication on, 5 entries per page) with the project's fixture upstream as
'fx', the stub upstream of test_modern.py as 'stub' (its `stub_slow` tool reports progress once and never
answers; it logs what reaches it), and a gateway nobody listens on ('dead') for REST catalog changes. A
traceback in the gateway's log fails the test during which it was written.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from tests.fixtures.servers import running_upstream
from tests.live_gateway import start_live_gateway
from tests.transports.table_clients import (
    MODERN,
    SESSION_ERA,
    TIMEOUT,
    TRANSPORTS,
    Answers,
    TableClient,
)
from tests.transports.test_modern import add_stub

PAGE_SIZE = 5
SERVER_INFO = "io.modelcontextprotocol/serverInfo"
AGAIN = {"protocolVersion": SESSION_ERA, "capabilities": {}, "clientInfo": {"name": "again", "version": "0"}}
STUB_LOG_POLL = 0.05
DAPHNE_CHECK_INTERVAL = 1.0
ELICIT_ARGS = {"message": "Who are you?"}
ELICITED_TEXT = 'User response: action=accept, content={"email": "ada@example.com", "username": "ada"}'
SAMPLE_ARGS = {"prompt": "What is the answer?"}
SAMPLED_TEXT = "LLM response: 42"
WRAPPED_CONFIG = '{"function": "tests.fixtures.functions.add"}'


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """This module's own gateway (authentication on, 5 entries per page) with 'fx', 'stub' and 'dead'."""
    state = tmp_path_factory.mktemp("transport-table")
    with (
        running_upstream("streamable-http", era="auto") as upstream,
        # unbuffered: the gateway's log is written as things happen, so a traceback fails its own test
        start_live_gateway(
            state,
            GATEWAY_MCP_PAGE_SIZE=str(PAGE_SIZE),
            PYTHONUNBUFFERED="1",
            GATEWAY_FUNCTION_TOOLS="tests.fixtures.functions.*",
        ) as live,
    ):
        assert "Registered 'fx'" in live.manage("gateway_add", "fx", "--url", upstream.url)
        # A wrapped tool (issue #8): the gateway runs it and checks its arguments itself.
        live.manage("tool_add", "wrapped_add", "--kind", "function", "--config", WRAPPED_CONFIG)
        status, body = live.api("POST", "/api/gateways?sync=false", {"name": "dead", "url": "http://127.0.0.1:9/mcp"})
        assert status == 201, body
        live.stub = add_stub(live, state)  # before the first MCP request: the gateway reads its catalog then
        live.log_checked = 0
        yield live
        time.sleep(DAPHNE_CHECK_INTERVAL + 0.2)  # what the last test left behind
        assert_no_traceback(live)


def assert_no_traceback(gateway) -> None:
    """The gateway logged no traceback since the last look."""
    with open(gateway.log, errors="replace") as log:
        log.seek(gateway.log_checked)
        written = log.read()
        gateway.log_checked = log.tell()
    if "Traceback" in written:
        pytest.fail("the gateway logged a traceback:\n" + written[max(0, written.index("Traceback") - 200) :][:4000])


@pytest.fixture(autouse=True)
def no_traceback_in_the_gateway_log(gateway):
    """The gateway logs no traceback during a test (it fails that test)."""
    assert_no_traceback(gateway)  # (a traceback written after the previous test ended fails here, at setup)
    yield
    assert_no_traceback(gateway)


@pytest.fixture(params=TRANSPORTS, ids=[transport.transport for transport in TRANSPORTS])
def connect(request, gateway):
    """Connects a client of the transport under test (``async with connect() as client``; opened and closed
    in the test's own task, as the SDK's cancel scopes need)."""
    return lambda: request.param(gateway, Answers())


def error(code: int, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def incoming(client: TableClient, predicate) -> list[dict[str, Any]]:
    return [message for direction, message in client.wire if direction == "in" and predicate(message)]


def outgoing(client: TableClient, predicate) -> list[dict[str, Any]]:
    return [message for direction, message in client.wire if direction == "out" and predicate(message)]


async def tool_pages(client: TableClient) -> list[list[str]]:
    """The names on each page of tools/list, following nextCursor to the end."""
    pages: list[list[str]] = []
    cursor = None
    for _ in range(100):
        page = await client.list_page("tools/list", cursor)
        pages.append([tool["name"] for tool in page["tools"]])
        if (cursor := page.get("nextCursor")) is None:
            return pages
    raise AssertionError("nextCursor never ended")


# -- lifecycle ------------------------------------------------------------------------------------------------


async def test_lifecycle(connect):
    """Session era: initialize negotiates the newest session version, names the gateway and offers
    tools.listChanged; server/discover is not a session-era method (-32601: how a dual-era client falls
    back to initialize); ping answers; a second initialize on the session is refused (-32600, as basic/lifecycle
    has initialize once, first); once the client has closed, its session is gone (404).
    2026-07-28: no handshake; server/discover names the version and the gateway; initialize and ping are
    removed methods (-32601). /rpc: no session: server/discover and ping answer, initialize is -32601 naming
    the MCP endpoint."""
    async with connect() as client:
        discovered = await client.request("server/discover")
        if client.era == "session":
            assert client.client.protocol_version == SESSION_ERA
            assert client.client.server_info.name == "mcp-gateway"
            assert client.client.server_capabilities.tools.list_changed is True
            [handshake] = outgoing(client, lambda m: m.get("method") == "initialize")
            assert handshake["params"]["protocolVersion"] == SESSION_ERA
            assert discovered == error(-32601, "Method not found: server/discover")
            assert await client.request("ping") == {"result": {}}
            assert await client.request("initialize", AGAIN) == error(-32600, "The session is already initialized.")
            assert await client.request("ping") == {"result": {}}
        else:
            result = discovered["result"]
            assert result["supportedVersions"] == [MODERN], result
            assert result["_meta"][SERVER_INFO]["name"] == "mcp-gateway"
            assert result["capabilities"]["tools"]["listChanged"] is True
            assert not outgoing(client, lambda m: m.get("method") == "initialize")
        if client.era == "stateless":
            assert client.client.protocol_version == MODERN
            assert await client.request("initialize", AGAIN) == error(
                -32601, "Method not found: initialize (removed in 2026-07-28)"
            )
            assert await client.request("ping") == error(-32601, "Method not found: ping (removed in 2026-07-28)")
        elif client.era == "one-shot":
            assert await client.request("ping") == {"result": {}}
            assert await client.request("initialize", AGAIN) == error(
                -32601, "Method not found: initialize needs a session or a stream; use the MCP endpoint (/mcp)."
            )
    if client.era == "session" and (status := await client.post_to_ended_session()) is not None:
        assert status == 404


# -- lists with pagination ----------------------------------------------------------------------------------


async def test_lists_page_by_cursor(connect, gateway):
    """server/utilities/pagination: tools/list comes in pages of at most GATEWAY_MCP_PAGE_SIZE, in name order,
    each page's nextCursor leading to the next, the last without one; together they are the catalog, each
    tool once. The same on every transport."""
    async with connect() as client:
        pages = await tool_pages(client)
        names = [name for page in pages for name in page]
        assert len(pages) >= 2
        assert all(0 < len(page) <= PAGE_SIZE for page in pages), pages
        assert names == sorted(names)
        assert len(names) == len(set(names))
        status, catalog = await asyncio.to_thread(gateway.api, "GET", "/api/tools?limit=1000")
        assert status == 200, catalog
        assert set(names) == {tool["name"] for tool in catalog["items"] if tool["enabled"]}
        assert {"echo", "test_tool_with_progress", "stub_slow"} <= set(names)


# -- a call with progress -------------------------------------------------------------------------------------


async def test_a_call_with_progress(connect):
    """basic/utilities/progress: the upstream's progress reaches the caller's callback in order, with the
    caller's own progress token on the wire, before the result. /rpc has nowhere to send it: the result
    alone, and no progressToken is even asked for."""
    async with connect() as client:
        seen: list[tuple[float, float | None]] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append((progress, total))

        result = await client.call_tool("test_tool_with_progress", {}, on_progress)
        assert result["content"] == [{"type": "text", "text": "Tool with progress executed successfully"}]
        assert not result.get("isError")
        if client.era == "one-shot":
            assert seen == []
            assert not incoming(client, lambda m: m.get("method") == "notifications/progress")
            return
        assert seen == [(0, 100), (50, 100), (100, 100)]
        [call] = outgoing(client, lambda m: m.get("method") == "tools/call")
        token = call["params"]["_meta"]["progressToken"]
        progress = incoming(client, lambda m: m.get("method") == "notifications/progress")
        assert [p["params"]["progressToken"] for p in progress] == [token] * 3
        answer_at = next(i for i, (d, m) in enumerate(client.wire) if d == "in" and m.get("id") == call["id"])
        last_progress_at = max(
            i for i, (d, m) in enumerate(client.wire) if d == "in" and m.get("method") == "notifications/progress"
        )
        assert last_progress_at < answer_at


# -- cancellation -----------------------------------------------------------------------------------------------


async def test_cancelling_a_call_in_flight(connect, gateway):
    """basic/utilities/cancellation: a call the upstream is working on (stub_slow: progress, then nothing) is
    cancelled the transport's way: notifications/cancelled in the session era, closing the call's response
    stream in 2026-07-28 (the SDK does it; the stdio wrapper turns the client's notifications/cancelled into
    it), closing the connection on /rpc. The gateway cancels the upstream request (the stub logs its
    notifications/cancelled), no answer to the cancelled request ever reaches the client, and the client's
    next call works."""
    async with connect() as client:
        stub = gateway.stub
        before = len(stub.ids("started"))

        async def started() -> None:
            while len(stub.ids("started")) == before:
                await asyncio.sleep(STUB_LOG_POLL)

        request_id = await client.cancel_call("stub_slow", {}, started)
        upstream_id = stub.ids("started")[before]
        async with asyncio.timeout(TIMEOUT):
            while upstream_id not in stub.ids("cancelled"):
                await asyncio.sleep(STUB_LOG_POLL)
        if client.era != "one-shot":  # (over HTTP in 2026-07-28 the SDK's transport closes the stream instead)
            [cancel] = outgoing(client, lambda m: m.get("method") == "notifications/cancelled")
            assert cancel["params"]["requestId"] == request_id
        echoed = await client.call_tool("echo", {"message": "after the cancel"})
        assert echoed["content"] == [{"type": "text", "text": "after the cancel"}]
        # time for a stray answer to arrive, were one sent, and for the gateway to finish with the cancelled
        # request (daphne logs an application's exception when it next checks them, once a second)
        await asyncio.sleep(DAPHNE_CHECK_INTERVAL + 0.2)
        assert not incoming(client, lambda m: m.get("id") == request_id and "method" not in m)


# -- elicitation and sampling -------------------------------------------------------------------------------------


async def _ask_round_trip(client, tool: str, arguments: dict, asked: str, capability: str, text: str) -> None:
    """A call whose upstream asks the client something. Session era: the question arrives as a request
    (elicitation/create, sampling/createMessage) that the SDK's callback answers; 2026-07-28: an input_required
    result whose question the SDK answers and retries with inputResponses and requestState. /rpc: no client
    to ask: -32021 with the capability; a body carrying its own 2026-07-28 envelope that declares the
    capability gets the input_required round and completes on its retry."""
    answers: Answers = client.answers
    method = {"elicitation": "elicitation/create", "sampling": "sampling/createMessage"}[capability]
    if client.era == "one-shot":
        plain = await client.request("tools/call", {"name": tool, "arguments": arguments})
        assert plain == error(  # the upstream's own refusal, passed on
            -32021,
            f"This request needs the client capabilities: {capability}",
            data={"requiredCapabilities": {capability: {}}},
        )
        meta = {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {capability: {}},
        }
        params = {"name": tool, "arguments": arguments, "_meta": meta}
        first = (await client.request("tools/call", params))["result"]
        assert first["resultType"] == "input_required", first
        [(key, question)] = first["inputRequests"].items()
        assert question["method"] == method
        answer = (
            {"action": "accept", "content": Answers.ELICITED}
            if capability == "elicitation"
            else {"role": "assistant", "content": {"type": "text", "text": Answers.SAMPLED}, "model": "rpc"}
        )
        retry = {**params, "inputResponses": {key: answer}, "requestState": first["requestState"]}
        result = (await client.request("tools/call", retry))["result"]
        assert result["resultType"] == "complete"
        assert result["content"] == [{"type": "text", "text": text}]
        return
    result = await client.call_tool(tool, arguments)
    assert result["content"] == [{"type": "text", "text": text}]
    assert not result.get("isError")
    assert (answers.elicited if capability == "elicitation" else answers.sampled) == [asked]
    calls = outgoing(client, lambda m: m.get("method") == "tools/call")
    if client.era == "session":
        [question] = incoming(client, lambda m: m.get("method") == method)
        assert outgoing(client, lambda m: m.get("id") == question["id"] and "result" in m)
        assert len(calls) == 1
    else:
        assert not incoming(client, lambda m: m.get("method") == method)
        rounds = incoming(client, lambda m: m.get("result", {}).get("resultType") == "input_required")
        assert len(rounds) == 1
        assert len(calls) == 2
        assert calls[1]["params"]["requestState"] == rounds[0]["result"]["requestState"]
        assert set(calls[1]["params"]["inputResponses"]) == set(rounds[0]["result"]["inputRequests"])


async def test_an_elicitation_round_trip(connect):
    """client/elicitation (form mode), per transport as in `_ask_round_trip`."""
    async with connect() as client:
        await _ask_round_trip(client, "test_elicitation", ELICIT_ARGS, "Who are you?", "elicitation", ELICITED_TEXT)


async def test_a_sampling_round_trip(connect):
    """client/sampling, per transport as in `_ask_round_trip`."""
    async with connect() as client:
        await _ask_round_trip(client, "test_sampling", SAMPLE_ARGS, "What is the answer?", "sampling", SAMPLED_TEXT)


# -- list_changed -------------------------------------------------------------------------------------------------


async def test_list_changed_after_a_rest_catalog_change(connect, gateway):
    """server/tools#list-changed-notification: a tool added through the REST API is announced
    (notifications/tools/list_changed; in 2026-07-28 on a subscriptions/listen stream) and then listed.
    /rpc has no stream to announce it on: subscriptions/listen is -32601 naming the MCP endpoint."""
    async with connect() as client:
        name = f"table_rest_{client.transport.replace('-', '_')}"
        if client.era == "one-shot":
            listen = await client.request("subscriptions/listen", {"notifications": {"toolsListChanged": True}})
            assert listen == error(
                -32601,
                "Method not found: subscriptions/listen needs a session or a stream; use the MCP endpoint (/mcp).",
            )
            return
        async with client.list_changed() as changed:
            status, tool = await asyncio.to_thread(gateway.api, "POST", "/api/tools", {"name": name, "gateway": "dead"})
            assert status == 201, tool
            try:
                await changed()
                assert name in [listed for page in await tool_pages(client) for listed in page]
            finally:
                await asyncio.to_thread(gateway.api, "DELETE", f"/api/tools/{tool['id']}")


# -- errors --------------------------------------------------------------------------------------------------------


ERRORS = {
    "unknown tool": ("tools/call", {"name": "no_such_tool", "arguments": {}}, -32602, "Unknown tool: no_such_tool"),
    "unknown method": ("no/such/method", {}, -32601, "Method not found: no/such/method"),
    "arguments not an object": (
        "tools/call",
        {"name": "echo", "arguments": "not an object"},
        -32602,
        "Invalid params: arguments must be an object.",
    ),
    "unknown cursor": ("tools/list", {"cursor": "not-a-cursor"}, -32602, "Invalid params: unknown cursor."),
}


async def test_errors(connect):
    """basic/index "Error Codes": the same JSON-RPC error, code and message, on every transport; none of them
    ends the session."""
    async with connect() as client:
        got = {}
        for case, (method, params, _, _) in ERRORS.items():
            got[case] = await client.request(method, params)
        expected = {case: error(code, message) for case, (_, _, code, message) in ERRORS.items()}
        assert got == expected, json.dumps(got, indent=1)
        assert (await client.call_tool("echo", {"message": "still here"}))["content"][0]["text"] == "still here"


# -- wrapped tools --------------------------------------------------------------------------------------------


async def test_a_wrapped_tool_answers_and_its_arguments_are_checked(connect):
    """A Python-function tool (tests.fixtures.functions.add) answers on every transport like an upstream's tool;
    arguments its input schema refuses never reach it: an isError result naming the field (every client here
    speaks 2025-11-25 or later, where SEP-1303 makes argument errors tool errors)."""
    async with connect() as client:
        result = await client.call_tool("wrapped_add", {"a": 2, "b": 40})
        assert result["content"] == [{"type": "text", "text": "2 + 40 = 42"}]
        assert not result.get("isError")
        refused = await client.call_tool("wrapped_add", {"a": "two"})
        assert refused["isError"] is True
        assert refused["content"][0]["text"].startswith("Invalid arguments for tool 'wrapped_add': at /a:")
