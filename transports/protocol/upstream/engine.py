"""The JSON-RPC engine shared by every upstream transport.

A transport subclass opens and closes its connection, sends messages and feeds every message it
receives to `_receive`. This class does the rest: request ids, pending calls and their deadlines,
`notifications/cancelled`, era detection (the `server/discover` probe, then the initialize handshake
when the upstream is not modern), and routing what the upstream sends. With a modern (2026-07-28)
upstream, requests go through a `ModernSession` (stateless.py).

Routing of messages from the upstream (see docs/upstream-clients.md):
- a response resolves the pending call with its id;
- `notifications/progress` goes to the call whose `_meta.progressToken` it carries;
- list_changed and `notifications/resources/updated` always go to the notification handler;
- any other notification or server->client request goes to the call it is known to belong to (on
  Streamable HTTP: the call whose POST stream carried it); when that is unknown (stdio, legacy SSE,
  WebSocket) to the only call in flight, if exactly one is in flight; otherwise to the notification
  handler. On the standalone GET stream notifications always go to the notification handler, while
  server->client requests still go to the only call in flight (TypeScript SDK 1.x servers send a
  tool's elicitation/sampling there);
- a notification carrying `_meta["io.modelcontextprotocol/subscriptionId"]` belongs to the
  `subscriptions/listen` call with that id (that key is removed before the notification handler sees it);
- a call without `on_message` passes its messages to the notification handler;
- `ping` from the upstream is answered here; a request nobody handles is answered -32601. A modern
  upstream must not send requests at all: they are dropped.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from abc import abstractmethod
from collections.abc import Coroutine, Mapping
from typing import Any

from transports.protocol.upstream import stateless
from transports.protocol.upstream.base import (
    MessageHandler,
    NotificationHandler,
    UpstreamClient,
    UpstreamConfig,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from transports.protocol.vocabulary import (
    CANCELLED,
    ENVELOPE_KEYS,
    INITIALIZE,
    INITIALIZED,
    INTERNAL_ERROR,
    LEGACY,
    LEGACY_VERSIONS,
    META_SUBSCRIPTION_ID,
    METHOD_NOT_FOUND,
    MODERN,
    MODERN_VERSIONS,
    PING,
    PROGRESS,
    SERVER_DISCOVER,
    SESSION_NOTIFICATIONS,
    UNSUPPORTED_PROTOCOL_VERSION,
)

logger = logging.getLogger("transports.protocol.upstream")

_CANCEL_NOTIFY_TIMEOUT = 5.0
_CLOSE_NOTICE_WAIT = 1.0


class Call:
    """One request in flight."""

    __slots__ = (
        "background",
        "future",
        "headers",
        "id",
        "internal",
        "method",
        "modern",
        "on_message",
        "token",
        "wire_token",
    )

    def __init__(
        self,
        request_id: int,
        method: str,
        on_message: MessageHandler | None,
        internal: bool,
        *,
        modern: str | None = None,
        headers: Mapping[str, str] | None = None,
        background: bool = False,
    ) -> None:
        self.id = request_id
        self.method = method
        self.on_message = on_message
        self.internal = internal  # the handshake and the probe: never attributed, never cancelled upstream
        self.modern = modern  # the 2026-07-28-era version this request speaks (None: the session era)
        self.headers = headers  # extra HTTP headers for its POST
        self.background = background  # a long-lived request (subscriptions/listen): never guessed as the owner
        self.future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.token: Any = None  # the progressToken the caller gave
        self.wire_token: Any = None  # the one sent upstream (differs only when two calls share a token)


def _is_token(value: Any) -> bool:
    return isinstance(value, str | int) and not isinstance(value, bool)


def strip_envelope(params: dict[str, Any] | None) -> dict[str, Any] | None:
    """Params without the 2026-07-28 per-request `_meta` fields, which mean nothing in a session (and
    could make a dual-era server treat the request as a stateless one)."""
    if not params:
        return params
    meta = params.get("_meta")
    if not isinstance(meta, dict) or not any(key in meta for key in ENVELOPE_KEYS):
        return params
    kept = {k: v for k, v in meta.items() if k not in ENVELOPE_KEYS}
    stripped = {k: v for k, v in params.items() if k != "_meta"}
    if kept:
        stripped["_meta"] = kept
    return stripped


class RpcClient(UpstreamClient):
    """The transport-independent part of every upstream client."""

    # Transports with a 2026-07-28 binding (Streamable HTTP, stdio) probe `server/discover` first.
    SPEAKS_MODERN = False
    # How the probe is judged: over HTTP a 4xx without a modern error body means legacy, and silence is an
    # outage; over stdio any error or silence (after `probe_timeout`) means legacy.
    HTTP = False

    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        self.initialize_result: dict[str, Any] | None = None
        self.discover_result: dict[str, Any] | None = None
        self.era: str | None = None  # "legacy" or "modern", detected at every connect
        self.protocol_version: str | None = None  # negotiated in the handshake, or the modern version in use
        self.last_error: str | None = None  # why the connection was last lost
        self._modern: stateless.ModernSession | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, Call] = {}
        self._tokens: dict[Any, Call] = {}
        self._handler: NotificationHandler | None = None
        self._server_requests: dict[Any, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._notices: set[asyncio.Task[Any]] = set()  # messages being sent in the background
        self._connect_lock = asyncio.Lock()
        self._open = False  # the transport is up (the handshake may still be running)
        self._initialized = False
        self._generation = 0  # bumped for every connection, so stale readers can be told apart

    # ---- transport hooks -------------------------------------------------------------------------

    @abstractmethod
    async def _open_transport(self) -> None:
        """Open the connection (raise UpstreamUnavailable on failure)."""

    @abstractmethod
    async def _close_transport(self, *, final: bool) -> None:
        """Close the connection; `final` when the client is being closed for good. Must not raise."""

    @abstractmethod
    async def _send(self, message: dict[str, Any]) -> None:
        """Send a notification or a response (raise UpstreamUnavailable on failure)."""

    async def _transmit(self, call: Call, message: dict[str, Any]) -> None:
        """Send a request. The answer arrives through `_receive`; HTTP overrides this to read it."""
        await self._send(message)

    async def _after_initialize(self) -> None:
        """Called once the handshake is complete (HTTP opens its standalone GET stream here)."""

    # ---- public interface ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._open and self._initialized

    def set_notification_handler(self, handler: NotificationHandler | None) -> None:
        self._handler = handler

    # ---- the surface the 2026-07-28 session (stateless.ModernSession) runs on ----------------------

    @property
    def notification_handler(self) -> NotificationHandler | None:
        """Where messages that belong to no call go (set with `set_notification_handler`)."""
        return self._handler

    @property
    def generation(self) -> int:
        """The number of the current connection: it changes at every connect, so a loop started on one
        connection can tell that it is stale."""
        return self._generation

    async def call(
        self,
        method: str,
        params: dict[str, Any] | None,
        *,
        timeout: float | None,
        on_message: MessageHandler | None,
        modern: str | None = None,
        headers: Mapping[str, str] | None = None,
        background: bool = False,
    ) -> dict[str, Any]:
        """One JSON-RPC request on the wire, params as given (no envelope added or removed, no era
        routing): the result, or UpstreamError / UpstreamTimeout / UpstreamUnavailable. `modern` is the
        2026-07-28 version the request speaks; `background` marks a long-lived request (a listen stream)
        that is never taken for the owner of an unattributed message."""
        return await self._call(
            method,
            params,
            timeout=timeout,
            on_message=on_message,
            internal=False,
            modern=modern,
            headers=headers,
            background=background,
        )

    async def connect(self) -> dict[str, Any]:
        async with self._connect_lock:
            result = self.discover_result if self.era == MODERN else self.initialize_result
            if self.connected and result is not None:
                return result
            await self._teardown("reconnecting", final=False)
            self._generation += 1
            try:
                async with asyncio.timeout(self.config.connect_timeout):
                    await self._open_transport()
                    self._open = True
                    result = await self._establish()
            except TimeoutError:
                await self._teardown("connect timed out", final=False)
                raise UpstreamUnavailable(
                    f"{self.config.name}: no connection and handshake within {self.config.connect_timeout:g} s"
                ) from None
            except BaseException as exc:
                await self._teardown(f"connect failed: {exc}", final=False)
                raise
            self.last_error = None
            return result

    async def _establish(self) -> dict[str, Any]:
        """Detect the upstream's era (versioning, "Backward Compatibility with Initialization-Based
        Versions") and set the connection up for it: the DiscoverResult or the InitializeResult."""
        self.era = None
        self.initialize_result = self.discover_result = None
        self.protocol_version = None
        era = self.config.era
        if era == LEGACY or not self.SPEAKS_MODERN:
            return await self._handshake()
        try:
            found = await self._probe(required=era == MODERN)
        except UpstreamUnavailable as exc:
            if self.HTTP or era == MODERN or self._open:
                raise
            # Some session-era stdio servers exit on a request before `initialize` (older SDKs): any error
            # means the session era, so start the process again and run the handshake.
            logger.info(
                "%s: the upstream did not survive server/discover (%s); starting it again", self.config.name, exc
            )
            await self._restart_transport()
            return await self._handshake()
        if found is not None:
            return await self._adopt(*found)
        try:
            return await self._handshake()
        except UpstreamUnavailable as exc:
            # A modern server can answer `initialize` with UnsupportedProtocolVersionError when the probe
            # reached it late (a slow stdio start): that names its versions, so probe once more.
            cause = exc.__cause__
            if not (isinstance(cause, UpstreamError) and cause.code == UNSUPPORTED_PROTOCOL_VERSION):
                raise
            if stateless.probe_verdict(cause, http=self.HTTP)[0] != "retry":
                raise
            found = await self._probe(required=True)
            assert found is not None
            return await self._adopt(*found)

    async def _probe(self, *, required: bool) -> tuple[dict[str, Any], str] | None:
        """`server/discover` with the modern envelope: (result, version) for a modern upstream, None for
        a legacy one. Outages raise: they say nothing about the era."""
        name = self.config.name
        version = MODERN_VERSIONS[0]
        why = ""
        for _attempt in range(2):
            params = stateless.enveloped({}, version=version, config=self.config)
            timeout = None if self.HTTP else self.config.probe_timeout
            try:
                result = await self._call(
                    SERVER_DISCOVER, params, timeout=timeout, on_message=None, internal=True, modern=version
                )
            except UpstreamError as exc:
                verdict, retry = stateless.probe_verdict(exc, http=self.HTTP)
                if verdict == "retry" and retry is not None and _attempt == 0:
                    version = retry  # versioning: retry once with a version from `supported`
                    continue
                if verdict in ("modern-refused", "retry"):
                    raise UpstreamUnavailable(f"{name}: the upstream refused server/discover: {exc}") from exc
                why = f"server/discover was answered with an error: {exc}"
            except UpstreamTimeout:
                why = f"server/discover got no answer within {self.config.probe_timeout:g} s"
            except UpstreamUnavailable as exc:
                status = exc.status
                if not self.HTTP or status is None or not 400 <= status < 500 or status in (401, 403):
                    raise
                why = f"server/discover was refused with HTTP {status}"
            else:
                chosen = stateless.valid_discover(result)
                if chosen is not None:
                    return result, chosen
                why = "the discover result names no 2026-07-28-era version"
            break
        if required:
            raise UpstreamUnavailable(f"{name}: the upstream does not speak MCP 2026-07-28 ({why})")
        logger.debug("%s: speaking the session era: %s", name, why)
        return None

    async def _restart_transport(self) -> None:
        """Close the transport and open it again (a new process), within the same connect()."""
        self._open = False
        self._fail_all(f"{self.config.name}: restarting")
        await self._close_transport(final=False)
        self._generation += 1
        await self._open_transport()
        self._open = True

    async def _adopt(self, result: dict[str, Any], version: str) -> dict[str, Any]:
        self.era = MODERN
        self.discover_result = result
        self.protocol_version = version
        self._modern = stateless.ModernSession(self, version, result, http=self.HTTP)
        self._initialized = True
        await self._modern.start()
        return result

    async def _handshake(self) -> dict[str, Any]:
        params = {
            "protocolVersion": self.config.protocol_version,
            "capabilities": dict(self.config.client_capabilities),
            "clientInfo": dict(self.config.client_info),
        }
        try:
            result = await self._call(INITIALIZE, params, timeout=None, on_message=None, internal=True)
        except UpstreamError as exc:
            raise UpstreamUnavailable(f"{self.config.name}: initialize was refused: {exc}") from exc
        version = result.get("protocolVersion")
        if version not in LEGACY_VERSIONS:
            raise UpstreamUnavailable(f"{self.config.name}: unsupported protocol version {version!r} in initialize")
        self.protocol_version = version
        self.initialize_result = result
        self.era = LEGACY
        await self._send({"jsonrpc": "2.0", "method": INITIALIZED})
        self._initialized = True
        await self._after_initialize()
        return result

    async def request(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        on_message: MessageHandler | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        if not self.connected:
            raise UpstreamUnavailable(f"{self.config.name}: not connected" + self._why())
        if timeout is None:
            timeout = self.config.request_timeout
        session = self._modern
        if session is not None:
            return await session.request(method, params, timeout=timeout, on_message=on_message, headers=headers)
        return await self._call(
            method, strip_envelope(params), timeout=timeout, on_message=on_message, internal=False, headers=headers
        )

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        if not self._open:
            raise UpstreamUnavailable(f"{self.config.name}: not connected" + self._why())
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if self._modern is not None:
            enveloped = self._modern.notification(method, params)
            if enveloped is None:
                return
            message = enveloped
        elif params is not None:
            message["params"] = strip_envelope(params)
        try:
            async with asyncio.timeout(self.config.request_timeout):
                await self._send(message)
        except TimeoutError:
            raise UpstreamTimeout(f"{self.config.name}: sending {method} timed out") from None

    async def aclose(self) -> None:
        async with self._connect_lock:
            notices = [task for task in self._notices if not task.done()]
            if notices:  # cancellation notices and answers already on their way get a moment to leave
                await asyncio.wait(notices, timeout=_CLOSE_NOTICE_WAIT)
            await self._teardown("client closed", final=True)
            await self.settle(list(self._background))

    # ---- calls -----------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        params: dict[str, Any] | None,
        *,
        timeout: float | None,
        on_message: MessageHandler | None,
        internal: bool,
        modern: str | None = None,
        headers: Mapping[str, str] | None = None,
        background: bool = False,
    ) -> dict[str, Any]:
        call = Call(
            next(self._ids), method, on_message, internal, modern=modern, headers=headers, background=background
        )
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": call.id, "method": method}
        if params is not None:
            message["params"] = self._claim_token(call, params)
        self._pending[call.id] = call
        try:
            async with asyncio.timeout(timeout):
                try:
                    await self._transmit(call, message)
                    return await call.future
                except TimeoutError:  # from the transport itself; the deadline arrives as CancelledError
                    raise UpstreamUnavailable(f"{self.config.name}: {method}: the transport timed out") from None
        except TimeoutError:
            self._abandon(call, "timeout")
            raise UpstreamTimeout(f"{self.config.name}: {method} got no answer within {timeout:g} s") from None
        except asyncio.CancelledError:
            self._abandon(call, "cancelled by the gateway")
            raise
        finally:
            self._pending.pop(call.id, None)
            if call.wire_token is not None and self._tokens.get(call.wire_token) is call:
                del self._tokens[call.wire_token]
            if call.future.done() and not call.future.cancelled():
                call.future.exception()  # mark retrieved: nobody may await it any more
            else:
                call.future.cancel()

    def _claim_token(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        """Map the call's progress token; rename it on the wire only if another call in flight holds it."""
        meta = params.get("_meta")
        if not isinstance(meta, dict):
            return params
        token = meta.get("progressToken")
        if not _is_token(token):
            return params
        call.token = token
        wire = token
        if wire in self._tokens:
            wire = f"{token}#{call.id}"
            params = {**params, "_meta": {**meta, "progressToken": wire}}
        call.wire_token = wire
        self._tokens[wire] = call
        return params

    def _abandon(self, call: Call, reason: str) -> None:
        """Tell the upstream we no longer wait for this call (legacy `notifications/cancelled`)."""
        if call.internal or not self._open:
            return
        params: dict[str, Any] = {"requestId": call.id, "reason": reason}
        if call.modern is not None and self._modern is not None:
            params = self._modern.envelope(params, with_log_level=False)
        self._send_soon({"jsonrpc": "2.0", "method": CANCELLED, "params": params})

    def _send_soon(self, message: dict[str, Any]) -> None:
        """Send a message in the background (the caller cannot wait), tracked so aclose() lets it leave."""
        task = self.spawn(self._send_quietly(message))
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    async def _send_quietly(self, message: dict[str, Any]) -> None:
        try:
            async with asyncio.timeout(_CANCEL_NOTIFY_TIMEOUT):
                await self._send(message)
        except (UpstreamUnavailable, UpstreamError, TimeoutError) as exc:
            logger.debug("%s: could not send %s: %s", self.config.name, message.get("method"), exc)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run a coroutine in the background, keeping a reference and logging how it failed (the client
        waits for such tasks when it closes)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("%s: background task failed", self.config.name, exc_info=exc)

    # ---- incoming --------------------------------------------------------------------------------

    async def _receive(self, message: Any, call: Call | None = None, *, guess: bool = True) -> None:
        """Route one decoded message from the upstream.

        `call` is the call whose stream carried it, if the transport knows; `guess=False` (the standalone
        GET stream) sends notifications that cannot be attributed to the notification handler, whatever is
        in flight (server->client requests are still attributed to the only call in flight).
        """
        if isinstance(message, list):  # a batch (2025-03-26)
            for item in message:
                if isinstance(item, dict):
                    await self._receive(item, call, guess=guess)
            if not all(isinstance(item, dict) for item in message):
                logger.warning("%s: ignored batch items that are not JSON objects", self.config.name)
            return
        if not isinstance(message, dict):
            logger.warning("%s: ignored a message that is not a JSON object", self.config.name)
            return
        method = message.get("method")
        if isinstance(method, str):
            if "id" in message:
                self._on_server_request(message, method, call)
            else:
                await self._on_notification(message, method, call, guess)
        elif "id" in message:
            self._on_response(message, call)
        else:
            logger.warning("%s: ignored a message that is neither request, notification nor response", self.config.name)

    def _pending_call(self, request_id: Any) -> Call | None:
        """The call in flight with this id (our ids are integers; some servers echo them as strings)."""
        if isinstance(request_id, int) and not isinstance(request_id, bool):
            return self._pending.get(request_id)
        if isinstance(request_id, str) and request_id.isdigit():
            return self._pending.get(int(request_id))
        return None

    def _on_response(self, message: dict[str, Any], carrier: Call | None) -> None:
        request_id = message.get("id")
        call = self._pending_call(request_id)
        if call is None and request_id is None:
            call = carrier  # an error about the message this stream answers (e.g. a parse error)
        if call is None or call.future.done():
            logger.debug("%s: dropped a response for unknown request id %r", self.config.name, request_id)
            return
        error = message.get("error")
        if "error" in message:
            if isinstance(error, dict) and isinstance(error.get("code"), int):
                text = error.get("message")
                call.future.set_exception(
                    UpstreamError(error["code"], text if isinstance(text, str) else "", error.get("data"))
                )
            else:
                call.future.set_exception(
                    UpstreamUnavailable(f"{self.config.name}: malformed error response to {call.method}")
                )
        elif isinstance(message.get("result"), dict):
            call.future.set_result(message["result"])
        else:
            call.future.set_exception(UpstreamUnavailable(f"{self.config.name}: malformed response to {call.method}"))

    def _attribute(self, method: str, carrier: Call | None, guess: bool) -> Call | None:
        """The call a notification or server->client request belongs to, if it can be told."""
        if method in SESSION_NOTIFICATIONS:
            return None
        if carrier is not None or not guess:
            return carrier
        found = None
        for call in self._pending.values():
            if call.internal or call.background:
                continue
            if found is not None:
                return None  # more than one call in flight: cannot tell
            found = call
        return found

    async def _on_notification(self, message: dict[str, Any], method: str, carrier: Call | None, guess: bool) -> None:
        params = message.get("params")
        if not isinstance(params, dict):
            params = {}
        if method == CANCELLED:
            task = self._server_requests.get(params.get("requestId"))
            if task is not None:
                task.cancel()
            return
        meta = params.get("_meta")
        if isinstance(meta, dict) and META_SUBSCRIPTION_ID in meta:
            # A notification of a subscriptions/listen stream: it belongs to that call, and once routed
            # the key means nothing to the receiver.
            owner = self._pending_call(meta[META_SUBSCRIPTION_ID])
            carrier = carrier or owner
            if method in SESSION_NOTIFICATIONS:
                kept = {k: v for k, v in meta.items() if k != META_SUBSCRIPTION_ID}
                params = {k: v for k, v in params.items() if k != "_meta"} | ({"_meta": kept} if kept else {})
                message = {**message, "params": params}
        if self._modern is not None:
            self._modern.observe(method, params)
        if method == PROGRESS:
            token = params.get("progressToken")
            call = self._tokens.get(token) if _is_token(token) else None
            if call is None or call.on_message is None:
                logger.debug("%s: dropped progress for unknown token %r", self.config.name, token)
                return
            if call.wire_token != call.token:
                message = {**message, "params": {**params, "progressToken": call.token}}
            await self._deliver(call.on_message, message)
            return
        call = self._attribute(method, carrier, guess)
        handler = call.on_message if call is not None and call.on_message is not None else self._handler
        if handler is None:
            logger.debug("%s: no handler for %s", self.config.name, method)
            return
        await self._deliver(handler, message)

    async def _deliver(self, handler: MessageHandler, message: dict[str, Any]) -> None:
        try:
            async with asyncio.timeout(self.config.notification_timeout):
                await handler(message)
        except TimeoutError:
            logger.warning("%s: handler for %s took too long", self.config.name, message.get("method"))
        except Exception:
            logger.exception("%s: handler for %s failed", self.config.name, message.get("method"))

    def _on_server_request(self, message: dict[str, Any], method: str, carrier: Call | None) -> None:
        request_id = message["id"]
        if self._modern is not None or (carrier is not None and carrier.modern is not None):
            # 2026-07-28 servers MUST NOT send requests (they ask through input_required results), and a
            # modern client MUST NOT send responses: nothing can be done with it.
            logger.warning("%s: dropped a %s request from a 2026-07-28 upstream", self.config.name, method)
            return
        if method == PING:
            self._send_soon({"jsonrpc": "2.0", "id": request_id, "result": {}})
            return
        # Requests are attributed even when they came on the standalone GET stream: servers built on the
        # TypeScript SDK 1.x send sampling/elicitation there when a tool asks without naming its request.
        call = self._attribute(method, carrier, True)
        handler = call.on_message if call is not None and call.on_message is not None else self._handler
        if handler is None:
            self._reply_error(request_id, METHOD_NOT_FOUND, f"Method not found: {method}")
            return
        if len(self._server_requests) >= self.config.max_server_requests or not _is_token(request_id):
            self._reply_error(request_id, INTERNAL_ERROR, "Too many concurrent requests from the server")
            return
        key = request_id
        if key in self._server_requests:
            self._reply_error(request_id, INTERNAL_ERROR, "Duplicate request id")
            return
        task = self.spawn(self._answer(handler, message))
        self._server_requests[key] = task
        task.add_done_callback(lambda _t: self._server_requests.pop(key, None))

    async def _answer(self, handler: MessageHandler, message: dict[str, Any]) -> None:
        request_id = message["id"]
        reply: dict[str, Any]
        try:
            async with asyncio.timeout(self.config.request_timeout):
                answer = await handler(message)
        except asyncio.CancelledError:
            return  # the upstream cancelled its request: no answer is sent
        except TimeoutError:
            reply = {"code": INTERNAL_ERROR, "message": "The gateway could not answer in time"}
            answer = {"error": reply}
        except Exception:
            logger.exception("%s: handler for %s failed", self.config.name, message.get("method"))
            answer = {"error": {"code": INTERNAL_ERROR, "message": "Internal error"}}
        if answer is None:
            answer = {"error": {"code": METHOD_NOT_FOUND, "message": f"Method not found: {message.get('method')}"}}
        if isinstance(answer.get("error"), dict):
            reply = {"jsonrpc": "2.0", "id": request_id, "error": answer["error"]}
        elif isinstance(answer.get("result"), dict):
            reply = {"jsonrpc": "2.0", "id": request_id, "result": answer["result"]}
        else:
            reply = {"jsonrpc": "2.0", "id": request_id, "error": {"code": INTERNAL_ERROR, "message": "Invalid answer"}}
        await self._send_quietly(reply)

    def _reply_error(self, request_id: Any, code: int, text: str) -> None:
        self._send_soon({"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": text}})

    # ---- connection state ------------------------------------------------------------------------

    def _why(self) -> str:
        return f" (last error: {self.last_error})" if self.last_error else ""

    def _connection_lost(self, reason: str, generation: int) -> None:
        """The transport reports the connection gone: fail every call in flight."""
        if generation != self._generation or not self._open:
            return
        self._open = False
        self._initialized = False
        self.last_error = reason
        logger.warning("%s: connection lost: %s", self.config.name, reason)
        self._fail_all(f"{self.config.name}: {reason}")

    def _fail_all(self, reason: str) -> None:
        for call in list(self._pending.values()):
            if not call.future.done():
                call.future.set_exception(UpstreamUnavailable(reason))
        for task in list(self._server_requests.values()):
            task.cancel()

    async def _teardown(self, reason: str, *, final: bool) -> None:
        self._open = False
        self._initialized = False
        session, self._modern = self._modern, None
        if session is not None:
            await session.close()
        self._fail_all(f"{self.config.name}: {reason}")
        await self._close_transport(final=final)

    # Helpers for subclasses and the 2026-07-28 session.

    async def settle(self, tasks: list[asyncio.Task[Any] | None], timeout: float = 5.0) -> None:
        """Cancel tasks and wait (bounded) for them to finish; their errors are logged by `_task_done`."""
        live = [task for task in tasks if task is not None and not task.done()]
        for task in live:
            task.cancel()
        if live:
            await asyncio.wait(live, timeout=timeout)
