"""Reads of the catalog (the REST API's lists and lookups; the MCP hot path uses a snapshot)."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from django.db import models
from django.db.models import F, Func, OuterRef, Q, QuerySet, Subquery

from registry.choices import Health
from registry.exceptions import NotFound
from registry.models import Gateway, Prompt, Resource, ResourceTemplate, Tool, VirtualServer

M = TypeVar("M", bound=models.Model)

# Which fields the free-text filter `q` searches, per model.
SEARCH_FIELDS: dict[type[models.Model], tuple[str, ...]] = {
    Gateway: ("name", "description", "url", "command"),
    Tool: ("name", "title", "description"),
    Resource: ("uri", "name", "title", "description"),
    ResourceTemplate: ("uri_template", "name", "title", "description"),
    Prompt: ("name", "title", "description"),
    VirtualServer: ("name", "title", "description"),
}

_RELATED: dict[type[models.Model], tuple[list[str], list[str]]] = {
    Tool: (["gateway"], []),
    Resource: (["gateway"], []),
    ResourceTemplate: (["gateway"], []),
    Prompt: (["gateway"], []),
    VirtualServer: ([], ["tools", "resources", "resource_templates", "prompts"]),
}


def entry_queryset[M: models.Model](model: type[M]) -> QuerySet[M]:
    """All entries of a model with what their API representation needs, loaded up front."""
    select, prefetch = _RELATED.get(model, ([], []))
    qs = model._default_manager.all()
    if model is VirtualServer:
        qs = qs.prefetch_related(
            models.Prefetch("tools", queryset=Tool.objects.only("id", "name")),
            models.Prefetch("resources", queryset=Resource.objects.only("id", "uri")),
            models.Prefetch("resource_templates", queryset=ResourceTemplate.objects.only("id", "uri_template")),
            models.Prefetch("prompts", queryset=Prompt.objects.only("id", "name")),
            models.Prefetch("gateways", queryset=Gateway.objects.only("id", "name")),
        )
        return qs
    if select:
        qs = qs.select_related(*select)
    return qs.prefetch_related(*prefetch) if prefetch else qs


def entry_list[M: models.Model](model: type[M], *, filters: dict[str, Any]) -> QuerySet[M]:
    """Entries matching the filters: q (text search), enabled, gateway (name), tag, and plain fields."""
    qs = entry_queryset(model)
    filters = {key: value for key, value in filters.items() if value is not None and value != ""}
    if "q" in filters:
        text = filters.pop("q")
        query = Q()
        for field in SEARCH_FIELDS[model]:
            query |= Q(**{f"{field}__icontains": text})
        qs = qs.filter(query)
    if "gateway" in filters:
        qs = qs.filter(gateway__name=filters.pop("gateway"))
    if "tag" in filters:
        qs = qs.filter(tags__icontains=json.dumps(filters.pop("tag")))
    return qs.filter(**filters)


def entry_get[M: models.Model](model: type[M], *, pk: int) -> M:
    """One entry by id, or NotFound."""
    try:
        return entry_queryset(model).get(pk=pk)
    except model.DoesNotExist:  # type: ignore[attr-defined]
        raise NotFound(f"No {model._meta.verbose_name} with id {pk}.") from None


def entry_by_name[M: models.Model](model: type[M], *, name: str) -> M:
    """One gateway or virtual server by name, or NotFound."""
    try:
        return entry_queryset(model).get(name=name)
    except model.DoesNotExist:  # type: ignore[attr-defined]
        raise NotFound(f"No {model._meta.verbose_name} named {name!r}.") from None


def catalog_rows() -> dict[str, Any]:
    """Everything the MCP hot path serves, as plain data: enabled entries whose gateway (if any) is
    enabled, virtual servers with their members' keys, and each enabled gateway's connection
    settings with its credentials decrypted. Read once per catalog version, never per request."""
    from django.conf import settings

    from registry.events import catalog_version

    version = catalog_version()  # first: rows read after it are at least this new
    gateways = {g.pk: g for g in Gateway.objects.filter(enabled=True)}
    live = Q(gateway__isnull=True) | Q(gateway__enabled=True)
    if settings.GATEWAY_HIDE_UNREACHABLE:  # their entries leave the lists until a check succeeds
        # (except in a redundancy group: the snapshot folds the group's tools together and failover
        # skips the unreachable provider, so the tool keeps its name while another serves it)
        live &= ~Q(gateway__health=Health.UNREACHABLE, gateway__redundancy_group="")
    tool_rows = Tool.objects.filter(live, enabled=True)
    if settings.GATEWAY_DRIFT_POLICY == "withhold":  # a tool whose changed definition awaits approval
        tool_rows = tool_rows.filter(pending_definition__isnull=True)

    def source(obj: Any) -> str | None:
        return gateways[obj.gateway_id].name if obj.gateway_id in gateways else None

    tools = [
        {
            "id": t.pk,
            "name": t.name,
            "title": t.title,
            "description": t.served_description,
            "input_schema": t.input_schema,
            "output_schema": t.output_schema,
            "annotations": t.annotations,
            "integration_type": t.integration_type,
            "gateway": source(t),
            "upstream_name": t.upstream_name,
            "timeout": t.timeout,
            "backend_config": t.backend_config,
            "credentials": t.get_credentials(),
        }
        for t in tool_rows
    ]
    resources = [
        {
            "id": r.pk,
            "uri": r.uri,
            "name": r.name,
            "title": r.title,
            "description": r.description,
            "mime_type": r.mime_type,
            "text": r.text,
            "blob": None if r.blob is None else bytes(r.blob),
            "gateway": source(r),
            "upstream_uri": r.original_uri or r.uri,
            "annotations": r.annotations,
        }
        for r in Resource.objects.filter(live, enabled=True)
    ]
    templates = [
        {
            "id": t.pk,
            "uri_template": t.uri_template,
            "name": t.name,
            "title": t.title,
            "description": t.description,
            "mime_type": t.mime_type,
            "gateway": source(t),
            "annotations": t.annotations,
        }
        for t in ResourceTemplate.objects.filter(live, enabled=True)
    ]
    prompts = [
        {
            "id": p.pk,
            "name": p.name,
            "title": p.title,
            "description": p.description,
            "arguments": p.arguments,
            "template": p.template,
            "gateway": source(p),
            "upstream_name": p.original_name or p.name,
        }
        for p in Prompt.objects.filter(live, enabled=True)
    ]
    servers = [
        {
            "name": s.name,
            "title": s.title,
            "description": s.description,
            "icon": s.icon,
            "tools": [m.pk for m in s.tools.all()],
            "resources": [m.pk for m in s.resources.all()],
            "resource_templates": [m.pk for m in s.resource_templates.all()],
            "prompts": [m.pk for m in s.prompts.all()],
            "gateways": [g.name for g in s.gateways.all()],
        }
        for s in VirtualServer.objects.filter(enabled=True).prefetch_related(
            models.Prefetch("tools", queryset=Tool.objects.only("id")),
            models.Prefetch("resources", queryset=Resource.objects.only("id")),
            models.Prefetch("resource_templates", queryset=ResourceTemplate.objects.only("id")),
            models.Prefetch("prompts", queryset=Prompt.objects.only("id")),
            models.Prefetch("gateways", queryset=Gateway.objects.only("id", "name")),
        )
    ]
    upstreams = [
        {
            "name": g.name,
            "transport": g.transport,
            "era": g.era,
            "url": g.url,
            "command": g.command,
            "args": list(g.args),
            "env": dict(g.env),
            "cwd": g.cwd or None,
            "auth_type": g.auth_type,
            "credentials": g.get_credentials(),
            "verify_tls": g.verify_tls,
            "ca_bundle": g.ca_bundle or None,
            "capabilities": g.capabilities,
            "health": g.health,
            "last_error": g.last_error,
            "redundancy_group": g.redundancy_group,
            "priority": g.priority,
            "per_user_process": g.per_user_process,
            "start_at_boot": g.start_at_boot,
        }
        for g in gateways.values()
    ]
    return {
        "version": version,
        "gateways": upstreams,
        "tools": tools,
        "resources": resources,
        "resource_templates": templates,
        "prompts": prompts,
        "servers": servers,
    }


def _served(model: type[models.Model], member: str) -> Subquery:
    """How many enabled entries of ``model`` a virtual server serves: those it lists (``member``, the
    entry's related name to servers) and every entry of its gateways, counted once, as the MCP endpoint
    serves them (entries of disabled gateways left out)."""
    count = Func(F("pk"), function="COUNT", template="%(function)s(DISTINCT %(expressions)s)")
    rows = (
        model._default_manager.filter(
            Q(**{member: OuterRef("pk")}) | Q(gateway__servers=OuterRef("pk")),
            Q(gateway__isnull=True) | Q(gateway__enabled=True),
            enabled=True,
        )
        .order_by()
        .annotate(served=count)
        .values("served")
    )
    return Subquery(rows, output_field=models.IntegerField())


def served_counts() -> dict[str, Subquery]:
    """Annotations of a VirtualServer queryset with what each server really serves: tools_served,
    resources_served, templates_served, prompts_served (its chosen entries plus everything from its gateways)."""
    return {
        "tools_served": _served(Tool, "servers"),
        "resources_served": _served(Resource, "servers"),
        "templates_served": _served(ResourceTemplate, "servers"),
        "prompts_served": _served(Prompt, "servers"),
    }


def server_list_with_counts() -> QuerySet[VirtualServer]:
    """Virtual servers with ``served_counts``."""
    return VirtualServer.objects.annotate(**served_counts())


def server_tools(server: VirtualServer) -> QuerySet[Tool]:
    """The enabled tools a virtual server serves, as stored: those it lists and every tool of its gateways
    (of enabled gateways), each once, in name order."""
    return (
        Tool.objects.filter(
            Q(servers=server) | Q(gateway__servers=server),
            Q(gateway__isnull=True) | Q(gateway__enabled=True),
            enabled=True,
        )
        .select_related("gateway")
        .distinct()
        .order_by("name")
    )
