"""The relay to upstream MCP servers: one request out, and what the upstream sends back meanwhile.

``UpstreamRelay.request`` sends a client's request to an upstream over the pooled client of the
client's capability profile, and passes the upstream's messages for that call back to the client:
progress (with per-call tokens, since upstream sessions are shared by many clients), logs at the
client's level, and server-to-client requests (sampling, elicitation, roots) only when the client
declared the capability; anything else gets -32601. Notifications that concern every client
(list_changed, resources/updated) go to ``notices`` (the fan-out).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from transports.protocol import hooks, jsonrpc, modern
from transports.protocol import vocabulary as mcp
from transports.protocol.cache import UpstreamCache
from transports.protocol.exchange import Exchange
from transports.protocol.jsonrpc import JsonRpcError
from transports.protocol.upstream.base import UpstreamClient, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from transports.protocol.upstream.failures import describe
from transports.protocol.upstream_auth import CredentialsNeeded
from transports.protocol.upstream_pool import FULL_CAPABILITIES, UpstreamPool, capability_profile

logger = logging.getLogger(__name__)

OFFERED_MAX_PAGES = 100
# What each server-to-client request needs the client to have declared: (capability, sub-capability).
NEEDS = {
    "sampling/createMessage": ("sampling", None),
    "roots/list": ("roots", None),
    "elicitation/create": ("elicitation", "form"),
}
_token_counter = itertools.count(1)
# Gateway health states (registry.choices.Health, which the core may not import): calls to an unreachable
# gateway fail fast; a failed call to a degraded or unreachable one tells federation nothing new.
UNREACHABLE = "unreachable"
QUIET_STATES = frozenset({"degraded", UNREACHABLE})

Notices = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any] | None]]


class UpstreamDown(JsonRpcError):
    """The upstream could not be reached (connection refused or dropped, timed out, process died, or
    marked unreachable by its health checks): another upstream of a redundancy group may serve the call."""


def upstream_error(gateway: str, exc: Exception, timeout: float | None = None) -> JsonRpcError:
    """The JSON-RPC error a client gets for an upstream's failure."""
    if isinstance(exc, UpstreamError):
        return JsonRpcError(exc.code, exc.message, exc.data)
    if isinstance(exc, UpstreamTimeout):
        return UpstreamDown(jsonrpc.REQUEST_TIMEOUT, f"Upstream {gateway!r} did not answer within {timeout or 0:g} s.")
    return UpstreamDown(jsonrpc.SERVER_ERROR, f"Upstream {gateway!r} is unavailable: {describe(exc).rstrip('.')}.")


def unreachable_error(gateway: str, row: dict[str, Any]) -> UpstreamDown:
    """Fail fast: the error for a call to a gateway its health checks found unreachable."""
    why = row.get("last_error") or "its health checks failed"
    return UpstreamDown(
        jsonrpc.SERVER_ERROR,
        f"Upstream {gateway!r} is unreachable: {why}; the gateway sends it no calls until a health check succeeds.",
    )


class UpstreamRelay:
    """Requests to upstreams on behalf of clients, with the upstream's in-call messages relayed back."""

    def __init__(self, pool: UpstreamPool, *, timeout: float, notices: Notices) -> None:
        self.pool = pool
        self.timeout = timeout
        self.notices = notices
        self._levels: weakref.WeakKeyDictionary[UpstreamClient, str] = weakref.WeakKeyDictionary()
        # Tool names each upstream session offers to its capability profile (None: could not tell).
        self._offered: dict[str, weakref.WeakKeyDictionary[UpstreamClient, frozenset[str] | None]] = {}
        # Connection failures reported on hooks.upstream_failed: gateway -> the snapshot version reported
        # under, so a burst of failed calls sends one signal until the snapshot shows the gateway's new state.
        self._reported: dict[str, int] = {}
        self._signals: set[asyncio.Task[None]] = set()
        # Answers of upstream reads (resources/read) kept for their TTL (docs/governance.md, "Caching");
        # None: nothing is cached. Set where the core is built (transports/runtime.py).
        self.cache: UpstreamCache | None = None
        # Notifications one call may bring from its upstream (0: no bound); past it the call is cancelled upstream
        # and fails. Daphne buffers what a client does not read without limit, so a flood is stopped here.
        self.max_notifications = 0

    def forget_offered(self, gateway: str) -> None:
        """The upstream's lists changed: what it offers to each profile is asked again."""
        self._offered.pop(gateway, None)

    async def request(
        self,
        ex: Exchange,
        gateway: str,
        method: str,
        params: dict[str, Any],
        *,
        timeout: float | None = None,
        shared: bool = False,
        tool: str | None = None,
    ) -> dict[str, Any]:
        """Relay one request to an upstream, passing its progress, logs and requests back to the client.

        ``shared``: on the upstream session that declares every client capability (catalog reads and
        subscriptions, which serve many clients); else on the one of this client's profile."""
        row = ex.snapshot.upstreams.get(gateway)
        if row is None and not self.pool.has_override(gateway):
            raise JsonRpcError(jsonrpc.SERVER_ERROR, f"Upstream {gateway!r} is disabled.")
        cache = self.cache
        if cache is not None and cache.cacheable(method, params):

            async def produce() -> tuple[dict[str, Any], bool]:
                asked: list[str] = []
                result = await self._forward(ex, gateway, row, method, params, timeout, shared, tool, asked)
                return result, not asked

            return await cache.fetch(
                gateway,
                method,
                params,
                ex.session.username,
                produce,
                always_private=bool(row and (row.get("per_user_process") or row.get("per_user_credentials"))),
            )
        return await self._forward(ex, gateway, row, method, params, timeout, shared, tool, None)

    async def _forward(
        self,
        ex: Exchange,
        gateway: str,
        row: dict[str, Any] | None,
        method: str,
        params: dict[str, Any],
        timeout: float | None,
        shared: bool,
        tool: str | None,
        asked: list[str] | None,
    ) -> dict[str, Any]:
        """Send the request upstream (``asked``: gets the methods of the requests the upstream sent the
        client meanwhile; an answer that depends on the client's replies is not cached)."""
        # A per-user gateway's health checks run without any user's credentials (a 401 there says little).
        if row is not None and row.get("health") == UNREACHABLE and not row.get("per_user_credentials"):
            raise unreachable_error(gateway, row)
        meta = params.get("_meta")
        client_meta: dict[str, Any] = meta if isinstance(meta, dict) else {}
        client_token = client_meta.get("progressToken")
        upstream_params = dict(params)
        upstream_token = None
        early = params.get("inputResponses") if ex.modern else None
        if ex.modern:  # the client's envelope is not the upstream's: its client will add its own
            client_meta = {k: v for k, v in client_meta.items() if k not in mcp.ENVELOPE_KEYS}
            upstream_params["_meta"] = client_meta
            for field in modern.MRTR_FIELDS:
                upstream_params.pop(field, None)
        if client_token is not None:
            # Upstream sessions are shared by many clients: give each call a token of its own.
            upstream_token = f"gw-{next(_token_counter)}"
            upstream_params["_meta"] = {**client_meta, "progressToken": upstream_token}

        limit, notices, flooded = self.max_notifications, 0, False
        caller = asyncio.current_task()

        async def relay(message: dict[str, Any]) -> dict[str, Any] | None:
            nonlocal notices, flooded
            if "id" not in message and limit:
                notices += 1
                if notices > limit:  # the rest is dropped, and the call cancelled (upstream too)
                    if not flooded and caller is not None:
                        flooded = True
                        caller.cancel()
                    return None
            if asked is not None and "id" in message:
                asked.append(str(message.get("method")))
            return await self._from_upstream(ex, gateway, message, client_token, upstream_token)

        try:
            try:
                return await self._send(ex, gateway, row, method, upstream_params, timeout, shared, tool, early, relay)
            except UpstreamUnavailable as exc:
                # 401 with an OAuth token or a user's own credentials: refreshed (or reloaded) once, then asked
                # again; nothing ran upstream.
                if exc.status != 401 or row is None or not await self.pool.auth.refused(row, ex.session.username):
                    raise self._failed(ex, gateway, row, exc, timeout) from None
            try:
                return await self._send(ex, gateway, row, method, upstream_params, timeout, shared, tool, early, relay)
            except UpstreamUnavailable as exc:
                raise self._failed(ex, gateway, row, exc, timeout) from None
        except asyncio.CancelledError:
            if not flooded or caller is None or caller.uncancel() > 0:
                raise  # cancelled by someone else too (the client, the gateway stopping)
            logger.warning("upstream %s sent more than %s notifications in one %s: cancelled", gateway, limit, method)
            raise JsonRpcError(
                jsonrpc.SERVER_ERROR,
                f"Upstream {gateway!r} sent more than {limit} notifications for one request "
                "(GATEWAY_UPSTREAM_MAX_NOTIFICATIONS); the request was cancelled.",
            ) from None

    def _failed(
        self, ex: Exchange, gateway: str, row: dict[str, Any] | None, exc: UpstreamUnavailable, timeout: float | None
    ) -> JsonRpcError:
        if row is not None and row.get("per_user_credentials") and exc.status in (401, 403):
            # The user's own credentials were refused: their business, not the upstream's health.
            return JsonRpcError(jsonrpc.SERVER_ERROR, self.pool.auth.rejected_message(row))
        error = upstream_error(gateway, exc, timeout or self.timeout)
        if isinstance(error, UpstreamDown):
            self._connection_failed(ex, gateway, row, exc, timeout or self.timeout)
        return error

    async def _send(
        self,
        ex: Exchange,
        gateway: str,
        row: dict[str, Any] | None,
        method: str,
        upstream_params: dict[str, Any],
        timeout: float | None,
        shared: bool,
        tool: str | None,
        early: Any,
        relay: Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]],
    ) -> dict[str, Any]:
        try:
            # The upstream session that declares what this client declared (shared: the one that declares all).
            profile = None if shared else capability_profile(ex.session.client_capabilities)
            # The client's era: a dual-era upstream is reached in it. Either will do for shared reads and
            # subscriptions, and for a session client that declared nothing it could be asked (no sampling,
            # elicitation or roots): an upstream session would have nothing to relay to it, and the
            # stateless era costs the upstream and the gateway less per call (docs/performance.md).
            era = None if shared or not (ex.modern or profile) else mcp.MODERN if ex.modern else mcp.LEGACY
            try:
                client = await self.pool.get(gateway, row or {}, profile, era=era, user=ex.session.username)
            except CredentialsNeeded as exc:
                raise JsonRpcError(jsonrpc.SERVER_ERROR, exc.message) from None
            if tool is not None and profile is not None and profile != FULL_CAPABILITIES:
                await self._check_offered(gateway, client, tool, profile)
            if ex.session.log_level is not None:
                await self._log_level(client, ex.session.log_level)
            if isinstance(early, dict) and early:  # inputResponses sent without a requestState of ours
                if client.era == mcp.MODERN:
                    upstream_params["inputResponses"] = early  # as they are: the upstream decides (mrtr)
                elif ex.parked is not None:
                    ex.parked.prefill(early)  # a session-era upstream's questions of those keys are not asked
            if ex.upstream_headers:
                return await client.request(
                    method, upstream_params, timeout=timeout, on_message=relay, headers=ex.upstream_headers
                )
            return await client.request(method, upstream_params, timeout=timeout, on_message=relay)
        except (UpstreamError, UpstreamTimeout) as exc:
            error = upstream_error(gateway, exc, timeout or self.timeout)
            if isinstance(error, UpstreamDown):
                self._connection_failed(ex, gateway, row, exc, timeout or self.timeout)
            raise error from None

    def _connection_failed(
        self, ex: Exchange, gateway: str, row: dict[str, Any] | None, exc: Exception, timeout: float
    ) -> None:
        """Tell federation (hooks.upstream_failed) that a call to a gateway the snapshot deems healthy failed
        on the connection. Off the call path: the receiver runs as a task of its own, and only once per
        gateway and snapshot version (the snapshot that follows shows the gateway degraded)."""
        if row is None or row.get("health") in QUIET_STATES or not hooks.upstream_failed.connected:
            return
        version = ex.snapshot.version
        if self._reported.get(gateway) == version:
            return
        self._reported[gateway] = version
        sentence = describe(exc, timeout=timeout, target=row.get("url") or row.get("command"))
        task = asyncio.get_running_loop().create_task(hooks.upstream_failed.send(gateway, sentence))
        self._signals.add(task)
        task.add_done_callback(self._signals.discard)

    async def _from_upstream(
        self, ex: Exchange, gateway: str, message: dict[str, Any], client_token: Any, upstream_token: str | None
    ) -> dict[str, Any] | None:
        """A message the upstream sent during one call: to the client, to every client, or refused."""
        method = message.get("method")
        params = dict(message.get("params") or {})
        if "id" not in message:  # a notification tied to the call
            if method in mcp.LIST_CHANGED or method == mcp.RESOURCES_UPDATED:
                await self.notices(gateway, message)  # for every client, not just this caller
                return None
            if method == mcp.PROGRESS:
                if client_token is None or params.get("progressToken") != upstream_token:
                    return None
                params["progressToken"] = client_token
            elif method == mcp.LOG_MESSAGE and not ex.session.wants_log(str(params.get("level", "info"))):
                return None
            await ex.emit(jsonrpc.notification(str(method), params))
            return None
        needed = NEEDS.get(str(method))
        if needed is None:
            return {"error": {"code": jsonrpc.METHOD_NOT_FOUND, "message": f"Method not found: {method}"}}
        if needed[0] == "elicitation" and params.get("mode") == "url":
            needed = ("elicitation", "url")
        if not ex.session.has_capability(*needed):
            if ex.parked is not None:  # 2026-07-28: the request fails, naming what it needed (basic/index)
                capability = needed[0] if needed[1] is None else f"{needed[0]}.{needed[1]}"
                ex.parked.fail(
                    JsonRpcError(
                        jsonrpc.MISSING_CLIENT_CAPABILITY,
                        f"Missing required client capability: {capability} (the upstream asked for {method}).",
                        {"requiredCapabilities": {needed[0]: {needed[1]: {}} if needed[1] else {}}},
                    )
                )
            return {
                "error": {
                    "code": jsonrpc.METHOD_NOT_FOUND,
                    "message": f"The client did not declare the {needed[0]} capability.",
                }
            }
        try:
            answer = await ex.client_request(str(method), params)
        except TimeoutError:
            return {"error": {"code": jsonrpc.REQUEST_TIMEOUT, "message": "The client did not answer in time."}}
        if "error" in answer:
            return {"error": answer["error"]}
        return {"result": answer.get("result", {})}

    async def _check_offered(self, gateway: str, client: UpstreamClient, tool: str, profile: dict[str, Any]) -> None:
        """-32021 when the upstream offers ``tool`` to a fully capable client (it is in the catalog) but
        not on the session of this client's capability profile: some upstreams list a tool only to
        clients that can answer what it asks (2026-07-28 basic/index, MissingRequiredClientCapability)."""
        offered = self._offered.setdefault(gateway, weakref.WeakKeyDictionary())
        if client not in offered:
            offered[client] = await self._tool_names(client)
        known = offered[client]
        if known is None or tool in known:
            return
        missing: dict[str, Any] = {}
        for name, value in FULL_CAPABILITIES.items():
            if name not in profile:
                missing[name] = value
            elif name == "elicitation" and set(value) - set(profile[name]):
                missing[name] = {mode: {} for mode in set(value) - set(profile[name])}
        raise JsonRpcError(
            jsonrpc.MISSING_CLIENT_CAPABILITY,
            f"Missing required client capability: the upstream offers {tool!r} only to clients that declare "
            f"more of: {', '.join(sorted(missing))}.",
            {"requiredCapabilities": missing},
        )

    async def _tool_names(self, client: UpstreamClient) -> frozenset[str] | None:
        names: set[str] = set()
        cursor = None
        try:
            for _ in range(OFFERED_MAX_PAGES):
                listed = await client.request(mcp.TOOLS_LIST, {"cursor": cursor} if cursor else {}, timeout=10.0)
                tools = listed.get("tools")
                if not isinstance(tools, list):
                    return None
                names.update(t["name"] for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str))
                cursor = listed.get("nextCursor")
                if not cursor:
                    return frozenset(names)
        except (UpstreamError, UpstreamTimeout, UpstreamUnavailable):
            return None
        return None

    async def _log_level(self, client: UpstreamClient, level: str) -> None:
        """Make sure the upstream sends logs at least as detailed as ``level`` (its session is shared:
        the level only ever goes down; the gateway filters per client). For a 2026-07-28 client this
        maps the request's `_meta` log level onto the upstream's `logging/setLevel`."""
        current = self._levels.get(client)
        if current is not None and mcp.LOG_LEVELS.index(current) <= mcp.LOG_LEVELS.index(level):
            return
        capabilities = (client.initialize_result or {}).get("capabilities") or {}
        if "logging" not in capabilities:
            return
        try:
            await client.request(mcp.LOGGING_SET_LEVEL, {"level": level}, timeout=5.0)
        except (UpstreamError, UpstreamTimeout, UpstreamUnavailable) as exc:
            logger.info("upstream refused logging/setLevel %s: %s", level, exc)
            return
        self._levels[client] = level
