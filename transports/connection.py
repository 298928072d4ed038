"""One session on one long-lived connection: what the legacy HTTP+SSE and the WebSocket adapters share.

Both transports hold a connection open for the life of a session and send *everything* for the
client down it: answers, the messages a call sends before its result (progress, logs, requests to
the client), and the session's standalone messages (list_changed, resource updates). So the session
is made when the connection opens and ends when it closes, and a ``Connection`` is the session plus
a bounded outbox that the adapter's writer drains. The adapters only frame bytes; every method is
answered by the protocol core (``transports.protocol.server.McpCore``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from transports import edge
from transports.protocol import jsonrpc, versions
from transports.protocol.jsonrpc import JsonRpcError
from transports.protocol.sessions import EventLog, Session
from transports.runtime import get_core

logger = logging.getLogger(__name__)

OUTBOX_SIZE = 1024  # messages waiting for a slow client; more closes the connection
FELL_BEHIND = 4429  # the WebSocket close code for that (4000 + HTTP 429; see transports/websocket.py)
MAX_IN_FLIGHT = 64  # requests of one connection answered at the same time
FOLLOW_WAIT = 60.0  # seconds between checks of the standalone stream when nothing happens


class ConnectionClosed(Exception):
    """The connection has ended (its session is gone)."""


class Connection:
    """A session whose every message to the client goes through ``outbox`` (``None`` = close)."""

    def __init__(self, session: Session, *, transport: str) -> None:
        self.session = session
        self.transport = transport
        self.outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(OUTBOX_SIZE)
        self.closed = False
        self.close_code: int | None = None
        self.close_reason = ""
        self._initialize_started = False
        self._tasks: set[asyncio.Task[Any]] = set()
        session.listeners += 1  # an open connection keeps its session from idling out

    @classmethod
    async def open(cls, *, username: str, scopes: frozenset[str], server: str | None, transport: str) -> Connection:
        """A session for a new connection, before ``initialize``: it offers no client capability, so the
        client is asked nothing until it has declared what it can answer. Raises JsonRpcError (unknown
        virtual server, HTTP status 404), SessionLimitReached, edge.EdgeRefused (no stream slot left)
        or CatalogUnavailable."""
        core = get_core()
        snapshot = await core.catalog.get()
        if snapshot.view(server) is None:
            raise JsonRpcError(jsonrpc.INVALID_PARAMS, f"No enabled virtual server named {server!r}.", http_status=404)
        edge.streams.acquire(username)
        try:
            session = await core.sessions.create(
                connection=True,
                username=username,
                scopes=scopes,
                server=server,
                protocol_version=versions.LATEST_LEGACY,
                client_capabilities={},
                client_info={},
            )
        except BaseException:
            edge.streams.release(username)
            raise
        return cls(session, transport=transport)

    # -- to the client --------------------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        """Queue a message for the client (also the ``emit`` of every exchange of this connection)."""
        if self.closed:
            raise ConnectionClosed(self.transport)
        try:
            self.outbox.put_nowait(message)
        except asyncio.QueueFull:
            logger.warning(
                "%s session %s of %s fell %d messages behind; closing it",
                self.transport,
                self.session.id,
                self.session.username,
                OUTBOX_SIZE,
            )
            self.close(FELL_BEHIND, "The client did not read its messages fast enough.")
            raise ConnectionClosed(self.transport) from None

    def close(self, code: int | None = None, reason: str = "") -> None:
        """End the session (in-flight calls are cancelled) and tell the writer to stop. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self.close_code, self.close_reason = code, reason
        for task in self._tasks:
            task.cancel()
        self.session.listeners -= 1
        edge.streams.release(self.session.username)
        get_core().sessions.discard(self.session.id)
        while True:  # make room for the end marker: nothing queued will be read any more
            try:
                self.outbox.put_nowait(None)
                return
            except asyncio.QueueFull:
                self.outbox.get_nowait()

    # -- from the client ------------------------------------------------------------------------

    async def receive(self, message: dict[str, Any]) -> None:
        """One valid JSON-RPC message from the client. Notifications and responses are taken before
        this returns; requests are answered in the background, on the outbox."""
        if self.closed:
            raise ConnectionClosed(self.transport)
        core = get_core()
        kind = jsonrpc.kind(message)
        if kind == "response":
            await core.accept_response(self.session, message)
        elif kind == "notification":
            if self._initialize_started:
                await core.notify(self.session, message)
        elif message["method"] == "initialize" and not self._initialize_started:
            await self._initialize(message)
        elif not self._initialize_started and message["method"] != "ping":
            # basic/lifecycle: initialize MUST be the first interaction (a 2026-07-28 server/discover
            # probe gets this error too, and the client falls back to initialize).
            error = JsonRpcError(jsonrpc.INVALID_REQUEST, "Invalid Request: send initialize first.")
            await self.send(jsonrpc.error_response(message["id"], error))
        elif len(self._tasks) >= MAX_IN_FLIGHT:
            error = JsonRpcError(
                jsonrpc.SERVER_ERROR, f"Too many requests in flight on this connection (at most {MAX_IN_FLIGHT})."
            )
            await self.send(jsonrpc.error_response(message["id"], error))
        else:
            self._spawn(self._answer(message))

    async def _initialize(self, message: dict[str, Any]) -> None:
        """Negotiate as the core does; the result goes to the session this connection already holds."""
        core = get_core()
        self._initialize_started = True
        try:
            _, result = await core.initialize(
                message,
                username=self.session.username,
                scopes=self.session.scopes,
                server=self.session.server,
                session=self.session,
            )
        except JsonRpcError as exc:
            self._initialize_started = False  # the client may try again
            await self.send(jsonrpc.error_response(message["id"], exc))
            return
        except Exception as exc:  # SessionLimitReached, CatalogUnavailable: say so, keep the connection
            self._initialize_started = False
            logger.warning("%s initialize failed: %s", self.transport, exc)
            error = JsonRpcError(jsonrpc.SERVER_ERROR, f"Service unavailable: {exc}.")
            await self.send(jsonrpc.error_response(message["id"], error))
            return
        await self.send(jsonrpc.response(message["id"], result))
        standalone = core.sessions.standalone(self.session)
        self._spawn(self._follow(standalone, await standalone.position()))

    async def _answer(self, message: dict[str, Any]) -> None:
        core = get_core()
        try:
            exchange = await core.exchange(self.session, self.send, message["id"])
            answer = await core.handle(message, exchange)
        except JsonRpcError as exc:
            answer = jsonrpc.error_response(message["id"], exc)
        except ConnectionClosed:
            return
        except Exception:  # never leave a request unanswered because of a bug or an outage
            logger.exception("%s: error while answering %s", self.transport, message.get("method"))
            answer = jsonrpc.error_response(message["id"], JsonRpcError(jsonrpc.INTERNAL_ERROR, "Internal error"))
        if answer is not None and not self.closed:  # None: cancelled by the client, nothing to send
            await self.send(answer)

    async def _follow(self, stream: EventLog, seq: int) -> None:
        """Forward the session's standalone messages (list_changed, resource updates) to the outbox;
        when the session ends elsewhere, close the connection."""
        while True:
            events, done = await stream.read(seq)
            for number, message in events:
                if number > seq + 1:
                    logger.warning("%s session %s lost %d standalone messages", self.transport, stream.id, number - seq)
                await self.send(message)
                seq = number
            if done or self.session.closed:
                self.close(None, "The session ended.")
                return
            await stream.wait(seq, FOLLOW_WAIT)

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and not isinstance(task.exception(), ConnectionClosed | None):
            logger.error("%s task failed", self.transport, exc_info=task.exception())
