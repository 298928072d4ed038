"""Tokens: issuing one, the record of one (never the token itself), their filters, and revoking one."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from ninja import Schema
from pydantic import Field

from registry import validators
from registry.schemas.base import In
from registry.schemas.fields import DURATION_PATTERN, Rule


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
