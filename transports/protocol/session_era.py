"""The session era (2024-11-05 … 2025-11-25) of the protocol core: ``initialize``, the sessions the
transports hold and their resumable streams, and the messages of a session (requests answered through the
method table, the client's answers to our requests, its notifications, cancellation), forwarded to the
replica that holds a call when the sessions are shared. A part of ``McpCore`` (core.py), which wires the
collaborators it uses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from transports.protocol import jsonrpc, versions
from transports.protocol import vocabulary as mcp
from transports.protocol.catalog import CatalogCache, View
from transports.protocol.entry import entered
from transports.protocol.exchange import Emit, Exchange
from transports.protocol.fanout import Fanout
from transports.protocol.jsonrpc import JsonRpcError
from transports.protocol.methods import Methods, already_initialized
from transports.protocol.outcome import Caller
from transports.protocol.replicas import Mesh
from transports.protocol.sessions import EventLog, Session, SessionStore, parse_event_id
from transports.protocol.shared_sessions import RedisSessionStore


class SessionEra:
    """Sessions, their streams and their messages; part of `McpCore`."""

    if TYPE_CHECKING:  # provided by McpCore
        catalog: CatalogCache
        sessions: SessionStore | RedisSessionStore
        mesh: Mesh | None
        request_prefix: str
        fanout: Fanout
        methods: Methods

        def capabilities(self) -> dict[str, Any]: ...
        def server_info(self, view: View) -> dict[str, Any]: ...
        async def joined(self) -> None: ...
        async def view(self, server: str | None) -> View: ...

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
