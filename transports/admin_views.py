"""Admin pages that need the runtime, so they live here rather than in ``registry.admin``: a tool's
"Test call", the playground (run it with arguments from fields made from its input schema, see the
result, what it sent on the way and the time it took; with JavaScript, progress and log messages
stream in as the tool sends them) and "Import OpenAPI" (a file or a URL). Mounted under /admin/ by
gateway_project.urls; linked from the tool pages by the templates under ``admin/registry/tool/``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django import forms
from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.views.decorators.cache import never_cache

from registry import auth, selectors
from registry.exceptions import CatalogError, NotFound
from registry.models import Tool
from transports import openapi_sources
from transports.protocol.outcome import Caller
from transports.tool_calls import ToolCallReport, tool_call

logger = logging.getLogger(__name__)

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


def _resolved(spec: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """The schema of one argument as a form field sees it: a local ``$ref`` (pydantic puts enums and models
    in ``$defs``) replaced by its target, and a nullable one (``"type": [T, "null"]``, or ``anyOf`` of one
    schema and null) by its non-null part; the argument's own keys (description, default) win."""
    ref = spec.get("$ref")
    if isinstance(ref, str):
        match = re.fullmatch(r"#/(\$defs|definitions)/([^/]+)", ref)
        defs = root.get(match.group(1)) if match else None
        target = defs.get(match.group(2)) if isinstance(defs, dict) and match else None
        if isinstance(target, dict):
            spec = {**target, **{key: value for key, value in spec.items() if key != "$ref"}}
    kind = spec.get("type")
    if isinstance(kind, list):
        kinds = [name for name in kind if name != "null"]
        if len(kinds) == 1:
            spec = {**spec, "type": kinds[0]}
    for key in ("anyOf", "oneOf"):
        options = spec.get(key)
        if isinstance(options, list) and len(options) == 2:
            rest = [option for option in options if not (isinstance(option, dict) and option.get("type") == "null")]
            if len(rest) == 1 and isinstance(rest[0], dict):
                own = {name: value for name, value in spec.items() if name != key}
                return {**_resolved(rest[0], root), **own}
    return spec


_JSON_KINDS = {"object": 'a JSON object, e.g. {"key": "value"}', "array": "a JSON array, e.g. [1, 2]"}


def _schema_field(spec: dict[str, Any], *, required: bool) -> forms.Field:
    """A form field for one argument: text, number, yes/no or a choice of the enum's values by its JSON
    Schema type; anything else (objects, arrays, unions) as JSON text."""
    kind = spec.get("type")
    notes = [str(spec.get("description") or "").strip()]
    if "default" in spec:
        notes.append(f"Default: {json.dumps(spec['default'], ensure_ascii=False)}.")
    enum = spec.get("enum")
    is_enum = isinstance(enum, list) and enum and all(isinstance(value, str | int | float) for value in enum)
    is_json = not is_enum and kind not in ("boolean", "integer", "number", "string")
    if is_json:
        notes.append(f"As JSON: {_JSON_KINDS.get(str(kind), 'any JSON value')}.")
    common: dict[str, Any] = {"required": required, "help_text": " ".join(note for note in notes if note)}
    if is_enum:
        assert isinstance(enum, list)
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
        required = schema.get("required")
        required = required if isinstance(required, list) else []
        self.required_names = {name for name in required if isinstance(name, str)}
        self.argument_names: list[str] = []
        if isinstance(properties, dict):
            for name, spec in properties.items():
                if isinstance(spec, dict):
                    # Not required of the form: the gateway's schema check names what is missing, as a
                    # client would see it. Marked for people and for assistive technology instead.
                    field = _schema_field(_resolved(spec, schema), required=False)
                    field.label = name + (" (required)" if name in self.required_names else "")
                    if name in self.required_names:
                        field.widget.attrs["aria-required"] = "true"
                    self.fields[FIELD_PREFIX + name] = field
                    self.argument_names.append(name)
        self.order_fields([FIELD_PREFIX + name for name in self.argument_names] + ["arguments"])

    def argument_fields(self) -> list[dict[str, Any]]:
        """Each argument's bound field, and whether the input schema requires it."""
        return [
            {"field": self[FIELD_PREFIX + name], "required": name in self.required_names}
            for name in self.argument_names
        ]

    def error_summary(self) -> str:
        """Every error of the form on one line each, named by the field's label: the streaming page shows
        them above the form (the fields are not rendered again)."""
        lines = []
        for name, errors in self.errors.items():
            label = str(self.fields[name].label or name) if name in self.fields else ""
            for error in errors:
                lines.append(f"{label}: {error}" if label else str(error))
        return "\n".join(lines)

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


# The streaming test call (the playground's script asks for it with Accept: text/event-stream): no proxy
# may hold the events back or keep them.
EVENT_STREAM = "text/event-stream"
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Vary": "Accept"}
# Notifications waiting for the browser; a full queue holds the tool back rather than growing.
STREAM_QUEUE = 256
# A comment line this often while a call is quiet, so proxies with idle timeouts keep the stream open.
KEEPALIVE_SECONDS = 15.0
FAILED = "The gateway failed while running the call; its log has the details."
RESULT_TEMPLATE = "admin/registry/tool/_call_result.html"
REFUSED = (
    "You may not run tools from the admin: it takes the permission to change tools (registry.change_tool), "
    "since a call can act on the world. Ask an administrator for it."
)


def _wants_stream(request: HttpRequest) -> bool:
    return request.method == "POST" and EVENT_STREAM in request.headers.get("Accept", "")


def sse_event(event: str, data: str) -> str:
    """One server-sent event: its type and its data, one ``data:`` line per line of text."""
    lines = re.split(r"\r\n|\r|\n", data)
    return f"event: {event}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"


def _stream_refusal(message: str, *, status: int, fields: dict[str, list[str]] | None = None) -> HttpResponse:
    """The streaming page's answer to a call that never started: one ``error`` event a person can read."""
    body = sse_event("error", json.dumps({"message": message, "fields": fields or {}}, ensure_ascii=False))
    return HttpResponse(body, status=status, content_type=EVENT_STREAM, headers=STREAM_HEADERS)


async def _apage(request: HttpRequest, title: str, **context: Any) -> HttpResponse:
    each = await sync_to_async(admin.site.each_context)(request)  # the admin's sidebar reads the database
    return TemplateResponse(
        request, "admin/registry/tool/test_call.html", {**each, "title": title, "opts": Tool._meta, **context}
    )


@never_cache
@staff_member_required
async def tool_test_call(request: HttpRequest, pk: int) -> HttpResponseBase:
    """GET: the form, arguments prefilled from the input schema; POST: run the call and show its report.
    A POST that accepts text/event-stream (the page's script) is answered as the call runs: ``progress``
    and ``log`` events as the tool sends them, then ``result`` (the report's HTML) or ``error``."""
    stream = _wants_stream(request)
    user = await request.auser()
    if not await user.ahas_perm(CALL_PERMISSION):
        if stream:
            return _stream_refusal(REFUSED, status=403)
        raise PermissionDenied(REFUSED)
    try:
        tool = await sync_to_async(selectors.entry_get)(Tool, pk=pk)
    except NotFound as exc:
        if stream:
            return _stream_refusal(exc.message, status=404)
        raise Http404(exc.message) from None
    title = f"Test call: {tool.name}"
    if request.method != "POST":
        initial = {FIELD_PREFIX + name: value for name, value in sample_arguments(tool.input_schema).items()}
        form = TestCallForm(initial=initial, schema=tool.input_schema)
        return await _apage(request, title, tool=tool, form=form, **_shown(None))
    form = TestCallForm(request.POST, schema=tool.input_schema)
    if not form.is_valid():
        if stream:
            fields = {
                form[name].auto_id or name: [str(error) for error in errors]
                for name, errors in form.errors.items()
                if name in form.fields
            }
            return _stream_refusal("Check the arguments:\n" + form.error_summary(), status=400, fields=fields)
        return await _apage(request, title, tool=tool, form=form, **_shown(None))
    caller = Caller(username=user.get_username(), scopes=auth.user_scopes(user), server=None)
    arguments = form.call_arguments()
    if stream:
        events = _call_events(name=tool.name, arguments=arguments, caller=caller)
        return StreamingHttpResponse(events, content_type=EVENT_STREAM, headers=STREAM_HEADERS)
    report = None
    try:
        report = await tool_call(name=tool.name, arguments=arguments, caller=caller)
    except CatalogError as exc:
        form.add_error(None, exc.message)
    except Exception:  # as the stream does: a message on the page, the details in the log
        logger.exception("Test call of %s failed", tool.name)
        form.add_error(None, FAILED)
    return await _apage(request, title, tool=tool, form=form, **_shown(report))


async def _call_events(*, name: str, arguments: dict[str, Any], caller: Caller) -> AsyncIterator[str]:
    """Run the call in a task of its own and relay what it sends as server-sent events, ending with the
    report. When the browser goes away, Django cancels this generator; the call is cancelled with it (the
    backend sees asyncio.CancelledError) and waited for, so nothing keeps running."""
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=STREAM_QUEUE)

    async def forward(note: dict[str, Any]) -> None:
        await queue.put(("note", note))

    async def run() -> None:
        try:
            report = await tool_call(name=name, arguments=arguments, caller=caller, on_notification=forward)
        except CatalogError as exc:
            await queue.put(("error", exc.message))
        except Exception:  # the page must hear of it: a stream that never ends helps nobody
            logger.exception("Test call of %s failed", name)
            await queue.put(("error", FAILED))
        else:
            await queue.put(("report", report))

    task = asyncio.create_task(run(), name=f"test call {name}")
    try:
        yield ": the call has started\n\n"  # a comment, so the browser hears from us at once
        while True:
            try:
                kind, value = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                yield ": still running\n\n"
                continue
            if kind == "note":
                yield _note_event(value)
            elif kind == "error":
                yield sse_event("error", json.dumps({"message": value, "fields": {}}, ensure_ascii=False))
                return
            else:
                html = await sync_to_async(render_to_string)(RESULT_TEMPLATE, _shown(value))
                yield sse_event("result", html)
                return
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _note_event(note: dict[str, Any]) -> str:
    """A notification as the playground's event: ``progress``, ``log``, or ``notification`` for others."""
    method = note.get("method")
    params = note.get("params")
    params = params if isinstance(params, dict) else {}
    if method == "notifications/progress":
        data = {key: params.get(key) for key in ("progress", "total", "message")}
        return sse_event("progress", json.dumps(data, ensure_ascii=False))
    if method == "notifications/message":
        data = {key: params.get(key) for key in ("level", "data", "logger")}
        return sse_event("log", json.dumps(data, ensure_ascii=False))
    return sse_event("notification", json.dumps({"method": method, "params": params}, ensure_ascii=False))


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
    content = result.get("content")
    return {
        "report": report,
        "answer": json.dumps(answer, indent=2, ensure_ascii=False),
        "notes": notes,
        "contents": [_content(item) for item in content or [] if isinstance(item, dict)]
        if isinstance(content, list)
        else [],
        "structured": None if structured is None else json.dumps(structured, indent=2, ensure_ascii=False),
    }


def _media_type(mime: str) -> bool:
    """A MIME type safe to put in a data: URL (type/subtype, nothing that could end the attribute)."""
    return re.fullmatch(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+", mime) is not None


def _content(item: dict[str, Any]) -> dict[str, Any]:
    """One content block as the page shows it: text, an image or audio player (data: URL), a link (to the
    address itself when it is a web address), an embedded resource (its text, or its image or audio, or a
    download)."""
    kind = item.get("type")
    mime = str(item.get("mimeType") or "")
    if kind in ("image", "audio") and isinstance(item.get("data"), str) and "/" in mime and '"' not in mime:
        return {"type": kind, "src": f"data:{mime};base64,{item['data']}", "mime": mime}
    if kind == "resource_link":
        uri = str(item.get("uri") or "")
        link: dict[str, Any] = {"type": "link", "uri": uri, "name": str(item.get("name") or item.get("uri"))}
        if re.match(r"https?://", uri, re.IGNORECASE):
            link["href"] = uri
        for key in ("title", "description"):
            if isinstance(item.get(key), str) and item[key]:
                link[key] = item[key]
        if mime:
            link["mime"] = mime
        return link
    if kind == "resource" and isinstance(item.get("resource"), dict):
        resource = item["resource"]
        uri = str(resource.get("uri") or "")
        mime = str(resource.get("mimeType") or "")
        if isinstance(resource.get("text"), str):
            return {"type": "resource", "uri": uri, "mime": mime, "text": resource["text"]}
        blob = resource.get("blob")
        blob = blob if isinstance(blob, str) else ""
        safe = _media_type(mime)
        media = mime.split("/", 1)[0] if safe else ""
        return {
            "type": "resource",
            "uri": uri,
            "mime": mime,
            "text": None,
            "media": media if media in ("image", "audio") else "",
            "src": f"data:{mime if safe else 'application/octet-stream'};base64,{blob}",
            "size": len(blob) * 3 // 4 - blob[-2:].count("="),
            "filename": uri.rstrip("/").rsplit("/", 1)[-1] or "resource",
        }
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
