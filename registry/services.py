"""Writes to the catalog. Every write validates with the models' rules (``full_clean``), runs in a
transaction, and bumps the catalog version, announced once the transaction commits.

Every entry point (REST API, admin, commands, federation) writes through these functions, so a rule
is applied and a change announced the same way whoever writes:

- ``entry_create``, ``entry_update``, ``entry_delete``, ``entries_delete``, ``entries_set_enabled``:
  one write, one catalog event;
- ``entry_validate``: the checks of ``entry_create`` without storing anything;
- ``tool_create``, ``tool_update``, ``tool_validate``: the same for one tool, which may also join a
  virtual server in the same write (the ``tool_*`` commands);
- ``entry_save``: one entry saved with no catalog event, the building block of services that make one
  write of many saves and announce it once (``catalog_import``, ``registry.catalog_sync``); a gateway
  created, changed in its connection settings or enabled again is announced on ``hooks.gateway_saved``
  on commit (federation syncs it);
- ``upstream_fields_refuse``: the check the REST API applies before an update, so the fields an
  upstream owns are changed only by syncs (the admin shows them read-only);
- what federation learns from an upstream is written by ``registry.catalog_sync``.
"""

from __future__ import annotations

import functools
import logging
import math
from datetime import UTC, datetime
from typing import Any, TypeVar

from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.db.models import QuerySet
from django.utils import timezone

from registry import audit, events, hooks
from registry.exceptions import Conflict, InvalidInput
from registry.models import (
    UPSTREAM_TOOL_FIELDS,
    AuditEntry,
    Gateway,
    Prompt,
    Resource,
    ResourceTemplate,
    Tool,
    UpstreamCredential,
    VirtualServer,
)
from registry.representation import NATURAL_KEYS

M = TypeVar("M", bound=models.Model)
logger = logging.getLogger(__name__)

# The fields an upstream owns, per kind of entry: a sync writes them; people and the API may not change
# them on an entry that comes from a gateway (a tool's local description is description_override).
UPSTREAM_RESOURCE_FIELDS = ("name", "title", "description", "mime_type", "annotations")
UPSTREAM_PROMPT_FIELDS = ("title", "description", "arguments")
UPSTREAM_FIELDS: dict[type[models.Model], tuple[str, ...]] = {
    Tool: UPSTREAM_TOOL_FIELDS,
    Resource: UPSTREAM_RESOURCE_FIELDS,
    ResourceTemplate: UPSTREAM_RESOURCE_FIELDS,
    Prompt: UPSTREAM_PROMPT_FIELDS,
}
# A change to any of these (or re-enabling) means the gateway's catalog must be read again.
GATEWAY_CONNECTION_FIELDS = (
    "transport",
    "era",
    "url",
    "command",
    "args",
    "env",
    "cwd",
    "auth_type",
    "credentials_encrypted",
    "verify_tls",
    "ca_bundle",
    "enabled",
)

# Virtual-server members are named by their natural key.
MEMBER_KEYS: dict[str, tuple[type[models.Model], str]] = {
    "tools": (Tool, "name"),
    "resources": (Resource, "uri"),
    "resource_templates": (ResourceTemplate, "uri_template"),
    "prompts": (Prompt, "name"),
    "gateways": (Gateway, "name"),
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


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_non_finite(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(_non_finite(item) for item in value)
    return False


def _refuse_non_finite(instance: models.Model) -> None:
    """Infinity and NaN are no JSON: stored, they would make every export and API answer invalid JSON (or
    turn silently into null). Whatever door a value came in by (API, admin form, import, command)."""
    fields = [
        field.name
        for field in instance._meta.concrete_fields
        if isinstance(field, models.FloatField | models.JSONField) and _non_finite(getattr(instance, field.attname))
    ]
    if fields:
        message = "must hold only finite numbers (JSON has no Infinity or NaN)"
        raise InvalidInput(
            f"Invalid {instance._meta.verbose_name}: " + "; ".join(f"{field}: {message}" for field in fields),
            errors={field: [message] for field in fields},
        )


def _validate(instance: models.Model) -> None:
    _refuse_non_finite(instance)
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
        key = NATURAL_KEYS[type(instance)]
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
        per_user = data.get("per_user_credentials", instance.per_user_credentials)
        if credentials is None and auth_type == instance.auth_type:
            pass  # unchanged: credentials are write-only and kept unless replaced
        elif per_user and not credentials and auth_type in ("basic", "bearer", "headers"):
            instance.auth_type, instance.credentials_encrypted = auth_type, ""  # each user brings their own
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
def entry_save[M: models.Model](instance: M, *, data: dict[str, Any], gateway_saved: bool = True) -> M:
    """Set field values on a new or stored entry, validate it and save it with its members.

    Sends no catalog event: the service that calls it makes one write of many saves and announces
    it once (entry_create and entry_update do, for one entry). A gateway created, or changed in its
    connection settings, or enabled again, is announced on ``hooks.gateway_saved`` on commit (so its
    catalog gets read) unless ``gateway_saved`` is False (the caller reads the upstream itself)."""
    stored = _gateway_connection(instance) if gateway_saved and isinstance(instance, Gateway) else None
    creating = instance.pk is None
    before = audit.snapshot(instance)
    m2m = _apply(instance, data)
    _validated_save(instance)
    for name, objs in m2m.items():
        getattr(instance, name).set(objs)
    audit.record_saved(before, instance)
    if gateway_saved and isinstance(instance, Gateway):
        changed = stored is not None and instance.enabled and _connection_changed(stored, instance)
        if creating or changed:
            _gateway_saved_on_commit(instance.pk, created=creating)
    return instance


def _gateway_connection(instance: Gateway) -> dict[str, Any] | None:
    """The stored connection settings of a gateway (read again: a form may have changed the instance)."""
    if instance.pk is None:
        return None
    return Gateway.objects.filter(pk=instance.pk).values(*GATEWAY_CONNECTION_FIELDS).first()


def _connection_changed(stored: dict[str, Any], gateway: Gateway) -> bool:
    """Whether an enabled gateway's catalog must be read again: it was disabled, or how to reach it changed."""
    return any(getattr(gateway, field) != stored[field] for field in GATEWAY_CONNECTION_FIELDS)


def _gateway_saved_on_commit(gateway_id: int, *, created: bool) -> None:
    transaction.on_commit(functools.partial(_send_gateway_saved, gateway_id, created))


def _send_gateway_saved(gateway_id: int, created: bool) -> None:
    # Robust: the write is committed; a receiver that fails must not turn it into an error for the caller.
    for receiver, result in hooks.gateway_saved.send_robust(sender=Gateway, gateway_id=gateway_id, created=created):
        if isinstance(result, Exception):
            logger.warning("gateway_saved receiver %r failed", receiver, exc_info=result)


def upstream_fields_refuse(instance: models.Model, data: dict[str, Any]) -> None:
    """InvalidInput naming the first field ``data`` would change that the entry's upstream owns (for an
    entry that comes from a gateway); values equal to the stored ones pass."""
    owned = [field for field in UPSTREAM_FIELDS.get(type(instance), ()) if field in data]
    if not owned or instance.pk is None:
        return
    stored = type(instance)._default_manager.filter(pk=instance.pk).values("gateway__name", *owned).first()
    if stored is None or stored["gateway__name"] is None:
        return
    for field in owned:
        if data[field] != stored[field]:
            upstream = stored["gateway__name"]
            if isinstance(instance, Tool) and field == "description":
                message = f"description is owned by the upstream {upstream!r}; set description_override instead."
            else:
                message = f"{field} is owned by the upstream {upstream!r}; it changes only when a sync reads it."
            raise InvalidInput(message, errors={field: [message]})


@transaction.atomic
def entry_create[M: models.Model](model: type[M], *, data: dict[str, Any], gateway_saved: bool = True) -> M:
    """Create a catalog entry from field values (gateways, tools... referenced by name); see entry_save
    for ``gateway_saved``."""
    instance = entry_save(model(), data=data, gateway_saved=gateway_saved)
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
    audit.record_deleted([instance])
    instance.delete()
    events.catalog_changed()


@transaction.atomic
def entries_delete(queryset: QuerySet[Any]) -> int:
    """Delete many entries at once (with what cascades from them); returns how many of them went."""
    if audit.catalog_enabled():
        audit.record_deleted(list(queryset))
    _total, per_model = queryset.delete()
    deleted = per_model.get(queryset.model._meta.label, 0)
    if deleted:
        events.catalog_changed()
    return deleted


@transaction.atomic
def entries_set_enabled(queryset: QuerySet[Any], *, enabled: bool) -> int:
    """Enable or disable many entries at once; returns how many changed."""
    enabling = (
        list(queryset.filter(enabled=False).values_list("pk", flat=True))
        if enabled and queryset.model is Gateway
        else []
    )
    if audit.catalog_enabled():
        audit.record_enabled(list(queryset.exclude(enabled=enabled)), enabled=enabled)
    changed = queryset.exclude(enabled=enabled).update(enabled=enabled)
    if changed:
        events.catalog_changed()
    for gateway_id in enabling:  # re-enabled gateways: their catalog may have moved on meanwhile
        _gateway_saved_on_commit(gateway_id, created=False)
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


def _server_tools_add(server: VirtualServer, tool: Tool) -> None:
    with audit.change(server):  # a member joined: the server's change, audited as such
        server.tools.add(tool)


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
        _server_tools_add(_server_by_name(server), tool)
    events.catalog_changed()
    return tool


@transaction.atomic
def tool_update(*, tool: Tool, data: dict[str, Any], server: str | None = None) -> Tool:
    """Change some fields of a tool and, given a virtual server's name, add it to that server too;
    nothing is stored unless all of it is valid."""
    entry_save(tool, data=data)
    if server:
        _server_tools_add(_server_by_name(server), tool)
    events.catalog_changed()
    return tool


# ---------------------------------------------------------------------------------------------
# What an upstream provides is written by registry.catalog_sync (syncs and definition drift)
# ---------------------------------------------------------------------------------------------


@transaction.atomic
def gateway_failure_record(*, gateway: Gateway, error: str) -> None:
    """Record that the gateway's upstream could not be read; its entries stay as last read."""
    from registry.gateway_state import gateway_check_record  # here: keeps this module's imports to its owner

    gateway_check_record(gateway_id=gateway.pk, ok=False, error=error)  # a failed read is a failed check


# -- the vault: users' own upstream credentials (docs/governance.md, "Per-user upstream credentials") ----------


def _vault_audit(action: str, *, user: Any, gateway: Gateway, event: str) -> None:
    """Record a change of someone's upstream credentials: who, whose, which gateway; never the values."""
    if not audit.catalog_enabled():
        return
    who = audit.current()
    AuditEntry.objects.create(
        at=timezone.now(),
        actor=(who.actor or user.get_username())[:150],
        via=who.via,
        action=action,
        kind="upstreamcredential",
        target=f"{gateway.name}/{user.get_username()}"[:512],
        outcome=event,
        detail={"gateway": gateway.name, "user": user.get_username(), "credentials": "(changed)"},
    )


def user_credentials_set(
    *, user: Any, gateway: Gateway, credentials: dict[str, Any], expires_at: datetime | None = None
) -> UpstreamCredential:
    """Store ``user``'s own credentials for ``gateway`` (of the gateway's kind), replacing any."""
    if not gateway.per_user_credentials:
        raise InvalidInput(f"Gateway {gateway.name!r} does not take per-user credentials.")
    with transaction.atomic():
        stored = UpstreamCredential.objects.filter(user=user, gateway=gateway).first()
        created = stored is None
        stored = stored or UpstreamCredential(user=user, gateway=gateway)
        try:
            stored.set_credentials(gateway.auth_type, credentials)
        except ValidationError as exc:
            raise InvalidInput("; ".join(exc.messages)) from None
        stored.expires_at = expires_at
        stored.save()
        _vault_audit("create" if created else "update", user=user, gateway=gateway, event="connected")
    return stored


def user_credentials_tokens_store(*, gateway_name: str, username: str, credentials: dict[str, Any]) -> bool:
    """Keep refreshed OAuth tokens of a user (from the upstream pool); False when the entry is gone."""
    stored = UpstreamCredential.objects.filter(gateway__name=gateway_name, user__username=username).first()
    if stored is None:
        return False
    stored.set_credentials(stored.auth_type, credentials)
    expires = credentials.get("expires_at")
    stored.expires_at = datetime.fromtimestamp(float(expires), tz=UTC) if expires else None
    stored.save(update_fields=["credentials_encrypted", "expires_at", "updated_at"])
    return True


def user_credentials_delete(*, user: Any, gateway: Gateway) -> bool:
    """Forget ``user``'s own credentials for ``gateway``; False when there were none."""
    with transaction.atomic():
        deleted, _ = UpstreamCredential.objects.filter(user=user, gateway=gateway).delete()
        if deleted:
            _vault_audit("delete", user=user, gateway=gateway, event="disconnected")
    return bool(deleted)
