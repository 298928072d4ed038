"""Writes to the catalog. Every write validates with the models' rules (``full_clean``), runs in a
transaction, and bumps the catalog version, announced once the transaction commits."""

from __future__ import annotations

from typing import Any, TypeVar

from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.db.models import QuerySet

from registry import events
from registry.exceptions import Conflict, InvalidInput
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


def _validated_save[M: models.Model](instance: M) -> M:
    try:
        instance.full_clean()
    except ValidationError as exc:
        raise _domain_error(instance, exc) from None
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
    if "gateway" in data:
        instance.gateway = _gateway_by_name(data.pop("gateway"))  # type: ignore[attr-defined]
    for field in list(data):
        if field in MEMBER_KEYS and isinstance(instance, VirtualServer):
            m2m[field] = _members(field, data.pop(field) or [])
    for field, value in data.items():
        setattr(instance, field, value)
    return m2m


@transaction.atomic
def entry_create[M: models.Model](model: type[M], *, data: dict[str, Any]) -> M:
    """Create a catalog entry from field values (gateways, tools... referenced by name)."""
    instance = model()
    m2m = _apply(instance, data)
    _validated_save(instance)
    for field, objs in m2m.items():
        getattr(instance, field).set(objs)
    events.catalog_changed()
    return instance


@transaction.atomic
def entry_update[M: models.Model](instance: M, *, data: dict[str, Any]) -> M:
    """Change some fields of a catalog entry; nothing is stored unless all of them are valid."""
    m2m = _apply(instance, data)
    _validated_save(instance)
    for field, objs in m2m.items():
        getattr(instance, field).set(objs)
    events.catalog_changed()
    return instance


@transaction.atomic
def entry_delete(instance: models.Model) -> None:
    """Delete a catalog entry (a gateway takes its tools, resources, templates and prompts with it)."""
    instance.delete()
    events.catalog_changed()


@transaction.atomic
def entries_set_enabled(queryset: QuerySet[Any], *, enabled: bool) -> int:
    """Enable or disable many entries at once; returns how many changed."""
    changed = queryset.exclude(enabled=enabled).update(enabled=enabled)
    if changed:
        events.catalog_changed()
    return int(changed)


@transaction.atomic
def secrets_rotate() -> int:
    """Re-encrypt every gateway's credentials with the newest key; all or nothing."""
    from registry import crypto

    count = 0
    for gateway in Gateway.objects.select_for_update().exclude(credentials_encrypted=""):
        gateway.credentials_encrypted = crypto.rotate(gateway.credentials_encrypted)
        gateway.save(update_fields=["credentials_encrypted"])
        count += 1
    return count
