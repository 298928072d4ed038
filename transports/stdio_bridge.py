"""The stdio wrapper: lets an MCP client that only speaks stdio use a remote gateway.

It reads newline-delimited JSON-RPC on stdin, talks Streamable HTTP to the gateway and writes only MCP
messages to stdout (one per line; logs go to stderr), as basic/transports "stdio" requires of a server.

Session era (2024-11-05 .. 2025-11-25): the client's own `initialize` is forwarded, the `Mcp-Session-Id`
it opens is kept and sent on every later POST, and the standalone GET stream is opened after the
handshake. Whatever the gateway sends on a POST's SSE answer (progress, logs, server-to-client requests
such as elicitation/create) or on the GET stream goes to stdout; the client's responses to those
requests are POSTed back. Client notifications are POSTed and answered with nothing.

2026-07-28: a request whose `params._meta` carries `io.modelcontextprotocol/protocolVersion` is sent on
its own, without a session, with the headers that mirror the body (MCP-Protocol-Version, Mcp-Method,
Mcp-Name, and Mcp-Param-* for the tool arguments annotated `x-mcp-header`, learnt from tools/list).
`notifications/cancelled` closes the request's response stream, which is how that era cancels over HTTP.

When the gateway restarts, see ``StdioBridge`` for what happens to the session and to calls in flight.
No Django here: `manage.py mcp_stdio` and `scripts/mcp-gateway-stdio` both run ``main``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from transports.protocol import jsonrpc
from transports.protocol.upstream import headers as mcp_headers
from transports.protocol.upstream.http import EVENT_STREAM, JSON, REPEATABLE, content_type
from transports.protocol.upstream.sse_parser import SSEError, SSEParser
from transports.protocol.vocabulary import (
    CANCELLED,
    HEADER_MISMATCH,
    INITIALIZE,
    INITIALIZED,
    LIST_CHANGED,
    LISTEN_FLAGS,
    LOGGING_SET_LEVEL,
    META_CLIENT_CAPABILITIES,
    META_CLIENT_INFO,
    META_PROTOCOL_VERSION,
    META_SUBSCRIPTION_ID,
    RESOURCES_SUBSCRIBE,
    RESOURCES_UNSUBSCRIBE,
    RESOURCES_UPDATED,
    SERVER_DISCOVER,
    SUBSCRIPTIONS_ACKNOWLEDGED,
    SUBSCRIPTIONS_LISTEN,
    TOOLS_CALL,
    TOOLS_LIST,
)

logger = logging.getLogger("transports.stdio_bridge")

TOKEN_ENV = "MCP_GATEWAY_TOKEN"
URL_ENV = "MCP_GATEWAY_URL"
# What of a client's envelope the wrapper's own tools/list carries (not its log level).
TOOLS_LIST_ENVELOPE = (META_PROTOCOL_VERSION, META_CLIENT_CAPABILITIES, META_CLIENT_INFO)
ERROR_BODY_LIMIT = 64 * 1024
MAX_BACKOFF = 2.0
TOOLS_LIST_MAX_PAGES = 100
_internal_ids = itertools.count(1)


class BridgeError(Exception):
    """Answer the client's request with this JSON-RPC error."""

    def __init__(self, message: str, code: int = jsonrpc.SERVER_ERROR) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class _Unreachable(Exception):
    """The gateway could not be reached: nothing was sent, so trying again is safe."""


class _SessionGone(Exception):
    """HTTP 404 for a POST that carried the session id: the gateway does not know the session (it
    restarted, or the session expired). The message was not processed."""


class _Lost(Exception):
    """The connection broke after the message was sent and before its answer: it may have run."""


@dataclass(frozen=True)
class BridgeConfig:
    """Where the gateway is and how to reach it."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # credentials ride here
    connect_timeout: float = 10.0
    # How long a request waits for an unreachable gateway (restarting, say) before it is answered
    # with an error.
    reconnect_timeout: float = 30.0
    # A request's answer, or the GET stream, silent for this long: the stream is given up (and reopened).
    read_timeout: float = 600.0
    max_message_size: int = 16 * 1024 * 1024
    verify_tls: bool = True


def is_modern(message: Any) -> bool:
    """A request in the 2026-07-28 envelope (basic/index, `_meta`)."""
    params = message.get("params") if isinstance(message, dict) else None
    meta = params.get("_meta") if isinstance(params, dict) else None
    return isinstance(meta, dict) and META_PROTOCOL_VERSION in meta


def _error(request_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


async def _drop(message: Any) -> None:
    """Where related messages of the bridge's own requests go."""


def _is_response_to(message: Any, request_id: Any) -> bool:
    return (
        isinstance(message, dict)
        and "method" not in message
        and message.get("id") == request_id
        and ("result" in message or "error" in message)
    )


class _Deadline:
    """Retries with a growing pause until a deadline, for a gateway that is down for a while."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self.pause = 0.1

    async def wait(self) -> bool:
        """Sleep before the next attempt; False once the deadline has passed."""
        left = self.end - time.monotonic()
        if left <= 0:
            return False
        await asyncio.sleep(min(self.pause, left))
        self.pause = min(self.pause * 2, MAX_BACKOFF)
        return True


class StdioBridge:
    """Relays one stdio client to one gateway endpoint.

    Restarts: while the gateway cannot be reached, requests wait (up to ``reconnect_timeout``) and are
    then answered with a -32000 error; the GET stream keeps trying for as long as the client is
    connected. When the gateway answers 404 to the session (it restarted and forgot it), the bridge
    initializes again with the client's original initialize params, sends `notifications/initialized`,
    restores the log level and the resource subscriptions the client had set, reopens the GET stream,
    tells the client that its lists may have changed (tools, prompts, resources `list_changed`), and
    sends the request again: a 404 means the gateway did not process it. A request whose connection
    broke after it was sent is resumed with `Last-Event-ID` when its stream had event ids; when that
    fails too, a read-only request (tools/list, resources/read, ...) is sent again, and any other
    (tools/call) is answered with -32000 saying it may or may not have run: nothing is run twice
    without the client knowing. A server-to-client request pending when the gateway went down is lost
    with the call that made it. 2026-07-28 requests have no session; a broken `subscriptions/listen`
    stream is opened again and the client is told that what it follows may have changed.
    """

    def __init__(self, config: BridgeConfig, write: Callable[[bytes], Awaitable[None]]) -> None:
        self.config = config
        self._write = write
        self._http: aiohttp.ClientSession | None = None
        self.session_id: str | None = None
        self.protocol_version: str | None = None  # negotiated by the session-era handshake
        self._init_params: dict[str, Any] | None = None
        self._ready = asyncio.Event()  # cleared while the session is being renewed
        self._ready.set()
        self._renew_lock = asyncio.Lock()
        self._listener: asyncio.Task[None] | None = None
        self._inflight: dict[Any, tuple[asyncio.Task[None], bool]] = {}  # client id -> (task, modern)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._outbox: asyncio.Queue[tuple[Any, Callable[[], Any] | None]] = asyncio.Queue(maxsize=1000)
        self._sender: asyncio.Task[None] | None = None
        self._log_level: str | None = None
        self._subscriptions: set[str] = set()
        self._param_headers: dict[str, mcp_headers.ParamHeaders | None] = {}
        self._closing = False
        self.renewals = 0

    # -- plumbing ---------------------------------------------------------------------------------

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

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _post_headers(self, *, session: bool = True) -> dict[str, str]:
        headers = {"Accept": f"{JSON}, {EVENT_STREAM}", "Content-Type": JSON}
        if session and self.session_id:
            headers["Mcp-Session-Id"] = self.session_id
            if self.protocol_version:
                headers["MCP-Protocol-Version"] = self.protocol_version
        return headers

    # -- stdin -------------------------------------------------------------------------------------

    async def run(self, lines: Callable[[], Awaitable[bytes]]) -> None:
        """Serve until stdin ends (``lines`` returns b"") or the task is cancelled."""
        self._sender = asyncio.ensure_future(self._send_loop())
        try:
            while True:
                line = await lines()
                if not line:
                    return
                if line.strip():
                    await self.handle_line(line)
        finally:
            await self.close()

    async def handle_line(self, line: bytes) -> None:
        try:
            message = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            await self._emit(_error(None, jsonrpc.PARSE_ERROR, f"Parse error: {exc}"))
            return
        if isinstance(message, list):  # a 2025-03-26 batch: relayed as one POST
            await self._outbox.put((message, None))
            return
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            await self._emit(_error(None, jsonrpc.INVALID_REQUEST, "Invalid Request: not a JSON-RPC 2.0 message."))
            return
        if "method" not in message:  # the client's answer to a server-to-client request
            await self._outbox.put((message, None))
            return
        if "id" not in message:
            await self._notification(message)
            return
        if message["method"] == INITIALIZE and not is_modern(message):
            # Nothing else of the session can be sent before its id is known: handled in line.
            await self._initialize(message)
            return
        request_id = message["id"]
        task = self._spawn(self._request(message))
        self._inflight[request_id] = (task, is_modern(message))
        task.add_done_callback(lambda _t: self._inflight.pop(request_id, None))

    async def _notification(self, message: dict[str, Any]) -> None:
        if message["method"] == CANCELLED:
            params = message.get("params") or {}
            running = self._inflight.get(params.get("requestId"))
            if running is not None and running[1]:
                # 2026-07-28 over HTTP: closing the response stream is the cancellation (streamable-http,
                # "Cancellation"); nothing is sent.
                running[0].cancel()
                return
            if running is not None:
                # Session era: the gateway cancels the call (once the notification is out, the local
                # task stops too); the client expects no answer (utilities/cancellation).
                await self._outbox.put((message, running[0].cancel))
                return
        await self._outbox.put((message, None))

    async def _send_loop(self) -> None:
        """Notifications and responses from the client, POSTed in the order they came."""
        while True:
            item, after = await self._outbox.get()
            try:
                if isinstance(item, list):
                    await self._batch(item)
                else:
                    await self._send_one(item)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("could not relay a %s to the gateway", "batch" if isinstance(item, list) else "message")
                logger.debug("relay failure", exc_info=True)
            finally:
                self._outbox.task_done()
            if after is not None:
                after()

    async def _send_one(self, message: dict[str, Any]) -> None:
        if self.session_id is None:
            # No session: a 2026-07-28 client. Nothing it may notify needs the server (basic/index).
            logger.debug("dropping %s: no session", message.get("method", "a response"))
            return
        deadline = _Deadline(self.config.reconnect_timeout)
        while True:
            await self._ready.wait()
            stale = self.session_id
            try:
                await self._post(message, self._post_headers())
                return
            except _Unreachable:
                if not await deadline.wait():
                    logger.warning("gateway unreachable: dropped %s", message.get("method", "a response"))
                    return
            except _SessionGone:
                if "method" not in message:  # the request it answers died with the old session
                    logger.info("the session ended: dropped the client's answer to %r", message.get("id"))
                    return
                await self._renew(stale)

    async def _batch(self, batch: list[Any]) -> None:
        try:
            answer = await self._post(batch, self._post_headers())
        except (_Unreachable, _SessionGone, _Lost) as exc:
            for item in batch:
                if isinstance(item, dict) and "method" in item and "id" in item:
                    await self._emit(_error(item["id"], jsonrpc.SERVER_ERROR, f"The batch was not relayed: {exc}"))
            return
        for item in answer if isinstance(answer, list) else [answer] if answer is not None else []:
            await self._emit(item)

    # -- requests ----------------------------------------------------------------------------------

    async def _request(self, message: dict[str, Any]) -> None:
        request_id = message["id"]
        try:
            if is_modern(message):
                answer = await self._modern_request(message)
            else:
                answer = await self._session_request(message)
        except asyncio.CancelledError:
            return  # cancelled by the client: no answer (utilities/cancellation)
        except BridgeError as exc:
            answer = _error(request_id, exc.code, exc.message)
        except _SessionGone as exc:  # a new session answered 404 too
            answer = _error(request_id, jsonrpc.SERVER_ERROR, f"The request was not processed: {exc}; try again.")
        except Exception as exc:  # a bug must not take the bridge down, nor leave the client waiting
            logger.exception("relaying %s failed", message.get("method"))
            answer = _error(request_id, jsonrpc.INTERNAL_ERROR, f"Internal error in the stdio wrapper: {exc}")
        if answer is not None:
            await self._emit(answer)

    async def _initialize(self, message: dict[str, Any]) -> None:
        params = message.get("params")
        deadline = _Deadline(self.config.reconnect_timeout)
        while True:
            try:
                # With a session open, the gateway answers a second initialize with -32600, as on every transport.
                answer, session_id = await self._post_capturing(message, self._post_headers())
                break
            except (_Unreachable, _Lost) as exc:
                if not await deadline.wait():
                    await self._emit(_error(message["id"], jsonrpc.SERVER_ERROR, self._unreachable(exc)))
                    return
        result = answer.get("result") if isinstance(answer, dict) else None
        if isinstance(result, dict):
            old = self.session_id
            self._init_params = params if isinstance(params, dict) else {}
            self.session_id = session_id
            self.protocol_version = result.get("protocolVersion")
            if old and old != session_id:
                self._spawn(self._delete(old))
            if self._listener is None:
                self._listener = asyncio.ensure_future(self._listen())
            logger.info("session open (MCP %s)", self.protocol_version)
        if answer is not None:
            await self._emit(answer)

    async def _session_request(self, message: dict[str, Any]) -> dict[str, Any] | None:
        method, params = message["method"], message.get("params") or {}
        deadline = _Deadline(self.config.reconnect_timeout)
        renewed = False
        while True:
            await self._ready.wait()
            stale = self.session_id
            try:
                answer = await self._post(message, self._post_headers())
            except _Unreachable as exc:
                if not await deadline.wait():
                    raise BridgeError(self._unreachable(exc)) from None
                continue
            except _SessionGone:
                if renewed or self._init_params is None:
                    raise BridgeError("The gateway does not know this session (HTTP 404); initialize again.") from None
                await self._renew(stale)
                renewed = True
                continue
            except _Lost as exc:
                if method not in REPEATABLE:
                    raise BridgeError(
                        f"The connection to the gateway broke while {method} was running ({exc}); it may or "
                        "may not have completed. The wrapper reconnects; try again if it is safe."
                    ) from None
                logger.info("connection lost during %s (read-only): sending it again", method)
                if not await deadline.wait():
                    raise BridgeError(self._unreachable(exc)) from None
                continue
            if isinstance(answer, dict) and "result" in answer:
                if method == LOGGING_SET_LEVEL:
                    self._log_level = params.get("level")
                elif method == RESOURCES_SUBSCRIBE and isinstance(params.get("uri"), str):
                    self._subscriptions.add(params["uri"])
                elif method == RESOURCES_UNSUBSCRIBE:
                    self._subscriptions.discard(params.get("uri"))
            return answer

    def _unreachable(self, exc: Exception) -> str:
        return (
            f"The gateway at {self.config.url} could not be reached for {self.config.reconnect_timeout:g} s "
            f"({exc or type(exc).__name__})."
        )

    # -- 2026-07-28 --------------------------------------------------------------------------------

    def _modern_headers(self, message: dict[str, Any]) -> dict[str, str]:
        """The headers that mirror the body (streamable-http, "Request Metadata")."""
        method, params = message["method"], message.get("params") or {}
        headers = self._post_headers(session=False)
        headers["MCP-Protocol-Version"] = str(params["_meta"][META_PROTOCOL_VERSION])
        headers["Mcp-Method"] = method
        name = mcp_headers.name_header(method, params)
        if name is not None:
            headers["Mcp-Name"] = name
        if method == TOOLS_CALL:
            annotations = self._param_headers.get(params.get("name"))  # type: ignore[arg-type]
            if annotations:
                headers.update(mcp_headers.param_values(annotations, params.get("arguments") or {}))
        return headers

    def _learn_tools(self, answer: Any) -> None:
        """Remember which tool arguments ride in Mcp-Param-* headers (server/tools, `x-mcp-header`)."""
        result = answer.get("result") if isinstance(answer, dict) else None
        tools = result.get("tools") if isinstance(result, dict) else None
        for tool in tools if isinstance(tools, list) else []:
            if isinstance(tool, dict) and isinstance(tool.get("name"), str):
                self._param_headers[tool["name"]] = mcp_headers.param_headers(tool.get("inputSchema") or {})

    async def _read_tools(self, meta: dict[str, Any]) -> None:
        """List the tools (every page) to learn their header annotations, with the caller's envelope."""
        envelope = {k: v for k, v in meta.items() if k in TOOLS_LIST_ENVELOPE}
        cursor: str | None = None
        for _ in range(TOOLS_LIST_MAX_PAGES):
            params: dict[str, Any] = {"_meta": envelope}
            if cursor:
                params["cursor"] = cursor
            request = jsonrpc.request(f"mcp-gateway-stdio-{next(_internal_ids)}", TOOLS_LIST, params)
            answer = await self._post(request, self._modern_headers(request), forward=_drop)
            self._learn_tools(answer)
            result = answer.get("result") if isinstance(answer, dict) else None
            cursor = result.get("nextCursor") if isinstance(result, dict) else None
            if not cursor:
                return

    async def _modern_request(self, message: dict[str, Any]) -> dict[str, Any] | None:
        method, params = message["method"], message.get("params") or {}
        if method == SUBSCRIPTIONS_LISTEN:
            await self._modern_listen(message)
            return None
        deadline = _Deadline(self.config.reconnect_timeout)
        learnt = False
        while True:
            try:
                answer = await self._post(message, self._modern_headers(message))
            except (_Unreachable, _SessionGone) as exc:
                if not await deadline.wait():
                    raise BridgeError(self._unreachable(exc)) from None
                continue
            except _Lost as exc:
                if method not in REPEATABLE and method != SERVER_DISCOVER:
                    raise BridgeError(
                        f"The connection to the gateway broke while {method} was running ({exc}); it may or "
                        "may not have completed."
                    ) from None
                if not await deadline.wait():
                    raise BridgeError(self._unreachable(exc)) from None
                continue
            if method == TOOLS_LIST:
                self._learn_tools(answer)
            elif (
                method == TOOLS_CALL
                and not learnt
                and isinstance(answer, dict)
                and (answer.get("error") or {}).get("code") == HEADER_MISMATCH
                and params.get("name") not in self._param_headers
            ):
                # A tool whose arguments travel in headers, called before the client listed tools.
                learnt = True
                with contextlib.suppress(_Unreachable, _Lost, _SessionGone):
                    await self._read_tools(params["_meta"])
                if params.get("name") in self._param_headers:
                    continue
            return answer

    async def _modern_listen(self, message: dict[str, Any]) -> None:
        """subscriptions/listen: a stream that stays open. When it breaks it is opened again; the
        second acknowledgement is not passed on, and the client is told that what it follows may
        have changed meanwhile (list_changed, resources/updated with its subscription id)."""
        request_id = message["id"]
        wanted = (message.get("params") or {}).get("notifications") or {}
        acknowledged = False
        deadline = _Deadline(self.config.reconnect_timeout)

        async def deliver(item: Any) -> None:
            nonlocal acknowledged, deadline
            if isinstance(item, dict) and item.get("method") == SUBSCRIPTIONS_ACKNOWLEDGED:
                deadline = _Deadline(self.config.reconnect_timeout)
                if acknowledged:
                    await self._missed(request_id, wanted)
                    return
                acknowledged = True
            await self._emit(item)

        while True:
            try:
                answer = await self._post(message, self._modern_headers(message), forward=deliver)
            except (_Unreachable, _Lost, _SessionGone) as exc:
                if not acknowledged or not await deadline.wait():
                    if acknowledged:
                        logger.warning("listen stream %r: the gateway stayed unreachable; ending it", request_id)
                    await self._emit(_error(request_id, jsonrpc.SERVER_ERROR, self._unreachable(exc)))
                    return
                continue
            if answer is not None:  # an error, or the gateway ended the subscription
                await self._emit(answer)
                return
            await asyncio.sleep(0.1)  # the stream ended without an answer: reopen it

    async def _missed(self, subscription: Any, wanted: dict[str, Any]) -> None:
        meta = {META_SUBSCRIPTION_ID: subscription}
        for flag, method in LISTEN_FLAGS.items():
            if wanted.get(flag) is True:
                await self._emit(jsonrpc.notification(method, {"_meta": meta}))
        for uri in wanted.get("resourceSubscriptions") or []:
            await self._emit(jsonrpc.notification(RESOURCES_UPDATED, {"uri": uri, "_meta": meta}))

    # -- HTTP --------------------------------------------------------------------------------------

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

    # -- the session -------------------------------------------------------------------------------

    async def _renew(self, stale: str | None) -> None:
        """Open a new session for the client after the gateway forgot the old one (see the class)."""
        async with self._renew_lock:
            if self.session_id != stale or self._init_params is None:
                return  # renewed meanwhile
            self._ready.clear()
            try:
                await self._reinitialize()
            finally:
                self._ready.set()

    async def _reinitialize(self) -> None:
        request = jsonrpc.request(f"mcp-gateway-stdio-{next(_internal_ids)}", INITIALIZE, self._init_params)
        deadline = _Deadline(self.config.reconnect_timeout)
        while True:
            try:
                answer, session_id = await self._post_capturing(request, self._post_headers(session=False))
                break
            except (_Unreachable, _Lost) as exc:
                if not await deadline.wait():
                    raise BridgeError(self._unreachable(exc)) from None
        result = answer.get("result") if isinstance(answer, dict) else None
        if not isinstance(result, dict) or not session_id:
            raise BridgeError(f"The gateway refused to open a new session: {answer}")
        if result.get("protocolVersion") != self.protocol_version:
            logger.warning(
                "the gateway negotiated MCP %s on reconnecting (the client has %s)",
                result.get("protocolVersion"),
                self.protocol_version,
            )
        self.session_id = session_id
        self.renewals += 1
        logger.warning("the gateway no longer knew the session (it restarted?): opened a new one")
        headers = self._post_headers()
        await self._post(jsonrpc.notification(INITIALIZED), headers)
        if self._log_level:
            await self._internal(LOGGING_SET_LEVEL, {"level": self._log_level})
        for uri in sorted(self._subscriptions):
            await self._internal(RESOURCES_SUBSCRIBE, {"uri": uri})
        for method in LIST_CHANGED:  # anything may have changed while the client was away
            await self._emit(jsonrpc.notification(method))

    async def _internal(self, method: str, params: dict[str, Any]) -> None:
        request = jsonrpc.request(f"mcp-gateway-stdio-{next(_internal_ids)}", method, params)
        try:
            answer = await self._post(request, self._post_headers(), forward=_drop)
        except (_Unreachable, _Lost, _SessionGone) as exc:
            logger.warning("restoring %s after reconnecting failed: %s", method, exc)
            return
        if isinstance(answer, dict) and "error" in answer:
            logger.warning("restoring %s after reconnecting failed: %s", method, answer["error"].get("message"))

    async def _listen(self) -> None:
        """The standalone GET stream of the session, kept open (2025-03-26+ "Listening for Messages")."""
        last_id: str | None = None
        stream_session: str | None = None
        pause = 0.1
        down_since: float | None = None
        while not self._closing:
            await self._ready.wait()
            session_id = self.session_id
            if session_id is None:
                return
            if session_id != stream_session:
                stream_session, last_id = session_id, None
            headers = {"Accept": EVENT_STREAM, "Mcp-Session-Id": session_id}
            if self.protocol_version:
                headers["MCP-Protocol-Version"] = self.protocol_version
            if last_id:
                headers["Last-Event-ID"] = last_id
            try:
                async with self._session().get(self.config.url, headers=headers) as response:
                    if response.status == 404:
                        await self._renew(session_id)
                        continue
                    if response.status == 405:
                        logger.info("the gateway offers no GET stream")
                        return
                    if response.status != 200:
                        raise aiohttp.ClientResponseError(
                            response.request_info, (), status=response.status, message=response.reason or ""
                        )
                    if down_since is not None:
                        logger.warning("the gateway is reachable again")
                        down_since = None
                    pause = 0.1
                    parser = SSEParser(self.config.max_message_size, last_id)
                    async for chunk in response.content.iter_any():
                        for event in parser.feed(chunk):
                            if event.event == "message" and event.data.strip():
                                try:
                                    await self._emit(orjson.loads(event.data))
                                except orjson.JSONDecodeError:
                                    logger.warning("dropped an SSE event that is not JSON")
                        last_id = parser.last_event_id
            except asyncio.CancelledError:
                raise
            except BridgeError as exc:
                logger.warning("%s", exc.message)
            except (aiohttp.ClientError, TimeoutError, SSEError, OSError) as exc:
                if down_since is None and isinstance(exc, aiohttp.ClientConnectorError):
                    down_since = time.monotonic()
                    logger.warning("the gateway is unreachable (%s); retrying", exc)
                else:
                    logger.info("GET stream: %s", exc or type(exc).__name__)
            if self._closing:
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, MAX_BACKOFF)

    async def _delete(self, session_id: str) -> None:
        """End a session we no longer use (best effort; the gateway would expire it anyway)."""
        headers = {"Mcp-Session-Id": session_id}
        if self.protocol_version:
            headers["MCP-Protocol-Version"] = self.protocol_version
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
            async with asyncio.timeout(2.0):
                response = await self._session().delete(self.config.url, headers=headers)
                response.release()

    async def close(self) -> None:
        """stdin ended: stop relaying, end the session, close connections."""
        self._closing = True
        if self._sender is not None:
            with contextlib.suppress(TimeoutError):  # let the last notifications out
                async with asyncio.timeout(2.0):
                    await self._outbox.join()
            self._sender.cancel()
        for task in [*self._tasks, *([self._listener] if self._listener else [])]:
            task.cancel()
        await asyncio.gather(*self._tasks, *([self._listener] if self._listener else []), return_exceptions=True)
        if self.session_id:
            await self._delete(self.session_id)
            self.session_id = None
        if self._http is not None:
            await self._http.close()
            self._http = None


# -- stdin and stdout -------------------------------------------------------------------------------


async def _open_stdio(limit: int) -> tuple[Callable[[], Awaitable[bytes]], Callable[[bytes], Awaitable[None]]]:
    """(read one line of stdin, write one line to stdout): non-blocking pipes where the streams are
    pipes, blocking calls in a thread otherwise (a file, a terminal)."""
    loop = asyncio.get_running_loop()
    lock = asyncio.Lock()
    try:
        reader = asyncio.StreamReader(limit=limit)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

        async def read_line() -> bytes:
            while True:
                try:
                    return await reader.readline()
                except ValueError:  # longer than the limit: the rest of it arrives as another (bad) line
                    logger.warning("a line on stdin was longer than %s bytes: dropped", limit)

    except (ValueError, OSError):

        async def read_line() -> bytes:
            return await loop.run_in_executor(None, sys.stdin.buffer.readline)

    stdout = sys.stdout.buffer
    try:
        transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, stdout)
        writer = asyncio.StreamWriter(transport, protocol, None, loop)

        async def write_line(data: bytes) -> None:
            async with lock:
                writer.write(data + b"\n")
                await writer.drain()

    except (ValueError, OSError):

        async def write_line(data: bytes) -> None:
            async with lock:
                await loop.run_in_executor(None, _blocking_write, stdout, data + b"\n")

    return read_line, write_line


def _blocking_write(stream: Any, data: bytes) -> None:
    stream.write(data)
    stream.flush()


async def serve(config: BridgeConfig) -> None:
    """Run the bridge on this process's stdin and stdout until stdin ends or a signal arrives."""
    read_line, write_line = await _open_stdio(config.max_message_size)
    bridge = StdioBridge(config, write_line)
    main = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, main.cancel)  # type: ignore[union-attr]
    try:
        await bridge.run(read_line)
    except asyncio.CancelledError:
        pass
    except (BrokenPipeError, ConnectionResetError):
        logger.info("stdout closed: the client went away")


# -- command line ------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `manage.py mcp_stdio` and `scripts/mcp-gateway-stdio`."""
    parser.add_argument(
        "--url",
        default=os.environ.get(URL_ENV),
        help=f"the gateway's MCP endpoint, e.g. https://gw.example.com/servers/demo/mcp (or {URL_ENV})",
    )
    parser.add_argument(
        "--token",
        default=None,
        help=f"bearer token (`manage.py issue_token`); better passed in {TOKEN_ENV}, which process "
        "listings do not show",
    )
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="an extra HTTP header for every request (repeatable), e.g. 'Authorization: Basic ...'",
    )
    parser.add_argument("--connect-timeout", type=float, default=10.0, help="seconds to open a connection (10)")
    parser.add_argument(
        "--reconnect-timeout",
        type=float,
        default=30.0,
        help="seconds a request waits for an unreachable gateway before it gets an error (30)",
    )
    parser.add_argument(
        "--insecure", action="store_true", help="do not verify the gateway's TLS certificate (testing only)"
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("MCP_GATEWAY_STDIO_LOG_LEVEL", "WARNING"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help="what the wrapper logs to stderr (WARNING)",
    )


def config_from(options: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> BridgeConfig:
    """A BridgeConfig from parsed options; ValueError naming what is wrong."""
    url = options.get("url")
    if not url or not str(url).startswith(("http://", "https://")):
        raise ValueError(
            f"--url (or {URL_ENV}) must be the gateway's http(s) MCP endpoint, e.g. http://127.0.0.1:8000/mcp"
        )
    headers: dict[str, str] = {}
    for raw in options.get("header") or []:
        name, sep, value = str(raw).partition(":")
        if not sep or not mcp_headers.is_token(name.strip()) or any(ch in value for ch in "\r\n\0"):
            raise ValueError(f"--header {raw!r} is not 'Name: value'")
        headers[name.strip()] = value.strip()
    token = options.get("token") or environ.get(TOKEN_ENV)
    if token:
        headers["Authorization"] = f"Bearer {token.strip()}"
    return BridgeConfig(
        url=str(url),
        headers=headers,
        connect_timeout=float(options.get("connect_timeout") or 10.0),
        reconnect_timeout=float(options.get("reconnect_timeout") or 30.0),
        verify_tls=not options.get("insecure"),
    )


def configure_logging(level: str) -> None:
    """Logs to stderr only: stdout carries MCP messages and nothing else (basic/transports, stdio)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s mcp-gateway-stdio %(levelname)s: %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mcp-gateway-stdio",
        description="Serve MCP on stdin/stdout for a client that only speaks stdio, relayed to an MCP Gateway "
        "over Streamable HTTP.",
    )
    add_arguments(parser)
    options = vars(parser.parse_args(argv))
    configure_logging(options["log_level"])
    try:
        config = config_from(options)
    except ValueError as exc:
        parser.error(str(exc))
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
