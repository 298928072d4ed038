"""Registering upstream MCP servers and reading their catalogs.

``gateway_add`` connects first and stores nothing when the upstream cannot be reached or answers
garbage; ``read_upstream`` reads an upstream's lists (with the clients in ``transports``). What is read
is written by the registry's ``registry.catalog_sync.gateway_catalog_apply`` (new entries added,
changed ones updated, vanished ones removed, changed tool definitions held for review, a sync run
recorded), so federation writes no catalog row itself. Later reads are ``federation.sync.gateway_sync``;
``gateway_refresh`` is its older name, kept for its callers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from federation.errors import describe_failure
from registry import catalog_sync
from registry import services as registry_services
from registry.catalog_sync import CatalogDiff
from registry.choices import DetectedEra, SyncTrigger
from registry.exceptions import InvalidInput
from registry.models import Gateway, SyncRun
from transports.protocol.upstream import create_client
from transports.protocol.upstream.base import (
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    describe_server,
)
from transports.protocol.upstream_auth import OAUTH_CLIENT, UpstreamAuth
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
        "per_user_credentials": gateway.per_user_credentials,
        "oauth_token_url": gateway.oauth_token_url,
        "oauth_client_id": gateway.oauth_client_id,
        "oauth_scopes": gateway.oauth_scopes,
    }


async def own_client(row: dict[str, Any], timeout: float, *, connect_timeout: float | None = None) -> Any:
    """A client of its own for the gateway's upstream (a sync or a health check outside the pool), with the
    gateway's own credentials: static ones from the row, or an OAuth client-credentials token fetched now.
    A per-user gateway is reached with no user's credentials (what it offers everyone, if anything)."""
    headers = None
    if row.get("auth_type") == OAUTH_CLIENT and not row.get("per_user_credentials"):
        auth = UpstreamAuth()
        try:
            headers = await auth.headers(row, None)
        finally:
            await auth.aclose()
    elif row.get("per_user_credentials"):
        headers = {}
    config = config_from_row(row, request_timeout=timeout, headers=headers)
    if connect_timeout is not None:
        config = dataclasses.replace(config, connect_timeout=connect_timeout)
    return create_client(config)


async def _read_upstream(row: dict[str, Any], timeout: float, pool: UpstreamPool | None = None) -> UpstreamCatalog:
    """The upstream's lists. With ``pool``: through its connected client for the upstream (after a
    list_changed, the connection that announced it: no new connection, handshake or child process, so
    the catalog, and the clients listening, learn of the change sooner); else a client of its own."""
    if pool is not None:
        client = await pool.get(row["name"], row)
    else:
        client = await own_client(row, timeout)
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
    with the reason when it fails (the original failure is its ``__cause__``)."""
    try:
        return async_to_sync(_read_upstream)(_row(gateway), timeout, pool)
    except UpstreamTimeout as exc:
        raise InvalidInput(f"Upstream {gateway.name!r} did not answer within {timeout:g} s.") from exc
    except UpstreamUnavailable as exc:  # a sentence ("connection refused by host:port"), not the library's text
        reason = describe_failure(exc, timeout=timeout).rstrip(".")
        raise InvalidInput(f"Cannot reach upstream {gateway.name!r}: {reason}.") from exc
    except UpstreamError as exc:
        raise InvalidInput(f"Upstream {gateway.name!r} answered an error: {exc.message} (code {exc.code}).") from exc
    except (OSError, ValueError, TimeoutError) as exc:  # below the clients: sockets, TLS, garbage
        raise InvalidInput(f"Cannot read upstream {gateway.name!r}: {describe_failure(exc, timeout=timeout)}") from exc


def catalog_apply(gateway: Gateway, upstream: UpstreamCatalog, *, trigger: str, started_at: Any) -> SyncRun:
    """Write what was read from the gateway's upstream into the catalog (a sync run, one transaction)."""
    info = upstream.description()
    return catalog_sync.gateway_catalog_apply(
        gateway=gateway,
        tools=upstream.tools,
        resources=upstream.resources,
        templates=upstream.templates,
        prompts=upstream.prompts,
        detected_era=upstream.era,
        protocol_version=str(info["protocol_version"] or ""),
        server_info=info["server_info"],
        capabilities=info["capabilities"],
        trigger=trigger,
        started_at=started_at,
    )


def gateway_add(*, data: dict[str, Any], timeout: float | None = None) -> tuple[Gateway, CatalogDiff]:
    """Register an upstream: validate, connect and read its catalog, then store it all at once (the
    first sync run, trigger "change")."""
    timeout = settings.GATEWAY_SYNC_TIMEOUT if timeout is None else timeout
    probe = registry_services.entry_validate(Gateway, data=data)  # entry_create's errors, nothing stored
    started = timezone.now()
    upstream = read_upstream(probe, timeout=timeout)
    with transaction.atomic():
        # gateway_saved is not sent: this is the sync it would ask for (it would read the upstream twice).
        gateway = registry_services.entry_create(Gateway, data=data, gateway_saved=False)
        run = catalog_apply(gateway, upstream, trigger=SyncTrigger.CHANGE, started_at=started)
    gateway.refresh_from_db()
    return gateway, CatalogDiff.from_run(run)


def gateway_refresh(*, gateway: Gateway, timeout: float | None = None, pool: UpstreamPool | None = None) -> CatalogDiff:
    """Re-read an upstream's catalog now (``federation.sync.gateway_sync``, trigger manual) and report
    what changed; InvalidInput with the reason when it fails (recorded as a failed sync run)."""
    from federation.sync import gateway_sync

    return CatalogDiff.from_run(gateway_sync(gateway=gateway, pool=pool, timeout=timeout))
