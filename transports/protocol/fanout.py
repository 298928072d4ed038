"""Fan-out of what changes for many clients at once: catalog list changes, resource updates, and the
upstream subscriptions that feed them.

A catalog change (a new snapshot) becomes `notifications/*/list_changed` for each session and listen
stream whose view changed, and `notifications/resources/updated` for changed resources they follow.
An upstream's `resources/updated` reaches every session and listen stream that follows the resource;
its list_changed makes federation re-read it (``hooks.upstream_lists_changed``), and the catalog change
that follows is announced as above. One upstream subscription serves every follower of a resource.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from transports.protocol import hooks, jsonrpc
from transports.protocol import vocabulary as mcp
from transports.protocol.catalog import CatalogCache, Snapshot, View
from transports.protocol.exchange import Exchange
from transports.protocol.relay import UpstreamRelay
from transports.protocol.sessions import Session, SessionStore
from transports.protocol.shared_sessions import RedisSessionStore

if TYPE_CHECKING:
    from transports.protocol.listen import Listener

logger = logging.getLogger(__name__)

REFRESH_DEBOUNCE = 0.03  # notifications of one change (from each connection to the upstream): one refresh
SUBSCRIPTION_SWEEP_SECONDS = 30.0  # how often upstream subscriptions are checked for expired sessions

SubscriptionKey = tuple[str, str]  # (gateway, the upstream's URI)


def list_changes(old: View, new: View) -> list[str]:
    """The list_changed notifications that tell a client of ``old`` about ``new``."""

    def wires(view: View, kind: str) -> list[dict[str, Any]]:
        return [entry.wire for entry in getattr(view, kind)]

    methods = [
        f"notifications/{kind}/list_changed" for kind in ("tools", "prompts") if wires(old, kind) != wires(new, kind)
    ]
    if wires(old, "resources") != wires(new, "resources") or wires(old, "templates") != wires(new, "templates"):
        methods.append("notifications/resources/list_changed")
    return methods


def resource_origin(view: View, uri: str) -> tuple[str | None, str] | None:
    """(gateway or None for a local resource, the upstream's URI), or None when not in the view."""
    resource = view.resource_by_uri.get(uri)
    if resource is not None:
        return resource.gateway, resource.upstream_uri
    template = view.template_for(uri)
    if template is not None:
        return template.gateway, uri
    return None


def _changed(old: View, new: View, uri: str) -> bool:
    before, after = old.resource_by_uri.get(uri), new.resource_by_uri.get(uri)
    return before is not None and after is not None and (before.text, before.blob) != (after.text, after.blob)


# Gateway row fields that say nothing about what the upstream answers (health checks change them often).
_VOLATILE_ROW_FIELDS = frozenset({"health", "last_error", "priority", "start_at_boot", "redundancy_group"})


def changed_gateways(old: Snapshot, new: Snapshot) -> list[str]:
    """Gateways whose cached answers a catalog change makes stale: those added, removed, or whose
    connection settings, resources or resource templates changed (a sync that found them different)."""

    def state(snapshot: Snapshot) -> dict[str, Any]:
        rows = {
            name: {k: v for k, v in row.items() if k not in _VOLATILE_ROW_FIELDS}
            for name, row in snapshot.upstreams.items()
        }
        entries: dict[str | None, list[Any]] = {}
        for resource in snapshot.catalog.resources:
            entries.setdefault(resource.gateway, []).append((resource.upstream_uri, resource.wire))
        for template in snapshot.catalog.templates:
            entries.setdefault(template.gateway, []).append((template.uri_template, template.wire))
        return {name: (rows.get(name), entries.get(name)) for name in {*rows, *entries} if name is not None}

    before, after = state(old), state(new)
    return sorted(name for name in {*before, *after} if before.get(name) != after.get(name))


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("sending notifications failed", exc_info=task.exception())


class Fanout:
    """Delivers changes to every session and listen stream they concern."""

    def __init__(self, *, catalog: CatalogCache, sessions: SessionStore | RedisSessionStore) -> None:
        self.catalog = catalog
        self.sessions = sessions
        self.relay: UpstreamRelay | None = None  # set by the core once the relay exists
        self.listeners: set[Listener] = set()
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        self._refresh_again: set[str] = set()  # upstreams that announced a change while being refreshed
        # (gateway, upstream URI) -> who follows it: session ids and "listen:<n>" tags.
        self._followers: dict[SubscriptionKey, set[str]] = {}
        # Sessions that end (here, on another replica, or by expiry) release their upstream subscriptions;
        # while any session follows one, expired ones are looked for every ``subscription_sweep`` seconds.
        self.subscription_sweep = SUBSCRIPTION_SWEEP_SECONDS
        self._sweeper: asyncio.Task[None] | None = None
        catalog.on_change = self.catalog_changed
        sessions.on_end = self.session_ended

    async def push(self, session: Session, message: dict[str, Any]) -> None:
        """Log a message on the session's standalone stream; open GET connections deliver it (on any
        replica), and a client that reconnects with Last-Event-ID gets what it missed (up to the
        log's bound)."""
        await self.sessions.standalone(session).append(message)

    # -- catalog changes ------------------------------------------------------------------------

    def catalog_changed(self, previous: Snapshot, current: Snapshot) -> None:
        cache = self.relay.cache if self.relay is not None else None
        if cache is not None:
            changed = changed_gateways(previous, current)
            if changed:
                task = asyncio.ensure_future(cache.invalidate_gateways(changed))
                task.add_done_callback(_log_failure)
        task = asyncio.ensure_future(self.announce(previous, current))
        task.add_done_callback(_log_failure)

    async def announce(self, previous: Snapshot, current: Snapshot) -> None:
        """list_changed for each session whose view changed; resources/updated for changed subscribed
        resources. Each endpoint's view is compared once, however many sessions use it. With shared
        sessions every replica sees the change: the one that claims a session's notice sends it."""
        changed: dict[str | None, list[str] | None] = {}

        def changes_of(server: str | None) -> list[str] | None:
            if server not in changed:
                old, new = previous.view(server), current.view(server)
                changed[server] = None if old is None or new is None else list_changes(old, new)
            return changed[server]

        for listener in list(self.listeners):
            for method in changes_of(listener.server) or ():
                if listener.wants(method):
                    listener.put(method)
            old_view, new_view = previous.view(listener.server), current.view(listener.server)
            if old_view is not None and new_view is not None:
                for uri in listener.uris:
                    if _changed(old_view, new_view, uri):
                        listener.put(mcp.RESOURCES_UPDATED, {"uri": uri})
        for session in self.sessions.local():
            methods = changes_of(session.server)
            if methods is None:
                continue
            old, new = previous.view(session.server), current.view(session.server)
            notices = [jsonrpc.notification(method) for method in methods]
            for uri in session.subscriptions:
                if _changed(old, new, uri):  # type: ignore[arg-type]
                    notices.append(jsonrpc.notification(mcp.RESOURCES_UPDATED, {"uri": uri}))
            if notices and await self.sessions.claim(session, f"v{current.version}"):
                for notice in notices:
                    await self.push(session, notice)

    # -- from upstreams -------------------------------------------------------------------------

    async def upstream_message(self, gateway: str, message: dict[str, Any]) -> dict[str, Any] | None:
        """Messages from an upstream that belong to no call (or concern every client)."""
        method = message.get("method")
        if "id" in message:
            return {
                "error": {"code": jsonrpc.METHOD_NOT_FOUND, "message": "No client call is waiting for this request."}
            }
        cache = self.relay.cache if self.relay is not None else None
        if method == mcp.RESOURCES_UPDATED:
            upstream_uri = (message.get("params") or {}).get("uri")
            if cache is not None and isinstance(upstream_uri, str):  # before anyone hears of it and reads again
                await cache.invalidate_uri(gateway, upstream_uri)
            snapshot = await self.catalog.get()
            uris = {
                r.uri for r in snapshot.catalog.resources if r.gateway == gateway and r.upstream_uri == upstream_uri
            }
            uris.add(str(upstream_uri))
            # Every session this replica knows with a subscription: the upstream subscription is held by
            # the replica that took the resources/subscribe, whoever holds the session's stream now.
            for session in self.sessions.known():
                for uri in session.subscriptions & uris:
                    await self.push(session, jsonrpc.notification(mcp.RESOURCES_UPDATED, {"uri": uri}))
            for listener in list(self.listeners):
                for uri in listener.uris & uris:
                    listener.put(mcp.RESOURCES_UPDATED, {"uri": uri})
        elif method in mcp.LIST_CHANGED:
            if cache is not None:
                await cache.invalidate_gateway(gateway)
            self.upstream_lists_changed(gateway)
        return None

    def upstream_lists_changed(self, gateway: str) -> None:
        """Re-read the upstream's catalog (one refresh at a time); the catalog change that follows
        sends our own list_changed to the sessions that see a difference."""
        logger.info("upstream %s changed its lists; refreshing", gateway)
        if self.relay is not None:
            self.relay.forget_offered(gateway)
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
                await hooks.upstream_lists_changed.send(gateway, self.relay.pool if self.relay else None)
                if gateway not in self._refresh_again:
                    return

        self._refreshing[gateway] = asyncio.ensure_future(refresh())

    # -- upstream subscriptions -----------------------------------------------------------------

    async def follow(self, ex: Exchange, gateway: str, upstream_uri: str, follower: str) -> None:
        """``follower`` wants the upstream's updates of ``upstream_uri``: subscribe upstream for the first
        one (raises JsonRpcError when the upstream refuses)."""
        assert self.relay is not None
        key = (gateway, upstream_uri)
        followers = self._followers.setdefault(key, set())
        if not followers:
            try:
                await self.relay.request(ex, gateway, mcp.RESOURCES_SUBSCRIBE, {"uri": upstream_uri}, shared=True)
            except BaseException:
                if not followers:
                    self._followers.pop(key, None)
                raise
        followers.add(follower)
        if not follower.startswith("listen:"):  # a listen stream releases its share when it closes
            self._watch_followers()

    async def unfollow(self, ex: Exchange | None, gateway: str, upstream_uri: str, follower: str) -> None:
        """``follower`` no longer wants the updates: unsubscribe upstream after the last one (``ex``
        None: the endpoint is gone, only forget)."""
        assert self.relay is not None
        key = (gateway, upstream_uri)
        followers = self._followers.get(key)
        if followers is None:
            return
        followers.discard(follower)
        if followers:
            return
        self._followers.pop(key, None)
        if ex is not None:
            await self.relay.request(ex, gateway, mcp.RESOURCES_UNSUBSCRIBE, {"uri": upstream_uri}, shared=True)

    def session_ended(self, session_id: str) -> None:
        """A session ended (deleted, closed, expired; on this replica or another, as the session store
        says): its upstream subscriptions are released, and those nobody else follows ended upstream."""
        if any(session_id in followers for followers in self._followers.values()):
            task = asyncio.ensure_future(self.release(session_id))
            task.add_done_callback(_log_failure)

    async def release(self, follower: str) -> None:
        """Drop ``follower`` from every upstream subscription; unsubscribe those nobody follows now."""
        released = []
        for key, followers in list(self._followers.items()):
            if follower in followers:
                followers.discard(follower)
                if not followers:
                    del self._followers[key]
                    released.append(key)
        if not released:
            return
        snapshot = await self.catalog.get()
        for gateway, uri in released:
            await self._unsubscribe(gateway, uri, snapshot.upstreams.get(gateway))

    async def _unsubscribe(self, gateway: str, uri: str, row: dict[str, Any] | None) -> None:
        """End the gateway's own upstream subscription (best effort: a failure is logged)."""
        assert self.relay is not None
        pool = self.relay.pool
        if row is None and not pool.has_override(gateway):
            return  # the upstream is gone from the catalog: its connection goes with it
        try:
            client = await pool.get(gateway, row or {})
            await client.request(mcp.RESOURCES_UNSUBSCRIBE, {"uri": uri}, timeout=10.0)
        except Exception as exc:  # the upstream keeps a subscription nobody reads (logged)
            logger.info("unsubscribing %s from upstream %s failed: %s", uri, gateway, exc)

    def _session_followers(self) -> set[str]:
        return {f for followers in self._followers.values() for f in followers if not f.startswith("listen:")}

    def _watch_followers(self) -> None:
        """Look now and then for followed sessions that expired without anyone noticing (an expired
        session sends no event), while there are any."""
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.ensure_future(self._sweep_followers())
            self._sweeper.add_done_callback(_log_failure)

    async def _sweep_followers(self) -> None:
        while followers := self._session_followers():
            await asyncio.sleep(self.subscription_sweep)
            for session_id in followers:
                try:
                    gone = not await self.sessions.exists(session_id)
                except Exception:
                    logger.warning("cannot tell whether session %s still exists", session_id, exc_info=True)
                    continue
                if gone:
                    await self.release(session_id)
