"""What every catalog admin shares: formatted JSON fields with errors shown on the field, bulk
enable/disable, and writes through the services.

Forms only parse what was typed; every add, change, delete, bulk delete and enable/disable goes
through ``registry.services``, so the admin applies the same rules as the REST API and commands and
each save is one catalog change announced on commit. An error a service raises on save is shown on
the form like any other validation error (see ``CatalogAdmin.changeform_view``)."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from registry import services
from registry.exceptions import CatalogError
from registry.representation import NATURAL_KEYS
from registry.services import UPSTREAM_FIELDS


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
                self.add_error(self.error_field(name), found)
        return data

    def error_field(self, name: str) -> str | None:
        """The form field that shows a model error keyed ``name``; None: a non-field error (a key the
        form has no field for, such as "credentials")."""
        return name if name in self.fields else None

    def add_error(self, field: str | None, error: Any) -> None:
        # The model's clean() runs in the form's validation too and may name fields the form lacks,
        # which Django's add_error refuses: show those where error_field says.
        if field is None and isinstance(error, ValidationError) and hasattr(error, "error_dict"):
            placed: dict[str, list[ValidationError]] = {}
            for name, errors in error.error_dict.items():
                target = NON_FIELD_ERRORS if name == NON_FIELD_ERRORS else self.error_field(name) or NON_FIELD_ERRORS
                placed.setdefault(target, []).extend(errors)
            error = ValidationError(placed)
        super().add_error(field, error)

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
    return str(getattr(obj, NATURAL_KEYS[type(obj)]))


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


class UpstreamFieldsReadOnly:
    """For the admin of an entry kind an upstream fills (tools, resources, templates, prompts): the
    fields the upstream owns (``registry.services.UPSTREAM_FIELDS``) are read-only on entries that come
    from a gateway; a sync writes them. Put it before CatalogAdmin in the bases."""

    model: Any

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        readonly = list(super().get_readonly_fields(request, obj))  # type: ignore[misc]
        if obj is not None and obj.gateway_id is not None:
            readonly += [field for field in UPSTREAM_FIELDS.get(self.model, ()) if field not in readonly]
        return readonly
