"""The 2026-07-28 ("modern", stateless) era on top of an upstream connection.

`RpcClient` detects the era when it connects (era_detection.py; probe.py decides what an answer to the
`server/discover` probe means) and, for a modern upstream, hands every request to a `ModernSession`,
which makes the upstream look like a session-era one to the rest of the gateway:

- every request carries the `_meta` envelope (protocol version, client capabilities, client info, and
  the log level when one is set) - basic/index "_meta";
- an `input_required` result (basic/patterns/mrtr) is answered through the request's `on_message`
  handler, one JSON-RPC request per input request, exactly as a session-era server->client request
  would be, and the request is sent again with `inputResponses` and the echoed `requestState`, round
  after round (at most `config.max_input_rounds`);
- `resources/subscribe` / `resources/unsubscribe` and list changes become one `subscriptions/listen`
  stream whose notifications go to the notification handler; it is reopened when the set of
  subscribed URIs changes (the new stream first, then the old one is closed) - subscriptions.py;
- `logging/setLevel` is remembered and sent as `_meta` logLevel (until then `config.log_level`, "debug" by
  default: every log message, as a session-era server sends them); `ping` becomes `server/discover`;
- results carrying `ttlMs` are cached for that long (a small, bounded cache per client: cache.py);
- over HTTP, tools whose `x-mcp-header` annotations are invalid are left out of `tools/list`, and calls
  get their `Mcp-Param-*` headers from the tool's schema.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Coroutine, Mapping
from typing import Any, Protocol

from transports.protocol.upstream import headers as http_headers
from transports.protocol.upstream.base import (
    MessageHandler,
    NotificationHandler,
    UpstreamConfig,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from transports.protocol.upstream.cache import ResultCache as ResultCache  # also imported from here
from transports.protocol.upstream.probe import probe_verdict as probe_verdict  # also imported from here
from transports.protocol.upstream.subscriptions import ListenStream
from transports.protocol.vocabulary import (
    CANCELLED,
    HEADER_MISMATCH,
    INITIALIZED,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    LOG_LEVELS,
    LOGGING_SET_LEVEL,
    META_CLIENT_CAPABILITIES,
    META_CLIENT_INFO,
    META_INPUT_KEY,
    META_LOG_LEVEL,
    META_PROTOCOL_VERSION,
    METHOD_NOT_FOUND,
    PING,
    PROMPTS_LIST,
    PROMPTS_LIST_CHANGED,
    RESOURCES_LIST,
    RESOURCES_LIST_CHANGED,
    RESOURCES_READ,
    RESOURCES_SUBSCRIBE,
    RESOURCES_TEMPLATES_LIST,
    RESOURCES_UNSUBSCRIBE,
    RESOURCES_UPDATED,
    ROOTS_LIST_CHANGED,
    SERVER_DISCOVER,
    TOOLS_CALL,
    TOOLS_LIST,
    TOOLS_LIST_CHANGED,
    UNSUPPORTED_PROTOCOL_VERSION,
)

logger = logging.getLogger("transports.protocol.upstream")

# What each list change makes stale.
STALE_AFTER = {
    TOOLS_LIST_CHANGED: (TOOLS_LIST,),
    PROMPTS_LIST_CHANGED: (PROMPTS_LIST,),
    RESOURCES_LIST_CHANGED: (RESOURCES_LIST, RESOURCES_TEMPLATES_LIST),
}
# Notifications a client sends in a session that mean nothing in 2026-07-28.
SESSION_ONLY_NOTIFICATIONS = frozenset({INITIALIZED, ROOTS_LIST_CHANGED})
_STATE_ONLY_BACKOFF = (0.05, 0.25)  # first and largest pause before retrying a round that asked nothing
_LISTEN_WAIT = 2.0  # how long connect() waits for the first acknowledgement
_MAX_TOOL_SCHEMAS = 10_000


def enveloped(
    params: Mapping[str, Any] | None, *, version: str, config: UpstreamConfig, log_level: str | None = None
) -> dict[str, Any]:
    """`params` with the per-request `_meta` fields of 2026-07-28 (the caller's other `_meta` kept; a
    logLevel the caller put there wins over `log_level`)."""
    result = dict(params or {})
    meta = result.get("_meta")
    meta = dict(meta) if isinstance(meta, Mapping) else {}
    meta[META_PROTOCOL_VERSION] = version
    meta[META_CLIENT_CAPABILITIES] = dict(config.client_capabilities)
    meta[META_CLIENT_INFO] = dict(config.client_info)
    if meta.get(META_LOG_LEVEL) not in LOG_LEVELS:
        meta.pop(META_LOG_LEVEL, None)
        if log_level is not None:
            meta[META_LOG_LEVEL] = log_level
    result["_meta"] = meta
    return result


def _without(params: Mapping[str, Any] | None, *keys: str) -> dict[str, Any]:
    return {k: v for k, v in (params or {}).items() if k not in keys}


class Engine(Protocol):
    """What a `ModernSession` uses of the JSON-RPC engine it runs on (`RpcClient`), and nothing more."""

    config: UpstreamConfig

    @property
    def connected(self) -> bool: ...

    @property
    def generation(self) -> int: ...

    @property
    def notification_handler(self) -> NotificationHandler | None: ...

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
    ) -> dict[str, Any]: ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]: ...

    async def settle(self, tasks: list[asyncio.Task[Any] | None], timeout: float = 5.0) -> None: ...


class ModernSession(ListenStream):
    """What a client needs to speak 2026-07-28 to one upstream: see the module docstring."""

    def __init__(self, client: Engine, version: str, discover: dict[str, Any], *, http: bool) -> None:
        self.client = client
        self.config = client.config
        self.version = version
        self.discover = discover
        self.http = http
        self.log_level: str | None = self.config.log_level  # then what logging/setLevel said
        self.cache = ResultCache(self.config.cache_max_entries, self.config.cache_max_entry_bytes)
        self.subscriptions: set[str] = set()
        self.granted: dict[str, Any] | None = None  # what the upstream last acknowledged on the listen stream
        self._listener: asyncio.Task[None] | None = None
        self._listen_lock = asyncio.Lock()
        self._listen_supported = True
        self._tool_headers: dict[str, http_headers.ParamHeaders] = {}
        self._input_ids = itertools.count(1)
        self._closed = False
        key = ResultCache.key(SERVER_DISCOVER, {})
        if key is not None:
            self.cache.put(key, discover)

    # ---- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the listen stream when there is something to listen for; wait briefly for its
        acknowledgement, so that nothing announced right after connect() is lost."""
        if self._filter():
            await self._replace_listener(wait=min(self.config.connect_timeout, _LISTEN_WAIT), strict=False)

    async def close(self) -> None:
        self._closed = True
        listener, self._listener = self._listener, None
        await self.client.settle([listener])

    # ---- envelope --------------------------------------------------------------------------------

    def envelope(self, params: Mapping[str, Any] | None, *, with_log_level: bool = True) -> dict[str, Any]:
        level = self.log_level if with_log_level else None
        return enveloped(params, version=self.version, config=self.config, log_level=level)

    def notification(self, method: str, params: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """The notification to send for `notify()`, or None when it has no meaning in 2026-07-28 (on HTTP
        that includes `notifications/cancelled`: closing the response stream cancels)."""
        if method in SESSION_ONLY_NOTIFICATIONS or (self.http and method == CANCELLED):
            logger.debug("%s: %s is not sent to a 2026-07-28 upstream", self.config.name, method)
            return None
        return {"jsonrpc": "2.0", "method": method, "params": self.envelope(params, with_log_level=False)}

    # ---- requests --------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        params: dict[str, Any] | None,
        *,
        timeout: float,
        on_message: MessageHandler | None,
        headers: Mapping[str, str] | None,
    ) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        if method == PING:  # removed in 2026-07-28; discover is the cheapest liveness check
            await self._once(SERVER_DISCOVER, {}, deadline, None, None)
            return {}
        if method == LOGGING_SET_LEVEL:
            return self._set_level(params)
        if method == RESOURCES_SUBSCRIBE:
            return await self._subscribe(params, deadline)
        if method == RESOURCES_UNSUBSCRIBE:
            return await self._unsubscribe(params, deadline)
        key = ResultCache.key(method, params)
        if key is not None and (cached := self.cache.get(key)) is not None:
            return cached
        result, asked = await self._rounds(method, params, deadline, on_message, headers)
        if method == TOOLS_LIST and self.http:
            result = self._learn_tools(result)
        if key is not None and not asked:  # a result that took the user's input is theirs alone
            self.cache.put(key, result)
        return result

    def _remaining(self, deadline: float) -> float:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise UpstreamTimeout(f"{self.config.name}: no complete answer before the deadline")
        return left

    async def _rounds(
        self,
        method: str,
        params: dict[str, Any] | None,
        deadline: float,
        on_message: MessageHandler | None,
        headers: Mapping[str, str] | None,
    ) -> tuple[dict[str, Any], bool]:
        """Send the request; answer `input_required` results through `on_message` and send it again
        (a new JSON-RPC id each time) until the result is complete (basic/patterns/mrtr). Also says
        whether there were such rounds."""
        current = params
        rounds = 0
        quiet_rounds = 0
        while True:
            result = await self._once(method, current, deadline, on_message, headers)
            kind = result.get("resultType", "complete")
            if kind == "complete":
                return result, rounds > 0
            if kind != "input_required":
                raise UpstreamUnavailable(f"{self.config.name}: unknown resultType {kind!r} in the answer to {method}")
            rounds += 1
            if rounds > self.config.max_input_rounds:
                raise UpstreamError(
                    INTERNAL_ERROR,
                    f"Upstream {self.config.name!r} still asked for input after {self.config.max_input_rounds} rounds "
                    f"of {method}; giving up.",
                )
            requests = result.get("inputRequests")
            state = result.get("requestState")
            if (requests is not None and not isinstance(requests, Mapping)) or (
                state is not None and not isinstance(state, str)
            ):
                raise UpstreamUnavailable(f"{self.config.name}: malformed input_required result to {method}")
            if not requests and state is None:
                raise UpstreamUnavailable(
                    f"{self.config.name}: an input_required result to {method} with neither inputRequests nor "
                    "requestState"
                )
            current = _without(params, "inputResponses", "requestState")
            if requests:
                quiet_rounds = 0
                current["inputResponses"] = await self._answer_inputs(dict(requests), on_message, deadline)
            else:  # only requestState: the upstream is working; ask again after a short pause
                pause = min(_STATE_ONLY_BACKOFF[0] * 2**quiet_rounds, _STATE_ONLY_BACKOFF[1])
                quiet_rounds += 1
                await asyncio.sleep(min(pause, self._remaining(deadline)))
            if state is not None:
                current["requestState"] = state

    async def _once(
        self,
        method: str,
        params: Mapping[str, Any] | None,
        deadline: float,
        on_message: MessageHandler | None,
        headers: Mapping[str, str] | None,
    ) -> dict[str, Any]:
        """One JSON-RPC request. UnsupportedProtocolVersionError naming a version we speak is retried once
        with it. Over HTTP a HeaderMismatch on tools/call makes the client re-read the tools' schemas and
        try once more with the headers they call for (streamable-http, "Client Behavior")."""
        extra = self._headers_for(method, params, headers)
        try:
            return await self._send(method, params, deadline, on_message, extra)
        except UpstreamError as exc:
            if exc.code == UNSUPPORTED_PROTOCOL_VERSION:
                verdict, version = probe_verdict(exc, http=self.http)
                if verdict != "retry" or version is None:
                    raise
                # versioning, "Protocol Version Negotiation": retry once with a version from `supported`.
                self.version = version
                return await self._send(method, params, deadline, on_message, extra)
            if not (self.http and exc.code == HEADER_MISMATCH and method == TOOLS_CALL):
                raise
            await self._relearn_tools(deadline)
            again = self._headers_for(method, params, headers)
            if again == extra:
                raise
            return await self._send(method, params, deadline, on_message, again)

    async def _send(
        self,
        method: str,
        params: Mapping[str, Any] | None,
        deadline: float,
        on_message: MessageHandler | None,
        extra: dict[str, str] | None,
    ) -> dict[str, Any]:
        return await self.client.call(
            method,
            self.envelope(params),
            timeout=self._remaining(deadline),
            on_message=on_message,
            modern=self.version,
            headers=extra,
        )

    async def _answer_inputs(
        self, requests: dict[str, Any], on_message: MessageHandler | None, deadline: float
    ) -> dict[str, Any]:
        """Each input request goes to the handler as a JSON-RPC request (its key in
        `params._meta["dev.mcp-gateway/inputKey"]`); the answers become `inputResponses`. An error answer
        (the gateway's client refused or failed) ends the request with that error: 2026-07-28 has no way
        to hand an error back as an input response."""
        handler = on_message or self.client.notification_handler
        limit = asyncio.Semaphore(max(1, self.config.max_server_requests))

        async def answer(key: str, request: Any) -> tuple[str, dict[str, Any]]:
            if not isinstance(request, Mapping) or not isinstance(request.get("method"), str):
                raise UpstreamUnavailable(f"{self.config.name}: malformed input request {key!r}")
            method = request["method"]
            params = dict(request["params"]) if isinstance(request.get("params"), Mapping) else {}
            meta = params.get("_meta")
            params["_meta"] = {**(meta if isinstance(meta, Mapping) else {}), META_INPUT_KEY: key}
            message = {"jsonrpc": "2.0", "id": f"input-{next(self._input_ids)}", "method": method, "params": params}
            if handler is None:
                raise UpstreamError(METHOD_NOT_FOUND, f"Method not found: {method}")
            async with limit:
                try:
                    async with asyncio.timeout(min(self.config.request_timeout, self._remaining(deadline))):
                        reply = await handler(message)
                except TimeoutError:
                    raise UpstreamError(INTERNAL_ERROR, f"The gateway could not answer {method} in time") from None
                except (UpstreamError, UpstreamUnavailable):
                    raise
                except Exception:
                    logger.exception("%s: handler for %s failed", self.config.name, method)
                    raise UpstreamError(INTERNAL_ERROR, "Internal error") from None
            if reply is None:
                raise UpstreamError(METHOD_NOT_FOUND, f"Method not found: {method}")
            error = reply.get("error")
            if isinstance(error, Mapping):
                code = error.get("code")
                text = error.get("message")
                raise UpstreamError(
                    code if isinstance(code, int) else INTERNAL_ERROR,
                    text if isinstance(text, str) else "",
                    error.get("data"),
                )
            if not isinstance(reply.get("result"), Mapping):
                raise UpstreamError(INTERNAL_ERROR, f"Invalid answer to {method}")
            return key, dict(reply["result"])

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(answer(str(key), request)) for key, request in requests.items()]
        except BaseExceptionGroup as failed:
            first = failed.exceptions[0]
            raise first from None
        return dict(task.result() for task in tasks)

    def _set_level(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        level = (params or {}).get("level")
        if level not in LOG_LEVELS:
            raise UpstreamError(INVALID_PARAMS, f"Invalid params: level must be one of {', '.join(LOG_LEVELS)}")
        self.log_level = str(level)
        return {}

    # ---- HTTP headers for tool parameters ---------------------------------------------------------

    def _headers_for(
        self, method: str, params: Mapping[str, Any] | None, headers: Mapping[str, str] | None
    ) -> dict[str, str] | None:
        extra: dict[str, str] = {}
        if self.http and method == TOOLS_CALL and params:
            annotations = self._tool_headers.get(str(params.get("name")))
            if annotations:
                extra.update(http_headers.param_values(annotations, params.get("arguments")))
        http_headers.add_extra(extra, headers, {})
        return extra or None

    def _learn_tools(self, result: dict[str, Any]) -> dict[str, Any]:
        """Remember the `x-mcp-header` annotations of listed tools; leave out tools whose annotations
        are invalid (streamable-http, "Schema Extension": clients MUST exclude them)."""
        tools = result.get("tools")
        if not isinstance(tools, list):
            return result
        kept: list[Any] = []
        for tool in tools:
            if not isinstance(tool, Mapping) or not isinstance(tool.get("name"), str):
                kept.append(tool)
                continue
            annotations = http_headers.param_headers(tool.get("inputSchema"))
            if annotations is None:
                logger.warning("%s: tool %r left out: invalid x-mcp-header annotation", self.config.name, tool["name"])
                self._tool_headers.pop(tool["name"], None)
                continue
            if annotations:
                if len(self._tool_headers) >= _MAX_TOOL_SCHEMAS:
                    self._tool_headers.clear()
                self._tool_headers[tool["name"]] = annotations
            else:
                self._tool_headers.pop(tool["name"], None)
            kept.append(tool)
        if len(kept) == len(tools):
            return result
        return {**result, "tools": kept}

    async def _relearn_tools(self, deadline: float) -> None:
        cursor: str | None = None
        for _ in range(100):
            page = await self._send(TOOLS_LIST, {"cursor": cursor} if cursor else {}, deadline, None, None)
            self._learn_tools(page)
            next_cursor = page.get("nextCursor")
            if not isinstance(next_cursor, str) or not next_cursor:
                return
            cursor = next_cursor

    # ---- notifications ------------------------------------------------------------------------

    def observe(self, method: str, params: Mapping[str, Any]) -> None:
        """A notification arrived: forget cached results it makes stale."""
        for stale in STALE_AFTER.get(method, ()):
            self.cache.drop(stale)
        if method == RESOURCES_UPDATED:
            uri = params.get("uri")
            self.cache.drop(RESOURCES_READ, uri if isinstance(uri, str) else None)
