"""The OpenAPI import service: an OpenAPI document's operations become REST tools of the catalog, and a
re-import of the same source brings them up to date in place.

Tools of one import carry ``backend_config.openapi.source``; the tools of that source are the
selected operations, exactly: new operations are added, changed ones updated (the operator's own
choices stay: enabled, tags, timeout, credentials, server membership, and backend settings the
importer does not write, such as retries, TLS and extraction), and tools whose operation is gone or no
longer selected are removed. A name held by a tool of any other origin is a conflict: that operation
is not imported and the other tool is left alone. Everything happens in one transaction with one
catalog event; a dry run checks everything and stores nothing.
"""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import asdict, dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from registry import audit, events, services
from registry.choices import IntegrationType
from registry.exceptions import CatalogError, InvalidInput
from registry.models import Tool, VirtualServer
from registry.openapi import naming
from registry.openapi.convert import Conversion, ToolSpec, convert
from registry.openapi.document import load
from registry.tool_kinds.rest import AUTH_SECRETS

# backend_config keys the importer writes on every import; the others are the operator's to keep.
IMPORTER_KEYS = ("url", "method", "headers", "params", "body", "openapi")
FIELDS = ("name", "title", "description", "input_schema", "output_schema", "annotations", "backend_config")


@dataclass
class OpenApiReport:
    """What an import did (or, for a dry run, would do), by tool name."""

    source: str
    dry_run: bool
    server: str | None = None
    server_created: bool = False
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)  # old name -> new name (also in `changed`)
    conflicts: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    operations: dict[str, str] = field(default_factory=dict)  # tool name -> "METHOD /path"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        text = (
            f"{len(self.added)} added, {len(self.changed)} changed, {len(self.removed)} removed, "
            f"{len(self.unchanged)} unchanged"
        )
        if self.conflicts:
            text += f", {len(self.conflicts)} conflicts"
        return text + (" (dry run: nothing stored)" if self.dry_run else "")


def openapi_import(
    *,
    document: bytes | str,
    source: str,
    server: str | None = None,
    include: list[str] | None = None,
    base_url: str | None = None,
    dry_run: bool = False,
    credentials: dict[str, dict[str, str]] | None = None,
) -> OpenApiReport:
    """Import an OpenAPI 3.0/3.1 document (JSON or YAML) as REST tools, or update an earlier import of
    ``source`` (a URL or file name identifying the document); ``include`` keeps the operations whose
    operationId, tool name or "METHOD /path" matches one of its fnmatch patterns; ``server`` names a
    virtual server (created when missing) that gets the tools as members; ``base_url`` replaces the
    document's servers; ``credentials`` gives the secrets of security schemes by name (e.g.
    ``{"bearerAuth": {"token": "..."}}``), set on every tool that authenticates with that scheme."""
    source = (source or "").strip()
    if not source:
        raise InvalidInput("An import needs a source: the URL or file name the document came from.")
    conversion = convert(load(document), source=source, base_url=base_url or None)
    with audit.acting(via="import"):
        return _store(
            conversion,
            source=source,
            server=server or None,
            include=include or [],
            dry_run=dry_run,
            credentials=_credentials(credentials),
        )


def _credentials(value: Any) -> dict[str, dict[str, str]]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(secrets, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in secrets.items())
        for secrets in value.values()
    ):
        raise InvalidInput(
            'credentials must map a security scheme\'s name to its secrets, e.g. {"bearerAuth": {"token": "..."}}.'
        )
    return value


def _selected(op: naming.Operation, name: str, patterns: list[str]) -> list[str]:
    """The patterns that select this operation (every operation when there are none)."""
    if not patterns:
        return ["*"]
    key_upper = op.key.upper()
    return [
        p
        for p in patterns
        if fnmatch.fnmatchcase(name, p)
        or (op.operation_id is not None and fnmatch.fnmatchcase(op.operation_id, p))
        or fnmatch.fnmatchcase(op.key, p)
        or fnmatch.fnmatchcase(key_upper, p.upper())
    ]


@transaction.atomic
def _store(
    conversion: Conversion,
    *,
    source: str,
    server: str | None,
    include: list[str],
    dry_run: bool,
    credentials: dict[str, dict[str, str]],
) -> OpenApiReport:
    report = OpenApiReport(source=source, dry_run=dry_run, server=server, warnings=list(conversion.warnings))
    mine = list(
        Tool.objects.select_for_update().filter(
            integration_type=IntegrationType.REST, backend_config__openapi__source=source
        )
    )
    matched = _match(conversion.operations, mine)
    names = naming.assign(conversion.operations, {key: tool.name for key, tool in matched.items()})
    used_patterns: set[str] = set()
    chosen: list[ToolSpec] = []
    for spec in conversion.tools:
        op = naming.Operation(spec.operation, spec.operation_id)
        hits = _selected(op, names[spec.operation], include)
        used_patterns.update(hits)
        if hits:
            chosen.append(spec)
    report.warnings.extend(f"The pattern {p!r} selects no operation." for p in include if p not in used_patterns)
    used_schemes = {spec.security_scheme for spec in chosen}
    report.warnings.extend(
        f"Credentials were given for {scheme!r}, which no imported operation uses."
        for scheme in credentials
        if scheme not in used_schemes
    )
    mine_pks = {tool.pk for tool in mine}
    foreign = {
        tool.name: tool
        for tool in Tool.objects.select_related("gateway")
        .filter(name__in=[names[spec.operation] for spec in chosen])
        .exclude(pk__in=mine_pks)
    }
    plan: list[tuple[ToolSpec, str, Tool | None]] = []
    kept: set[int] = set()
    for spec in chosen:
        name, existing = names[spec.operation], matched.get(spec.operation)
        if name in foreign:
            report.conflicts.append(
                f"{spec.operation}: not imported, the name {name!r} belongs to {_origin(foreign[name])}; "
                "that tool was left alone (rename or remove it, or leave this operation out with an include pattern)."
            )
            if existing is not None:
                kept.add(existing.pk)
            continue
        plan.append((spec, name, existing))
        if existing is not None:
            kept.add(existing.pk)
    changed = False
    for tool in mine:
        if tool.pk not in kept:
            report.removed.append(tool.name)
            audit.record_deleted([tool])
            tool.delete()
            changed = True
    for _spec, name, existing in plan:  # free the names first, so two tools may swap theirs
        if existing is not None and existing.name != name:
            Tool.objects.filter(pk=existing.pk).update(name=f"~openapi-{existing.pk}")
    members: list[Tool] = []
    for spec, name, existing in plan:
        secrets = credentials.get(spec.security_scheme or "")
        fields = _fields(spec, name, existing)
        missing = _missing_secrets(fields["backend_config"], secrets, existing)
        if missing:
            fields["backend_config"].pop("auth")
            if existing is not None and existing.backend_config.get("auth"):
                fields["backend_config"]["auth"] = existing.backend_config["auth"]
            report.warnings.append(
                f"{spec.operation}: its security scheme {spec.security_scheme!r} needs the secrets "
                f"{', '.join(missing)}, which were not given; the tool is imported without authentication "
                f"(import again with credentials for {spec.security_scheme!r} to add it)."
            )
        old_name = existing.name if existing is not None else name
        if existing is not None and _same(existing, fields, secrets):
            report.unchanged.append(name)
            members.append(existing)
        else:
            members.append(_save(spec, existing, fields, secrets))
            if existing is None:
                report.added.append(name)
            else:
                report.changed.append(name)
                if old_name != name:
                    report.renamed[old_name] = name
            changed = True
        report.operations[name] = spec.operation
    if server is not None:
        changed = _join_server(server, members, report) or changed
    if changed:
        events.catalog_changed()
    if dry_run:
        transaction.set_rollback(True)
    return report


def _match(operations: list[naming.Operation], mine: list[Tool]) -> dict[str, Tool]:
    """operation key -> the tool an earlier import made for it (by "METHOD /path", else by operationId)."""
    by_key: dict[str, Tool] = {}
    by_id: dict[str, Tool] = {}
    for tool in mine:
        meta = tool.backend_config.get("openapi") or {}
        by_key.setdefault(str(meta.get("operation")), tool)
        if meta.get("operation_id"):
            by_id.setdefault(str(meta["operation_id"]), tool)
    matched: dict[str, Tool] = {}
    taken: set[int] = set()
    for op in operations:
        found = by_key.get(op.key)
        if found is not None and found.pk not in taken:
            matched[op.key] = found
            taken.add(found.pk)
    for op in operations:  # an operation whose path or method changed but kept its operationId
        found = by_id.get(op.operation_id or "")
        if op.key not in matched and found is not None and found.pk not in taken:
            matched[op.key] = found
            taken.add(found.pk)
    return matched


def _origin(tool: Tool) -> str:
    if tool.gateway_id is not None:
        return f"a tool of the gateway {tool.gateway.name!r}" if tool.gateway else "an upstream tool"
    meta = tool.backend_config.get("openapi") if isinstance(tool.backend_config, dict) else None
    if isinstance(meta, dict) and meta.get("source"):
        return f"a tool imported from {meta['source']!r}"
    return f"a {tool.get_integration_type_display()} tool"


def _fields(spec: ToolSpec, name: str, existing: Tool | None) -> dict[str, Any]:
    config = copy.deepcopy(spec.backend_config)
    if existing is not None and isinstance(existing.backend_config, dict):
        own = {k: v for k, v in existing.backend_config.items() if k not in IMPORTER_KEYS}
        if "auth" in config:  # the document says how to authenticate; otherwise the operator's choice stays
            own.pop("auth", None)
        config = {**copy.deepcopy(own), **config}
    return {
        "name": name,
        "title": spec.title,
        "description": spec.description,
        "input_schema": copy.deepcopy(spec.input_schema),
        "output_schema": copy.deepcopy(spec.output_schema),
        "annotations": dict(spec.annotations),
        "backend_config": config,
    }


def _missing_secrets(config: dict[str, Any], secrets: dict[str, str] | None, existing: Tool | None) -> list[str]:
    """The secrets the document's auth needs that are neither given nor already stored on the tool. A REST tool
    is only stored with complete credentials (registry.tool_kinds.rest), so such a tool goes without auth;
    secrets that are given are left for the REST rules to judge."""
    auth = config.get("auth")
    if not isinstance(auth, dict) or secrets is not None:
        return []
    stored = existing.get_credentials() if existing is not None and existing.has_credentials else {}
    return [key for key in AUTH_SECRETS.get(str(auth.get("type")), ()) if not stored.get(key)]


def _same(existing: Tool, fields: dict[str, Any], secrets: dict[str, str] | None) -> bool:
    """Whether storing ``fields`` (and ``secrets``) would change nothing, once the REST rules have
    normalised them."""
    if secrets is not None and existing.get_credentials() != {k: v for k, v in secrets.items() if v}:
        return False
    candidate = Tool(integration_type=IntegrationType.REST, **copy.deepcopy(fields))
    candidate.credentials_encrypted = existing.credentials_encrypted
    try:
        candidate.clean()
    except ValidationError:
        return False  # saving will say what is wrong
    return all(getattr(candidate, key) == getattr(existing, key) for key in FIELDS)


def _save(spec: ToolSpec, existing: Tool | None, fields: dict[str, Any], secrets: dict[str, str] | None) -> Tool:
    instance = existing or Tool(integration_type=IntegrationType.REST)
    where = f"{spec.operation} (tool {fields['name']!r})"
    try:
        if secrets is not None:
            instance.set_credentials(secrets)
        return services.entry_save(instance, data={**fields, "integration_type": IntegrationType.REST})
    except ValidationError as exc:
        raise InvalidInput(f"{where}: {' '.join(exc.messages)}") from None
    except CatalogError as exc:
        hint = ""
        if "credentials" in exc.errors and spec.security_scheme:
            hint = f" Give the secrets of its security scheme {spec.security_scheme!r} with the import's credentials."
        raise InvalidInput(f"{where}: {exc.message}{hint}", errors=exc.errors) from None


def _join_server(name: str, tools: list[Tool], report: OpenApiReport) -> bool:
    """Make the tools members of the virtual server ``name`` (created when missing); whether it changed."""
    server = VirtualServer.objects.filter(name=name).first()
    changed = False
    if server is None:
        try:
            server = services.entry_save(VirtualServer(), data={"name": name})
        except CatalogError as exc:
            raise InvalidInput(f"Virtual server {name!r}: {exc.message}", errors=exc.errors) from None
        report.server_created = changed = True
    present = set(server.tools.values_list("pk", flat=True))
    missing = [tool for tool in tools if tool.pk not in present]
    if missing:
        with audit.change(server):
            server.tools.add(*missing)
        changed = True
    return changed
