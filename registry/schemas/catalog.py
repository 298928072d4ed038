"""The catalog's entries (tools, resources, resource templates, prompts, virtual servers): their bodies, what
the API shows of them and their filters; a tool's definition changes, and the report of an import."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Any

from ninja import Schema
from pydantic import Field, field_validator

from registry.choices import ChangeStatus, IntegrationType
from registry.schemas.base import Filters, In, decode_blob
from registry.schemas.fields import (
    Base64,
    IconUrl,
    Label,
    ObjectSchema,
    OneLine,
    RateLimit,
    Rule,
    Slug,
    Tag,
    Text255,
    Text2048,
    Title,
    ToolAnnotations,
    ToolName,
    Uri,
    UriTemplate,
)


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
        decode_blob(value)
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


class SourceFilters(Filters):
    gateway: str | None = Field(None, description="Only entries from this gateway (name).")


class ToolFilters(SourceFilters):
    tag: str | None = None
    integration_type: IntegrationType | None = None


class ImportReport(Schema):
    dry_run: bool
    created: dict[str, list[str]]
    updated: dict[str, list[str]]
    unchanged: dict[str, list[str]]
    conflicts: list[dict[str, Any]]
