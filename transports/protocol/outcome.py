"""What passes between a transport adapter and the protocol core: the ``Caller`` an adapter hands the core
with each message, and the ``Outcome`` it gets back (what to send now, or a ``Call`` to run); with the two
rules an adapter applies before it has a session to ask the core about (a refused body's status, the
lifecycle of a connection)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from transports.protocol import jsonrpc
from transports.protocol import vocabulary as mcp
from transports.protocol.exchange import Emit
from transports.protocol.jsonrpc import JsonRpcError
from transports.protocol.listen import Listener
from transports.protocol.methods import already_initialized
from transports.protocol.sessions import Session


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


def request_id_of(payload: Any) -> jsonrpc.Id | None:
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
