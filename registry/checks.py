"""System checks for the catalog's settings: `manage.py check` fails with the message."""

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, Tags, register

from registry.conf import settings_problems
from registry.validators import parse_rate

RATE_SETTINGS = (
    "GATEWAY_RATE_LIMIT_PER_USER",
    "GATEWAY_RATE_LIMIT_PER_TOKEN",
    "GATEWAY_RATE_LIMIT_PER_SERVER",
    "GATEWAY_RATE_LIMIT_PER_TOOL",
    "GATEWAY_RATE_LIMIT_PER_GATEWAY",
)


@register(Tags.security)
def check_registry_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """JWT, encryption-key and page-size settings are usable."""
    return [Error(message, hint=hint, id="registry.E001") for message, hint in settings_problems()]


@register()
def check_governance_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """The rate limits parse and the OAuth issuer is a URL (docs/governance.md), so a typo fails at start-up
    rather than on the first request."""
    errors: list[Error] = []
    for name in RATE_SETTINGS:
        try:
            parse_rate(getattr(settings, name, "") or "")
        except ValueError as exc:
            errors.append(
                Error(
                    f"{name}: {exc}.",
                    hint="Use a number of requests per second, minute, hour or day.",
                    id="registry.E002",
                )
            )
    issuer = getattr(settings, "GATEWAY_OAUTH_ISSUER", "")
    if issuer:
        parts = urlsplit(issuer)
        if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
            errors.append(
                Error(
                    f"GATEWAY_OAUTH_ISSUER={issuer!r} is not an issuer URL.",
                    hint="Give the authorization server's issuer: an https URL without query or fragment.",
                    id="registry.E003",
                )
            )
    return errors
