"""The pool of upstream MCP clients: one connected client per enabled gateway, shared by every
client session, rebuilt when the gateway's settings change, reconnected when it drops."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from transports.protocol.upstream.base import UpstreamClient, UpstreamConfig, UpstreamUnavailable

logger = logging.getLogger(__name__)

NotificationSink = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any] | None]]


FULL_CAPABILITIES: dict[str, Any] = {
    "sampling": {},
    "elicitation": {"form": {}, "url": {}},
    "roots": {"listChanged": True},
}


def capability_profile(declared: dict[str, Any]) -> dict[str, Any]:
    """What the gateway declares upstream on behalf of a client that declared ``declared``: the
    client features it can really answer (sampling, elicitation modes, roots), nothing more."""
    profile: dict[str, Any] = {}
    sampling = declared.get("sampling")
    if sampling is not None:
        profile["sampling"] = {"tools": {}} if isinstance(sampling, dict) and "tools" in sampling else {}
    elicitation = declared.get("elicitation")
    if elicitation is not None:
        modes: dict[str, Any] = {
            mode: {} for mode in ("form", "url") if isinstance(elicitation, dict) and mode in elicitation
        }
        profile["elicitation"] = modes or {"form": {}}  # an empty object means form mode
    if declared.get("roots") is not None:
        profile["roots"] = {"listChanged": True}
    return profile


def config_from_row(row: dict[str, Any], *, request_timeout: float) -> UpstreamConfig:
    """An UpstreamConfig from a gateway row of the catalog snapshot (credentials become headers)."""
    credentials = row.get("credentials") or {}
    headers: dict[str, str] = {}
    if row["auth_type"] == "basic" and credentials:
        pair = f"{credentials['username']}:{credentials['password']}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    elif row["auth_type"] == "bearer" and credentials:
        headers["Authorization"] = f"Bearer {credentials['token']}"
    elif row["auth_type"] == "headers" and credentials:
        headers.update(credentials.get("headers", {}))
    return UpstreamConfig(
        name=row["name"],
        transport=row["transport"],
        era=row.get("era") or "auto",
        url=row["url"],
        headers=headers,
        command=row["command"],
        args=tuple(row["args"]),
        env=dict(row["env"]),
        cwd=row["cwd"],
        verify_tls=row["verify_tls"],
        ca_bundle=row["ca_bundle"],
        request_timeout=request_timeout,
        client_capabilities=FULL_CAPABILITIES,
    )


class UpstreamPool:
    """Connected upstream clients by gateway name."""

    def __init__(self, *, request_timeout: float = 60.0) -> None:
        self.request_timeout = request_timeout
        self._clients: dict[str, tuple[UpstreamConfig, UpstreamClient]] = {}
        self._overrides: dict[str, UpstreamClient] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.on_notification: NotificationSink | None = None

    def override(self, name: str, client: UpstreamClient) -> None:
        """Use this client for the gateway ``name`` (tests: in-memory upstreams)."""
        self._overrides[name] = client

    def has_override(self, name: str) -> bool:
        return name in self._overrides

    async def get(self, name: str, row: dict[str, Any], capabilities: dict[str, Any] | None = None) -> UpstreamClient:
        """A connected client for the gateway, connecting (or reconnecting) when needed.

        ``capabilities`` (a ``capability_profile``) picks the upstream session that declares exactly
        those client features, so an upstream that adapts to its client sees what the real client can
        do; None is the session that declares them all (catalog reads, subscriptions)."""
        if name in self._overrides:
            return self._overrides[name]
        config = config_from_row(row, request_timeout=self.request_timeout)
        key = name
        if capabilities is not None and capabilities != FULL_CAPABILITIES:
            config = dataclasses.replace(config, client_capabilities=capabilities)
            key = f"{name}\x00{orjson.dumps(capabilities, option=orjson.OPT_SORT_KEYS).decode()}"
        current = self._clients.get(key)
        if current is not None and current[0] == config and current[1].connected:
            return current[1]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            current = self._clients.get(key)
            if current is not None and current[0] == config and current[1].connected:
                return current[1]
            if current is not None:
                await self._close(current[1])
            from transports.protocol.upstream import create_client

            client = create_client(config)
            client.set_notification_handler(self._sink(name))
            try:
                await client.connect()
            except UpstreamUnavailable:
                await self._close(client)
                raise
            self._clients[key] = (config, client)
            return client

    def _sink(self, name: str) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]:
        async def handle(message: dict[str, Any]) -> dict[str, Any] | None:
            if self.on_notification is not None:
                return await self.on_notification(name, message)
            return None

        return handle

    async def _close(self, client: UpstreamClient) -> None:
        try:
            await client.aclose()
        except Exception:
            logger.debug("error closing upstream client", exc_info=True)

    async def aclose(self) -> None:
        for _, client in list(self._clients.values()):
            await self._close(client)
        self._clients.clear()
