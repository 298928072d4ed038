"""Admission: the checks every MCP transport makes once, at the edge, in one function (``admit``):
Host, Origin, and who is calling; the place where rate and concurrency limits go. The bounds on
long-lived streams (``streams``) live here too.

Credentials are verified through ``registry.auth`` and remembered for GATEWAY_AUTH_CACHE_SECONDS,
so the hot path neither hashes a password nor queries the database on every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError
from django.http.request import split_domain_port, validate_host

from registry import auth, oauth
from registry.choices import Scope
from registry.conf import auth_required, jwt_config
from registry.exceptions import AuthenticationFailed
from transports.protocol import limits
from transports.protocol.catalog import CatalogUnavailable
from transports.protocol.outcome import Caller
from transports.runtime import get_core

AUTH_CACHE_SIZE = 10_000
# While the database cannot be reached, a caller verified less than this many seconds before its cache entry
# expired keeps being admitted (MCP reads are served from the catalog snapshot meanwhile); nothing can change
# in the database during the outage, and revocations still reach the cache over the channel layer.
STALE_AUTH_SECONDS = 300.0
STALE_LOG_SECONDS = 60.0
# Seconds one credential verification may take, and after one failed on the database, seconds the next ones
# skip it (the callers last verified are admitted, others get 503 at once instead of waiting in turn).
VERIFY_TIMEOUT = 5.0
DATABASE_RETRY_SECONDS = 2.0
DATABASE_DOWN = (
    "Service Unavailable: the gateway's database cannot be reached to verify these credentials; try again shortly."
)
logger = logging.getLogger(__name__)


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
    try:
        parts = urlsplit(origin)
    except ValueError:  # not a URL at all (e.g. "http://[::1"): no origin of ours
        return False
    return bool(parts.netloc) and parts.netloc == host


AUTH_GROUP = "gateway.auth"  # revocations travel here to every process's credential cache
AUTH_REVOKED = "auth.revoked"


class CredentialCache:
    """Verified Authorization header values -> Principal, for a short time.

    Indexed by token id too, so a revoked token's callers are dropped at once: in this process directly
    (``forget_tokens``, from the registry's ``token_revoked`` hook) and in every other one through the
    channel-layer group AUTH_GROUP, which each process follows from its first authenticated request."""

    def __init__(self) -> None:
        self._entries: OrderedDict[str, tuple[float, auth.Principal]] = OrderedDict()
        self._by_token: dict[str, set[str]] = {}
        self._follower: asyncio.Task[None] | None = None
        self._follower_loop: asyncio.AbstractEventLoop | None = None
        self._stale_logged = -STALE_LOG_SECONDS
        self._database_down_until = 0.0

    def clear(self) -> None:
        self._entries.clear()
        self._by_token.clear()
        self._database_down_until = 0.0

    def forget_tokens(self, token_ids: list[str]) -> int:
        """Drop the callers remembered for these token ids (jti); how many were. Safe from any thread."""
        dropped = 0
        for token_id in token_ids:
            for key in list(self._by_token.pop(token_id, ())):
                if self._entries.pop(key, None) is not None:
                    dropped += 1
        return dropped

    def _remember(self, authorization: str, expires: float, principal: auth.Principal) -> None:
        self._entries[authorization] = (expires, principal)
        self._entries.move_to_end(authorization)
        if principal.token_id:
            self._by_token.setdefault(principal.token_id, set()).add(authorization)
        while len(self._entries) > AUTH_CACHE_SIZE:
            _key, (_expires, evicted) = self._entries.popitem(last=False)
            if evicted.token_id:
                keys = self._by_token.get(evicted.token_id)
                if keys is not None:
                    keys.discard(_key)
                    if not keys:
                        del self._by_token[evicted.token_id]

    async def principal(self, authorization: str | None, audiences: frozenset[str] | None = None) -> auth.Principal:
        """The caller, or AuthenticationFailed with a message for the client. ``audiences``: the resource
        URLs an OAuth access token must name here (with OAuth on), checked on a cache hit too."""
        if not auth_required():
            return auth.ANONYMOUS
        if not authorization:
            raise AuthenticationFailed(
                "Authentication required: send 'Authorization: Bearer <token>' or HTTP Basic credentials."
            )
        if self._follower_loop is not asyncio.get_running_loop():
            self._follow_revocations()
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
        if now < self._database_down_until:  # a verification failed on the database a moment ago
            return self._stand_in(authorization, hit, now)
        verification = asyncio.ensure_future(
            sync_to_async(auth.principal_from_authorization, thread_sensitive=True)(authorization, audiences=audiences)
        )
        try:
            # Bounded: a database that does not answer (a partition drops packets) would otherwise hold the request,
            # and every verification queued behind it in the thread database work shares, until TCP gives up.
            found = await asyncio.wait_for(asyncio.shield(verification), VERIFY_TIMEOUT)
        except (DatabaseError, TimeoutError) as exc:
            if verification.done():
                self._database_down_until = time.monotonic() + DATABASE_RETRY_SECONDS
            else:  # still stuck in the database: nothing else waits behind it until it comes back
                self._database_down_until = math.inf
                verification.add_done_callback(self._verification_ended)
            if now - self._stale_logged > STALE_LOG_SECONDS:  # once in a while, not for every request
                self._stale_logged = now
                logger.warning(
                    "credentials cannot be verified: the database %s",
                    "timed out" if isinstance(exc, TimeoutError) else f"failed: {exc}",
                )
            return self._stand_in(authorization, hit, now)
        if found is None:  # pragma: no cover - a non-empty header never yields None
            raise AuthenticationFailed("Authentication required.")
        ttl = settings.GATEWAY_AUTH_CACHE_SECONDS
        if found.expires_at is not None:  # an OAuth token: not cached past its expiry
            ttl = min(ttl, found.expires_at - time.time())
        if ttl > 0:
            self._remember(authorization, now + ttl, found)
        return found

    def _verification_ended(self, verification: asyncio.Future[Any]) -> None:
        """A verification that outlived VERIFY_TIMEOUT ended: the database answers again, or failed."""
        failed = verification.cancelled() or verification.exception() is not None
        self._database_down_until = time.monotonic() + DATABASE_RETRY_SECONDS if failed else 0.0

    def _stand_in(self, authorization: str, hit: tuple[float, auth.Principal] | None, now: float) -> auth.Principal:
        """The caller as last verified, while the database cannot verify it; DatabaseUnreachable otherwise."""
        stale = _still_valid(authorization, hit, now)
        if stale is None:
            raise DatabaseUnreachable(DATABASE_DOWN)
        return stale

    def _follow_revocations(self) -> None:
        """Start following AUTH_GROUP on this event loop (once per loop): only a shared channel layer
        carries other processes' revocations; with the in-memory one this process is the only one."""
        from channels.layers import InMemoryChannelLayer, get_channel_layer

        loop = asyncio.get_running_loop()
        self._follower_loop = loop
        layer = get_channel_layer()
        if layer is None or isinstance(layer, InMemoryChannelLayer):
            return
        self._follower = loop.create_task(self._follow(layer), name="gateway-auth-revocations")

    async def _follow(self, layer: Any) -> None:
        delay = 1.0
        while True:
            try:
                channel = await layer.new_channel()
                await layer.group_add(AUTH_GROUP, channel)
                delay = 1.0
                while True:
                    message = await layer.receive(channel)
                    if message.get("type") == AUTH_REVOKED:
                        self.forget_tokens([str(t) for t in message.get("token_ids", [])])
            except asyncio.CancelledError:
                raise
            except Exception:  # the layer is unreachable: follow again soon; meanwhile the TTL still bounds it
                logger.warning("credential cache: following token revocations failed; retrying", exc_info=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)


credentials = CredentialCache()


class DatabaseUnreachable(Exception):
    """Credentials could not be verified because the database did not answer (and no earlier verification
    may stand in): 503, the client may retry."""


def _still_valid(authorization: str, hit: tuple[float, auth.Principal] | None, now: float) -> auth.Principal | None:
    """The caller an expired cache entry names, when it may stand in for a verification the database cannot
    make: expired less than STALE_AUTH_SECONDS ago, and the credential itself still valid (a token's own
    expiry and signature, which need no query)."""
    if hit is None or now - hit[0] > STALE_AUTH_SECONDS:
        return None
    principal = hit[1]
    if principal.expires_at is not None and principal.expires_at <= time.time():
        return None
    if principal.method == "jwt":
        try:
            auth.token_claims(authorization.partition(" ")[2].strip())
        except AuthenticationFailed:
            return None
    return principal


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


def _scheme(headers: dict[str, str]) -> str:
    """The scheme the client used, read as Django reads it (SECURE_PROXY_SSL_HEADER), so that a challenge names
    the metadata document at the URL the document itself states; without that setting, X-Forwarded-Proto."""
    configured = settings.SECURE_PROXY_SSL_HEADER
    if configured:
        meta_name, secure = configured
        value = headers.get(meta_name.removeprefix("HTTP_").replace("_", "-").lower())
        return "https" if value is not None and value.split(",")[0].strip() == secure else "http"
    proto = headers.get("x-forwarded-proto", "http").split(",")[0].strip().lower()
    return "https" if proto == "https" else "http"


def _base(headers: dict[str, str]) -> tuple[str, ...]:
    return oauth.base_urls(headers.get("host", ""), _scheme(headers))


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
    except DatabaseUnreachable:
        raise EdgeRefused(503, DATABASE_DOWN, [(b"retry-after", b"5")]) from None
    except AuthenticationFailed as exc:
        header = (b"www-authenticate", challenge(headers, server, transport, exc))
        raise EdgeRefused(401, exc.message, [header]) from None
    refusal = auth.server_refusal(principal, server)
    if refusal is not None:
        raise EdgeRefused(403, refusal)
    if principal.method == "oauth" and (lacking := _scope_refusal(principal, headers, server)) is not None:
        header = (b"www-authenticate", challenge(headers, server, transport, lacking))
        raise EdgeRefused(403, lacking.message, [header])
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
