"""Reads of the catalog (the REST API's lists and lookups; the MCP hot path uses a snapshot)."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from django.db import models
from django.db.models import Q, QuerySet

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
