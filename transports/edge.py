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
from typing import Any
from urllib.parse import urlsplit

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http.request import split_domain_port, validate_host

from registry import auth, oauth
from registry.choices import Scope
from registry.conf import auth_required, jwt_config
from registry.exceptions import AuthenticationFailed
from transports.protocol.core import Caller

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

    async def principal(self, authorization: str | None, audiences: frozenset[str] | None = None) -> auth.Principal:
        """The caller, or AuthenticationFailed with a message for the client. ``audiences``: the resource
        URLs an OAuth access token must name here (with OAuth on), checked on a cache hit too."""
        if not auth_required():
            return auth.ANONYMOUS
        if not authorization:
            raise AuthenticationFailed(
                "Authentication required: send 'Authorization: Bearer <token>' or HTTP Basic credentials."
            )
        now = time.monotonic()
        hit = self._entries.get(authorization)
        if hit is not None and hit[0] > now:
            cached = hit[1]
            if cached.audience is not None and audiences is not None and cached.audience.isdisjoint(audiences):
                raise oauth.InvalidToken("Invalid bearer token: the token is for another resource (aud).")
            return cached
        if audiences is not None and authorization[:7].lower() == "bearer ":
            # An OAuth token: the authorization server's metadata and keys are fetched here, in a worker
            # thread of its own, so a slow or unreachable issuer never holds the thread database work shares.
            token = authorization[7:].strip()
            if oauth.looks_foreign(token, jwt_config().issuer):
                kid, check = oauth.token_kid(token), oauth.verifier()
                if check.needs_network(kid):
                    await sync_to_async(check.prefetch, thread_sensitive=False)(kid)
        found = await sync_to_async(auth.principal_from_authorization, thread_sensitive=True)(
            authorization, audiences=audiences
        )
        if found is None:  # pragma: no cover - a non-empty header never yields None
            raise AuthenticationFailed("Authentication required.")
        ttl = settings.GATEWAY_AUTH_CACHE_SECONDS
        if found.expires_at is not None:  # an OAuth token: not cached past its expiry
            ttl = min(ttl, found.expires_at - time.time())
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


def _base(headers: dict[str, str]) -> tuple[str, ...]:
    proto = headers.get("x-forwarded-proto", "http").split(",")[0].strip().lower()
    return oauth.base_urls(headers.get("host", ""), "https" if proto == "https" else "http")


def challenge(headers: dict[str, str], server: str | None, transport: str, error: Exception | None) -> bytes:
    """The WWW-Authenticate value of a 401/403 from an MCP endpoint (``oauth.www_authenticate``)."""
    path = oauth.endpoint_path(server, transport)
    scope = " ".join(oauth.scope_names(server)) if oauth.enabled() else None
    return oauth.www_authenticate(base=_base(headers)[0], path=path, error=error, scope=scope).encode()


def _scope_refusal(
    principal: auth.Principal, headers: dict[str, str], server: str | None
) -> oauth.InsufficientScope | None:
    """An OAuth token without read, or calling a tool (the 2026-07-28 Mcp-Method header) without call:
    403 insufficient_scope, so a client can ask its authorization server for more (step-up)."""
    needed = [Scope.READ]
    if headers.get("mcp-method") == "tools/call":
        needed.append(Scope.CALL)
    missing = [scope for scope in needed if scope not in principal.scopes]
    if not missing:
        return None
    names = oauth.scope_names(server)
    theirs = {Scope.READ: settings.GATEWAY_OAUTH_SCOPE_READ, Scope.CALL: settings.GATEWAY_OAUTH_SCOPE_CALL}
    return oauth.InsufficientScope(
        f"Forbidden: this token lacks {', '.join(repr(theirs[m]) for m in missing)} "
        f"(the gateway's {', '.join(missing)}); ask the authorization server for {' '.join(names)}.",
        " ".join(names),
    )


async def admit(
    headers: dict[str, str], server: str | None, authorization: str | None = None, *, transport: str = "mcp"
) -> Caller:
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
    audiences = oauth.audiences(_base(headers), server) if settings.GATEWAY_OAUTH_ISSUER else None
    try:
        principal = await credentials.principal(
            authorization if authorization is not None else headers.get("authorization"), audiences
        )
    except oauth.Unavailable as exc:
        raise EdgeRefused(503, exc.message, [(b"retry-after", str(exc.retry_after).encode())]) from None
    except AuthenticationFailed as exc:
        header = (b"www-authenticate", challenge(headers, server, transport, exc))
        raise EdgeRefused(401, exc.message, [header]) from None
    refusal = auth.server_refusal(principal, server)
    if refusal is not None:
        raise EdgeRefused(403, refusal)
    if principal.method == "oauth" and (lacking := _scope_refusal(principal, headers, server)) is not None:
        header = (b"www-authenticate", challenge(headers, server, transport, lacking))
        raise EdgeRefused(403, lacking.message, [header])
    return Caller(principal.username, principal.scopes, server, headers)


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
