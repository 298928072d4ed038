"""What federation learns from an upstream, written into the catalog (docs/federation.md, "Sync" and
"Definition drift").

- ``gateway_catalog_apply``: one successful read of an upstream becomes, in one transaction, the
  difference to the stored catalog (added, updated, removed entries; changed tool definitions held
  back, withheld or accepted per ``GATEWAY_DRIFT_POLICY``), a ``SyncRun`` and a health success;
- ``sync_failure_record``: a failed read, as a failed ``SyncRun`` and a health failure;
- ``definition_change_approve`` / ``definition_changes_approve``: a held change put into service.

Federation reads upstreams; it writes no catalog row itself but calls these.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from registry import audit, events, gateway_state
from registry.choices import ChangeStatus, IntegrationType
from registry.exceptions import CatalogError, Conflict, InvalidInput
from registry.models import (
    UPSTREAM_TOOL_FIELDS,
    DefinitionChange,
    Gateway,
    Prompt,
    Resource,
    ResourceTemplate,
    SyncRun,
    Tool,
)
from registry.services import entry_save

MAX_PREFIXED = 64
# Fields whose change is shown as a unified text diff (JSON ones pretty-printed first).
TEXT_DIFF_FIELDS = ("description", "input_schema", "output_schema", "annotations")
POLICIES = ("hold", "withhold", "accept")


@dataclasses.dataclass
class CatalogDiff:
    """What a sync changed, as labels such as "tool echo", and what it could not take."""

    added: list[str] = dataclasses.field(default_factory=list)
    updated: list[str] = dataclasses.field(default_factory=list)
    removed: list[str] = dataclasses.field(default_factory=list)
    renamed: dict[str, str] = dataclasses.field(default_factory=dict)  # upstream name -> catalog name
    skipped: list[str] = dataclasses.field(default_factory=list)  # entries the catalog could not take, with why
    held: list[str] = dataclasses.field(default_factory=list)  # changed tool definitions waiting for approval

    def summary(self) -> str:
        text = f"{len(self.added)} added, {len(self.updated)} updated, {len(self.removed)} removed"
        if self.held:
            text += f", {len(self.held)} held for review"
        return text + (f", {len(self.skipped)} skipped" if self.skipped else "")

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed or self.held)

    @classmethod
    def from_run(cls, run: SyncRun) -> CatalogDiff:
        """The report of a recorded sync (``renamed``: its added tools and prompts listed under another name)."""
        diff = cls(
            added=list(run.added),
            updated=list(run.updated),
            removed=list(run.removed),
            skipped=list(run.skipped),
            held=list(run.held),
        )
        for model in (Tool, Prompt):
            prefix = f"{model._meta.verbose_name} "
            names = [label.removeprefix(prefix) for label in run.added if label.startswith(prefix)]
            if names:
                rows = model.objects.filter(gateway_id=run.gateway_id, name__in=names).exclude(original_name="")
                for name, original in rows.values_list("name", "original_name"):
                    if name != original:
                        diff.renamed[original] = name
        return diff


def catalog_name(gateway: str, upstream: str, taken: set[str]) -> str:
    """The upstream's name if free, else '<gateway>_<name>' within 64 characters (a hash keeps it unique)."""
    if upstream not in taken:
        return upstream
    candidate = f"{gateway}_{upstream}"
    if len(candidate) > MAX_PREFIXED:
        digest = hashlib.sha256(f"{gateway}/{upstream}".encode()).hexdigest()[:8]
        candidate = f"{candidate[: MAX_PREFIXED - 9]}_{digest}"
    return candidate


def drift_policy() -> str:
    """GATEWAY_DRIFT_POLICY, one of hold, withhold, accept (anything else is read as hold, the safe one)."""
    policy = str(getattr(settings, "GATEWAY_DRIFT_POLICY", "hold")).lower()
    return policy if policy in POLICIES else "hold"


# ---------------------------------------------------------------------------------------------
# Sync
# ---------------------------------------------------------------------------------------------


@transaction.atomic
def gateway_catalog_apply(
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
    trigger: str,
    started_at: datetime,
) -> SyncRun:
    """Record a successful read of the gateway's upstream, all in one transaction: what it said about
    itself, its lists (as tools/list, resources/list, resources/templates/list and prompts/list return
    them) as the difference to the stored catalog, a ``SyncRun`` and a health success.

    New entries are added, changed ones updated in place (local choices such as ``enabled``, the
    catalog name, tags, ``description_override``, ``timeout`` and virtual-server membership stay),
    vanished ones removed; a known tool whose definition changed follows ``GATEWAY_DRIFT_POLICY``. An
    upstream name another source holds gets the gateway's prefix (``catalog_name``); an entry the
    catalog cannot take is skipped and reported, not fatal. One catalog event when anything changed."""
    with audit.acting(via="sync"):  # whoever asked (an admin's "Sync now", or nobody: the scheduler)
        diff = CatalogDiff()
        now = timezone.now()
        described = {
            "detected_era": detected_era,
            "protocol_version": protocol_version[:32],
            "server_info": server_info,
            "capabilities": capabilities,
        }
        gateway_changed = any(getattr(gateway, key) != value for key, value in described.items())
        for key, value in described.items():
            setattr(gateway, key, value)
        gateway.last_synced_at = now
        gateway.save(update_fields=[*described, "last_synced_at"])

        policy = drift_policy()
        _apply_tools(gateway, diff, tools, policy=policy, now=now)
        _apply_by_uri(gateway, diff, Resource, "uri", resources, "uri", _resource_fields)
        _apply_by_uri(gateway, diff, ResourceTemplate, "uri_template", templates, "uriTemplate", _resource_fields)
        _apply_prompts(gateway, diff, prompts)

        run = _record_run(gateway, diff, trigger=trigger, started_at=started_at, ok=True, error="")
        gateway_state.gateway_check_record(gateway_id=gateway.pk, ok=True)
        gateway.refresh_from_db(fields=["health", "last_error", "last_seen_at", "consecutive_failures"])
        if diff.changed or gateway_changed:
            events.catalog_changed()
        return run


@transaction.atomic
def sync_failure_record(*, gateway: Gateway, trigger: str, started_at: datetime, error: str) -> SyncRun:
    """Record that reading the gateway's upstream failed (``error``: a sentence); its entries stay as last read."""
    run = _record_run(gateway, CatalogDiff(), trigger=trigger, started_at=started_at, ok=False, error=error[:2000])
    gateway_state.gateway_check_record(gateway_id=gateway.pk, ok=False, error=error[:2000])
    return run


def _record_run(
    gateway: Gateway, diff: CatalogDiff, *, trigger: str, started_at: datetime, ok: bool, error: str
) -> SyncRun:
    finished = timezone.now()
    run = SyncRun.objects.create(
        gateway=gateway,
        trigger=trigger,
        started_at=started_at,
        finished_at=finished,
        duration_ms=max(0, int((finished - started_at).total_seconds() * 1000)),
        ok=ok,
        added=diff.added,
        updated=diff.updated,
        removed=diff.removed,
        held=diff.held,
        skipped=diff.skipped,
        error=error,
    )
    kept = max(1, int(settings.GATEWAY_SYNC_RUNS_KEPT))
    old = list(
        SyncRun.objects.filter(gateway=gateway).order_by("-started_at", "-pk").values_list("pk", flat=True)[kept:]
    )
    if old:
        SyncRun.objects.filter(pk__in=old).delete()
    return run


def _clean_schema(schema: Any) -> dict[str, Any]:
    return (
        schema if isinstance(schema, dict) and schema.get("type") == "object" else {"type": "object", "properties": {}}
    )


def _tool_fields(item: dict[str, Any]) -> dict[str, Any]:
    """A tools/list item as the fields an upstream owns (exactly ``UPSTREAM_TOOL_FIELDS``)."""
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
        "name": str(item.get("name") or item.get("uri") or item.get("uriTemplate"))[:256],
        "title": str(item.get("title") or "")[:256],
        "description": str(item.get("description") or ""),
        "mime_type": str(item.get("mimeType") or "")[:255],
        "annotations": item.get("annotations") if isinstance(item.get("annotations"), dict) else {},
    }


def _named_items(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The items with a string name, first one of each name."""
    named: dict[str, dict[str, Any]] = {}
    for item in items:
        name = item.get("name")
        if isinstance(name, str) and name not in named:
            named[name] = item
    return named


def _add_named(
    gateway: Gateway,
    diff: CatalogDiff,
    model: type[Tool] | type[Prompt],
    name: str,
    fields: dict[str, Any],
    taken: set[str],
    extra: dict[str, Any],
) -> None:
    noun = model._meta.verbose_name
    catalog = catalog_name(gateway.name, name, taken)
    entry_save(model(name=catalog, gateway=gateway, original_name=name, **extra, **fields), data={})
    diff.added.append(f"{noun} {catalog}")
    taken.add(catalog)
    if catalog != name:
        diff.renamed[name] = catalog


def _remove_vanished(diff: CatalogDiff, mine: dict[str, Any], seen: Iterable[str], label: Any) -> None:
    seen = set(seen)
    for key, obj in mine.items():
        if key not in seen:
            audit.record_deleted([obj])
            obj.delete()
            diff.removed.append(f"{obj._meta.verbose_name} {label(obj)}")


def _apply_tools(
    gateway: Gateway, diff: CatalogDiff, items: list[dict[str, Any]], *, policy: str, now: datetime
) -> None:
    """Tools: keyed by the upstream's name; a changed definition of a known tool is drift."""
    mine: dict[str, Tool] = {obj.upstream_name: obj for obj in Tool.objects.filter(gateway=gateway)}
    taken = set(Tool.objects.exclude(gateway=gateway).values_list("name", flat=True))
    named = _named_items(items)
    for name, item in named.items():
        fields = _tool_fields(item)
        existing = mine.get(name)
        try:
            if existing is None:
                _add_named(gateway, diff, Tool, name, fields, taken, {"integration_type": IntegrationType.MCP})
            else:
                _tool_drift(gateway, diff, existing, fields, policy=policy, now=now)
        except CatalogError as exc:
            diff.skipped.append(f"tool {name!r}: {exc.message}")
    _remove_vanished(diff, mine, named, lambda obj: obj.name)


def _tool_drift(
    gateway: Gateway, diff: CatalogDiff, tool: Tool, current: dict[str, Any], *, policy: str, now: datetime
) -> None:
    """Compare a known tool's upstream definition with the stored (approved) one and act per policy."""
    stored = tool.definition()
    label = f"tool {tool.name}"
    if current == stored:
        if tool.pending_definition is not None:  # the upstream went back to the approved definition
            _supersede_pending(tool, now=now)
            _clear_hold(tool)
            diff.updated.append(label)
        return
    if policy == "accept":
        changes = field_diff(stored, current)
        for key, value in current.items():
            setattr(tool, key, value)
        tool.pending_definition, tool.drift_detected_at = None, None
        entry_save(tool, data={})
        _supersede_pending(tool, now=now)
        DefinitionChange.objects.create(
            tool=tool,
            gateway=gateway,
            detected_at=now,
            previous=stored,
            current=current,
            diff=changes,
            status=ChangeStatus.ACCEPTED,
            decided_by="GATEWAY_DRIFT_POLICY=accept",
            decided_at=now,
        )
        diff.updated.append(label)
        return
    if tool.pending_definition == current:
        return  # already held: nothing new to review
    if _was_rejected(tool, current):
        return  # a staff user already refused exactly this definition: the approved one stays, quietly
    _check_definition(tool, current)
    _supersede_pending(tool, now=now)
    DefinitionChange.objects.create(
        tool=tool, gateway=gateway, detected_at=now, previous=stored, current=current, diff=field_diff(stored, current)
    )
    tool.pending_definition, tool.drift_detected_at = current, now
    tool.save(update_fields=["pending_definition", "drift_detected_at", "updated_at"])
    diff.held.append(label)


def _check_definition(tool: Tool, definition: dict[str, Any]) -> None:
    """Refuse (as a skip) a changed definition the catalog could not take if it were approved."""
    probe = Tool(**{field.attname: getattr(tool, field.attname) for field in Tool._meta.concrete_fields})
    for key, value in definition.items():
        setattr(probe, key, value)
    others = [field.name for field in Tool._meta.concrete_fields if field.name not in UPSTREAM_TOOL_FIELDS]
    try:
        probe.clean_fields(exclude=others)
    except ValidationError as exc:
        summary = "; ".join(f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items())
        raise InvalidInput(f"Invalid tool: {summary}") from None


def _was_rejected(tool: Tool, definition: dict[str, Any]) -> bool:
    rejected = DefinitionChange.objects.filter(tool=tool, status=ChangeStatus.REJECTED).only("current")
    return any(change.current == definition for change in rejected)


def _supersede_pending(tool: Tool, *, now: datetime) -> None:
    DefinitionChange.objects.filter(tool=tool, status=ChangeStatus.PENDING).update(
        status=ChangeStatus.SUPERSEDED, decided_at=now
    )


def _clear_hold(tool: Tool) -> None:
    tool.pending_definition, tool.drift_detected_at = None, None
    tool.save(update_fields=["pending_definition", "drift_detected_at", "updated_at"])


def _apply_prompts(gateway: Gateway, diff: CatalogDiff, items: list[dict[str, Any]]) -> None:
    """Prompts: keyed by the upstream's name; a name another source holds gets the gateway's prefix."""
    mine: dict[str, Prompt] = {obj.original_name or obj.name: obj for obj in Prompt.objects.filter(gateway=gateway)}
    taken = set(Prompt.objects.exclude(gateway=gateway).values_list("name", flat=True))
    named = _named_items(items)
    for name, item in named.items():
        fields = _prompt_fields(item)
        existing = mine.get(name)
        try:
            if existing is None:
                _add_named(gateway, diff, Prompt, name, fields, taken, {})
            elif any(getattr(existing, k) != v for k, v in fields.items()):
                entry_save(existing, data=fields)
                diff.updated.append(f"prompt {existing.name}")
        except CatalogError as exc:
            diff.skipped.append(f"prompt {name!r}: {exc.message}")
    _remove_vanished(diff, mine, named, lambda obj: obj.name)


def _apply_by_uri(
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
    seen: list[str] = []
    for item in items:
        value = item.get(wire_key)
        if not isinstance(value, str) or value in seen:
            continue
        seen.append(value)
        fields = to_fields(item)
        existing = mine.get(value)
        try:
            if existing is None:
                if model._default_manager.filter(**{key: value}).exists():
                    diff.skipped.append(f"{noun} {value!r}: another source already has it")
                    continue
                extra = {"original_uri": value} if model is Resource else {}
                entry_save(model(gateway=gateway, **{key: value}, **fields, **extra), data={})
                diff.added.append(f"{noun} {value}")
            elif any(getattr(existing, k) != v for k, v in fields.items()):
                entry_save(existing, data=fields)
                diff.updated.append(f"{noun} {value}")
        except CatalogError as exc:
            diff.skipped.append(f"{noun} {value!r}: {exc.message}")
    _remove_vanished(diff, mine, seen, lambda obj: getattr(obj, key))


# ---------------------------------------------------------------------------------------------
# Definition drift
# ---------------------------------------------------------------------------------------------


def _as_text(field: str, value: Any) -> str:
    if field == "description":
        return str(value or "")
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def field_diff(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """Per changed field: before, after, and a unified text diff for the description and the JSON fields
    (pretty-printed with sorted keys, so a reordering alone shows no line)."""
    changes = []
    for field in UPSTREAM_TOOL_FIELDS:
        old, new = before.get(field), after.get(field)
        if old == new:
            continue
        text = ""
        if field in TEXT_DIFF_FIELDS:
            lines = difflib.unified_diff(
                _as_text(field, old).splitlines(),
                _as_text(field, new).splitlines(),
                fromfile=f"{field} (approved)",
                tofile=f"{field} (upstream)",
                lineterm="",
            )
            text = "\n".join(lines)
        changes.append({"field": field, "before": old, "after": new, "text": text})
    return changes


def pending_definition_tools(*, gateway: Gateway | None = None, names: Iterable[str] = ()) -> QuerySet[Tool]:
    """Tools whose changed upstream definition waits for approval (of one gateway, or these names)."""
    queryset = Tool.objects.filter(pending_definition__isnull=False).select_related("gateway")
    if gateway is not None:
        queryset = queryset.filter(gateway=gateway)
    names = list(names)
    if names:
        queryset = queryset.filter(name__in=names)
    return queryset.order_by("name")


@transaction.atomic
def _decide(tools: Iterable[Tool], *, user: str, status: str) -> list[DefinitionChange]:
    """Approve (put into service) or reject (drop, keeping the approved definition) the held definitions of
    these tools; tools with none are passed over. One catalog change for all of them."""
    now = timezone.now()
    decided = []
    ids = [tool.pk for tool in tools]
    for tool in Tool.objects.select_for_update().filter(pk__in=ids, pending_definition__isnull=False):
        pending = dict(tool.pending_definition or {})
        previous = tool.definition()
        if status == ChangeStatus.APPROVED:
            for field in UPSTREAM_TOOL_FIELDS:
                if field in pending:
                    setattr(tool, field, pending[field])
            tool.pending_definition, tool.drift_detected_at = None, None
            entry_save(tool, data={})
        else:
            _clear_hold(tool)
        pending_changes = DefinitionChange.objects.filter(tool=tool, status=ChangeStatus.PENDING)
        change = pending_changes.order_by("-detected_at", "-pk").first()
        if change is None:  # held by an older version of this code, or its record was removed: record it now
            assert tool.gateway_id is not None  # only a gateway's tools are held
            change = DefinitionChange(
                tool=tool,
                gateway_id=tool.gateway_id,
                detected_at=now,
                previous=previous,
                current=pending,
                diff=field_diff(previous, pending),
            )
        change.status, change.decided_by, change.decided_at = status, user[:150], now
        change.save()
        pending_changes.exclude(pk=change.pk).update(status=ChangeStatus.SUPERSEDED, decided_at=now)
        decided.append(change)
    if decided:
        events.catalog_changed()
    return decided


def _decide_one(tool: Tool, *, user: str, status: str) -> DefinitionChange:
    decided = _decide([tool], user=user, status=status)
    if not decided:
        raise Conflict(f"Tool {tool.name!r} has no changed definition waiting for approval.")
    tool.refresh_from_db()
    return decided[0]


def definition_changes_approve(*, tools: Iterable[Tool], user: str = "") -> list[DefinitionChange]:
    """Put the held definitions of these tools into service (tools with none are passed over): one
    catalog change for all of them."""
    return _decide(tools, user=user, status=ChangeStatus.APPROVED)


def definition_change_approve(*, tool: Tool, user: str = "") -> DefinitionChange:
    """Put a tool's held definition into service; Conflict when none is waiting."""
    return _decide_one(tool, user=user, status=ChangeStatus.APPROVED)


def definition_changes_reject(*, tools: Iterable[Tool], user: str = "") -> list[DefinitionChange]:
    """Refuse the held definitions of these tools (tools with none are passed over): the approved
    definition keeps serving (a withheld tool returns), and later syncs do not hold that same definition
    again; a different one is held as usual. One catalog change for all of them."""
    return _decide(tools, user=user, status=ChangeStatus.REJECTED)


def definition_change_reject(*, tool: Tool, user: str = "") -> DefinitionChange:
    """Refuse a tool's held definition; Conflict when none is waiting."""
    return _decide_one(tool, user=user, status=ChangeStatus.REJECTED)
