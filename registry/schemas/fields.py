"""The field types of the request bodies: each states, in the OpenAPI document, a rule that a validator of the
catalog enforces (a ``Rule`` built from the validator's own pattern or length), so a body valid by the document
passes the validators. The validators stay the ones that enforce them, with their own messages."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from registry import validators


@dataclass(frozen=True, eq=False)
class Rule:
    """JSON Schema keywords for the document: a rule that a validator of the catalog enforces."""

    keywords: dict[str, Any]

    def __get_pydantic_json_schema__(self, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler(core_schema)
        schema.update(copy.deepcopy(self.keywords))
        return schema


def _anycase(word: str) -> str:
    """``word`` as a case-insensitive ECMA pattern (JSON Schema patterns take no flags)."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)


# An absolute URL as urlsplit reads it, with a host (ASCII authority characters: stricter than urlsplit, which
# lets a host NFKC-normalise into a delimiter and refuses unbalanced IPv6 brackets).
_AUTHORITY = "[A-Za-z0-9._~%!$&'()*+,;=:@-]+(?:[/?#][\\s\\S]*)?$"
_HTTP_URL = f"^(?:{_anycase('https')}|{_anycase('http')})://{_AUTHORITY}"
_UPSTREAM_URL = f"^(?:{_anycase('https')}|{_anycase('http')}|{_anycase('wss')}|{_anycase('ws')})://{_AUTHORITY}"
_ONE_LINE = {"pattern": "^[^\\r\\n]*$"}

ToolName = Annotated[str, Rule({"pattern": validators.TOOL_NAME_RE.pattern, "maxLength": 128})]
Slug = Annotated[str, Rule({"pattern": validators.SLUG_RE.pattern, "maxLength": 64})]
Label = Annotated[str, Rule({"minLength": 1, "maxLength": 256})]  # a required display name
Title = Annotated[str, Rule({"maxLength": 256})]
Text255 = Annotated[str, Rule({"maxLength": 255})]
Text1024 = Annotated[str, Rule({"maxLength": 1024})]
Text2048 = Annotated[str, Rule({"maxLength": 2048})]
MAX_INT32 = 2**31 - 1  # the largest value of a PositiveIntegerField on every database
# registry.conf.parse_duration's rule: a whole number (not 0), then s, m, h, d or w; blanks around (or empty:
# the default).
DURATION_PATTERN = "^(?:|[ \\t]*0*[1-9][0-9]*[ \\t]*[smhdwSMHDW][ \\t]*)$"
Uri = Annotated[str, Rule({"pattern": f"^[A-Za-z][A-Za-z0-9+.-]*:[^{validators.SPACE_CHARS}]*$", "maxLength": 2048})]
UriTemplate = Annotated[
    str,
    Rule(
        {
            "pattern": validators.URI_TEMPLATE_PATTERN,
            "maxLength": 2048,
            "description": "An RFC 6570 URI template with at least one {variable}, starting with a scheme.",
        }
    ),
]
UpstreamUrl = Annotated[str, Rule({"anyOf": [{"maxLength": 0}, {"pattern": _UPSTREAM_URL}], "maxLength": 2048})]
HttpUrl = Annotated[str, Rule({"anyOf": [{"maxLength": 0}, {"pattern": _HTTP_URL}], "maxLength": 2048})]
IconUrl = Annotated[
    str, Rule({"anyOf": [{"maxLength": 0}, {"pattern": _HTTP_URL}, {"pattern": "^data:"}], "maxLength": 2048})
]
RateLimit = Annotated[
    str,
    Rule(
        {
            "pattern": validators.RATE_PATTERN,
            "maxLength": 32,
            "examples": ["100/minute"],
        }
    ),
]
OneLine = Annotated[str, Rule(_ONE_LINE)]
Tag = Annotated[str, Rule({"minLength": 1, "maxLength": 64})]
Headers = Annotated[
    dict[str, OneLine],
    Rule({"propertyNames": {"pattern": validators.HEADER_NAME_RE.pattern}}),
]
Env = Annotated[dict[str, str], Rule({"propertyNames": {"pattern": validators.ENV_NAME_RE.pattern}})]
PemBundle = Annotated[str, Rule({"anyOf": [{"maxLength": 0}, {"pattern": "-----BEGIN CERTIFICATE-----"}]})]
ObjectSchema = Annotated[
    dict[str, Any],
    Rule(
        {
            "required": ["type"],
            "properties": {"type": {"const": "object"}},
            "description": 'A JSON Schema (2020-12) whose root is {"type": "object", ...}.',
        }
    ),
]
# The standard hints of MCP tool annotations have their standard types; other keys are free.
ToolAnnotations = Annotated[
    dict[str, Any],
    Rule(
        {
            "properties": {
                key: {"type": "boolean" if kind is bool else "string"}
                for key, kind in validators.TOOL_ANNOTATION_TYPES.items()
            }
        }
    ),
]
Base64 = Annotated[str, Rule({"pattern": "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"})]


_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def _rfc3339(value: Any) -> Any:
    if isinstance(value, str) and _RFC3339.fullmatch(value):
        return value
    raise ValueError("give a date and time as RFC 3339 says it, e.g. 2026-01-31T12:00:00Z (with Z or an offset)")


# A moment in a query string: RFC 3339 only (pydantic alone also reads numbers as Unix times, and dates alone).
DateTimeParam = Annotated[datetime, BeforeValidator(_rfc3339)]


def _json_integer(value: Any) -> Any:
    # JSON Schema's integer is any number without a fraction (5.0 too); strict validation would refuse 5.0.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def json_int(low: int, high: int) -> Any:
    """An integer in a body as JSON Schema means it (5 or 5.0; not 5.5, "5" or true), from low to high. (The
    range is checked after the conversion and stated by a Rule: pydantic cannot render ge/le through it.)"""

    def within(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    return Annotated[
        int, BeforeValidator(_json_integer), AfterValidator(within), Rule({"minimum": low, "maximum": high})
    ]
