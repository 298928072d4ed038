"""2026-07-28 `subscriptions/listen` streams (basic/patterns/subscriptions): what each asked for, its
bounded outbox, and the upstream subscriptions it holds through the fan-out."""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass
from typing import Any

from transports.protocol import jsonrpc
from transports.protocol import vocabulary as mcp
from transports.protocol.catalog import CatalogCache
from transports.protocol.exchange import Exchange, discard
from transports.protocol.fanout import Fanout, resource_origin
from transports.protocol.jsonrpc import JsonRpcError
from transports.protocol.sessions import Session

logger = logging.getLogger(__name__)

MAX_LISTEN_URIS = 1000
LISTEN_QUEUE = 256
_numbers = itertools.count(1)


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
    tag: str = ""

    def wants(self, method: str) -> bool:
        kind = method.split("/")[1]
        return {"tools": self.tools, "prompts": self.prompts, "resources": self.resources}.get(kind, False)

    def put(self, method: str, params: dict[str, Any] | None = None) -> None:
        """Queue a notification tagged with the subscription id; a listener that cannot keep up is
        closed rather than allowed to grow without bound."""
        body = dict(params or {})
        body["_meta"] = {**body.get("_meta", {}), mcp.META_SUBSCRIPTION_ID: self.id}
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


class ListenStreams:
    """Opens and closes listen streams; the fan-out fills their outboxes."""

    def __init__(self, *, catalog: CatalogCache, fanout: Fanout) -> None:
        self.catalog = catalog
        self.fanout = fanout

    async def open(self, message: dict[str, Any], session: Session) -> Listener:
        """Open a stream for the request ``message`` (``session``: the caller, from its envelope); its
        first queued message is the acknowledgement. Call ``close`` when the stream ends."""
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
        snapshot = await self.catalog.get()
        view = snapshot.view(session.server)
        if view is None:
            raise JsonRpcError(
                jsonrpc.INVALID_PARAMS, f"No enabled virtual server named {session.server!r}.", http_status=404
            )
        listener = Listener(
            id=message["id"],
            username=session.username,
            server=session.server,
            tools=wanted.get("toolsListChanged") is True,
            prompts=wanted.get("promptsListChanged") is True,
            resources=wanted.get("resourcesListChanged") is True,
            uris=frozenset(),
            queue=asyncio.Queue(maxsize=LISTEN_QUEUE),
            upstream_keys=[],
            tag=f"listen:{next(_numbers)}",
        )
        ex = Exchange(session=session, snapshot=snapshot, view=view, emit=discard, modern=True)
        followed = []
        for uri in dict.fromkeys(uris):
            origin = resource_origin(view, uri)
            if origin is None:
                continue
            gateway, upstream_uri = origin
            if gateway is not None:
                try:
                    await self.fanout.follow(ex, gateway, upstream_uri, listener.tag)
                except JsonRpcError as exc:
                    logger.info("listen: upstream %s refused to subscribe to %s: %s", gateway, uri, exc.message)
                    continue
                listener.upstream_keys.append((gateway, upstream_uri))
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
        listener.put(mcp.SUBSCRIPTIONS_ACKNOWLEDGED, {"notifications": honoured})
        self.fanout.listeners.add(listener)
        return listener

    async def close(self, listener: Listener) -> None:
        """The listen stream ended: drop it, and the upstream subscriptions only it needed."""
        self.fanout.listeners.discard(listener)
        for gateway, upstream_uri in listener.upstream_keys:
            try:
                snapshot = await self.catalog.get()
                view = snapshot.view(listener.server)
                session = Session("", listener.username, frozenset(), listener.server, mcp.LATEST_MODERN, {}, {})
                ex = None if view is None else Exchange(session, snapshot, view, discard, modern=True)
                await self.fanout.unfollow(ex, gateway, upstream_uri, listener.tag)
            except Exception:
                logger.info("listen: unsubscribing %s from upstream %s failed", upstream_uri, gateway, exc_info=True)
