"""Who is calling: HTTP Basic against Django users, JWT bearer tokens, or a Django session.

Used by the REST API and the MCP transports, so it works from an Authorization header value alone.
The caller becomes a ``Principal`` whose scopes are what the user may do (staff: read, write, call;
others: read, call), narrowed by a token's own ``scope`` claim. A token may be bound to one virtual
server (its ``srv`` claim): it then opens only that server's MCP endpoints (``server_refusal``).

Issued tokens are recorded (``IssuedToken``: whose, scopes, server, expiry; never the token), so they can
be listed and revoked; revocation puts the jti on the deny list (``RevokedToken``) the auth path checks.
Tokens issued before records were kept have none and work as before.
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from django.conf import settings
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from registry import audit, hooks, oauth
from registry.choices import Scope
from registry.conf import jwt_config
from registry.exceptions import AuthenticationFailed, InvalidInput
from registry.models import IssuedToken, RevokedToken, VirtualServer

logger = logging.getLogger(__name__)
ALL_SCOPES = frozenset(Scope.values)
# The challenge while OAuth is off; with it on, ``oauth.www_authenticate`` builds one per endpoint.
WWW_AUTHENTICATE = oauth.LEGACY_CHALLENGE


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller and what it may do."""

    username: str
    scopes: frozenset[str]
    method: str  # "basic", "jwt", "oauth", "session" or "anonymous"
    token_id: str | None = None
    server: str | None = None  # a token bound to one virtual server: only its endpoints
    # An OAuth access token's: the audiences it was issued for (checked per endpoint, also on a cache
    # hit) and when it expires (epoch seconds; a cache keeps it no longer).
    audience: frozenset[str] | None = None
    expires_at: float | None = None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


def server_refusal(principal: Principal, server: str | None) -> str | None:
    """Why ``principal`` may not use the MCP endpoints of ``server`` (None: the whole catalog's), or None
    when it may. Uses only the Principal, so the edge checks it without a query."""
    if principal.server is None or principal.server == server:
        return None
    where = "the whole catalog's endpoints" if server is None else f"virtual server {server!r}"
    bound = principal.server
    return (
        f"Forbidden: this token is bound to virtual server {bound!r} and only opens its endpoints "
        f"(/servers/{bound}/mcp, /servers/{bound}/sse, /servers/{bound}/ws, /servers/{bound}/rpc), "
        f"not {where}."
    )


def rest_refusal(principal: Principal) -> str | None:
    """Why ``principal`` may not use the REST API, or None: a server-bound token is for MCP clients only."""
    if principal.server is None:
        return None
    return (
        f"This token is bound to virtual server {principal.server!r} and only opens its MCP endpoints "
        f"(/servers/{principal.server}/mcp and its sse, ws and rpc); use an unbound token for the REST API."
    )


ANONYMOUS = Principal(username="anonymous", scopes=ALL_SCOPES, method="anonymous")


def user_scopes(user: AbstractBaseUser | AnonymousUser) -> frozenset[str]:
    """Staff users may change the catalog; every active user may read it and call tools."""
    if not user.is_active:
        return frozenset()
    if getattr(user, "is_staff", False):
        return ALL_SCOPES
    return frozenset({Scope.READ, Scope.CALL})


def parse_scopes(scopes: list[str] | str | None) -> frozenset[str]:
    """Scope names from a list or a space/comma-separated string; unknown names are an error."""
    if scopes is None:
        return ALL_SCOPES
    items = scopes.replace(",", " ").split() if isinstance(scopes, str) else scopes
    unknown = sorted(set(items) - ALL_SCOPES)
    if unknown:
        raise InvalidInput(f"Unknown scope(s): {', '.join(unknown)}; use {', '.join(sorted(ALL_SCOPES))}.")
    return frozenset(items)


def _active_user(username: str) -> Any:
    user = get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: username}).first()
    if user is None or not user.is_active:
        raise AuthenticationFailed("The token's user does not exist or is inactive.")
    return user


@dataclass(frozen=True)
class Issued:
    """A token just issued (its text, shown once) and its record."""

    token: str
    record: IssuedToken


@transaction.atomic
def issued_token_create(
    *,
    username: str,
    expires_in: timedelta | None = None,
    scopes: list[str] | str | None = None,
    name: str = "",
    server: str | None = None,
    issued_by: str = "",
) -> Issued:
    """A signed JWT for an existing active user, recorded in the same transaction; scopes default to all the
    user may do; ``server`` (a virtual server's name) binds the token to that server's endpoints."""
    config = jwt_config()
    user = get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: username}).first()
    if user is None or not user.is_active:
        raise InvalidInput(
            f"No active user named {username!r}.", errors={"user": [f"No active user named {username!r}."]}
        )
    wanted = parse_scopes(scopes)
    granted = wanted & user_scopes(user)
    if not granted:
        message = f"User {username!r} may not have any of the scopes asked for ({', '.join(sorted(wanted))})."
        raise InvalidInput(message, errors={"scopes": [message]})
    name = name.strip()
    if len(name) > IssuedToken.NAME_MAX_LENGTH:
        message = f"The name is longer than {IssuedToken.NAME_MAX_LENGTH} characters."
        raise InvalidInput(message, errors={"name": [message]})
    bound = None
    if server:
        bound = VirtualServer.objects.filter(name=server).first()
        if bound is None:
            message = f"No virtual server named {server!r}."
            raise InvalidInput(message, errors={"server": [message]})
    if not config.signing_key:
        raise InvalidInput(f"JWT_PRIVATE_KEY is needed to issue {config.algorithm} tokens.")
    now = datetime.now(UTC).replace(microsecond=0)  # the JWT's times are whole seconds; so are the record's
    try:
        expires_at = now + (expires_in or config.default_expires_in)
    except OverflowError:
        message = "That lifetime is too long: the token would expire after the year 9999."
        raise InvalidInput(message, errors={"expires_in": [message]}) from None
    claims: dict[str, Any] = {
        "sub": username,
        "iss": config.issuer,
        "aud": config.audience,
        "iat": now,
        "nbf": now,
        "exp": expires_at,
        "jti": uuid.uuid4().hex,
        "scope": " ".join(sorted(granted)),
    }
    if bound is not None:
        claims["srv"] = bound.name
    token = jwt.encode(claims, config.signing_key, algorithm=config.algorithm)
    record = IssuedToken.objects.create(
        jti=claims["jti"],
        user=user,
        name=name,
        scopes=claims["scope"],
        server=bound,
        issued_at=now,
        expires_at=expires_at,
        issued_by=issued_by,
    )
    audit.record_token(
        "issued",
        jti=record.jti,
        subject=username,
        scopes=record.scopes,
        server=server or None,
        name=name,
        expires_at=expires_at.isoformat(),
    )
    return Issued(token=token, record=record)


def token_issue(
    *,
    username: str,
    expires_in: timedelta | None = None,
    scopes: list[str] | str | None = None,
    name: str = "",
    server: str | None = None,
    issued_by: str = "",
) -> str:
    """The text of a new token (see ``issued_token_create``)."""
    return issued_token_create(
        username=username, expires_in=expires_in, scopes=scopes, name=name, server=server, issued_by=issued_by
    ).token


_JWT_REASONS: list[tuple[type[Exception], str]] = [
    (jwt.ExpiredSignatureError, "the token has expired"),
    (jwt.ImmatureSignatureError, "the token is not valid yet (nbf)"),
    (jwt.InvalidAudienceError, "the token is for another audience (aud)"),
    (jwt.InvalidIssuerError, "the token was issued by someone else (iss)"),
    (jwt.MissingRequiredClaimError, "the token lacks a required claim"),
    (jwt.InvalidAlgorithmError, "the token is signed with an algorithm this gateway does not accept"),
    (jwt.InvalidSignatureError, "the token's signature does not verify"),
    (jwt.DecodeError, "the token is malformed"),
]


def token_claims(token: str) -> dict[str, Any]:
    """Verified claims of a token (signature, exp, nbf, iss, aud); AuthenticationFailed otherwise."""
    config = jwt_config()
    try:
        return dict(
            jwt.decode(
                token,
                config.verify_key,
                algorithms=[config.algorithm],
                audience=config.audience,
                issuer=config.issuer,
                leeway=config.leeway,
                options={"require": ["exp", "iat", "sub", "jti"]},
            )
        )
    except jwt.PyJWTError as exc:
        for kind, reason in _JWT_REASONS:
            if isinstance(exc, kind):
                detail = f"{reason}: {exc}" if kind is jwt.MissingRequiredClaimError else reason
                raise AuthenticationFailed(f"Invalid bearer token: {detail}.") from None
        raise AuthenticationFailed("Invalid bearer token.") from None


def token_principal(token: str) -> Principal:
    """The caller named by a valid, unrevoked token of an active user."""
    claims = token_claims(token)
    if RevokedToken.objects.filter(jti=str(claims["jti"])).exists():
        raise AuthenticationFailed("Invalid bearer token: it has been revoked.")
    user = _active_user(str(claims["sub"]))
    try:
        scopes = parse_scopes(str(claims.get("scope", ""))) if "scope" in claims else ALL_SCOPES
    except InvalidInput as exc:  # a credential problem (401), not a request-body one (422)
        raise AuthenticationFailed(f"Invalid bearer token: {exc.message}") from None
    jti = str(claims["jti"])
    return Principal(
        username=user.get_username(),
        scopes=scopes & user_scopes(user),
        method="jwt",
        token_id=jti,
        server=_bound_server(jti, str(claims["srv"])) if "srv" in claims else None,
    )


def _bound_server(jti: str, claimed: str) -> str:
    """The virtual server a bound token opens: its record's server. A bound token without a record (its
    server was deleted, which takes the record along) opens nothing."""
    record = IssuedToken.objects.filter(jti=jti).select_related("server").first()
    if record is None or record.server is None:
        raise AuthenticationFailed(
            f"Invalid bearer token: it was bound to virtual server {claimed!r}, which no longer exists."
        )
    return record.server.name


def basic_principal(encoded: str) -> Principal:
    """The caller named by HTTP Basic credentials of an active Django user."""
    try:
        username, sep, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthenticationFailed("Malformed Basic credentials: expected base64 of 'username:password'.") from None
    if not sep:
        raise AuthenticationFailed("Malformed Basic credentials: expected base64 of 'username:password'.")
    user = authenticate(username=username, password=password)
    if user is None or not user.is_active:
        raise AuthenticationFailed("Wrong username or password.")
    return Principal(username=user.get_username(), scopes=user_scopes(user), method="basic")


def principal_from_authorization(header: str | None, *, audiences: frozenset[str] | None = None) -> Principal | None:
    """The caller named by an Authorization header; None when there is none. With OAuth on
    (GATEWAY_OAUTH_ISSUER), a bearer token that is not one of the gateway's own is an OAuth access token,
    valid for one of ``audiences`` (the endpoint's resource URLs; None: ``default_audiences()``)."""
    if not header:
        return None
    kind, _, value = header.strip().partition(" ")
    value = value.strip()
    if kind.lower() == "bearer" and value:
        if oauth.enabled() and oauth.looks_foreign(value, jwt_config().issuer):
            return oauth_principal(value, default_audiences() if audiences is None else audiences)
        try:
            return token_principal(value)
        except oauth.InvalidToken:
            raise
        except AuthenticationFailed as exc:  # the challenge says error="invalid_token"
            raise oauth.InvalidToken(exc.message) from None
    if kind.lower() == "basic" and value:
        return basic_principal(value)
    raise AuthenticationFailed("Unsupported Authorization header: use 'Bearer <token>' or 'Basic <base64>'.")


def default_audiences() -> frozenset[str]:
    """The audiences an OAuth token needs where no endpoint is known: GATEWAY_OAUTH_AUDIENCE, or the REST
    API's at GATEWAY_PUBLIC_URL; nothing (every token refused) without either."""
    if settings.GATEWAY_OAUTH_AUDIENCE:
        return frozenset({settings.GATEWAY_OAUTH_AUDIENCE})
    if settings.GATEWAY_PUBLIC_URL:
        return oauth.audiences(oauth.base_urls(""), None, rest=True)
    return frozenset()


def oauth_principal(token: str, audiences: frozenset[str]) -> Principal:
    """The caller named by an OAuth access token of GATEWAY_OAUTH_ISSUER (see ``registry.oauth``).

    Its scopes are the token's mapped to the gateway's (``oauth.grant``). When a Django user matches the
    token (username = ``preferred_username`` or ``sub``; or, with ``email_verified``, the one user with
    that email), the principal is that user, and the token's scopes are narrowed to what the user may do
    (an inactive user is refused). Otherwise the principal is named ``oauth:<preferred_username, email or
    sub>`` and exists only for the request: it never gets write (changing the catalog takes a staff user).
    Revocation is the authorization server's business: keep its tokens short-lived."""
    claims = oauth.verifier().verify(token, audiences)
    granted = oauth.grant(claims)
    user = _oauth_user(claims)
    if user is not None:
        username, scopes = user.get_username(), granted.scopes & user_scopes(user)
    else:
        label = claims.get("preferred_username") or claims.get("email") or claims["sub"]
        username, scopes = f"oauth:{label}", granted.scopes - {Scope.WRITE}
    aud = claims["aud"]
    return Principal(
        username=username,
        scopes=scopes,
        method="oauth",
        token_id=str(claims["jti"]) if "jti" in claims else None,
        server=granted.server,
        audience=frozenset([aud] if isinstance(aud, str) else [str(item) for item in aud]),
        expires_at=float(claims["exp"]),
    )


def _oauth_user(claims: dict[str, Any]) -> Any:
    """The Django user an OAuth token names, or None; AuthenticationFailed for an inactive one."""
    model = get_user_model()
    field = model.USERNAME_FIELD
    user = None
    for claim in ("preferred_username", "sub"):
        if isinstance(claims.get(claim), str) and claims[claim]:
            user = model.objects.filter(**{field: claims[claim]}).first()
            if user is not None:
                break
    email = claims.get("email")
    if user is None and isinstance(email, str) and email and claims.get("email_verified") is True:
        matches = list(model.objects.filter(email__iexact=email)[:2])
        user = matches[0] if len(matches) == 1 else None
    if user is not None and not user.is_active:
        raise oauth.InvalidToken("Invalid bearer token: the token's user is inactive on this gateway.")
    return user


def session_principal(user: AbstractBaseUser | AnonymousUser) -> Principal | None:
    """The caller logged in to the admin, if any."""
    if not user.is_authenticated or not user.is_active:
        return None
    return Principal(username=user.get_username(), scopes=user_scopes(user), method="session")


@transaction.atomic
def token_revoke(*, token_or_jti: str, reason: str = "") -> RevokedToken:
    """Deny a token from now on, by the token itself or by its jti; its record (if any) says revoked."""
    jti, subject, expires_at = token_or_jti.strip(), "", None
    if jti.count(".") == 2:
        try:
            claims = jwt.decode(jti, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise InvalidInput("That is neither a token id (jti) nor a readable token.") from None
        jti, subject = str(claims.get("jti", "")), str(claims.get("sub", ""))
        if "exp" in claims:
            expires_at = datetime.fromtimestamp(int(claims["exp"]), tz=UTC)
        if not jti:
            raise InvalidInput("The token has no jti claim, so it cannot be revoked.")
    if not jti:
        raise InvalidInput("Give the token or its id (jti).")
    if len(jti) > 128:
        raise InvalidInput("That is not a token id: a jti has at most 128 characters.")
    if len(reason) > 256:
        raise InvalidInput("The reason is longer than 256 characters.", errors={"reason": ["At most 256 characters."]})
    record = IssuedToken.objects.filter(jti=jti).select_related("user").first()
    if record is not None:
        subject = subject or record.user.get_username()
        expires_at = expires_at or record.expires_at
    try:
        with transaction.atomic():
            revoked = RevokedToken.objects.create(jti=jti, subject=subject, expires_at=expires_at, reason=reason)
        audit.record_token("revoked", jti=jti, subject=subject, reason=reason)
    except IntegrityError:
        revoked = RevokedToken.objects.get(jti=jti)
    IssuedToken.objects.filter(jti=jti, revoked_at__isnull=True).update(revoked_at=revoked.revoked_at)
    transaction.on_commit(functools.partial(_send_token_revoked, jti))  # every replica drops cached callers
    return revoked


def _send_token_revoked(jti: str) -> None:
    for receiver, result in hooks.token_revoked.send_robust(sender=RevokedToken, token_ids=[jti]):
        if isinstance(result, Exception):
            logger.warning("token_revoked receiver %r failed", receiver, exc_info=result)


@transaction.atomic
def issued_tokens_revoke(*, tokens: QuerySet[IssuedToken], reason: str = "") -> int:
    """Revoke the recorded tokens that are not revoked yet; how many were."""
    count = 0
    for jti in tokens.filter(revoked_at__isnull=True).values_list("jti", flat=True):
        token_revoke(token_or_jti=jti, reason=reason)
        count += 1
    return count


@transaction.atomic
def issued_tokens_delete(*, tokens: QuerySet[IssuedToken]) -> int:
    """Forget token records, revoking each first: a token whose record is gone must not keep working unseen."""
    issued_tokens_revoke(tokens=tokens, reason="its record was deleted")
    count, _ = tokens.delete()
    return count


def issued_token_list(
    *, username: str | None = None, state: str | None = None, server: str | None = None
) -> QuerySet[IssuedToken]:
    """Recorded tokens, newest first, narrowed by owner, state (active, expired, revoked) and server name
    ("" for tokens bound to no server)."""
    tokens = IssuedToken.objects.select_related("user", "server")
    if username is not None:
        tokens = tokens.filter(**{f"user__{get_user_model().USERNAME_FIELD}": username})
    if state is not None:
        tokens = tokens.filter(issued_token_state_filter(state))
    if server is not None:
        tokens = tokens.filter(server__isnull=True) if server == "" else tokens.filter(server__name=server)
    return tokens


def issued_token_state_filter(state: str) -> Q:
    """The condition for tokens in ``state`` as of now; InvalidInput for an unknown state."""
    now = timezone.now()
    if state == IssuedToken.State.REVOKED:
        return Q(revoked_at__isnull=False)
    if state == IssuedToken.State.EXPIRED:
        return Q(revoked_at__isnull=True, expires_at__lte=now)
    if state == IssuedToken.State.ACTIVE:
        return Q(revoked_at__isnull=True, expires_at__gt=now)
    raise InvalidInput(f"Unknown token state {state!r}; use active, expired or revoked.")
