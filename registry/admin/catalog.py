"""The admin of the catalog's entries other than tools: gateways (with write-only credentials),
resources, resource templates, prompts, virtual servers and revoked tokens."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest

from registry.admin.base import CatalogAdmin, CatalogForm
from registry.choices import AuthType
from registry.models import Gateway, Prompt, Resource, ResourceTemplate, RevokedToken, VirtualServer


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
            "verify_tls",
            "ca_bundle",
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        auth_type = data.get("auth_type") or AuthType.NONE
        given = {
            "username": data.get("username") or None,
            "password": data.get("password") or None,
            "token": data.get("token") or None,
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


@admin.register(Gateway)
class GatewayAdmin(CatalogAdmin):
    form = GatewayForm
    list_display = [
        "name",
        "transport",
        "era",
        "detected_era",
        "endpoint",
        "enabled",
        "health",
        "last_seen_at",
        "auth_type",
    ]
    list_filter = ["enabled", "health", "transport", "era", "detected_era", "auth_type"]
    search_fields = ["name", "description", "url", "command"]
    readonly_fields = [
        "health",
        "last_error",
        "last_seen_at",
        "detected_era",
        "protocol_version",
        "server_info_json",
        "capabilities_json",
        "credentials_stored",
    ]
    fieldsets = [
        (None, {"fields": ["name", "description", "enabled", "transport", "era"]}),
        ("Remote server", {"fields": ["url", "verify_tls", "ca_bundle"]}),
        ("Local process (stdio)", {"fields": ["command", "args", "env", "cwd"]}),
        (
            "Credentials (write-only)",
            {"fields": ["auth_type", "credentials_stored", "username", "password", "token", "headers"]},
        ),
        (
            "Reported by the upstream",
            {
                "fields": [
                    "health",
                    "last_error",
                    "last_seen_at",
                    "detected_era",
                    "protocol_version",
                    "server_info_json",
                    "capabilities_json",
                ]
            },
        ),
    ]

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
class ResourceAdmin(CatalogAdmin):
    form = ResourceForm
    list_display = ["uri", "name", "mime_type", "gateway", "enabled"]
    list_filter = ["enabled", ("gateway", admin.RelatedOnlyFieldListFilter), "mime_type"]
    search_fields = ["uri", "name", "title", "description"]
    list_select_related = ["gateway"]
    exclude = ["blob"]


@admin.register(ResourceTemplate)
class ResourceTemplateAdmin(CatalogAdmin):
    list_display = ["uri_template", "name", "mime_type", "gateway", "enabled"]
    list_filter = ["enabled", ("gateway", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["uri_template", "name", "title", "description"]
    list_select_related = ["gateway"]


@admin.register(Prompt)
class PromptAdmin(CatalogAdmin):
    list_display = ["name", "title", "gateway", "enabled"]
    list_filter = ["enabled", ("gateway", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["name", "title", "description", "template"]
    list_select_related = ["gateway"]


@admin.register(VirtualServer)
class VirtualServerAdmin(CatalogAdmin):
    list_display = ["name", "title", "enabled", "tool_count"]
    list_filter = ["enabled"]
    search_fields = ["name", "title", "description"]
    filter_horizontal = ["tools", "resources", "resource_templates", "prompts"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).annotate(tool_total=models.Count("tools"))

    @admin.display(description="tools", ordering="tool_total")
    def tool_count(self, obj: Any) -> int:
        return int(obj.tool_total)


@admin.register(RevokedToken)
class RevokedTokenAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["jti", "subject", "revoked_at", "expires_at", "reason"]
    search_fields = ["jti", "subject", "reason"]
    readonly_fields = ["revoked_at"]
