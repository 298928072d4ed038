"""Which credentials the gateway presents to an upstream MCP server (docs/governance.md, "Per-user upstream
credentials"): the gateway's own (basic, bearer, headers from the catalog snapshot; an OAuth client-credentials
token fetched and refreshed here), or, for a gateway with ``per_user_credentials``, the calling user's own from
the vault (bearer, basic, headers, or an OAuth token refreshed with the user's refresh token).

The client's own Authorization header is never among them: the relay passes no credential header on
(``upstream/headers.PROTECTED``).

Steady state costs no I/O: the gateway's OAuth token is in a ``TokenCache``; a user's credentials are kept
per (gateway, user) for ``cache_seconds`` (and dropped at once in this process when they change: ``forget``).
The vault (the Django side, ``transports/user_credentials.py``) is asked on the first call of a user, after
that time, and to store refreshed tokens.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from typing import Any, Protocol

import aiohttp

from transports.protocol.oauth_tokens import AuthFailed, TokenCache, client_credentials, refresh_margin, request_token
from transports.protocol.upstream.base import UpstreamUnavailable

OAUTH_CLIENT = "oauth2-client"
OAUTH_USER = "oauth2-user"


class CredentialsNeeded(UpstreamUnavailable):
    """No (working) credentials for the request: the user has none of their own for a per-user gateway, or a
    token could not be had; ``message`` says what to do. An UpstreamUnavailable for callers that know no better
    (catalog syncs); the relay turns it into a JSON-RPC error with the message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Vault(Protocol):
    """Where users' credentials live (the catalog's UpstreamCredential)."""

    async def load(self, gateway: str, user: str) -> dict[str, Any] | None:
        """{"auth_type": ..., "credentials": {...}} of the user for the gateway, or None."""

    async def store(self, gateway: str, user: str, credentials: dict[str, Any]) -> None:
        """Keep refreshed OAuth tokens ({"access_token", "refresh_token", "expires_at", ...})."""

    def connect_hint(self, gateway: str) -> str:
        """Where a user connects their account for the gateway (a sentence's end)."""


def static_headers(kind: str, credentials: dict[str, Any]) -> dict[str, str]:
    """Headers of basic, bearer and custom-header credentials."""
    if not credentials:
        return {}
    if kind == "basic":
        pair = f"{credentials['username']}:{credentials['password']}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
    if kind == "bearer":
        return {"Authorization": f"Bearer {credentials['token']}"}
    if kind == "headers":
        return dict(credentials.get("headers", {}))
    return {}


def dynamic(row: dict[str, Any]) -> bool:
    """Whether the row's credentials are worked out per call here (else config_from_row's static headers)."""
    return bool(row.get("per_user_credentials")) or row.get("auth_type") == OAUTH_CLIENT


class UpstreamAuth:
    """Credentials toward upstreams that are not fixed in the snapshot: OAuth tokens and users' own."""

    def __init__(
        self,
        vault: Vault | None = None,
        *,
        cache_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.vault = vault
        self.cache_seconds = cache_seconds
        self.clock = clock
        self.wall = wall
        self.tokens = TokenCache(clock)
        self._users: dict[tuple[str, str], tuple[float, dict[str, Any] | None]] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- the vault cache ---------------------------------------------------------------------------------

    def forget(self, gateway: str | None = None, user: str | None = None) -> None:
        """Drop cached users' credentials (of one gateway, one user, or all): they changed."""
        for key in [k for k in self._users if (gateway is None or k[0] == gateway) and (user is None or k[1] == user)]:
            del self._users[key]

    async def _stored(self, gateway: str, user: str) -> dict[str, Any] | None:
        key = (gateway, user)
        cached = self._users.get(key)
        if cached is not None and self.clock() < cached[0]:
            return cached[1]
        if self.vault is None:
            return None
        stored = await self.vault.load(gateway, user)
        self._users[key] = (self.clock() + self.cache_seconds, stored)
        return stored

    def _hint(self, gateway: str) -> str:
        return self.vault.connect_hint(gateway) if self.vault is not None else "ask an administrator"

    # -- headers --------------------------------------------------------------------------------------------

    async def headers(self, row: dict[str, Any], user: str | None) -> dict[str, str]:
        """The credential headers for a request of ``user`` to the gateway of ``row``."""
        name = row["name"]
        if row.get("per_user_credentials"):
            if not user:
                raise CredentialsNeeded(
                    f"Upstream {name!r} needs each user's own credentials; sign in to the gateway as a user "
                    f"and connect your account ({self._hint(name)})."
                )
            stored = await self._stored(name, user)
            if stored is None:
                raise CredentialsNeeded(
                    f"Upstream {name!r} needs your own credentials: connect your account for gateway {name!r} "
                    f"at {self._hint(name)}."
                )
            if stored.get("auth_type") == OAUTH_USER:
                return {"Authorization": f"Bearer {await self._user_token(row, user, stored)}"}
            return static_headers(str(stored.get("auth_type")), stored.get("credentials") or {})
        if row.get("auth_type") == OAUTH_CLIENT:
            return {"Authorization": f"Bearer {await self._client_token(row)}"}
        return static_headers(row.get("auth_type", "none"), row.get("credentials") or {})

    async def refused(self, row: dict[str, Any], user: str | None) -> bool:
        """The upstream answered 401 with this user's credentials: forget them (a refreshed or changed token
        may be waiting); True when asking again can help (an OAuth token was dropped)."""
        name = row["name"]
        if row.get("per_user_credentials"):
            if not user:
                return False
            stored = self._users.get((name, user), (0.0, None))[1]
            self._users.pop((name, user), None)
            if stored is not None and stored.get("auth_type") == OAUTH_USER:
                credentials = dict(stored.get("credentials") or {})
                credentials["expires_at"] = 0  # refresh at the next try
                self._users[(name, user)] = (self.clock() + self.cache_seconds, {**stored, "credentials": credentials})
                return bool(credentials.get("refresh_token"))
            return False
        if row.get("auth_type") == OAUTH_CLIENT:
            self.tokens.invalidate(self._client_key(row))
            return True
        return False

    def rejected_message(self, row: dict[str, Any]) -> str:
        """What a user is told when the upstream refused their own credentials."""
        name = row["name"]
        return (
            f"Upstream {name!r} refused your credentials (HTTP 401): connect your account for gateway {name!r} "
            f"again at {self._hint(name)}."
        )

    # -- OAuth ---------------------------------------------------------------------------------------------

    def session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=30),
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
            )
            self._loop = loop
        return self._session

    async def aclose(self) -> None:
        if self._session is not None and self._loop is asyncio.get_running_loop():
            await self._session.close()
        self._session = None

    @staticmethod
    def _client_key(row: dict[str, Any]) -> tuple[str, ...]:
        return (
            row["name"],
            row.get("oauth_token_url") or "",
            row.get("oauth_client_id") or "",
            row.get("oauth_scopes") or "",
        )

    async def _client_token(self, row: dict[str, Any]) -> str:
        key = self._client_key(row)
        fresh = self.tokens.peek(key)
        if fresh is not None:
            return fresh

        async def fetch() -> tuple[str, float]:
            try:
                return await client_credentials(
                    self.session(),
                    row.get("oauth_token_url") or "",
                    client_id=row.get("oauth_client_id") or "",
                    client_secret=(row.get("credentials") or {}).get("client_secret", ""),
                    scopes=row.get("oauth_scopes") or "",
                    resource=row.get("url") or "",
                )
            except AuthFailed as exc:
                raise CredentialsNeeded(f"Upstream {row['name']!r}: the gateway's {exc.message}") from None

        return await self.tokens.get(key, fetch)

    async def _user_token(self, row: dict[str, Any], user: str, stored: dict[str, Any]) -> str:
        credentials = stored.get("credentials") or {}
        expires_at = credentials.get("expires_at")
        if not expires_at or self.wall() < float(expires_at):
            return str(credentials["access_token"])
        key = (row["name"], user)
        async with self._locks.setdefault(key, asyncio.Lock()):
            current = self._users.get(key)
            if current is not None and current[1] is not None:
                now_credentials = current[1].get("credentials") or {}
                if now_credentials.get("expires_at") and self.wall() < float(now_credentials["expires_at"]):
                    return str(now_credentials["access_token"])  # refreshed while this call waited
            return await self._refresh(row, user, stored)

    async def _refresh(self, row: dict[str, Any], user: str, stored: dict[str, Any]) -> str:
        name = row["name"]
        credentials = dict(stored.get("credentials") or {})
        refresh_token = credentials.get("refresh_token")
        token_url = row.get("oauth_token_url") or credentials.get("token_url") or ""
        if not refresh_token or not token_url:
            raise CredentialsNeeded(
                f"Your access token for upstream {name!r} expired and cannot be refreshed: connect your account "
                f"for gateway {name!r} again at {self._hint(name)}."
            )
        form = {"grant_type": "refresh_token", "refresh_token": str(refresh_token)}
        if row.get("oauth_scopes"):
            form["scope"] = row["oauth_scopes"]
        if row.get("url"):
            form["resource"] = row["url"]
        try:
            answer = await request_token(
                self.session(),
                token_url,
                form,
                client_id=row.get("oauth_client_id") or "",
                client_secret=(row.get("credentials") or {}).get("client_secret", ""),
            )
        except AuthFailed as exc:
            raise CredentialsNeeded(
                f"Your access token for upstream {name!r} could not be refreshed ({exc.message}): connect your "
                f"account for gateway {name!r} again at {self._hint(name)}."
            ) from None
        credentials["access_token"] = answer.access_token
        if answer.refresh_token:
            credentials["refresh_token"] = answer.refresh_token
        credentials["expires_at"] = self.wall() + answer.lifetime - refresh_margin(answer.lifetime)
        updated = {**stored, "credentials": credentials}
        self._users[(name, user)] = (self.clock() + self.cache_seconds, updated)
        if self.vault is not None:
            await self.vault.store(name, user, credentials)
        return answer.access_token
