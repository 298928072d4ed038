"""The Streamable HTTP rules of the protocol core for one POSTed body (basic/transports#streamable-http, both
eras): a session's ``initialize``, a 2026-07-28 request, or a session-era message or batch, each turned
into the ``Outcome`` the adapter sends. A part of ``McpCore`` (core.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from transports.protocol import jsonrpc, modern, versions
from transports.protocol import vocabulary as mcp
from transports.protocol.catalog import View
from transports.protocol.exchange import Emit
from transports.protocol.jsonrpc import JsonRpcError
from transports.protocol.listen import Listener
from transports.protocol.outcome import Call, Caller, Outcome, error_outcome, request_id_of
from transports.protocol.sessions import Session, SessionStore
from transports.protocol.shared_sessions import RedisSessionStore

# Requests that always answer on a resumable SSE stream (2025-11-25 sessions): the long-running ones.
STREAMED_METHODS = frozenset({mcp.TOOLS_CALL})


class StreamableHttpPost:
    """One POSTed body of Streamable HTTP; part of `McpCore`."""

    if TYPE_CHECKING:  # provided by McpCore and SessionEra
        sessions: SessionStore | RedisSessionStore

        async def initialize(
            self,
            message: dict[str, Any],
            caller: Caller,
            *,
            session: Session | None = None,
            current: Session | None = None,
        ) -> tuple[Session, dict[str, Any]]: ...
        async def view(self, server: str | None) -> View: ...
        async def session_of(self, caller: Caller, session_id: str | None) -> Session: ...
        @staticmethod
        def primed(session: Session) -> bool: ...
        async def push(self, session: Session, message: dict[str, Any]) -> None: ...
        async def take(self, session: Session, message: dict[str, Any]) -> None: ...
        async def answer(
            self,
            session: Session,
            message: dict[str, Any],
            emit: Emit,
            *,
            headers: Mapping[str, str] | None = None,
            transport: str = "",
        ) -> dict[str, Any] | None: ...
        async def listen(self, message: dict[str, Any], envelope: modern.Envelope, caller: Caller) -> Listener: ...
        async def handle_stateless(
            self,
            message: dict[str, Any],
            envelope: modern.Envelope,
            caller: Caller,
            emit: Emit,
            *,
            transport: str = "",
        ) -> dict[str, Any] | None: ...

    async def post(self, payload: Any, caller: Caller) -> Outcome:
        """A decoded Streamable HTTP POST body: a session's initialize, a 2026-07-28 request, or a
        session-era message or batch (basic/transports#streamable-http, both eras)."""
        headers = caller.headers
        initialize = isinstance(payload, dict) and payload.get("method") == mcp.INITIALIZE and "id" in payload
        if initialize and not modern.is_modern(payload):
            return await self._initialize(payload, caller)
        if modern.is_modern(payload) or (
            "mcp-session-id" not in headers
            and headers.get("mcp-protocol-version", mcp.DEFAULT_HEADER_VERSION) not in mcp.LEGACY_VERSIONS
        ):
            return await self._stateless(payload, caller)
        try:
            session = await self.session_of(caller, headers.get("mcp-session-id"))
        except JsonRpcError as exc:
            return error_outcome(exc)
        if isinstance(payload, list):
            return await self._batch(session, payload, headers)
        try:
            message = jsonrpc.validate(payload)
        except JsonRpcError as exc:
            return error_outcome(exc, request_id_of(payload))
        if jsonrpc.kind(message) != "request":
            await self.take(session, message)
            return Outcome(202)
        primed = self.primed(session)

        async def run(emit: Emit) -> dict[str, Any] | None:
            return await self.answer(session, message, emit, headers=headers, transport="streamable-http")

        call = Call(message, run, session, primed=primed, streamed=primed and message["method"] in STREAMED_METHODS)
        return Outcome(call=call)

    async def _initialize(self, message: dict[str, Any], caller: Caller) -> Outcome:
        # The session the request names, if it is live and the caller's (a stale or unknown id: the
        # client is starting over).
        session_id = caller.headers.get("mcp-session-id")
        live = await self.sessions.get(session_id) if session_id else None
        if live is not None and (live.username != caller.username or live.server != caller.server):
            live = None
        try:
            jsonrpc.validate(message)
            session, result = await self.initialize(message, caller, current=live)
        except JsonRpcError as exc:
            return error_outcome(exc, message.get("id"))
        return Outcome(200, jsonrpc.response(message["id"], result), session_id=session.id)

    async def _batch(self, session: Session, batch: list[Any], session_headers: Mapping[str, str]) -> Outcome:
        """2025-03-26 batches: every request answered, in one JSON array; notifications just taken;
        related messages of the requests go to the session's standalone stream."""
        if not versions.allows_batches(session.protocol_version):
            return error_outcome(
                JsonRpcError(
                    jsonrpc.INVALID_REQUEST,
                    f"Invalid Request: JSON-RPC batches are not part of MCP {session.protocol_version}.",
                )
            )
        if not batch:
            return error_outcome(JsonRpcError(jsonrpc.INVALID_REQUEST, "Invalid Request: an empty batch."))
        answers: list[dict[str, Any]] = []

        async def emit(related: dict[str, Any]) -> None:
            await self.push(session, related)

        for item in batch:
            try:
                message = jsonrpc.validate(item)
            except JsonRpcError as exc:
                answers.append(jsonrpc.error_response(request_id_of(item), exc))
                continue
            if jsonrpc.kind(message) != "request":
                await self.take(session, message)
            elif message["method"] == mcp.INITIALIZE:
                error = JsonRpcError(jsonrpc.INVALID_REQUEST, "initialize cannot be batched.")
                answers.append(jsonrpc.error_response(message["id"], error))
            else:
                answer = await self.answer(session, message, emit, headers=session_headers, transport="streamable-http")
                if answer is not None:
                    answers.append(answer)
        return Outcome(200, answers) if answers else Outcome(202)

    async def _stateless(self, payload: Any, caller: Caller) -> Outcome:
        """A 2026-07-28 request: checked here (envelope, headers, version, endpoint), run by the adapter."""
        request_id = request_id_of(payload)
        try:
            message = jsonrpc.validate(payload)
            kind = jsonrpc.kind(message)
            if kind == "response":
                raise JsonRpcError(jsonrpc.INVALID_REQUEST, "Invalid Request: 2026-07-28 clients send no responses.")
            if kind == "notification":  # nothing in this revision needs one: accepted and dropped
                return Outcome(202)
            envelope = modern.parse_envelope(message)
            modern.check_headers(message, caller.headers, envelope.protocol_version)
            modern.check_version(envelope)
            await self.view(caller.server)  # 404 for a virtual server that does not exist
        except JsonRpcError as exc:
            status = exc.http_status if exc.http_status != 200 else modern.HTTP_STATUS.get(exc.code, 400)
            return Outcome(status, jsonrpc.error_response(request_id, exc))
        if message["method"] == mcp.SUBSCRIPTIONS_LISTEN:

            async def listen() -> Listener:
                return await self.listen(message, envelope, caller)

            return Outcome(call=Call(message, self._refuse_run, listen=listen))

        async def run(emit: Emit) -> dict[str, Any] | None:
            return await self.handle_stateless(message, envelope, caller, emit, transport="streamable-http")

        return Outcome(call=Call(message, run))

    @staticmethod
    async def _refuse_run(emit: Emit) -> dict[str, Any] | None:  # a listen call is opened, not run
        raise RuntimeError("a subscriptions/listen call is opened with listen(), not run")
