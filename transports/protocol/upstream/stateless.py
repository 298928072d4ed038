"""The 2026-07-28 ("modern", stateless) era on top of an upstream connection.

`RpcClient` detects the era when it connects (`probe_verdict` here decides what an answer to the
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
  subscribed URIs changes (the new stream first, then the old one is closed);
- `logging/setLevel` is remembered and sent as `_meta` logLevel (until then `config.log_level`, "debug" by
  default: every log message, as a session-era server sends them); `ping` becomes `server/discover`;
- results carrying `ttlMs` are cached for that long (a small, bounded cache per client);
- over HTTP, tools whose `x-mcp-header` annotations are invalid are left out of `tools/list`, and calls
  get their `Mcp-Param-*` headers from the tool's schema.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol

import orjson

from transports.protocol.upstream import headers as http_headers
from transports.protocol.upstream.base import (
    MessageHandler,
    NotificationHandler,
    UpstreamConfig,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from transports.protocol.vocabulary import (
    CACHEABLE_METHODS,
    CANCELLED,
    HEADER_MISMATCH,
    INITIALIZED,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    LEGACY_VERSIONS,
    LOG_LEVELS,
    LOGGING_SET_LEVEL,
    META_CLIENT_CAPABILITIES,
    META_CLIENT_INFO,
    META_INPUT_KEY,
    META_LOG_LEVEL,
    META_PROTOCOL_VERSION,
    METHOD_NOT_FOUND,
    MISSING_CLIENT_CAPABILITY,
    MODERN_VERSIONS,
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
    SUBSCRIPTIONS_ACKNOWLEDGED,
    SUBSCRIPTIONS_LISTEN,
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
# Capabilities whose `listChanged` the listen stream asks for, with the filter flag of each.
LISTEN_FILTERS = (
    ("tools", "toolsListChanged"),
    ("prompts", "promptsListChanged"),
    ("resources", "resourcesListChanged"),
)
_STATE_ONLY_BACKOFF = (0.05, 0.25)  # first and largest pause before retrying a round that asked nothing
_LISTEN_BACKOFF = (1.0, 30.0)
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


def _supported(error: UpstreamError) -> list[str] | None:
    data = error.data
    supported = data.get("supported") if isinstance(data, Mapping) else None
    if isinstance(supported, list) and all(isinstance(v, str) for v in supported):
        return list(supported)
    return None


def mutual_modern(supported: list[str] | None) -> str | None:
    """The newest 2026-07-28-era version both sides speak."""
    return next((v for v in MODERN_VERSIONS if supported and v in supported), None)


def probe_verdict(error: UpstreamError, *, http: bool) -> tuple[str, str | None]:
    """What a JSON-RPC error answering the `server/discover` probe means: ("retry", version) when the
    server names a modern version we share, ("modern-refused", None) when it is a modern server that
    refused the probe for another reason, ("legacy", None) otherwise (versioning, "Backward
    Compatibility": anything but a recognized modern error identifies a legacy server; on stdio the
    fallback is not keyed to any one code)."""
    if error.code == UNSUPPORTED_PROTOCOL_VERSION:
        supported = _supported(error)
        version = mutual_modern(supported)
        if version is not None:
            return "retry", version
        if supported is not None and not any(v in LEGACY_VERSIONS for v in supported):
            return "modern-refused", None  # a modern-only server that shares no version with us
        return "legacy", None
    if http and error.code in (HEADER_MISMATCH, MISSING_CLIENT_CAPABILITY):
        return "modern-refused", None
    return "legacy", None


def valid_discover(result: Mapping[str, Any]) -> str | None:
    """The version to speak with a DiscoverResult, or None when it advertises no modern version we speak."""
    supported = result.get("supportedVersions")
    if not isinstance(supported, list) or not isinstance(result.get("capabilities"), Mapping):
        return None
    return mutual_modern([v for v in supported if isinstance(v, str)])


class ResultCache:
    """Results with a positive `ttlMs`, kept (serialized, so nobody mutates them) until they expire.

    Bounded by entry count (least recently used out first) and by the size of one entry. Keyed by
    method and params without `_meta`. `cacheScope: "private"` results are cached too: every request
    of this client carries the gateway's own credentials, so "private" is the gateway's view.
    """

    def __init__(self, max_entries: int, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def key(method: str, params: Mapping[str, Any] | None) -> tuple[str, str] | None:
        if method not in CACHEABLE_METHODS:
            return None
        relevant = {k: v for k, v in (params or {}).items() if k != "_meta"}
        try:
            return method, orjson.dumps(relevant, option=orjson.OPT_SORT_KEYS).decode()
        except TypeError:
            return None

    def get(self, key: tuple[str, str]) -> dict[str, Any] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, data = entry
        if self._clock() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        value: dict[str, Any] = orjson.loads(data)
        return value

    def put(self, key: tuple[str, str], result: Mapping[str, Any]) -> None:
        ttl = result.get("ttlMs")
        if self.max_entries <= 0 or isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0:
            return
        if result.get("resultType", "complete") != "complete":
            return
        try:
            data = orjson.dumps(result)
        except TypeError:
            return
        if len(data) > self.max_bytes:
            return
        self._entries[key] = (self._clock() + ttl / 1000, data)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def drop(self, method: str, uri: str | None = None) -> None:
        """Forget the results of `method` (for resources/read: only those of `uri`, when given)."""
        for key in [k for k in self._entries if k[0] == method]:
            if uri is None or orjson.loads(key[1]).get("uri") == uri:
                del self._entries[key]

    def clear(self) -> None:
        self._entries.clear()


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


class ModernSession:
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

    # ---- notifications, subscriptions ----------------------------------------------------------

    def observe(self, method: str, params: Mapping[str, Any]) -> None:
        """A notification arrived: forget cached results it makes stale."""
        for stale in STALE_AFTER.get(method, ()):
            self.cache.drop(stale)
        if method == RESOURCES_UPDATED:
            uri = params.get("uri")
            self.cache.drop(RESOURCES_READ, uri if isinstance(uri, str) else None)

    def _capability(self, kind: str) -> Mapping[str, Any]:
        capabilities = self.discover.get("capabilities")
        declared = capabilities.get(kind) if isinstance(capabilities, Mapping) else None
        return declared if isinstance(declared, Mapping) else {}

    def _filter(self) -> dict[str, Any]:
        """The `subscriptions/listen` filter: the list changes the upstream can announce, and the
        subscribed resources."""
        wanted: dict[str, Any] = {}
        for kind, flag in LISTEN_FILTERS:
            if self._capability(kind).get("listChanged"):
                wanted[flag] = True
        if self.subscriptions:
            wanted["resourceSubscriptions"] = sorted(self.subscriptions)
        return wanted

    def _can_subscribe(self) -> bool:
        return bool(self._capability("resources").get("subscribe"))

    async def _subscribe(self, params: Mapping[str, Any] | None, deadline: float) -> dict[str, Any]:
        uri = (params or {}).get("uri")
        if not isinstance(uri, str):
            raise UpstreamError(INVALID_PARAMS, "Invalid params: resources/subscribe needs a uri")
        if not self._can_subscribe():
            raise UpstreamError(METHOD_NOT_FOUND, "Method not found: the upstream offers no resource subscriptions")
        async with self._listen_lock:
            if uri in self.subscriptions:
                return {}
            self.subscriptions.add(uri)
            try:
                granted = await self._replace_listener(wait=self._remaining(deadline), strict=True)
            except BaseException:
                self.subscriptions.discard(uri)
                raise
            accepted = granted.get("resourceSubscriptions") if granted else None
            if not isinstance(accepted, list) or uri not in accepted:
                self.subscriptions.discard(uri)
                raise UpstreamError(INVALID_PARAMS, f"The upstream did not accept a subscription to {uri}")
        return {}

    async def _unsubscribe(self, params: Mapping[str, Any] | None, deadline: float) -> dict[str, Any]:
        uri = (params or {}).get("uri")
        if not isinstance(uri, str):
            raise UpstreamError(INVALID_PARAMS, "Invalid params: resources/unsubscribe needs a uri")
        async with self._listen_lock:
            if uri not in self.subscriptions:
                return {}
            self.subscriptions.discard(uri)
            try:
                await self._replace_listener(wait=self._remaining(deadline), strict=True)
            except (UpstreamError, UpstreamUnavailable, TimeoutError) as exc:
                # The old stream stays: the upstream may go on announcing the resource for a while.
                logger.info("%s: reopening the listen stream without %s failed: %s", self.config.name, uri, exc)
        return {}

    async def _replace_listener(self, *, wait: float, strict: bool) -> dict[str, Any] | None:
        """Open a listen stream for the current filter and, once the upstream has acknowledged it,
        close the previous one (so nothing falls between the two). With `strict`, a stream that is not
        acknowledged within `wait` is abandoned and the error raised; otherwise it keeps trying."""
        wanted = self._filter()
        old = self._listener
        if not wanted:
            self._listener = None
            await self.client.settle([old])
            return {}
        if not self._listen_supported:
            if strict:
                raise UpstreamError(METHOD_NOT_FOUND, "Method not found: the upstream has no subscriptions/listen")
            return None
        acknowledged: asyncio.Future[dict[str, Any] | BaseException] = asyncio.get_running_loop().create_future()
        task = self.client.spawn(self._listen(wanted, acknowledged))
        await asyncio.wait([acknowledged], timeout=max(wait, 0.0))
        outcome = acknowledged.result() if acknowledged.done() else None
        if isinstance(outcome, dict):
            self._listener = task
            if old is not None and old is not task:
                await self.client.settle([old])
            return outcome
        if strict:
            await self.client.settle([task])
            if isinstance(outcome, BaseException):
                raise outcome
            raise UpstreamUnavailable(f"{self.config.name}: subscriptions/listen was not acknowledged in time")
        self._listener = task
        await self.client.settle([old])
        return None

    async def _listen(
        self, wanted: dict[str, Any], acknowledged: asyncio.Future[dict[str, Any] | BaseException]
    ) -> None:
        """Keep one `subscriptions/listen` request open (basic/patterns/subscriptions): reopen it when it
        ends or breaks, with a growing pause, until the client closes or reconnects."""
        client = self.client
        generation = client.generation
        failures = 0

        async def on_message(message: dict[str, Any]) -> dict[str, Any] | None:
            nonlocal failures
            if message.get("method") == SUBSCRIPTIONS_ACKNOWLEDGED:
                params = message.get("params")
                granted = params.get("notifications") if isinstance(params, Mapping) else None
                self.granted = dict(granted) if isinstance(granted, Mapping) else {}
                failures = 0
                if not acknowledged.done():
                    acknowledged.set_result(self.granted)
                return None
            handler = client.notification_handler  # nothing on this stream belongs to a call
            return await handler(message) if handler is not None else None

        while not self._closed and client.connected and client.generation == generation:
            try:
                await client.call(
                    SUBSCRIPTIONS_LISTEN,
                    self.envelope({"notifications": wanted}, with_log_level=False),
                    timeout=None,
                    on_message=on_message,
                    modern=self.version,
                    background=True,
                )
                logger.debug("%s: the upstream ended the listen stream", self.config.name)
            except UpstreamError as exc:
                if not acknowledged.done():
                    acknowledged.set_result(exc)
                if exc.code == METHOD_NOT_FOUND:
                    logger.info("%s: no subscriptions/listen (%s)", self.config.name, exc)
                    self._listen_supported = False
                    return
                logger.warning("%s: subscriptions/listen refused: %s", self.config.name, exc)
            except UpstreamUnavailable as exc:
                if not acknowledged.done():
                    acknowledged.set_result(exc)
                logger.debug("%s: listen stream broke: %s", self.config.name, exc)
            failures += 1
            first, cap = _LISTEN_BACKOFF
            await asyncio.sleep(min(first * 2 ** min(failures - 1, 6), cap))
