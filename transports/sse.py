"""The legacy HTTP+SSE transport (MCP 2024-11-05, basic/transports "HTTP with SSE") as lean ASGI apps.

``GET /sse`` (or ``/servers/<name>/sse``) opens the session and its stream; the first event,
``endpoint``, names the URL the client POSTs every JSON-RPC message to (``/message?session_id=…``);
each POST is taken with 202 and everything for the client arrives on the stream as ``event:
message``. Closing the stream ends the session. The session plumbing is ``transports.connection``;
all MCP semantics are the protocol core's.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import parse_qs

from django.conf import settings

from transports import edge
from transports.connection import Connection, ConnectionClosed
from transports.protocol import jsonrpc
from transports.protocol.catalog import CatalogUnavailable
from transports.protocol.jsonrpc import JsonRpcError
from transports.protocol.outcome import Caller
from transports.protocol.replicas import ReplicaGone
from transports.protocol.sessions import SessionLimitReached
from transports.runtime import get_core

logger = logging.getLogger(__name__)

SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]
KEEPALIVE = b": keep-alive\n\n"

# The open streams of this process, by session id (the id in the message URL).
streams: dict[str, Connection] = {}


class HttpError(Exception):
    """Answer with this status and a JSON-RPC error body."""

    def __init__(
        self,
        status: int,
        message: str,
        code: int = jsonrpc.INVALID_REQUEST,
        headers: list[tuple[bytes, bytes]] | None = None,
        request_id: jsonrpc.Id | None = None,
        data: Any = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.headers, self.request_id = status, message, code, headers, request_id
        self.data = data


async def _send_error(send: Any, exc: HttpError) -> None:
    body = jsonrpc.dumps(jsonrpc.error_response(exc.request_id, JsonRpcError(exc.code, exc.message, exc.data)))
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers + (exc.headers or [])})
    await send({"type": "http.response.body", "body": body})


def _event(message: dict[str, Any]) -> bytes:
    return b"event: message\ndata: " + jsonrpc.dumps(message) + b"\n\n"


async def _admit(scope: dict[str, Any], method: str) -> Caller:
    """Edge checks, then the HTTP method."""
    server = scope.get("url_route", {}).get("kwargs", {}).get("server")
    try:
        caller = await edge.admit(edge.scope_headers(scope), server, transport="sse")
    except edge.RateRefused as exc:  # 429 with Retry-After; the error names the limit
        error = exc.error
        raise HttpError(exc.status, error.message, error.code, exc.headers, data=error.data) from None
    except edge.EdgeRefused as exc:
        raise HttpError(exc.status, exc.message, headers=exc.headers) from None
    if scope["method"] != method:
        raise HttpError(405, f"Method {scope['method']} not allowed.", headers=[(b"allow", method.encode())])
    return caller


class SseEndpoint:
    """ASGI app for GET /sse and /servers/<server>/sse: the session's stream."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            caller = await _admit(scope, "GET")
            headers, server = caller.headers, caller.server
            accepted = {part.split(";")[0].strip().lower() for part in headers.get("accept", "").split(",")}
            if "accept" in headers and not {"text/event-stream", "*/*"} & accepted:
                raise HttpError(406, "Not Acceptable: the stream needs Accept: text/event-stream.")
            try:
                # Reachable by the other replicas from the start: a POST of this session that lands on one is
                # forwarded here, whether or not this replica has answered a request yet.
                await get_core().joined()
            except JsonRpcError as exc:
                raise HttpError(503, exc.message, exc.code) from None
            try:
                connection = await Connection.open(caller, transport="sse")
            except JsonRpcError as exc:
                raise HttpError(exc.http_status, exc.message, exc.code) from None
            except edge.EdgeRefused as exc:  # no stream slot left
                raise HttpError(exc.status, exc.message, jsonrpc.SERVER_ERROR) from None
            except SessionLimitReached as exc:
                what = "Too Many Requests" if exc.status == 429 else "Service Unavailable"
                raise HttpError(exc.status, f"{what}: {exc}.", jsonrpc.SERVER_ERROR) from None
        except HttpError as exc:
            await _send_error(send, exc)
            return
        except CatalogUnavailable as exc:
            await _send_error(send, HttpError(503, str(exc), jsonrpc.INTERNAL_ERROR))
            return
        session_id = connection.session.id
        streams[session_id] = connection
        mesh = get_core().mesh
        if mesh is not None:  # POSTs of this session that reach another replica come here
            mesh.handlers["sse.message"] = _forwarded_message
        prefix = scope.get("root_path", "") + (f"/servers/{server}" if server else "")
        endpoint = f"{prefix}/message?session_id={session_id}"
        disconnected = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            first = f"event: endpoint\ndata: {endpoint}\n\n".encode()
            await send({"type": "http.response.body", "body": first, "more_body": True})
            await self._stream(connection, send, disconnected)
            await send({"type": "http.response.body", "body": b""})
        except OSError:  # the client went away while we wrote
            pass
        finally:
            disconnected.cancel()
            streams.pop(session_id, None)
            connection.close()

    async def _stream(self, connection: Connection, send: Any, disconnected: asyncio.Future[Any]) -> None:
        keepalive = settings.GATEWAY_SSE_KEEPALIVE
        while not disconnected.done():
            getter: asyncio.Future[Any] = asyncio.ensure_future(connection.outbox.get())
            await asyncio.wait({getter, disconnected}, timeout=keepalive, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                if not disconnected.done():
                    await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})
                continue
            message = getter.result()
            if message is None:  # the session ended (or the client fell too far behind)
                return
            await send({"type": "http.response.body", "body": _event(message), "more_body": True})


class MessageEndpoint:
    """ASGI app for POST /message and /servers/<server>/message: one JSON-RPC message of a session."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await self._post(scope, receive, send)
        except HttpError as exc:
            await _send_error(send, exc)

    async def _post(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        caller = await _admit(scope, "POST")
        headers = caller.headers
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        session_id = (query.get("session_id") or [""])[0]
        if not session_id:
            raise HttpError(400, "Bad Request: the session_id query parameter is required (open GET /sse first).")
        connection = streams.get(session_id)
        owner = None if connection is not None else await get_core().session_owner(caller, session_id)
        # A session belongs to who opened it and where: anything else looks like an unknown session.
        if (connection is None and owner is None) or (connection is not None and not _owns(connection, caller)):
            raise HttpError(404, "Session not found: its stream is closed or it never existed; open GET /sse again.")
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise HttpError(415, "Unsupported Media Type: send Content-Type: application/json.")
        body = await _read_body(receive)
        try:
            payload = jsonrpc.loads(body)
        except JsonRpcError as exc:
            raise HttpError(400, exc.message, exc.code) from None
        if isinstance(payload, list):
            raise HttpError(400, "Invalid Request: the HTTP+SSE transport takes one JSON-RPC message per POST.")
        try:
            message = jsonrpc.validate(payload)
        except JsonRpcError as exc:
            request_id = payload.get("id") if isinstance(payload, dict) else None
            request_id = request_id if isinstance(request_id, str | int) and not isinstance(request_id, bool) else None
            raise HttpError(400, exc.message, exc.code, request_id=request_id) from None
        try:
            if connection is not None:
                await connection.receive(message)
            elif not await _forward(owner, session_id, message):  # type: ignore[arg-type]
                raise ConnectionClosed("sse")
        except ConnectionClosed:
            raise HttpError(404, "Session not found: its stream has closed; open GET /sse again.") from None
        await send({"type": "http.response.start", "status": 202, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})


def _owns(connection: Connection, caller: Caller) -> bool:
    return connection.caller.username == caller.username and connection.caller.server == caller.server


async def _forward(owner: str, session_id: str, message: dict[str, Any]) -> bool:
    """Hand a POSTed message to the replica holding the session's stream; False when it is gone."""
    mesh = get_core().mesh
    assert mesh is not None
    try:
        result = await mesh.call(owner, "sse.message", {"sid": session_id, "message": message}, timeout=10.0)
    except ReplicaGone as exc:
        logger.info("HTTP+SSE message for session %s not delivered: %s", session_id, exc)
        return False
    return bool(result and result.get("ok"))


async def _forwarded_message(body: dict[str, Any], emit: Any) -> dict[str, Any]:
    connection = streams.get(body["sid"])
    if connection is None:
        return {"ok": False}
    try:
        await connection.receive(body["message"])
    except ConnectionClosed:
        return {"ok": False}
    return {"ok": True}


async def _read_body(receive: Any) -> bytes:
    limit = settings.GATEWAY_MAX_BODY_BYTES
    chunks, size = [], 0
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            raise HttpError(400, "The client went away.")
        chunk = event.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"The request body is larger than {limit} bytes.")
        chunks.append(chunk)
        if not event.get("more_body"):
            return b"".join(chunks)


async def _wait_disconnect(receive: Any) -> None:
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            return


sse_endpoint = SseEndpoint()
message_endpoint = MessageEndpoint()
