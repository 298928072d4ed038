"""OAuth 2 token requests the gateway makes as a client (RFC 6749): client credentials (section 4.4), the
authorization-code exchange with PKCE (4.1, RFC 7636), refresh (6); and a cache of access tokens fetched once
for concurrent callers and again shortly before they expire or after a server refused one.

Shared by REST tools (``backends/rest_auth.py``) and upstream MCP gateways (``upstream_auth.py``) and the
"connect my account" views. Secrets go into the request and nowhere else: a failing token request is
reported without them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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


def refresh_margin(lifetime: float) -> float:
    """How long before its end a token of ``lifetime`` seconds is replaced."""
    return min(MAX_REFRESH_MARGIN, lifetime / 10)


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge) for an authorization-code request (RFC 7636)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


class AuthFailed(Exception):
    """A token request failed; ``message`` is for a person; ``grant_refused``: the server answered
    invalid_grant (a refresh token that no longer works: the user must connect again)."""

    def __init__(self, message: str, *, grant_refused: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.grant_refused = grant_refused


@dataclass(frozen=True)
class TokenResponse:
    access_token: str
    lifetime: float
    refresh_token: str | None = None


@dataclass
class _Token:
    value: str
    refresh_at: float


class TokenCache:
    """Access tokens by a key (e.g. (token_url, client_id, scopes, audience)), fetched once for concurrent
    callers and again shortly before they expire or after the server refused one."""

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

    def peek(self, key: tuple[str, ...]) -> str | None:
        """The cached token while it is fresh, else None (no I/O, no await)."""
        token = self._tokens.get(key)
        if token is not None and self.clock() < token.refresh_at:
            return token.value
        return None

    async def get(self, key: tuple[str, ...], fetch: Callable[[], Awaitable[tuple[str, float]]]) -> str:
        fresh = self.peek(key)
        if fresh is not None:
            return fresh
        async with self._lock(key):
            fresh = self.peek(key)
            if fresh is not None:
                return fresh  # another caller fetched it while this one waited
            value, lifetime = await fetch()
            self._tokens[key] = _Token(value, self.clock() + lifetime - refresh_margin(lifetime))
            return value

    def invalidate(self, key: tuple[str, ...], value: str | None = None) -> None:
        """Forget the token ``value`` (the server refused it), unless a newer one replaced it already;
        None: whatever is cached."""
        token = self._tokens.get(key)
        if token is not None and (value is None or token.value == value):
            del self._tokens[key]


async def request_token(
    session: aiohttp.ClientSession,
    token_url: str,
    form: dict[str, str],
    *,
    client_id: str,
    client_secret: str,
    in_body: bool = False,
    ssl: Any = None,
) -> TokenResponse:
    """POST a token request of any grant (``form`` carries grant_type and its fields). The client
    authenticates with client_secret_basic (every server supports it, RFC 6749 2.3.1), or in the body
    when ``in_body``; a public client (no secret) sends only its client_id."""
    form = dict(form)
    headers = CIMultiDict({"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"})
    if not client_secret:
        form["client_id"] = client_id
    elif in_body:  # client_secret_post
        form |= {"client_id": client_id, "client_secret": client_secret}
    else:  # RFC 6749 2.3.1: each part form-urlencoded first
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
    try:
        payload = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        payload = None
    if not response.ok:
        text = excerpt(response.body.decode(response.charset, errors="replace"), 500)
        refused = isinstance(payload, dict) and payload.get("error") == "invalid_grant"
        raise AuthFailed(
            f"The OAuth token request to {shown} failed: HTTP {response.status} {response.reason}"
            + (f": {text}" if text else ""),
            grant_refused=refused,
        )
    token = payload.get("access_token") if isinstance(payload, dict) else None
    if not isinstance(token, str) or not token:
        raise AuthFailed(f"The OAuth token endpoint {shown} answered without an access_token.")
    assert isinstance(payload, dict)
    lifetime = payload.get("expires_in")
    try:
        seconds = float(lifetime) if lifetime is not None else DEFAULT_TOKEN_LIFETIME
    except (TypeError, ValueError):
        seconds = DEFAULT_TOKEN_LIFETIME
    refresh = payload.get("refresh_token")
    return TokenResponse(token, max(seconds, 0.0), refresh if isinstance(refresh, str) and refresh else None)


async def client_credentials(
    session: aiohttp.ClientSession,
    token_url: str,
    *,
    client_id: str,
    client_secret: str,
    scopes: str = "",
    audience: str = "",
    resource: str = "",
    in_body: bool = False,
    ssl: Any = None,
) -> tuple[str, float]:
    """A client-credentials grant: (access token, lifetime in seconds)."""
    form = {"grant_type": "client_credentials"}
    if scopes:
        form["scope"] = scopes
    if audience:
        form["audience"] = audience
    if resource:
        form["resource"] = resource
    answer = await request_token(
        session, token_url, form, client_id=client_id, client_secret=client_secret, in_body=in_body, ssl=ssl
    )
    return answer.access_token, answer.lifetime
