"""Request and response shapes of the REST API. Fields are listed explicitly; unknown fields are
rejected (422) so a typo never silently does nothing.

The rules the catalog's validators apply to one field (name patterns, lengths, ranges) are stated in the
OpenAPI document too, by ``Rule`` annotations built from the validators' own patterns, so a body valid by
the document passes them. The validators stay the ones that enforce them, with their own messages. Rules
that join several fields or name other entries (a tool's gateway must exist, a stdio gateway needs a
command) are in the fields' descriptions."""

from __future__ import annotations

import base64
import binascii
import copy
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from ninja import Schema
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    create_model,
    field_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from registry import validators
from registry.choices import AuthType, ChangeStatus, DetectedEra, Era, Health, IntegrationType, Transport


@dataclass(frozen=True, eq=False)
class Rule:
    """JSON Schema keywords for the document: a rule that a validator of the catalog enforces."""

    keywords: dict[str, Any]

    def __get_pydantic_json_schema__(self, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler(core_schema)
        schema.update(copy.deepcopy(self.keywords))
        return schema


# What validate_upstream_url accepts (IDN and IPv6 hosts too); the host's own rules are the server's (422).
_HTTP_URL = validators.url_pattern(("http", "https"))
_UPSTREAM_URL = validators.url_pattern(("http", "https", "ws", "wss"))
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
            "description": "An RFC 6570 URI template with at least one {variable}, starting with a scheme "
            "(which may be a {variable} itself, as in {scheme}://host/{path}).",
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


class In(Schema):
    # Strict: a body's values must have the document's JSON types (no 0 for false, no "5" for 5); an enum
    # field takes its value as text, so it says strict=False.
    model_config = ConfigDict(extra="forbid", strict=True)


def _not_null(value: Any) -> Any:
    if value is None:
        raise ValueError("must not be null; leave the field out to keep its value")
    return value


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)  # a PATCH field left out keeps the stored value: it has no default


def partial(schema: type[Schema], name: str) -> type[Schema]:
    """The same fields, all optional: the body of a PATCH. A field may be left out, but is null
    only where the full schema allows null (the document says so: no field of a PATCH is nullable
    that is not nullable in the full body)."""
    fields: dict[str, Any] = {}
    for field, info in schema.model_fields.items():
        optional = copy.copy(info)
        optional.default, optional.default_factory = None, None
        optional.json_schema_extra = _no_default
        fields[field] = (info.annotation, optional)
    not_nullable = [field for field, info in schema.model_fields.items() if type(None) not in get_args(info.annotation)]
    before = {"_not_null": field_validator(*not_nullable, mode="before")(_not_null)} if not_nullable else {}
    # The full schema as base: its own validators (a blob must be base64...) check a PATCH's fields too.
    return create_model(name, __base__=schema, __validators__=before, **fields)


class Error(Schema):
    detail: str
    errors: dict[str, list[str]] | list[dict[str, Any]] | None = None


class Credentials(In):
    """Write-only upstream credentials; which keys apply depends on auth_type: basic: username (no ':') and
    password; bearer: token; headers: headers (at least one); oauth kinds: client_secret."""

    username: OneLine | None = None
    password: OneLine | None = None
    token: OneLine | None = None
    headers: Headers | None = None
    client_secret: OneLine | None = Field(None, description="OAuth kinds: the gateway's client secret.")


class GatewayIn(In):
    """An upstream gateway. Besides each field's own rules: stdio takes a command (and args, env, cwd) and no
    URL, the other transports a URL of their scheme (http(s), or ws(s) for websocket) and no command; era
    2026-07-28 only with streamable_http or stdio; the oauth kinds need oauth_client_id (and oauth_client
    oauth_token_url); per_user_credentials needs an auth_type other than none and oauth_client."""

    name: Slug
    description: str = ""
    transport: Transport = Field(Transport.STREAMABLE_HTTP, strict=False)
    era: Era = Field(
        Era.AUTO, strict=False, description="auto: detect the upstream's MCP era at every connection; or force one."
    )
    url: UpstreamUrl = Field("", description="Not for stdio; http(s)://, or ws(s):// for websocket.")
    command: Text1024 = Field("", description="stdio only: the program to start.")
    args: list[str] = []
    env: Env = {}
    cwd: Text1024 = ""
    auth_type: AuthType = Field(AuthType.NONE, strict=False)
    credentials: Credentials | None = Field(None, description="Write-only; never returned.")
    per_user_credentials: bool = Field(
        False, description="Each user brings their own credentials (PUT /api/gateways/{id}/my-credentials)."
    )
    oauth_token_url: HttpUrl = Field("", description="OAuth kinds: the token endpoint (empty: discovered).")
    oauth_authorization_url: HttpUrl = Field("", description="OAuth per user: the authorization endpoint.")
    oauth_client_id: Text255 = ""
    oauth_scopes: Text1024 = Field("", description="Space-separated scopes to ask for.")
    verify_tls: bool = True
    ca_bundle: PemBundle = Field("", description="PEM text with -----BEGIN CERTIFICATE-----, or empty.")
    enabled: bool = True
    rate_limit: RateLimit = Field(
        "",
        description="Calls per window to this gateway's tools from everyone, e.g. 100/minute; "
        "empty: GATEWAY_RATE_LIMIT_PER_GATEWAY.",
    )
    max_concurrency: json_int(0, MAX_INT32) | None = Field(  # type: ignore[valid-type]
        None,
        description="Calls in flight to this upstream at once, per gateway process; "
        "null: GATEWAY_UPSTREAM_MAX_CONCURRENCY; 0: no bound.",
    )


class GatewayOut(Schema):
    id: int
    name: str
    description: str
    transport: Transport
    era: Era
    url: str
    command: str
    args: list[str]
    env: dict[str, str]
    cwd: str
    auth_type: AuthType
    has_credentials: bool
    per_user_credentials: bool
    oauth_token_url: str
    oauth_authorization_url: str
    oauth_client_id: str
    oauth_scopes: str
    verify_tls: bool
    ca_bundle: str
    enabled: bool
    rate_limit: str
    max_concurrency: int | None
    health: Health
    last_error: str
    last_seen_at: datetime | None
    detected_era: DetectedEra | None = Field(description="The era found at the last connection (null: not yet).")
    protocol_version: str
    server_info: dict[str, Any]
    capabilities: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def resolve_detected_era(obj: Any) -> str | None:
        value = obj.get("detected_era") if isinstance(obj, dict) else obj.detected_era
        return value or None


class ToolCredentials(In):
    """Write-only secrets of a REST tool's authentication; which keys apply depends on
    ``backend_config.auth.type``: basic: username, password; bearer: token; api_key: key; oauth2:
    client_id, client_secret."""

    username: OneLine | None = None
    password: OneLine | None = None
    token: OneLine | None = None
    key: OneLine | None = None
    client_id: OneLine | None = None
    client_secret: OneLine | None = None


class ToolIn(In):
    """A tool. Besides each field's own rules: an mcp tool names its gateway (an existing one) and has no
    backend_config; a rest, cli or function tool has no gateway and the backend_config of its kind
    (docs/tool-backends.md); only rest tools take credentials."""

    name: ToolName
    title: Title = ""
    description: str = ""
    input_schema: ObjectSchema = Field(default_factory=lambda: {"type": "object", "properties": {}})
    output_schema: ObjectSchema | None = None
    annotations: ToolAnnotations = {}
    tags: list[Tag] = []
    enabled: bool = True
    timeout: Annotated[float, Rule({"minimum": 0.001})] | None = Field(
        None, description="Seconds; null: GATEWAY_TOOL_TIMEOUT."
    )
    rate_limit: RateLimit = Field(
        "", description="Calls per window of this tool, per user, e.g. 10/minute; empty: GATEWAY_RATE_LIMIT_PER_TOOL."
    )
    integration_type: IntegrationType = Field(IntegrationType.MCP, strict=False)
    gateway: str | None = Field(None, description="Name of the gateway an MCP tool comes from.")
    original_name: Title = ""
    backend_config: dict[str, Any] = Field(
        {}, description="The definition of a REST, CLI or function tool (docs/tool-backends.md); {} for MCP tools."
    )
    credentials: ToolCredentials | None = Field(
        None, description="REST tools: write-only secrets, never returned; left out: kept; {}: cleared."
    )
    description_override: str = Field(
        "", description="Served instead of description; for a gateway's tool, the one description you may change."
    )


class ToolOut(Schema):
    id: int
    name: str
    title: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None
    annotations: dict[str, Any]
    tags: list[str]
    enabled: bool
    timeout: float | None
    rate_limit: str
    integration_type: IntegrationType
    gateway: str | None = Field(None, alias="gateway.name")
    original_name: str
    backend_config: dict[str, Any]
    has_credentials: bool
    description_override: str
    drift_pending: bool = Field(
        description="The upstream changed this tool's definition and the change waits for approval "
        "(POST /api/tools/{id}/approve-definition)."
    )
    drift_detected_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def resolve_drift_pending(obj: Any) -> bool:
        return obj.pending_definition is not None


class DefinitionChangeOut(Schema):
    id: int
    tool: str = Field(alias="tool.name")
    gateway: str = Field(alias="gateway.name")
    detected_at: datetime
    status: ChangeStatus
    decided_by: str
    decided_at: datetime | None
    previous: dict[str, Any]
    current: dict[str, Any]
    diff: list[dict[str, Any]] = Field(
        description='Per changed field: {"field", "before", "after", "text"} (text: a unified diff or "").'
    )


class Valid(Schema):
    valid: bool = True


def _decode_blob(value: str | None) -> bytes | None:
    if value is None:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("blob must be base64 text") from None


class ResourceIn(In):
    """A resource: exactly one of text, blob or gateway (an existing one) is its source."""

    uri: Uri
    name: Label
    title: Title = ""
    description: str = ""
    mime_type: Text255 = ""
    text: str | None = None
    blob: Base64 | None = Field(None, description="Binary content, base64.")
    gateway: str | None = None
    original_uri: Text2048 = ""
    annotations: dict[str, Any] = {}
    enabled: bool = True

    @field_validator("blob")
    @classmethod
    def _blob_is_base64(cls, value: str | None) -> str | None:
        _decode_blob(value)
        return value


class ResourceOut(Schema):
    id: int
    uri: str
    name: str
    title: str
    description: str
    mime_type: str
    text: str | None
    blob: str | None
    gateway: str | None = Field(None, alias="gateway.name")
    original_uri: str
    annotations: dict[str, Any]
    enabled: bool
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def resolve_blob(obj: Any) -> str | None:
        return None if obj.blob is None else base64.b64encode(bytes(obj.blob)).decode()


class ResourceTemplateIn(In):
    uri_template: UriTemplate
    name: Label
    title: Title = ""
    description: str = ""
    mime_type: Text255 = ""
    gateway: str | None = None
    annotations: dict[str, Any] = {}
    enabled: bool = True


class ResourceTemplateOut(Schema):
    id: int
    uri_template: str
    name: str
    title: str
    description: str
    mime_type: str
    gateway: str | None = Field(None, alias="gateway.name")
    annotations: dict[str, Any]
    enabled: bool
    created_at: datetime
    updated_at: datetime


class PromptArgument(In):
    name: Annotated[str, Rule({"minLength": 1})]
    title: str | None = None
    description: str | None = None
    required: bool | None = None


class PromptIn(In):
    """A prompt: a local one has a template (Jinja2 that compiles) and no gateway; an upstream one names its
    gateway (an existing one) and has no template. Argument names are unique."""

    name: ToolName
    title: Title = ""
    description: str = ""
    arguments: list[PromptArgument] = []
    template: str = ""
    gateway: str | None = None
    original_name: Title = ""
    enabled: bool = True


class PromptOut(Schema):
    id: int
    name: str
    title: str
    description: str
    arguments: list[dict[str, Any]]
    template: str
    gateway: str | None = Field(None, alias="gateway.name")
    original_name: str
    enabled: bool
    created_at: datetime
    updated_at: datetime


class VirtualServerIn(In):
    """A virtual server; its members are named by existing entries' names, URIs and URI templates."""

    name: Slug
    title: Title = ""
    description: str = ""
    icon: IconUrl = Field("", description="URL of an icon (http(s): or data:).")
    enabled: bool = True
    rate_limit: RateLimit = Field(
        "",
        description="Requests per window to this server, per user, e.g. 600/minute; "
        "empty: GATEWAY_RATE_LIMIT_PER_SERVER.",
    )
    tools: list[str] = Field([], description="Tool names.")
    resources: list[str] = Field([], description="Resource URIs.")
    resource_templates: list[str] = Field([], description="URI templates.")
    prompts: list[str] = Field([], description="Prompt names.")
    gateways: list[str] = Field([], description="Gateway names: all their entries, kept up to date.")


class VirtualServerOut(Schema):
    id: int
    name: str
    title: str
    description: str
    icon: str
    enabled: bool
    rate_limit: str
    tools: list[str]
    resources: list[str]
    resource_templates: list[str]
    prompts: list[str]
    gateways: list[str]
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def resolve_gateways(obj: Any) -> list[str]:
        return sorted(g.name for g in obj.gateways.all())

    @staticmethod
    def resolve_tools(obj: Any) -> list[str]:
        return sorted(t.name for t in obj.tools.all())

    @staticmethod
    def resolve_resources(obj: Any) -> list[str]:
        return sorted(r.uri for r in obj.resources.all())

    @staticmethod
    def resolve_resource_templates(obj: Any) -> list[str]:
        return sorted(t.uri_template for t in obj.resource_templates.all())

    @staticmethod
    def resolve_prompts(obj: Any) -> list[str]:
        return sorted(p.name for p in obj.prompts.all())


class Filters(Schema):
    q: str | None = Field(None, description="Text search in names and descriptions.")
    enabled: bool | None = None


class GatewayFilters(Filters):
    transport: Transport | None = None
    era: Era | None = None
    health: Health | None = None


class SourceFilters(Filters):
    gateway: str | None = Field(None, description="Only entries from this gateway (name).")


class ToolFilters(SourceFilters):
    tag: str | None = None
    integration_type: IntegrationType | None = None


class TokenIn(In):
    """A token for the caller: its scopes must be among the caller's own, its server an existing virtual server,
    and its lifetime must end before the year 9999."""

    expires_in: Annotated[str, Rule({"pattern": DURATION_PATTERN})] | None = Field(
        None, description="e.g. 30m, 12h, 7d, 2w; default JWT_DEFAULT_EXPIRES_IN."
    )
    scopes: Annotated[list[Literal["read", "write", "call"]], Rule({"minItems": 1})] | None = None
    name: str = Field("", max_length=128, description="What the token is for (shown in lists).")
    server: str | None = Field(
        None,
        description="Bind the token to this virtual server: it then opens only /servers/<server>/mcp (and its "
        "sse, ws and rpc endpoints), not the whole catalog, other servers or this REST API.",
    )


class TokenOut(Schema):
    token: str = Field(description="The token itself: shown only in this answer, it cannot be recovered later.")
    token_type: str = "Bearer"
    jti: str
    name: str
    scopes: list[str]
    server: str | None
    expires_at: datetime


class TokenRecordOut(Schema):
    """A recorded token: never the token itself."""

    jti: str
    user: str
    name: str
    scopes: list[str]
    server: str | None
    issued_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    issued_by: str
    state: Literal["active", "expired", "revoked"]

    @staticmethod
    def resolve_user(obj: Any) -> str:
        return str(obj.user.get_username())

    @staticmethod
    def resolve_scopes(obj: Any) -> list[str]:
        return list(obj.scope_list)

    @staticmethod
    def resolve_server(obj: Any) -> str | None:
        return obj.server.name if obj.server is not None else None

    @staticmethod
    def resolve_state(obj: Any) -> str:
        return str(obj.state)


class TokenFilters(Schema):
    user: str | None = Field(None, description="Only this user's tokens (other users' need the write scope).")
    state: Literal["active", "expired", "revoked"] | None = None
    server: str | None = Field(None, description='Only tokens bound to this virtual server ("" for unbound ones).')


class RevokeIn(In):
    token: Annotated[str, Rule({"pattern": f"[^{validators.SPACE_CHARS}]"})] = Field(
        description="The token itself (it must be readable), or its jti (at most 128 characters)."
    )
    reason: Annotated[str, Rule({"maxLength": 256})] = ""


class RevokeOut(Schema):
    jti: str
    revoked_at: datetime


class ImportReport(Schema):
    dry_run: bool
    created: dict[str, list[str]]
    updated: dict[str, list[str]]
    unchanged: dict[str, list[str]]
    conflicts: list[dict[str, Any]]


BLOB_DECODER = _decode_blob


def to_data(payload: Schema, *, partial: bool = False) -> dict[str, Any]:
    """A validated request body as service input: only the fields sent (PATCH) or all of them,
    with base64 blobs decoded and unset optional keys dropped from nested objects."""
    data = payload.model_dump(exclude_unset=partial)
    if data.get("arguments") is not None:
        data["arguments"] = [{k: v for k, v in arg.items() if v is not None} for arg in data["arguments"]]
    if data.get("credentials") is not None:
        data["credentials"] = {k: v for k, v in data["credentials"].items() if v is not None}
    if data.get("blob") is not None:
        data["blob"] = _decode_blob(data["blob"])
    return data


class MyCredentialsIn(In):
    """Your own credentials for a gateway with per_user_credentials, of the gateway's kind: bearer: token;
    basic: username, password; headers: headers; oauth2-user: access_token (refresh_token, expires_in)."""

    token: str | None = None
    username: str | None = None
    password: str | None = None
    headers: dict[str, str] | None = None
    access_token: str | None = None
    refresh_token: str | None = None
    expires_in: json_int(1, 10**9) | None = Field(  # type: ignore[valid-type]
        None, description="OAuth: seconds the access token lives."
    )


class MyCredentialsOut(Schema):
    gateway: str
    connected: bool
    updated_at: datetime | None = None
