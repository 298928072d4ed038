"""Writes to the catalog. Every write validates with the models' rules (``full_clean``), runs in a
transaction, and bumps the catalog version, announced once the transaction commits.

Every entry point (REST API, admin, commands, federation) writes through these functions, so a rule
is applied and a change announced the same way whoever writes:

- ``entry_create``, ``entry_update``, ``entry_delete``, ``entries_delete``, ``entries_set_enabled``:
  one write, one catalog event;
- ``entry_validate``: the checks of ``entry_create`` without storing anything;
- ``tool_create``, ``tool_update``, ``tool_validate``: the same for one tool, which may also join a
  virtual server in the same write (the ``tool_*`` commands);
- ``entry_save``: one entry saved with no event, the building block of services that make one write
  of many saves and announce it once (``catalog_import``, ``gateway_catalog_replace``);
- ``gateway_catalog_replace`` and ``gateway_failure_record``: what federation learns from an upstream.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, TypeVar

from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.db.models import QuerySet
from django.utils import timezone

from registry import events
from registry.choices import Health, IntegrationType
from registry.exceptions import CatalogError, Conflict, InvalidInput
from registry.models import Gateway, Prompt, Resource, ResourceTemplate, Tool, VirtualServer

M = TypeVar("M", bound=models.Model)

# Virtual-server members are named by their natural key.
MEMBER_KEYS: dict[str, tuple[type[models.Model], str]] = {
    "tools": (Tool, "name"),
    "resources": (Resource, "uri"),
    "resource_templates": (ResourceTemplate, "uri_template"),
    "prompts": (Prompt, "name"),
    "gateways": (Gateway, "name"),
}
UNIQUE_KEY: dict[type[models.Model], str] = {
    Gateway: "name",
    Tool: "name",
    Resource: "uri",
    ResourceTemplate: "uri_template",
    Prompt: "name",
    VirtualServer: "name",
}


def _domain_error(instance: models.Model, exc: ValidationError) -> InvalidInput | Conflict:
    """Django's ValidationError as a domain error: 409 for a taken unique key, 422 otherwise."""
    label = instance._meta.verbose_name
    if hasattr(exc, "error_dict"):
        for field, errors in exc.error_dict.items():
            if any(error.code == "unique" for error in errors):
                value = getattr(instance, field, "")
                return Conflict(f"A {label} with {field} {value!r} already exists.", errors={field: ["Already taken."]})
        messages = {field: [str(m) for m in ValidationError(errs).messages] for field, errs in exc.error_dict.items()}
    else:
        messages = {"__all__": list(exc.messages)}
    summary = "; ".join(
        f"{'' if field == '__all__' else field + ': '}{' '.join(msgs)}" for field, msgs in messages.items()
    )
    return InvalidInput(f"Invalid {label}: {summary}", errors=messages)


def _validate(instance: models.Model) -> None:
    try:
        instance.full_clean()
    except ValidationError as exc:
        raise _domain_error(instance, exc) from None


def _validated_save[M: models.Model](instance: M) -> M:
    _validate(instance)
    try:
        with transaction.atomic():
            instance.save()
    except IntegrityError:  # a concurrent writer took the name between the check and the insert
        key = UNIQUE_KEY[type(instance)]
        raise Conflict(
            f"A {instance._meta.verbose_name} with {key} {getattr(instance, key)!r} already exists."
        ) from None
    return instance


def _gateway_by_name(name: str | None) -> Gateway | None:
    if name is None or name == "":
        return None
    gateway = Gateway.objects.filter(name=name).first()
    if gateway is None:
        raise InvalidInput(f"No gateway named {name!r}.", errors={"gateway": [f"No gateway named {name!r}."]})
    return gateway


def _members(field: str, keys: list[str]) -> list[models.Model]:
    model, key = MEMBER_KEYS[field]
    found = {getattr(obj, key): obj for obj in model._default_manager.filter(**{f"{key}__in": keys})}
    missing = [k for k in keys if k not in found]
    if missing:
        noun = model._meta.verbose_name_plural
        raise InvalidInput(
            f"Unknown {noun}: {', '.join(map(repr, missing))}.", errors={field: [f"Unknown: {', '.join(missing)}"]}
        )
    return [found[k] for k in dict.fromkeys(keys)]


def _apply[M: models.Model](instance: M, data: dict[str, Any]) -> dict[str, list[models.Model]]:
    """Set plain fields and references on the instance; return the many-to-many sets to apply after saving."""
    data = dict(data)
    m2m: dict[str, list[models.Model]] = {}
    if isinstance(instance, Gateway) and ("auth_type" in data or "credentials" in data):
        auth_type = data.pop("auth_type", instance.auth_type)
        credentials = data.pop("credentials", None)
        if credentials is None and auth_type == instance.auth_type:
            pass  # unchanged: credentials are write-only and kept unless replaced
        else:
            try:
                instance.set_credentials(auth_type, credentials or {})
            except ValidationError as exc:
                raise _domain_error(instance, exc) from None
    if isinstance(instance, Tool) and "credentials" in data:
        credentials = data.pop("credentials")
        if credentials is not None:  # None: kept (write-only); {}: cleared
            try:
                instance.set_credentials(credentials)
            except ValidationError as exc:
                raise _domain_error(instance, exc) from None
    if "gateway" in data:
        instance.gateway = _gateway_by_name(data.pop("gateway"))  # type: ignore[attr-defined]
    for field in list(data):
        if field in MEMBER_KEYS and isinstance(instance, VirtualServer):
            m2m[field] = _members(field, data.pop(field) or [])
    for field, value in data.items():
        setattr(instance, field, value)
    return m2m


def entry_validate[M: models.Model](model: type[M], *, data: dict[str, Any]) -> M:
    """An unsaved entry built from field values and checked with every rule entry_create applies
    (references and members must exist, credentials must be complete); nothing is stored."""
    instance = model()
    _apply(instance, data)
    _validate(instance)
    return instance


@transaction.atomic
def entry_save[M: models.Model](instance: M, *, data: dict[str, Any]) -> M:
    """Set field values on a new or stored entry, validate it and save it with its members.

    Sends no catalog event: the service that calls it makes one write of many saves and announces
    it once (entry_create and entry_update do, for one entry)."""
    m2m = _apply(instance, data)
    _validated_save(instance)
    for name, objs in m2m.items():
        getattr(instance, name).set(objs)
    return instance


@transaction.atomic
def entry_create[M: models.Model](model: type[M], *, data: dict[str, Any]) -> M:
    """Create a catalog entry from field values (gateways, tools... referenced by name)."""
    instance = entry_save(model(), data=data)
    events.catalog_changed()
    return instance


@transaction.atomic
def entry_update[M: models.Model](instance: M, *, data: dict[str, Any]) -> M:
    """Change some fields of a catalog entry; nothing is stored unless all of them are valid."""
    entry_save(instance, data=data)
    events.catalog_changed()
    return instance


@transaction.atomic
def entry_delete(instance: models.Model) -> None:
    """Delete a catalog entry (a gateway takes its tools, resources, templates and prompts with it)."""
    instance.delete()
    events.catalog_changed()


@transaction.atomic
def entries_delete(queryset: QuerySet[Any]) -> int:
    """Delete many entries at once (with what cascades from them); returns how many of them went."""
    _total, per_model = queryset.delete()
    deleted = per_model.get(queryset.model._meta.label, 0)
    if deleted:
        events.catalog_changed()
    return deleted


@transaction.atomic
def entries_set_enabled(queryset: QuerySet[Any], *, enabled: bool) -> int:
    """Enable or disable many entries at once; returns how many changed."""
    changed = queryset.exclude(enabled=enabled).update(enabled=enabled)
    if changed:
        events.catalog_changed()
    return int(changed)


@transaction.atomic
def secrets_rotate() -> int:
    """Re-encrypt every gateway's and tool's credentials with the newest key; all or nothing.
    Returns how many entries held credentials."""
    from registry import crypto

    count = 0
    holders: list[QuerySet[Any]] = [Gateway.objects.all(), Tool.objects.all()]
    for queryset in holders:
        for entry in queryset.select_for_update().exclude(credentials_encrypted=""):
            entry.credentials_encrypted = crypto.rotate(entry.credentials_encrypted)
            entry.save(update_fields=["credentials_encrypted"])
            count += 1
    return count


def _server_by_name(name: str) -> VirtualServer:
    server = VirtualServer.objects.filter(name=name).first()
    if server is None:
        message = f"No virtual server named {name!r}."
        raise InvalidInput(message, errors={"server": [message]})
    return server


def tool_validate(*, data: dict[str, Any], server: str | None = None) -> Tool:
    """An unsaved tool checked with every rule tool_create applies (and the virtual server it would
    join must exist); nothing is stored."""
    tool = entry_validate(Tool, data=data)
    if server:
        _server_by_name(server)
    return tool


@transaction.atomic
def tool_create(*, data: dict[str, Any], server: str | None = None) -> Tool:
    """Create a tool and, given a virtual server's name, add it to that server: one catalog change."""
    tool = entry_save(Tool(), data=data)
    if server:
        _server_by_name(server).tools.add(tool)
    events.catalog_changed()
    return tool


@transaction.atomic
def tool_update(*, tool: Tool, data: dict[str, Any], server: str | None = None) -> Tool:
    """Change some fields of a tool and, given a virtual server's name, add it to that server too;
    nothing is stored unless all of it is valid."""
    entry_save(tool, data=data)
    if server:
        _server_by_name(server).tools.add(tool)
    events.catalog_changed()
    return tool


# ---------------------------------------------------------------------------------------------
# What an upstream provides (federation reads it; the catalog is written here)
# ---------------------------------------------------------------------------------------------

MAX_PREFIXED = 64


@dataclasses.dataclass
class CatalogDiff:
    """What gateway_catalog_replace changed, as labels such as "tool echo", and what it could not take."""

    added: list[str] = dataclasses.field(default_factory=list)
    updated: list[str] = dataclasses.field(default_factory=list)
    removed: list[str] = dataclasses.field(default_factory=list)
    renamed: dict[str, str] = dataclasses.field(default_factory=dict)  # upstream name -> catalog name
    skipped: list[str] = dataclasses.field(default_factory=list)  # entries the catalog could not take, with why

    def summary(self) -> str:
        text = f"{len(self.added)} added, {len(self.updated)} updated, {len(self.removed)} removed"
        return text + (f", {len(self.skipped)} skipped" if self.skipped else "")


def catalog_name(gateway: str, upstream: str, taken: set[str]) -> str:
    """The upstream's name if free, else '<gateway>_<name>' within 64 characters (a hash keeps it unique)."""
    if upstream not in taken:
        return upstream
    candidate = f"{gateway}_{upstream}"
    if len(candidate) > MAX_PREFIXED:
        digest = hashlib.sha256(f"{gateway}/{upstream}".encode()).hexdigest()[:8]
        candidate = f"{candidate[: MAX_PREFIXED - 9]}_{digest}"
    return candidate


@transaction.atomic
def gateway_catalog_replace(
    *,
    gateway: Gateway,
    tools: list[dict[str, Any]],
    resources: list[dict[str, Any]],
    templates: list[dict[str, Any]],
    prompts: list[dict[str, Any]],
    detected_era: str,
    protocol_version: str,
    server_info: dict[str, Any],
    capabilities: dict[str, Any],
) -> CatalogDiff:
    """Record a successful read of the gateway's upstream: what it said about itself (the gateway is
    marked healthy) and its lists, as MCP's tools/list, resources/list, resources/templates/list and
    prompts/list return them, which become exactly what the gateway provides.

    New entries are added, changed ones updated in place (local choices such as ``enabled``, tags and
    virtual-server membership stay), vanished ones removed. An upstream name another source holds
    gets the gateway's prefix (see ``catalog_name``); an entry the catalog cannot take is skipped and
    reported, not fatal. One catalog event, on commit."""
    diff = CatalogDiff()
    gateway.detected_era = detected_era
    gateway.protocol_version = protocol_version[:32]
    gateway.server_info = server_info
    gateway.capabilities = capabilities
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
    _replace_named(gateway, diff, Tool, tools, _tool_fields, extra={"integration_type": IntegrationType.MCP})
    _replace_by_uri(gateway, diff, Resource, "uri", resources, "uri", _resource_fields)
    _replace_by_uri(gateway, diff, ResourceTemplate, "uri_template", templates, "uriTemplate", _resource_fields)
    _replace_named(gateway, diff, Prompt, prompts, _prompt_fields)
    events.catalog_changed()
    return diff


@transaction.atomic
def gateway_failure_record(*, gateway: Gateway, error: str) -> None:
    """Record that the gateway's upstream could not be read; its entries stay as last read."""
    from registry.gateway_state import gateway_check_record  # here: keeps this module's imports to its owner

    gateway_check_record(gateway_id=gateway.pk, ok=False, error=error)  # a failed read is a failed check


def _clean_schema(schema: Any) -> dict[str, Any]:
    return (
        schema if isinstance(schema, dict) and schema.get("type") == "object" else {"type": "object", "properties": {}}
    )


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


def _resource_fields(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": str(item.get("name") or item.get("uri"))[:256],
        "title": str(item.get("title") or "")[:256],
        "description": str(item.get("description") or ""),
        "mime_type": str(item.get("mimeType") or "")[:255],
        "annotations": item.get("annotations") if isinstance(item.get("annotations"), dict) else {},
    }


def _replace_named(
    gateway: Gateway,
    diff: CatalogDiff,
    model: type[Tool] | type[Prompt],
    items: list[dict[str, Any]],
    to_fields: Any,
    extra: dict[str, Any] | None = None,
) -> None:
    """Tools and prompts: keyed by the upstream's name; a name another source holds gets a prefix."""
    noun = model._meta.verbose_name
    mine: dict[str, Any] = {obj.original_name or obj.name: obj for obj in model.objects.filter(gateway=gateway)}
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
                _validated_save(model(name=catalog, gateway=gateway, original_name=name, **(extra or {}), **fields))
                diff.added.append(f"{noun} {catalog}")
                taken.add(catalog)
                if catalog != name:
                    diff.renamed[name] = catalog
            elif any(getattr(existing, k) != v for k, v in fields.items()):
                for key, value in fields.items():
                    setattr(existing, key, value)
                _validated_save(existing)
                diff.updated.append(f"{noun} {existing.name}")
        except CatalogError as exc:
            diff.skipped.append(f"{noun} {name!r}: {exc.message}")
    for upstream_name, obj in mine.items():
        if upstream_name not in seen:
            obj.delete()
            diff.removed.append(f"{noun} {obj.name}")


def _replace_by_uri(
    gateway: Gateway,
    diff: CatalogDiff,
    model: type[Resource] | type[ResourceTemplate],
    key: str,
    items: list[dict[str, Any]],
    wire_key: str,
    to_fields: Any,
) -> None:
    """Resources and templates keep the upstream's URI (a collision with another source is reported)."""
    noun = model._meta.verbose_name
    mine: dict[str, Any] = {getattr(obj, key): obj for obj in model.objects.filter(gateway=gateway)}
    seen: set[str] = set()
    for item in items:
        value = item.get(wire_key)
        if not isinstance(value, str) or value in seen:
            continue
        seen.add(value)
        fields = to_fields(item)
        existing = mine.get(value)
        try:
            if existing is None:
                if model._default_manager.filter(**{key: value}).exists():
                    diff.skipped.append(f"{noun} {value!r}: another source already has it")
                    continue
                extra = {"original_uri": value} if model is Resource else {}
                _validated_save(model(gateway=gateway, **{key: value}, **fields, **extra))
                diff.added.append(f"{noun} {value}")
            elif any(getattr(existing, k) != v for k, v in fields.items()):
                for k, v in fields.items():
                    setattr(existing, k, v)
                _validated_save(existing)
                diff.updated.append(f"{noun} {value}")
        except CatalogError as exc:
            diff.skipped.append(f"{noun} {value!r}: {exc.message}")
    for value, obj in mine.items():
        if value not in seen:
            obj.delete()
            diff.removed.append(f"{noun} {value}")
