"""Every MCP method with each of its params, in turn, of a type it never has, on every transport.

The Hypothesis fuzzer (test_jsonrpc_fuzz.py) draws such messages too, but rarely: a `notifications/cancelled`
whose requestId is a list is one draw in hundreds. This sweep sends all of them, every run, and holds the
answers to the same properties (no 5xx, no leaked internals, well-formed errors carrying the request's id,
the session still answering afterwards).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.fuzz.strategies import META_CAPABILITIES, META_VERSION, MODERN, deep, encode
from tests.fuzz.wire import (
    FuzzGateway,
    SseSession,
    Violation,
    WsSession,
    check_message,
    check_reply,
    http_exchange,
    valid_id,
)

# Each method with plausible params; every field is then replaced, one at a time, by each WRONG value.
METHODS: dict[str, dict[str, Any]] = {
    "initialize": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "f", "version": "1"}},
    "ping": {},
    "server/discover": {},
    "tools/list": {"cursor": "x"},
    "tools/call": {"name": "wrapped_add", "arguments": {"a": 1}, "requestState": "a.b", "inputResponses": {}},
    "resources/list": {"cursor": "x"},
    "resources/templates/list": {"cursor": "x"},
    "resources/read": {"uri": "file:///fuzz.txt"},
    "resources/subscribe": {"uri": "file:///fuzz.txt"},
    "resources/unsubscribe": {"uri": "file:///fuzz.txt"},
    "prompts/list": {"cursor": "x"},
    "prompts/get": {"name": "greet", "arguments": {"who": "x"}},
    "completion/complete": {"ref": {"type": "ref/prompt", "name": "greet"}, "argument": {"name": "who", "value": "a"}},
    "logging/setLevel": {"level": "info"},
    "notifications/initialized": {},
    "notifications/cancelled": {"requestId": 1, "reason": "x"},
    "notifications/progress": {"progressToken": 1, "progress": 1},
    "notifications/roots/list_changed": {},
}
WRONG: list[Any] = [[1], {"a": 1}, True, None, 1.5, -1, "", deep(300, "mixed")]
WRONG_META: list[Any] = [[1], {"a": 1}, True, "2099-01-01"]


def cases(*, modern: bool) -> list[tuple[str, bytes, Any]]:
    """(label, body, the message as the gateway reads it) for every method, field and wrong value; for the
    modern era, each also with a `_meta` envelope, and the envelope's own fields made wrong."""
    found = []
    envelope = {META_VERSION: MODERN, META_CAPABILITIES: {}}
    for method, params in METHODS.items():
        notification = method.startswith("notifications/")
        variants = [(field, value) for field in (*params, "_meta") for value in WRONG]
        if modern:
            variants += [(f"_meta.{key}", value) for key in envelope for value in WRONG_META]
        for field, value in variants:
            given: dict[str, Any] = {**params, "_meta": envelope} if modern else dict(params)
            if field.startswith("_meta."):
                given["_meta"] = {**envelope, field[6:]: value}
            else:
                given[field] = value
            message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": given}
            if not notification:
                message["id"] = len(found)
            body = encode(message).encode()
            found.append(
                (f"{method} {field}={str(value)[:20]}", body, orjson.loads(body) if len(body) < 2000 else None)
            )
    return found


def headers_for(gateway: FuzzGateway, message: Any) -> dict[str, str | bytes]:
    """Headers that match the body, as a 2026-07-28 client sends them (so the body itself is what is tried)."""
    params = message.get("params") if isinstance(message, dict) else None
    name = None
    if isinstance(params, dict):
        target = params.get("uri") if message["method"] == "resources/read" else params.get("name")
        name = target if isinstance(target, str) else None
    method = message["method"] if isinstance(message, dict) else "ping"
    return gateway.modern_headers(method, name)


def check_answer(answers: list[Any], message: Any, where: str) -> None:
    expected = valid_id(message)
    for answer in answers:
        check_message(answer, where)
        # A parse error (here: nesting too deep) is one whose id could not be read.
        if (
            expected is not None
            and "error" in answer
            and answer["id"] != expected
            and answer["error"]["code"] != -32700
        ):
            raise Violation(f"{where}: the request's id was {expected!r}, the answer's {answer['id']!r}")


def sweep(gateway: FuzzGateway, send: Any, modern: bool) -> None:
    """Send every case; collect every violation, so one run reports them all."""
    failures = []
    for label, body, message in cases(modern=modern):
        try:
            send(label, body, message)
        except (Violation, AssertionError) as exc:
            gateway.skip_log()  # what it logged belongs to this case
            failures.append(f"{label}: {str(exc)[:400]}")
    if failures:
        raise Violation(f"{len(failures)} cases failed:\n" + "\n".join(failures[:40]))


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_streamable_http(fuzz_gateway: FuzzGateway, era: str) -> None:
    gateway = fuzz_gateway
    session = gateway.session() if era == "legacy" else None

    def send(label: str, body: bytes, message: Any) -> None:
        if session is not None:
            headers = gateway.auth(
                accept="application/json, text/event-stream",
                **{"mcp-session-id": session, "mcp-protocol-version": "2025-11-25"},
            )
        else:
            headers = headers_for(gateway, message)
        reply = http_exchange(gateway.base, "POST", "/mcp", body, headers)
        check_reply(reply, label)
        check_answer(reply.messages, message, label)
        gateway.assert_no_traceback()

    sweep(gateway, send, modern=era == "modern")
    gateway.still_serves()


def test_rpc(fuzz_gateway: FuzzGateway) -> None:
    gateway = fuzz_gateway

    def send(label: str, body: bytes, message: Any) -> None:
        reply = http_exchange(gateway.base, "POST", "/rpc", body, gateway.auth())
        check_reply(reply, label)
        check_answer(reply.messages, message, label)
        gateway.assert_no_traceback()

    sweep(gateway, send, modern=False)
    sweep(gateway, send, modern=True)
    gateway.still_serves()


@pytest.mark.parametrize("transport", ["sse", "websocket"])
def test_a_session_on_a_connection(fuzz_gateway: FuzzGateway, transport: str) -> None:
    """HTTP+SSE and WebSocket: every case on one session, then a ping that must be answered after all of it."""
    gateway = fuzz_gateway
    holder: dict[str, Any] = {}

    def session() -> SseSession | WsSession:
        if holder.get("session") is None or holder["session"].closed:
            holder["session"] = (SseSession if transport == "sse" else WsSession)(gateway).initialize()
        return holder["session"]

    def send(label: str, body: bytes, message: Any) -> None:
        current = session()
        if isinstance(current, SseSession):
            reply = current.post(body, gateway.auth())
            check_reply(reply, label)
            check_answer(reply.messages, message, label)
        else:
            assert current.send(body.decode()), "the connection closed"
        ident = gateway.next_id("sentinel")
        current.request({"jsonrpc": "2.0", "id": ident, "method": "ping"})
        check_answer(current.drain_until(ident, label), message, label)
        gateway.assert_no_traceback()

    try:
        sweep(gateway, send, modern=False)
    finally:
        if holder.get("session") is not None:
            holder["session"].close()
