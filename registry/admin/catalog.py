"""The admin of the catalog's entries other than tools: gateways (with write-only credentials),
resources, resource templates, prompts, virtual servers and revoked tokens."""

from __future__ import annotations

import json
from contextvars import ContextVar
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from registry import hooks, selectors
from registry.admin import composer
from registry.admin.base import CatalogAdmin, CatalogForm, UpstreamFieldsReadOnly
from registry.choices import AuthType, Health
from registry.models import Gateway, Prompt, Resource, ResourceTemplate, RevokedToken, SyncRun, VirtualServer

HEALTH_COLORS = {
    Health.HEALTHY: "#1a7f37",
    Health.DEGRADED: "#9a6700",
    Health.UNREACHABLE: "#cf222e",
    Health.UNKNOWN: "#6e7781",
}


class GatewayForm(CatalogForm):
    """Credentials are write-only: blank fields keep what is stored; nothing stored is ever shown."""

    credentials: dict[str, Any] | None = None  # what to store, None to keep what is stored

    username = forms.CharField(required=False, help_text="Basic: the username.")
    password = forms.CharField(
        required=False, widget=forms.PasswordInput(render_value=False), help_text="Basic: the password."
    )
    token = forms.CharField(
        required=False, widget=forms.PasswordInput(render_value=False), help_text="Bearer: the token."
    )
    headers = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 90, "style": "font-family: monospace"}),
        help_text="Custom headers: one 'Name: value' per line.",
    )
    client_secret = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="OAuth: the gateway's client secret at the authorization server (empty for a public client).",
    )

    class Meta:
        model = Gateway
        fields = [
            "name",
            "description",
            "enabled",
            "transport",
            "era",
            "url",
            "command",
            "args",
            "env",
            "cwd",
            "auth_type",
            "per_user_credentials",
            "oauth_token_url",
            "oauth_authorization_url",
            "oauth_client_id",
            "oauth_scopes",
            "verify_tls",
            "ca_bundle",
            "sync_interval",
            "redundancy_group",
            "priority",
            "per_user_process",
            "start_at_boot",
            "rate_limit",
            "max_concurrency",
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        auth_type = data.get("auth_type") or AuthType.NONE
        given = {
            "username": data.get("username") or None,
            "password": data.get("password") or None,
            "token": data.get("token") or None,
            "client_secret": data.get("client_secret") or None,
        }
        headers: dict[str, str] = {}
        for line in (data.get("headers") or "").splitlines():
            if not line.strip():
                continue
            name, sep, value = line.partition(":")
            if not sep:
                self.add_error("headers", f"Line {line!r} is not 'Name: value'.")
                return data
            headers[name.strip()] = value.strip()
        keep = self.instance.pk and auth_type == self.instance.auth_type and not any(given.values()) and not headers
        per_user = bool(data.get("per_user_credentials"))
        if per_user and auth_type in (AuthType.BASIC, AuthType.BEARER, AuthType.HEADERS) and not any(given.values()):
            keep = False  # each user brings their own: the gateway stores none
        if not keep:  # the service checks them (a missing token is an error) and encrypts them
            self.credentials = {k: v for k, v in given.items() if v}
            if headers:
                self.credentials["headers"] = headers
        return data

    def service_data(self) -> dict[str, Any]:
        data = super().service_data()
        if self.credentials is not None:
            data["credentials"] = self.credentials
        return data


class RecentSyncRuns(BaseInlineFormSet):  # type: ignore[type-arg]
    """The newest runs only: a busy gateway keeps GATEWAY_SYNC_RUNS_KEPT of them."""

    def get_queryset(self) -> QuerySet[Any]:
        return super().get_queryset().order_by("-started_at", "-pk")[: SyncRunInline.shown]


class SyncRunInline(admin.TabularInline):  # type: ignore[type-arg]
    """The gateway's last sync runs, read-only (they are records of what happened)."""

    model = SyncRun
    formset = RecentSyncRuns
    shown = 10
    verbose_name_plural = f"last {shown} sync runs"
    fields = readonly_fields = ("started_at", "trigger", "ok", "duration_ms", "changes", "error")
    can_delete = False
    extra = 0
    max_num = 0
    show_change_link = False

    @admin.display(description="changes")
    def changes(self, obj: SyncRun) -> str:
        """The run's diff: counts, and each entry added (+), updated (~), removed (-), held or skipped."""
        kinds = {"added": "+", "updated": "~", "removed": "-", "held": "held", "skipped": "skipped"}
        lists = {name: list(getattr(obj, name) or []) for name in kinds}
        summary = ", ".join(f"{len(items)} {name}" for name, items in lists.items() if items)
        if not summary:
            return "none"
        lines = [(kinds[name], item) for name, items in lists.items() for item in items]
        return format_html(
            "<details><summary>{}</summary><pre>{}</pre></details>",
            summary,
            format_html_join("\n", "{} {}", lines),
        )

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Gateway)
class GatewayAdmin(CatalogAdmin):
    form = GatewayForm
    inlines = [SyncRunInline]
    actions = ["enable_selected", "disable_selected", "check_now", "sync_now"]
    list_display = [
        "name",
        "transport",
        "endpoint",
        "enabled",
        "health_badge",
        "last_error_short",
        "last_synced_at",
        "redundancy_group",
        "detected_era",
    ]
    list_filter = ["enabled", "health", "transport", "era", "detected_era", "auth_type", "redundancy_group"]
    search_fields = ["name", "description", "url", "command", "redundancy_group"]
    readonly_fields = [
        "health",
        "last_error",
        "last_seen_at",
        "consecutive_failures",
        "health_changed_at",
        "last_checked_at",
        "next_check_at",
        "last_synced_at",
        "process_state_json",
        "lease",
        "definition_changes",
        "detected_era",
        "protocol_version",
        "server_info_json",
        "capabilities_json",
        "credentials_stored",
    ]
    fieldsets = [
        (None, {"fields": ["name", "description", "enabled", "transport", "era"]}),
        ("Remote server", {"fields": ["url", "verify_tls", "ca_bundle"]}),
        ("Local process (stdio)", {"fields": ["command", "args", "env", "cwd", "per_user_process", "start_at_boot"]}),
        (
            "Credentials (write-only)",
            {
                "fields": [
                    "auth_type",
                    "per_user_credentials",
                    "credentials_stored",
                    "username",
                    "password",
                    "token",
                    "headers",
                    "client_secret",
                ]
            },
        ),
        (
            "OAuth toward the upstream",
            {"fields": ["oauth_token_url", "oauth_authorization_url", "oauth_client_id", "oauth_scopes"]},
        ),
        ("Operations", {"fields": ["sync_interval", "redundancy_group", "priority"]}),
        ("Limits", {"fields": ["rate_limit", "max_concurrency"]}),
        (
            "Health (learned by the gateway)",
            {
                "fields": [
                    "health",
                    "last_error",
                    "consecutive_failures",
                    "last_seen_at",
                    "health_changed_at",
                    "last_checked_at",
                    "next_check_at",
                    "last_synced_at",
                    "process_state_json",
                    "lease",
                    "definition_changes",
                ]
            },
        ),
        (
            "Reported by the upstream",
            {
                "fields": [
                    "detected_era",
                    "protocol_version",
                    "server_info_json",
                    "capabilities_json",
                ]
            },
        ),
    ]

    def get_inline_instances(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        # The only inline (sync runs) is read-only: a save submits nothing for it, so it takes no part in one
        # (no management form to send, nothing to validate or save).
        if request.method == "POST":
            return []
        return super().get_inline_instances(request, obj)

    @admin.display(description="health", ordering="health")
    def health_badge(self, obj: Gateway) -> str:
        color = HEALTH_COLORS.get(Health(obj.health), "#6e7781")
        return format_html(
            '<span style="background:{};color:#fff;border-radius:8px;padding:1px 8px;white-space:nowrap">{}</span>',
            color,
            obj.get_health_display(),
        )

    @admin.display(description="last error")
    def last_error_short(self, obj: Gateway) -> str:
        text = obj.last_error
        return text if len(text) <= 80 else text[:79] + "…"

    @admin.display(description="process state")
    def process_state_json(self, obj: Gateway) -> str:
        return json.dumps(obj.process_state, indent=2) if obj.process_state else "-"

    @admin.display(description="changed tool definitions waiting")
    def definition_changes(self, obj: Gateway) -> str:
        if obj.pk is None:
            return "-"
        held = list(obj.tools.filter(pending_definition__isnull=False).order_by("name").values_list("name", flat=True))
        if not held:
            return "none"
        url = reverse("admin:registry_tool_changelist") + f"?gateway__id__exact={obj.pk}&drift=yes"
        return format_html('{} (<a href="{}">review, approve or reject</a>)', ", ".join(held), url)

    @admin.display(description="lease (a check or sync running)")
    def lease(self, obj: Gateway) -> str:
        if not (obj.lease_owner and obj.lease_until):
            return "-"
        return f"{obj.lease_owner} until {obj.lease_until:%Y-%m-%d %H:%M:%S}"

    @admin.action(description="Check now (health)")
    def check_now(self, request: HttpRequest, queryset: QuerySet[Gateway]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        for gateway_id in ids:
            hooks.gateway_check_requested.send(sender=Gateway, gateway_id=gateway_id)
        self.message_user(request, f"Health check of {len(ids)} gateway(s) requested.", messages.SUCCESS)

    @admin.action(description="Sync now (read the catalog)")
    def sync_now(self, request: HttpRequest, queryset: QuerySet[Gateway]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        for gateway_id in ids:
            hooks.gateway_sync_requested.send(sender=Gateway, gateway_id=gateway_id)
        self.message_user(request, f"Sync of {len(ids)} gateway(s) requested.", messages.SUCCESS)

    @admin.display(description="URL or command")
    def endpoint(self, obj: Gateway) -> str:
        return obj.url or " ".join([obj.command, *obj.args])

    @admin.display(description="stored credentials", boolean=True)
    def credentials_stored(self, obj: Gateway) -> bool:
        return obj.has_credentials

    @admin.display(description="server info")
    def server_info_json(self, obj: Gateway) -> str:
        return json.dumps(obj.server_info, indent=2)

    @admin.display(description="capabilities")
    def capabilities_json(self, obj: Gateway) -> str:
        return json.dumps(obj.capabilities, indent=2)


class ResourceForm(CatalogForm):
    """The binary content is not editable here; an empty text box is "no text" when another source exists."""

    class Meta:
        model = Resource
        fields = [
            "uri",
            "name",
            "title",
            "description",
            "mime_type",
            "text",
            "gateway",
            "original_uri",
            "annotations",
            "enabled",
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("text") == "" and (data.get("gateway") is not None or self.instance.blob is not None):
            data["text"] = None
        return data


@admin.register(Resource)
class ResourceAdmin(UpstreamFieldsReadOnly, CatalogAdmin):
    form = ResourceForm
    list_display = ["uri", "name", "mime_type", "gateway", "enabled"]
    list_filter = ["enabled", ("gateway", admin.RelatedOnlyFieldListFilter), "mime_type"]
    search_fields = ["uri", "name", "title", "description"]
    list_select_related = ["gateway"]
    exclude = ["blob"]


@admin.register(ResourceTemplate)
class ResourceTemplateAdmin(UpstreamFieldsReadOnly, CatalogAdmin):
    list_display = ["uri_template", "name", "mime_type", "gateway", "enabled"]
    list_filter = ["enabled", ("gateway", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["uri_template", "name", "title", "description"]
    list_select_related = ["gateway"]


@admin.register(Prompt)
class PromptAdmin(UpstreamFieldsReadOnly, CatalogAdmin):
    list_display = ["name", "title", "gateway", "enabled"]
    list_filter = ["enabled", ("gateway", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["name", "title", "description", "template"]
    list_select_related = ["gateway"]


# This gateway's base URL while a virtual server's page renders (see VirtualServerAdmin.change_view).
_BASE_URL: ContextVar[str] = ContextVar("admin_base_url", default="http://127.0.0.1:8000")


@admin.register(VirtualServer)
class VirtualServerAdmin(CatalogAdmin):
    list_display = ["name", "title", "enabled", "tool_count", "resource_count", "prompt_count", "endpoint"]
    list_filter = ["enabled"]
    search_fields = ["name", "title", "description"]
    filter_horizontal = ["tools", "resources", "resource_templates", "prompts"]
    readonly_fields = ["endpoints", "client_configuration", "served_tools"]

    def get_urls(self) -> list[URLPattern]:
        def compose(request: HttpRequest, object_id: str | None = None) -> HttpResponse:
            return composer.compose_view(request, self, object_id)

        wrap = self.admin_site.admin_view  # staff only, CSRF-protected, never cached
        # Before the admin's own URLs: their "<path:object_id>/" would take "compose/" for an object's id.
        return [
            path("compose/", wrap(compose), name="registry_virtualserver_compose_new"),
            path("<path:object_id>/compose/", wrap(compose), name="registry_virtualserver_compose"),
            *super().get_urls(),
        ]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None) -> Any:
        # The client configuration names this gateway's own address, which only the request knows; the page
        # is rendered here, while it is set (read-only fields are computed at render time).
        token = _BASE_URL.set(request.build_absolute_uri("/").rstrip("/"))
        try:
            response = super().change_view(request, object_id, form_url, extra_context)
            if hasattr(response, "render"):
                response.render()
            return response
        finally:
            _BASE_URL.reset(token)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        # What each server really serves: its chosen entries plus everything from its gateways.
        return super().get_queryset(request).annotate(**selectors.served_counts())

    @admin.display(description="tools served", ordering="tools_served")
    def tool_count(self, obj: Any) -> int:
        return int(obj.tools_served or 0)

    @admin.display(description="resources served", ordering="resources_served")
    def resource_count(self, obj: Any) -> int:
        return int(obj.resources_served or 0)

    @admin.display(description="prompts served", ordering="prompts_served")
    def prompt_count(self, obj: Any) -> int:
        return int(obj.prompts_served or 0)

    @admin.display(description="MCP endpoint")
    def endpoint(self, obj: Any) -> str:
        return f"/servers/{obj.name}/mcp"

    @admin.display(description="endpoints")
    def endpoints(self, obj: Any) -> str:
        if obj is None or not obj.pk:
            return "-"
        base = f"/servers/{obj.name}"
        rows = [
            ("Streamable HTTP (2025-11-25 sessions and 2026-07-28)", f"{base}/mcp"),
            ("HTTP+SSE (2024-11-05)", f"{base}/sse"),
            ("WebSocket", f"{base}/ws"),
            ("JSON-RPC over plain HTTP", f"{base}/rpc"),
        ]
        return format_html_join(mark_safe("<br>"), "{}: <code>{}</code>", rows)

    @admin.display(description="client configuration")
    def client_configuration(self, obj: Any) -> str:
        if obj is None or not obj.pk:
            return "-"
        blocks = composer.client_configuration(name=obj.name, base_url=_BASE_URL.get())
        issue = reverse("admin:registry_issuedtoken_add") + f"?server={obj.pk}"
        return format_html(
            '{}<p><a href="{}">Issue a token for this server</a> (it opens only this server\'s endpoints).</p>',
            format_html_join("", '<p><strong>{}</strong></p><pre style="white-space: pre-wrap">{}</pre>', blocks),
            issue,
        )

    @admin.display(description="tools it serves")
    def served_tools(self, obj: Any) -> str:
        if obj is None or not obj.pk:
            return "-"
        tools = [
            (
                tool.name,
                tool.gateway.name if tool.gateway else tool.get_integration_type_display(),
                tool.served_description,
            )
            for tool in selectors.server_tools(obj)
        ]
        if not tools:
            return "none yet: choose tools or gateways above"
        rows = format_html_join(
            "", "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>", [(n, s, d[:160]) for n, s, d in tools]
        )
        return format_html(
            '<table id="served-tools"><thead><tr><th>tool</th><th>from</th><th>description</th></tr></thead>'
            '<tbody>{}</tbody></table><p class="help">As stored: {} tools (tools of a redundancy group are '
            "listed once by clients).</p>",
            rows,
            len(tools),
        )


@admin.register(RevokedToken)
class RevokedTokenAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["jti", "subject", "revoked_at", "expires_at", "reason"]
    search_fields = ["jti", "subject", "reason"]
    readonly_fields = ["revoked_at"]
