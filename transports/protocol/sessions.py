"""Session-era (2024-11-05 .. 2025-11-25) sessions: what `initialize` negotiated, and the live
plumbing for messages from the gateway to the client.

``SessionStore`` keeps them in this process's memory (the embedded default, one process);
``transports.protocol.shared_sessions.RedisSessionStore`` keeps them in Redis so that any replica
can take any request of a session (docs/replicas.md). Both hand out event logs with the same async
interface (``EventLog``): in memory here, Redis streams there.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from transports.protocol.jsonrpc import Id
from transports.protocol.vocabulary import LOG_LEVELS as LOG_LEVELS  # declared there; read from here too

EVENTS_PER_STREAM = 256  # events kept per stream for resumption (Last-Event-ID)
STREAMS_KEPT = 16  # finished request streams kept per session for resumption


class EventLog(Protocol):
    """The numbered messages of one SSE stream, kept (bounded) so a client can resume it with
    Last-Event-ID on any connection. Event ids are '<stream id>:<sequence>'."""

    id: str

    async def append(self, message: dict[str, Any], *, last: bool = False) -> str:
        """Log a message (``last``: and end the stream); returns its event id."""

    async def read(self, after: int) -> tuple[list[tuple[int, dict[str, Any]]], bool]:
        """The events after sequence ``after``, and whether the stream has ended after them."""

    async def wait(self, after: int, timeout: float) -> bool:
        """Wait until there is an event after ``after`` or the stream ended; False on timeout."""

    async def finish(self) -> None:
        """Mark the stream ended (a resumed request stream closes after its response)."""

    async def position(self) -> int:
        """The sequence number of the latest event (a new reader starts after it)."""

    async def end_if_orphaned(self) -> bool:
        """End a request stream nobody will finish (its request ran on a replica that is gone) with the error
        response its client waits for; True when this call ended it."""


class EventStream:
    """An ``EventLog`` in process memory.

    The wake-up event exists only once someone waits (most streams are never waited on), which
    keeps a stream, and so an idle session, small."""

    __slots__ = ("_changed", "done", "events", "id", "seq")

    def __init__(self, stream_id: str, *, keep: int = EVENTS_PER_STREAM) -> None:
        self.id = stream_id
        self.seq = 0
        self.done = False
        self.events: deque[tuple[int, dict[str, Any]]] = deque(maxlen=keep)
        self._changed: asyncio.Event | None = None

    async def append(self, message: dict[str, Any], *, last: bool = False) -> str:
        self.seq += 1
        self.events.append((self.seq, message))
        if last:
            self.done = True
        if self._changed is not None:
            self._changed.set()
        return f"{self.id}:{self.seq}"

    async def finish(self) -> None:
        self.close()

    def close(self) -> None:
        self.done = True
        if self._changed is not None:
            self._changed.set()

    async def read(self, after: int) -> tuple[list[tuple[int, dict[str, Any]]], bool]:
        return [(n, m) for n, m in self.events if n > after], self.done

    async def position(self) -> int:
        return self.seq

    async def end_if_orphaned(self) -> bool:
        return False  # one process: the reader and the request live and die together

    async def wait(self, after: int, timeout: float) -> bool:
        while self.seq <= after and not self.done:
            if self._changed is None:
                self._changed = asyncio.Event()
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except TimeoutError:
                return False
        return True


def parse_event_id(value: str) -> tuple[str, int] | None:
    stream_id, sep, seq = value.rpartition(":")
    if not sep or not seq.isdigit():
        return None
    return stream_id, int(seq)


STANDALONE_STREAM_ID = "g"


@dataclass(slots=True)
class Session:
    """One client session, bound to the user and the endpoint that created it.

    The runtime parts (in-flight requests, the standalone stream, request streams, pending
    gateway->client requests, subscriptions) are created on first use: an idle session holds only
    what `initialize` negotiated (see docs/performance.md, idle sessions). In-flight requests and
    pending gateway->client requests are always this process's own; with a shared store the rest
    is read from Redis on every request (``shared``)."""

    id: str
    username: str
    scopes: frozenset[str]
    server: str | None  # the virtual server's name, or None for /mcp
    protocol_version: str
    client_capabilities: dict[str, Any]
    client_info: dict[str, Any]
    initialized: bool = False
    log_level: str | None = None
    created_at: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)
    # How many GET connections (or the one HTTP+SSE / WebSocket connection) of this process read it.
    listeners: int = 0
    next_request_id: int = 0
    # Kept in Redis (Streamable HTTP sessions with a shared store); False: this process holds it all.
    shared: bool = False
    # The replica holding the session's connection (HTTP+SSE, WebSocket) when the store is shared.
    owner: str | None = None
    closed: bool = False
    _subscriptions: set[str] | None = field(default=None, init=False, repr=False)
    _in_flight: dict[Id, asyncio.Task[Any]] | None = field(default=None, init=False, repr=False)
    _standalone: EventStream | None = field(default=None, init=False, repr=False)
    _request_streams: OrderedDict[str, EventStream] | None = field(default=None, init=False, repr=False)
    _pending: dict[Id, asyncio.Future[dict[str, Any]]] | None = field(default=None, init=False, repr=False)

    @property
    def subscriptions(self) -> set[str]:
        """Resource URIs this session subscribed to."""
        if self._subscriptions is None:
            self._subscriptions = set()
        return self._subscriptions

    @property
    def in_flight(self) -> dict[Id, asyncio.Task[Any]]:
        """In-flight client requests by id (for notifications/cancelled)."""
        if self._in_flight is None:
            self._in_flight = {}
        return self._in_flight

    @property
    def standalone(self) -> EventStream:
        """The standalone stream's log in memory (list_changed, resource updates, server->client requests)."""
        if self._standalone is None:
            self._standalone = EventStream(STANDALONE_STREAM_ID, keep=64)
        return self._standalone

    @property
    def request_streams(self) -> OrderedDict[str, EventStream]:
        """The logs of recent request streams in memory, oldest first (for resumption)."""
        if self._request_streams is None:
            self._request_streams = OrderedDict()
        return self._request_streams

    @property
    def pending(self) -> dict[Id, asyncio.Future[dict[str, Any]]]:
        """Gateway->client requests waiting for the client's answer, by id."""
        if self._pending is None:
            self._pending = {}
        return self._pending

    @property
    def busy(self) -> bool:
        """Something of this process is attached to it (a stream, a call, a question to the client, a
        resource subscription whose upstream subscription this process holds)."""
        return bool(self.listeners or self._in_flight or self._pending or self._subscriptions)

    def open_request_stream(self) -> EventStream:
        """A new logged stream for one request's SSE answer; old finished ones are forgotten."""
        stream = EventStream(f"r{secrets.token_hex(6)}")
        streams = self.request_streams
        streams[stream.id] = stream
        while len(streams) > STREAMS_KEPT:
            oldest = next(iter(streams.values()))
            if not oldest.done:
                break
            streams.popitem(last=False)
        return stream

    def find_stream(self, stream_id: str) -> EventStream | None:
        if stream_id == STANDALONE_STREAM_ID:
            return self.standalone
        return self._request_streams.get(stream_id) if self._request_streams else None

    def has_capability(self, name: str, sub: str | None = None) -> bool:
        value = self.client_capabilities.get(name)
        if value is None:
            return False
        if sub is None:
            return True
        if name == "elicitation" and sub == "form" and isinstance(value, dict) and not value:
            return True  # an empty elicitation capability means form mode (2025-11-25)
        return isinstance(value, dict) and sub in value

    def wants_log(self, level: str) -> bool:
        if self.log_level is None:
            return False
        try:
            return LOG_LEVELS.index(level) >= LOG_LEVELS.index(self.log_level)
        except ValueError:
            return True

    def close(self) -> None:
        """Stop this process's work for the session (its calls, its questions, its streams)."""
        self.closed = True
        for task in (self._in_flight or {}).values():
            task.cancel()
        if self._standalone is not None:
            self._standalone.close()
        for stream in (self._request_streams or {}).values():
            stream.close()
        for future in (self._pending or {}).values():
            if not future.done():
                future.cancel()


class SessionLimitReached(Exception):
    """No room for another session (``status``: 429 for a per-user bound, 503 for the process's)."""

    def __init__(self, message: str, status: int = 503) -> None:
        super().__init__(message)
        self.status = status


class SessionStoreUnavailable(SessionLimitReached):
    """The shared session store (Redis) cannot be reached: no session can be had or served now (503), as
    when none has room; every adapter answers both the same way."""

    def __init__(self) -> None:
        super().__init__("the session store (Redis) cannot be reached; try again shortly", 503)


def per_user_limit_message(username: str, limit: int) -> str:
    return (
        f"user {username!r} already holds its maximum of {limit} sessions (GATEWAY_MAX_SESSIONS_PER_USER); "
        "end one (DELETE, or close its stream) or wait for an idle one to expire"
    )


class SessionStore:
    """Sessions of this process, in memory, expiring after ``idle_timeout`` seconds without a request
    (never while a stream of theirs is open)."""

    def __init__(self, *, idle_timeout: float = 3600.0, max_sessions: int = 10_000, max_per_user: int = 0) -> None:
        self.idle_timeout = idle_timeout
        self.max_sessions = max_sessions
        self.max_per_user = max_per_user  # 0: no per-user bound
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._per_user: dict[str, int] = {}
        # Called with the id of every session that ends (deleted, closed or expired) in this process.
        self.on_end: Callable[[str], None] | None = None

    def __len__(self) -> int:
        return len(self._sessions)

    async def create(self, *, connection: bool = False, **fields: Any) -> Session:
        """A new session (``connection``: bound to one HTTP+SSE or WebSocket connection of this process)."""
        self._expire()
        if len(self._sessions) >= self.max_sessions:
            raise SessionLimitReached(
                f"this gateway process holds its maximum of {self.max_sessions} sessions (GATEWAY_MAX_SESSIONS)"
            )
        username = fields["username"]
        if self.max_per_user and self._per_user.get(username, 0) >= self.max_per_user:
            raise SessionLimitReached(per_user_limit_message(username, self.max_per_user), 429)
        session = Session(id=secrets.token_urlsafe(24), **fields)
        self._sessions[session.id] = session
        self._per_user[username] = self._per_user.get(username, 0) + 1
        return session

    async def get(self, session_id: str) -> Session | None:
        return self.get_local(session_id)

    def get_local(self, session_id: str) -> Session | None:
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = time.monotonic()
        if now - session.last_seen > self.idle_timeout and not session.listeners:
            self._drop(session_id)
            return None
        session.last_seen = now
        self._sessions.move_to_end(session_id)
        return session

    async def delete(self, session_id: str) -> bool:
        return self._drop(session_id)

    def _drop(self, session_id: str) -> bool:
        session = self._sessions.pop(session_id, None)
        if session is None:
            return False
        left = self._per_user.get(session.username, 1) - 1
        if left:
            self._per_user[session.username] = left
        else:
            self._per_user.pop(session.username, None)
        session.close()
        if self.on_end is not None:
            self.on_end(session_id)
        return True

    def discard(self, session_id: str) -> None:
        """End a session now, from synchronous code (a connection closing)."""
        self._drop(session_id)

    async def exists(self, session_id: str) -> bool:
        """Whether the session still exists, without keeping it alive (an idle one expires here)."""
        session = self._sessions.get(session_id)
        if session is not None and time.monotonic() - session.last_seen > self.idle_timeout and not session.listeners:
            self._drop(session_id)
            return False
        return session is not None

    async def alive(self, session: Session) -> bool:
        """The session still exists (an open stream asks now and then; it also keeps it from expiring)."""
        if session.closed or session.id not in self._sessions:
            return False
        # Seen now, as the shared store refreshes its expiry: when the stream closes, the session has a
        # whole idle period left, not one that ran out while the stream held it.
        session.last_seen = time.monotonic()
        self._sessions.move_to_end(session.id)
        return True

    async def save(self, session: Session, *names: str) -> None:
        """Persist fields a request changed (``initialized``, ``log_level``, ``subscriptions``): in
        memory there is nothing to do."""

    def local(self) -> list[Session]:
        """The sessions this process serves notifications for (here: all of them)."""
        return list(self._sessions.values())

    def known(self) -> list[Session]:
        """Every session this process has an object for (here: all of them)."""
        return list(self._sessions.values())

    async def claim(self, session: Session, key: str) -> bool:
        """True for the one replica that should send the notification named ``key`` (here: always)."""
        return True

    def standalone(self, session: Session) -> EventLog:
        return session.standalone

    def open_stream(self, session: Session, request_id: Any = None) -> EventLog:
        return session.open_request_stream()

    async def find_stream(self, session: Session, stream_id: str) -> EventLog | None:
        return session.find_stream(stream_id)

    def _expire(self) -> None:
        now = time.monotonic()
        limit = now - self.idle_timeout
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if oldest.last_seen >= limit:
                break
            if oldest.listeners:
                # Kept by an open stream or connection: seen now, and to the back of the line. Stopping
                # here instead left every idle session behind it in memory, expired but never dropped,
                # until the store refused new sessions at GATEWAY_MAX_SESSIONS (found by make soak).
                oldest.last_seen = now
                self._sessions.move_to_end(oldest.id)
            else:
                self._drop(oldest.id)
