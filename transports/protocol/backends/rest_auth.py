"""Authentication of REST tools (docs/tool-backends.md): basic, bearer, an API key in a header or the
query, and OAuth 2 client credentials (RFC 6749 section 4.4) with a token cache.

Secrets come from the tool's decrypted credentials in the catalog snapshot; they go into the request
and nowhere else (never into a message: a failing token request is reported without them).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus, urlencode

import aiohttp
import orjson
from multidict import CIMultiDict
from yarl import URL

from transports.protocol.backends import outbound
from transports.protocol.backends.results import excerpt

TOKEN_RESPONSE_BYTES = 64 * 1024
DEFAULT_TOKEN_LIFETIME = 300.0  # seconds, for a token response without expires_in (RFC 6749 5.1: optional)
MAX_REFRESH_MARGIN = 30.0  # a token is fetched again this long (at most) before it expires


def basic(username: str, password: str) -> str:
    """An HTTP Basic Authorization value (RFC 7617, UTF-8)."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


class AuthFailed(Exception):
    """The tool's authentication could not be prepared (a token request failed); ``message`` is for a person."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class Applied:
    """What a tool's authentication adds to a request."""

    headers: dict[str, str] = field(default_factory=dict)
    query: list[tuple[str, str]] = field(default_factory=list)
    sensitive_headers: frozenset[str] = frozenset({"authorization"})  # left out of cross-origin redirects
    secret_params: frozenset[str] = frozenset()  # masked in messages
    token_key: tuple[str, ...] | None = None  # the OAuth cache entry the token came from
    token: str | None = None


@dataclass
class _Token:
    value: str
    refresh_at: float


class TokenCache:
    """OAuth access tokens by (token_url, client_id, scopes, audience), fetched once for concurrent
    callers and again shortly before they expire or after the API refused one."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._tokens: dict[tuple[str, ...], _Token] = {}
        self._locks: dict[tuple[str, ...], asyncio.Lock] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def _lock(self, key: tuple[str, ...]) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # locks belong to one loop
            self._locks.clear()
            self._loop = loop
        return self._locks.setdefault(key, asyncio.Lock())

    async def get(self, key: tuple[str, ...], fetch: Callable[[], Any]) -> str:
        token = self._tokens.get(key)
        if token is not None and self.clock() < token.refresh_at:
            return token.value
        async with self._lock(key):
            token = self._tokens.get(key)
            if token is not None and self.clock() < token.refresh_at:
                return token.value  # another caller fetched it while this one waited
            value, lifetime = await fetch()
            margin = min(MAX_REFRESH_MARGIN, lifetime / 10)
            self._tokens[key] = _Token(value, self.clock() + lifetime - margin)
            return value

    def invalidate(self, key: tuple[str, ...], value: str) -> None:
        """Forget the token ``value`` (the API refused it), unless a newer one replaced it already."""
        token = self._tokens.get(key)
        if token is not None and token.value == value:
            del self._tokens[key]


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
            return await _request_token(
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


async def _request_token(
    session: aiohttp.ClientSession,
    token_url: str,
    *,
    client_id: str,
    client_secret: str,
    scopes: str,
    audience: str,
    in_body: bool,
    ssl: Any,
) -> tuple[str, float]:
    """A client-credentials grant: (access token, lifetime in seconds)."""
    form = {"grant_type": "client_credentials"}
    if scopes:
        form["scope"] = scopes
    if audience:
        form["audience"] = audience
    headers = CIMultiDict({"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"})
    if in_body:  # client_secret_post
        form |= {"client_id": client_id, "client_secret": client_secret}
    else:  # client_secret_basic, which every authorization server supports (RFC 6749 2.3.1)
        # RFC 6749 2.3.1: each part form-urlencoded first
        headers["Authorization"] = basic(quote_plus(client_id), quote_plus(client_secret))
    shown = outbound.masked(token_url)
    try:
        response = await outbound.send(
            session,
            "POST",
            URL(token_url),
            headers=headers,
            body=urlencode(form).encode(),
            ssl=ssl,
            max_bytes=TOKEN_RESPONSE_BYTES,
            max_redirects=0,  # a redirect would carry the client's secret to wherever it points
        )
    except outbound.ResponseTooLarge:
        raise AuthFailed(f"The OAuth token endpoint {shown} sent more than {TOKEN_RESPONSE_BYTES} bytes.") from None
    except outbound.OutboundError as exc:
        raise AuthFailed(f"The OAuth token request failed: {exc.message}") from None
    if not response.ok:
        text = excerpt(response.body.decode(response.charset, errors="replace"), 500)
        raise AuthFailed(
            f"The OAuth token request to {shown} failed: HTTP {response.status} {response.reason}"
            + (f": {text}" if text else "")
        )
    try:
        payload = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        payload = None
    token = payload.get("access_token") if isinstance(payload, dict) else None
    if not isinstance(token, str) or not token:
        raise AuthFailed(f"The OAuth token endpoint {shown} answered without an access_token.")
    lifetime = payload.get("expires_in") if isinstance(payload, dict) else None
    try:
        seconds = float(lifetime) if lifetime is not None else DEFAULT_TOKEN_LIFETIME
    except (TypeError, ValueError):
        seconds = DEFAULT_TOKEN_LIFETIME
    return token, max(seconds, 0.0)
