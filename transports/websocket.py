"""MCP over WebSocket: one session per connection, one JSON-RPC message per text frame, both ways.

Subprotocol ``mcp`` (what the mcp 1.x Python SDK and the TypeScript SDK's WebSocket clients offer).
The handshake is refused (HTTP 403 from daphne) for a Host not served, a foreign Origin, or a client
that does not offer ``mcp``. Credentials come from the Authorization header, or from ``?token=`` when
GATEWAY_WS_QUERY_TOKEN allows it; without them the socket is accepted only to say why (a JSON-RPC
error, id null) and closed with 4401, since daphne cannot answer a handshake with 401. A raw ASGI app
routed by Channels' URLRouter: see docs/architecture.md for why not a consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import parse_qs

from django.conf import settings

from transports import edge
from transports.connection import FELL_BEHIND, Connection, ConnectionClosed
from transports.protocol import jsonrpc
from transports.protocol.catalog import CatalogUnavailable
from transports.protocol.jsonrpc import JsonRpcError
from transports.protocol.sessions import SessionLimitReached

logger = logging.getLogger(__name__)

SUBPROTOCOL = "mcp"
# Close codes. daphne (autobahn) sends only 1000 and 3000-4999, so the reasons RFC 6455 section 7.4.1
# has codes for (1003 unsupported data, 1008 policy, 1009 too big, 1013 try again later) are given as
# 4000 + the HTTP status the same refusal gets on the HTTP endpoints (the private-use range).
CLOSE_NORMAL = 1000
CLOSE_UNAUTHORIZED = 4401
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_BIG = 4413
CLOSE_BINARY = 4415
CLOSE_FELL_BEHIND = FELL_BEHIND  # set by the connection when the client stops reading (4429)
CLOSE_UNAVAILABLE = 4503


class WebSocketEndpoint:
    """ASGI app for /ws and /servers/<server>/ws."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        event = await receive()
        if event["type"] != "websocket.connect":
            return
        headers = edge.scope_headers(scope)
        reason = edge.refuse_handshake(headers)
        if reason is None and SUBPROTOCOL not in scope.get("subprotocols", ()):
            reason = f"the client did not offer the subprotocol {SUBPROTOCOL!r} (offered: {scope.get('subprotocols')})"
        if reason is not None:  # before accept: the handshake is refused (403), which carries no body
            logger.info("WebSocket handshake refused: %s", reason)
            await send({"type": "websocket.close"})
            return
        await send({"type": "websocket.accept", "subprotocol": SUBPROTOCOL})
        server = scope.get("url_route", {}).get("kwargs", {}).get("server")
        try:
            caller = await edge.admit(headers, server, _query_authorization(scope, headers))
        except edge.RateRefused as exc:  # 4429: a rate limit (the error names it and the retry time)
            await _refuse(send, 4000 + exc.status, exc.message, exc.error.code, exc.error.data)
            return
        except edge.EdgeRefused as exc:  # 4401 for credentials, 4403 for a token bound to another server
            await _refuse(send, 4000 + exc.status, exc.message)
            return
        try:
            connection = await Connection.open(caller, transport="websocket")
        except edge.EdgeRefused as exc:  # no stream slot left: 4429 for the user's bound, 4503 for the process's
            await _refuse(send, 4000 + exc.status, exc.message, jsonrpc.SERVER_ERROR)
            return
        except JsonRpcError as exc:
            await _refuse(send, CLOSE_NOT_FOUND, exc.message, exc.code)
            return
        except SessionLimitReached as exc:
            await _refuse(send, 4000 + exc.status, f"Session limit: {exc}.", jsonrpc.SERVER_ERROR)
            return
        except CatalogUnavailable as exc:
            await _refuse(send, CLOSE_UNAVAILABLE, f"Service unavailable: {exc}.", jsonrpc.SERVER_ERROR)
            return
        writer = asyncio.ensure_future(_write(connection, send))
        client_left = False
        try:
            client_left = await _read(connection, receive)
        finally:
            connection.close(CLOSE_NORMAL)
            if client_left:
                writer.cancel()
            else:
                await writer


def _query_authorization(scope: dict[str, Any], headers: dict[str, str]) -> str | None:
    """A bearer token from ?token= when the setting allows it and no Authorization header was sent."""
    if "authorization" in headers or not settings.GATEWAY_WS_QUERY_TOKEN:
        return None
    token = (parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token") or [""])[0]
    return f"Bearer {token}" if token else None


async def _refuse(
    send: Any, code: int, message: str, rpc_code: int = jsonrpc.INVALID_REQUEST, data: Any = None
) -> None:
    """Say why in a JSON-RPC error (id null), then close with ``code``."""
    error = jsonrpc.error_response(None, JsonRpcError(rpc_code, message, data))
    await send({"type": "websocket.send", "text": jsonrpc.dumps(error).decode()})
    await send({"type": "websocket.close", "code": code, "reason": message[:120]})


async def _read(connection: Connection, receive: Any) -> bool:
    """Take frames until the client leaves (True) or the connection must close (False)."""
    limit = settings.GATEWAY_MAX_BODY_BYTES
    while True:
        event = await receive()
        if event["type"] == "websocket.disconnect":
            return True
        if event["type"] != "websocket.receive":
            continue
        text = event.get("text")
        if text is None:
            await _end(connection, CLOSE_BINARY, "MCP messages are text frames; binary frames are not accepted.")
            return False
        if len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit):
            await _end(connection, CLOSE_TOO_BIG, f"A message is larger than {limit} bytes (GATEWAY_MAX_BODY_BYTES).")
            return False
        payload: Any = None
        try:
            payload = jsonrpc.loads(text)
            if isinstance(payload, list):
                raise JsonRpcError(jsonrpc.INVALID_REQUEST, "Invalid Request: one message per frame, no batches.")
            message = jsonrpc.validate(payload)
        except JsonRpcError as exc:  # answered; the connection stays usable
            request_id = payload.get("id") if exc.code != jsonrpc.PARSE_ERROR and isinstance(payload, dict) else None
            request_id = request_id if isinstance(request_id, str | int) and not isinstance(request_id, bool) else None
            try:
                await connection.send(jsonrpc.error_response(request_id, exc))
            except ConnectionClosed:
                return False
            continue
        try:
            if jsonrpc.kind(message) == "request":  # every request counts against the caller's rate limits
                try:
                    await edge.limit(connection.caller)
                except edge.RateRefused as exc:  # answered; the connection stays usable
                    await connection.send(jsonrpc.error_response(message["id"], exc.error))
                    continue
            await connection.receive(message)
        except ConnectionClosed:
            return False


async def _end(connection: Connection, code: int, message: str) -> None:
    """Say why in a JSON-RPC error (id null; daphne drops close reasons), then close with ``code``."""
    with contextlib.suppress(ConnectionClosed):
        await connection.send(jsonrpc.error_response(None, JsonRpcError(jsonrpc.INVALID_REQUEST, message)))
    connection.close(code, message)


async def _write(connection: Connection, send: Any) -> None:
    """Drain the outbox into text frames; then close with the connection's code."""
    try:
        while (message := await connection.outbox.get()) is not None:
            await send({"type": "websocket.send", "text": jsonrpc.dumps(message).decode()})
        code = connection.close_code or CLOSE_NORMAL
        await send({"type": "websocket.close", "code": code, "reason": connection.close_reason[:120]})
    except OSError:  # the client is gone
        pass


endpoint = WebSocketEndpoint()
