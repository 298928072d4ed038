"""The gateway as an OAuth 2.1 resource server (MCP authorization; RFC 9728, RFC 8707, RFC 6750).

On when GATEWAY_OAUTH_ISSUER names an authorization server. Access tokens it issues are JWTs the
gateway verifies itself: the issuer's metadata is discovered (OpenID Connect
``<issuer>/.well-known/openid-configuration``, then RFC 8414 ``/.well-known/oauth-authorization-server``),
its signing keys come from the metadata's ``jwks_uri`` (kept GATEWAY_OAUTH_JWKS_CACHE_SECONDS; a token
signed with a key id the gateway does not know makes it fetch the key set again, at most once per
GATEWAY_OAUTH_REFETCH_SECONDS), and a token must carry: a valid signature by one of those keys, ``exp``
(and ``nbf``) within GATEWAY_OAUTH_LEEWAY seconds, ``iss`` equal to the issuer, and an ``aud`` naming
the resource being called (``audiences``) or GATEWAY_OAUTH_AUDIENCE when that is set.

Nothing here talks to the authorization server at import or at startup: the first token to verify
fetches the metadata and keys (``Verifier.prefetch``, run off the event loop by the edge). When the
authorization server cannot be reached, ``Unavailable`` says so (HTTP 503 with Retry-After: the
token may be fine, the gateway cannot tell yet); the gateway keeps serving Basic and its own JWTs.

Scopes: the authorization server's names GATEWAY_OAUTH_SCOPE_READ / _CALL / _WRITE map to the
gateway's read, call and write; GATEWAY_OAUTH_SCOPE_SERVER (``mcp:server:{name}``) binds the token to
one virtual server, like a gateway token issued with a server.

This module does no database query; ``registry.auth`` turns verified claims into a Principal.
"""

from __future__ import annotations

import functools
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jwt
from django.conf import settings

from registry.choices import Scope
from registry.exceptions import AuthenticationFailed, Forbidden

REALM = 'realm="MCP Gateway"'
BASIC = 'Basic realm="MCP Gateway", charset="UTF-8"'
# The challenge while OAuth is off (unchanged from before OAuth existed).
LEGACY_CHALLENGE = f"Bearer {REALM}, {BASIC}"
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
# The endpoints of one virtual server (or, without the /servers/<name> prefix, of the whole catalog).
TRANSPORT_PATHS = ("mcp", "sse", "message", "rpc", "ws")
WELL_KNOWN = "/.well-known/oauth-protected-resource"


class InvalidToken(AuthenticationFailed):
    """A bearer token that does not verify: the challenge says error="invalid_token"."""


class Unavailable(AuthenticationFailed):
    """The authorization server could not be reached to verify a token (HTTP 503, retry later)."""

    retry_after = 10


class InsufficientScope(Forbidden):
    """The token is valid but lacks a scope: 403 with error="insufficient_scope" and the scopes needed."""

    def __init__(self, message: str, scope: str) -> None:
        super().__init__(message)
        self.scope = scope


def enabled() -> bool:
    return bool(settings.GATEWAY_OAUTH_ISSUER)


# -- resources and their URLs -------------------------------------------------------------------


def base_urls(host: str, scheme: str = "http") -> tuple[str, ...]:
    """The gateway's base URLs as clients name it: GATEWAY_PUBLIC_URL, else the request's own address
    (the first is the one metadata documents name). Audiences accept either scheme for the request's own
    address, since a proxy in front may terminate TLS."""
    public = settings.GATEWAY_PUBLIC_URL.rstrip("/")
    if public:
        return (public,)
    other = "https" if scheme == "http" else "http"
    return (f"{scheme}://{host}", f"{other}://{host}")


def endpoint_path(server: str | None, transport: str = "mcp") -> str:
    """``/mcp`` or ``/servers/<name>/mcp`` (or that server's sse, message, rpc, ws)."""
    return f"/servers/{server}/{transport}" if server else f"/{transport}"


def metadata_url(base: str, path: str) -> str:
    """The RFC 9728 document of the resource at ``path`` ("" for the gateway as a whole)."""
    return f"{base}{WELL_KNOWN}{path}"


@functools.lru_cache(maxsize=4096)
def _audiences(bases: tuple[str, ...], server: str | None, rest: bool, fixed: str) -> frozenset[str]:
    if fixed:
        return frozenset({fixed})
    found: set[str] = set()
    for base in bases:
        found |= {base, base + "/"}
        if rest:
            found |= {base + "/api", base + "/api/"}
        else:
            found |= {base + endpoint_path(server, transport) for transport in TRANSPORT_PATHS}
    return frozenset(found)


def audiences(bases: tuple[str, ...], server: str | None, *, rest: bool = False) -> frozenset[str]:
    """The ``aud`` values a token may carry to be used here: the gateway's base URL (the whole gateway)
    or the endpoint's resource URL (``server``'s MCP endpoints, any of its transports; with ``rest``, the
    REST API); GATEWAY_OAUTH_AUDIENCE alone when set."""
    return _audiences(bases, server, rest, settings.GATEWAY_OAUTH_AUDIENCE)


def scope_names(server: str | None, *, rest: bool = False) -> list[str]:
    """The authorization server's scope names that matter at an endpoint, in the order to ask for them."""
    names = [settings.GATEWAY_OAUTH_SCOPE_READ, settings.GATEWAY_OAUTH_SCOPE_CALL]
    if rest:
        names.append(settings.GATEWAY_OAUTH_SCOPE_WRITE)
    if server:
        names.append(server_scope(server))
    return list(dict.fromkeys(names))


def server_scope(server: str) -> str:
    return settings.GATEWAY_OAUTH_SCOPE_SERVER.replace("{name}", server)


def resource_metadata(base: str, path: str, server: str | None) -> dict[str, Any]:
    """The RFC 9728 protected-resource metadata of the resource at ``path`` ("" for the whole gateway)."""
    if server:
        name = f"MCP Gateway: virtual server {server}"
    elif path:
        name = "MCP Gateway: the whole catalog"
    else:
        name = "MCP Gateway"
    return {
        "resource": base + path if path else base,
        "authorization_servers": [settings.GATEWAY_OAUTH_ISSUER],
        "scopes_supported": scope_names(server, rest=not path),
        "bearer_methods_supported": ["header"],
        "resource_name": name,
    }


# -- challenges -----------------------------------------------------------------------------------


def _quoted(text: str) -> str:
    """A quoted-string value RFC 6750 allows (printable ASCII without quote and backslash)."""
    clean = "".join(ch if 0x20 <= ord(ch) < 0x7F and ch not in '"\\' else "'" if ch == '"' else " " for ch in text)
    return f'"{clean[:300]}"'


def www_authenticate(*, base: str, path: str, error: Exception | None = None, scope: str | None = None) -> str:
    """The WWW-Authenticate value of a 401 or 403 from the endpoint at ``path`` ("" for the REST API and
    other non-MCP pages): with OAuth on, Bearer names the resource's metadata document (and
    ``error="invalid_token"`` for a token that did not verify, ``error="insufficient_scope"`` with the
    scopes needed); Basic stays offered. With OAuth off, the challenge of before."""
    if not enabled():
        return LEGACY_CHALLENGE
    parts = [REALM, f"resource_metadata={_quoted(metadata_url(base, path))}"]
    if isinstance(error, InsufficientScope):
        parts += ['error="insufficient_scope"', f"scope={_quoted(error.scope)}"]
        parts.append(f"error_description={_quoted(error.message)}")
    elif isinstance(error, InvalidToken):
        parts += ['error="invalid_token"', f"error_description={_quoted(error.message)}"]
    elif scope:
        parts.append(f"scope={_quoted(scope)}")
    return f"Bearer {', '.join(parts)}, {BASIC}"


# -- verification -------------------------------------------------------------------------------


def looks_foreign(token: str, own_issuer: str) -> bool:
    """Whether a bearer token is not one of the gateway's own JWTs: it is not a JWT at all, or its
    (unverified) ``iss`` differs from JWT_ISSUER. Only decides which verifier looks at it."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return True
    return claims.get("iss") != own_issuer


_REASONS: list[tuple[type[Exception], str]] = [
    (jwt.ExpiredSignatureError, "the token has expired"),
    (jwt.ImmatureSignatureError, "the token is not valid yet (nbf)"),
    (jwt.InvalidAudienceError, "the token is for another resource (aud)"),
    (jwt.InvalidIssuerError, "the token was issued by another authorization server (iss)"),
    (jwt.MissingRequiredClaimError, "the token lacks a required claim"),
    (jwt.InvalidAlgorithmError, "the token is signed with an algorithm this gateway does not accept"),
    (jwt.InvalidSignatureError, "the token's signature does not verify"),
    (jwt.DecodeError, "the token is malformed"),
]


def _invalid(detail: str) -> InvalidToken:
    return InvalidToken(f"Invalid bearer token: {detail}.")


class Verifier:
    """The issuer's metadata and keys, fetched on first need and kept; verifies access tokens.
    Thread-safe: fetches happen in worker threads, one at a time."""

    def __init__(self, issuer: str, *, timeout: float, keys_ttl: float, refetch_interval: float, leeway: int) -> None:
        self.issuer = issuer
        self.timeout, self.keys_ttl, self.refetch_interval, self.leeway = timeout, keys_ttl, refetch_interval, leeway
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._keys_at = float("-inf")  # monotonic time of the last successful key fetch
        self._tried_at = float("-inf")  # monotonic time of the last fetch attempt (success or not)
        self._failure: str | None = None

    # network -----------------------------------------------------------------------------------

    def _get_json(self, url: str) -> Any:
        if urlsplit(url).scheme not in ("http", "https"):
            raise LookupError(f"{url} is not an http(s) URL")
        request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 - checked above
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return json.loads(response.read(1_000_000))
        except urllib.error.HTTPError as exc:
            raise LookupError(f"{url} answered HTTP {exc.code}") from None
        except (OSError, ValueError) as exc:
            raise ConnectionError(f"{url} could not be read ({exc})") from None

    def _discover(self) -> dict[str, Any]:
        issuer = self.issuer.rstrip("/")
        parts = urlsplit(issuer)
        origin, path = f"{parts.scheme}://{parts.netloc}", parts.path
        candidates = [
            f"{issuer}/.well-known/openid-configuration",
            f"{origin}/.well-known/oauth-authorization-server{path}",
        ]
        problems = []
        for url in candidates:
            try:
                document = self._get_json(url)
            except LookupError as exc:  # not served there: try the next
                problems.append(str(exc))
                continue
            if not isinstance(document, dict) or str(document.get("issuer", "")).rstrip("/") != issuer:
                problems.append(f"{url} names another issuer ({document.get('issuer')!r})")
                continue
            if not document.get("jwks_uri"):
                problems.append(f"{url} names no jwks_uri")
                continue
            return document
        raise ConnectionError("; ".join(problems))

    def _fetch(self, *, keys: bool) -> None:
        """Discovery (once) and the key set; must hold the lock."""
        self._tried_at = time.monotonic()
        try:
            if self._metadata is None:
                self._metadata = self._discover()
            if keys:
                document = self._get_json(str(self._metadata["jwks_uri"]))
                key_set = jwt.PyJWKSet.from_dict(document)
                self._keys = {key.key_id: key for key in key_set.keys}
                self._keys_at = time.monotonic()
            self._failure = None
        except (ConnectionError, LookupError, jwt.PyJWKSetError, jwt.PyJWKError) as exc:
            self._failure = str(exc)

    def _unavailable(self) -> Unavailable:
        return Unavailable(
            f"Service Unavailable: the authorization server {self.issuer} (GATEWAY_OAUTH_ISSUER) could not be "
            f"reached to verify this token ({self._failure}); retry later, or use HTTP Basic or a gateway token."
        )

    def needs_network(self, kid: str | None) -> bool:
        """Whether verifying a token with this key id would fetch first (cheap; for the event loop)."""
        now = time.monotonic()
        if self._metadata is None or now - self._keys_at >= self.keys_ttl:
            return now - self._tried_at >= self.refetch_interval or self._failure is None
        known = kid in self._keys or (kid is None and len(self._keys) == 1)
        return not known and now - self._tried_at >= self.refetch_interval

    def prefetch(self, kid: str | None) -> None:
        """Fetch what verifying a token with this key id needs: the metadata, and the key set when it is
        stale or lacks the key (rotation), at most once per refetch interval after a failure or a miss."""
        with self._lock:
            if self.needs_network(kid):
                self._fetch(keys=True)

    def key(self, kid: str | None) -> jwt.PyJWK:
        self.prefetch(kid)
        if not self._keys:
            raise self._unavailable()
        found = self._keys.get(kid)
        if found is None and kid is None and len(self._keys) == 1:
            found = next(iter(self._keys.values()))
        if found is None:
            raise _invalid(f"it is signed with a key ({kid!r}) the authorization server does not publish")
        return found

    def verify(self, token: str, accepted: Iterable[str]) -> dict[str, Any]:
        """The claims of a valid access token for one of the ``accepted`` audiences; InvalidToken or
        Unavailable otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _invalid(
                "it is not a JWT (this gateway verifies access tokens that are JWTs signed by "
                "GATEWAY_OAUTH_ISSUER; it does not introspect opaque tokens)"
            ) from None
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise _invalid(f"it is signed with {algorithm!r}, not one of {', '.join(ALGORITHMS)}")
        key = self.key(header.get("kid"))
        if self._metadata is None:  # pragma: no cover - key() fetched it
            raise self._unavailable()
        try:
            return dict(
                jwt.decode(
                    token,
                    key.key,
                    algorithms=[algorithm],
                    audience=sorted(accepted),
                    issuer=str(self._metadata["issuer"]),
                    leeway=self.leeway,
                    options={"require": ["exp", "iss", "aud", "sub"]},
                )
            )
        except jwt.PyJWTError as exc:
            for kind, reason in _REASONS:
                if isinstance(exc, kind):
                    raise _invalid(f"{reason}: {exc}" if kind is jwt.MissingRequiredClaimError else reason) from None
            raise _invalid("it does not verify") from None


_verifier: Verifier | None = None
_verifier_lock = threading.Lock()


def verifier() -> Verifier:
    """The process's verifier for the current settings (a new one when they change, as in tests)."""
    global _verifier
    wanted = (
        settings.GATEWAY_OAUTH_ISSUER,
        settings.GATEWAY_OAUTH_TIMEOUT,
        settings.GATEWAY_OAUTH_JWKS_CACHE_SECONDS,
        settings.GATEWAY_OAUTH_REFETCH_SECONDS,
        settings.GATEWAY_OAUTH_LEEWAY,
    )
    current = _verifier
    if (
        current is not None
        and (
            current.issuer,
            current.timeout,
            current.keys_ttl,
            current.refetch_interval,
            current.leeway,
        )
        == wanted
    ):
        return current
    with _verifier_lock:
        _verifier = Verifier(
            wanted[0], timeout=wanted[1], keys_ttl=wanted[2], refetch_interval=wanted[3], leeway=wanted[4]
        )
        return _verifier


def reset() -> None:
    """Forget the metadata and keys (tests)."""
    global _verifier
    _verifier = None


def token_kid(token: str) -> str | None:
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.PyJWTError:
        return None
    return kid if isinstance(kid, str) else None


# -- scopes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """What a token's scopes allow here: the gateway's scopes, and the one virtual server it is bound to."""

    scopes: frozenset[str]
    server: str | None


def grant(claims: dict[str, Any]) -> Grant:
    """The token's ``scope`` (space-separated) or ``scp`` (a list) mapped to the gateway's scopes."""
    raw = claims.get("scope", claims.get("scp", ""))
    names = set(raw.split() if isinstance(raw, str) else [str(item) for item in raw or []])
    mapping = {
        Scope.READ: settings.GATEWAY_OAUTH_SCOPE_READ,
        Scope.CALL: settings.GATEWAY_OAUTH_SCOPE_CALL,
        Scope.WRITE: settings.GATEWAY_OAUTH_SCOPE_WRITE,
    }
    scopes = frozenset(str(ours) for ours, theirs in mapping.items() if theirs in names)
    prefix, _, suffix = settings.GATEWAY_OAUTH_SCOPE_SERVER.partition("{name}")
    servers = sorted(
        name[len(prefix) : len(name) - len(suffix)]
        for name in names
        if name.startswith(prefix) and name.endswith(suffix) and len(name) > len(prefix) + len(suffix)
    )
    if len(servers) > 1:
        raise _invalid(
            f"it carries scopes for several virtual servers ({', '.join(servers)}); a token opens one or all"
        )
    return Grant(scopes=scopes, server=servers[0] if servers else None)
