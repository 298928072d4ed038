"""Registering upstream MCP servers and reading their catalogs into the registry.

``gateway_add`` connects first and stores nothing when the upstream cannot be reached or answers
garbage; ``gateway_refresh`` re-reads an upstream and brings its tools, resources, templates and
prompts up to date (new ones added, changed ones updated, vanished ones removed). Upstream names
are kept where they are free; a name already taken by another source gets the gateway's prefix,
kept within 64 characters with a short hash, and the upstream's own name is stored beside it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import async_to_sync
from django.db import transaction
from django.utils import timezone

from registry import events, services
from registry.choices import DetectedEra, Health, IntegrationType
from registry.exceptions import CatalogError, InvalidInput
from registry.models import Gateway, Prompt, Resource, ResourceTemplate, Tool
from transports.protocol.upstream import create_client
from transports.protocol.upstream.base import (
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    describe_server,
)
from transports.protocol.upstreams import UpstreamPool, config_from_row

MAX_PREFIXED = 64
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


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)  # upstream name -> catalog name
    skipped: list[str] = field(default_factory=list)  # entries the catalog could not take, with why

    def summary(self) -> str:
        text = f"{len(self.added)} added, {len(self.updated)} updated, {len(self.removed)} removed"
        return text + (f", {len(self.skipped)} skipped" if self.skipped else "")


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


def catalog_name(gateway: str, upstream: str, taken: set[str]) -> str:
    """The upstream's name if free, else '<gateway>_<name>' within 64 characters (a hash keeps it unique)."""
    if upstream not in taken:
        return upstream
    candidate = f"{gateway}_{upstream}"
    if len(candidate) > MAX_PREFIXED:
        digest = hashlib.sha256(f"{gateway}/{upstream}".encode()).hexdigest()[:8]
        candidate = f"{candidate[: MAX_PREFIXED - 9]}_{digest}"
    return candidate


def _clean_schema(schema: Any) -> dict[str, Any]:
    return (
        schema if isinstance(schema, dict) and schema.get("type") == "object" else {"type": "object", "properties": {}}
    )


@transaction.atomic
def _apply(gateway: Gateway, upstream: UpstreamCatalog) -> SyncReport:
    report = SyncReport()
    info = upstream.description()
    gateway.detected_era = upstream.era
    gateway.protocol_version = str(info["protocol_version"] or "")[:32]
    gateway.server_info = info["server_info"]
    gateway.capabilities = info["capabilities"]
    gateway.health, gateway.last_error, gateway.last_seen_at = Health.HEALTHY, "", timezone.now()
    gateway.save(
        update_fields=[
            "detected_era",
            "protocol_version",
            "server_info",
            "capabilities",
            "health",
            "last_error",
            "last_seen_at",
        ]
    )

    _sync_named(gateway, report, Tool, upstream.tools, _tool_fields, "tool", {"integration_type": IntegrationType.MCP})
    _sync_simple(gateway, report, Resource, "uri", upstream.resources, "uri", _resource_fields)
    _sync_simple(gateway, report, ResourceTemplate, "uri_template", upstream.templates, "uriTemplate", _template_fields)
    _sync_named(gateway, report, Prompt, upstream.prompts, _prompt_fields, "prompt")
    events.catalog_changed()
    return report


def _save(instance: Any, bucket: list[str], label: str) -> None:
    services._validated_save(instance)
    bucket.append(label)


def _tool_fields(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "title": str(item.get("title") or (item.get("annotations") or {}).get("title") or "")[:256],
        "description": str(item.get("description") or ""),
        "input_schema": _clean_schema(item.get("inputSchema")),
        "output_schema": item.get("outputSchema") if isinstance(item.get("outputSchema"), dict) else None,
        "annotations": item.get("annotations") if isinstance(item.get("annotations"), dict) else {},
    }


def _prompt_fields(item: dict[str, Any]) -> dict[str, Any]:
    arguments = [
        {k: v for k, v in arg.items() if k in ("name", "title", "description", "required") and v is not None}
        for arg in item.get("arguments") or []
        if isinstance(arg, dict) and isinstance(arg.get("name"), str)
    ]
    return {
        "title": str(item.get("title") or "")[:256],
        "description": str(item.get("description") or ""),
        "arguments": arguments,
    }


def _sync_named(
    gateway: Gateway,
    report: SyncReport,
    model: Any,
    items: list[dict[str, Any]],
    to_fields: Any,
    noun: str,
    extra: dict[str, Any] | None = None,
) -> None:
    """Tools and prompts: keyed by the upstream's name; a name another source holds gets a prefix.
    An entry the catalog cannot take (a bad name or schema) is skipped and reported, not fatal."""
    mine = {obj.original_name or obj.name: obj for obj in model.objects.filter(gateway=gateway)}
    taken = set(model.objects.exclude(gateway=gateway).values_list("name", flat=True))
    seen: set[str] = set()
    for item in items:
        name = item.get("name")
        if not isinstance(name, str) or name in seen:
            continue
        seen.add(name)
        fields = to_fields(item)
        existing = mine.get(name)
        try:
            if existing is None:
                catalog = catalog_name(gateway.name, name, taken)
                entry = model(name=catalog, gateway=gateway, original_name=name, **(extra or {}), **fields)
                _save(entry, report.added, f"{noun} {catalog}")
                taken.add(catalog)
                if catalog != name:
                    report.renamed[name] = catalog
            elif any(getattr(existing, k) != v for k, v in fields.items()):
                for key, value in fields.items():
                    setattr(existing, key, value)
                _save(existing, report.updated, f"{noun} {existing.name}")
        except CatalogError as exc:
            report.skipped.append(f"{noun} {name!r}: {exc.message}")
    for upstream_name, obj in mine.items():
        if upstream_name not in seen:
            obj.delete()
            report.removed.append(f"{noun} {obj.name}")


def _resource_fields(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": str(item.get("name") or item.get("uri"))[:256],
        "title": str(item.get("title") or "")[:256],
        "description": str(item.get("description") or ""),
        "mime_type": str(item.get("mimeType") or "")[:255],
        "annotations": item.get("annotations") if isinstance(item.get("annotations"), dict) else {},
    }


def _template_fields(item: dict[str, Any]) -> dict[str, Any]:
    return _resource_fields(item)


def _sync_simple(
    gateway: Gateway,
    report: SyncReport,
    model: Any,
    key: str,
    items: list[dict[str, Any]],
    wire_key: str,
    to_fields: Any,
) -> None:
    """Resources and templates keep the upstream's URI (a collision with another source is reported)."""
    mine = {getattr(obj, key): obj for obj in model.objects.filter(gateway=gateway)}
    seen: set[str] = set()
    noun = model._meta.verbose_name
    for item in items:
        value = item.get(wire_key)
        if not isinstance(value, str) or value in seen:
            continue
        seen.add(value)
        fields = to_fields(item)
        existing = mine.get(value)
        if existing is None:
            if model.objects.filter(**{key: value}).exists():
                report.skipped.append(f"{noun} {value!r}: another source already has it")
                continue
            extra = {"original_uri": value} if model is Resource else {}
            try:
                _save(model(gateway=gateway, **{key: value}, **fields, **extra), report.added, f"{noun} {value}")
            except CatalogError as exc:
                report.skipped.append(f"{noun} {value!r}: {exc.message}")
        elif any(getattr(existing, k) != v for k, v in fields.items()):
            for k, v in fields.items():
                setattr(existing, k, v)
            try:
                _save(existing, report.updated, f"{noun} {value}")
            except CatalogError as exc:
                report.skipped.append(f"{noun} {value!r}: {exc.message}")
    for value, obj in mine.items():
        if value not in seen:
            obj.delete()
            report.removed.append(f"{noun} {value}")


def gateway_add(*, data: dict[str, Any], timeout: float = 30.0) -> tuple[Gateway, SyncReport]:
    """Register an upstream: validate, connect and read its catalog, then store it all at once."""
    probe = Gateway()
    services._apply(probe, data)
    try:
        probe.full_clean()
    except Exception as exc:  # the same errors entry_create would raise, without touching the database
        raise services._domain_error(probe, exc) from None  # type: ignore[arg-type]
    upstream = read_upstream(probe, timeout=timeout)
    with transaction.atomic():
        gateway = services.entry_create(Gateway, data=data)
        report = _apply(gateway, upstream)
    return gateway, report


def gateway_refresh(*, gateway: Gateway, timeout: float = 30.0, pool: UpstreamPool | None = None) -> SyncReport:
    """Re-read an upstream's catalog; on failure record the gateway as unhealthy and raise."""
    try:
        upstream = read_upstream(gateway, timeout=timeout, pool=pool)
    except InvalidInput as exc:
        Gateway.objects.filter(pk=gateway.pk).update(health=Health.UNHEALTHY, last_error=exc.message[:2000])
        raise
    return _apply(gateway, upstream)


async def refresh_after_list_changed(gateway_name: str) -> None:
    """An upstream announced a list change: re-read it (the catalog change that follows notifies clients)."""
    from asgiref.sync import sync_to_async

    from transports.runtime import get_core

    pool = get_core().upstreams  # the connections of this process: one of them just announced the change

    def refresh() -> None:
        from django.db import connection

        try:
            gateway = Gateway.objects.filter(name=gateway_name, enabled=True).first()
            if gateway is not None:
                gateway_refresh(gateway=gateway, pool=pool)
        finally:
            connection.close()

    await sync_to_async(refresh, thread_sensitive=False)()
