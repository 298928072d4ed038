"""Upstream gateways: their definition, what the API shows of them, their filters, and a user's own
credentials for one."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ninja import Schema
from pydantic import Field

from registry.choices import AuthType, DetectedEra, Era, Health, Transport
from registry.schemas.base import Filters, In
from registry.schemas.fields import (
    MAX_INT32,
    Env,
    Headers,
    HttpUrl,
    OneLine,
    PemBundle,
    RateLimit,
    Slug,
    Text255,
    Text1024,
    UpstreamUrl,
    json_int,
)


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


class GatewayFilters(Filters):
    transport: Transport | None = None
    era: Era | None = None
    health: Health | None = None


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
