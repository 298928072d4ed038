"""GET /metrics: this process's Prometheus metrics (transports.metrics), for a scraper.

Off (404) unless GATEWAY_METRICS. Who may read them: a bearer GATEWAY_METRICS_TOKEN, or a client
address in GATEWAY_METRICS_ALLOWED_IPS (addresses or CIDR networks); when neither is set, staff
credentials (Basic or the gateway's JWT, like the REST API, or an admin session).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from registry.auth import principal_from_authorization
from registry.exceptions import AuthenticationFailed
from transports import metrics

CHALLENGE = 'Bearer realm="metrics"'


def _refused(status: int, sentence: str, *, challenge: str | None = None) -> HttpResponse:
    response = HttpResponse(sentence + "\n", status=status, content_type="text/plain; charset=utf-8")
    if challenge:
        response["WWW-Authenticate"] = challenge
    return response


def _allowed_address(address: str, allowed: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for entry in allowed:
        try:
            if ip in ipaddress.ip_network(entry.strip(), strict=False):
                return True
        except ValueError:
            continue  # a malformed entry allows nobody (manage.py check is the place to catch it)
    return False


def _bearer(request: HttpRequest) -> str | None:
    kind, _, value = request.headers.get("Authorization", "").strip().partition(" ")
    return value.strip() if kind.lower() == "bearer" and value.strip() else None


def _staff_refusal(request: HttpRequest) -> HttpResponse | None:
    """None when the request carries staff credentials; the refusal otherwise."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_active and user.is_staff:
        return None
    try:
        principal = principal_from_authorization(request.headers.get("Authorization"))
    except AuthenticationFailed as exc:
        return _refused(401, f"Metrics need staff credentials: {exc}", challenge='Basic realm="metrics"')
    if principal is None:
        return _refused(
            401,
            "Metrics need staff credentials (Basic or a bearer token of a staff user), "
            "or set GATEWAY_METRICS_TOKEN or GATEWAY_METRICS_ALLOWED_IPS for a scraper.",
            challenge='Basic realm="metrics"',
        )
    staff = get_user_model().objects.filter(username=principal.username, is_active=True, is_staff=True).exists()
    if not staff:
        return _refused(403, f"Metrics are for staff users; {principal.username!r} is not one.")
    return None


@require_GET
async def metrics_view(request: HttpRequest) -> HttpResponse:
    """This process's metrics in the Prometheus text format, to whoever may read them. Async only to
    note the serving event loop for ``mcpgw_asyncio_tasks``; the rest (queries) runs in a thread."""
    metrics.note_serving_loop(asyncio.get_running_loop())
    return await sync_to_async(_metrics, thread_sensitive=True)(request)


def _metrics(request: HttpRequest) -> HttpResponse:
    if not settings.GATEWAY_METRICS:
        raise Http404("Metrics are off (GATEWAY_METRICS).")
    token, allowed = settings.GATEWAY_METRICS_TOKEN, settings.GATEWAY_METRICS_ALLOWED_IPS
    if token or allowed:
        presented = _bearer(request)
        opened = bool(token and presented and hmac.compare_digest(presented.encode(), token.encode()))
        opened = opened or bool(allowed and _allowed_address(request.META.get("REMOTE_ADDR", ""), allowed))
        if opened:
            pass
        elif presented and token:
            return _refused(403, "That bearer token is not GATEWAY_METRICS_TOKEN.")
        elif token:
            return _refused(
                401,
                "Metrics need the bearer token of GATEWAY_METRICS_TOKEN (Authorization: Bearer ...).",
                challenge=CHALLENGE,
            )
        else:
            return _refused(403, "Metrics are only served to the addresses of GATEWAY_METRICS_ALLOWED_IPS.")
    else:
        refusal = _staff_refusal(request)
        if refusal is not None:
            return refusal
    return HttpResponse(metrics.exposition(), content_type=metrics.CONTENT_TYPE)
