"""Admin pages that need the runtime, so they live here rather than in ``registry.admin``: a tool's
"Test call" (run it with JSON arguments, see the result, what it sent on the way and the time it
took) and "Import OpenAPI" (a file or a URL). Mounted under /admin/ by gateway_project.urls; linked
from the tool pages by the templates under ``admin/registry/tool/``."""

from __future__ import annotations

import json
from typing import Any

from asgiref.sync import async_to_sync
from django import forms
from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.views.decorators.cache import never_cache

from registry import auth, selectors
from registry.exceptions import CatalogError, NotFound
from registry.models import Tool
from transports import openapi_sources
from transports.protocol.core import Caller
from transports.tool_calls import ToolCallReport, tool_call

MONOSPACE = {"rows": 10, "cols": 90, "style": "font-family: monospace"}
# Who may run a tool from the admin: a call can act on the world (a REST POST, a command), so it takes
# the right to change the tool, not only to view it.
CALL_PERMISSION = "registry.change_tool"
# An import adds, changes and removes tools.
IMPORT_PERMISSIONS = ("registry.add_tool", "registry.change_tool", "registry.delete_tool")

_PLACEHOLDERS: dict[str, Any] = {"string": "", "integer": 0, "number": 0, "boolean": False, "array": [], "object": {}}


def sample_arguments(schema: dict[str, Any]) -> dict[str, Any]:
    """Arguments to start from: the required ones, each with its default or an empty value of its type."""
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    sample: dict[str, Any] = {}
    for name in schema.get("required") or []:
        spec = properties.get(name)
        spec = spec if isinstance(spec, dict) else {}
        kind = spec.get("type")
        placeholder = _PLACEHOLDERS.get(kind) if isinstance(kind, str) else None
        sample[name] = spec.get("default", placeholder)
    return sample


FIELD_PREFIX = "arg_"


def _schema_field(spec: dict[str, Any], *, required: bool) -> forms.Field:
    """A form field for one argument: text, number, checkbox or choice by its JSON Schema type; anything
    else (objects, arrays, unions) as JSON text."""
    kind = spec.get("type")
    help_text = str(spec.get("description") or "")
    common: dict[str, Any] = {"required": required, "help_text": help_text}
    enum = spec.get("enum")
    if isinstance(enum, list) and enum and all(isinstance(value, str | int | float) for value in enum):
        choices = [("", "---")] if not required else []
        return forms.TypedChoiceField(
            choices=choices + [(json.dumps(value), str(value)) for value in enum],
            coerce=json.loads,
            empty_value=None,
            **common,
        )
    if kind == "boolean":
        return forms.NullBooleanField(
            widget=forms.Select(choices=[("unknown", "---"), ("true", "true"), ("false", "false")]), **common
        )
    if kind == "integer":
        return forms.IntegerField(**common)
    if kind == "number":
        return forms.FloatField(**common)
    if kind == "string":
        return forms.CharField(strip=False, **common)
    return forms.JSONField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60, "style": "font-family: monospace"}), **common
    )


class TestCallForm(forms.Form):
    """The tool's arguments: one field per top-level property of its input schema (typed as the schema
    says), or the whole object as JSON, which wins when given."""

    arguments = forms.CharField(  # parsed here: a JSONField would show an empty box as "null" again
        required=False,
        strip=True,
        widget=forms.Textarea(attrs=MONOSPACE),
        label="Arguments as JSON",
        help_text="Or the whole arguments object as JSON (used instead of the fields above when given); "
        "arguments are checked against the tool's input schema first.",
    )

    def __init__(self, *args: Any, schema: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        schema = schema or {}
        properties = schema.get("properties")
        required = set(schema.get("required") or [])
        self.argument_names: list[str] = []
        if isinstance(properties, dict):
            for name, spec in properties.items():
                if isinstance(spec, dict):
                    field = _schema_field(spec, required=False)  # the schema check names what is missing
                    field.label = name + (" (required)" if name in required else "")
                    self.fields[FIELD_PREFIX + name] = field
                    self.argument_names.append(name)
        self.order_fields([FIELD_PREFIX + name for name in self.argument_names] + ["arguments"])

    def argument_fields(self) -> list[Any]:
        return [self[FIELD_PREFIX + name] for name in self.argument_names]

    def clean_arguments(self) -> dict[str, Any] | None:
        text = self.cleaned_data["arguments"]
        if not text:
            return None
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"Not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).") from None
        if value == {}:
            return None
        if not isinstance(value, dict):
            raise forms.ValidationError('The arguments must be a JSON object, such as {"city": "Oslo"}.')
        return value

    def call_arguments(self) -> dict[str, Any]:
        """The JSON object if one was given, else the filled fields (empty ones left out)."""
        given = self.cleaned_data.get("arguments")
        if given is not None:
            return dict(given)
        out: dict[str, Any] = {}
        for name in self.argument_names:
            value = self.cleaned_data.get(FIELD_PREFIX + name)
            if value is not None and value != "":
                out[name] = value
        return out


class SecretTextarea(forms.Textarea):
    """A text box that never shows what was typed in it again (secrets are write-only)."""

    def format_value(self, value: Any) -> str | None:
        return None


class OpenApiImportForm(forms.Form):
    file = forms.FileField(required=False, help_text="An OpenAPI 3.0 or 3.1 document, JSON or YAML.")
    url = forms.CharField(required=False, label="URL", help_text="Or where to fetch it (http or https).")
    source = forms.CharField(
        required=False,
        help_text="Names the document: importing the same source again updates its tools in place. "
        "Default: the URL, or the file's name.",
    )
    server = forms.CharField(required=False, help_text="A virtual server that gets the imported tools.")
    include = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Only the operations matching these patterns, one per line (empty: all).",
    )
    base_url = forms.CharField(
        required=False, label="Base URL", help_text="The API's base URL, instead of the document's servers."
    )
    credentials = forms.JSONField(
        required=False,
        widget=SecretTextarea(attrs={"rows": 3, "cols": 60, "style": "font-family: monospace"}),
        help_text='Secrets by security scheme name, e.g. {"bearerAuth": {"token": "..."}}; stored encrypted '
        "on the tools that use the scheme.",
    )
    dry_run = forms.BooleanField(required=False, initial=True, help_text="Report what would change; change nothing.")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if bool(data.get("file")) == bool(data.get("url")):
            raise forms.ValidationError("Upload a file or give a URL (one of them).")
        return data


def _page(request: HttpRequest, template: str, title: str, **context: Any) -> HttpResponse:
    return TemplateResponse(
        request,
        f"admin/registry/tool/{template}",
        {**admin.site.each_context(request), "title": title, "opts": Tool._meta, **context},
    )


@never_cache
@staff_member_required
def tool_test_call(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: the form, arguments prefilled from the input schema; POST: run the call and show its report."""
    if not request.user.has_perm(CALL_PERMISSION):
        raise PermissionDenied
    try:
        tool = selectors.entry_get(Tool, pk=pk)
    except NotFound as exc:
        raise Http404(exc.message) from None
    report = None
    if request.method == "POST":
        form = TestCallForm(request.POST, schema=tool.input_schema)
        if form.is_valid():
            user = request.user
            caller = Caller(username=user.get_username(), scopes=auth.user_scopes(user), server=None)
            try:
                arguments = form.call_arguments()
                report = async_to_sync(tool_call)(name=tool.name, arguments=arguments, caller=caller)
            except CatalogError as exc:
                form.add_error(None, exc.message)
    else:
        initial = {FIELD_PREFIX + name: value for name, value in sample_arguments(tool.input_schema).items()}
        form = TestCallForm(initial=initial, schema=tool.input_schema)
    return _page(request, "test_call.html", f"Test call: {tool.name}", tool=tool, form=form, **_shown(report))


def _shown(report: ToolCallReport | None) -> dict[str, Any]:
    """The report as the page shows it: the answer as indented JSON, one line per notification."""
    if report is None:
        return {"report": None}
    answer = report.result if report.error is None else report.error
    notes = [
        {"method": note.get("method", ""), "params": json.dumps(note.get("params", {}), ensure_ascii=False)}
        for note in report.notifications
    ]
    result = report.result or {}
    structured = result.get("structuredContent")
    return {
        "report": report,
        "answer": json.dumps(answer, indent=2, ensure_ascii=False),
        "notes": notes,
        "contents": [_content(item) for item in result.get("content") or [] if isinstance(item, dict)],
        "structured": None if structured is None else json.dumps(structured, indent=2, ensure_ascii=False),
    }


def _content(item: dict[str, Any]) -> dict[str, Any]:
    """One content block as the page shows it: text, an image or audio player (data: URL), a link."""
    kind = item.get("type")
    mime = str(item.get("mimeType") or "")
    if kind in ("image", "audio") and isinstance(item.get("data"), str) and "/" in mime and '"' not in mime:
        return {"type": kind, "src": f"data:{mime};base64,{item['data']}", "mime": mime}
    if kind == "resource_link":
        return {"type": "link", "uri": str(item.get("uri") or ""), "name": str(item.get("name") or item.get("uri"))}
    if kind == "resource" and isinstance(item.get("resource"), dict):
        resource = item["resource"]
        text = resource.get("text") if isinstance(resource.get("text"), str) else "(binary)"
        return {"type": "resource", "uri": str(resource.get("uri") or ""), "text": text}
    return {"type": "text", "text": str(item.get("text", json.dumps(item, ensure_ascii=False)))}


@never_cache
@staff_member_required
def openapi_import(request: HttpRequest) -> HttpResponse:
    """GET: the form; POST: import (or only report, on a dry run) and show the report."""
    if not all(request.user.has_perm(permission) for permission in IMPORT_PERMISSIONS):
        raise PermissionDenied
    report = None
    form = OpenApiImportForm(request.POST, request.FILES) if request.method == "POST" else OpenApiImportForm()
    if form.is_bound and form.is_valid():
        data = form.cleaned_data
        upload = data.get("file")
        try:
            report = openapi_sources.openapi_import(
                url=data["url"] or None,
                document=upload.read() if upload else None,
                source=data["source"] or (upload.name if upload else None),
                server=data["server"] or None,
                include=[line.strip() for line in data["include"].splitlines() if line.strip()],
                base_url=data["base_url"] or None,
                dry_run=data["dry_run"],
                credentials=data["credentials"] or None,
            )
        except CatalogError as exc:
            for name, messages in (exc.errors or {}).items():
                if name in form.fields:
                    form.add_error(name, messages)
            form.add_error(None, exc.message)
    return _page(
        request,
        "openapi_import.html",
        "Import tools from an OpenAPI document",
        form=form,
        report=report,
        report_lines=openapi_sources.report_lines(report or {}),
    )
