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

``McpCore`` itself is in three parts: this module builds and wires the collaborators, says what the
gateway is and serves 2026-07-28 requests; ``session_era.SessionEra`` holds the sessions, their streams
and messages; ``streamable_post.StreamableHttpPost`` sends a Streamable HTTP POST body to the one or
the other. What passes to and from adapters (``Caller``, ``Outcome``, ``Call``) is in ``outcome``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from transports.protocol import jsonrpc, modern
from transports.protocol import vocabulary as mcp
from transports.protocol.backends import ToolBackends
from transports.protocol.backends.upstream_mcp import UpstreamMcpBackend
from transports.protocol.catalog import CatalogCache, View
from transports.protocol.entry import entered
from transports.protocol.exchange import Emit
from transports.protocol.failover import Failover, FailoverSettings
from transports.protocol.fanout import Fanout
from transports.protocol.jsonrpc import JsonRpcError
from transports.protocol.listen import Listener, ListenStreams
from transports.protocol.methods import Methods, PromptRenderer
from transports.protocol.outcome import Caller
from transports.protocol.relay import UpstreamRelay
from transports.protocol.replicas import Mesh
from transports.protocol.rounds import ParkedCalls
from transports.protocol.session_era import SessionEra
from transports.protocol.sessions import Session, SessionStore
from transports.protocol.shared_sessions import RedisSessionStore
from transports.protocol.stateless_handler import StatelessHandler, envelope_session
from transports.protocol.streamable_post import StreamableHttpPost
from transports.protocol.upstream_pool import UpstreamPool

logger = logging.getLogger(__name__)
# The channel layer (Redis) carries what replicas forward to each other: a replica that cannot join it serves
# nothing another replica might have to reach (an answer to its question, a cancellation).
LAYER_DOWN = "the channel layer (Redis) cannot be reached; try again shortly"

SERVER_NAME = "mcp-gateway"
SERVER_VERSION = "0.1.0"


class McpCore(StreamableHttpPost, SessionEra):
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
