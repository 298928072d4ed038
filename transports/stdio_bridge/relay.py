"""The relay: one stdio client to one gateway endpoint (see the package docstring and ``StdioBridge``).

No Django here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson

from transports.protocol import jsonrpc
from transports.protocol.upstream import headers as mcp_headers
from transports.protocol.upstream.http import EVENT_STREAM, REPEATABLE
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
from transports.stdio_bridge.config import BridgeConfig
from transports.stdio_bridge.gateway_http import GatewayHttp, _error, _Lost, _SessionGone, _Unreachable

logger = logging.getLogger("transports.stdio_bridge")  # one logger for the package (cli configures it)

# What of a client's envelope the wrapper's own tools/list carries (not its log level).
TOOLS_LIST_ENVELOPE = (META_PROTOCOL_VERSION, META_CLIENT_CAPABILITIES, META_CLIENT_INFO)
MAX_BACKOFF = 2.0
TOOLS_LIST_MAX_PAGES = 100
_internal_ids = itertools.count(1)


class BridgeError(Exception):
    """Answer the client's request with this JSON-RPC error."""

    def __init__(self, message: str, code: int = jsonrpc.SERVER_ERROR) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def is_modern(message: Any) -> bool:
    """A request in the 2026-07-28 envelope (basic/index, `_meta`)."""
    params = message.get("params") if isinstance(message, dict) else None
    meta = params.get("_meta") if isinstance(params, dict) else None
    return isinstance(meta, dict) and META_PROTOCOL_VERSION in meta


async def _drop(message: Any) -> None:
    """Where related messages of the bridge's own requests go."""


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


class StdioBridge(GatewayHttp):
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
        super().__init__(config, write)
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

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

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
