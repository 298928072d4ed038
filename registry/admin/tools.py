"""The tool admin: the integration type, the backend definition as JSON with help and an example for
each kind, and a REST tool's write-only credentials. The "Test call" and "Import OpenAPI" pages need
the runtime and live in ``transports.admin_views``; the templates under ``admin/registry/tool/`` link
to them."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from registry import catalog_sync
from registry.admin.base import CatalogAdmin, CatalogForm, UpstreamFieldsReadOnly
from registry.catalog_sync import field_diff
from registry.choices import IntegrationType
from registry.exceptions import CatalogError
from registry.models import Tool

# Which credentials each REST authentication type takes (docs/tool-backends.md, "REST").
AUTH_KEYS: dict[str, tuple[str, ...]] = {
    "basic": ("username", "password"),
    "bearer": ("token",),
    "api_key": ("key",),
    "oauth2": ("client_id", "client_secret"),
}
CREDENTIAL_KEYS = ("username", "password", "token", "key", "client_id", "client_secret")

KIND_HELP: dict[str, tuple[str, Any]] = {
    IntegrationType.REST: (
        "url (an RFC 6570 template over the arguments; required), method, headers, params (where each "
        "argument goes: in path, query, header or body), body (encoding json, form or raw), auth (type none, "
        "basic, bearer, api_key or oauth2; the secrets go in the credentials below), retries, verify_tls, "
        "ca_bundle, extract (JMESPath), max_response_bytes.",
        {
            "url": "https://api.example.com/v1/users/{user_id}/posts{?limit}",
            "method": "GET",
            "headers": {"Accept": "application/json"},
            "params": {"user_id": {"in": "path"}, "trace": {"in": "header", "name": "X-Trace-Id"}},
            "auth": {"type": "bearer"},
            "retries": 2,
            "extract": "data.items",
        },
    ),
    IntegrationType.CLI: (
        "command (an absolute path or a program on PATH; never run through a shell), args (one argv element "
        "each: {name} is the argument's value, {name*} one element per item), env (names of variables passed "
        "on), cwd, max_output_bytes, output (text or json).",
        {
            "command": "/usr/bin/grep",
            "args": ["-n", "--max-count={limit}", "--", "{pattern}", "{files*}"],
            "env": ["LANG"],
            "cwd": "/srv/data",
            "output": "text",
        },
    ),
    IntegrationType.FUNCTION: (
        "function: the dotted path of a function allowed by GATEWAY_FUNCTION_TOOLS. Leave the input schema "
        "at its default to derive it from the function's type hints and docstring.",
        {"function": "myapp.tools.convert_currency"},
    ),
    IntegrationType.MCP: ("MCP tools come from their gateway and take no definition: leave {}.", {}),
}


def backend_config_help(kind: str) -> str:
    """The per-kind help of the definition box (HTML): the chosen kind's open, the others folded."""
    parts = []
    for key, (fields, example) in KIND_HELP.items():
        extra = ""
        if key == IntegrationType.FUNCTION:
            allowed = ", ".join(settings.GATEWAY_FUNCTION_TOOLS) or "nothing (the setting is empty)"
            extra = f" Allowed here: {allowed}."
        parts.append(
            format_html(
                '<details data-kind="{}"{}><summary>{} tools</summary><p>{}{}</p><pre>{}</pre></details>',
                key,
                " open" if key == kind else "",
                IntegrationType(key).label,
                fields,
                extra,
                json.dumps(example, indent=2),
            )
        )
    intro = "The tool's definition for its integration type (docs/tool-backends.md). Example for each kind:"
    return format_html("{}{}", intro, format_html_join("", "{}", ((part,) for part in parts)))


def _secret(help_text: str) -> forms.CharField:
    return forms.CharField(required=False, widget=forms.PasswordInput(render_value=False), help_text=help_text)


class ToolForm(CatalogForm):
    """Credentials are write-only: blank boxes keep what is stored (the values of the current auth
    type), typed ones replace them, and the checkbox clears them."""

    credentials: dict[str, Any] | None = None  # what to store, None to keep what is stored

    username = forms.CharField(required=False, help_text="auth type basic.")
    password = _secret("auth type basic.")
    token = _secret("auth type bearer.")
    key = _secret("auth type api_key.")
    client_id = forms.CharField(required=False, help_text="auth type oauth2.")
    client_secret = _secret("auth type oauth2.")
    clear_credentials = forms.BooleanField(required=False, help_text="Remove every stored credential.")

    class Meta:
        model = Tool
        fields = [
            "name",
            "title",
            "description",
            "description_override",
            "enabled",
            "tags",
            "timeout",
            "rate_limit",
            "integration_type",
            "gateway",
            "original_name",
            "backend_config",
            "input_schema",
            "output_schema",
            "annotations",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The kind as submitted (a form shown again with errors), chosen by ?integration_type=, or stored.
        kind = (self.data.get("integration_type") if self.is_bound else None) or self.initial.get(
            "integration_type", self.instance.integration_type
        )
        if "backend_config" in self.fields:
            self.fields["backend_config"].help_text = backend_config_help(str(kind))

    def _auth_type(self) -> str:
        config = self.cleaned_data.get("backend_config")
        auth = config.get("auth") if isinstance(config, dict) else None
        kind = auth.get("type") if isinstance(auth, dict) else None
        return kind if isinstance(kind, str) else "none"

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        given = {key: data[key] for key in CREDENTIAL_KEYS if data.get(key)}
        if data.get("clear_credentials"):
            if given:
                self.add_error("clear_credentials", "Either clear the stored credentials or type new ones, not both.")
            else:
                self.credentials = {}
        elif given:
            try:
                stored = self.instance.get_credentials() if self.instance.pk else {}
            except CatalogError:  # undecryptable (keys changed): what is typed now replaces it
                stored = {}
            applies = AUTH_KEYS.get(self._auth_type(), ())
            self.credentials = {key: value for key, value in stored.items() if key in applies} | given
        if self.credentials is not None:
            # The model's rules (run next, in _post_clean) check the credentials the tool will have.
            try:
                self.instance.set_credentials(self.credentials)
            except ValidationError as exc:
                self.add_error(None, exc)
        return data

    def error_field(self, name: str) -> str | None:
        if name == "credentials":  # beside the first box of the auth type, or the clear checkbox
            keys = AUTH_KEYS.get(self._auth_type() if hasattr(self, "cleaned_data") else "none")
            return keys[0] if keys else "clear_credentials"
        return super().error_field(name)

    def service_data(self) -> dict[str, Any]:
        data = super().service_data()
        if self.credentials is not None:
            data["credentials"] = self.credentials
        return data


class TagFilter(admin.SimpleListFilter):
    title = "tag"
    parameter_name = "tag"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        tags = sorted({tag for tags in Tool.objects.values_list("tags", flat=True) for tag in tags or []})
        return [(tag, tag) for tag in tags]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value():
            return queryset.filter(tags__icontains=json.dumps(self.value()))
        return queryset


class DriftPendingFilter(admin.SimpleListFilter):
    title = "definition change pending"
    parameter_name = "drift"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "yes":
            return queryset.filter(pending_definition__isnull=False)
        if self.value() == "no":
            return queryset.filter(pending_definition__isnull=True)
        return queryset


# Read-only JSON fields of a gateway's tool, shown by a method that indents them.
SHOWN_JSON = {name: f"{name}_shown" for name in ("input_schema", "output_schema", "annotations")}


def pretty_json(value: Any) -> str:
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, ensure_ascii=False))


def render_diff(changes: list[dict[str, Any]]) -> str:
    """A definition change's per-field diff as HTML: the unified text diff, or before → after."""
    parts = []
    for item in changes:
        text = item.get("text") or f"- {json.dumps(item.get('before'))}\n+ {json.dumps(item.get('after'))}"
        parts.append((item.get("field", "?"), text))
    return format_html_join(
        "", '<p><strong>{}</strong></p><pre style="white-space: pre-wrap">{}</pre>', parts
    ) or format_html("{}", "no field changed")


@admin.register(Tool)
class ToolAdmin(UpstreamFieldsReadOnly, CatalogAdmin):
    form = ToolForm
    list_display = ["name", "title", "integration_type", "gateway", "enabled", "tag_list", "drift_pending"]
    list_filter = [
        "enabled",
        "integration_type",
        ("gateway", admin.RelatedOnlyFieldListFilter),
        TagFilter,
        DriftPendingFilter,
    ]
    search_fields = ["name", "title", "description", "original_name"]
    list_select_related = ["gateway"]
    readonly_fields = ["credentials_stored", "pending_change"]
    actions = ["enable_selected", "disable_selected", "approve_definitions", "reject_definitions"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "name",
                    "title",
                    "description",
                    "description_override",
                    "enabled",
                    "tags",
                    "timeout",
                    "rate_limit",
                ]
            },
        ),
        ("Backend", {"fields": ["integration_type", "gateway", "original_name", "backend_config"]}),
        (
            "Credentials (write-only; REST tools)",
            {
                "fields": ["credentials_stored", *CREDENTIAL_KEYS, "clear_credentials"],
                "description": "Which apply depends on backend_config.auth.type: basic: username and password; "
                "bearer: token; api_key: key; oauth2: client_id and client_secret. Blank boxes keep what is "
                "stored; nothing stored is ever shown.",
            },
        ),
        ("Schemas", {"fields": ["input_schema", "output_schema", "annotations"]}),
    ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        readonly = list(super().get_readonly_fields(request, obj))
        if obj is not None and obj.gateway_id is not None:  # JSON shown indented, as in the edit boxes
            readonly = [SHOWN_JSON.get(field, field) for field in readonly]
        return readonly

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        fieldsets = list(super().get_fieldsets(request, obj))
        if obj is not None and obj.gateway_id is not None:
            fieldsets = [
                (name, {**options, "fields": [SHOWN_JSON.get(str(f), str(f)) for f in options["fields"]]})
                for name, options in fieldsets
            ]
        if obj is not None and obj.pending_definition is not None:
            description = (
                "The upstream changed this tool's definition; the one above keeps serving until the change is "
                'approved (the "Approve changed definitions" action of the tool list, the API or '
                "`manage.py drift_approve`)."
            )
            fieldsets.insert(
                0,
                (
                    "Changed upstream definition, waiting for approval",
                    {"fields": ["pending_change"], "description": description},
                ),
            )
        return fieldsets

    @admin.display(description="input schema")
    def input_schema_shown(self, obj: Tool) -> str:
        return pretty_json(obj.input_schema)

    @admin.display(description="output schema")
    def output_schema_shown(self, obj: Tool) -> str:
        return pretty_json(obj.output_schema)

    @admin.display(description="annotations")
    def annotations_shown(self, obj: Tool) -> str:
        return pretty_json(obj.annotations)

    @admin.display(description="tags")
    def tag_list(self, obj: Tool) -> str:
        return ", ".join(obj.tags)

    @admin.display(description="change pending", boolean=True)
    def drift_pending(self, obj: Tool) -> bool:
        return obj.pending_definition is not None

    @admin.display(description="changes")
    def pending_change(self, obj: Tool) -> str:
        if obj.pending_definition is None:
            return "none"
        since = f"{obj.drift_detected_at:%Y-%m-%d %H:%M:%S}" if obj.drift_detected_at else "?"
        return format_html(
            "<p>Detected {}.</p>{}", since, render_diff(field_diff(obj.definition(), obj.pending_definition))
        )

    @admin.action(description="Approve changed definitions")
    def approve_definitions(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        approved = catalog_sync.definition_changes_approve(tools=queryset, user=request.user.get_username())
        if approved:
            names = ", ".join(sorted(change.tool.name for change in approved))
            self.message_user(
                request, f"Approved the changed definitions of {len(approved)} tools: {names}.", messages.SUCCESS
            )
        else:
            self.message_user(request, "None of the selected tools has a changed definition waiting.", messages.WARNING)

    @admin.action(description="Reject changed definitions (keep the approved ones)", permissions=["change"])
    def reject_definitions(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        rejected = catalog_sync.definition_changes_reject(tools=queryset, user=request.user.get_username())
        if rejected:
            names = ", ".join(sorted(change.tool.name for change in rejected))
            self.message_user(
                request,
                f"Rejected the changed definitions of {len(rejected)} tools: {names}. "
                "Their approved definitions stay; the same change will not be held again.",
                messages.SUCCESS,
            )
        else:
            self.message_user(request, "None of the selected tools has a changed definition waiting.", messages.WARNING)

    @admin.display(description="stored credentials")
    def credentials_stored(self, obj: Tool) -> str:
        if not obj.has_credentials:
            return "none"
        try:
            return "stored: " + ", ".join(sorted(obj.get_credentials()))
        except CatalogError as exc:
            return f"stored, unreadable: {exc.message}"
