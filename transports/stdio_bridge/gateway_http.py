"""The stdio wrapper's side of Streamable HTTP: one POST per message to the gateway and the answer to it,
with the outcomes the relay acts on (unreachable, session gone, connection lost). No Django here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson

from transports.protocol import jsonrpc
from transports.protocol.upstream.http import EVENT_STREAM, JSON, content_type
from transports.protocol.upstream.sse_parser import SSEError, SSEParser
from transports.stdio_bridge.config import TOKEN_ENV, BridgeConfig

logger = logging.getLogger("transports.stdio_bridge")  # one logger for the package (cli configures it)

ERROR_BODY_LIMIT = 64 * 1024


class _Unreachable(Exception):
    """The gateway could not be reached: nothing was sent, so trying again is safe."""


class _SessionGone(Exception):
    """HTTP 404 for a POST that carried the session id: the gateway does not know the session (it
    restarted, or the session expired). The message was not processed."""


class _Lost(Exception):
    """The connection broke after the message was sent and before its answer: it may have run."""


def _error(request_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def _is_response_to(message: Any, request_id: Any) -> bool:
    return (
        isinstance(message, dict)
        and "method" not in message
        and message.get("id") == request_id
        and ("result" in message or "error" in message)
    )


class GatewayHttp:
    """The wrapper's Streamable HTTP side: POSTs to the gateway, their JSON or SSE answers (resumed with
    `Last-Event-ID` when a stream breaks), the session id and protocol version headers, and DELETE.
    `StdioBridge` builds the relay on it."""

    def __init__(self, config: BridgeConfig, write: Callable[[bytes], Awaitable[None]]) -> None:
        self.config = config
        self._write = write
        self._http: aiohttp.ClientSession | None = None
        self.session_id: str | None = None
        self.protocol_version: str | None = None  # negotiated by the session-era handshake

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            connector = aiohttp.TCPConnector(ssl=self.config.verify_tls)
            self._http = aiohttp.ClientSession(
                connector=connector,
                headers=dict(self.config.headers),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.config.connect_timeout, sock_read=self.config.read_timeout
                ),
                raise_for_status=False,
            )
        return self._http

    async def _emit(self, message: Any) -> None:
        """One MCP message to the client, on one line of stdout."""
        await self._write(orjson.dumps(message))

    def _post_headers(self, *, session: bool = True) -> dict[str, str]:
        headers = {"Accept": f"{JSON}, {EVENT_STREAM}", "Content-Type": JSON}
        if session and self.session_id:
            headers["Mcp-Session-Id"] = self.session_id
            if self.protocol_version:
                headers["MCP-Protocol-Version"] = self.protocol_version
        return headers

    async def _post_capturing(self, message: Any, headers: dict[str, str]) -> tuple[Any, str | None]:
        captured: list[str | None] = [None]

        def capture(response: aiohttp.ClientResponse) -> None:
            captured[0] = response.headers.get("Mcp-Session-Id")

        answer = await self._post(message, headers, on_response=capture)
        return answer, captured[0]

    async def _post(
        self,
        message: Any,
        headers: dict[str, str],
        *,
        forward: Callable[[Any], Awaitable[None]] | None = None,
        on_response: Callable[[aiohttp.ClientResponse], None] | None = None,
    ) -> Any:
        """POST one message (or a batch) and return the answer to it: the response for a request
        (related messages on its SSE stream go to ``forward``, stdout by default), None for a
        notification or response (202)."""
        forward = forward or self._emit
        request_id = message.get("id") if isinstance(message, dict) and "method" in message else None
        try:
            response = await self._session().post(self.config.url, data=orjson.dumps(message), headers=headers)
        except aiohttp.ClientConnectorError as exc:
            raise _Unreachable(str(exc)) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _Lost(str(exc) or type(exc).__name__) from None
        try:
            status = response.status
            if on_response is not None:
                on_response(response)
            if status == 404 and "Mcp-Session-Id" in headers:
                raise _SessionGone("the gateway does not know this session (HTTP 404)")
            if status >= 300:
                return await self._status_answer(response, request_id)
            if request_id is None:
                if status == 200 and content_type(response) == JSON:
                    return orjson.loads(await self._read(response))
                return None
            if content_type(response) == EVENT_STREAM:
                return await self._read_stream(response, request_id, forward)
            try:
                return orjson.loads(await self._read(response))
            except orjson.JSONDecodeError:
                return _error(request_id, jsonrpc.SERVER_ERROR, "The gateway answered with invalid JSON.")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _Lost(str(exc) or type(exc).__name__) from None
        finally:
            response.release()

    async def _read(self, response: aiohttp.ClientResponse, limit: int | None = None) -> bytes:
        limit = limit or self.config.max_message_size
        chunks, size = [], 0
        async for chunk in response.content.iter_any():
            size += len(chunk)
            if size > limit:
                raise _Lost(f"an answer larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _status_answer(self, response: aiohttp.ClientResponse, request_id: Any) -> Any:
        """An HTTP error status as the JSON-RPC error the client gets (the gateway's own error body
        when it sent one; edge errors carry id null, so the request's id is put in)."""
        status = response.status
        try:
            body = orjson.loads(await self._read(response, ERROR_BODY_LIMIT))
        except (orjson.JSONDecodeError, _Lost):
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if status == 401:
            logger.warning("the gateway refused the credentials (HTTP 401): check --token or %s", TOKEN_ENV)
        if request_id is None:
            logger.warning("the gateway answered HTTP %s to a notification or response", status)
            return None
        if isinstance(error, dict) and isinstance(error.get("code"), int):
            return {"jsonrpc": "2.0", "id": request_id, "error": error}
        hint = f" (check --token or {TOKEN_ENV})" if status == 401 else ""
        return _error(request_id, jsonrpc.SERVER_ERROR, f"The gateway answered HTTP {status} {response.reason}{hint}.")

    async def _read_stream(
        self, response: aiohttp.ClientResponse, request_id: Any, forward: Callable[[Any], Awaitable[None]]
    ) -> Any:
        """Relay the SSE answer of a POST until the response to ``request_id``. A stream that ends
        early is resumed with GET + Last-Event-ID when it had event ids (2025-11-25 "Resumability")."""
        parser = SSEParser(self.config.max_message_size)
        failures = 0
        session_id = self.session_id
        current: aiohttp.ClientResponse | None = response
        reason = "the stream ended before the response"
        while True:
            if current is not None:
                try:
                    async for chunk in current.content.iter_any():
                        for event in parser.feed(chunk):
                            if event.event != "message" or not event.data.strip():
                                continue
                            try:
                                item = orjson.loads(event.data)
                            except orjson.JSONDecodeError:
                                logger.warning("dropped an SSE event that is not JSON")
                                continue
                            if _is_response_to(item, request_id):
                                return item
                            await forward(item)
                except (aiohttp.ClientError, TimeoutError, SSEError) as exc:
                    reason = str(exc) or type(exc).__name__
                else:
                    reason = "the stream ended before the response"
                finally:
                    current.release()
            if parser.last_event_id is None or session_id is None or failures >= 3:
                raise _Lost(reason)
            delay = (parser.retry / 1000) if parser.retry is not None else 0.5
            await asyncio.sleep(min(delay * (2**failures), 10.0))
            failures += 1
            headers = {"Accept": EVENT_STREAM, "Mcp-Session-Id": session_id, "Last-Event-ID": parser.last_event_id}
            if self.protocol_version:
                headers["MCP-Protocol-Version"] = self.protocol_version
            try:
                current = await self._session().get(self.config.url, headers=headers)
            except (aiohttp.ClientError, TimeoutError) as exc:
                logger.info("resuming the answer to %r failed: %s", request_id, exc)
                current = None
                continue
            if current.status != 200:
                current.release()
                raise _Lost(f"{reason}, and resuming it got HTTP {current.status}")

    async def _delete(self, session_id: str) -> None:
        """End a session we no longer use (best effort; the gateway would expire it anyway)."""
        headers = {"Mcp-Session-Id": session_id}
        if self.protocol_version:
            headers["MCP-Protocol-Version"] = self.protocol_version
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
            async with asyncio.timeout(2.0):
                response = await self._session().delete(self.config.url, headers=headers)
                response.release()
