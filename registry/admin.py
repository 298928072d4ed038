"""The Django admin for the catalog: search, filters, bulk enable/disable, formatted JSON fields
with errors shown on the field, and write-only upstream credentials.

Forms only parse what was typed; every add, change, delete, bulk delete and enable/disable goes
through ``registry.services``, so the admin applies the same rules as the REST API and commands and
each save is one catalog change announced on commit. An error a service raises on save is shown on
the form like any other validation error (see ``CatalogAdmin.changeform_view``)."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from registry import services
from registry.choices import AuthType
from registry.exceptions import CatalogError
from registry.models import Gateway, Prompt, Resource, ResourceTemplate, RevokedToken, Tool, VirtualServer

admin.site.site_header = "MCP Gateway"
admin.site.site_title = "MCP Gateway"
admin.site.index_title = "Catalog administration"


class PrettyJSONField(forms.JSONField):
    """A JSON form field shown indented, with parse errors on the field."""

    widget = forms.Textarea(attrs={"rows": 8, "cols": 90, "style": "font-family: monospace"})
    default_error_messages = {"invalid": "Enter valid JSON (check quotes, commas and brackets)."}

    def __init__(self, *, empty_default: Any = None, **kwargs: Any) -> None:
        self.empty_default = empty_default  # a callable giving the value of an emptied box, or None
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)

    def to_python(self, value: Any) -> Any:
        if self.empty_default is not None and not self.disabled and value in self.empty_values:
            return self.empty_default()
        return super().to_python(value)


class CatalogForm(forms.ModelForm):  # type: ignore[type-arg]
    """A catalog entry's form: it parses the input and hands it to the services as they take it."""

    # An error the service raised when this very input was saved (set by CatalogAdmin.get_form).
    rejection: CatalogError | None = None

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.rejection is not None:
            errors = self.rejection.errors or {"__all__": [self.rejection.message]}
            for name, found in errors.items():
                # a key the form has no field for (such as "credentials") becomes a non-field error
                self.add_error(name if name in self.fields else None, found)
        return data

    def service_data(self) -> dict[str, Any]:
        """The cleaned model fields as the services take them: references by natural key."""
        data: dict[str, Any] = {}
        opts = self.instance._meta
        for field in [*opts.concrete_fields, *opts.many_to_many]:
            if field.name not in self.cleaned_data:
                continue
            value = self.cleaned_data[field.name]
            if field.many_to_many:
                value = [_natural_key(obj) for obj in value]
            elif field.many_to_one and value is not None:
                value = _natural_key(value)
            data[field.name] = value
        return data


def _natural_key(obj: models.Model) -> str:
    return str(getattr(obj, services.UNIQUE_KEY[type(obj)]))


class ServiceRejected(Exception):
    """A service refused the admin's save; its transaction is rolled back and the form shown again."""

    def __init__(self, error: CatalogError) -> None:
        super().__init__(error.message)
        self.error = error


REJECTION = "catalog_rejection"  # the request attribute that carries it to the form of the second pass


class CatalogAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Shared behaviour: formatted JSON, enable/disable actions, every write through the services."""

    form = CatalogForm
    formfield_overrides = {models.JSONField: {"form_class": PrettyJSONField}}
    actions = ["enable_selected", "disable_selected"]
    list_per_page = 50

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        # An emptied box of an optional, non-null JSON field means its default ([] or {}), not NULL.
        if isinstance(db_field, models.JSONField) and db_field.blank and not db_field.null:
            kwargs.setdefault("empty_default", db_field.get_default)
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    @admin.action(description="Enable selected %(verbose_name_plural)s")
    def enable_selected(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        count = services.entries_set_enabled(queryset, enabled=True)
        self.message_user(request, f"Enabled {count} {self.model._meta.verbose_name_plural}.", messages.SUCCESS)

    @admin.action(description="Disable selected %(verbose_name_plural)s")
    def disable_selected(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        count = services.entries_set_enabled(queryset, enabled=False)
        self.message_user(request, f"Disabled {count} {self.model._meta.verbose_name_plural}.", messages.SUCCESS)

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ServiceRejected as rejected:
            # The admin validates the form before it saves and cannot take an error back from
            # save_model; the save's transaction has rolled back, so run the view once more with the
            # service's error on the form: it renders invalid, with the error on its field.
            setattr(request, REJECTION, rejected.error)
            return super().changeform_view(request, object_id, form_url, extra_context)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        rejection = getattr(request, REJECTION, None)
        if rejection is not None:
            form = type(form.__name__, (form,), {"rejection": rejection})
        return form

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        try:
            if change:
                services.entry_update(obj, data=form.service_data())
            else:
                stored = services.entry_create(self.model, data=form.service_data())
                obj.pk = stored.pk  # the admin goes on with its own object (history, redirect)
                obj.refresh_from_db()
        except CatalogError as exc:
            raise ServiceRejected(exc) from exc

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        """Nothing left to save: the service set the members with the entry (the catalog has no inlines)."""

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        services.entry_delete(obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        services.entries_delete(queryset)


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


@admin.register(Tool)
class ToolAdmin(CatalogAdmin):
    list_display = ["name", "title", "integration_type", "gateway", "enabled", "tag_list"]
    list_filter = ["enabled", "integration_type", ("gateway", admin.RelatedOnlyFieldListFilter), TagFilter]
    search_fields = ["name", "title", "description", "original_name"]
    list_select_related = ["gateway"]
    fieldsets = [
        (None, {"fields": ["name", "title", "description", "enabled", "tags", "timeout"]}),
        ("Schemas", {"fields": ["input_schema", "output_schema", "annotations"]}),
        ("Backend", {"fields": ["integration_type", "gateway", "original_name", "backend_config"]}),
    ]

    @admin.display(description="tags")
    def tag_list(self, obj: Tool) -> str:
        return ", ".join(obj.tags)


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
