"""2026-07-28 requests: one self-contained request at a time, above the shared method table.

``StatelessHandler.handle`` builds a transient ``Session`` from the request's `_meta` envelope and
runs the method in the same ``Methods`` table as a session request; what is era-specific lives here:
`server/discover`, the result decoration (`resultType`, cache hints, `serverInfo`), the removed
methods, the `Mcp-Param-*` header check, and multi-round-trip calls (``rounds.py``): an upstream's
mid-call questions become an `input_required` result, and the client's retry (with a sealed
`requestState`) resumes the parked call, on whichever replica holds it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from transports.protocol import jsonrpc, modern
from transports.protocol import vocabulary as mcp
from transports.protocol.catalog import CatalogCache, Snapshot, View
from transports.protocol.exchange import Emit, Exchange
from transports.protocol.jsonrpc import JsonRpcError
from transports.protocol.methods import Methods
from transports.protocol.replicas import Mesh, ReplicaGone
from transports.protocol.rounds import ParkedCall, ParkedCalls
from transports.protocol.sessions import Session

logger = logging.getLogger(__name__)


def envelope_session(
    envelope: modern.Envelope, *, username: str, scopes: frozenset[str], server: str | None
) -> Session:
    """What a session used to hold, read from one request's _meta (basic/index, statelessness)."""
    return Session(
        id="",
        username=username,
        scopes=scopes,
        server=server,
        protocol_version=envelope.protocol_version,
        client_capabilities=envelope.client_capabilities,
        client_info=envelope.client_info,
        initialized=True,
        log_level=envelope.log_level,
    )


class StatelessHandler:
    """Serves 2026-07-28 requests (subscriptions/listen streams are ``listen.ListenStreams``)."""

    def __init__(
        self,
        *,
        catalog: CatalogCache,
        methods: Methods,
        mesh: Mesh | None,
        sealer: modern.RequestStateSealer,
        parked: ParkedCalls,
        discover: Callable[[View], dict[str, Any]],
        server_info: Callable[[View], dict[str, Any]],
        cache_ttl_ms: int,
        cache_scope: str,
        tool_timeout: float,
    ) -> None:
        self.catalog = catalog
        self.methods = methods
        self.mesh = mesh
        self.sealer = sealer
        self.parked = parked
        self.discover = discover
        self.server_info = server_info
        self.cache_ttl_ms = cache_ttl_ms
        self.cache_scope = cache_scope
        self.tool_timeout = tool_timeout
        if mesh is not None:
            mesh.handlers["round"] = self._forwarded_round

    async def view(self, server: str | None) -> tuple[Snapshot, View]:
        snapshot = await self.catalog.get()
        view = snapshot.view(server)
        if view is None:
            raise JsonRpcError(jsonrpc.INVALID_PARAMS, f"No enabled virtual server named {server!r}.", http_status=404)
        return snapshot, view

    async def handle(
        self,
        message: dict[str, Any],
        envelope: modern.Envelope,
        *,
        username: str,
        scopes: frozenset[str],
        server: str | None,
        emit: Emit,
        headers: Mapping[str, str],
    ) -> dict[str, Any] | None:
        """Answer one 2026-07-28 request; None when the client cancelled it."""
        method = message["method"]
        request_id = message["id"]
        try:
            snapshot, view = await self.view(server)
            if method == mcp.SERVER_DISCOVER:
                return self._decorate(method, jsonrpc.response(request_id, self.discover(view)), view)
            if method not in self.methods or method in mcp.MODERN_REMOVED:
                removed = " (removed in 2026-07-28)" if method in mcp.MODERN_REMOVED or method == mcp.INITIALIZE else ""
                raise JsonRpcError(jsonrpc.METHOD_NOT_FOUND, f"Method not found: {method}{removed}")
            params = message.get("params") or {}
            owner = self._round_owner(method, params, username, server)
            if owner is not None:
                return await self._forward_round(owner, message, username, scopes, server, emit, headers)
            if method == mcp.TOOLS_CALL:
                name = params.get("name")  # not a string: the method table says so (-32602)
                tool = view.tool_by_name.get(name) if isinstance(name, str) else None
                arguments = params.get("arguments")
                if tool is not None and isinstance(arguments, dict):
                    modern.check_param_headers(tool.wire.get("inputSchema") or {}, arguments, headers)
            session = envelope_session(envelope, username=username, scopes=scopes, server=server)
            exchange = Exchange(
                session=session,
                snapshot=snapshot,
                view=view,
                emit=emit,
                request_id=request_id,
                modern=True,
                upstream_headers=modern.forwarded_headers(headers) or None,
            )
            if method in modern.MRTR_METHODS:
                answer = await self._rounds(message, exchange)
            else:
                answer = await self.methods.handle(message, exchange)
        except JsonRpcError as error:
            return jsonrpc.error_response(request_id, error)
        if answer is None:
            return None
        return self._decorate(method, answer, view)

    def _decorate(self, method: str, answer: dict[str, Any], view: View) -> dict[str, Any]:
        """resultType, cache hints and serverInfo on results; 2026-07-28 error codes on errors."""
        if "error" in answer:
            error = answer["error"]
            if method == "resources/read" and error.get("code") == jsonrpc.RESOURCE_NOT_FOUND:
                answer = {**answer, "error": {**error, "code": jsonrpc.INVALID_PARAMS}}  # SEP-2164
            return answer
        result = dict(answer["result"])
        result.setdefault("resultType", "complete")
        if method in mcp.CACHEABLE_METHODS and result["resultType"] == "complete":
            ttl = result.get("ttlMs")
            result["ttlMs"] = min(ttl, self.cache_ttl_ms) if isinstance(ttl, int) and ttl >= 0 else self.cache_ttl_ms
            private = result.get("cacheScope") == "private" or self.cache_scope == "private"
            result["cacheScope"] = "private" if private else "public"
        meta = result.get("_meta")
        result["_meta"] = {**(meta if isinstance(meta, dict) else {}), mcp.META_SERVER_INFO: self.server_info(view)}
        return {**answer, "result": result}

    # -- rounds (basic/patterns/mrtr) -----------------------------------------------------------

    async def _rounds(self, message: dict[str, Any], ex: Exchange) -> dict[str, Any] | None:
        """tools/call, resources/read, prompts/get for a modern client: a parked call answered round
        by round."""
        method, request_id = message["method"], message["id"]
        params = message.get("params") or {}
        session = ex.session
        digest = modern.request_digest(method, params)
        token, responses = params.get("requestState"), params.get("inputResponses")
        if responses is not None and not isinstance(responses, dict):
            raise JsonRpcError(
                jsonrpc.INVALID_PARAMS, "Invalid params: inputResponses must be an object keyed like inputRequests."
            )
        if token is not None:
            state = self.sealer.open(token, principal=session.username, server=session.server, digest=digest)
            call = self.parked.get(state.call_id)
            if call is None:
                raise JsonRpcError(
                    jsonrpc.INVALID_PARAMS,
                    "Invalid params: requestState rejected: the call it continues has ended or expired; "
                    "send the request again without inputResponses and requestState.",
                )
            if state.round != call.round or call.active:
                raise JsonRpcError(
                    jsonrpc.INVALID_PARAMS,
                    "Invalid params: requestState rejected: it was already used (each one continues its round once).",
                )
            for key, value in (responses or {}).items():
                ask = call.asks.get(key)
                if ask is not None and not isinstance(value, dict):
                    raise JsonRpcError(
                        jsonrpc.INVALID_PARAMS,
                        f"Invalid params: inputResponses[{key!r}] must be the result object of {ask.method}.",
                    )
            self.parked.resume(call, ex.emit)
            call.answer(responses or {})
        else:
            call_id = modern.new_call_id() if self.mesh is None else f"{self.mesh.tag}.{modern.new_call_id()}"
            call = ParkedCall(id=call_id, principal=session.username, server=session.server, digest=digest, expires=0.0)
            self.parked.add(call)
            call.emit_to = ex.emit
            ex.parked, ex.emit = call, call.emit
            # inputResponses without a requestState of ours go on with the call (see UpstreamRelay.request).
            first = {**message, "params": {k: v for k, v in params.items() if k != "requestState"}}
            call.task = asyncio.ensure_future(self.methods.handle(first, ex))
        try:
            kind, value = await call.next_round()
        except asyncio.CancelledError:  # the client closed its stream: cancellation (streamable-http)
            self.parked.drop(call.id)
            raise
        if kind == "input":
            self.parked.park(call)
            sealed = self.sealer.seal(
                modern.RequestState(call.id, call.round, session.username, session.server, digest, call.expires)
            )
            asks = {key: {"method": ask.method, "params": ask.params} for key, ask in value.items()}
            return jsonrpc.response(
                request_id, {"resultType": "input_required", "inputRequests": asks, "requestState": sealed}
            )
        self.parked.drop(call.id)
        if kind == "error":
            return jsonrpc.error_response(request_id, value)
        if value is None:
            return None
        return {**value, "id": request_id}

    def _round_owner(self, method: str, params: dict[str, Any], username: str, server: str | None) -> str | None:
        """The replica holding the parked call a retry continues, when that is another replica."""
        token = params.get("requestState")
        if self.mesh is None or method not in modern.MRTR_METHODS or token is None:
            return None
        state = self.sealer.open(token, principal=username, server=server, digest=modern.request_digest(method, params))
        tag, dot, _ = state.call_id.partition(".")
        if not dot or tag == self.mesh.tag or self.parked.get(state.call_id) is not None:
            return None
        return tag

    async def _forward_round(
        self,
        owner: str,
        message: dict[str, Any],
        username: str,
        scopes: frozenset[str],
        server: str | None,
        emit: Emit,
        headers: Mapping[str, str],
    ) -> dict[str, Any] | None:
        """Run a retry on the replica whose parked call it continues; its progress comes back to ``emit``."""
        assert self.mesh is not None
        body = {
            "message": message,
            "username": username,
            "scopes": sorted(scopes),
            "server": server,
            "headers": dict(headers),
        }
        try:
            return await self.mesh.call(owner, "round", body, timeout=self.tool_timeout + 30, emit=emit)
        except ReplicaGone as exc:
            logger.warning("retry of a parked call could not reach its replica: %s", exc)
            raise JsonRpcError(
                jsonrpc.INVALID_PARAMS,
                "Invalid params: requestState rejected: the call it continues has ended (the gateway replica "
                "running it is gone); send the request again without inputResponses and requestState.",
            ) from None

    async def _forwarded_round(self, body: dict[str, Any], emit: Emit) -> dict[str, Any] | None:
        message = body["message"]
        return await self.handle(
            message,
            modern.parse_envelope(message),
            username=body["username"],
            scopes=frozenset(body["scopes"]),
            server=body["server"],
            emit=emit,
            headers=body["headers"],
        )
