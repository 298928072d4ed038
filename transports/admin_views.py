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


class TestCallForm(forms.Form):
    arguments = forms.JSONField(
        required=False,  # {} is "empty" to Django, and a tool may take no arguments
        widget=forms.Textarea(attrs=MONOSPACE),
        help_text="A JSON object of the tool's arguments; they are checked against its input schema first.",
    )

    def clean_arguments(self) -> dict[str, Any]:
        value = self.cleaned_data["arguments"]
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise forms.ValidationError('The arguments must be a JSON object, such as {"city": "Oslo"}.')
        return value


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
        form = TestCallForm(request.POST)
        if form.is_valid():
            user = request.user
            caller = Caller(username=user.get_username(), scopes=auth.user_scopes(user), server=None)
            try:
                arguments = form.cleaned_data["arguments"]
                report = async_to_sync(tool_call)(name=tool.name, arguments=arguments, caller=caller)
            except CatalogError as exc:
                form.add_error(None, exc.message)
    else:
        form = TestCallForm(initial={"arguments": sample_arguments(tool.input_schema)})
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
    return {"report": report, "answer": json.dumps(answer, indent=2, ensure_ascii=False), "notes": notes}


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
