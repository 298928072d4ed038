"""Admission: the checks every MCP transport makes once, at the edge, in one function (``admit``):
Host, Origin, and who is calling; the place where rate and concurrency limits go. The bounds on
long-lived streams (``streams``) live here too.

Credentials are verified through ``registry.auth`` and remembered for GATEWAY_AUTH_CACHE_SECONDS,
so the hot path neither hashes a password nor queries the database on every request.
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http.request import split_domain_port, validate_host

from registry import auth
from registry.conf import auth_required
from registry.exceptions import AuthenticationFailed
from transports import limits as _limits_settings  # noqa: F401  (installs the limits made from settings)
from transports.protocol import limits
from transports.protocol.catalog import CatalogUnavailable
from transports.protocol.core import Caller
from transports.runtime import get_core

AUTH_CACHE_SIZE = 10_000


def host_allowed(host: str) -> bool:
    """The Host header names this gateway (ALLOWED_HOSTS), which defeats DNS rebinding."""
    domain, _port = split_domain_port(host)
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return bool(domain) and validate_host(domain, allowed)


def origin_allowed(origin: str | None, host: str) -> bool:
    """No Origin (not a browser), the gateway's own origin, or one listed in GATEWAY_ALLOWED_ORIGINS."""
    if origin is None:
        return True
    allowed = settings.GATEWAY_ALLOWED_ORIGINS
    if "*" in allowed or origin in allowed:
        return True
    parts = urlsplit(origin)
    return bool(parts.netloc) and parts.netloc == host


class CredentialCache:
    """Verified Authorization header values -> Principal, for a short time."""

    def __init__(self) -> None:
        self._entries: OrderedDict[str, tuple[float, auth.Principal]] = OrderedDict()

    def clear(self) -> None:
        self._entries.clear()

    async def principal(self, authorization: str | None) -> auth.Principal:
        """The caller, or AuthenticationFailed with a message for the client."""
        if not auth_required():
            return auth.ANONYMOUS
        if not authorization:
            raise AuthenticationFailed(
                "Authentication required: send 'Authorization: Bearer <token>' or HTTP Basic credentials."
            )
        now = time.monotonic()
        hit = self._entries.get(authorization)
        if hit is not None and hit[0] > now:
            return hit[1]
        found = await sync_to_async(auth.principal_from_authorization, thread_sensitive=True)(authorization)
        if found is None:  # pragma: no cover - a non-empty header never yields None
            raise AuthenticationFailed("Authentication required.")
        ttl = settings.GATEWAY_AUTH_CACHE_SECONDS
        if ttl > 0:
            self._entries[authorization] = (now + ttl, found)
            self._entries.move_to_end(authorization)
            while len(self._entries) > AUTH_CACHE_SIZE:
                self._entries.popitem(last=False)
        return found


credentials = CredentialCache()


class EdgeRefused(Exception):
    """A request refused at the edge: the HTTP status, a message for the client, extra headers."""

    def __init__(self, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or []


class RateRefused(EdgeRefused):
    """A rate limit refused the request: HTTP 429 with Retry-After, and the JSON-RPC ``error`` (its
    code, a message naming the limit and the retry time, data {"retryAfter", "limit"})."""

    def __init__(self, refused: limits.RateLimited) -> None:
        super().__init__(429, refused.message, [(b"retry-after", str(refused.retry_after).encode())])
        self.error = refused.error()
        self.retry_after = refused.retry_after


@dataclass(frozen=True)
class AdmittedCaller(Caller):
    """A Caller the edge admitted, with the token it came with (for the per-token limit)."""

    token_id: str | None = None


def scope_headers(scope: dict[str, Any]) -> dict[str, str]:
    """An ASGI scope's headers as a dict of lower-case names to stripped values."""
    return {k.decode("latin-1").lower(): v.decode("latin-1").strip() for k, v in scope["headers"]}


def refuse_handshake(headers: dict[str, str]) -> str | None:
    """Why a connection may not even be opened (Host, Origin), or None: for a WebSocket handshake,
    which can be refused before ``admit`` could say more."""
    host = headers.get("host", "")
    if not host_allowed(host):
        return f"host {host!r} is not served here"
    if not origin_allowed(headers.get("origin"), host):
        return f"origin {headers.get('origin')!r} is not allowed"
    return None


async def admit(headers: dict[str, str], server: str | None, authorization: str | None = None) -> Caller:
    """The checks every MCP endpoint makes, in this order, with the Streamable HTTP endpoint's statuses
    and messages: Host (421, DNS rebinding), Origin (403), credentials (401 with WWW-Authenticate), and
    a token bound to one virtual server used on another server's or the whole catalog's endpoint (403,
    naming the server it is bound to; decided from the cached Principal alone, no query).
    Returns the ``Caller`` the protocol core serves. ``authorization`` replaces the Authorization
    header (a WebSocket's allowed ?token=)."""
    host = headers.get("host", "")
    if not host_allowed(host):
        raise EdgeRefused(421, f"Misdirected request: host {host!r} is not served here.")
    if not origin_allowed(headers.get("origin"), host):
        raise EdgeRefused(403, "Forbidden: this Origin may not use the MCP endpoint.")
    try:
        principal = await credentials.principal(
            authorization if authorization is not None else headers.get("authorization")
        )
    except AuthenticationFailed as exc:
        raise EdgeRefused(401, exc.message, [(b"www-authenticate", auth.WWW_AUTHENTICATE.encode())]) from None
    refusal = auth.server_refusal(principal, server)
    if refusal is not None:
        raise EdgeRefused(403, refusal)
    caller = AdmittedCaller(principal.username, principal.scopes, server, headers, principal.token_id)
    await limit(caller)
    return caller


async def limit(caller: Caller) -> None:
    """Count one request against the caller's limits (per user, per token, per virtual server and
    user): RateRefused when one is spent. ``admit`` calls it for every request it admits; the
    WebSocket adapter for every request on its connection. No store call when none applies."""
    limiter = limits.active()
    server_rate = None
    if caller.server is not None:
        try:
            view = (await get_core().catalog.get()).servers.get(caller.server)
        except CatalogUnavailable:  # the adapter says so when it reads the catalog itself
            view = None
        server_rate = view.rate_limit if view is not None else None
    buckets = limiter.request_buckets(caller.username, getattr(caller, "token_id", None), caller.server, server_rate)
    if buckets:
        try:
            await limiter.take(buckets)
        except limits.RateLimited as exc:
            raise RateRefused(exc) from None


class StreamSlots:
    """The long-lived streams this process serves (SSE, GET, subscriptions/listen, WebSocket):
    at most GATEWAY_MAX_STREAMS in all and GATEWAY_MAX_STREAMS_PER_USER per user (0: no bound)."""

    def __init__(self) -> None:
        self.total = 0
        self.per_user: dict[str, int] = {}

    def acquire(self, username: str) -> None:
        """Take a slot or raise EdgeRefused: 429 for the user's bound, 503 for the process's."""
        limit, mine = settings.GATEWAY_MAX_STREAMS_PER_USER, self.per_user.get(username, 0)
        if limit and mine >= limit:
            raise EdgeRefused(
                429,
                f"Too Many Requests: user {username!r} already has {mine} open streams on this gateway process "
                f"(GATEWAY_MAX_STREAMS_PER_USER={limit}); close one first.",
            )
        if self.total >= settings.GATEWAY_MAX_STREAMS:
            raise EdgeRefused(
                503,
                f"Service Unavailable: this gateway process serves its maximum of {settings.GATEWAY_MAX_STREAMS} "
                "open streams (GATEWAY_MAX_STREAMS); retry later or on another replica.",
            )
        self.total += 1
        self.per_user[username] = mine + 1

    def release(self, username: str) -> None:
        self.total -= 1
        left = self.per_user.get(username, 1) - 1
        if left > 0:
            self.per_user[username] = left
        else:
            self.per_user.pop(username, None)


streams = StreamSlots()


@contextlib.contextmanager
def stream_slot(username: str) -> Iterator[None]:
    """Hold one of the process's stream slots for the body (raises EdgeRefused when none is left)."""
    streams.acquire(username)
    try:
        yield
    finally:
        streams.release(username)
