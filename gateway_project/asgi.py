"""ASGI entry point.

HTTP requests first meet the lean MCP routes of `transports` (Channels consumers, no Django
middleware), and everything else (admin, REST API, health) falls through to Django. WebSocket
connections go to `transports` only.
"""

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402

from transports.routing import http_urlpatterns, websocket_urlpatterns  # noqa: E402

django_fallback = re_path(r"", django_asgi_app)  # type: ignore[arg-type]

application = ProtocolTypeRouter(
    {
        "http": URLRouter([*http_urlpatterns, django_fallback]),
        "websocket": URLRouter(websocket_urlpatterns),
    }
)

# Everything imported so far lives as long as the process: move it out of the garbage collector's
# sight, so collections stay short (they caused daphne's latency spikes; see docs/performance.md).
gc.collect()
gc.freeze()

# OpenTelemetry traces when GATEWAY_OTEL_ENDPOINT is set (nothing is set up otherwise).
from transports.observability import start_tracing  # noqa: E402

start_tracing()

# The embedded default runs federation's periodic work (health checks, syncs) in this process; with
# GATEWAY_SCHEDULER=celery it runs on Celery workers instead, and with off nowhere (tests).
from federation.scheduler import start_background  # noqa: E402

start_background()

# Each process publishes its traffic counts for the dashboard's view across replicas
# (GATEWAY_STATS_PUBLISH_SECONDS; 0: no publisher thread).
from transports.stats import start_publishing  # noqa: E402

start_publishing()
