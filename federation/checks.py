"""System checks of federation's settings: ``manage.py check`` (and every server start) names a bad value."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

SCHEDULER_MODES = ("auto", "inprocess", "celery", "off")


@register()
def check_scheduler(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """GATEWAY_SCHEDULER is one of the modes; celery needs a broker."""
    mode = str(settings.GATEWAY_SCHEDULER).lower()
    if mode not in SCHEDULER_MODES:
        return [
            Error(
                f"GATEWAY_SCHEDULER={settings.GATEWAY_SCHEDULER!r} is not one of {', '.join(SCHEDULER_MODES)}.",
                id="federation.E001",
            )
        ]
    if mode == "celery" and str(settings.CELERY_BROKER_URL).startswith("memory://"):
        return [
            Warning(
                "GATEWAY_SCHEDULER=celery without REDIS_URL: there is no broker, so tasks run inline in the caller "
                "and nothing runs the periodic checks and syncs.",
                hint="Set REDIS_URL and run `celery -A gateway_project worker` and `... beat`, or use inprocess.",
                id="federation.W001",
            )
        ]
    return []
