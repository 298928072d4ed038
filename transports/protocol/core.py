"""The protocol core's façade: the one entry every transport adapter uses.

An adapter decodes bytes into JSON-RPC, admits the caller at the edge, and hands the core a decoded
message with its ``Caller`` (who, which virtual server, the request headers). The core applies the
era, batch and lifecycle rules and answers with an ``Outcome``: what to send now, or a ``Call`` the
adapter runs while it frames what the call sends (JSON, an SSE stream, WebSocket frames). Adapters
never touch the session store; nothing here knows about HTTP beyond the status an answer maps to.

The collaborators, one job each: ``Methods`` (the method table), ``UpstreamRelay`` (requests to
upstreams and what they send back during a call), ``Fanout`` (list changes, resource updates and
upstream subscriptions for many clients), ``ListenStreams`` (2026-07-28 listen streams),
``StatelessHandler`` (2026-07-28 requests and their rounds), ``ToolBackends`` (what runs a tool).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from transports.protocol import jsonrpc, modern, versions
from transports.protocol import vocabulary as mcp
from transports.protocol.backends import ToolBackends
from transports.protocol.backends.upstream_mcp import UpstreamMcpBackend
from transports.protocol.catalog import CatalogCache, View
from transports.protocol.entry import entered
from transports.protocol.exchange import Emit, Exchange
from transports.protocol.failover import Failover, FailoverSettings
from transports.protocol.fanout import Fanout
from transports.protocol.jsonrpc import JsonRpcError
from transports.protocol.listen import Listener, ListenStreams
from transports.protocol.methods import Methods, PromptRenderer, already_initialized
from transports.protocol.relay import UpstreamRelay
from transports.protocol.replicas import Mesh
from transports.protocol.rounds import ParkedCalls
from transports.protocol.sessions import EventLog, Session, SessionStore, parse_event_id
from transports.protocol.shared_sessions import RedisSessionStore
from transports.protocol.stateless_handler import StatelessHandler, envelope_session
from transports.protocol.upstream_pool import UpstreamPool

logger = logging.getLogger(__name__)
# The channel layer (Redis) carries what replicas forward to each other: a replica that cannot join it serves
# nothing another replica might have to reach (an answer to its question, a cancellation).
LAYER_DOWN = "the channel layer (Redis) cannot be reached; try again shortly"

SERVER_NAME = "mcp-gateway"
SERVER_VERSION = "0.1.0"
# Requests that always answer on a resumable SSE stream (2025-11-25 sessions): the long-running ones.
STREAMED_METHODS = frozenset({mcp.TOOLS_CALL})


@dataclass(frozen=True)
class Caller:
    """Who sent a message, to which endpoint, with which request headers (lower-case names)."""

    username: str
    scopes: frozenset[str]
    server: str | None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Call:
    """A request for the adapter to run: ``await call.run(emit)`` is its answer (None: cancelled).

    ``emit`` carries what the call sends before its answer (progress, logs, requests to the client).
    ``session`` is None for a 2026-07-28 request; ``stream()`` opens a resumable event log of the
    session for the answer (Streamable HTTP); ``primed``: the session's version wants a priming event
    on every SSE stream; ``streamed``: answer on a stream even before anything is emitted."""

    message: dict[str, Any]
    run: Callable[[Emit], Awaitable[dict[str, Any] | None]]
    session: Session | None = None
    listen: Callable[[], Awaitable[Listener]] | None = None
    primed: bool = False
    streamed: bool = False

    @property
    def stateless(self) -> bool:
        return self.session is None


@dataclass
class Outcome:
    """What the adapter sends: ``body`` (a message, a batch, or None for no body) with ``status`` now,
    or the ``call`` to run; ``session_id`` names a session the answer opened."""

    status: int = 200
    body: Any = None
    call: Call | None = None
    session_id: str | None = None


def error_outcome(exc: JsonRpcError, request_id: jsonrpc.Id | None = None, status: int = 400) -> Outcome:
    return Outcome(exc.http_status if exc.http_status != 200 else status, jsonrpc.error_response(request_id, exc))


def _id_of(payload: Any) -> jsonrpc.Id | None:
    request_id = payload.get("id") if isinstance(payload, dict) else None
    return request_id if isinstance(request_id, str | int) and not isinstance(request_id, bool) else None


def lifecycle_error(method: str, *, initialize_started: bool) -> JsonRpcError | None:
    """basic/lifecycle on a connection (HTTP+SSE, WebSocket): initialize comes first and only once;
    before it only ping is answered (a 2026-07-28 server/discover probe gets this error too, and the
    client falls back to initialize)."""
    if method == mcp.INITIALIZE:
        return already_initialized() if initialize_started else None
    if not initialize_started and method != mcp.PING:
        return JsonRpcError(jsonrpc.INVALID_REQUEST, "Invalid Request: send initialize first.")
    return None


class McpCore:
    """Serves MCP in both eras from the catalog snapshot, the session store and the upstream pool."""

    def __init__(
        self,
        *,
        catalog: CatalogCache | None = None,
        sessions: SessionStore | RedisSessionStore | None = None,
        mesh: Mesh | None = None,
        upstreams: UpstreamPool | None = None,
        backends: ToolBackends | None = None,
        page_size: int = 100,
        tool_timeout: float = 60.0,
        request_state_secret: bytes | None = None,
        request_state_ttl: float = 300.0,
        max_parked_calls: int = 1000,
        cache_ttl_ms: int = 0,
        cache_scope: str = "private",
        instructions: str | None = None,
        prompt_renderer: PromptRenderer | None = None,
        failover: FailoverSettings | None = None,
    ) -> None:
        self.catalog = catalog if catalog is not None else CatalogCache()
        self.sessions = sessions if sessions is not None else SessionStore()
        # Other replicas (a shared session store): answers, cancellations and retries that land on a
        # replica other than the one running the call are forwarded there.
        self.mesh = mesh
        self.request_prefix = f"gw-{mesh.tag}-" if mesh is not None else "gw-"
        if mesh is not None:
            mesh.notices["answer"] = self._forwarded_answer
            mesh.notices["cancel"] = self._forwarded_cancel
        self.upstreams = upstreams if upstreams is not None else UpstreamPool(request_timeout=tool_timeout)
        self.instructions = instructions
        self.fanout = Fanout(catalog=self.catalog, sessions=self.sessions)
        self.relay = UpstreamRelay(self.upstreams, timeout=tool_timeout, notices=self.fanout.upstream_message)
        self.fanout.relay = self.relay
        self.upstreams.on_notification = self.fanout.upstream_message
        self.backends = backends if backends is not None else ToolBackends()
        # Circuit breakers and turns of redundancy groups' tools (docs/federation.md §4), per process.
        self.failover = Failover(settings=failover)
        if self.backends.get("mcp") is None:
            self.backends.register("mcp", UpstreamMcpBackend(self.relay, failover=self.failover))
        self.backends.on_change = self.catalog.invalidate
        self.catalog.servable = self.backends.serves
        self.methods = Methods(
            sessions=self.sessions,
            relay=self.relay,
            fanout=self.fanout,
            backends=self.backends,
            page_size=page_size,
            tool_timeout=tool_timeout,
            prompt_renderer=prompt_renderer,
        )
        self.listens = ListenStreams(catalog=self.catalog, fanout=self.fanout)
        self.stateless = StatelessHandler(
            catalog=self.catalog,
            methods=self.methods,
            mesh=mesh,
            sealer=modern.RequestStateSealer(request_state_secret or os.urandom(32)),
            parked=ParkedCalls(ttl=request_state_ttl, max_calls=max_parked_calls),
            discover=self.discover,
            server_info=self.server_info,
            cache_ttl_ms=cache_ttl_ms,
            cache_scope=cache_scope,
            tool_timeout=tool_timeout,
        )

    # -- what the gateway says about itself ----------------------------------------------------

    def capabilities(self) -> dict[str, Any]:
        return {
            "tools": {"listChanged": True},
            "resources": {"subscribe": True, "listChanged": True},
            "prompts": {"listChanged": True},
            "completions": {},
            "logging": {},
        }

    def server_info(self, view: View) -> dict[str, Any]:
        return {"name": SERVER_NAME, "title": view.title, "version": SERVER_VERSION}

    def discover(self, view: View) -> dict[str, Any]:
        result: dict[str, Any] = {
            "supportedVersions": list(mcp.MODERN_VERSIONS),
            "capabilities": self.capabilities(),
        }
        if self.instructions:
            result["instructions"] = self.instructions
        return result

    async def joined(self) -> None:
        """Be reachable by the other replicas before doing anything they may have to forward here
        (an answer to our question, a cancellation, a retry of a parked call)."""
        if self.mesh is not None and not self.mesh.started:
            try:
                await self.mesh.start()
            except Exception as exc:  # the channel layer's server (Redis) is down: the next request tries again
                logger.warning("cannot join the other replicas: %s", exc)
                raise JsonRpcError(jsonrpc.SERVER_ERROR, f"Service Unavailable: {LAYER_DOWN}.") from exc

    async def view(self, server: str | None) -> View:
        """The view of an enabled virtual server (the whole catalog for None); -32602/404 otherwise."""
        return (await self.stateless.view(server))[1]

    # -- sessions (session era) ------------------------------------------------------------------

    async def initialize(
        self, message: dict[str, Any], caller: Caller, *, session: Session | None = None, current: Session | None = None
    ) -> tuple[Session, dict[str, Any]]:
        """Negotiate a version and open a session; returns the session and the InitializeResult.

        ``session``: a session the transport opened before `initialize` (HTTP+SSE names it in its
        `endpoint` event, a WebSocket has one per connection); it takes what is negotiated.
        ``current``: the live session the request was sent in, if any (basic/lifecycle: initialize
        opens a session; inside one it is refused)."""
        if current is not None:
            raise already_initialized()
        params = message.get("params") or {}
        capabilities = params.get("capabilities")
        client_info = params.get("clientInfo")
        if not isinstance(capabilities, dict) or not isinstance(client_info, dict):
            raise JsonRpcError(
                jsonrpc.INVALID_PARAMS, "Invalid params: initialize needs protocolVersion, capabilities and clientInfo."
            )
        view = await self.view(caller.server)
        version = versions.negotiate(params.get("protocolVersion"))
        if session is None:
            session = await self.sessions.create(
                username=caller.username,
                scopes=caller.scopes,
                server=caller.server,
                protocol_version=version,
                client_capabilities=capabilities,
                client_info=client_info,
            )
        else:
            session.protocol_version, session.client_capabilities = version, capabilities
            session.client_info = client_info
            if session.owner is not None:
                await self.sessions.save(session)
        result: dict[str, Any] = {
            "protocolVersion": version,
            "capabilities": self.capabilities(),
            "serverInfo": self.server_info(view),
        }
        return session, result

    async def open_session(self, caller: Caller) -> Session:
        """A session for a new connection (HTTP+SSE, WebSocket), before `initialize`: it declares no
        client capability, so the client is asked nothing until it has said what it can answer.
        Raises JsonRpcError (unknown virtual server, HTTP status 404), SessionLimitReached or
        CatalogUnavailable."""
        await self.view(caller.server)
        return await self.sessions.create(
            connection=True,
            username=caller.username,
            scopes=caller.scopes,
            server=caller.server,
            protocol_version=mcp.LATEST_LEGACY,
            client_capabilities={},
            client_info={},
        )

    def close_session(self, session: Session) -> None:
        """The connection that held the session has ended (its calls were cancelled by the adapter)."""
        self.sessions.discard(session.id)

    async def session_of(self, caller: Caller, session_id: str | None) -> Session:
        """The live session a Streamable HTTP request names in Mcp-Session-Id: 400 without one or with
        a protocol version the session era does not know, 404 for one that ended, never existed, or
        belongs to someone else or another endpoint."""
        if not session_id:
            raise JsonRpcError(
                jsonrpc.INVALID_REQUEST,
                "Bad Request: Mcp-Session-Id header is required (send initialize first).",
                http_status=400,
            )
        session = await self.sessions.get(session_id)
        if session is None or session.username != caller.username or session.server != caller.server:
            raise JsonRpcError(
                jsonrpc.INVALID_REQUEST,
                "Session not found: it ended or never existed; initialize again.",
                http_status=404,
            )
        version = caller.headers.get("mcp-protocol-version")
        if version is not None and version not in mcp.LEGACY_VERSIONS:
            raise JsonRpcError(
                jsonrpc.INVALID_REQUEST, f"Bad Request: unsupported MCP-Protocol-Version {version!r}.", http_status=400
            )
        return session

    async def end_session(self, caller: Caller, session_id: str | None) -> None:
        """DELETE of a Streamable HTTP session."""
        session = await self.session_of(caller, session_id)
        await self.sessions.delete(session.id)

    async def session_owner(self, caller: Caller, session_id: str) -> str | None:
        """The replica holding the connection of a session (HTTP+SSE), when the sessions are shared and
        it is another replica and the caller's; else None."""
        if self.mesh is None:
            return None
        session = await self.sessions.get(session_id)
        if session is None or session.owner in (None, self.mesh.tag):
            return None
        if session.username != caller.username or session.server != caller.server:
            return None
        return session.owner

    # -- streams of a session --------------------------------------------------------------------

    def request_stream(self, session: Session, request_id: Any = None) -> EventLog:
        """A new resumable event log for the answer of the session's request ``request_id``."""
        return self.sessions.open_stream(session, request_id)

    @staticmethod
    def primed(session: Session) -> bool:
        """Whether SSE streams of this session start with a priming event (2025-11-25, SEP-1699)."""
        return versions.has_priming_events(session.protocol_version)

    def standalone(self, session: Session) -> EventLog:
        """The session's standalone stream (list_changed, resource updates)."""
        return self.sessions.standalone(session)

    async def reader(
        self, caller: Caller, session_id: str | None, last_event_id: str
    ) -> tuple[Session, EventLog, int, bool]:
        """What a GET on a Streamable HTTP session reads: (session, stream, position, resumed). With a
        Last-Event-ID of a stream we still hold, that stream from after the id; else the standalone
        stream from now on."""
        session = await self.session_of(caller, session_id)
        resume = parse_event_id(last_event_id)
        stream = await self.sessions.find_stream(session, resume[0]) if resume else None
        if stream is None:
            stream = self.sessions.standalone(session)
            return session, stream, await stream.position(), False
        await stream.end_if_orphaned()  # its replica is gone: the client gets an error, not a stream for ever
        return session, stream, resume[1], True  # type: ignore[index]

    async def alive(self, session: Session, stream: EventLog | None = None) -> bool:
        """The session still exists; ``stream``, a stream being read, is ended with an error response when the
        replica running its request is gone (a reader asks now and then)."""
        if stream is not None:
            await stream.end_if_orphaned()
        return await self.sessions.alive(session)

    async def push(self, session: Session, message: dict[str, Any]) -> None:
        """A message on the session's standalone stream."""
        await self.fanout.push(session, message)

    # -- messages of a session -------------------------------------------------------------------

    async def answer(
        self,
        session: Session,
        message: dict[str, Any],
        emit: Emit,
        *,
        headers: Mapping[str, str] | None = None,
        transport: str = "",
    ) -> dict[str, Any] | None:
        """Answer one request of a session; what it sends first goes to ``emit``; None: cancelled.

        The request entry of the session era: counted (``observe``), logged (the access log, when on)
        and traced (a SERVER span, when on) here. ``headers``: the HTTP request's, when it had one
        (its ``traceparent``); ``transport``: the adapter's name, for the log and the trace."""
        return await entered(
            self._answer(session, message, emit),
            message,
            session,
            catalog=self.catalog,
            session_id=session.id,
            transport=transport,
            headers=headers,
            attributes={"mcp.session.id": session.id, "enduser.id": session.username},
        )

    async def _answer(self, session: Session, message: dict[str, Any], emit: Emit) -> dict[str, Any] | None:
        try:
            await self.joined()
            snapshot = await self.catalog.get()
            view = snapshot.view(session.server)
            if view is None:
                raise JsonRpcError(
                    jsonrpc.INVALID_REQUEST, f"The virtual server {session.server!r} is no longer enabled."
                )
            exchange = Exchange(
                session=session,
                snapshot=snapshot,
                view=view,
                emit=emit,
                request_id=message["id"],
                request_prefix=self.request_prefix,
            )
        except JsonRpcError as exc:
            return jsonrpc.error_response(message["id"], exc)
        return await self.methods.handle(message, exchange)

    async def take(self, session: Session, message: dict[str, Any]) -> None:
        """A client's response or notification in a session (nothing is sent back for either)."""
        if jsonrpc.kind(message) == "response":
            await self.accept_response(session, message)
        else:
            await self.notify(session, message)

    async def accept_response(self, session: Session, message: dict[str, Any]) -> None:
        """A client's answer to one of our requests: wake whoever waits for it (on the replica its
        id names, when that is another one)."""
        request_id = message.get("id")
        future = session.pending.get(request_id)  # type: ignore[arg-type]
        if future is not None:
            if not future.done():
                future.set_result(message)
            return
        if self.mesh is None or not isinstance(request_id, str) or not request_id.startswith("gw-"):
            return
        tag = request_id[3:].partition("-")[0]
        if tag and tag != self.mesh.tag:
            await self.mesh.send(tag, "answer", {"sid": session.id, "message": message})

    async def _forwarded_answer(self, body: dict[str, Any]) -> None:
        session = self.sessions.get_local(body["sid"])
        if session is not None:
            await self.accept_response(session, body["message"])

    async def notify(self, session: Session, message: dict[str, Any]) -> None:
        """A client notification."""
        method = message["method"]
        params = message.get("params") or {}
        if method == mcp.INITIALIZED:
            if not session.initialized:
                session.initialized = True
                await self.sessions.save(session, "initialized")
        elif method == mcp.CANCELLED:
            request_id = params.get("requestId")
            if not isinstance(request_id, str | int) or isinstance(request_id, bool):
                return  # names no request (basic/utilities/cancellation: unknown ids are ignored)
            task = session.in_flight.get(request_id)
            if task is not None:
                task.cancel()
            elif self.mesh is not None and session.shared:
                # The call may run on another replica: every replica looks for it.
                await self.mesh.broadcast("cancel", {"sid": session.id, "requestId": request_id})
        # notifications/progress and roots/list_changed from the client need no action yet.

    async def _forwarded_cancel(self, body: dict[str, Any]) -> None:
        session = self.sessions.get_local(body["sid"])
        task = session.in_flight.get(body["requestId"]) if session is not None else None
        if task is not None:
            task.cancel()

    # -- Streamable HTTP: one POSTed body ----------------------------------------------------------

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
            return error_outcome(exc, _id_of(payload))
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
                answers.append(jsonrpc.error_response(_id_of(item), exc))
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
        request_id = _id_of(payload)
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

    # -- 2026-07-28 --------------------------------------------------------------------------------

    async def handle_stateless(
        self, message: dict[str, Any], envelope: modern.Envelope, caller: Caller, emit: Emit, *, transport: str = ""
    ) -> dict[str, Any] | None:
        """Answer one 2026-07-28 request (already checked at the edge of its transport); the request
        entry of that era: counted, logged and traced here like ``answer``."""
        return await entered(
            self._handle_stateless(message, envelope, caller, emit),
            message,
            caller,
            catalog=self.catalog,
            session_id="",
            transport=transport,
            headers=caller.headers,
            attributes={"enduser.id": caller.username},
        )

    async def _handle_stateless(
        self, message: dict[str, Any], envelope: modern.Envelope, caller: Caller, emit: Emit
    ) -> dict[str, Any] | None:
        try:
            await self.joined()
        except JsonRpcError as exc:
            return jsonrpc.error_response(message.get("id"), exc)
        return await self.stateless.handle(
            message,
            envelope,
            username=caller.username,
            scopes=caller.scopes,
            server=caller.server,
            emit=emit,
            headers=caller.headers,
        )

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any],
        caller: Caller,
        on_notification: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """One tools/call outside any client session (the admin's and the REST API's test call): the
        2026-07-28 path every stateless client takes, with progress asked for. The JSON-RPC answer
        (``result`` or ``error``) and what the call sent before it (progress, logs).

        ``on_notification`` is awaited with each notification as the call sends it (the admin's
        playground streams progress while the call runs); a slow callback holds the call back."""
        message = jsonrpc.request(
            "test-call",
            mcp.TOOLS_CALL,
            {
                "name": name,
                "arguments": arguments,
                "_meta": {
                    "progressToken": "test-call",
                    mcp.META_PROTOCOL_VERSION: mcp.LATEST_MODERN,
                    mcp.META_CLIENT_CAPABILITIES: {},
                    mcp.META_CLIENT_INFO: {"name": "mcp-gateway test call", "version": SERVER_VERSION},
                    mcp.META_LOG_LEVEL: "debug",
                },
            },
        )
        emitted: list[dict[str, Any]] = []

        async def emit(related: dict[str, Any]) -> None:
            emitted.append(related)
            if on_notification is not None and "method" in related and "id" not in related:
                await on_notification(related)

        try:
            envelope = modern.parse_envelope(message)
            answer = await self.handle_stateless(message, envelope, caller, emit)
        except JsonRpcError as exc:
            answer = jsonrpc.error_response("test-call", exc)
        return answer or {}, emitted

    async def listen(self, message: dict[str, Any], envelope: modern.Envelope, caller: Caller) -> Listener:
        """Open a subscriptions/listen stream; its first queued message is the acknowledgement
        (basic/patterns/subscriptions). Call ``unlisten`` when the stream ends."""
        session = envelope_session(envelope, username=caller.username, scopes=caller.scopes, server=caller.server)
        return await self.listens.open(message, session)

    async def unlisten(self, listener: Listener) -> None:
        await self.listens.close(listener)

    def envelope_session(self, envelope: modern.Envelope, caller: Caller) -> Session:
        return envelope_session(envelope, username=caller.username, scopes=caller.scopes, server=caller.server)
