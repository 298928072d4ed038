"""Field validators of the catalog. Each raises Django's ValidationError with a message a person can act on."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import jsonschema_rs
from django.core.exceptions import ValidationError
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

TOOL_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
URI_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")

# RFC 6570: literals, and expressions {op? varspec(,varspec)*} with varspec = varname(:N|*)?
_URI_TEMPLATE_LITERAL = r"(?:[^\x00-\x20\"'%<>\\^`{|}\x7f]|%[0-9A-Fa-f]{2})"
_VARCHAR = r"(?:[A-Za-z0-9_]|%[0-9A-Fa-f]{2})"
_VARSPEC = rf"{_VARCHAR}+(?:\.{_VARCHAR}+)*(?::[1-9][0-9]{{0,3}}|\*)?"
_EXPRESSION = rf"\{{[+#./;?&]?{_VARSPEC}(?:,{_VARSPEC})*\}}"
URI_TEMPLATE_RE = re.compile(rf"^(?:{_URI_TEMPLATE_LITERAL}|{_EXPRESSION})+$")
# The characters str.isspace() finds: validate_uri refuses them (ECMA's \s, in the document, is another set).
SPACE_CHARS = "".join(f"\\u{ord(c):04x}" for c in map(chr, range(0x110000)) if c.isspace())
# What validate_uri_template accepts, as one ECMA pattern for the OpenAPI document: a scheme, then literals (no
# whitespace) and expressions, one expression at least. (A template may also start with an expression where the
# scheme is, "{scheme}://host/{path}": accepted, though the document does not say so.)
_LITERAL = rf"(?:[^\x00-\x20\"'%<>\\^`{{|}}\x7f{SPACE_CHARS}]|%[0-9A-Fa-f]{{2}})"
_REST = rf"(?:{_LITERAL}|{_EXPRESSION})*"
URI_TEMPLATE_PATTERN = rf"^[A-Za-z][A-Za-z0-9+.-]*:{_REST}{_EXPRESSION}{_REST}$"

TOOL_ANNOTATION_TYPES: dict[str, type] = {
    "title": str,
    "readOnlyHint": bool,
    "destructiveHint": bool,
    "idempotentHint": bool,
    "openWorldHint": bool,
}


def validate_tool_name(value: str) -> None:
    """MCP tool and prompt names: 1-128 characters of letters, digits, '_', '-' and '.'."""
    if not TOOL_NAME_RE.fullmatch(value or ""):
        raise ValidationError(
            "%(value)r is not a valid name: use 1-128 characters of A-Z, a-z, 0-9, '_', '-' and '.'.",
            code="invalid_name",
            params={"value": value},
        )


def validate_slug(value: str) -> None:
    """Gateway and virtual server names: lowercase letters, digits, '-' and '_', at most 64."""
    if not SLUG_RE.fullmatch(value or ""):
        raise ValidationError(
            "%(value)r is not a valid name: use 1-64 lowercase letters, digits, '-' and '_', "
            "starting with a letter or digit.",
            code="invalid_slug",
            params={"value": value},
        )


def validate_object_schema(value: Any) -> None:
    """A JSON Schema (draft 2020-12) whose root describes an object, as MCP requires of tool schemas."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise ValidationError("A schema must be a JSON object.", code="invalid_schema")
    try:
        # jsonschema-rs's meta-schema check is ~100x faster (an OpenAPI import saves hundreds of schemas);
        # the Python one runs only to say what is wrong.
        if not jsonschema_rs.meta.is_valid(value):
            Draft202012Validator.check_schema(value)
    except SchemaError as exc:
        path = "/".join(str(part) for part in exc.path)
        where = f" at '{path}'" if path else ""
        raise ValidationError(
            "Not a valid JSON Schema (2020-12)%(where)s: %(error)s",
            code="invalid_schema",
            params={"where": where, "error": exc.message},
        ) from None
    if value.get("type") != "object":
        raise ValidationError(
            'The schema\'s root must be {"type": "object", ...}; got type %(type)r.',
            code="invalid_schema",
            params={"type": value.get("type")},
        )


def validate_tool_annotations(value: Any) -> None:
    """MCP tool annotations: a JSON object; the standard hints have their standard types."""
    if not isinstance(value, dict):
        raise ValidationError("Annotations must be a JSON object.", code="invalid_annotations")
    for key, expected in TOOL_ANNOTATION_TYPES.items():
        if key in value and not isinstance(value[key], expected):
            raise ValidationError(
                "Annotation %(key)r must be a %(type)s.",
                code="invalid_annotations",
                params={"key": key, "type": "boolean" if expected is bool else "string"},
            )


def validate_json_object(value: Any) -> None:
    """Any JSON object."""
    if not isinstance(value, dict):
        raise ValidationError("Must be a JSON object.", code="invalid_object")


def validate_string_list(value: Any) -> None:
    """A JSON list of strings (command arguments)."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValidationError("Must be a JSON list of strings.", code="invalid_list")


def validate_env(value: Any) -> None:
    """Environment variables: an object of NAME -> string."""
    if not isinstance(value, dict):
        raise ValidationError("Must be a JSON object of NAME: value.", code="invalid_env")
    for key, item in value.items():
        if not ENV_NAME_RE.fullmatch(key) or not isinstance(item, str):
            raise ValidationError(
                "Environment entry %(key)r must have a name of letters, digits and '_' and a string value.",
                code="invalid_env",
                params={"key": key},
            )


def validate_headers(value: Any) -> None:
    """HTTP headers: an object of Header-Name -> string without line breaks."""
    if not isinstance(value, dict):
        raise ValidationError("Headers must be a JSON object of Name: value.", code="invalid_headers")
    for key, item in value.items():
        if not isinstance(key, str) or not HEADER_NAME_RE.fullmatch(key):
            raise ValidationError("%(key)r is not a valid header name.", code="invalid_headers", params={"key": key})
        if not isinstance(item, str) or "\r" in item or "\n" in item:
            raise ValidationError(
                "Header %(key)r must have a one-line string value.", code="invalid_headers", params={"key": key}
            )


def validate_upstream_url(value: str, *, schemes: tuple[str, ...]) -> None:
    """An absolute URL with one of the given schemes and a host."""
    try:
        parts = urlsplit(value)
    except ValueError:  # an unbalanced IPv6 bracket, a host that NFKC turns into a delimiter...
        parts = urlsplit("")
    if parts.scheme not in schemes or not parts.netloc:
        raise ValidationError(
            "%(value)r is not a valid URL for this transport: it must start with %(schemes)s and name a host.",
            code="invalid_url",
            params={"value": value, "schemes": " or ".join(f"{s}://" for s in schemes)},
        )


def validate_uri(value: str) -> None:
    """An absolute URI (RFC 3986): a scheme, a colon, and no whitespace."""
    if not URI_SCHEME_RE.match(value or "") or any(ch.isspace() for ch in value):
        raise ValidationError(
            "%(value)r is not an absolute URI (e.g. file:///notes.txt or https://example.com/a).",
            code="invalid_uri",
            params={"value": value},
        )


def validate_uri_template(value: str) -> None:
    """An RFC 6570 URI template with at least one expression, e.g. file:///logs/{date}.txt."""
    if not URI_TEMPLATE_RE.match(value or "") or "{" not in value:
        raise ValidationError(
            "%(value)r is not an RFC 6570 URI template with at least one {variable}.",
            code="invalid_uri_template",
            params={"value": value},
        )
    validate_uri(re.sub(r"\{[^}]*\}", "x", value))


def validate_prompt_arguments(value: Any) -> None:
    """Prompt arguments: a list of {name, description?, required?} with unique names."""
    if not isinstance(value, list):
        raise ValidationError("Arguments must be a JSON list of objects.", code="invalid_arguments")
    seen: set[str] = set()
    for index, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise ValidationError(
                "Argument %(index)s must be an object with a non-empty string 'name'.",
                code="invalid_arguments",
                params={"index": index},
            )
        unknown = set(item) - {"name", "title", "description", "required"}
        if unknown:
            raise ValidationError(
                "Argument %(name)r has unknown keys: %(keys)s (allowed: name, title, description, required).",
                code="invalid_arguments",
                params={"name": item["name"], "keys": ", ".join(sorted(unknown))},
            )
        for key in ("title", "description"):
            if key in item and not isinstance(item[key], str):
                raise ValidationError(
                    "Argument %(name)r: '%(key)s' must be a string.",
                    code="invalid_arguments",
                    params={"name": item["name"], "key": key},
                )
        if "required" in item and not isinstance(item["required"], bool):
            raise ValidationError(
                "Argument %(name)r: 'required' must be true or false.",
                code="invalid_arguments",
                params={"name": item["name"]},
            )
        if item["name"] in seen:
            raise ValidationError(
                "Argument %(name)r is listed twice.", code="invalid_arguments", params={"name": item["name"]}
            )
        seen.add(item["name"])


def validate_tags(value: Any) -> None:
    """Tags: a list of short strings."""
    if not isinstance(value, list) or not all(isinstance(t, str) and 0 < len(t) <= 64 for t in value):
        raise ValidationError("Tags must be a list of strings of 1-64 characters.", code="invalid_tags")


def _refuse_remote(uri: str) -> Any:
    raise ValueError(f"the reference {uri!r} points outside the schema; only '#/...' references are resolved")


def compile_schema_locally(schema: dict[str, Any]) -> Any:
    """The schema compiled as the gateway will enforce it (jsonschema-rs, 2020-12), never fetching a
    remote ``$ref`` (that would let a definition make the gateway request any URL); ValueError with
    the reason when it cannot be compiled."""
    try:
        return jsonschema_rs.validator_for(schema, validate_formats=False, retriever=_refuse_remote)
    except jsonschema_rs.ValidationError as exc:
        raise ValueError(str(exc).splitlines()[0]) from None


RATE_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
# ASCII digits and blanks only, so the rule reads the same in the OpenAPI document (RATE_PATTERN).
_RATE_RE = re.compile(r"[ \t]*([0-9]{1,9})[ \t]*/[ \t]*(second|minute|hour|day)s?[ \t]*", re.IGNORECASE | re.ASCII)
_NONZERO_9 = "|".join(f"0{{{zeros}}}[1-9][0-9]{{0,{8 - zeros}}}" for zeros in range(9))
RATE_PATTERN = (
    "^(?:[ \t]*|[ \t]*(?:"
    + _NONZERO_9
    + ")[ \t]*/[ \t]*(?:"
    + "|".join("".join(f"[{c.upper()}{c}]" for c in unit) for unit in RATE_UNITS)
    + ")[Ss]?[ \t]*)$"
)


def parse_rate(value: str) -> tuple[int, int] | None:
    """'100/minute' -> (100, 60): requests per window of seconds; '' -> None (no limit); ValueError else."""
    if not value or not value.strip(" \t"):
        return None
    match = _RATE_RE.fullmatch(value)
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{value!r} is not a rate like 100/minute (a number, then /second, /minute, /hour or /day)")
    return int(match.group(1)), RATE_UNITS[match.group(2).lower()]


def validate_rate_limit(value: str) -> None:
    try:
        parse_rate(value)
    except ValueError as exc:
        raise ValidationError(f"{exc}.") from None
