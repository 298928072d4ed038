"""Who is calling: HTTP Basic against Django users, JWT bearer tokens, or a Django session.

Used by the REST API now and by the MCP transports later, so it works from an Authorization
header value alone. The caller becomes a ``Principal`` whose scopes are what the user may do
(staff: read, write, call; others: read, call), narrowed by a token's own ``scope`` claim.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import IntegrityError, transaction

from registry.choices import Scope
from registry.conf import jwt_config
from registry.exceptions import AuthenticationFailed, InvalidInput
from registry.models import RevokedToken

ALL_SCOPES = frozenset(Scope.values)
WWW_AUTHENTICATE = 'Bearer realm="MCP Gateway", Basic realm="MCP Gateway", charset="UTF-8"'


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller and what it may do."""

    username: str
    scopes: frozenset[str]
    method: str  # "basic", "jwt", "session" or "anonymous"
    token_id: str | None = None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


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


def token_issue(*, username: str, expires_in: timedelta | None = None, scopes: list[str] | str | None = None) -> str:
    """A signed JWT for an existing active user; scopes default to all the user may do."""
    config = jwt_config()
    user = get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: username}).first()
    if user is None or not user.is_active:
        raise InvalidInput(f"No active user named {username!r}.")
    wanted = parse_scopes(scopes)
    granted = wanted & user_scopes(user)
    if not granted:
        raise InvalidInput(f"User {username!r} may not have any of the scopes asked for ({', '.join(sorted(wanted))}).")
    if not config.signing_key:
        raise InvalidInput(f"JWT_PRIVATE_KEY is needed to issue {config.algorithm} tokens.")
    now = datetime.now(UTC)
    claims = {
        "sub": username,
        "iss": config.issuer,
        "aud": config.audience,
        "iat": now,
        "nbf": now,
        "exp": now + (expires_in or config.default_expires_in),
        "jti": uuid.uuid4().hex,
        "scope": " ".join(sorted(granted)),
    }
    return jwt.encode(claims, config.signing_key, algorithm=config.algorithm)


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
    return Principal(
        username=user.get_username(), scopes=scopes & user_scopes(user), method="jwt", token_id=str(claims["jti"])
    )


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


def principal_from_authorization(header: str | None) -> Principal | None:
    """The caller named by an Authorization header; None when there is none."""
    if not header:
        return None
    kind, _, value = header.strip().partition(" ")
    value = value.strip()
    if kind.lower() == "bearer" and value:
        return token_principal(value)
    if kind.lower() == "basic" and value:
        return basic_principal(value)
    raise AuthenticationFailed("Unsupported Authorization header: use 'Bearer <token>' or 'Basic <base64>'.")


def session_principal(user: AbstractBaseUser | AnonymousUser) -> Principal | None:
    """The caller logged in to the admin, if any."""
    if not user.is_authenticated or not user.is_active:
        return None
    return Principal(username=user.get_username(), scopes=user_scopes(user), method="session")


@transaction.atomic
def token_revoke(*, token_or_jti: str, reason: str = "") -> RevokedToken:
    """Deny a token from now on, by the token itself or by its jti."""
    jti, subject, expires_at = token_or_jti, "", None
    if token_or_jti.count(".") == 2:
        try:
            claims = jwt.decode(token_or_jti, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise InvalidInput("That is neither a token id (jti) nor a readable token.") from None
        jti, subject = str(claims.get("jti", "")), str(claims.get("sub", ""))
        if "exp" in claims:
            expires_at = datetime.fromtimestamp(int(claims["exp"]), tz=UTC)
        if not jti:
            raise InvalidInput("The token has no jti claim, so it cannot be revoked.")
    try:
        with transaction.atomic():
            return RevokedToken.objects.create(jti=jti, subject=subject, expires_at=expires_at, reason=reason)
    except IntegrityError:
        return RevokedToken.objects.get(jti=jti)
