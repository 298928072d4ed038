"""The MCP method table: one core that every transport adapter calls.

An adapter decodes bytes into JSON-RPC messages and calls ``McpCore``: ``initialize`` opens a
session-era session; ``handle`` answers a request (or takes a notification) in an ``Exchange``,
which carries the session, the catalog view of the endpoint, and how to reach the client on the
stream of this request (``emit``). Nothing here knows about HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import os
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from transports.protocol import hooks, jsonrpc, modern, versions
from transports.protocol.catalog import CatalogCache, Snapshot, View, page
from transports.protocol.jsonrpc import JsonRpcError
from transports.protocol.replicas import Mesh, ReplicaGone
from transports.protocol.rounds import ParkedCall, ParkedCalls
from transports.protocol.sessions import LOG_LEVELS, Session, SessionStore
from transports.protocol.shared_sessions import RedisSessionStore
from transports.protocol.upstream.base import UpstreamClient, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from transports.protocol.upstreams import (
    FULL_CAPABILITIES,
    UpstreamPool,
    capability_profile,
    release_follower,
    session_followers,
    unsubscribe_upstream,
)

logger = logging.getLogger(__name__)

SERVER_NAME = "mcp-gateway"
SERVER_VERSION = "0.1.0"
CLIENT_REQUEST_TIMEOUT = 300.0
SUBSCRIPTION_SWEEP_SECONDS = 30.0  # how often upstream subscriptions are checked for expired sessions
REFRESH_DEBOUNCE = 0.03  # notifications of one change (from each connection to the upstream): one refresh
LIST_CHANGED = frozenset(
    {"notifications/tools/list_changed", "notifications/prompts/list_changed", "notifications/resources/list_changed"}
)
_token_counter = itertools.count(1)
# Methods of the session era that 2026-07-28 removed (basic/index): 404 + -32601 on the modern wire.
MODERN_REMOVED = frozenset({"ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"})
CACHEABLE_METHODS = frozenset(
    {"tools/list", "prompts/list", "resources/list", "resources/templates/list", "resources/read", "server/discover"}
)
_MODERN_RESULT_FIELDS = frozenset({"resultType", "ttlMs", "cacheScope"})
OFFERED_MAX_PAGES = 100
MAX_LISTEN_URIS = 1000
LISTEN_QUEUE = 256


async def _discard(message: dict[str, Any]) -> None:
    return None


Emit = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class Exchange:
    """One client request in flight: where it came from and how to talk back on its stream."""

    session: Session
    snapshot: Snapshot
    view: View
    emit: Emit
    request_id: jsonrpc.Id | None = None
    # 2026-07-28 requests: no session behind ``session`` (it is made from the request's _meta), and
    # questions for the client are held by the parked call until the client's retry.
    modern: bool = False
    parked: ParkedCall | None = None
    upstream_headers: dict[str, str] | None = None
    # Ids of our requests to the client name the replica waiting for the answer: gw-<replica>-<n>.
    request_prefix: str = "gw-"

    async def client_request(self, method: str, params: dict[str, Any] | None) -> dict[str, Any]:
        """Ask the client something and wait for its answer: on this stream with a later POST for a
        session, in an InputRequiredResult and the client's retry for a modern request."""
        if self.modern:
            if self.parked is None:
                return {"error": {"code": jsonrpc.METHOD_NOT_FOUND, "message": f"{method} cannot be asked here."}}
            return await self.parked.ask(method, params or {})
        session = self.session
        session.next_request_id += 1
        request_id = f"{self.request_prefix}{session.next_request_id}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        session.pending[request_id] = future
        try:
            await self.emit(jsonrpc.request(request_id, method, params))
            return await asyncio.wait_for(future, CLIENT_REQUEST_TIMEOUT)
        finally:
            session.pending.pop(request_id, None)


@dataclass(eq=False)
class Listener:
    """A 2026-07-28 `subscriptions/listen` stream: what it asked for, and its bounded outbox."""

    id: jsonrpc.Id
    username: str
    server: str | None
    tools: bool
    prompts: bool
    resources: bool
    uris: frozenset[str]
    queue: asyncio.Queue[dict[str, Any] | None]
    upstream_keys: list[tuple[str, str]]

    def wants(self, method: str) -> bool:
        kind = method.split("/")[1]
        return {"tools": self.tools, "prompts": self.prompts, "resources": self.resources}.get(kind, False)

    def put(self, method: str, params: dict[str, Any] | None = None) -> None:
        """Queue a notification tagged with the subscription id; a listener that cannot keep up is
        closed rather than allowed to grow without bound."""
        body = dict(params or {})
        body["_meta"] = {**body.get("_meta", {}), modern.META_SUBSCRIPTION_ID: self.id}
        try:
            self.queue.put_nowait(jsonrpc.notification(method, body))
        except asyncio.QueueFull:
            logger.warning("listen stream %r of %s fell behind; closing it", self.id, self.username)
            self.close()

    def close(self) -> None:
        while True:
            try:
                self.queue.put_nowait(None)
                return
            except asyncio.QueueFull:
                self.queue.get_nowait()


def _session_era_result(result: dict[str, Any]) -> dict[str, Any]:
    """A modern upstream's answer for a session client: without the 2026-07-28 result fields and the
    upstream's own serverInfo (the client met the gateway at initialize, not the upstream)."""
    cleaned = {k: v for k, v in result.items() if k not in _MODERN_RESULT_FIELDS}
    meta = cleaned.get("_meta")
    if isinstance(meta, dict) and modern.META_SERVER_INFO in meta:
        rest = {k: v for k, v in meta.items() if k != modern.META_SERVER_INFO}
        if rest:
            cleaned["_meta"] = rest
        else:
            del cleaned["_meta"]
    return cleaned


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("sending notifications failed", exc_info=task.exception())


def _already_initialized() -> JsonRpcError:
    return JsonRpcError(jsonrpc.INVALID_REQUEST, "The session is already initialized.")


def _forbidden(what: str) -> JsonRpcError:
    return JsonRpcError(jsonrpc.SERVER_ERROR, f"Forbidden: your credentials do not allow {what}.")


def _upstream_error(gateway: str, exc: Exception, timeout: float | None = None) -> JsonRpcError:
    if isinstance(exc, UpstreamError):
        return JsonRpcError(exc.code, exc.message, exc.data)
    if isinstance(exc, UpstreamTimeout):
        return JsonRpcError(jsonrpc.REQUEST_TIMEOUT, f"Upstream {gateway!r} did not answer within {timeout or 0:g} s.")
    return JsonRpcError(jsonrpc.SERVER_ERROR, f"Upstream {gateway!r} is unavailable: {exc}")


def _list_changes(old: View, new: View) -> list[str]:
    """The list_changed notifications that tell a client of ``old`` about ``new``."""

    def wires(view: View, kind: str) -> list[dict[str, Any]]:
        return [entry.wire for entry in getattr(view, kind)]

    methods = [
        f"notifications/{kind}/list_changed" for kind in ("tools", "prompts") if wires(old, kind) != wires(new, kind)
    ]
    if wires(old, "resources") != wires(new, "resources") or wires(old, "templates") != wires(new, "templates"):
        methods.append("notifications/resources/list_changed")
    return methods


class McpCore:
    """Serves the session-era MCP methods from the catalog snapshot and the upstream pool."""

    def __init__(
        self,
        *,
        catalog: CatalogCache | None = None,
        sessions: SessionStore | RedisSessionStore | None = None,
        mesh: Mesh | None = None,
        upstreams: UpstreamPool | None = None,
        page_size: int = 100,
        tool_timeout: float = 60.0,
        request_state_secret: bytes | None = None,
        request_state_ttl: float = 300.0,
        max_parked_calls: int = 1000,
        cache_ttl_ms: int = 0,
        cache_scope: str = "private",
        instructions: str | None = None,
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
            mesh.handlers["round"] = self._forwarded_round
        self.upstreams = upstreams if upstreams is not None else UpstreamPool(request_timeout=tool_timeout)
        self.page_size = page_size
        self.tool_timeout = tool_timeout
        # 2026-07-28: sealed requestState, calls parked between rounds, listen streams, cache hints.
        self.sealer = modern.RequestStateSealer(request_state_secret or os.urandom(32))
        self.parked = ParkedCalls(ttl=request_state_ttl, max_calls=max_parked_calls)
        self.listeners: set[Listener] = set()
        self._upstream_levels: weakref.WeakKeyDictionary[UpstreamClient, str] = weakref.WeakKeyDictionary()
        # Tool names each upstream session offers to its capability profile (None: could not tell).
        self._offered: dict[str, weakref.WeakKeyDictionary[UpstreamClient, frozenset[str] | None]] = {}
        self.cache_ttl_ms = cache_ttl_ms
        self.cache_scope = cache_scope
        self.instructions = instructions
        self.catalog.on_change = self._catalog_changed
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        self._refresh_again: set[str] = set()  # upstreams that announced a change while being refreshed
        self._upstream_subscriptions: dict[tuple[str, str], set[str]] = {}
        # Sessions that end (here, on another replica, or by expiry) release their upstream subscriptions.
        self.sessions.on_end = self._session_ended
        self.subscription_sweep = SUBSCRIPTION_SWEEP_SECONDS
        self._sweeper: asyncio.Task[None] | None = None
        self.upstreams.on_notification = self._upstream_notification
        self._methods: dict[str, Callable[[dict[str, Any], Exchange], Awaitable[dict[str, Any]]]] = {
            "ping": self._ping,
            "tools/list": self._tools_list,
            "tools/call": self._tools_call,
            "resources/list": self._resources_list,
            "resources/templates/list": self._templates_list,
            "resources/read": self._resources_read,
            "resources/subscribe": self._resources_subscribe,
            "resources/unsubscribe": self._resources_unsubscribe,
            "prompts/list": self._prompts_list,
            "prompts/get": self._prompts_get,
            "completion/complete": self._complete,
            "logging/setLevel": self._set_level,
        }

    # -- lifecycle ----------------------------------------------------------------------------

    def capabilities(self) -> dict[str, Any]:
        return {
            "tools": {"listChanged": True},
            "resources": {"subscribe": True, "listChanged": True},
            "prompts": {"listChanged": True},
            "completions": {},
            "logging": {},
        }

    async def initialize(
        self,
        message: dict[str, Any],
        *,
        username: str,
        scopes: frozenset[str],
        server: str | None,
        session: Session | None = None,
        current: Session | None = None,
    ) -> tuple[Session, dict[str, Any]]:
        """Negotiate a version and open a session; returns the session and the InitializeResult.

        ``session``: a session the transport opened before `initialize` (HTTP+SSE names it in its
        `endpoint` event, a WebSocket has one per connection); it takes what is negotiated.
        ``current``: the live session the request was sent in, if any (basic/lifecycle: initialize
        opens a session; inside one it is refused)."""
        if current is not None:
            raise _already_initialized()
        params = message.get("params") or {}
        capabilities = params.get("capabilities")
        client_info = params.get("clientInfo")
        if not isinstance(capabilities, dict) or not isinstance(client_info, dict):
            raise JsonRpcError(
                jsonrpc.INVALID_PARAMS, "Invalid params: initialize needs protocolVersion, capabilities and clientInfo."
            )
        snapshot = await self.catalog.get()
        view = snapshot.view(server)
        if view is None:
            raise JsonRpcError(jsonrpc.INVALID_PARAMS, f"No enabled virtual server named {server!r}.", http_status=404)
        version = versions.negotiate(params.get("protocolVersion"))
        if session is None:
            session = await self.sessions.create(
                username=username,
                scopes=scopes,
                server=server,
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
            "serverInfo": {"name": SERVER_NAME, "title": view.title, "version": SERVER_VERSION},
        }
        return session, result

    async def joined(self) -> None:
        """Be reachable by the other replicas before doing anything they may have to forward here
        (an answer to our question, a cancellation, a retry of a parked call)."""
        if self.mesh is not None and not self.mesh.started:
            await self.mesh.start()

    async def exchange(self, session: Session, emit: Emit, request_id: jsonrpc.Id | None = None) -> Exchange:
        await self.joined()
        snapshot = await self.catalog.get()
        view = snapshot.view(session.server)
        if view is None:
            raise JsonRpcError(jsonrpc.INVALID_REQUEST, f"The virtual server {session.server!r} is no longer enabled.")
        return Exchange(
            session=session,
            snapshot=snapshot,
            view=view,
            emit=emit,
            request_id=request_id,
            request_prefix=self.request_prefix,
        )

    # -- gateway -> client notifications ------------------------------------------------------

    async def push(self, session: Session, message: dict[str, Any]) -> None:
        """Log a message on the session's standalone stream; open GET connections deliver it (on any
        replica), and a client that reconnects with Last-Event-ID gets what it missed (up to the
        log's bound)."""
        await self.sessions.standalone(session).append(message)

    def _catalog_changed(self, previous: Snapshot, current: Snapshot) -> None:
        task = asyncio.ensure_future(self._announce_changes(previous, current))
        task.add_done_callback(_log_failure)

    async def _announce_changes(self, previous: Snapshot, current: Snapshot) -> None:
        """list_changed for each session whose view changed; resources/updated for changed subscribed
        resources. Each endpoint's view is compared once, however many sessions use it. With shared
        sessions every replica sees the change: the one that claims a session's notice sends it."""
        changed: dict[str | None, list[str] | None] = {}

        def changes_of(server: str | None) -> list[str] | None:
            if server not in changed:
                old, new = previous.view(server), current.view(server)
                changed[server] = None if old is None or new is None else _list_changes(old, new)
            return changed[server]

        for listener in list(self.listeners):
            methods = changes_of(listener.server)
            for method in methods or ():
                if listener.wants(method):
                    listener.put(method)
            old_view, new_view = previous.view(listener.server), current.view(listener.server)
            if old_view is not None and new_view is not None:
                for uri in listener.uris:
                    before, after = old_view.resource_by_uri.get(uri), new_view.resource_by_uri.get(uri)
                    if (
                        before is not None
                        and after is not None
                        and (before.text, before.blob) != (after.text, after.blob)
                    ):
                        listener.put("notifications/resources/updated", {"uri": uri})
        for session in self.sessions.local():
            methods = changes_of(session.server)
            if methods is None:
                continue
            old, new = previous.view(session.server), current.view(session.server)
            notices = [jsonrpc.notification(method) for method in methods]
            for uri in session.subscriptions:
                before, after = old.resource_by_uri.get(uri), new.resource_by_uri.get(uri)  # type: ignore[union-attr]
                if before is not None and after is not None and (before.text, before.blob) != (after.text, after.blob):
                    notices.append(jsonrpc.notification("notifications/resources/updated", {"uri": uri}))
            if notices and await self.sessions.claim(session, f"v{current.version}"):
                for notice in notices:
                    await self.push(session, notice)

    async def _upstream_notification(self, gateway: str, message: dict[str, Any]) -> dict[str, Any] | None:
        """Messages from an upstream that belong to no call."""
        method = message.get("method")
        if "id" in message:
            return {
                "error": {"code": jsonrpc.METHOD_NOT_FOUND, "message": "No client call is waiting for this request."}
            }
        if method == "notifications/resources/updated":
            upstream_uri = (message.get("params") or {}).get("uri")
            snapshot = await self.catalog.get()
            uris = {
                r.uri for r in snapshot.catalog.resources if r.gateway == gateway and r.upstream_uri == upstream_uri
            }
            uris.add(str(upstream_uri))
            # Every session this replica knows with a subscription: the upstream subscription is held by
            # the replica that took the resources/subscribe, whoever holds the session's stream now.
            for session in self.sessions.known():
                for uri in session.subscriptions & uris:
                    await self.push(session, jsonrpc.notification("notifications/resources/updated", {"uri": uri}))
            for listener in list(self.listeners):
                for uri in listener.uris & uris:
                    listener.put("notifications/resources/updated", {"uri": uri})
        elif method in LIST_CHANGED:
            self.upstream_lists_changed(gateway)
        return None

    def upstream_lists_changed(self, gateway: str) -> None:
        """Re-read the upstream's catalog (one refresh at a time); the catalog change that follows
        sends our own list_changed to the sessions that see a difference."""
        logger.info("upstream %s changed its lists; refreshing", gateway)
        self._offered.pop(gateway, None)
        if not hooks.upstream_lists_changed.connected:
            return
        running = self._refreshing.get(gateway)
        if running is not None and not running.done():
            self._refresh_again.add(gateway)  # the running refresh may have read the lists before this change
            return

        async def refresh() -> None:
            await asyncio.sleep(REFRESH_DEBOUNCE)  # several notifications in a burst: one refresh
            while True:
                self._refresh_again.discard(gateway)
                await hooks.upstream_lists_changed.send(gateway)
                if gateway not in self._refresh_again:
                    return

        self._refreshing[gateway] = asyncio.ensure_future(refresh())

    # -- upstream subscriptions of sessions that end --------------------------------------------

    def _session_ended(self, session_id: str) -> None:
        """A session ended (deleted, closed, expired; on this replica or another): its upstream
        subscriptions are released, and those nobody else follows are ended upstream."""
        if any(session_id in followers for followers in self._upstream_subscriptions.values()):
            task = asyncio.ensure_future(self._release_follower(session_id))
            task.add_done_callback(_log_failure)

    async def _release_follower(self, follower: str) -> None:
        released = release_follower(self._upstream_subscriptions, follower)
        if released:
            snapshot = await self.catalog.get()
            for key in released:
                await unsubscribe_upstream(self.upstreams, key, snapshot.upstreams.get(key[0]))

    def _watch_followers(self) -> None:
        """Look now and then for followed sessions that expired without anyone noticing (an expired
        session sends no event), while there are any."""
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.ensure_future(self._sweep_followers())
            self._sweeper.add_done_callback(_log_failure)

    async def _sweep_followers(self) -> None:
        while followers := session_followers(self._upstream_subscriptions):
            await asyncio.sleep(self.subscription_sweep)
            for session_id in followers:
                try:
                    gone = not await self.sessions.exists(session_id)
                except Exception:
                    logger.warning("cannot tell whether session %s still exists", session_id, exc_info=True)
                    continue
                if gone:
                    await self._release_follower(session_id)

    # -- dispatch -----------------------------------------------------------------------------

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
        if method == "notifications/initialized":
            if not session.initialized:
                session.initialized = True
                await self.sessions.save(session, "initialized")
        elif method == "notifications/cancelled":
            request_id = params.get("requestId")
            task = session.in_flight.get(request_id)  # type: ignore[arg-type]
            if task is not None:
                task.cancel()
            elif self.mesh is not None and session.shared and isinstance(request_id, str | int):
                # The call may run on another replica: every replica looks for it.
                await self.mesh.broadcast("cancel", {"sid": session.id, "requestId": request_id})
        # notifications/progress and roots/list_changed from the client need no action yet.

    async def _forwarded_cancel(self, body: dict[str, Any]) -> None:
        session = self.sessions.get_local(body["sid"])
        task = session.in_flight.get(body["requestId"]) if session is not None else None
        if task is not None:
            task.cancel()

    async def handle(self, message: dict[str, Any], exchange: Exchange) -> dict[str, Any] | None:
        """Answer one request; None when it was cancelled (nothing is sent for it)."""
        method = message["method"]
        request_id = message["id"]
        handler = self._methods.get(method)
        if handler is None:
            if method == "initialize":
                error = _already_initialized()
            else:
                error = JsonRpcError(jsonrpc.METHOD_NOT_FOUND, f"Method not found: {method}")
            return jsonrpc.error_response(request_id, error)
        session = exchange.session
        task = asyncio.current_task()
        if task is not None:
            session.in_flight[request_id] = task
        try:
            result = await handler(message.get("params") or {}, exchange)
        except JsonRpcError as error:
            return jsonrpc.error_response(request_id, error)
        except asyncio.CancelledError:
            if session.in_flight.get(request_id) is task and task is not None and task.cancelling():
                task.uncancel()
                return None
            raise
        except Exception:
            logger.exception("Error while handling %s", method)
            return jsonrpc.error_response(request_id, JsonRpcError(jsonrpc.INTERNAL_ERROR, "Internal error"))
        finally:
            session.in_flight.pop(request_id, None)
        if not exchange.modern and ("resultType" in result or "_meta" in result):
            result = _session_era_result(result)
        return jsonrpc.response(request_id, result)

    # -- 2026-07-28 (stateless) -----------------------------------------------------------------

    def server_info(self, view: View) -> dict[str, Any]:
        return {"name": SERVER_NAME, "title": view.title, "version": SERVER_VERSION}

    def modern_session(
        self, envelope: modern.Envelope, *, username: str, scopes: frozenset[str], server: str | None
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

    async def modern_view(self, server: str | None) -> tuple[Snapshot, View]:
        snapshot = await self.catalog.get()
        view = snapshot.view(server)
        if view is None:
            raise JsonRpcError(jsonrpc.INVALID_PARAMS, f"No enabled virtual server named {server!r}.", http_status=404)
        return snapshot, view

    async def handle_modern(
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
        """Answer one 2026-07-28 request (subscriptions/listen streams instead: see ``listen``);
        None when the client cancelled it."""
        method = message["method"]
        request_id = message["id"]
        try:
            await self.joined()
            snapshot, view = await self.modern_view(server)
            if method == "server/discover":
                return self._modern_answer(method, jsonrpc.response(request_id, self._discover(view)), view)
            if method not in self._methods or method in MODERN_REMOVED:
                removed = " (removed in 2026-07-28)" if method in MODERN_REMOVED or method == "initialize" else ""
                raise JsonRpcError(jsonrpc.METHOD_NOT_FOUND, f"Method not found: {method}{removed}")
            params = message.get("params") or {}
            owner = self._round_owner(method, params, username, server)
            if owner is not None:
                return await self._forward_round(owner, message, username, scopes, server, emit, headers)
            if method == "tools/call":
                tool = view.tool_by_name.get(params.get("name"))  # type: ignore[arg-type]
                arguments = params.get("arguments")
                if tool is not None and isinstance(arguments, dict):
                    modern.check_param_headers(tool.wire.get("inputSchema") or {}, arguments, headers)
            session = self.modern_session(envelope, username=username, scopes=scopes, server=server)
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
                answer = await self.handle(message, exchange)
        except JsonRpcError as error:
            return jsonrpc.error_response(request_id, error)
        if answer is None:
            return None
        return self._modern_answer(method, answer, view)

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
        return await self.handle_modern(
            message,
            modern.parse_envelope(message),
            username=body["username"],
            scopes=frozenset(body["scopes"]),
            server=body["server"],
            emit=emit,
            headers=body["headers"],
        )

    def _discover(self, view: View) -> dict[str, Any]:
        result: dict[str, Any] = {
            "supportedVersions": list(versions.MODERN_VERSIONS),
            "capabilities": self.capabilities(),
        }
        if self.instructions:
            result["instructions"] = self.instructions
        return result

    def _modern_answer(self, method: str, answer: dict[str, Any], view: View) -> dict[str, Any]:
        """resultType, cache hints and serverInfo on results; 2026-07-28 error codes on errors."""
        if "error" in answer:
            error = answer["error"]
            if method == "resources/read" and error.get("code") == jsonrpc.RESOURCE_NOT_FOUND:
                answer = {**answer, "error": {**error, "code": jsonrpc.INVALID_PARAMS}}  # SEP-2164
            return answer
        result = dict(answer["result"])
        result.setdefault("resultType", "complete")
        if method in CACHEABLE_METHODS and result["resultType"] == "complete":
            ttl = result.get("ttlMs")
            result["ttlMs"] = min(ttl, self.cache_ttl_ms) if isinstance(ttl, int) and ttl >= 0 else self.cache_ttl_ms
            private = result.get("cacheScope") == "private" or self.cache_scope == "private"
            result["cacheScope"] = "private" if private else "public"
        meta = result.get("_meta")
        result["_meta"] = {**(meta if isinstance(meta, dict) else {}), modern.META_SERVER_INFO: self.server_info(view)}
        return {**answer, "result": result}

    async def _rounds(self, message: dict[str, Any], ex: Exchange) -> dict[str, Any] | None:
        """tools/call, resources/read, prompts/get for a modern client: a parked call answered round
        by round (basic/patterns/mrtr)."""
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
            # inputResponses without a requestState of ours go on with the call (see _upstream_request).
            first = {**message, "params": {k: v for k, v in params.items() if k != "requestState"}}
            call.task = asyncio.ensure_future(self.handle(first, ex))
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

    async def listen(
        self,
        message: dict[str, Any],
        envelope: modern.Envelope,
        *,
        username: str,
        scopes: frozenset[str],
        server: str | None,
    ) -> Listener:
        """Open a subscriptions/listen stream; its first queued message is the acknowledgement
        (basic/patterns/subscriptions). Call ``unlisten`` when the stream ends."""
        params = message.get("params") or {}
        wanted = params.get("notifications")
        if not isinstance(wanted, dict):
            raise JsonRpcError(
                jsonrpc.INVALID_PARAMS, "Invalid params: subscriptions/listen needs notifications (a filter object)."
            )
        uris = wanted.get("resourceSubscriptions") or []
        if not isinstance(uris, list) or not all(isinstance(uri, str) for uri in uris):
            raise JsonRpcError(jsonrpc.INVALID_PARAMS, "Invalid params: resourceSubscriptions must be a list of URIs.")
        if len(uris) > MAX_LISTEN_URIS:
            raise JsonRpcError(
                jsonrpc.INVALID_PARAMS, f"Invalid params: at most {MAX_LISTEN_URIS} resourceSubscriptions per stream."
            )
        snapshot, view = await self.modern_view(server)
        known = [uri for uri in dict.fromkeys(uris) if self._resource_origin(view, uri) is not None]
        listener = Listener(
            id=message["id"],
            username=username,
            server=server,
            tools=wanted.get("toolsListChanged") is True,
            prompts=wanted.get("promptsListChanged") is True,
            resources=wanted.get("resourcesListChanged") is True,
            uris=frozenset(),
            queue=asyncio.Queue(maxsize=LISTEN_QUEUE),
            upstream_keys=[],
        )
        session = self.modern_session(envelope, username=username, scopes=scopes, server=server)
        ex = Exchange(session=session, snapshot=snapshot, view=view, emit=_discard, modern=True)
        followed = []
        for uri in known:
            gateway, upstream_uri = self._resource_origin(view, uri)  # type: ignore[misc]
            if gateway is not None:
                key = (gateway, upstream_uri)
                followers = self._upstream_subscriptions.setdefault(key, set())
                if not followers:
                    try:
                        await self._upstream_request(
                            ex, gateway, "resources/subscribe", {"uri": upstream_uri}, shared=True
                        )
                    except JsonRpcError as exc:
                        logger.info("listen: upstream %s refused to subscribe to %s: %s", gateway, uri, exc.message)
                        continue
                followers.add(f"listen:{id(listener)}")
                listener.upstream_keys.append(key)
            followed.append(uri)
        listener.uris = frozenset(followed)
        honoured: dict[str, Any] = {
            name: True
            for name, on in (
                ("toolsListChanged", listener.tools),
                ("promptsListChanged", listener.prompts),
                ("resourcesListChanged", listener.resources),
            )
            if on
        }
        if "resourceSubscriptions" in wanted:
            honoured["resourceSubscriptions"] = followed
        listener.put("notifications/subscriptions/acknowledged", {"notifications": honoured})
        self.listeners.add(listener)
        return listener

    async def unlisten(self, listener: Listener) -> None:
        """The listen stream ended: drop it, and the upstream subscriptions only it needed."""
        self.listeners.discard(listener)
        tag = f"listen:{id(listener)}"
        for key in listener.upstream_keys:
            followers = self._upstream_subscriptions.get(key)
            if followers is None:
                continue
            followers.discard(tag)
            if followers:
                continue
            self._upstream_subscriptions.pop(key, None)
            try:
                snapshot = await self.catalog.get()
                view = snapshot.view(listener.server)
                if view is None:
                    continue
                session = Session(
                    "", listener.username, frozenset(), listener.server, versions.MODERN_VERSIONS[0], {}, {}
                )
                ex = Exchange(session=session, snapshot=snapshot, view=view, emit=_discard, modern=True)
                await self._upstream_request(ex, key[0], "resources/unsubscribe", {"uri": key[1]}, shared=True)
            except Exception:
                logger.info("listen: unsubscribing %s from upstream %s failed", key[1], key[0], exc_info=True)

    # -- methods ------------------------------------------------------------------------------

    async def _ping(self, params: dict[str, Any], ex: Exchange) -> dict[str, Any]:
        return {}

    def _page(self, entries: tuple[Any, ...], key: str, params: dict[str, Any], field: str) -> dict[str, Any]:
        cursor = params.get("cursor")
        if cursor is not None and not isinstance(cursor, str):
            raise JsonRpcError(jsonrpc.INVALID_PARAMS, "Invalid params: cursor must be a string.")
        try:
            chunk, next_cursor = page(entries, key, cursor, self.page_size)
        except ValueError:
            raise JsonRpcError(jsonrpc.INVALID_PARAMS, "Invalid params: unknown cursor.") from None
        result: dict[str, Any] = {field: [entry.wire for entry in chunk]}
        if next_cursor:
            result["nextCursor"] = next_cursor
        return result

    async def _tools_list(self, params: dict[str, Any], ex: Exchange) -> dict[str, Any]:
        return self._page(ex.view.tools, "name", params, "tools")

    async def _resources_list(self, params: dict[str, Any], ex: Exchange) -> dict[str, Any]:
        return self._page(ex.view.resources, "uri", params, "resources")

    async def _templates_list(self, params: dict[str, Any], ex: Exchange) -> dict[str, Any]:
        return self._page(ex.view.templates, "uri_template", params, "resourceTemplates")

    async def _prompts_list(self, params: dict[str, Any], ex: Exchange) -> dict[str, Any]:
        return self._page(ex.view.prompts, "name", params, "prompts")

    async def _upstream_request(
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
        """Relay one request to an upstream, passing its progress, logs and requests back to the client."""
        row = ex.snapshot.upstreams.get(gateway)
        if row is None and not self.upstreams.has_override(gateway):
            raise JsonRpcError(jsonrpc.SERVER_ERROR, f"Upstream {gateway!r} is disabled.")
        meta = params.get("_meta")
        client_meta: dict[str, Any] = meta if isinstance(meta, dict) else {}
        client_token = client_meta.get("progressToken")
        upstream_params = dict(params)
        upstream_token = None
        early = params.get("inputResponses") if ex.modern else None
        if ex.modern:  # the client's envelope is not the upstream's: its client will add its own
            client_meta = {k: v for k, v in client_meta.items() if k not in modern.META_KEYS}
            upstream_params["_meta"] = client_meta
            for field in modern.MRTR_FIELDS:
                upstream_params.pop(field, None)
        if client_token is not None:
            # Upstream sessions are shared by many clients: give each call a token of its own.
            upstream_token = f"gw-{next(_token_counter)}"
            upstream_params["_meta"] = {**client_meta, "progressToken": upstream_token}

        async def relay(message: dict[str, Any]) -> dict[str, Any] | None:
            return await self._relay_from_upstream(ex, gateway, message, client_token, upstream_token)

        try:
            # The upstream session that declares what this client declared (shared: the one that declares all).
            profile = None if shared else capability_profile(ex.session.client_capabilities)
            # The client's era: a dual-era upstream is reached in it (shared reads/subscriptions: either).
            era = None if shared else "modern" if ex.modern else "legacy"
            client = await self.upstreams.get(gateway, row or {}, profile, era=era)
            if tool is not None and profile is not None and profile != FULL_CAPABILITIES:
                await self._check_offered(gateway, client, tool, profile)
            if ex.session.log_level is not None:
                await self._upstream_log_level(client, ex.session.log_level)
            if isinstance(early, dict) and early:  # inputResponses sent without a requestState of ours
                if client.era == "modern":
                    upstream_params["inputResponses"] = early  # as they are: the upstream decides (mrtr)
                elif ex.parked is not None:
                    ex.parked.prefill(early)  # a session-era upstream's questions of those keys are not asked
            if ex.upstream_headers:
                return await client.request(
                    method, upstream_params, timeout=timeout, on_message=relay, headers=ex.upstream_headers
                )
            return await client.request(method, upstream_params, timeout=timeout, on_message=relay)
        except (UpstreamError, UpstreamTimeout, UpstreamUnavailable) as exc:
            raise _upstream_error(gateway, exc, timeout or self.tool_timeout) from None

    async def _check_offered(self, gateway: str, client: UpstreamClient, tool: str, profile: dict[str, Any]) -> None:
        """-32021 when the upstream offers ``tool`` to a fully capable client (it is in the catalog) but
        not on the session of this client's capability profile: some upstreams list a tool only to
        clients that can answer what it asks (2026-07-28 basic/index, MissingRequiredClientCapability)."""
        offered = self._offered.setdefault(gateway, weakref.WeakKeyDictionary())
        if client not in offered:
            offered[client] = await self._list_tool_names(client)
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

    async def _list_tool_names(self, client: UpstreamClient) -> frozenset[str] | None:
        names: set[str] = set()
        cursor = None
        try:
            for _ in range(OFFERED_MAX_PAGES):
                listed = await client.request("tools/list", {"cursor": cursor} if cursor else {}, timeout=10.0)
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

    async def _upstream_log_level(self, client: UpstreamClient, level: str) -> None:
        """Make sure the upstream sends logs at least as detailed as ``level`` (its session is shared:
        the level only ever goes down; the gateway filters per client). For a 2026-07-28 client this
        maps the request's `_meta` log level onto the upstream's `logging/setLevel`."""
        current = self._upstream_levels.get(client)
        if current is not None and LOG_LEVELS.index(current) <= LOG_LEVELS.index(level):
            return
        capabilities = (client.initialize_result or {}).get("capabilities") or {}
        if "logging" not in capabilities:
            return
        try:
            await client.request("logging/setLevel", {"level": level}, timeout=5.0)
        except (UpstreamError, UpstreamTimeout, UpstreamUnavailable) as exc:
            logger.info("upstream refused logging/setLevel %s: %s", level, exc)
            return
        self._upstream_levels[client] = level

    async def _relay_from_upstream(
        self, ex: Exchange, gateway: str, message: dict[str, Any], client_token: Any, upstream_token: str | None
    ) -> dict[str, Any] | None:
        method = message.get("method")
        params = dict(message.get("params") or {})
        if "id" not in message:  # a notification tied to the call
            if method in LIST_CHANGED:  # the gateway's own lists change only after a refresh
                self.upstream_lists_changed(gateway)
                return None
            if method == "notifications/resources/updated":  # for every subscriber, not just this caller
                await self._upstream_notification(gateway, message)
                return None
            if method == "notifications/progress":
                if client_token is None or params.get("progressToken") != upstream_token:
                    return None
                params["progressToken"] = client_token
            elif method == "notifications/message" and not ex.session.wants_log(str(params.get("level", "info"))):
                return None
            await ex.emit(jsonrpc.notification(str(method), params))
            return None
        needed = {
            "sampling/createMessage": ("sampling", None),
            "roots/list": ("roots", None),
            "elicitation/create": ("elicitation", "url" if params.get("mode") == "url" else "form"),
        }.get(str(method))
        if needed is None:
            return {"error": {"code": jsonrpc.METHOD_NOT_FOUND, "message": f"Method not found: {method}"}}
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

    async def _tools_call(self, params: dict[str, Any], ex: Exchange) -> dict[str, Any]:
        name = params.get("name")
        if not isinstance(name, str):
            raise JsonRpcError(jsonrpc.INVALID_PARAMS, "Invalid params: tools/call needs a tool name.")
        arguments = params.get("arguments", {})
        if not isinstance(arguments, dict):
            raise JsonRpcError(jsonrpc.INVALID_PARAMS, "Invalid params: arguments must be an object.")
        tool = ex.view.tool_by_name.get(name)
        if tool is None:
            raise JsonRpcError(jsonrpc.INVALID_PARAMS, f"Unknown tool: {name}")
        if "call" not in ex.session.scopes:
            raise _forbidden("calling tools (scope 'call')")
        if tool.integration_type != "mcp" or tool.gateway is None:
            raise JsonRpcError(
                jsonrpc.SERVER_ERROR,
                f"Tool {name!r} has a {tool.integration_type} backend, which cannot be called yet.",
            )
        upstream_params = {**params, "name": tool.upstream_name, "arguments": arguments}
        timeout = tool.timeout or self.tool_timeout
        return await self._upstream_request(
            ex, tool.gateway, "tools/call", upstream_params, timeout=timeout, tool=tool.upstream_name
        )

    async def _resources_read(self, params: dict[str, Any], ex: Exchange) -> dict[str, Any]:
        uri = params.get("uri")
        if not isinstance(uri, str):
            raise JsonRpcError(jsonrpc.INVALID_PARAMS, "Invalid params: resources/read needs a uri.")
        resource = ex.view.resource_by_uri.get(uri)
        if resource is not None and resource.gateway is None:
            content: dict[str, Any] = {"uri": uri}
            if resource.mime_type:
                content["mimeType"] = resource.mime_type
            if resource.blob is not None:
                content["blob"] = base64.b64encode(resource.blob).decode()
            else:
                content["text"] = resource.text or ""
            return {"contents": [content]}
        if resource is not None and resource.gateway is not None:
            gateway, upstream_uri = resource.gateway, resource.upstream_uri
        else:
            template = ex.view.template_for(uri)
            if template is None or template.gateway is None:
                raise JsonRpcError(jsonrpc.RESOURCE_NOT_FOUND, f"Resource not found: {uri}", {"uri": uri})
            gateway, upstream_uri = template.gateway, uri
        result = await self._upstream_request(ex, gateway, "resources/read", {**params, "uri": upstream_uri})
        if upstream_uri != uri:
            for item in result.get("contents", []):
                if isinstance(item, dict) and item.get("uri") == upstream_uri:
                    item["uri"] = uri
        return result

    def _resource_origin(self, view: View, uri: str) -> tuple[str | None, str] | None:
        """(gateway or None for a local resource, the upstream's URI), or None when not in the view."""
        resource = view.resource_by_uri.get(uri)
        if resource is not None:
            return resource.gateway, resource.upstream_uri
        template = view.template_for(uri)
        if template is not None:
            return template.gateway, uri
        return None

    async def _resources_subscribe(self, params: dict[str, Any], ex: Exchange) -> dict[str, Any]:
        uri = params.get("uri")
        if not isinstance(uri, str):
            raise JsonRpcError(jsonrpc.INVALID_PARAMS, "Invalid params: resources/subscribe needs a uri.")
        origin = self._resource_origin(ex.view, uri)
        if origin is None:
            raise JsonRpcError(jsonrpc.RESOURCE_NOT_FOUND, f"Resource not found: {uri}", {"uri": uri})
        gateway, upstream_uri = origin
        if gateway is not None and uri not in ex.session.subscriptions:
            # One upstream subscription however many sessions follow the resource.
            followers = self._upstream_subscriptions.setdefault((gateway, upstream_uri), set())
            if not followers:
                await self._upstream_request(ex, gateway, "resources/subscribe", {"uri": upstream_uri}, shared=True)
            followers.add(ex.session.id)
            self._watch_followers()
        if uri not in ex.session.subscriptions:
            ex.session.subscriptions.add(uri)
            await self.sessions.save(ex.session, "subscriptions")
        return {}

    async def _resources_unsubscribe(self, params: dict[str, Any], ex: Exchange) -> dict[str, Any]:
        uri = params.get("uri")
        if not isinstance(uri, str):
            raise JsonRpcError(jsonrpc.INVALID_PARAMS, "Invalid params: resources/unsubscribe needs a uri.")
        if uri in ex.session.subscriptions:
            ex.session.subscriptions.discard(uri)
            await self.sessions.save(ex.session, "subscriptions")
            origin = self._resource_origin(ex.view, uri)
            if origin is not None and origin[0] is not None:
                key = (origin[0], origin[1])
                followers = self._upstream_subscriptions.get(key, set())
                followers.discard(ex.session.id)
                if not followers:
                    self._upstream_subscriptions.pop(key, None)
                    await self._upstream_request(
                        ex, origin[0], "resources/unsubscribe", {"uri": origin[1]}, shared=True
                    )
        return {}

    async def _prompts_get(self, params: dict[str, Any], ex: Exchange) -> dict[str, Any]:
        name = params.get("name")
        if not isinstance(name, str):
            raise JsonRpcError(jsonrpc.INVALID_PARAMS, "Invalid params: prompts/get needs a prompt name.")
        arguments = params.get("arguments") or {}
        if not isinstance(arguments, dict) or not all(isinstance(v, str) for v in arguments.values()):
            raise JsonRpcError(jsonrpc.INVALID_PARAMS, "Invalid params: prompt arguments must be an object of strings.")
        prompt = ex.view.prompt_by_name.get(name)
        if prompt is None:
            raise JsonRpcError(jsonrpc.INVALID_PARAMS, f"Unknown prompt: {name}")
        if prompt.gateway is not None:
            return await self._upstream_request(
                ex, prompt.gateway, "prompts/get", {**params, "name": prompt.upstream_name, "arguments": arguments}
            )
        from registry.exceptions import InvalidInput
        from registry.prompts import render

        try:
            text = render(prompt.template, prompt.arguments, arguments)
        except InvalidInput as exc:
            raise JsonRpcError(jsonrpc.INVALID_PARAMS, f"Invalid params: {exc.message}") from None
        result: dict[str, Any] = {"messages": [{"role": "user", "content": {"type": "text", "text": text}}]}
        if prompt.wire.get("description"):
            result["description"] = prompt.wire["description"]
        return result

    async def _complete(self, params: dict[str, Any], ex: Exchange) -> dict[str, Any]:
        ref = params.get("ref")
        if not isinstance(ref, dict) or not isinstance(params.get("argument"), dict):
            raise JsonRpcError(jsonrpc.INVALID_PARAMS, "Invalid params: completion/complete needs ref and argument.")
        empty = {"completion": {"values": [], "total": 0, "hasMore": False}}
        if ref.get("type") == "ref/prompt":
            prompt = ex.view.prompt_by_name.get(str(ref.get("name")))
            if prompt is None:
                raise JsonRpcError(jsonrpc.INVALID_PARAMS, f"Unknown prompt: {ref.get('name')}")
            if prompt.gateway is None:
                return empty
            upstream_ref = {**ref, "name": prompt.upstream_name}
            return await self._upstream_request(
                ex, prompt.gateway, "completion/complete", {**params, "ref": upstream_ref}
            )
        if ref.get("type") == "ref/resource":
            uri = str(ref.get("uri"))
            template = next((t for t in ex.view.templates if t.uri_template == uri), None)
            if template is None:
                raise JsonRpcError(jsonrpc.INVALID_PARAMS, f"Unknown resource template: {uri}")
            if template.gateway is None:
                return empty
            return await self._upstream_request(ex, template.gateway, "completion/complete", params)
        raise JsonRpcError(jsonrpc.INVALID_PARAMS, "Invalid params: ref.type must be ref/prompt or ref/resource.")

    async def _set_level(self, params: dict[str, Any], ex: Exchange) -> dict[str, Any]:
        level = params.get("level")
        if level not in LOG_LEVELS:
            raise JsonRpcError(jsonrpc.INVALID_PARAMS, f"Invalid params: level must be one of {', '.join(LOG_LEVELS)}.")
        ex.session.log_level = str(level)
        await self.sessions.save(ex.session, "log_level")
        return {}
