"""A JSON-RPC fuzzer over every MCP transport of a live gateway (issue #16, item 5).

Hypothesis draws what a client might send (tests/fuzz/strategies.py): envelopes of both protocol eras, valid
and broken (wrong `jsonrpc`, ids of every JSON type, missing and extra members, batches, huge and deeply
nested values, params that are not objects, unknown methods, every MCP method with random params, `_meta`
envelopes right and wrong), bodies that are not JSON or not UTF-8, odd content types, and wrong, missing or
mismatched MCP-Protocol-Version, Mcp-Method, Mcp-Name and Mcp-Session-Id headers. Each draw goes to one
transport: Streamable HTTP (`/mcp`, `/servers/fz/mcp`, sessions of 2025-11-25 and 2025-03-26, and stateless
2026-07-28 requests), the legacy HTTP+SSE message endpoint of an open `/sse` session, a WebSocket session,
and `POST /rpc`. The properties, for every answer:

- never an HTTP 5xx, and never a hang (each exchange has TIMEOUT seconds; tools time out sooner);
- no traceback, exception class or Python repr in any body, SSE event or WebSocket frame, and none in the
  gateway's own log;
- every JSON-RPC message is well-formed: `jsonrpc` "2.0", an error has an integer code and a string message,
  and answers a request whose id the gateway could read with that id (a parse error, and a refusal of the
  HTTP request itself, such as a missing session, answer with a null id);
- afterwards the gateway still answers a normal request on the same session or connection.

`make test` runs the `ci` profile (tests/fuzz/conftest.py); MCPGW_FUZZ_PROFILE=long runs many more. Random
draws rarely put one given wrong type in one given field: test_type_confusion.py sends all of those, and
test_regressions.py pins what the fuzzer found.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.strategies import Body, bodies, headers
from tests.fuzz.wire import (
    MAX_BODY,
    FuzzGateway,
    Reply,
    SseSession,
    StreamSession,
    Violation,
    WsSession,
    check_message,
    check_reply,
    http_exchange,
    reported,
    server_view,
    valid_id,
)

# Statuses whose error is about the HTTP request, not the JSON-RPC message in it: the body was not read (401,
# 403, 406, 413, 415, 421, 429) or the session or virtual server it names does not exist here (404), so the
# error answers nothing that has an id.
REFUSALS_WITHOUT_ID = frozenset({401, 403, 404, 405, 406, 413, 415, 421, 429})
# A 400 about the request's session or headers rather than its message (the Mcp-Session-Id or session_id it
# lacks, an MCP-Protocol-Version no session era knows) is given with a null id, as the MCP SDKs' servers do.
SESSION_REFUSAL = re.compile(r"Bad Request: ")
PARSE_ERROR = -32700
# How a WebSocket session may end after one frame: a binary frame (4415), a frame over the size bound (4413).
WS_CLOSES = frozenset({4413, 4415})


def check_ids(body: Body, reply: Reply, where: str) -> None:
    """An error answering a message whose id the gateway could read carries that id (JSON-RPC 2.0, section 5)."""
    sent = server_view(body.data)
    answers = [m for m in reply.messages if isinstance(m, dict) and ("result" in m or "error" in m)]
    if isinstance(sent, list):  # a batch: each answer names one of its requests, or none when it cannot
        readable = {valid_id(item) for item in sent} - {None}
        unreadable = sum(1 for item in sent if valid_id(item) is None)
        nameless = [m for m in answers if m.get("id") is None]
        for answer in answers:
            if answer.get("id") is not None and answer["id"] not in readable:
                raise Violation(f"{where}: a batch answer with an id no request had: {answer}")
        if len(nameless) > max(unreadable, 1):
            raise Violation(f"{where}: {len(nameless)} answers with a null id for {unreadable} unreadable items")
        return
    expected = valid_id(sent)
    if expected is None or reply.status in REFUSALS_WITHOUT_ID:
        return
    for answer in answers:
        error = answer.get("error", {})
        refusal = error.get("message", "") if reply.status == 400 else ""
        if answer.get("id") is None and (SESSION_REFUSAL.match(refusal) or error.get("code") == PARSE_ERROR):
            continue  # a parse error is one the gateway could not read the message, by definition
        if answer.get("id") != expected:
            raise Violation(f"{where}: the request's id was {expected!r}, the answer's {answer.get('id')!r}: {answer}")


def check_frames(frames: list[Any], sent: Any, where: str) -> None:
    """Messages a session received: well-formed, nothing the reader could not take, and no error answering
    the fuzzed message without its id when it had one."""
    expected = valid_id(sent) if isinstance(sent, dict) and "method" in sent else None
    for frame in frames:
        if isinstance(frame, dict) and "reader-error" in frame:
            raise Violation(f"{where}: {frame}")
        check_message(frame, where)
        parse_error = "error" in frame and frame["error"].get("code") == PARSE_ERROR  # (nested too deep, here)
        if expected is not None and "error" in frame and frame.get("id") is None and not parse_error:
            raise Violation(f"{where}: an error with a null id after a request with id {expected!r}: {frame}")


def sentinel(gateway: FuzzGateway, session: StreamSession, where: str) -> list[Any]:
    """Ping on the session and collect everything up to its answer (the gateway still serves it)."""
    ident = gateway.next_id("sentinel")
    session.request({"jsonrpc": "2.0", "id": ident, "method": "ping"})
    frames = session.drain_until(ident, where)
    assert frames[-1] == {"jsonrpc": "2.0", "id": ident, "result": {}}, frames[-1]
    return frames


# -- Streamable HTTP ---------------------------------------------------------------------------------------

STREAMABLE_PATHS = ("/mcp", "/mcp", "/mcp", "/servers/fz/mcp", "/mcp/", "/servers/nope/mcp")


@pytest.fixture(scope="module")
def streamable_sessions(fuzz_gateway: FuzzGateway) -> dict[str, list[str]]:
    """Sessions of both session-era shapes on each endpoint: 2025-11-25, and 2025-03-26 (which takes batches)."""
    return {
        path: [fuzz_gateway.session("2025-11-25", path), fuzz_gateway.session("2025-03-26", path)]
        for path in ("/mcp", "/servers/fz/mcp")
    }


@given(data=st.data())
def test_streamable_http(fuzz_gateway: FuzzGateway, streamable_sessions: dict[str, list[str]], data: Any) -> None:
    """Anything POSTed to a Streamable HTTP endpoint, in a session or stateless, is answered well."""
    gateway = fuzz_gateway
    path = data.draw(st.sampled_from(STREAMABLE_PATHS), label="path")
    era = data.draw(st.sampled_from(["modern", "legacy", "any"]), label="era")
    body = data.draw(bodies(gateway.catalog, era=era), label="body")
    sessions = streamable_sessions.get(path.rstrip("/"), [])
    sent_headers = data.draw(headers(body, token=gateway.token, sessions=sessions, streamable=True), label="headers")
    verb = data.draw(st.sampled_from(["POST"] * 12 + ["PUT", "PATCH", "OPTIONS"]), label="verb")
    with reported(gateway, path=path, verb=verb, headers=sent_headers, body=body):
        reply = http_exchange(gateway.base, verb, path, body.data, sent_headers)
        check_reply(reply, "Streamable HTTP")
        check_ids(body, reply, "Streamable HTTP")
        gateway.assert_no_traceback()
        session = streamable_sessions["/mcp"][0]
        ident = gateway.next_id("sentinel")
        ping = orjson.dumps({"jsonrpc": "2.0", "id": ident, "method": "ping"})
        headers_of_session = gateway.auth(
            accept="application/json, text/event-stream",
            **{"mcp-session-id": session, "mcp-protocol-version": "2025-11-25"},
        )
        answer = http_exchange(gateway.base, "POST", "/mcp", ping, headers_of_session)
        assert answer.status == 200, answer
        assert answer.messages == [{"jsonrpc": "2.0", "id": ident, "result": {}}], answer


# -- legacy HTTP+SSE ---------------------------------------------------------------------------------------


class Holder[S: StreamSession]:
    """The current session of a long-lived transport, replaced when a fuzzed message ends it."""

    def __init__(self, kind: type[S], gateway: FuzzGateway) -> None:
        self.kind, self.gateway = kind, gateway
        self.session: S | None = None

    def current(self, *, fresh: bool) -> S:
        """The open session; a new one when ``fresh`` (left uninitialized) or when the last one has closed."""
        if fresh or self.session is None or self.session.closed:
            self.close()
            self.session = self.kind(self.gateway) if fresh else self.kind(self.gateway).initialize()
        return self.session

    def renew(self) -> S:
        """A new, initialized session in place of the current one."""
        self.close()
        self.session = self.kind(self.gateway).initialize()
        return self.session

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None


def held[S: StreamSession](kind: type[S], gateway: FuzzGateway) -> Iterator[Holder[S]]:
    """A module's holder of ``kind`` sessions; afterwards its session is closed and the gateway still serves."""
    holder = Holder(kind, gateway)
    yield holder
    holder.close()
    gateway.still_serves()


@pytest.fixture(scope="module")
def sse_holder(fuzz_gateway: FuzzGateway) -> Iterator[Holder[SseSession]]:
    yield from held(SseSession, fuzz_gateway)


@given(data=st.data())
def test_sse_message_endpoint(fuzz_gateway: FuzzGateway, sse_holder: Holder[SseSession], data: Any) -> None:
    """Anything POSTed to the HTTP+SSE message endpoint of an open session is answered well, on the POST or
    on the stream, and the session goes on."""
    gateway = fuzz_gateway
    fresh = data.draw(st.integers(0, 9), label="fresh") == 0  # now and then, a session not yet initialized
    session = sse_holder.current(fresh=fresh)
    own = session.endpoint
    endpoint = data.draw(
        st.sampled_from(
            [own] * 8
            + [
                "/message",
                "/message?session_id=nope",
                "/servers/fz" + own,
                own + "&session_id=other",
                "/message?session_id=" + own.rsplit("=", 1)[1][:-1],
            ]
        ),
        label="endpoint",
    )
    body = data.draw(bodies(gateway.catalog, era="legacy"), label="body")
    sent_headers = data.draw(headers(body, token=gateway.token), label="headers")
    with reported(gateway, endpoint=endpoint, headers=sent_headers, body=body):
        reply = session.post(body.data, sent_headers, endpoint)
        check_reply(reply, "HTTP+SSE POST")
        check_ids(body, reply, "HTTP+SSE POST")
        frames = sentinel(gateway, session, "HTTP+SSE stream")
        check_frames(frames, server_view(body.data) if reply.status == 202 else None, "HTTP+SSE stream")
        gateway.assert_no_traceback()


# -- WebSocket ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ws_holder(fuzz_gateway: FuzzGateway) -> Iterator[Holder[WsSession]]:
    yield from held(WsSession, fuzz_gateway)


@given(data=st.data())
def test_websocket(fuzz_gateway: FuzzGateway, ws_holder: Holder[WsSession], data: Any) -> None:
    """Any frame on a WebSocket session is answered well; a frame that ends the session ends it with the
    documented close code and a reason, and a new session works."""
    gateway = fuzz_gateway
    fresh = data.draw(st.integers(0, 9), label="fresh") == 0
    session = ws_holder.current(fresh=fresh)
    body = data.draw(bodies(gateway.catalog, era="any"), label="body")
    binary = data.draw(st.integers(0, 19), label="binary") == 0
    try:
        frame: str | bytes = body.data if binary else body.data.decode("utf-8")
    except UnicodeDecodeError:  # what is not UTF-8 cannot be a text frame
        frame = body.data
    with reported(gateway, frame_type="binary" if isinstance(frame, bytes) else "text", body=body):
        sent = session.send(frame)
        if isinstance(frame, bytes) or len(body.data) > MAX_BODY:
            # The gateway says why (an error, id null), then closes with the documented code.
            session.reader.join(10)
            assert session.closed, "the gateway kept a session open after a frame it refuses"
            assert session.close_code in WS_CLOSES, session.close_code
            said = []
            while not session.frames.empty():
                said.append(session.frames.get_nowait())
            # What it said before closing is checked when it comes; whether it comes is the WebSocket tests'
            # business (once in thousands of fresh sessions it did not reach this client before the close).
            check_frames([f for f in said if f is not None], None, "WebSocket")
            sentinel(gateway, ws_holder.renew(), "WebSocket (new session)")
        else:
            assert sent, "the gateway closed the connection on a text frame within bounds"
            frames = sentinel(gateway, session, "WebSocket")
            check_frames(frames, server_view(body.data), "WebSocket")
        gateway.assert_no_traceback()


# -- POST /rpc ---------------------------------------------------------------------------------------------

RPC_PATHS = ("/rpc", "/rpc", "/rpc", "/servers/fz/rpc", "/servers/nope/rpc")


@given(data=st.data())
def test_rpc(fuzz_gateway: FuzzGateway, data: Any) -> None:
    """Anything POSTed to /rpc gets one JSON answer (or 204), never a server error."""
    gateway = fuzz_gateway
    path = data.draw(st.sampled_from(RPC_PATHS), label="path")
    body = data.draw(bodies(gateway.catalog, era="any"), label="body")
    sent_headers = data.draw(headers(body, token=gateway.token, streamable=True), label="headers")
    verb = data.draw(st.sampled_from(["POST"] * 12 + ["GET", "PUT", "DELETE"]), label="verb")
    with reported(gateway, path=path, verb=verb, headers=sent_headers, body=body):
        reply = http_exchange(gateway.base, verb, path, body.data, sent_headers)
        check_reply(reply, "/rpc")
        check_ids(body, reply, "/rpc")
        gateway.assert_no_traceback()
        ident = gateway.next_id("sentinel")
        assert gateway.rpc({"jsonrpc": "2.0", "id": ident, "method": "ping"}) == {
            "jsonrpc": "2.0",
            "id": ident,
            "result": {},
        }


def test_the_gateway_still_serves_after_the_fuzz(fuzz_gateway: FuzzGateway) -> None:
    """After every fuzz test above, a plain stateless tools/list and a /rpc ping are answered."""
    fuzz_gateway.still_serves()
