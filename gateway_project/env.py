"""Reading settings from the environment without crashing at import time.

A bad value is recorded in ``ERRORS`` and the default is used instead; the system check in
``gateway_project.checks`` then makes ``manage.py check`` (and every server start) fail with the
message, so a typo in the environment never turns into a traceback.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

ERRORS: list[str] = []

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
# Letters, digits and - _ . : only: no glob characters, so `SCAN MATCH <prefix>:*` finds exactly its keys.
_KEY_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# Letters, digits and '-': the header names a proxy sets and Django's request.META names unambiguously.
_HEADER_NAME = re.compile(r"[A-Za-z0-9-]+")


def _get(name: str, default: Any, parse: Callable[[str], Any], expected: str) -> Any:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return parse(raw.strip())
    except (ValueError, TypeError) as exc:
        ERRORS.append(f"{name}={raw!r} is not {expected}: {exc}")
        return default


def env_str(name: str, default: str = "") -> str:
    """A string setting."""
    return os.environ.get(name, default)


def env_key_prefix(name: str, default: str) -> str:
    """A Redis key prefix: 1 to 64 letters, digits, '-', '_', '.' or ':'."""

    def parse(raw: str) -> str:
        if not _KEY_PREFIX.fullmatch(raw):
            raise ValueError("use 1 to 64 letters, digits, '-', '_', '.' or ':'")
        return raw

    return str(_get(name, default, parse, "a Redis key prefix"))


def env_bool(name: str, default: bool) -> bool:
    """A boolean setting: 1/true/yes/on or 0/false/no/off."""

    def parse(raw: str) -> bool:
        low = raw.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError("use one of 1, true, yes, on, 0, false, no, off")

    return bool(_get(name, default, parse, "a boolean"))


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    """An integer setting, optionally with a lower bound."""

    def parse(raw: str) -> int:
        value = int(raw)
        if minimum is not None and value < minimum:
            raise ValueError(f"must be at least {minimum}")
        return value

    return int(_get(name, default, parse, "an integer"))


def env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    """A number setting (seconds, usually)."""

    def parse(raw: str) -> float:
        value = float(raw)
        if value < minimum:
            raise ValueError(f"must be at least {minimum}")
        return value

    return float(_get(name, default, parse, "a number"))


def env_proxy_ssl_header(name: str) -> tuple[str, str] | None:
    """The header a TLS-terminating proxy sets on requests that reached it over https, as Django's
    SECURE_PROXY_SSL_HEADER wants it: "X-Forwarded-Proto" (secure when it says https) or "Name: value"
    (secure when it says value) becomes ("HTTP_X_FORWARDED_PROTO", "https"). Unset or empty: None."""

    def parse(raw: str) -> tuple[str, str] | None:
        if not raw:
            return None
        header, colon, value = raw.partition(":")
        header, value = header.strip(), value.strip() if colon else "https"
        if not _HEADER_NAME.fullmatch(header) or not value:
            raise ValueError('use a header name of letters, digits and "-", optionally with ": value" (default https)')
        return "HTTP_" + header.upper().replace("-", "_"), value

    found = _get(name, None, parse, "a header name")
    return None if found is None else (str(found[0]), str(found[1]))


def env_list(name: str, default: list[str]) -> list[str]:
    """A comma-separated list setting."""
    raw = os.environ.get(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_database(name: str, default: str) -> dict[str, Any]:
    """A database URL setting, parsed with dj-database-url."""
    import dj_database_url

    raw = os.environ.get(name) or default
    try:
        config = dict(dj_database_url.parse(raw, conn_max_age=60, conn_health_checks=True))
    except Exception as exc:  # dj-database-url raises several types for bad URLs
        ERRORS.append(f"{name}={raw!r} is not a database URL: {exc}")
        config = dict(dj_database_url.parse(default))
    return config


def env_redis(name: str) -> str | None:
    """A Redis URL setting (redis://, rediss:// or unix://), or None when unset."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        ERRORS.append(f"{name}={raw!r} is not a Redis URL: it must start with redis://, rediss:// or unix://")
        return None
    return raw
