"""What the fuzzer found, pinned as exact exchanges on the transports where each showed (the fuzz gateway of
tests/fuzz/conftest.py; its autouse fixture fails a test whose exchanges make the gateway log a traceback)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.fuzz.strategies import deep
from tests.fuzz.wire import FuzzGateway, Reply, SseSession, WsSession, http_exchange

ACCEPT = "application/json, text/event-stream"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "fuzz", "version": "1"}},
}


def session_headers(gateway: FuzzGateway, session: str, version: str = "2025-11-25") -> dict[str, str | bytes]:
    return gateway.auth(accept=ACCEPT, **{"mcp-session-id": session, "mcp-protocol-version": version})


def ping_answered(session: SseSession | WsSession, gateway: FuzzGateway) -> None:
    ident = gateway.next_id("ping")
    session.request({"jsonrpc": "2.0", "id": ident, "method": "ping"})
    assert session.drain_until(ident, "ping")[-1] == {"jsonrpc": "2.0", "id": ident, "result": {}}


# -- an Origin header that is not a URL ---------------------------------------------------------------------

BAD_ORIGIN = "http://[::1"  # urlsplit raises ValueError: the edge answered 500 on every transport


@pytest.mark.parametrize(("path", "verb"), [("/mcp", "POST"), ("/rpc", "POST"), ("/sse", "GET")])
def test_an_origin_that_is_not_a_url_is_refused_with_403(fuzz_gateway: FuzzGateway, path: str, verb: str) -> None:
    headers = fuzz_gateway.auth(accept=ACCEPT, origin=BAD_ORIGIN)
    reply = http_exchange(fuzz_gateway.base, verb, path, orjson.dumps(INITIALIZE), headers)
    assert reply.status == 403, reply
    assert reply.messages[0]["error"]["code"] == -32600


def test_a_websocket_handshake_with_an_origin_that_is_not_a_url_is_refused(fuzz_gateway: FuzzGateway) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(
            fuzz_gateway.base.replace("http://", "ws://") + "/ws",
            subprotocols=["mcp"],  # type: ignore[list-item]
            additional_headers={"Authorization": f"Bearer {fuzz_gateway.token}", "Origin": BAD_ORIGIN},
            open_timeout=10,
        ).__enter__()
    # daphne's WebSocket layer refuses this Origin itself (400), before the gateway's check would (403).
    assert refused.value.response.status_code in (400, 403)


# -- 2025-03-26 batches: an invalid item is answered with its id ---------------------------------------------


def test_an_invalid_batch_item_is_answered_with_its_id(fuzz_gateway: FuzzGateway) -> None:
    """JSON-RPC 2.0 section 5: the id is null only when it could not be read."""
    session = fuzz_gateway.session("2025-03-26")
    batch = [
        {"jsonrpc": "2.0", "id": 5, "method": "tools/list", "params": "x"},
        {"jsonrpc": "1.0", "id": "six", "method": "ping"},
        {"jsonrpc": "2.0", "id": 7, "method": "ping"},
        {"id": [1], "method": "ping"},
    ]
    reply = http_exchange(
        fuzz_gateway.base, "POST", "/mcp", orjson.dumps(batch), session_headers(fuzz_gateway, session, "2025-03-26")
    )
    assert reply.status == 200, reply
    assert [(answer["id"], "error" in answer) for answer in reply.messages] == [
        (5, True),
        ("six", True),
        (7, False),
        (None, True),
    ]


# -- notifications/cancelled whose requestId cannot name a request ------------------------------------------

ODD_REQUEST_IDS = [[1], {"a": 1}, None, True, 1.5]


@pytest.mark.parametrize("request_id", ODD_REQUEST_IDS)
def test_streamable_http_ignores_a_cancellation_that_names_no_request(fuzz_gateway: FuzzGateway, request_id: Any):
    """It answered 500 (a list or an object cannot be looked up among the requests in flight)."""
    session = fuzz_gateway.session()
    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": request_id}}
    headers = session_headers(fuzz_gateway, session)
    assert http_exchange(fuzz_gateway.base, "POST", "/mcp", orjson.dumps(cancel), headers).status == 202
    ping = orjson.dumps({"jsonrpc": "2.0", "id": 2, "method": "ping"})
    assert http_exchange(fuzz_gateway.base, "POST", "/mcp", ping, headers).messages[0]["result"] == {}


@pytest.mark.parametrize("request_id", ODD_REQUEST_IDS)
def test_sse_ignores_a_cancellation_that_names_no_request(fuzz_gateway: FuzzGateway, request_id: Any) -> None:
    """It answered 500 to the POST."""
    session = SseSession(fuzz_gateway).initialize()
    try:
        cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": request_id}}
        assert session.post(orjson.dumps(cancel), fuzz_gateway.auth()).status == 202
        ping_answered(session, fuzz_gateway)
    finally:
        session.close()


@pytest.mark.parametrize("request_id", ODD_REQUEST_IDS)
def test_a_websocket_ignores_a_cancellation_that_names_no_request(fuzz_gateway: FuzzGateway, request_id: Any):
    """It dropped the connection (and with it the session)."""
    session = WsSession(fuzz_gateway).initialize()
    try:
        session.request({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": request_id}})
        ping_answered(session, fuzz_gateway)
    finally:
        session.close()


# -- bodies nested deeper than the gateway can write ---------------------------------------------------------


def too_deep_id() -> bytes:
    return b'{"jsonrpc":"2.0","id":' + deep(300, "array").encode() + b',"method":"ping"}'


def deep_arguments(depth: int) -> dict[str, Any]:
    """A 2026-07-28 tools/call of the wrapped tool whose argument `b` nests ``depth`` levels (the body: 3 more)."""
    envelope = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    return {
        "jsonrpc": "2.0",
        "id": 9,
        "method": "tools/call",
        "params": {
            "name": "wrapped_add",
            "arguments": {"a": 1, "b": orjson.loads(str(deep(depth, "array")))},
            "_meta": envelope,
        },
    }


def assert_parse_error(reply: Reply) -> None:
    assert reply.status == 400, reply
    assert reply.messages[0]["error"]["code"] == -32700
    assert "nested more than 200 levels" in reply.messages[0]["error"]["message"]


def test_rpc_refuses_a_body_nested_too_deep(fuzz_gateway: FuzzGateway) -> None:
    """An id nested 300 deep answered 500 (the error message quoted it with orjson, which writes 254 levels)."""
    assert_parse_error(http_exchange(fuzz_gateway.base, "POST", "/rpc", too_deep_id(), fuzz_gateway.auth()))
    body = (  # nested past what orjson writes: built as text
        b'{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"x","arguments":{"a":'
        + deep(260, "object").encode()
        + b"}}}"
    )
    assert_parse_error(http_exchange(fuzz_gateway.base, "POST", "/rpc", body, fuzz_gateway.auth()))


def test_streamable_http_refuses_a_body_nested_too_deep(fuzz_gateway: FuzzGateway) -> None:
    """In a session, the id nested 300 deep answered 500 (as on /rpc)."""
    headers = session_headers(fuzz_gateway, fuzz_gateway.session())
    assert_parse_error(http_exchange(fuzz_gateway.base, "POST", "/mcp", too_deep_id(), headers))


def test_the_sse_message_endpoint_refuses_a_body_nested_too_deep(fuzz_gateway: FuzzGateway) -> None:
    session = SseSession(fuzz_gateway).initialize()
    try:
        assert_parse_error(session.post(too_deep_id(), fuzz_gateway.auth()))
        ping_answered(session, fuzz_gateway)
    finally:
        session.close()


def test_a_websocket_answers_a_frame_nested_too_deep_and_goes_on(fuzz_gateway: FuzzGateway) -> None:
    """The frame killed the connection."""
    session = WsSession(fuzz_gateway).initialize()
    try:
        assert session.send(too_deep_id().decode())
        error = session.frames.get(timeout=10)
        assert error["id"] is None
        assert error["error"]["code"] == -32700
        ping_answered(session, fuzz_gateway)
    finally:
        session.close()


@pytest.mark.parametrize("path", ["/rpc", "/mcp"])
def test_nesting_within_the_bound_is_served(fuzz_gateway: FuzzGateway, path: str) -> None:
    """197 levels of arguments (200 in the body) reach the tool, whose schema refuses them: a tool error."""
    message = deep_arguments(197)
    headers = fuzz_gateway.modern_headers("tools/call", "wrapped_add")
    reply = http_exchange(fuzz_gateway.base, "POST", path, orjson.dumps(message), headers)
    assert reply.status == 200, reply
    assert reply.messages[-1]["result"]["isError"] is True


# -- /rpc: a tools/call whose name is not a string -----------------------------------------------------------


@pytest.mark.parametrize("name", [[1], {"a": 1}])
def test_rpc_answers_a_tool_name_that_is_not_a_string_with_invalid_params(fuzz_gateway: FuzzGateway, name: Any):
    """It answered 500: the name was looked up among the tools before anything checked it was a string."""
    answer = fuzz_gateway.rpc({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": name}})
    assert answer["error"] == {"code": -32602, "message": "Invalid params: tools/call needs a tool name."}
