"""One session on one long-lived connection: what the legacy HTTP+SSE and the WebSocket adapters share.

Both transports hold a connection open for the life of a session and send *everything* for the
client down it: answers, the messages a call sends before its result (progress, logs, requests to
the client), and the session's standalone messages (list_changed, resource updates). So the session
is made when the connection opens and ends when it closes, and a ``Connection`` is the session plus
a bounded outbox that the adapter's writer drains. The adapters only frame bytes; every method is
answered by the protocol core (``transports.protocol.core.McpCore``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from django.conf import settings

from transports import edge
from transports.protocol import jsonrpc
from transports.protocol.jsonrpc import JsonRpcError
from transports.protocol.outcome import Caller, lifecycle_error
from transports.protocol.sessions import EventLog, Session, SessionStoreUnavailable
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

    def __init__(self, session: Session, caller: Caller, *, transport: str) -> None:
        self.session = session
        self.caller = caller
        self.transport = transport
        self.outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(OUTBOX_SIZE)
        self.closed = False
        self.close_code: int | None = None
        self.close_reason = ""
        self._initialize_started = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._keeper: asyncio.Task[None] | None = None
        session.listeners += 1  # an open connection keeps its session from idling out

    @classmethod
    async def open(cls, caller: Caller, *, transport: str) -> Connection:
        """A session for a new connection, before ``initialize``. Raises JsonRpcError (unknown virtual
        server, HTTP status 404), SessionLimitReached, edge.EdgeRefused (no stream slot left) or
        CatalogUnavailable."""
        core = get_core()
        await core.view(caller.server)  # an unknown virtual server takes no stream slot
        edge.streams.acquire(caller.username)
        try:
            session = await core.open_session(caller)
        except BaseException:
            edge.streams.release(caller.username)
            raise
        connection = cls(session, caller, transport=transport)
        connection._keeper = asyncio.ensure_future(connection._keep())
        connection._keeper.add_done_callback(connection._done)
        return connection

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
        if self._keeper is not None:
            self._keeper.cancel()
        self.session.listeners -= 1
        edge.streams.release(self.session.username)
        get_core().close_session(self.session)
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
        if jsonrpc.kind(message) != "request":
            if jsonrpc.kind(message) == "response" or self._initialize_started:
                await core.take(self.session, message)
            return
        error = lifecycle_error(message["method"], initialize_started=self._initialize_started)
        if error is None and message["method"] != "initialize" and len(self._tasks) >= MAX_IN_FLIGHT:
            error = JsonRpcError(
                jsonrpc.SERVER_ERROR, f"Too many requests in flight on this connection (at most {MAX_IN_FLIGHT})."
            )
        if error is not None:
            await self.send(jsonrpc.error_response(message["id"], error))
        elif message["method"] == "initialize":
            await self._initialize(message)
        else:
            self._spawn(self._answer(message))

    async def _initialize(self, message: dict[str, Any]) -> None:
        """Negotiate as the core does; the result goes to the session this connection already holds."""
        core = get_core()
        self._initialize_started = True
        try:
            _, result = await core.initialize(message, self.caller, session=self.session)
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
        standalone = core.standalone(self.session)
        self._spawn(self._follow(standalone, await standalone.position()))

    async def _answer(self, message: dict[str, Any]) -> None:
        try:
            answer = await get_core().answer(self.session, message, self.send, transport=self.transport)
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

    async def _keep(self) -> None:
        """Ask after the session at least twice per idle timeout while the connection is open: in the shared
        store that refreshes its record (one round trip), which nothing else does while the client sends nothing,
        so it expired under its open connection, a POST on another replica got 404 and the session counts
        (GATEWAY_MAX_SESSIONS and per user) missed it. Closes the connection when the session ended elsewhere."""
        core = get_core()
        every = settings.GATEWAY_SESSION_IDLE_TIMEOUT / 2
        while True:
            await asyncio.sleep(every)
            try:
                alive = await core.alive(self.session)
            except SessionStoreUnavailable:  # Redis out of reach: the connection goes on; asked again later
                continue
            if not alive:
                self.close(None, "The session ended.")
                return

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and not isinstance(task.exception(), ConnectionClosed | None):
            logger.error("%s task failed", self.transport, exc_info=task.exception())
