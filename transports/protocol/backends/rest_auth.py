"""Authentication of REST tools (docs/tool-backends.md): basic, bearer, an API key in a header or the
query, and OAuth 2 client credentials (RFC 6749 section 4.4) with a token cache (the token client is
shared with upstream gateways: ``transports/protocol/oauth_tokens.py``).

Secrets come from the tool's decrypted credentials in the catalog snapshot; they go into the request
and nowhere else (never into a message: a failing token request is reported without them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aiohttp

from transports.protocol.oauth_tokens import AuthFailed, TokenCache, basic, client_credentials

__all__ = ["Applied", "AuthFailed", "Authenticator", "TokenCache", "basic"]


@dataclass
class Applied:
    """What a tool's authentication adds to a request."""

    headers: dict[str, str] = field(default_factory=dict)
    query: list[tuple[str, str]] = field(default_factory=list)
    sensitive_headers: frozenset[str] = frozenset({"authorization"})  # left out of cross-origin redirects
    secret_params: frozenset[str] = frozenset()  # masked in messages
    token_key: tuple[str, ...] | None = None  # the OAuth cache entry the token came from
    token: str | None = None


class Authenticator:
    """Applies a tool's ``auth`` with its credentials; OAuth tokens are fetched through the outbound pool."""

    def __init__(self, tokens: TokenCache | None = None) -> None:
        self.tokens = tokens or TokenCache()

    async def apply(
        self,
        auth: dict[str, Any],
        credentials: dict[str, Any],
        *,
        session: aiohttp.ClientSession,
        ssl: Any,
    ) -> Applied:
        kind = auth.get("type", "none")
        if kind == "basic":
            return Applied(
                headers={"Authorization": basic(credentials.get("username", ""), credentials.get("password", ""))}
            )
        if kind == "bearer":
            return Applied(headers={"Authorization": f"Bearer {credentials.get('token', '')}"})
        if kind == "api_key":
            name, key = str(auth.get("name", "")), credentials.get("key", "")
            if auth.get("in") == "query":
                return Applied(query=[(name, key)], secret_params=frozenset({name}))
            return Applied(headers={name: key}, sensitive_headers=frozenset({"authorization", name.lower()}))
        if kind == "oauth2":
            return await self._oauth2(auth, credentials, session=session, ssl=ssl)
        return Applied(sensitive_headers=frozenset({"authorization"}))

    def refused(self, applied: Applied) -> bool:
        """The API answered 401 to ``applied``: forget its OAuth token; whether asking again may help."""
        if applied.token_key is None or applied.token is None:
            return False
        self.tokens.invalidate(applied.token_key, applied.token)
        return True

    async def _oauth2(
        self, auth: dict[str, Any], credentials: dict[str, Any], *, session: aiohttp.ClientSession, ssl: Any
    ) -> Applied:
        token_url = str(auth.get("token_url", ""))
        client_id = credentials.get("client_id", "")
        scopes = " ".join(auth.get("scopes") or [])
        audience = str(auth.get("audience") or "")
        key = (token_url, client_id, scopes, audience)

        async def fetch() -> tuple[str, float]:
            return await client_credentials(
                session,
                token_url,
                client_id=client_id,
                client_secret=credentials.get("client_secret", ""),
                scopes=scopes,
                audience=audience,
                in_body=auth.get("client_auth") == "body",
                ssl=ssl,
            )

        token = await self.tokens.get(key, fetch)
        return Applied(headers={"Authorization": f"Bearer {token}"}, token_key=key, token=token)
