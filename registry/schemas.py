"""Request and response shapes of the REST API. Fields are listed explicitly; unknown fields are
rejected (422) so a typo never silently does nothing."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any, Literal, get_args

from ninja import Schema
from pydantic import ConfigDict, Field, create_model, field_validator

from registry.choices import AuthType, ChangeStatus, DetectedEra, Era, Health, IntegrationType, Transport


class In(Schema):
    model_config = ConfigDict(extra="forbid")


def _not_null(value: Any) -> Any:
    if value is None:
        raise ValueError("must not be null; leave the field out to keep its value")
    return value


def partial(schema: type[Schema], name: str) -> type[Schema]:
    """The same fields, all optional: the body of a PATCH. A field may be left out, but is null
    only where the full schema allows null."""
    fields: dict[str, Any] = {
        field: (info.annotation | None, Field(default=None, description=info.description))  # type: ignore[operator]
        for field, info in schema.model_fields.items()
    }
    not_nullable = [field for field, info in schema.model_fields.items() if type(None) not in get_args(info.annotation)]
    validators = {"_not_null": field_validator(*not_nullable)(_not_null)} if not_nullable else {}
    return create_model(name, __base__=In, __validators__=validators, **fields)


class Error(Schema):
    detail: str
    errors: dict[str, list[str]] | list[dict[str, Any]] | None = None


class Credentials(In):
    """Write-only upstream credentials; which keys apply depends on auth_type."""

    username: str | None = None
    password: str | None = None
    token: str | None = None
    headers: dict[str, str] | None = None
    client_secret: str | None = Field(None, description="OAuth kinds: the gateway's client secret.")


class GatewayIn(In):
    name: str
    description: str = ""
    transport: Transport = Transport.STREAMABLE_HTTP
    era: Era = Field(Era.AUTO, description="auto: detect the upstream's MCP era at every connection; or force one.")
    url: str = ""
    command: str = ""
    args: list[str] = []
    env: dict[str, str] = {}
    cwd: str = ""
    auth_type: AuthType = AuthType.NONE
    credentials: Credentials | None = Field(None, description="Write-only; never returned.")
    per_user_credentials: bool = Field(
        False, description="Each user brings their own credentials (PUT /api/gateways/{id}/my-credentials)."
    )
    oauth_token_url: str = Field("", description="OAuth kinds: the token endpoint (empty: discovered).")
    oauth_authorization_url: str = Field("", description="OAuth per user: the authorization endpoint.")
    oauth_client_id: str = ""
    oauth_scopes: str = Field("", description="Space-separated scopes to ask for.")
    verify_tls: bool = True
    ca_bundle: str = ""
    enabled: bool = True
    rate_limit: str = Field(
        "",
        description="Calls per window to this gateway's tools from everyone, e.g. 100/minute; "
        "empty: GATEWAY_RATE_LIMIT_PER_GATEWAY.",
    )
    max_concurrency: int | None = Field(
        None,
        ge=0,
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

    username: str | None = None
    password: str | None = None
    token: str | None = None
    key: str | None = None
    client_id: str | None = None
    client_secret: str | None = None


class ToolIn(In):
    name: str
    title: str = ""
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    output_schema: dict[str, Any] | None = None
    annotations: dict[str, Any] = {}
    tags: list[str] = []
    enabled: bool = True
    timeout: float | None = Field(None, description="Seconds; null: GATEWAY_TOOL_TIMEOUT.")
    rate_limit: str = Field(
        "", description="Calls per window of this tool, per user, e.g. 10/minute; empty: GATEWAY_RATE_LIMIT_PER_TOOL."
    )
    integration_type: IntegrationType = IntegrationType.MCP
    gateway: str | None = Field(None, description="Name of the gateway an MCP tool comes from.")
    original_name: str = ""
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
    uri: str
    name: str
    title: str = ""
    description: str = ""
    mime_type: str = ""
    text: str | None = None
    blob: str | None = Field(None, description="Binary content, base64.")
    gateway: str | None = None
    original_uri: str = ""
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
    uri_template: str
    name: str
    title: str = ""
    description: str = ""
    mime_type: str = ""
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
    name: str
    title: str | None = None
    description: str | None = None
    required: bool | None = None


class PromptIn(In):
    name: str
    title: str = ""
    description: str = ""
    arguments: list[PromptArgument] = []
    template: str = ""
    gateway: str | None = None
    original_name: str = ""
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
    name: str
    title: str = ""
    description: str = ""
    icon: str = ""
    enabled: bool = True
    rate_limit: str = Field(
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
    expires_in: str | None = Field(None, description="e.g. 30m, 12h, 7d; default JWT_DEFAULT_EXPIRES_IN.")
    scopes: list[Literal["read", "write", "call"]] | None = None
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
    token: str = Field(description="The token itself, or its jti.")
    reason: str = ""


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
    expires_in: int | None = Field(None, ge=1, description="OAuth: seconds the access token lives.")


class MyCredentialsOut(Schema):
    gateway: str
    connected: bool
    updated_at: datetime | None = None
