"""Each operation of an OpenAPI document as the fields of a REST tool (docs/tool-backends.md).

The input schema merges the path, query and header parameters with the request body: a JSON or form
body that is an object with properties joins the top level when none of its names is taken by a
parameter, otherwise the body is one argument (``body``); any other content type is sent raw from a
``body`` argument. The output schema is the first 2xx response's JSON schema when it is an object
(MCP's outputSchema must be). An operation the gateway cannot serve (a multipart body, TRACE) is
skipped with a warning; a document error stops the import with an InvalidInput naming the place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from registry import validators
from registry.exceptions import InvalidInput
from registry.openapi import naming, security, urls
from registry.openapi.document import OpenApiDocument, mapping, pointer
from registry.openapi.refs import Fallback, Path, Resolver, SchemaBuilder

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
SUPPORTED_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
# The HTTP client sets these itself; OpenAPI says such header parameters "SHALL be ignored".
IGNORED_HEADERS = {"accept", "content-type", "authorization"}
JSON_TYPE = re.compile(r"^application/(?:[\w.+-]+\+)?json$", re.IGNORECASE)
FORM_TYPE = "application/x-www-form-urlencoded"
COMBINATORS = ("allOf", "anyOf", "oneOf", "not", "if")


class Skip(Exception):  # the operation is left out, with the reason as a warning
    """This operation cannot become a tool; the message says why."""


@dataclass
class ToolSpec:
    """The tool fields made from one operation (its name is given by naming.assign)."""

    operation: str
    operation_id: str | None
    title: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None
    annotations: dict[str, Any]
    backend_config: dict[str, Any]
    security_scheme: str | None = None  # the securitySchemes entry its auth comes from (whose secrets it needs)


@dataclass
class Conversion:
    """Every operation of a document: the tools made, the operations left out, and warnings."""

    operations: list[naming.Operation] = field(default_factory=list)
    tools: list[ToolSpec] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def convert(document: OpenApiDocument, *, source: str, base_url: str | None = None) -> Conversion:
    """Turn every operation into tool fields; InvalidInput for a document error, naming where."""
    data = document.data
    resolver = Resolver(data)
    base = urls.base_override(base_url) if base_url else None
    result = Conversion()
    paths = mapping(data, "paths")
    for path, raw_item in paths.items():
        item, _ = resolver.deref(raw_item, ("paths", path))
        if not isinstance(item, dict):
            continue
        for method in METHODS:
            operation = item.get(method)
            if not isinstance(operation, dict):
                continue
            key = naming.operation_key(method, path)
            op_id = operation.get("operationId") if isinstance(operation.get("operationId"), str) else None
            result.operations.append(naming.Operation(key, op_id))
            where: Path = ("paths", path, method)
            try:
                if key.split(" ")[0] not in SUPPORTED_METHODS:
                    raise Skip(f"{method.upper()} is not a method REST tools send")
                server = base or urls.server_url(data, item, operation, source=source, where=where)
                spec = _operation(document, resolver, item, operation, key, op_id, server, where, result.warnings)
            except Skip as skip:
                result.warnings.append(f"{key} ({pointer(where)}) is not imported: {skip}.")
                continue
            spec.backend_config["openapi"] = {"source": source, "operation": key, "operation_id": op_id}
            result.tools.append(spec)
    if not result.operations:
        result.warnings.append("The document has no operations under 'paths'.")
    return result


def _operation(
    document: OpenApiDocument,
    resolver: Resolver,
    item: dict[str, Any],
    operation: dict[str, Any],
    key: str,
    op_id: str | None,
    server: str,
    where: Path,
    warnings: list[str],
) -> ToolSpec:
    for inline in (True, False):
        notes: list[str] = []
        try:
            spec = _build(document, resolver, item, operation, key, op_id, server, where, notes, inline)
        except Fallback:
            continue
        warnings.extend(f"{key}: {note}." for note in notes)
        return spec
    raise InvalidInput(f"{pointer(where)}: the operation's schemas cannot be built.")  # pragma: no cover


def _build(
    document: OpenApiDocument,
    resolver: Resolver,
    item: dict[str, Any],
    operation: dict[str, Any],
    key: str,
    op_id: str | None,
    server: str,
    where: Path,
    notes: list[str],
    inline: bool,
) -> ToolSpec:
    method = key.split(" ")[0]
    path = key.split(" ", 1)[1]
    inputs = SchemaBuilder(resolver, dialect=document.version, mode="request", inline=inline)
    properties: dict[str, Any] = {}
    required: list[str] = []
    params: dict[str, dict[str, str]] = {}
    expressions: dict[str, str] = {}
    for parameter, param_path in _parameters(resolver, item, operation, where):
        name, location = parameter["name"], parameter["in"]
        if location == "cookie":
            notes.append(f"the cookie parameter {name!r} is left out (cookies are not sent)")
            continue
        if location == "header" and name.lower() in IGNORED_HEADERS:
            continue
        argument = urls.varname(name) if location == "path" else name
        if argument in properties:
            argument = urls.varname(f"{location}_{name}") if location == "path" else f"{location}_{name}"
        if argument in properties:
            raise Skip(f"two parameters both need the argument name {argument!r}")
        properties[argument] = _parameter_schema(inputs, parameter, param_path)
        # A path argument fills the template variable of its own name; other places name the wire field.
        params[argument] = (
            {"in": location} if argument == name or location == "path" else {"in": location, "name": name}
        )
        if location == "path":
            expressions[name] = _path_expression(parameter, argument)
        if location == "path" or parameter.get("required") is True:
            required.append(argument)
        if location == "query" and parameter.get("style") in ("deepObject", "spaceDelimited", "pipeDelimited"):
            notes.append(f"the query parameter {name!r} (style {parameter['style']}) is sent in form style")
    for name in urls.path_names(path):
        if name not in expressions:  # the structural check refuses this; never build a URL with a hole
            raise InvalidInput(f"{pointer(where)}: the path parameter {{{name}}} is not declared.")
    body = _request_body(resolver, inputs, operation, where, properties, params, required)
    auth, scheme, auth_note = security.auth_for(resolver, operation, server=server)
    if auth_note:
        notes.append(auth_note)
    output, accept = _output(resolver, document, operation, where, inline)
    input_schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        input_schema["required"] = list(dict.fromkeys(required))
    input_schema = inputs.finish(input_schema)
    for label, schema in (("input", input_schema), ("output", output)):
        if schema is not None:
            _check_schema(schema, label, where, notes)
    config: dict[str, Any] = {
        "url": urls.url_template(server, path, expressions, where=where),
        "method": method,
        "params": params,
    }
    if accept:
        config["headers"] = {"Accept": accept}
    if body:
        config["body"] = body
    if auth:
        config["auth"] = auth
    summary = " ".join(str(operation.get("summary") or "").split())
    detail = str(operation.get("description") or "").strip()
    description = "\n\n".join([summary] * bool(summary) + [detail] * bool(detail and detail != summary))
    if operation.get("deprecated") is True:
        description = f"Deprecated. {description}".strip()
    return ToolSpec(
        operation=key,
        operation_id=op_id,
        title=summary[:256],
        description=description,
        input_schema=input_schema,
        output_schema=output,
        annotations=_annotations(method),
        backend_config=config,
        security_scheme=scheme,
    )


def _parameters(
    resolver: Resolver, item: dict[str, Any], operation: dict[str, Any], where: Path
) -> list[tuple[dict[str, Any], Path]]:
    """The path item's parameters overridden by the operation's (same name and location)."""
    merged: dict[tuple[str, str], tuple[dict[str, Any], Path]] = {}
    for owner, owner_path in ((item, where[:2]), (operation, where)):
        listed = owner.get("parameters")
        if not isinstance(listed, list):
            continue
        for index, raw in enumerate(listed):
            parameter, param_path = resolver.deref(raw, (*owner_path, "parameters", index))
            if not isinstance(parameter, dict) or not isinstance(parameter.get("name"), str):
                raise InvalidInput(f"{pointer(param_path)}: a parameter needs a 'name' and an 'in'.")
            if parameter.get("in") not in ("path", "query", "header", "cookie"):
                raise InvalidInput(
                    f"{pointer(param_path)}: parameter {parameter['name']!r} has 'in': {parameter.get('in')!r}; "
                    "expected path, query, header or cookie."
                )
            merged[(parameter["name"], parameter["in"])] = (parameter, param_path)
    return list(merged.values())


def _parameter_schema(builder: SchemaBuilder, parameter: dict[str, Any], path: Path) -> Any:
    if "schema" in parameter:
        schema = builder.schema(parameter["schema"], (*path, "schema"))
    else:
        content = mapping(parameter, "content")
        media, media_path = next(iter(content.items()), (None, None))
        if isinstance(media, dict) and "schema" in media and media_path is not None:
            schema = builder.schema(media["schema"], (*path, "content", media_path, "schema"))
        else:
            schema = {}
    extra = {
        key: parameter[key]
        for key in ("description", "deprecated")
        if key in parameter and parameter[key] not in (None, "", False)
    }
    if not extra:
        return schema
    if isinstance(schema, bool):
        return {**extra} if schema else {"not": {}, **extra}
    return {**schema, **extra}


def _path_expression(parameter: dict[str, Any], argument: str) -> str:
    operator = urls.STYLE_OPERATOR.get(str(parameter.get("style", "simple")), "")
    explode = "*" if parameter.get("explode") is True else ""
    return f"{{{operator}{argument}{explode}}}"


def _request_body(
    resolver: Resolver,
    builder: SchemaBuilder,
    operation: dict[str, Any],
    where: Path,
    properties: dict[str, Any],
    params: dict[str, dict[str, str]],
    required: list[str],
) -> dict[str, Any] | None:
    """Add the body's arguments; the REST body settings, or None for no body."""
    if "requestBody" not in operation:
        return None
    body, body_path = resolver.deref(operation["requestBody"], (*where, "requestBody"))
    content = mapping(body, "content")
    if not content:
        return None
    kinds = {str(media).split(";")[0].strip().lower(): media for media in content}
    media = next((kinds[k] for k in kinds if JSON_TYPE.match(k)), None) or kinds.get(FORM_TYPE)
    encoding = "form" if media is not None and media == kinds.get(FORM_TYPE) else "json"
    if media is None:
        if set(kinds) <= {"multipart/form-data"}:
            raise Skip("multipart/form-data bodies are not supported")
        media = next(m for k, m in kinds.items() if k != "multipart/form-data")
        encoding = "raw"
    media_object = content[media] if isinstance(content[media], dict) else {}
    media_path = (*body_path, "content", media)
    body_required = body.get("required") is True
    description = str(body.get("description") or "").strip()
    if encoding == "raw":
        argument = _free_name("body", properties)
        properties[argument] = {"type": "string", **({"description": description} if description else {})}
        params[argument] = {"in": "body"}
        if body_required:
            required.append(argument)
        content_type = "application/octet-stream" if media.strip() == "*/*" else media
        return {"encoding": "raw", "argument": argument, "content_type": content_type}
    schema = builder.root(media_object["schema"], (*media_path, "schema")) if "schema" in media_object else {}
    fields = schema.get("properties") if isinstance(schema, dict) else None
    mergeable = (
        isinstance(fields, dict)
        and fields
        and schema.get("type", "object") == "object"
        and not any(k in schema for k in COMBINATORS)
        and not set(fields) & set(properties)
    )
    if mergeable and isinstance(fields, dict):
        for name, field_schema in fields.items():
            properties[name] = field_schema
            params[name] = {"in": "body"}
        listed = schema.get("required")
        required.extend(name for name in (listed if isinstance(listed, list) else []) if name in fields)
        return {"encoding": encoding}
    if encoding == "form":
        raise Skip("its form body is not an object whose fields can be arguments")
    argument = _free_name("body", properties)
    if description and isinstance(schema, dict) and "description" not in schema:
        schema = {**schema, "description": description}
    properties[argument] = schema
    params[argument] = {"in": "body"}
    if body_required:
        required.append(argument)
    return {"encoding": "json", "argument": argument}


def _free_name(base: str, properties: dict[str, Any]) -> str:
    for candidate in (base, f"request_{base}", *(f"{base}_{n}" for n in range(2, 100))):
        if candidate not in properties:
            return candidate
    raise Skip("no free name for its body argument")  # pragma: no cover


def _output(
    resolver: Resolver, document: OpenApiDocument, operation: dict[str, Any], where: Path, inline: bool
) -> tuple[dict[str, Any] | None, str | None]:
    """(the output schema, the JSON media type to Accept) from the first 2xx response with JSON content."""
    responses = mapping(operation, "responses")
    codes = sorted(code for code in responses if re.fullmatch(r"2\d\d", code)) + [
        code for code in responses if code.upper() == "2XX"
    ]
    for code in codes:
        response, response_path = resolver.deref(responses[code], (*where, "responses", code))
        content = response.get("content") if isinstance(response, dict) else None
        if not isinstance(content, dict):
            continue
        media = next((m for m in content if JSON_TYPE.match(str(m).split(";")[0].strip())), None)
        if media is None:
            continue
        media_object = content[media] if isinstance(content[media], dict) else {}
        if "schema" not in media_object:
            return None, media
        builder = SchemaBuilder(resolver, dialect=document.version, mode="response", inline=inline)
        schema = builder.root(media_object["schema"], (*response_path, "content", media, "schema"))
        if not isinstance(schema, dict) or not _is_object(schema):
            return None, media
        return builder.finish({**schema, "type": "object"}), media
    return None, None


def _is_object(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    if kind is not None:
        return kind == "object"
    if "properties" in schema or "additionalProperties" in schema:
        return True
    members = schema.get("allOf")
    return isinstance(members, list) and any(isinstance(m, dict) and _is_object(m) for m in members)


def _check_schema(schema: dict[str, Any], label: str, where: Path, notes: list[str]) -> None:
    """A schema jsonschema-rs compiles (checking it against the 2020-12 meta-schema on the way) is fine; when
    it does not, the slower Python check tells a schema the catalog would refuse (the operation is skipped)
    from one only the gateway's validator cannot compile (kept, and not enforced)."""
    try:
        validators.compile_schema_locally(schema)
        return
    except (ValueError, TypeError) as exc:
        compile_error = str(exc).splitlines()[0]
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        at = "/".join(str(part) for part in exc.path)
        raise Skip(f"its {label} schema is not valid JSON Schema 2020-12 (at '{at}': {exc.message})") from None
    notes.append(f"its {label} schema cannot be compiled by the gateway and will not be enforced ({compile_error})")


def _annotations(method: str) -> dict[str, Any]:
    """MCP tool hints from the HTTP method's semantics (RFC 9110 safe and idempotent methods)."""
    read_only = method in ("GET", "HEAD", "OPTIONS")
    hints: dict[str, Any] = {"readOnlyHint": read_only, "openWorldHint": True}
    if not read_only:
        hints["destructiveHint"] = method == "DELETE"
        hints["idempotentHint"] = method in ("PUT", "DELETE")
    return hints
