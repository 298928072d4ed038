"""The catalog itself: upstream gateways, the entries they and people add (tools, resources, resource
templates, prompts), the virtual servers that compose them, and the catalog's version counter."""

from __future__ import annotations

from functools import partial
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from registry import crypto, tool_kinds, validators
from registry.choices import (
    AuthType,
    DetectedEra,
    Era,
    Health,
    IntegrationType,
    Transport,
)

URL_SCHEMES = {
    Transport.STREAMABLE_HTTP: ("http", "https"),
    Transport.SSE: ("http", "https"),
    Transport.WEBSOCKET: ("ws", "wss"),
}


def default_input_schema() -> dict[str, Any]:
    return {"type": "object", "properties": {}}


class TimeStamped(models.Model):
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class Gateway(TimeStamped):
    """An upstream MCP server or peer gateway whose tools, resources and prompts join the catalog."""

    name = models.CharField(max_length=64, unique=True, validators=[validators.validate_slug])
    description = models.TextField(blank=True)
    transport = models.CharField(max_length=32, choices=Transport.choices, default=Transport.STREAMABLE_HTTP)
    era = models.CharField(
        "protocol era",
        max_length=16,
        choices=Era.choices,
        default=Era.AUTO,
        help_text="Detect the upstream's MCP era at every connection, or force one (2026-07-28 exists for "
        "Streamable HTTP and stdio only).",
    )
    url = models.CharField("URL", max_length=2048, blank=True, help_text="Not used by stdio.")
    command = models.CharField(max_length=1024, blank=True, help_text="stdio only: the program to start.")
    args = models.JSONField(default=list, blank=True, validators=[validators.validate_string_list])
    env = models.JSONField(
        "environment",
        default=dict,
        blank=True,
        validators=[validators.validate_env],
        help_text="stdio only: extra environment variables (not secret; stored in clear).",
    )
    cwd = models.CharField("working directory", max_length=1024, blank=True)
    auth_type = models.CharField(max_length=16, choices=AuthType.choices, default=AuthType.NONE)
    credentials_encrypted = models.TextField(blank=True, editable=False)
    # Per-user upstream credentials (docs/governance.md): each user's own from the vault (UpstreamCredential).
    per_user_credentials = models.BooleanField(
        "per-user credentials",
        default=False,
        help_text="Each user reaches the upstream with credentials of their own (connected at /accounts/upstreams/"
        " or PUT /api/gateways/{id}/my-credentials); a user without them cannot call it. Always on for OAuth per user.",
    )
    oauth_token_url = models.CharField(
        "OAuth token URL",
        max_length=2048,
        blank=True,
        help_text="OAuth kinds: the authorization server's token endpoint; empty: discovered from the upstream's "
        "RFC 9728 metadata.",
    )
    oauth_authorization_url = models.CharField(
        "OAuth authorization URL",
        max_length=2048,
        blank=True,
        help_text="OAuth per user: the authorization endpoint users are sent to; empty: discovered.",
    )
    oauth_client_id = models.CharField("OAuth client id", max_length=255, blank=True)
    oauth_scopes = models.CharField(
        "OAuth scopes", max_length=1024, blank=True, help_text="Space-separated scopes to ask for."
    )
    verify_tls = models.BooleanField("verify TLS", default=True)
    ca_bundle = models.TextField("CA bundle (PEM)", blank=True)
    enabled = models.BooleanField(default=True)
    # Operations (docs/federation.md): how often the catalog is read, failover and stdio supervision.
    sync_interval = models.PositiveIntegerField(
        "sync interval",
        null=True,
        blank=True,
        help_text="Seconds between scheduled reads of the upstream's catalog; empty: GATEWAY_SYNC_INTERVAL; "
        "0: only when the upstream says list_changed or by hand.",
    )
    redundancy_group = models.CharField(
        max_length=64,
        blank=True,
        validators=[validators.validate_slug],
        help_text="Gateways of one group that offer the same tool (same name and input schema) serve it as "
        "one tool: calls go to a healthy one, by priority, then round robin.",
    )
    priority = models.IntegerField(default=100, help_text="Within a redundancy group: lower is tried first.")
    per_user_process = models.BooleanField(
        "one process per user",
        default=False,
        help_text="stdio only: the server keeps per-user state, so each user gets a process of their own.",
    )
    start_at_boot = models.BooleanField(
        default=False, help_text="stdio only: start the process when the gateway starts, not on first use."
    )
    rate_limit = models.CharField(
        max_length=32,
        blank=True,
        validators=[validators.validate_rate_limit],
        help_text="Calls per window to this gateway's tools from everyone, e.g. 100/minute; empty: "
        "GATEWAY_RATE_LIMIT_PER_GATEWAY.",
    )
    max_concurrency = models.PositiveIntegerField(
        "most calls at once",
        null=True,
        blank=True,
        help_text="Calls in flight to this upstream at once (per gateway process); more wait briefly, then are "
        "refused. Empty: GATEWAY_UPSTREAM_MAX_CONCURRENCY; 0: no bound.",
    )
    # What the gateway last learned about the upstream (written by federation, not by people).
    health = models.CharField(max_length=16, choices=Health.choices, default=Health.UNKNOWN, editable=False)
    last_error = models.TextField(blank=True, editable=False)
    last_seen_at = models.DateTimeField(null=True, blank=True, editable=False)
    consecutive_failures = models.PositiveIntegerField(default=0, editable=False)
    health_changed_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_checked_at = models.DateTimeField(null=True, blank=True, editable=False)
    next_check_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_synced_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The stdio supervisor's last report: {"state", "pid", "restarts", "since", "last_exit", "host"}.
    process_state = models.JSONField(default=dict, blank=True, editable=False)
    # A lease on the gateway's periodic work (sync, check): one worker at a time, across processes.
    lease_owner = models.CharField(max_length=64, blank=True, editable=False)
    lease_until = models.DateTimeField(null=True, blank=True, editable=False)
    protocol_version = models.CharField(max_length=32, blank=True, editable=False)
    detected_era = models.CharField(max_length=16, choices=DetectedEra.choices, blank=True, editable=False)
    server_info = models.JSONField(default=dict, blank=True, editable=False)
    capabilities = models.JSONField(default=dict, blank=True, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.transport == Transport.STDIO:
            if not self.command:
                errors["command"] = "A stdio gateway needs a command to start."
            if self.url:
                errors["url"] = "A stdio gateway has no URL; leave it empty."
        else:
            if self.command or self.args or self.env or self.cwd:
                errors["command"] = "command, args, env and cwd are only for stdio gateways."
            if not self.url:
                errors["url"] = f"A {self.get_transport_display()} gateway needs a URL."
            else:
                try:
                    validators.validate_upstream_url(self.url, schemes=URL_SCHEMES[Transport(self.transport)])
                except ValidationError as exc:
                    errors["url"] = exc.messages[0]
        if self.transport != Transport.STDIO and (self.per_user_process or self.start_at_boot):
            errors["per_user_process"] = "Process options are only for stdio gateways."
        if self.era == Era.MODERN and self.transport in (Transport.SSE, Transport.WEBSOCKET):
            errors["era"] = f"MCP 2026-07-28 has no {self.get_transport_display()} transport; use auto or legacy."
        if self.auth_type in (AuthType.OAUTH_CLIENT, AuthType.OAUTH_USER):
            if self.transport == Transport.STDIO:
                errors["auth_type"] = "OAuth credentials are for HTTP upstreams, not stdio."
            if not self.oauth_client_id:
                errors["oauth_client_id"] = "OAuth needs the client id the authorization server gave the gateway."
            if self.auth_type == AuthType.OAUTH_CLIENT and not self.oauth_token_url:
                errors["oauth_token_url"] = "OAuth client credentials need the token URL."
            for field in ("oauth_token_url", "oauth_authorization_url"):
                value = getattr(self, field)
                if value:
                    try:
                        validators.validate_upstream_url(value, schemes=("http", "https"))
                    except ValidationError as exc:
                        errors[field] = exc.messages[0]
        if self.auth_type == AuthType.OAUTH_USER:
            self.per_user_credentials = True
        if self.per_user_credentials and self.auth_type == AuthType.NONE:
            errors["auth_type"] = "Per-user credentials need a kind (bearer, basic, headers or OAuth per user)."
        if self.per_user_credentials and self.auth_type == AuthType.OAUTH_CLIENT:
            errors["per_user_credentials"] = (
                "OAuth client credentials are the gateway's own token; choose OAuth per user for users' own tokens."
            )
        if self.ca_bundle and "-----BEGIN CERTIFICATE-----" not in self.ca_bundle:
            errors["ca_bundle"] = "The CA bundle must be PEM text containing -----BEGIN CERTIFICATE-----."
        if errors:
            raise ValidationError(errors)

    @property
    def has_credentials(self) -> bool:
        return self.auth_type != AuthType.NONE and bool(self.credentials_encrypted)

    def get_credentials(self) -> dict[str, Any]:
        """The decrypted credentials: {username, password} | {token} | {headers} | {}."""
        if not self.credentials_encrypted:
            return {}
        return crypto.decrypt_json(self.credentials_encrypted)

    def set_credentials(self, auth_type: str, credentials: dict[str, Any]) -> None:
        """Validate and encrypt credentials of the given kind; ``none`` clears them."""
        auth_type = AuthType(auth_type)
        cleaned = clean_credentials(auth_type, credentials)
        self.auth_type = auth_type
        self.credentials_encrypted = crypto.encrypt_json(cleaned) if cleaned else ""


def clean_credentials(auth_type: AuthType, credentials: dict[str, Any]) -> dict[str, Any]:
    """Credentials of ``auth_type`` checked and reduced to the keys it uses (a gateway's, or a user's own in
    the vault), or ValidationError."""

    def text(key: str) -> str:
        value = credentials.get(key)
        if not isinstance(value, str) or not value:
            raise ValidationError({"credentials": f"{auth_type.label} credentials need a non-empty '{key}'."})
        if "\r" in value or "\n" in value:
            raise ValidationError({"credentials": f"'{key}' must not contain line breaks."})
        return value

    if auth_type == AuthType.NONE:
        return {}
    if auth_type in (AuthType.OAUTH_CLIENT, AuthType.OAUTH_USER):
        # The gateway's client secret (optional for OAuth per user: a public client with PKCE).
        secret = credentials.get("client_secret")
        if secret in (None, "") and auth_type == AuthType.OAUTH_USER:
            return {}
        return {"client_secret": text("client_secret")}
    if auth_type == AuthType.BASIC:
        username = text("username")
        if ":" in username:
            raise ValidationError({"credentials": "A Basic username must not contain ':'."})
        return {"username": username, "password": text("password")}
    if auth_type == AuthType.BEARER:
        return {"token": text("token")}
    headers = credentials.get("headers")
    try:
        validators.validate_headers(headers)
    except ValidationError as exc:
        raise ValidationError({"credentials": exc.messages}) from None
    if not headers:
        raise ValidationError({"credentials": "Custom-header credentials need at least one header."})
    return {"headers": dict(headers)}


class Tool(TimeStamped):
    """A callable tool: from an upstream MCP server, or a wrapped REST API, command or Python function."""

    name = models.CharField(max_length=128, unique=True, validators=[validators.validate_tool_name])
    title = models.CharField(max_length=256, blank=True)
    description = models.TextField(blank=True)
    input_schema = models.JSONField(default=default_input_schema, validators=[validators.validate_object_schema])
    output_schema = models.JSONField(null=True, blank=True, validators=[validators.validate_object_schema])
    annotations = models.JSONField(default=dict, blank=True, validators=[validators.validate_tool_annotations])
    tags = models.JSONField(default=list, blank=True, validators=[validators.validate_tags])
    enabled = models.BooleanField(default=True)
    rate_limit = models.CharField(
        max_length=32,
        blank=True,
        validators=[validators.validate_rate_limit],
        help_text="Calls per window of this tool, per user, e.g. 10/minute; empty: GATEWAY_RATE_LIMIT_PER_TOOL.",
    )
    timeout = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.001)], help_text="Seconds; empty: the default."
    )
    integration_type = models.CharField(max_length=16, choices=IntegrationType.choices, default=IntegrationType.MCP)
    gateway = models.ForeignKey(Gateway, null=True, blank=True, on_delete=models.CASCADE, related_name="tools")
    original_name = models.CharField(
        max_length=256, blank=True, help_text="The upstream's own name, when the catalog name differs."
    )
    # The definition of a REST, CLI or function backend (docs/tool-backends.md); {} for MCP tools.
    backend_config = models.JSONField(default=dict, blank=True, validators=[validators.validate_json_object])
    # A REST tool's secrets (password, token, API key, OAuth client secret), encrypted like a gateway's.
    credentials_encrypted = models.TextField(blank=True, editable=False)
    # Local choice for an upstream tool: served instead of the upstream's description (kept by syncs).
    description_override = models.TextField(
        blank=True, help_text="Served instead of the description; a sync never changes it."
    )
    # Definition drift (docs/federation.md): the upstream's changed definition, held until approved.
    pending_definition = models.JSONField(null=True, blank=True, editable=False)
    drift_detected_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.integration_type == IntegrationType.MCP:
            if self.gateway_id is None:
                raise ValidationError({"gateway": "A tool of an upstream MCP server needs its gateway."})
            if self.backend_config:
                raise ValidationError({"backend_config": "MCP tools take no backend configuration."})
        elif self.gateway_id is not None:
            raise ValidationError({"gateway": "Only MCP tools come from a gateway."})
        else:
            tool_kinds.clean(self)
        if self.credentials_encrypted and self.integration_type != IntegrationType.REST:
            raise ValidationError({"credentials": "Only REST tools hold credentials."})
        self.tags = sorted({tag.strip() for tag in self.tags if isinstance(tag, str)} - {""})

    @property
    def has_credentials(self) -> bool:
        return bool(self.credentials_encrypted)

    def get_credentials(self) -> dict[str, str]:
        """The decrypted secrets of a REST tool's authentication, or {}."""
        if not self.credentials_encrypted:
            return {}
        return crypto.decrypt_json(self.credentials_encrypted)

    def set_credentials(self, credentials: dict[str, Any]) -> None:
        """Encrypt the secrets (string values; which keys are needed is checked by the tool's kind);
        an empty mapping clears them."""
        cleaned: dict[str, str] = {}
        for key, value in (credentials or {}).items():
            if not isinstance(value, str):
                raise ValidationError({"credentials": f"Credential '{key}' must be text."})
            if "\r" in value or "\n" in value:
                raise ValidationError({"credentials": f"Credential '{key}' must not contain line breaks."})
            if value:
                cleaned[key] = value
        self.credentials_encrypted = crypto.encrypt_json(cleaned) if cleaned else ""

    @property
    def upstream_name(self) -> str:
        return self.original_name or self.name

    @property
    def served_description(self) -> str:
        return self.description_override or self.description

    def definition(self) -> dict[str, Any]:
        """The fields an upstream owns, as stored (what drift compares)."""
        return {field: getattr(self, field) for field in UPSTREAM_TOOL_FIELDS}


# The fields of an upstream MCP tool that its upstream owns: read-only in the admin and the API,
# written only by syncs (and by approving a held-back change).
UPSTREAM_TOOL_FIELDS = ("title", "description", "input_schema", "output_schema", "annotations")


class Resource(TimeStamped):
    """A readable resource: stored text or bytes, or read from an upstream MCP server."""

    uri = models.CharField("URI", max_length=2048, unique=True, validators=[validators.validate_uri])
    name = models.CharField(max_length=256)
    title = models.CharField(max_length=256, blank=True)
    description = models.TextField(blank=True)
    mime_type = models.CharField("MIME type", max_length=255, blank=True)
    # None means "no text content" (binary or upstream), which differs from empty text.
    text = models.TextField(null=True, blank=True, help_text="Text content, or empty for binary or upstream.")  # noqa: DJ001
    blob = models.BinaryField(null=True, blank=True, help_text="Binary content.")
    gateway = models.ForeignKey(Gateway, null=True, blank=True, on_delete=models.CASCADE, related_name="resources")
    original_uri = models.CharField(max_length=2048, blank=True)
    annotations = models.JSONField(default=dict, blank=True, validators=[validators.validate_json_object])
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["uri"]

    def __str__(self) -> str:
        return self.uri

    def clean(self) -> None:
        sources = [self.gateway_id is not None, self.text is not None, self.blob is not None]
        if sum(sources) != 1:
            raise ValidationError(
                "A resource needs exactly one source: text content, binary content, or an upstream gateway."
            )


class ResourceTemplate(TimeStamped):
    """A parameterised resource (RFC 6570 URI template), usually from an upstream."""

    uri_template = models.CharField(
        "URI template", max_length=2048, unique=True, validators=[validators.validate_uri_template]
    )
    name = models.CharField(max_length=256)
    title = models.CharField(max_length=256, blank=True)
    description = models.TextField(blank=True)
    mime_type = models.CharField("MIME type", max_length=255, blank=True)
    gateway = models.ForeignKey(
        Gateway, null=True, blank=True, on_delete=models.CASCADE, related_name="resource_templates"
    )
    annotations = models.JSONField(default=dict, blank=True, validators=[validators.validate_json_object])
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["uri_template"]

    def __str__(self) -> str:
        return self.uri_template


class Prompt(TimeStamped):
    """A prompt template rendered with arguments in a sandboxed Jinja2 environment, or from an upstream."""

    name = models.CharField(max_length=128, unique=True, validators=[validators.validate_tool_name])
    title = models.CharField(max_length=256, blank=True)
    description = models.TextField(blank=True)
    arguments = models.JSONField(default=list, blank=True, validators=[validators.validate_prompt_arguments])
    template = models.TextField(blank=True, help_text="Jinja2 text; arguments are variables, e.g. {{ topic }}.")
    gateway = models.ForeignKey(Gateway, null=True, blank=True, on_delete=models.CASCADE, related_name="prompts")
    original_name = models.CharField(max_length=256, blank=True)
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from registry import prompts

        if self.gateway_id is None:
            if not self.template:
                raise ValidationError({"template": "A local prompt needs a template."})
            try:
                prompts.compile_template(self.template)
            except prompts.TemplateSyntaxError as exc:
                raise ValidationError({"template": f"Template error on line {exc.lineno}: {exc.message}"}) from None
        elif self.template:
            raise ValidationError({"template": "Upstream prompts are rendered by their upstream; leave it empty."})


class VirtualServer(TimeStamped):
    """A named composition of catalog entries, served at /servers/<name>/mcp."""

    name = models.CharField(max_length=64, unique=True, validators=[validators.validate_slug])
    title = models.CharField(max_length=256, blank=True)
    description = models.TextField(blank=True)
    icon = models.CharField(max_length=2048, blank=True, help_text="URL of an icon (https: or data:).")
    enabled = models.BooleanField(default=True)
    rate_limit = models.CharField(
        max_length=32,
        blank=True,
        validators=[validators.validate_rate_limit],
        help_text="Requests per window to this server, per user, e.g. 600/minute; empty: "
        "GATEWAY_RATE_LIMIT_PER_SERVER.",
    )
    tools = models.ManyToManyField(Tool, blank=True, related_name="servers")
    resources = models.ManyToManyField(Resource, blank=True, related_name="servers")
    resource_templates = models.ManyToManyField(ResourceTemplate, blank=True, related_name="servers")
    prompts = models.ManyToManyField(Prompt, blank=True, related_name="servers")
    gateways = models.ManyToManyField(
        Gateway,
        blank=True,
        related_name="servers",
        help_text="Everything these gateways offer, now and after each refresh, is part of the server.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.icon:
            validate_icon = partial(validators.validate_upstream_url, schemes=("https", "http"))
            if not self.icon.startswith("data:"):
                try:
                    validate_icon(self.icon)
                except ValidationError:
                    raise ValidationError({"icon": "The icon must be an http(s): or data: URL."}) from None


class CatalogRevision(models.Model):
    """One row whose version goes up with every committed catalog change (snapshot invalidation)."""

    version = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"catalog v{self.version}"
