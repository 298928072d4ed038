"""Routing what an upstream sends: which call a message belongs to, and the answers to
server->client requests. A mixin of `RpcClient` (engine.py): the transports feed every decoded message
to `_receive`.

The rule (docs/upstream-clients.md, "Which call a message belongs to"):
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
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from transports.protocol.upstream.base import (
    MessageHandler,
    NotificationHandler,
    UpstreamConfig,
    UpstreamError,
    UpstreamUnavailable,
)
from transports.protocol.vocabulary import (
    CANCELLED,
    INTERNAL_ERROR,
    META_SUBSCRIPTION_ID,
    METHOD_NOT_FOUND,
    PING,
    PROGRESS,
    SESSION_NOTIFICATIONS,
)

if TYPE_CHECKING:
    from transports.protocol.upstream.engine import Call
    from transports.protocol.upstream.stateless import ModernSession

logger = logging.getLogger("transports.protocol.upstream")


def _is_token(value: Any) -> bool:
    return isinstance(value, str | int) and not isinstance(value, bool)


class MessageRouting:
    """Routes every message the upstream sends (see the module docstring); part of `RpcClient`."""

    if TYPE_CHECKING:  # provided by RpcClient
        config: UpstreamConfig
        _pending: dict[int, Call]
        _tokens: dict[Any, Call]
        _handler: NotificationHandler | None
        _server_requests: dict[Any, asyncio.Task[None]]
        _modern: ModernSession | None

        def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]: ...
        def _send_soon(self, message: dict[str, Any]) -> None: ...
        async def _send_quietly(self, message: dict[str, Any]) -> None: ...

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
