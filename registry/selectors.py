"""Reads of the catalog (the REST API's lists and lookups; the MCP hot path uses a snapshot)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db import models
from django.db.models import F, Func, OuterRef, Q, QuerySet, Subquery

from registry.choices import Health
from registry.exceptions import NotFound
from registry.models import Gateway, Prompt, Resource, ResourceTemplate, Tool, UpstreamCredential, VirtualServer
from registry.validators import parse_rate

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
        qs = qs.filter(tag_filter(filters.pop("tag")))
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


def served_entries[M: models.Model](model: type[M]) -> QuerySet[M]:
    """The entries of a kind (tools, resources, resource templates, prompts) the MCP endpoints serve:
    enabled ones whose gateway, if any, is enabled; not those of an unreachable gateway when
    GATEWAY_HIDE_UNREACHABLE is set; not a tool whose changed definition awaits approval under
    GATEWAY_DRIFT_POLICY withhold (under hold the stored definition is served until approved).
    ``catalog_rows`` and the composer's preview (``selection_served``) both read through it."""
    from django.conf import settings

    live = Q(gateway__isnull=True) | Q(gateway__enabled=True)
    if settings.GATEWAY_HIDE_UNREACHABLE:  # their entries leave the lists until a check succeeds
        # (except in a redundancy group: the snapshot folds the group's tools together and failover
        # skips the unreachable provider, so the tool keeps its name while another serves it)
        live &= ~Q(gateway__health=Health.UNREACHABLE, gateway__redundancy_group="")
    rows = model._default_manager.filter(live, enabled=True)
    if model is Tool and settings.GATEWAY_DRIFT_POLICY == "withhold":  # a changed definition awaits approval
        rows = rows.filter(pending_definition__isnull=True)
    return rows


def _rate(value: str) -> tuple[int, int] | None:
    """An entry's rate_limit as the snapshot carries it, parsed: (requests, window seconds) or None.
    Its validator checked it on the way in; one that no longer parses counts as none rather than
    breaking the whole snapshot."""
    try:
        return parse_rate(value)
    except ValueError:
        return None


def catalog_rows() -> dict[str, Any]:
    """Everything the MCP hot path serves, as plain data: enabled entries whose gateway (if any) is
    enabled (``served_entries``), virtual servers with their members' keys, and each enabled gateway's connection
    settings with its credentials decrypted. Read once per catalog version, never per request."""
    from registry.events import catalog_version

    version = catalog_version()  # first: rows read after it are at least this new
    gateways = {g.pk: g for g in Gateway.objects.filter(enabled=True)}

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
            "rate_limit": _rate(t.rate_limit),
        }
        for t in served_entries(Tool)
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
        for r in served_entries(Resource)
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
        for t in served_entries(ResourceTemplate)
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
        for p in served_entries(Prompt)
    ]
    servers = [
        {
            "name": s.name,
            "title": s.title,
            "description": s.description,
            "icon": s.icon,
            "rate_limit": _rate(s.rate_limit),
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
            "per_user_credentials": g.per_user_credentials,
            "oauth_token_url": g.oauth_token_url,
            "oauth_client_id": g.oauth_client_id,
            "oauth_scopes": g.oauth_scopes,
            "start_at_boot": g.start_at_boot,
            "rate_limit": _rate(g.rate_limit),
            "max_concurrency": g.max_concurrency,
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


# ---------------------------------------------------------------------------------------------
# The virtual-server composer (registry.admin.composer): candidates, the chosen entries, and what a
# selection would serve before it is saved
# ---------------------------------------------------------------------------------------------

# The kinds of entry a virtual server is composed of: the filter's value, the model, the server's field.
COMPOSER_KINDS: dict[str, tuple[type[models.Model], str]] = {
    "tool": (Tool, "tools"),
    "resource": (Resource, "resources"),
    "template": (ResourceTemplate, "resource_templates"),
    "prompt": (Prompt, "prompts"),
    "gateway": (Gateway, "gateways"),
}
# What each kind is known by to a client (and to the services, which take members by this key).
_KIND_KEY = {"tool": "name", "resource": "uri", "template": "uri_template", "prompt": "name", "gateway": "name"}
# The columns a candidate shows (never a resource's content or a tool's schemas).
_ENTRY_COLUMNS = ("id", "title", "description", "enabled", "gateway__name", "gateway__health", "gateway__enabled")
_GATEWAY_COLUMNS = ("id", "name", "description", "enabled", "health")


@dataclass(frozen=True)
class Selection:
    """What a virtual server is composed of, by id: its chosen entries and its whole gateways."""

    tools: tuple[int, ...] = ()
    resources: tuple[int, ...] = ()
    resource_templates: tuple[int, ...] = ()
    prompts: tuple[int, ...] = ()
    gateways: tuple[int, ...] = ()

    def ids(self, kind: str) -> tuple[int, ...]:
        """The chosen ids of a kind of COMPOSER_KINDS."""
        return tuple(getattr(self, COMPOSER_KINDS[kind][1]))


@dataclass(frozen=True)
class Candidate:
    """One entry the composer offers: what it is, where it comes from, and how that source is doing."""

    kind: str  # a key of COMPOSER_KINDS
    field: str  # the virtual server's field it joins (tools, resources, ...)
    pk: int
    key: str  # what clients and the services know it by: a name, a URI, a URI template
    title: str
    description: str
    enabled: bool
    source: str | None  # its gateway's name (a gateway: its own); None for a local entry
    source_enabled: bool
    health: str  # its gateway's health (a gateway: its own), or "local"
    tags: tuple[str, ...] = ()
    held: bool = False  # a tool whose changed definition awaits approval
    tool_count: int | None = None  # a gateway: how many tools it offers


@dataclass(frozen=True)
class CandidateFilters:
    """The composer's filters; empty values filter nothing."""

    q: str = ""
    kind: str = ""  # a key of COMPOSER_KINDS
    gateway: str = ""  # "local" (no gateway) or a gateway's id
    tag: str = ""  # tools only
    health: str = ""  # a Health value, or "local"
    enabled_only: bool = False


@dataclass(frozen=True)
class Candidates:
    rows: list[Candidate]
    more: list[str]  # the kinds with more matches than were listed


@dataclass(frozen=True)
class ServedPreview:
    """What a virtual server with a given selection serves, as the MCP endpoints would serve it."""

    tools: list[dict[str, Any]]  # name, title, description (as served), schemas, annotations, gateway, group
    resources: list[str]  # URIs
    resource_templates: list[str]
    prompts: list[str]


def server_selection(server: VirtualServer) -> Selection:
    """A saved server's selection."""
    return Selection(
        **{
            field: tuple(getattr(server, field).order_by().values_list("pk", flat=True))
            for _model, field in COMPOSER_KINDS.values()
        }
    )


def tag_filter(tag: str) -> Q:
    """Tools tagged ``tag`` (tags are a JSON list of strings; matched on their JSON text, any database)."""
    return Q(tags__icontains=json.dumps(tag))


def _candidate_rows(kind: str, qs: QuerySet[Any], limit: int | None = None) -> list[Candidate]:
    """Candidates of one kind from a queryset of its model, in name order (at most ``limit``); one query."""
    model, field = COMPOSER_KINDS[kind]
    key = _KIND_KEY[kind]
    if model is Gateway:
        return [
            Candidate(
                kind=kind,
                field=field,
                pk=g.pk,
                key=g.name,
                title="",
                description=g.description,
                enabled=g.enabled,
                source=g.name,
                source_enabled=g.enabled,
                health=g.health,
                tool_count=g.tool_count,
            )
            # (ordered explicitly: a model's default ordering does not apply to an aggregating query)
            for g in qs.only(*_GATEWAY_COLUMNS).annotate(tool_count=models.Count("tools")).order_by("name")[:limit]
        ]
    extra = [key] + (["tags", "pending_definition", "description_override"] if model is Tool else [])
    rows = qs.select_related("gateway").only(*_ENTRY_COLUMNS, *extra).order_by(key)[:limit]
    return [
        Candidate(
            kind=kind,
            field=field,
            pk=e.pk,
            key=getattr(e, key),
            title=e.title,
            description=getattr(e, "served_description", e.description),
            enabled=e.enabled,
            source=e.gateway.name if e.gateway else None,
            source_enabled=e.gateway.enabled if e.gateway else True,
            health=e.gateway.health if e.gateway else "local",
            tags=tuple(getattr(e, "tags", ())),
            held=getattr(e, "pending_definition", None) is not None,
        )
        for e in rows
    ]


def composer_candidates(*, filters: CandidateFilters, exclude: Selection, limit: int = 100) -> Candidates:
    """The entries matching the filters, by kind then name, without the ``exclude``d (chosen) ones; at
    most ``limit`` of each kind. One query per kind, however many match."""
    rows: list[Candidate] = []
    more: list[str] = []
    for kind, (model, _field) in COMPOSER_KINDS.items():
        if filters.kind and filters.kind != kind:
            continue
        qs = _filtered(model, filters)
        if qs is None:
            continue
        found = _candidate_rows(kind, qs.exclude(pk__in=exclude.ids(kind)), limit + 1)
        if len(found) > limit:
            more.append(kind)
        rows += found[:limit]
    return Candidates(rows=rows, more=more)


def _filtered(model: type[models.Model], filters: CandidateFilters) -> QuerySet[Any] | None:
    """The model's entries matching the filters; None when the filters exclude the whole kind."""
    qs = model._default_manager.all()
    if filters.q:
        text = Q()
        for field in SEARCH_FIELDS[model]:
            text |= Q(**{f"{field}__icontains": filters.q})
        qs = qs.filter(text)
    if model is Gateway:  # a whole gateway is its own source
        if filters.tag or "local" in (filters.gateway, filters.health):
            return None
        if filters.gateway:
            qs = qs.filter(pk=filters.gateway)
        if filters.health:
            qs = qs.filter(health=filters.health)
        return qs.filter(enabled=True) if filters.enabled_only else qs
    if filters.tag:
        if model is not Tool:
            return None
        qs = qs.filter(tag_filter(filters.tag))
    if filters.gateway == "local" or filters.health == "local":
        qs = qs.filter(gateway__isnull=True)
    if filters.gateway and filters.gateway != "local":
        qs = qs.filter(gateway_id=filters.gateway)
    if filters.health and filters.health != "local":
        qs = qs.filter(gateway__health=filters.health)
    if filters.enabled_only:
        qs = qs.filter(Q(gateway__isnull=True) | Q(gateway__enabled=True), enabled=True)
    return qs


def composer_chosen(selection: Selection) -> tuple[list[Candidate], dict[str, list[int]]]:
    """The entries of a selection (by kind, then name), and the ids of each kind that name no entry
    (deleted meanwhile, or never there). One query per kind chosen from."""
    rows: list[Candidate] = []
    missing: dict[str, list[int]] = {}
    for kind, (model, _field) in COMPOSER_KINDS.items():
        ids = selection.ids(kind)
        if not ids:
            continue
        found = _candidate_rows(kind, model._default_manager.filter(pk__in=ids))
        rows += found
        gone = sorted(set(ids) - {c.pk for c in found})
        if gone:
            missing[kind] = gone
    return rows, missing


def composer_gateways() -> QuerySet[Gateway]:
    """The gateways, for the composer's gateway filter."""
    return Gateway.objects.only("id", "name", "health").order_by("name")


def tool_tags() -> list[str]:
    """Every tag some tool carries, sorted."""
    tags: set[str] = set()
    for found in Tool.objects.order_by().values_list("tags", flat=True):
        tags.update(tag for tag in found or () if isinstance(tag, str))
    return sorted(tags)


def selection_served(selection: Selection) -> ServedPreview:
    """What a virtual server composed of ``selection`` serves, before it is saved: the entries it
    chose and everything of its gateways, each once, through ``served_entries`` (the rule the MCP
    snapshot's ``catalog_rows`` applies), tools with their served description, in the order
    tools/list gives them. Four queries, however large the selection.

    Not folded here: tools that gateways of one redundancy group share, which clients see once (each
    tool row names its gateway's group), and tools of a kind the running gateway has no backend for."""

    def members(ids: tuple[int, ...]) -> Q:
        return Q(pk__in=ids) | Q(gateway_id__in=selection.gateways)

    tools = [
        {
            "name": t.name,
            "title": t.title,
            "description": t.served_description,
            "input_schema": t.input_schema,
            "output_schema": t.output_schema,
            "annotations": t.annotations,
            "gateway": t.gateway.name if t.gateway else None,
            "redundancy_group": t.gateway.redundancy_group if t.gateway else "",
        }
        for t in served_entries(Tool).filter(members(selection.tools)).select_related("gateway")
    ]
    tools.sort(key=lambda row: row["name"])  # the snapshot's order (code points, not the database's collation)

    def keys(model: type[models.Model], ids: tuple[int, ...], key: str) -> list[str]:
        return sorted(served_entries(model).filter(members(ids)).values_list(key, flat=True))

    return ServedPreview(
        tools=tools,
        resources=keys(Resource, selection.resources, "uri"),
        resource_templates=keys(ResourceTemplate, selection.resource_templates, "uri_template"),
        prompts=keys(Prompt, selection.prompts, "name"),
    )


def user_credentials_load(*, gateway_name: str, username: str) -> dict[str, Any] | None:
    """A user's own credentials for a gateway from the vault: {"auth_type", "credentials"} (decrypted), or None."""

    stored = (
        UpstreamCredential.objects.filter(gateway__name=gateway_name, user__username=username, user__is_active=True)
        .only("auth_type", "credentials_encrypted")
        .first()
    )
    if stored is None:
        return None
    return {"auth_type": stored.auth_type, "credentials": stored.get_credentials()}


def user_credentials_list(*, user: Any) -> list[dict[str, Any]]:
    """The per-user gateways and whether ``user`` connected each (never the values)."""

    mine = {c.gateway_id: c for c in UpstreamCredential.objects.filter(user=user)}
    return [
        {
            "gateway": g,
            "connected": g.pk in mine,
            "updated_at": mine[g.pk].updated_at if g.pk in mine else None,
            "expires_at": mine[g.pk].expires_at if g.pk in mine else None,
        }
        for g in Gateway.objects.filter(per_user_credentials=True, enabled=True).order_by("name")
    ]
