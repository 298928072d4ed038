"""Checks every MCP transport makes once, at the edge: Host, Origin, and who is calling.

Credentials are verified through ``registry.auth`` and remembered for GATEWAY_AUTH_CACHE_SECONDS,
so the hot path neither hashes a password nor queries the database on every request.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from urllib.parse import urlsplit

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http.request import split_domain_port, validate_host

from registry import auth
from registry.conf import auth_required
from registry.exceptions import AuthenticationFailed

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
