"""The catalog's settings, read when used (never at import), and their validation for checks.py."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512")
MIN_HMAC_SECRET_BYTES = 32
# ASCII digits and blanks only, as the OpenAPI document states it (registry.schemas.DURATION_PATTERN).
_DURATION_RE = re.compile(r"([0-9]+)[ \t]*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """'90s', '30m', '12h', '7d', '2w' -> timedelta; ValueError otherwise."""
    match = _DURATION_RE.fullmatch(text.strip(" \t").lower())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a duration like 30m, 12h, 7d or 2w")
    try:
        return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    except OverflowError:
        raise ValueError(f"{text!r} is too long for a duration") from None


def _pem(value: str) -> str:
    """A key given as PEM text, or as the path of a PEM file."""
    if not value or value.lstrip().startswith("-----BEGIN"):
        return value
    return Path(value).expanduser().read_text()


@dataclass(frozen=True)
class JwtConfig:
    algorithm: str
    signing_key: str
    verify_key: str
    issuer: str
    audience: str
    leeway: int
    default_expires_in: timedelta


def jwt_config() -> JwtConfig:
    """The JWT settings resolved to keys; raises ValueError/OSError on a bad key setting."""
    algorithm = settings.JWT_ALGORITHM
    if algorithm in HMAC_ALGORITHMS:
        secret = settings.JWT_SECRET or ("jwt:" + settings.SECRET_KEY)
        signing = verify = secret
    else:
        verify = _pem(settings.JWT_PUBLIC_KEY)
        signing = _pem(settings.JWT_PRIVATE_KEY)
    return JwtConfig(
        algorithm=algorithm,
        signing_key=signing,
        verify_key=verify,
        issuer=settings.JWT_ISSUER,
        audience=settings.JWT_AUDIENCE,
        leeway=settings.JWT_LEEWAY,
        default_expires_in=parse_duration(settings.JWT_DEFAULT_EXPIRES_IN),
    )


def auth_required() -> bool:
    return bool(settings.GATEWAY_AUTH_REQUIRED)


def page_sizes() -> tuple[int, int]:
    """(default, maximum) page size of list endpoints."""
    return settings.GATEWAY_PAGE_SIZE, settings.GATEWAY_MAX_PAGE_SIZE


def settings_problems() -> list[tuple[str, str]]:
    """Every bad catalog setting as (message, hint); empty when all is well."""
    from cryptography.fernet import Fernet
    from cryptography.hazmat.primitives import serialization

    problems: list[tuple[str, str]] = []
    algorithm = settings.JWT_ALGORITHM
    if algorithm not in HMAC_ALGORITHMS + ASYMMETRIC_ALGORITHMS:
        problems.append(
            (
                f"JWT_ALGORITHM={algorithm!r} is not supported.",
                f"Use one of {', '.join(HMAC_ALGORITHMS + ASYMMETRIC_ALGORITHMS)}.",
            )
        )
    elif algorithm in HMAC_ALGORITHMS:
        if settings.JWT_SECRET and len(settings.JWT_SECRET.encode()) < MIN_HMAC_SECRET_BYTES:
            problems.append(
                (
                    f"JWT_SECRET is shorter than {MIN_HMAC_SECRET_BYTES} bytes.",
                    "Use a long random value, e.g. `openssl rand -hex 32`.",
                )
            )
    else:
        if not settings.JWT_PUBLIC_KEY:
            problems.append(
                (
                    f"JWT_ALGORITHM={algorithm} needs JWT_PUBLIC_KEY.",
                    "Set it to the PEM text or the path of a PEM file.",
                )
            )
        for name, loader in (
            ("JWT_PUBLIC_KEY", serialization.load_pem_public_key),
            ("JWT_PRIVATE_KEY", lambda data: serialization.load_pem_private_key(data, password=None)),
        ):
            raw = getattr(settings, name)
            if not raw:
                continue
            try:
                loader(_pem(raw).encode())
            except (OSError, ValueError, TypeError) as exc:
                problems.append(
                    (f"{name} cannot be loaded: {exc}", "Give PEM text or the path of a readable PEM file.")
                )
    try:
        parse_duration(settings.JWT_DEFAULT_EXPIRES_IN)
    except ValueError as exc:
        problems.append((f"JWT_DEFAULT_EXPIRES_IN: {exc}.", "Use a number and a unit: s, m, h, d or w."))
    for index, key in enumerate(settings.GATEWAY_ENCRYPTION_KEYS):
        try:
            Fernet(key.encode())
        except (ValueError, TypeError):
            problems.append(
                (
                    f"GATEWAY_ENCRYPTION_KEYS entry {index + 1} is not a Fernet key.",
                    "Generate one with: python -c "
                    "'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'",
                )
            )
    default, maximum = page_sizes()
    if default > maximum:
        problems.append(
            (
                f"GATEWAY_PAGE_SIZE ({default}) is larger than GATEWAY_MAX_PAGE_SIZE ({maximum}).",
                "Lower one or raise the other.",
            )
        )
    return problems
