"""REST endpoints that need the runtime: a test call of a tool, and the OpenAPI import (which may
fetch its document from a URL). Mounted under /api/ by gateway_project.api beside the catalog's."""

from __future__ import annotations

import json
from typing import Any

import pydantic
from django.conf import settings
from django.http import HttpRequest
from django.http.multipartparser import MultiPartParserError
from ninja import Field, Router, Schema
from ninja.errors import ValidationError

from registry import schemas
from registry.api import BODY_ERRORS, CALL, NOT_FOUND, WRITE
from registry.auth import Principal
from registry.exceptions import CatalogError, InvalidInput
from registry.parsers import json_body
from transports import openapi_sources
from transports.protocol.outcome import Caller
from transports.tool_calls import tool_call

router = Router(tags=["Tools"])


class ToolCallIn(schemas.In):
    arguments: dict[str, Any] = Field(default_factory=dict, description="The tool's arguments.")


class ToolCallOut(Schema):
    result: dict[str, Any] | None = Field(
        None, description="The CallToolResult (isError: true when the tool ran and failed)."
    )
    error: dict[str, Any] | None = Field(None, description="The JSON-RPC error, when the call could not run.")
    notifications: list[dict[str, Any]] = Field(description="What the call sent before its answer (progress, logs).")
    elapsed_ms: float = Field(description="Wall-clock time of the call, in milliseconds.")


class OpenApiImportIn(schemas.In):
    url: str | None = Field(None, description="Where to fetch the document (http or https).")
    document: str | None = Field(None, description="The document itself (JSON or YAML text), instead of a URL.")
    source: str | None = Field(None, description="Names the document for re-imports; default: the URL.")
    server: str | None = Field(None, description="A virtual server that gets the imported tools.")
    include: list[str] = Field([], description="Only operations matching these patterns.")
    base_url: str | None = Field(None, description="The API's base URL, instead of the document's servers.")
    dry_run: bool = Field(False, description="Report what would change; change nothing.")
    credentials: dict[str, dict[str, str]] | None = Field(
        None,
        description='Write-only secrets by security scheme name, e.g. {"bearerAuth": {"token": "..."}}, set on '
        "the tools that authenticate with that scheme.",
    )


@router.post(
    "/tools/{name}/call",
    response={200: ToolCallOut, **NOT_FOUND, **BODY_ERRORS},
    auth=CALL,
    exclude_none=True,
    operation_id="tools_call",
    summary="Test-call a tool",
)
async def call_tool(request: HttpRequest, name: str, payload: ToolCallIn) -> Any:
    """Run the tool with the given arguments, outside any MCP session, as the caller: 200 with the
    `result` (a tool that ran and failed has `isError: true`) or the JSON-RPC `error` (arguments the
    gateway refuses before calling), the notifications it sent and `elapsed_ms`; 404 for an unknown,
    disabled or unservable tool, naming which; 503 while the catalog cannot be loaded."""
    principal: Principal = request.auth  # type: ignore[attr-defined]
    caller = Caller(username=principal.username, scopes=principal.scopes, server=None)
    report = await tool_call(name=name, arguments=payload.arguments, caller=caller)
    return report.as_dict()


_IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": OpenApiImportIn.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "The document (JSON or YAML)."},
                        "url": {"type": "string"},
                        "source": {"type": "string", "description": "Default: the URL or the file's name."},
                        "server": {"type": "string"},
                        "include": {"type": "array", "items": {"type": "string"}},
                        "base_url": {"type": "string"},
                        "dry_run": {"type": "boolean"},
                        "credentials": {"type": "string", "description": "JSON: secrets by security scheme."},
                    },
                }
            },
        },
    }
}


def _import_options(request: HttpRequest) -> dict[str, Any]:
    """The options of an import request, from a JSON body or a multipart form with a file."""
    if (request.content_type or "").lower() == "multipart/form-data":
        try:
            form = request.POST
        except MultiPartParserError as exc:
            raise CatalogError(f"The multipart body cannot be read: {exc}.") from None  # 400
        options: dict[str, Any] = {
            key: form.get(key) or None for key in ("url", "source", "server", "base_url") if key in form
        }
        options["include"] = [pattern for pattern in form.getlist("include") if pattern]
        options["dry_run"] = form.get("dry_run", "").lower() in ("1", "true", "on", "yes")
        if form.get("credentials"):
            try:
                options["credentials"] = json.loads(form["credentials"])
            except ValueError as exc:
                raise InvalidInput(f"credentials: not JSON: {exc}.", errors={"credentials": [str(exc)]}) from None
        upload = request.FILES.get("file")
        if upload is not None:
            if upload.size is not None and upload.size > settings.GATEWAY_MAX_BODY_BYTES:
                raise InvalidInput(
                    f"The uploaded document is larger than {settings.GATEWAY_MAX_BODY_BYTES} bytes "
                    "(GATEWAY_MAX_BODY_BYTES)."
                )
            options["document"] = upload.read()
            options["source"] = options.get("source") or upload.name
        return options
    try:
        payload = OpenApiImportIn.model_validate(json_body(request))  # 415 for other media types
    except pydantic.ValidationError as exc:
        raise ValidationError(list(exc.errors(include_url=False))) from None  # type: ignore[arg-type]
    return payload.model_dump()


@router.post(
    "/tools/openapi-import",
    response={200: dict[str, Any], **BODY_ERRORS},
    auth=WRITE,
    operation_id="tools_openapi_import",
    summary="Import REST tools from an OpenAPI document",
    openapi_extra=_IMPORT_BODY,
)
def import_openapi(request: HttpRequest) -> Any:
    """Make a REST tool of each selected operation of an OpenAPI 3.0 or 3.1 document (JSON or YAML),
    given by URL, as text, or as an uploaded file (multipart field `file`). A re-import of the same
    source updates its tools in place. 200 with the report: the names `added`, `changed`, `removed`
    and `unchanged`, and `warnings`; 422 when the document cannot be fetched or imported (nothing
    changes), naming the problem."""
    return openapi_sources.openapi_import(**_import_options(request))
