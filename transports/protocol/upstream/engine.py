"""The JSON-RPC engine shared by every upstream transport.

A transport subclass opens and closes its connection, sends messages and feeds every message it
receives to `_receive`. This class does the rest: request ids, pending calls and their deadlines,
progress tokens, `notifications/cancelled`, the state of the connection. Two jobs have modules of
their own, mixed into `RpcClient`: era detection when connecting (era_detection.py: the
`server/discover` probe, then the initialize handshake when the upstream is not modern) and routing
what the upstream sends (routing.py). With a modern (2026-07-28) upstream, requests go through a
`ModernSession` (stateless.py).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from abc import abstractmethod
from collections.abc import Coroutine, Mapping
from typing import Any

from transports.protocol import tracing
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
from transports.protocol.upstream.era_detection import EraDetection
from transports.protocol.upstream.routing import MessageRouting, _is_token
from transports.protocol.vocabulary import (
    CANCELLED,
    ENVELOPE_KEYS,
    MODERN,
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


class RpcClient(EraDetection, MessageRouting, UpstreamClient):
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

    async def _adopt(self, result: dict[str, Any], version: str) -> dict[str, Any]:
        self.era = MODERN
        self.discover_result = result
        self.protocol_version = version
        self._modern = stateless.ModernSession(self, version, result, http=self.HTTP)
        self._initialized = True
        await self._modern.start()
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
        if tracing.active:  # a CLIENT span; its trace context goes on in _meta and the HTTP headers
            with tracing.client_span(self.config.name, self.config.transport, method) as carrier:
                if carrier:
                    params, headers = tracing.with_meta(params, carrier), {**(headers or {}), **carrier}
                return await self._request(method, params, timeout, on_message, headers)
        return await self._request(method, params, timeout, on_message, headers)

    async def _request(
        self,
        method: str,
        params: dict[str, Any] | None,
        timeout: float,
        on_message: MessageHandler | None,
        headers: Mapping[str, str] | None,
    ) -> dict[str, Any]:
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
