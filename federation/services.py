"""Registering upstream MCP servers and reading their catalogs into the registry.

``gateway_add`` connects first and stores nothing when the upstream cannot be reached or answers
garbage; ``gateway_refresh`` re-reads an upstream and brings its tools, resources, templates and
prompts up to date. This module reads upstreams (with the clients in ``transports``); what is read
is written by the registry's public service ``gateway_catalog_replace`` (new entries added, changed
ones updated, vanished ones removed, names another source holds prefixed), so federation writes no
catalog row itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import async_to_sync
from django.db import transaction

from registry import services as registry_services
from registry.choices import DetectedEra
from registry.exceptions import InvalidInput
from registry.models import Gateway
from registry.services import CatalogDiff
from transports.protocol.upstream import create_client
from transports.protocol.upstream.base import (
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    describe_server,
)
from transports.protocol.upstream_pool import UpstreamPool, config_from_row

LIST_PAGES = 1000  # a bound on pages read per list, against an upstream that never stops paging


@dataclass
class UpstreamCatalog:
    """What an upstream reported about itself and its lists.

    `initialize` is what connecting returned: the InitializeResult of a session-era upstream, or the
    DiscoverResult of a 2026-07-28 one (`era` says which).
    """

    initialize: dict[str, Any]
    tools: list[dict[str, Any]] = field(default_factory=list)
    resources: list[dict[str, Any]] = field(default_factory=list)
    templates: list[dict[str, Any]] = field(default_factory=list)
    prompts: list[dict[str, Any]] = field(default_factory=list)
    era: str = DetectedEra.LEGACY

    def description(self) -> dict[str, Any]:
        """protocol_version, server_info, capabilities and instructions, whatever the era."""
        return describe_server(self.era, self.initialize)


def _row(gateway: Gateway) -> dict[str, Any]:
    return {
        "name": gateway.name,
        "transport": gateway.transport,
        "era": gateway.era,
        "url": gateway.url,
        "command": gateway.command,
        "args": list(gateway.args),
        "env": dict(gateway.env),
        "cwd": gateway.cwd or None,
        "auth_type": gateway.auth_type,
        "credentials": gateway.get_credentials(),
        "verify_tls": gateway.verify_tls,
        "ca_bundle": gateway.ca_bundle or None,
    }


async def _read_upstream(row: dict[str, Any], timeout: float, pool: UpstreamPool | None = None) -> UpstreamCatalog:
    """The upstream's lists. With ``pool``: through its connected client for the upstream (after a
    list_changed, the connection that announced it: no new connection, handshake or child process, so
    the catalog, and the clients listening, learn of the change sooner); else a client of its own."""
    if pool is not None:
        client = await pool.get(row["name"], row)
    else:
        client = create_client(config_from_row(row, request_timeout=timeout))
    try:
        connected = await client.connect()
        catalog = UpstreamCatalog(initialize=connected, era=client.era or DetectedEra.LEGACY)
        capabilities = client.server_capabilities

        async def read_all(method: str, key: str) -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = []
            cursor = None
            for _ in range(LIST_PAGES):
                result = await client.request(method, {"cursor": cursor} if cursor else {}, timeout=timeout)
                items += [item for item in result.get(key, []) if isinstance(item, dict)]
                cursor = result.get("nextCursor")
                if not cursor:
                    break
            return items

        if "tools" in capabilities:
            catalog.tools = await read_all("tools/list", "tools")
        if "resources" in capabilities:
            catalog.resources = await read_all("resources/list", "resources")
            catalog.templates = await read_all("resources/templates/list", "resourceTemplates")
        if "prompts" in capabilities:
            catalog.prompts = await read_all("prompts/list", "prompts")
        return catalog
    finally:
        if pool is None:
            await client.aclose()


def read_upstream(gateway: Gateway, *, timeout: float = 30.0, pool: UpstreamPool | None = None) -> UpstreamCatalog:
    """Connect to the gateway's upstream (or use ``pool``'s connection) and read its lists; InvalidInput
    with the reason when it fails."""
    try:
        return async_to_sync(_read_upstream)(_row(gateway), timeout, pool)
    except UpstreamTimeout:
        raise InvalidInput(f"Upstream {gateway.name!r} did not answer within {timeout:g} s.") from None
    except UpstreamUnavailable as exc:
        raise InvalidInput(f"Cannot reach upstream {gateway.name!r}: {exc}") from None
    except UpstreamError as exc:
        raise InvalidInput(f"Upstream {gateway.name!r} answered an error: {exc.message} (code {exc.code}).") from None


def _record(gateway: Gateway, upstream: UpstreamCatalog) -> CatalogDiff:
    info = upstream.description()
    return registry_services.gateway_catalog_replace(
        gateway=gateway,
        tools=upstream.tools,
        resources=upstream.resources,
        templates=upstream.templates,
        prompts=upstream.prompts,
        detected_era=upstream.era,
        protocol_version=str(info["protocol_version"] or ""),
        server_info=info["server_info"],
        capabilities=info["capabilities"],
    )


def gateway_add(*, data: dict[str, Any], timeout: float = 30.0) -> tuple[Gateway, CatalogDiff]:
    """Register an upstream: validate, connect and read its catalog, then store it all at once."""
    probe = registry_services.entry_validate(Gateway, data=data)  # entry_create's errors, nothing stored
    upstream = read_upstream(probe, timeout=timeout)
    with transaction.atomic():
        gateway = registry_services.entry_create(Gateway, data=data)
        report = _record(gateway, upstream)
    return gateway, report


def gateway_refresh(*, gateway: Gateway, timeout: float = 30.0, pool: UpstreamPool | None = None) -> CatalogDiff:
    """Re-read an upstream's catalog; on failure record the gateway as unhealthy and raise."""
    try:
        upstream = read_upstream(gateway, timeout=timeout, pool=pool)
    except InvalidInput as exc:
        registry_services.gateway_failure_record(gateway=gateway, error=exc.message)
        raise
    return _record(gateway, upstream)


async def refresh_after_list_changed(gateway_name: str, pool: UpstreamPool | None = None) -> None:
    """An upstream announced a list change: re-read it (the catalog change that follows notifies clients).
    ``pool``: the core's connections, one of which just announced the change (read through it: no new
    connection, handshake or child process)."""
    from asgiref.sync import sync_to_async

    def refresh() -> None:
        from django.db import connection

        try:
            gateway = Gateway.objects.filter(name=gateway_name, enabled=True).first()
            if gateway is not None:
                gateway_refresh(gateway=gateway, pool=pool)
        finally:
            connection.close()

    await sync_to_async(refresh, thread_sensitive=False)()
