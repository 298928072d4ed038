"""The Streamable HTTP upstream client (MCP 2025-03-26 .. 2025-11-25 and 2026-07-28), on one pooled aiohttp
session.

Era: `connect()` first POSTs `server/discover` with the 2026-07-28 envelope and headers; a 4xx without a
recognised modern error body makes it fall back to `initialize` (streamable-http, "Backward
Compatibility"). In the modern era there is no session: every request is a standalone POST carrying
`MCP-Protocol-Version`, `Mcp-Method` and (tools/call, resources/read, prompts/get) `Mcp-Name`; the answer
is JSON or an SSE stream of that request's notifications then its response; closing the stream cancels
the request; nothing is resumed.

Session era: each message is its own POST. A request's answer comes back as JSON or as an SSE stream that may carry
the call's progress, log messages and server->client requests before the response. When that stream
ends before the response (the server closed it after `retry:`, "SSE polling", or the network broke) the
client waits `retry` ms and resumes with GET + `Last-Event-ID`. After the handshake a standalone GET
stream carries messages that belong to no call. A 404 for a request that carried the session id means
the session is gone: the client re-initializes once and repeats the request. `aclose()` DELETEs the
session.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import orjson

from transports.protocol.upstream import headers as http_headers
from transports.protocol.upstream import stateless
from transports.protocol.upstream.base import (
    UpstreamConfig,
    UpstreamError,
    UpstreamUnavailable,
)
from transports.protocol.upstream.engine import Call, RpcClient
from transports.protocol.upstream.http import (
    EVENT_STREAM,
    JSON,
    REPEATABLE,
    content_type,
    loads,
    new_session,
    read_body,
    status_error,
)
from transports.protocol.upstream.sse_parser import SSEError, SSEParser
from transports.protocol.vocabulary import (
    HEADER_MISMATCH,
    INITIALIZE,
    INVALID_PARAMS,
    INVALID_REQUEST,
    MISSING_CLIENT_CAPABILITY,
    PARSE_ERROR,
    SERVER_DISCOVER,
)

logger = logging.getLogger("transports.protocol.upstream")

_DEFAULT_RETRY = 1.0  # seconds before reopening a stream when the server named no `retry`
_MAX_RETRY = 30.0
_MAX_RESUME_FAILURES = 3
_DELETE_TIMEOUT = 2.0
_STREAM_OPEN_WAIT = 2.0
_DRAIN_TIMEOUT = 2.0
# JSON-RPC errors a 2026-07-28 server answers with HTTP 400 for a request it understood (basic/index,
# streamable-http "Server Validation"). Any other 400 to a modern request means the upstream no longer
# speaks 2026-07-28: the connection is dropped so that the next connect() detects the era again.
_MODERN_400_CODES = frozenset(
    {PARSE_ERROR, INVALID_REQUEST, INVALID_PARAMS, HEADER_MISMATCH, MISSING_CLIENT_CAPABILITY}
)


class _StreamState:
    """Where an SSE stream stands, so that it can be resumed."""

    __slots__ = ("last_id", "retry")

    def __init__(self) -> None:
        self.last_id: str | None = None
        self.retry: int | None = None  # milliseconds

    def delay(self, failures: int) -> float:
        base = self.retry / 1000 if self.retry is not None else _DEFAULT_RETRY
        return float(min(base * (2 ** min(failures, 6)), _MAX_RETRY)) if failures else base


def _valid_session_id(value: str) -> bool:
    return bool(value) and all(0x21 <= ord(ch) <= 0x7E for ch in value)


class StreamableHttpClient(RpcClient):
    SPEAKS_MODERN = True
    HTTP = True

    def __init__(self, config: UpstreamConfig) -> None:
        super().__init__(config)
        self.session_id: str | None = None
        self._http: aiohttp.ClientSession | None = None
        self._listener: asyncio.Task[None] | None = None
        self._renew_lock = asyncio.Lock()
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=config.connect_timeout, sock_read=config.stream_idle_timeout
        )

    # ---- transport hooks -------------------------------------------------------------------------

    async def _open_transport(self) -> None:
        if not self.config.url:
            raise UpstreamUnavailable(f"{self.config.name}: no URL configured")
        if self._http is None or self._http.closed:
            self._http = new_session(self.config)
        self.session_id = None

    async def _close_transport(self, *, final: bool) -> None:
        await self.settle([self._listener])
        self._listener = None
        await self._delete_session()
        if final and self._http is not None:
            await self._http.close()
            self._http = None

    async def _after_initialize(self) -> None:
        """Open the standalone GET stream and wait (briefly) until the server has answered it, so that
        nothing the server sends right after the handshake is lost."""
        await self.settle([self._listener])
        answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._listener = self.spawn(self._listen(self.session_id, self._generation, answered))
        await asyncio.wait([answered], timeout=min(self.config.connect_timeout, _STREAM_OPEN_WAIT))

    async def _send(self, message: dict[str, Any]) -> None:
        if self._modern is not None:
            await self._post_modern_notification(message)
            return
        session_id = self.session_id
        if await self._post(orjson.dumps(message), None, session_id, repeatable=True) and session_id:
            raise UpstreamUnavailable(f"{self.config.name}: the session has expired (HTTP 404)", status=404)

    def _abandon(self, call: Call, reason: str) -> None:
        if call.modern is not None:
            return  # 2026-07-28: closing the response stream is the cancellation (streamable-http "Cancellation")
        super()._abandon(call, reason)

    async def _transmit(self, call: Call, message: dict[str, Any]) -> None:
        if call.modern is not None:
            await self._post_modern(call, message)
            return
        body = orjson.dumps(message)
        repeatable = call.method in REPEATABLE
        if call.method == INITIALIZE:
            await self._post(body, call, None, repeatable=True)
            return
        if self._renew_lock.locked():  # a new session is being set up: wait for its id
            async with self._renew_lock:
                pass
        session_id = self.session_id
        if not await self._post(body, call, session_id, repeatable=repeatable) or session_id is None:
            return
        await self._renew(session_id)
        if await self._post(body, call, self.session_id, repeatable=repeatable):
            raise UpstreamUnavailable(f"{self.config.name}: HTTP 404 right after re-initializing", status=404)

    # ---- POST ------------------------------------------------------------------------------------

    def _headers(self, session_id: str | None, *, stream: bool = False, handshake: bool = False) -> dict[str, str]:
        headers = {"Accept": EVENT_STREAM} if stream else {"Accept": f"{JSON}, {EVENT_STREAM}", "Content-Type": JSON}
        if not handshake:
            if self.protocol_version:
                headers["MCP-Protocol-Version"] = self.protocol_version
            if session_id:
                headers["Mcp-Session-Id"] = session_id
        return headers

    async def _post(self, body: bytes, call: Call | None, session_id: str | None, *, repeatable: bool) -> bool:
        """POST one message and process the answer. True means "HTTP 404: no such session"."""
        http = self._http
        if http is None or http.closed:
            raise UpstreamUnavailable(f"{self.config.name}: not connected")
        name = self.config.name
        handshake = call is not None and call.method == INITIALIZE
        headers = self._headers(session_id, handshake=handshake)
        if call is not None:
            http_headers.add_extra(headers, call.headers, self.config.headers)
        state = _StreamState()
        streamed = False
        try:
            try:
                response = await http.post(self.config.url, data=body, headers=headers)
            except aiohttp.ServerDisconnectedError:
                if not repeatable:
                    raise
                response = await http.post(self.config.url, data=body, headers=headers)
            detached = False
            try:
                status = response.status
                if handshake and status == 200:
                    self._take_session_id(response)
                if status == 404 and session_id is not None:
                    return True
                if status >= 300:
                    raise await status_error(response, name, f"POST {call.method if call else 'message'}")
                if call is None:
                    return False  # a notification or response: 202 expected, anything 2xx accepted
                kind = content_type(response)
                if kind == EVENT_STREAM:
                    streamed = True
                    await self._read_stream(response, call, state)
                    if call.future.done() and not response.content.at_eof():
                        # The response is in; let the stream's end arrive in the background, so that the
                        # keep-alive connection goes back to the pool instead of being closed.
                        self.spawn(self._drain(response))
                        detached = True
                elif kind == JSON:
                    body = await read_body(response, self.config.max_message_size, name)
                    await self._receive(loads(body, name), call)
                elif status == 202:
                    raise UpstreamUnavailable(f"{name}: HTTP 202 without a body for the request {call.method}")
                else:
                    raise UpstreamUnavailable(f"{name}: unexpected Content-Type {kind!r} for {call.method}")
            finally:
                if not detached:
                    response.release()
        except RuntimeError as exc:  # aiohttp: "Session is closed" when aclose() ran meanwhile
            raise UpstreamUnavailable(f"{name}: {exc}") from None
        except aiohttp.ClientConnectorError as exc:
            reason = f"cannot connect: {exc}"
            self._connection_lost(reason, self._generation)
            raise UpstreamUnavailable(f"{name}: {reason}") from None
        except SSEError as exc:
            raise UpstreamUnavailable(f"{name}: {exc}") from None
        except (aiohttp.ClientError, OSError) as exc:
            if call is None or state.last_id is None:
                raise UpstreamUnavailable(f"{name}: {call.method if call else 'POST'} failed: {exc!r}") from None
            logger.debug("%s: stream of %s broke (%r); resuming", name, call.method, exc)
        if call is not None and not call.future.done():
            if not streamed:
                raise UpstreamUnavailable(f"{name}: the answer to {call.method} did not contain its response")
            await self._resume(call, state)
        return False

    # ---- 2026-07-28 POSTs -------------------------------------------------------------------------

    def _modern_headers(self, version: str, message: dict[str, Any]) -> dict[str, str]:
        """The request metadata headers (streamable-http, "Request Metadata")."""
        headers = {"Accept": f"{JSON}, {EVENT_STREAM}", "Content-Type": JSON, "MCP-Protocol-Version": version}
        method = message.get("method")
        if isinstance(method, str):
            headers["Mcp-Method"] = method
            params = message.get("params")
            name = http_headers.name_header(method, params if isinstance(params, dict) else None)
            if name is not None:
                headers["Mcp-Name"] = name
        return headers

    async def _post_modern(self, call: Call, message: dict[str, Any]) -> None:
        """POST one 2026-07-28 request and read its answer (JSON, or SSE: the request's notifications then
        its response). If the caller gives up (deadline, cancellation) the response is closed, which is
        how the upstream learns that the request is cancelled."""
        http = self._http
        if http is None or http.closed:
            raise UpstreamUnavailable(f"{self.config.name}: not connected")
        assert call.modern is not None
        name = self.config.name
        headers = self._modern_headers(call.modern, message)
        http_headers.add_extra(headers, call.headers, self.config.headers)
        body = orjson.dumps(message)
        # A listen stream may stay silent for long: reopen it after `stream_idle_timeout` like the GET stream.
        # (Other requests keep the session's timeouts: a connect deadline, the caller's deadline for the rest.)
        options: dict[str, Any] = {"timeout": self._stream_timeout} if call.background else {}
        response: aiohttp.ClientResponse | None = None
        finished = False
        try:
            try:
                response = await http.post(self.config.url, data=body, headers=headers, **options)
            except aiohttp.ServerDisconnectedError:
                if call.method not in REPEATABLE and call.method != SERVER_DISCOVER:
                    raise
                response = await http.post(self.config.url, data=body, headers=headers, **options)
            status = response.status
            if status >= 300:
                error = await status_error(response, name, f"POST {call.method}")
                self._check_era(status, error)
                raise error
            kind = content_type(response)
            if kind == EVENT_STREAM:
                await self._read_stream(response, call, _StreamState())
                if not call.future.done():
                    raise UpstreamUnavailable(f"{name}: the stream of {call.method} ended before its response")
                if not response.content.at_eof():
                    self.spawn(self._drain(response))  # the connection goes back to the pool afterwards
                    response = None
            elif kind == JSON:
                await self._receive(loads(await read_body(response, self.config.max_message_size, name), name), call)
                if not call.future.done():
                    raise UpstreamUnavailable(f"{name}: the answer to {call.method} did not contain its response")
            else:
                raise UpstreamUnavailable(f"{name}: unexpected Content-Type {kind!r} (HTTP {status}) for {call.method}")
            finished = True
        except RuntimeError as exc:  # aiohttp: "Session is closed" when aclose() ran meanwhile
            raise UpstreamUnavailable(f"{name}: {exc}") from None
        except aiohttp.ClientConnectorError as exc:
            reason = f"cannot connect: {exc}"
            if not call.internal:
                self._connection_lost(reason, self._generation)
            raise UpstreamUnavailable(f"{name}: {reason}") from None
        except SSEError as exc:
            raise UpstreamUnavailable(f"{name}: {exc}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamUnavailable(f"{name}: {call.method} failed: {exc!r}") from None
        finally:
            if response is not None:
                if finished:
                    response.release()
                else:
                    response.close()  # never back to the pool half-read: the upstream sees the stream closed

    def _check_era(self, status: int, error: Exception) -> None:
        """A modern request refused with 400 and no error a 2026-07-28 server would give: the upstream was
        replaced by one of the session era. Drop the connection, so the next connect() detects again."""
        if self._modern is None or status != 400:
            return
        if isinstance(error, UpstreamError) and error.code in _MODERN_400_CODES:
            return
        if isinstance(error, UpstreamError) and stateless.probe_verdict(error, http=True)[0] == "retry":
            return  # -32022 naming a version we speak: the request is retried with it
        reason = f"the upstream no longer accepts MCP {self.protocol_version} requests ({error})"
        self._connection_lost(reason, self._generation)
        raise UpstreamUnavailable(f"{self.config.name}: {reason}", status=status)

    async def _post_modern_notification(self, message: dict[str, Any]) -> None:
        http = self._http
        if http is None or http.closed or self.protocol_version is None:
            raise UpstreamUnavailable(f"{self.config.name}: not connected")
        headers = self._modern_headers(self.protocol_version, message)
        try:
            async with http.post(self.config.url, data=orjson.dumps(message), headers=headers) as response:
                if response.status >= 300:
                    raise await status_error(response, self.config.name, f"POST {message.get('method')}")
        except aiohttp.ClientConnectorError as exc:
            self._connection_lost(f"cannot connect: {exc}", self._generation)
            raise UpstreamUnavailable(f"{self.config.name}: cannot connect: {exc}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamUnavailable(f"{self.config.name}: POST failed: {exc!r}") from None

    async def _drain(self, response: aiohttp.ClientResponse) -> None:
        """Read what is left of an answered stream (bounded in time and size), then release it."""
        size = 0
        try:
            async with asyncio.timeout(_DRAIN_TIMEOUT):
                async for chunk in response.content.iter_any():
                    size += len(chunk)
                    if size > self.config.max_message_size:
                        break
        except (TimeoutError, aiohttp.ClientError, OSError):
            pass
        finally:
            response.release()

    def _take_session_id(self, response: aiohttp.ClientResponse) -> None:
        session_id = response.headers.get("Mcp-Session-Id")
        if session_id is None:
            self.session_id = None
        elif _valid_session_id(session_id):
            self.session_id = session_id
        else:
            raise UpstreamUnavailable(f"{self.config.name}: invalid Mcp-Session-Id from the upstream")

    async def _read_stream(
        self, response: aiohttp.ClientResponse, call: Call | None, state: _StreamState, *, guess: bool = True
    ) -> None:
        """Dispatch the events of an SSE response until it ends or (with a call) the call is answered."""
        parser = SSEParser(self.config.max_message_size, state.last_id)
        async for chunk in response.content.iter_any():
            for event in parser.feed(chunk):
                state.last_id, state.retry = parser.last_event_id, parser.retry
                if event.event != "message" or not event.data.strip():
                    continue  # priming events carry no data
                try:
                    message = orjson.loads(event.data)
                except orjson.JSONDecodeError:
                    logger.warning("%s: skipped an SSE event that is not JSON", self.config.name)
                    continue
                await self._receive(message, call, guess=guess)
                if call is not None and call.future.done():
                    return
            state.last_id, state.retry = parser.last_event_id, parser.retry

    async def _resume(self, call: Call, state: _StreamState) -> None:
        """Reopen a request's stream with GET + Last-Event-ID until the response arrives."""
        name = self.config.name
        failures = 0
        while not call.future.done():
            if state.last_id is None:
                raise UpstreamUnavailable(f"{name}: the stream of {call.method} ended before its response")
            if failures > _MAX_RESUME_FAILURES:
                raise UpstreamUnavailable(f"{name}: cannot resume the stream of {call.method}")
            await asyncio.sleep(state.delay(failures))
            http = self._http
            if http is None or http.closed:
                raise UpstreamUnavailable(f"{name}: client closed")
            headers = self._headers(self.session_id, stream=True)
            headers["Last-Event-ID"] = state.last_id
            try:
                async with http.get(self.config.url, headers=headers, timeout=self._stream_timeout) as response:
                    if response.status != 200 or content_type(response) != EVENT_STREAM:
                        raise UpstreamUnavailable(
                            f"{name}: cannot resume the stream of {call.method}: HTTP {response.status}",
                            status=response.status,
                        )
                    await self._read_stream(response, call, state)
            except aiohttp.ClientConnectorError as exc:
                failures += 1
                if failures > _MAX_RESUME_FAILURES:
                    self._connection_lost(f"cannot connect: {exc}", self._generation)
                continue
            except SSEError as exc:
                raise UpstreamUnavailable(f"{name}: {exc}") from None
            except (aiohttp.ClientError, OSError):
                failures += 1
                continue
            failures = 0  # a clean end is the server polling again; the call's deadline bounds the rounds

    async def _renew(self, expired: str) -> None:
        """The session is gone (404): start a new one, once, however many calls noticed."""
        async with self._renew_lock:
            if self.session_id != expired:
                return
            logger.info("%s: session expired; re-initializing", self.config.name)
            await self.settle([self._listener])
            self._listener = None
            self.session_id = None
            try:
                async with asyncio.timeout(self.config.connect_timeout):
                    await self._handshake()
            except (TimeoutError, UpstreamUnavailable, UpstreamError) as exc:
                reason = f"re-initializing after the session expired failed: {exc or 'timeout'}"
                self._connection_lost(reason, self._generation)
                raise UpstreamUnavailable(f"{self.config.name}: {reason}") from None

    # ---- the standalone GET stream ---------------------------------------------------------------

    async def _listen(self, session_id: str | None, generation: int, answered: asyncio.Future[None]) -> None:
        """Keep the standalone GET stream open while the session lasts (none if the server says 405).

        `answered` is resolved once the first attempt got an answer (or failed)."""
        try:
            await self._keep_listening(session_id, generation, answered)
        finally:
            if not answered.done():
                answered.set_result(None)

    async def _keep_listening(self, session_id: str | None, generation: int, answered: asyncio.Future[None]) -> None:
        name = self.config.name
        state = _StreamState()
        failures = 0
        while self._open and self.session_id == session_id and self._generation == generation:
            http = self._http
            if http is None or http.closed:
                return
            headers = self._headers(session_id, stream=True)
            if state.last_id is not None:
                headers["Last-Event-ID"] = state.last_id
            try:
                async with http.get(self.config.url, headers=headers, timeout=self._stream_timeout) as response:
                    if not answered.done():
                        answered.set_result(None)
                    status = response.status
                    if status == 200 and content_type(response) == EVENT_STREAM:
                        failures = 0
                        await self._read_stream(response, None, state, guess=False)
                    elif status in (404, 405) or (400 <= status < 500 and status not in (408, 429)):
                        logger.debug("%s: no standalone stream (HTTP %s)", name, status)
                        return
                    else:
                        failures += 1
            except aiohttp.SocketTimeoutError:
                logger.debug("%s: standalone stream idle; reopening", name)
            except (aiohttp.ClientError, OSError, SSEError) as exc:
                failures += 1
                logger.debug("%s: standalone stream broke: %r", name, exc)
            if not answered.done():
                answered.set_result(None)
            await asyncio.sleep(state.delay(failures))

    async def _delete_session(self) -> None:
        session_id, http = self.session_id, self._http
        self.session_id = None
        if not session_id or http is None or http.closed:
            return
        try:
            async with asyncio.timeout(min(self.config.connect_timeout, _DELETE_TIMEOUT)):
                headers = self._headers(session_id, stream=True)
                async with http.delete(self.config.url, headers=headers) as response:
                    logger.debug("%s: DELETE session: HTTP %s", self.config.name, response.status)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            logger.debug("%s: DELETE session failed: %r", self.config.name, exc)
