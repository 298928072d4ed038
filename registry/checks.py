"""System checks for the catalog's settings: `manage.py check` fails with the message."""

from typing import Any

from django.core.checks import Error, Tags, register

from registry.conf import settings_problems


@register(Tags.security)
def check_registry_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """JWT, encryption-key and page-size settings are usable."""
    return [Error(message, hint=hint, id="registry.E001") for message, hint in settings_problems()]
