"""One client request in flight (``Exchange``): who asks, what they see, how to talk back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from transports.protocol import jsonrpc
from transports.protocol.catalog import Snapshot, View
from transports.protocol.rounds import ParkedCall
from transports.protocol.sessions import Session

CLIENT_REQUEST_TIMEOUT = 300.0

Emit = Callable[[dict[str, Any]], Awaitable[None]]


async def discard(message: dict[str, Any]) -> None:
    """An ``Emit`` for requests whose related messages have nowhere to go."""
    return None


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

    @property
    def era(self) -> str:
        """The client's era: "modern" (2026-07-28, stateless) or "legacy" (a session)."""
        return "modern" if self.modern else "legacy"

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
