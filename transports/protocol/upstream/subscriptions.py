"""The listen stream of a 2026-07-28 session (basic/patterns/subscriptions): one `subscriptions/listen`
request per connection, for the list changes the upstream announces and the subscribed resources. Its
notifications go to the notification handler; `resources/subscribe` and `resources/unsubscribe` reopen
it with the new set of URIs (the new stream first, then the old one is closed); it is reopened with a
growing pause when it ends or breaks. A mixin of `ModernSession` (stateless.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from transports.protocol.upstream.base import UpstreamConfig, UpstreamError, UpstreamUnavailable
from transports.protocol.vocabulary import (
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    SUBSCRIPTIONS_ACKNOWLEDGED,
    SUBSCRIPTIONS_LISTEN,
)

if TYPE_CHECKING:
    from transports.protocol.upstream.stateless import Engine

logger = logging.getLogger("transports.protocol.upstream")

# Capabilities whose `listChanged` the listen stream asks for, with the filter flag of each.
LISTEN_FILTERS = (
    ("tools", "toolsListChanged"),
    ("prompts", "promptsListChanged"),
    ("resources", "resourcesListChanged"),
)
_LISTEN_BACKOFF = (1.0, 30.0)


class ListenStream:
    """Resource subscriptions and list changes through `subscriptions/listen`; part of `ModernSession`."""

    if TYPE_CHECKING:  # provided by ModernSession
        client: Engine
        config: UpstreamConfig
        version: str
        discover: dict[str, Any]
        subscriptions: set[str]
        granted: dict[str, Any] | None
        _listener: asyncio.Task[None] | None
        _listen_lock: asyncio.Lock
        _listen_supported: bool
        _closed: bool

        def envelope(self, params: Mapping[str, Any] | None, *, with_log_level: bool = True) -> dict[str, Any]: ...
        def _remaining(self, deadline: float) -> float: ...

    def _capability(self, kind: str) -> Mapping[str, Any]:
        capabilities = self.discover.get("capabilities")
        declared = capabilities.get(kind) if isinstance(capabilities, Mapping) else None
        return declared if isinstance(declared, Mapping) else {}

    def _filter(self) -> dict[str, Any]:
        """The `subscriptions/listen` filter: the list changes the upstream can announce, and the
        subscribed resources."""
        wanted: dict[str, Any] = {}
        for kind, flag in LISTEN_FILTERS:
            if self._capability(kind).get("listChanged"):
                wanted[flag] = True
        if self.subscriptions:
            wanted["resourceSubscriptions"] = sorted(self.subscriptions)
        return wanted

    def _can_subscribe(self) -> bool:
        return bool(self._capability("resources").get("subscribe"))

    async def _subscribe(self, params: Mapping[str, Any] | None, deadline: float) -> dict[str, Any]:
        uri = (params or {}).get("uri")
        if not isinstance(uri, str):
            raise UpstreamError(INVALID_PARAMS, "Invalid params: resources/subscribe needs a uri")
        if not self._can_subscribe():
            raise UpstreamError(METHOD_NOT_FOUND, "Method not found: the upstream offers no resource subscriptions")
        async with self._listen_lock:
            if uri in self.subscriptions:
                return {}
            self.subscriptions.add(uri)
            try:
                granted = await self._replace_listener(wait=self._remaining(deadline), strict=True)
            except BaseException:
                self.subscriptions.discard(uri)
                raise
            accepted = granted.get("resourceSubscriptions") if granted else None
            if not isinstance(accepted, list) or uri not in accepted:
                self.subscriptions.discard(uri)
                raise UpstreamError(INVALID_PARAMS, f"The upstream did not accept a subscription to {uri}")
        return {}

    async def _unsubscribe(self, params: Mapping[str, Any] | None, deadline: float) -> dict[str, Any]:
        uri = (params or {}).get("uri")
        if not isinstance(uri, str):
            raise UpstreamError(INVALID_PARAMS, "Invalid params: resources/unsubscribe needs a uri")
        async with self._listen_lock:
            if uri not in self.subscriptions:
                return {}
            self.subscriptions.discard(uri)
            try:
                await self._replace_listener(wait=self._remaining(deadline), strict=True)
            except (UpstreamError, UpstreamUnavailable, TimeoutError) as exc:
                # The old stream stays: the upstream may go on announcing the resource for a while.
                logger.info("%s: reopening the listen stream without %s failed: %s", self.config.name, uri, exc)
        return {}

    async def _replace_listener(self, *, wait: float, strict: bool) -> dict[str, Any] | None:
        """Open a listen stream for the current filter and, once the upstream has acknowledged it,
        close the previous one (so nothing falls between the two). With `strict`, a stream that is not
        acknowledged within `wait` is abandoned and the error raised; otherwise it keeps trying."""
        wanted = self._filter()
        old = self._listener
        if not wanted:
            self._listener = None
            await self.client.settle([old])
            return {}
        if not self._listen_supported:
            if strict:
                raise UpstreamError(METHOD_NOT_FOUND, "Method not found: the upstream has no subscriptions/listen")
            return None
        acknowledged: asyncio.Future[dict[str, Any] | BaseException] = asyncio.get_running_loop().create_future()
        task = self.client.spawn(self._listen(wanted, acknowledged))
        await asyncio.wait([acknowledged], timeout=max(wait, 0.0))
        outcome = acknowledged.result() if acknowledged.done() else None
        if isinstance(outcome, dict):
            self._listener = task
            if old is not None and old is not task:
                await self.client.settle([old])
            return outcome
        if strict:
            await self.client.settle([task])
            if isinstance(outcome, BaseException):
                raise outcome
            raise UpstreamUnavailable(f"{self.config.name}: subscriptions/listen was not acknowledged in time")
        self._listener = task
        await self.client.settle([old])
        return None

    async def _listen(
        self, wanted: dict[str, Any], acknowledged: asyncio.Future[dict[str, Any] | BaseException]
    ) -> None:
        """Keep one `subscriptions/listen` request open (basic/patterns/subscriptions): reopen it when it
        ends or breaks, with a growing pause, until the client closes or reconnects."""
        client = self.client
        generation = client.generation
        failures = 0

        async def on_message(message: dict[str, Any]) -> dict[str, Any] | None:
            nonlocal failures
            if message.get("method") == SUBSCRIPTIONS_ACKNOWLEDGED:
                params = message.get("params")
                granted = params.get("notifications") if isinstance(params, Mapping) else None
                self.granted = dict(granted) if isinstance(granted, Mapping) else {}
                failures = 0
                if not acknowledged.done():
                    acknowledged.set_result(self.granted)
                return None
            handler = client.notification_handler  # nothing on this stream belongs to a call
            return await handler(message) if handler is not None else None

        while not self._closed and client.connected and client.generation == generation:
            try:
                await client.call(
                    SUBSCRIPTIONS_LISTEN,
                    self.envelope({"notifications": wanted}, with_log_level=False),
                    timeout=None,
                    on_message=on_message,
                    modern=self.version,
                    background=True,
                )
                logger.debug("%s: the upstream ended the listen stream", self.config.name)
            except UpstreamError as exc:
                if not acknowledged.done():
                    acknowledged.set_result(exc)
                if exc.code == METHOD_NOT_FOUND:
                    logger.info("%s: no subscriptions/listen (%s)", self.config.name, exc)
                    self._listen_supported = False
                    return
                logger.warning("%s: subscriptions/listen refused: %s", self.config.name, exc)
            except UpstreamUnavailable as exc:
                if not acknowledged.done():
                    acknowledged.set_result(exc)
                logger.debug("%s: listen stream broke: %s", self.config.name, exc)
            failures += 1
            first, cap = _LISTEN_BACKOFF
            await asyncio.sleep(min(first * 2 ** min(failures - 1, 6), cap))
