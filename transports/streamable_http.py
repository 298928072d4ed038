"""Streamable HTTP as a lean ASGI app: session-era sessions (MCP 2025-03-26 .. 2025-11-25) and
2026-07-28 stateless requests on the same endpoint.

POST carries one JSON-RPC message (or, for 2025-03-26 sessions, a batch); the core decides what it is
(``McpCore.post``) and answers with an ``Outcome``: a body to send now, or a ``Call`` to run, answered
with JSON, or with an SSE stream as soon as the call sends the client something before its result
(progress, logs, a server-to-client request). GET opens the standalone SSE stream of a session (or
resumes one with Last-Event-ID); DELETE ends the session. All MCP semantics live in
``transports.protocol``; this file admits the caller (``edge.admit``) and frames bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from django.conf import settings

from transports import edge
from transports.protocol import jsonrpc, modern
from transports.protocol.catalog import CatalogUnavailable
from transports.protocol.jsonrpc import JsonRpcError
from transports.protocol.outcome import Call, Caller
from transports.protocol.sessions import EventLog, SessionLimitReached, SessionStoreUnavailable
from transports.runtime import get_core

logger = logging.getLogger(__name__)

JSON = b"application/json"
SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]


class HttpError(Exception):
    """Answer with this status and a JSON-RPC error body (id null)."""

    def __init__(self, status: int, code: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or []


def _accepts(accept: str, *types: str) -> bool:
    items = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    return "*/*" in items or all(t in items for t in types)


async def _send_json(send: Any, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = b"" if body is None else jsonrpc.dumps(body)
    head = [(b"content-type", JSON), (b"content-length", str(len(payload)).encode())] if body is not None else []
    await send({"type": "http.response.start", "status": status, "headers": head + (headers or [])})
    await send({"type": "http.response.body", "body": payload})


def _priming(event_id: str) -> bytes:
    """The first event of a 2025-11-25 stream: an id to resume from, and how long to wait before reconnecting."""
    return f"id: {event_id}\nretry: {settings.GATEWAY_SSE_RETRY_MS}\ndata: \n\n".encode()


def _sse_event(message: dict[str, Any] | None, event_id: str | None = None) -> bytes:
    parts = []
    if event_id is not None:
        parts.append(f"id: {event_id}\n".encode())
    if message is None:
        parts.append(b"data: \n\n")
    else:
        parts.append(b"event: message\ndata: " + jsonrpc.dumps(message) + b"\n\n")
    return b"".join(parts)


class StreamableHttpEndpoint:
    """ASGI app for /mcp and /servers/<server>/mcp."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = edge.scope_headers(scope)
        server = scope.get("url_route", {}).get("kwargs", {}).get("server")
        try:
            caller = await edge.admit(headers, server)
            method = scope["method"]
            if method == "POST":
                await self._post(receive, send, caller)
            elif method == "GET":
                await self._get(receive, send, caller)
            elif method == "DELETE":
                await get_core().end_session(caller, headers.get("mcp-session-id"))
                await _send_json(send, 200, None)
            else:
                raise HttpError(
                    405, jsonrpc.INVALID_REQUEST, f"Method {method} not allowed.", [(b"allow", b"GET, POST, DELETE")]
                )
        except HttpError as exc:
            body = jsonrpc.error_response(None, JsonRpcError(exc.code, exc.message))
            await _send_json(send, exc.status, body, exc.headers)
        except edge.EdgeRefused as exc:  # admission, a rate limit (429, Retry-After), or a bound on open streams
            code = jsonrpc.INVALID_REQUEST if exc.status in (401, 403, 421) else jsonrpc.SERVER_ERROR
            error = exc.error if isinstance(exc, edge.RateRefused) else JsonRpcError(code, exc.message)
            body = jsonrpc.error_response(None, error)
            await _send_json(send, exc.status, body, exc.headers)
        except JsonRpcError as exc:  # the session a request names (400, 404)
            await _send_json(send, exc.http_status, jsonrpc.error_response(None, exc))
        except SessionLimitReached as exc:
            what = "Too Many Requests" if exc.status == 429 else "Service Unavailable"
            error = JsonRpcError(jsonrpc.SERVER_ERROR, f"{what}: {exc}.")
            await _send_json(send, exc.status, jsonrpc.error_response(None, error))
        except CatalogUnavailable as exc:
            await _send_json(send, 503, jsonrpc.error_response(None, JsonRpcError(jsonrpc.INTERNAL_ERROR, str(exc))))

    async def _read_body(self, receive: Any) -> bytes:
        limit = settings.GATEWAY_MAX_BODY_BYTES
        chunks, size = [], 0
        while True:
            event = await receive()
            if event["type"] == "http.disconnect":
                raise HttpError(400, jsonrpc.INVALID_REQUEST, "The client went away.")
            chunk = event.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise HttpError(413, jsonrpc.INVALID_REQUEST, f"The request body is larger than {limit} bytes.")
            chunks.append(chunk)
            if not event.get("more_body"):
                return b"".join(chunks)

    # -- POST ---------------------------------------------------------------------------------

    async def _post(self, receive: Any, send: Any, caller: Caller) -> None:
        headers = caller.headers
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise HttpError(
                415, jsonrpc.INVALID_REQUEST, "Unsupported Media Type: send Content-Type: application/json."
            )
        if not _accepts(headers.get("accept", ""), "application/json", "text/event-stream"):
            raise HttpError(
                406, jsonrpc.INVALID_REQUEST, "Not Acceptable: Accept must list application/json and text/event-stream."
            )
        body = await self._read_body(receive)
        try:
            payload = jsonrpc.loads(body)
        except JsonRpcError as exc:
            raise HttpError(400, exc.code, exc.message) from None
        outcome = await get_core().post(payload, caller)
        call = outcome.call
        if call is None:
            extra = [(b"mcp-session-id", outcome.session_id.encode())] if outcome.session_id else None
            await _send_json(send, outcome.status, outcome.body, extra)
        elif call.listen is not None:
            await self._listen(receive, send, call, caller)
        elif call.stateless:
            await self._stateless(receive, send, call)
        else:
            await self._request(send, call)

    async def _request(self, send: Any, call: Call) -> None:
        """Answer one request of a session: JSON unless the call talks to the client first, then SSE.
        tools/call on 2025-11-25 sessions always streams, with a priming event and `retry`, so a client
        whose connection drops mid-call resumes with GET + Last-Event-ID (SEP-1699)."""
        stream: EventLog | None = None
        connected = True
        open_stream = get_core().request_stream

        async def write(body: bytes, more: bool = True) -> None:
            nonlocal connected
            if connected:
                try:
                    await send({"type": "http.response.body", "body": body, "more_body": more})
                except (OSError, RuntimeError):  # the client went away: the log keeps what follows
                    connected = False

        async def start_sse() -> EventLog:
            nonlocal stream
            stream = open_stream(call.session, call.message.get("id"))  # type: ignore[arg-type]
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            if call.primed:
                await write(_priming(f"{stream.id}:0"))
            return stream

        async def logged(log: EventLog, message: dict[str, Any] | None, last: bool = False) -> str | None:
            """The event id of a message written to the stream's log; None when the session store cannot be
            reached: the client still gets the message, it only cannot resume from there."""
            try:
                if message is None:
                    await log.finish()
                    return None
                return await log.append(message, last=last)
            except SessionStoreUnavailable:
                return None

        async def emit(related: dict[str, Any]) -> None:
            target = stream or await start_sse()
            await write(_sse_event(related, await logged(target, related)))

        if call.streamed:
            await start_sse()
        answer = await call.run(emit)
        if stream is not None:
            event_id = await logged(stream, answer, last=True)  # the answer ends the stream's log (one write)
            await write(_sse_event(answer, event_id) if answer is not None else b"", more=False)
        elif answer is None:  # cancelled before saying anything: an empty stream, no response
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            await send({"type": "http.response.body", "body": b""})
        else:
            await _send_json(send, 200, answer)

    # -- 2026-07-28: one self-contained request per POST ----------------------------------------

    async def _stateless(self, receive: Any, send: Any, call: Call) -> None:
        """A 2026-07-28 request: JSON, or an SSE stream once the call reports progress or logs; closing
        the stream cancels the request (basic/transports/streamable-http)."""
        streaming = False

        async def emit(related: dict[str, Any]) -> None:
            nonlocal streaming
            if not streaming:
                streaming = True
                await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            await send({"type": "http.response.body", "body": _sse_event(related), "more_body": True})

        work = asyncio.ensure_future(call.run(emit))
        disconnected = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            await asyncio.wait({work, disconnected}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not work.done():  # the client closed the stream: that is the cancellation
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
            disconnected.cancel()
        if work.cancelled() or disconnected.done():
            return
        answer = work.result()
        if streaming:
            await send(
                {"type": "http.response.body", "body": _sse_event(answer) if answer else b"", "more_body": False}
            )
        elif answer is not None:
            status = modern.HTTP_STATUS.get(answer["error"]["code"], 200) if "error" in answer else 200
            await _send_json(send, status, answer)

    async def _listen(self, receive: Any, send: Any, call: Call, caller: Caller) -> None:
        """subscriptions/listen: an SSE stream that stays open; acknowledgement first, then the
        notifications the filter asked for, each tagged with the subscription id."""
        try:
            edge.streams.acquire(caller.username)
        except edge.EdgeRefused as exc:
            error = JsonRpcError(jsonrpc.SERVER_ERROR, exc.message)
            await _send_json(send, exc.status, jsonrpc.error_response(call.message["id"], error))
            return
        try:
            await self._listening(receive, send, call)
        finally:
            edge.streams.release(caller.username)

    async def _listening(self, receive: Any, send: Any, call: Call) -> None:
        core = get_core()
        assert call.listen is not None
        try:
            listener = await call.listen()
        except JsonRpcError as exc:
            status = modern.HTTP_STATUS.get(exc.code, 400)
            await _send_json(send, status, jsonrpc.error_response(call.message["id"], exc))
            return
        keepalive = settings.GATEWAY_SSE_KEEPALIVE
        disconnected = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            while not disconnected.done():
                getter = asyncio.ensure_future(listener.queue.get())
                await asyncio.wait({getter, disconnected}, timeout=keepalive, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    if not disconnected.done():
                        await send({"type": "http.response.body", "body": b": keep-alive\n\n", "more_body": True})
                    continue
                item = getter.result()
                if item is None:  # closed by the gateway (it fell behind)
                    break
                await send({"type": "http.response.body", "body": _sse_event(item), "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except OSError:
            pass
        finally:
            disconnected.cancel()
            await core.unlisten(listener)

    # -- GET: the standalone stream -----------------------------------------------------------

    async def _get(self, receive: Any, send: Any, caller: Caller) -> None:
        """The standalone stream, or with Last-Event-ID the resumption of any stream of the session
        (what was missed is replayed; a request stream ends after its response)."""
        if not _accepts(caller.headers.get("accept", ""), "text/event-stream"):
            raise HttpError(
                406, jsonrpc.INVALID_REQUEST, "Not Acceptable: the GET stream needs Accept: text/event-stream."
            )
        core = get_core()
        session, stream, seq, resumed = await core.reader(
            caller, caller.headers.get("mcp-session-id"), caller.headers.get("last-event-id", "")
        )
        # The stream asks after its session when it sends a keep-alive, and at least twice per idle timeout even
        # while events flow: asking is what keeps the session from expiring under its stream in the shared store,
        # so a keep-alive at or above the idle timeout lost it between two of them (bench/soak_findings.md). With
        # an idle timeout under twice the keep-alive, the keep-alives come that often too.
        every = min(settings.GATEWAY_SSE_KEEPALIVE, settings.GATEWAY_SESSION_IDLE_TIMEOUT / 2)
        with edge.stream_slot(caller.username):
            disconnected = asyncio.ensure_future(_wait_disconnect(receive))
            session.listeners += 1
            try:
                await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
                if not resumed and core.primed(session):
                    await send(
                        {"type": "http.response.body", "body": _priming(f"{stream.id}:{seq}"), "more_body": True}
                    )
                else:
                    await send({"type": "http.response.body", "body": b": stream open\n\n", "more_body": True})
                asked = time.monotonic()
                while not disconnected.done():
                    events, done = await stream.read(seq)
                    for number, message in events:
                        body = _sse_event(message, f"{stream.id}:{number}")
                        await send({"type": "http.response.body", "body": body, "more_body": True})
                        seq = number
                    if done or session.closed:
                        break
                    waiter = asyncio.ensure_future(stream.wait(seq, every))
                    await asyncio.wait({waiter, disconnected}, return_when=asyncio.FIRST_COMPLETED)
                    if not waiter.done():
                        waiter.cancel()
                        continue
                    quiet = not waiter.result()
                    if disconnected.done() or not (quiet or time.monotonic() - asked >= every):
                        continue
                    asked = time.monotonic()
                    if not await core.alive(session, stream):  # ended (DELETE, expiry) elsewhere
                        break
                    if quiet:
                        await send({"type": "http.response.body", "body": b": keep-alive\n\n", "more_body": True})
                await send({"type": "http.response.body", "body": b""})
            finally:
                session.listeners -= 1
                disconnected.cancel()


async def _wait_disconnect(receive: Any) -> None:
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            return


endpoint = StreamableHttpEndpoint()
