"""Streamable HTTP (MCP 2025-03-26 .. 2025-11-25, session era) as a lean ASGI app.

POST carries one JSON-RPC message (or, for 2025-03-26 sessions, a batch); a request is answered
with JSON, or with an SSE stream as soon as the call sends the client something before its result
(progress, logs, a server-to-client request). GET opens the standalone SSE stream; DELETE ends the
session. All MCP semantics live in ``transports.protocol``; this file only frames bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from django.conf import settings

from registry.auth import WWW_AUTHENTICATE
from registry.exceptions import AuthenticationFailed
from transports import edge
from transports.protocol import jsonrpc, modern, versions
from transports.protocol.catalog import CatalogUnavailable
from transports.protocol.jsonrpc import JsonRpcError
from transports.protocol.sessions import EventLog, Session, SessionLimitReached, parse_event_id
from transports.runtime import get_core

logger = logging.getLogger(__name__)

JSON = b"application/json"
SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]
# Requests that always answer on a resumable SSE stream (2025-11-25 sessions): the long-running ones.
STREAMED_METHODS = frozenset({"tools/call"})


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
        headers = {k.decode("latin-1").lower(): v.decode("latin-1").strip() for k, v in scope["headers"]}
        server = scope.get("url_route", {}).get("kwargs", {}).get("server")
        try:
            host = headers.get("host", "")
            if not edge.host_allowed(host):
                raise HttpError(421, jsonrpc.INVALID_REQUEST, f"Misdirected request: host {host!r} is not served here.")
            if not edge.origin_allowed(headers.get("origin"), host):
                raise HttpError(403, jsonrpc.INVALID_REQUEST, "Forbidden: this Origin may not use the MCP endpoint.")
            try:
                principal = await edge.credentials.principal(headers.get("authorization"))
            except AuthenticationFailed as exc:
                raise HttpError(
                    401, jsonrpc.INVALID_REQUEST, exc.message, [(b"www-authenticate", WWW_AUTHENTICATE.encode())]
                ) from None
            method = scope["method"]
            if method == "POST":
                await self._post(scope, receive, send, headers, principal, server)
            elif method == "GET":
                await self._get(receive, send, headers, principal, server)
            elif method == "DELETE":
                session = await self._session(headers, principal, server)
                await get_core().sessions.delete(session.id)
                await _send_json(send, 200, None)
            else:
                raise HttpError(
                    405, jsonrpc.INVALID_REQUEST, f"Method {method} not allowed.", [(b"allow", b"GET, POST, DELETE")]
                )
        except HttpError as exc:
            body = jsonrpc.error_response(None, JsonRpcError(exc.code, exc.message))
            await _send_json(send, exc.status, body, exc.headers)
        except edge.EdgeRefused as exc:  # a bound on open streams
            body = jsonrpc.error_response(None, JsonRpcError(jsonrpc.SERVER_ERROR, exc.message))
            await _send_json(send, exc.status, body, exc.headers)
        except CatalogUnavailable as exc:
            await _send_json(send, 503, jsonrpc.error_response(None, JsonRpcError(jsonrpc.INTERNAL_ERROR, str(exc))))

    # -- helpers ------------------------------------------------------------------------------

    async def _session(self, headers: dict[str, str], principal: Any, server: str | None) -> Session:
        session_id = headers.get("mcp-session-id")
        if not session_id:
            raise HttpError(
                400, jsonrpc.INVALID_REQUEST, "Bad Request: Mcp-Session-Id header is required (send initialize first)."
            )
        session = await get_core().sessions.get(session_id)
        # A session is bound to who opened it and where: anything else looks like an unknown session.
        if session is None or session.username != principal.username or session.server != server:
            raise HttpError(
                404, jsonrpc.INVALID_REQUEST, "Session not found: it ended or never existed; initialize again."
            )
        version = headers.get("mcp-protocol-version")
        if version is not None and version not in versions.LEGACY_VERSIONS:
            raise HttpError(400, jsonrpc.INVALID_REQUEST, f"Bad Request: unsupported MCP-Protocol-Version {version!r}.")
        return session

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

    async def _post(
        self, scope: Any, receive: Any, send: Any, headers: dict[str, str], principal: Any, server: str | None
    ) -> None:
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
        core = get_core()
        if (
            isinstance(payload, dict)
            and payload.get("method") == "initialize"
            and "id" in payload
            and not modern.is_modern(payload)
        ):
            # The session the request names, if it is live and the caller's (a stale or unknown id: the
            # client is starting over).
            live = await get_core().sessions.get(headers["mcp-session-id"]) if "mcp-session-id" in headers else None
            if live is not None and (live.username != principal.username or live.server != server):
                live = None
            await self._initialize(send, payload, principal, server, live)
            return
        if modern.is_modern(payload) or (
            "mcp-session-id" not in headers
            and headers.get("mcp-protocol-version", versions.DEFAULT_HEADER_VERSION) not in versions.LEGACY_VERSIONS
        ):
            await self._modern(receive, send, headers, principal, server, payload)
            return
        session = await self._session(headers, principal, server)
        if isinstance(payload, list):
            if not versions.allows_batches(session.protocol_version):
                raise HttpError(
                    400,
                    jsonrpc.INVALID_REQUEST,
                    f"Invalid Request: JSON-RPC batches are not part of MCP {session.protocol_version}.",
                )
            if not payload:
                raise HttpError(400, jsonrpc.INVALID_REQUEST, "Invalid Request: an empty batch.")
            await self._batch(send, session, payload)
            return
        try:
            message = jsonrpc.validate(payload)
        except JsonRpcError as exc:
            request_id = payload.get("id") if isinstance(payload, dict) else None
            await _send_json(
                send, 400, jsonrpc.error_response(request_id if isinstance(request_id, str | int) else None, exc)
            )
            return
        kind = jsonrpc.kind(message)
        if kind == "response":
            await core.accept_response(session, message)
            await _send_json(send, 202, None)
        elif kind == "notification":
            await core.notify(session, message)
            await _send_json(send, 202, None)
        else:
            await self._request(send, session, message)

    async def _initialize(
        self, send: Any, message: dict[str, Any], principal: Any, server: str | None, current: Session | None
    ) -> None:
        try:
            jsonrpc.validate(message)
            session, result = await get_core().initialize(
                message, username=principal.username, scopes=principal.scopes, server=server, current=current
            )
        except JsonRpcError as exc:
            status = exc.http_status if exc.http_status != 200 else 400
            await _send_json(send, status, jsonrpc.error_response(message.get("id"), exc))
            return
        except SessionLimitReached as exc:
            what = "Too Many Requests" if exc.status == 429 else "Service Unavailable"
            raise HttpError(exc.status, jsonrpc.SERVER_ERROR, f"{what}: {exc}.") from None
        await _send_json(send, 200, jsonrpc.response(message["id"], result), [(b"mcp-session-id", session.id.encode())])

    async def _request(self, send: Any, session: Session, message: dict[str, Any]) -> None:
        """Answer one request: JSON unless the call talks to the client first, then SSE. tools/call
        on 2025-11-25 sessions always streams, with a priming event and `retry`, so a client whose
        connection drops mid-call resumes with GET + Last-Event-ID (SEP-1699)."""
        core = get_core()
        stream: EventLog | None = None
        connected = True

        async def write(body: bytes, more: bool = True) -> None:
            nonlocal connected
            if connected:
                try:
                    await send({"type": "http.response.body", "body": body, "more_body": more})
                except (OSError, RuntimeError):  # the client went away: the log keeps what follows
                    connected = False

        async def start_sse() -> EventLog:
            nonlocal stream
            stream = core.sessions.open_stream(session)
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            if versions.has_priming_events(session.protocol_version):
                await write(_priming(f"{stream.id}:0"))
            return stream

        async def emit(related: dict[str, Any]) -> None:
            target = stream or await start_sse()
            await write(_sse_event(related, await target.append(related)))

        if message["method"] in STREAMED_METHODS and versions.has_priming_events(session.protocol_version):
            await start_sse()
        try:
            exchange = await core.exchange(session, emit, message["id"])
            answer = await core.handle(message, exchange)
        except JsonRpcError as exc:
            answer = jsonrpc.error_response(message["id"], exc)
        if stream is not None:
            if answer is not None:  # the answer ends the stream's log (one write)
                body = _sse_event(answer, await stream.append(answer, last=True))
            else:
                body = b""
                await stream.finish()
            await write(body, more=False)
        elif answer is None:  # cancelled before saying anything: an empty stream, no response
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            await send({"type": "http.response.body", "body": b""})
        else:
            await _send_json(send, 200, answer)

    async def _batch(self, send: Any, session: Session, batch: list[Any]) -> None:
        """2025-03-26 batches: every request answered, in one JSON array; notifications just taken."""
        core = get_core()
        answers: list[dict[str, Any]] = []

        async def emit(related: dict[str, Any]) -> None:
            await core.push(session, related)  # a batch answers in one JSON body: related messages go to GET

        for item in batch:
            try:
                message = jsonrpc.validate(item)
            except JsonRpcError as exc:
                answers.append(jsonrpc.error_response(None, exc))
                continue
            kind = jsonrpc.kind(message)
            if kind == "response":
                await core.accept_response(session, message)
            elif kind == "notification":
                await core.notify(session, message)
            elif message["method"] == "initialize":
                answers.append(
                    jsonrpc.error_response(
                        message["id"], JsonRpcError(jsonrpc.INVALID_REQUEST, "initialize cannot be batched.")
                    )
                )
            else:
                exchange = await core.exchange(session, emit, message["id"])
                answer = await core.handle(message, exchange)
                if answer is not None:
                    answers.append(answer)
        if answers:
            await _send_json(send, 200, answers)
        else:
            await _send_json(send, 202, None)

    # -- 2026-07-28: one self-contained request per POST ----------------------------------------

    async def _modern(
        self, receive: Any, send: Any, headers: dict[str, str], principal: Any, server: str | None, payload: Any
    ) -> None:
        """A stateless request: JSON, or an SSE stream once the call reports progress or logs; closing
        the stream cancels the request (basic/transports/streamable-http)."""
        core = get_core()
        request_id = payload.get("id") if isinstance(payload, dict) else None
        request_id = request_id if isinstance(request_id, str | int) and not isinstance(request_id, bool) else None
        try:
            message = jsonrpc.validate(payload)
            kind = jsonrpc.kind(message)
            if kind == "response":
                raise JsonRpcError(jsonrpc.INVALID_REQUEST, "Invalid Request: 2026-07-28 clients send no responses.")
            if kind == "notification":  # nothing in this revision needs one: accepted and dropped
                await _send_json(send, 202, None)
                return
            envelope = modern.parse_envelope(message)
            modern.check_headers(message, headers, envelope.protocol_version)
            modern.check_version(envelope)
            await core.modern_view(server)  # 404 for a virtual server that does not exist
        except JsonRpcError as exc:
            status = exc.http_status if exc.http_status != 200 else modern.HTTP_STATUS.get(exc.code, 400)
            await _send_json(send, status, jsonrpc.error_response(request_id, exc))
            return
        if message["method"] == "subscriptions/listen":
            await self._listen(receive, send, message, envelope, principal, server)
            return
        streaming = False

        async def emit(related: dict[str, Any]) -> None:
            nonlocal streaming
            if not streaming:
                streaming = True
                await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            await send({"type": "http.response.body", "body": _sse_event(related), "more_body": True})

        work = asyncio.ensure_future(
            core.handle_modern(
                message,
                envelope,
                username=principal.username,
                scopes=principal.scopes,
                server=server,
                emit=emit,
                headers=headers,
            )
        )
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

    async def _listen(
        self, receive: Any, send: Any, message: dict[str, Any], envelope: Any, principal: Any, server: str | None
    ) -> None:
        """subscriptions/listen: an SSE stream that stays open; acknowledgement first, then the
        notifications the filter asked for, each tagged with the subscription id."""
        try:
            edge.streams.acquire(principal.username)
        except edge.EdgeRefused as exc:
            error = JsonRpcError(jsonrpc.SERVER_ERROR, exc.message)
            await _send_json(send, exc.status, jsonrpc.error_response(message["id"], error))
            return
        try:
            await self._listening(receive, send, message, envelope, principal, server)
        finally:
            edge.streams.release(principal.username)

    async def _listening(
        self, receive: Any, send: Any, message: dict[str, Any], envelope: Any, principal: Any, server: str | None
    ) -> None:
        core = get_core()
        try:
            listener = await core.listen(
                message, envelope, username=principal.username, scopes=principal.scopes, server=server
            )
        except JsonRpcError as exc:
            status = modern.HTTP_STATUS.get(exc.code, 400)
            await _send_json(send, status, jsonrpc.error_response(message["id"], exc))
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

    async def _get(self, receive: Any, send: Any, headers: dict[str, str], principal: Any, server: str | None) -> None:
        """The standalone stream, or with Last-Event-ID the resumption of any stream of the session
        (what was missed is replayed; a request stream ends after its response)."""
        if not _accepts(headers.get("accept", ""), "text/event-stream"):
            raise HttpError(
                406, jsonrpc.INVALID_REQUEST, "Not Acceptable: the GET stream needs Accept: text/event-stream."
            )
        session = await self._session(headers, principal, server)
        core = get_core()
        resume = parse_event_id(headers.get("last-event-id", ""))
        stream = await core.sessions.find_stream(session, resume[0]) if resume else None
        if stream is None:  # a fresh standalone stream (or one we can no longer resume): new messages only
            stream, resumed = core.sessions.standalone(session), False
            seq = await stream.position()
        else:
            seq, resumed = resume[1], True  # type: ignore[index]
        keepalive = settings.GATEWAY_SSE_KEEPALIVE
        with edge.stream_slot(principal.username):
            disconnected = asyncio.ensure_future(_wait_disconnect(receive))
            session.listeners += 1
            try:
                await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
                if not resumed and versions.has_priming_events(session.protocol_version):
                    await send(
                        {"type": "http.response.body", "body": _priming(f"{stream.id}:{seq}"), "more_body": True}
                    )
                else:
                    await send({"type": "http.response.body", "body": b": stream open\n\n", "more_body": True})
                while not disconnected.done():
                    events, done = await stream.read(seq)
                    for number, message in events:
                        body = _sse_event(message, f"{stream.id}:{number}")
                        await send({"type": "http.response.body", "body": body, "more_body": True})
                        seq = number
                    if done or session.closed:
                        break
                    waiter = asyncio.ensure_future(stream.wait(seq, keepalive))
                    await asyncio.wait({waiter, disconnected}, return_when=asyncio.FIRST_COMPLETED)
                    if not waiter.done():
                        waiter.cancel()
                    elif not waiter.result() and not disconnected.done():
                        if not await core.sessions.alive(session):  # ended (DELETE, expiry) elsewhere
                            break
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
