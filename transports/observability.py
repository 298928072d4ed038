"""The Django side of logs and traces: the settings turned into the protocol core's switches.

``configure_access_log()`` sets ``observe.access`` from GATEWAY_ACCESS_LOG, GATEWAY_LOG_ARGUMENTS and
GATEWAY_LOG_REDACT (from ``TransportsConfig.ready``, and again when a test overrides one of them);
``start_tracing()`` sets up OpenTelemetry when GATEWAY_OTEL_ENDPOINT is set (from
``gateway_project.asgi``: serving processes only, not every management command).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from transports.protocol import observe, tracing

ACCESS_SETTINGS = frozenset({"GATEWAY_ACCESS_LOG", "GATEWAY_LOG_ARGUMENTS", "GATEWAY_LOG_REDACT"})


def configure_access_log() -> None:
    """Turn the access log on or off (one ``is None`` check per request when off)."""
    if settings.GATEWAY_ACCESS_LOG:
        observe.access = observe.AccessLog(
            arguments=settings.GATEWAY_LOG_ARGUMENTS, redacted=settings.GATEWAY_LOG_REDACT
        )
    else:
        observe.access = None


def start_tracing() -> bool:
    """Export traces when GATEWAY_OTEL_ENDPOINT is set; nothing is set up otherwise. Says whether on."""
    endpoint = settings.GATEWAY_OTEL_ENDPOINT
    if not endpoint:
        return False
    tracing.setup(endpoint, settings.GATEWAY_OTEL_SERVICE_NAME)
    return True


@receiver(setting_changed)
def _access_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in ACCESS_SETTINGS:
        configure_access_log()
