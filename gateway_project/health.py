"""Unauthenticated liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from asgiref.sync import markcoroutinefunction, sync_to_async
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse

READY_TIMEOUT_SECONDS = 2.0


async def health(request: HttpRequest) -> JsonResponse:
    """The process is up and serving requests."""
    return JsonResponse({"status": "ok"})


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


async def _check_redis(url: str) -> None:
    import redis.asyncio as aredis

    client = aredis.Redis.from_url(url, socket_connect_timeout=READY_TIMEOUT_SECONDS)
    try:
        await client.ping()
    finally:
        await client.aclose()


async def _timed(name: str, check: object) -> tuple[str, dict[str, object]]:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(check, READY_TIMEOUT_SECONDS)  # type: ignore[arg-type]
    except Exception as exc:  # any failure means "not ready"; report its kind, not a traceback
        reason = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        return name, {"ok": False, "error": reason[:300]}
    return name, {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 2)}


async def ready(request: HttpRequest) -> JsonResponse:
    """The database and, when configured, Redis answer; 503 with the failing part otherwise."""
    checks = [_timed("database", sync_to_async(_check_database, thread_sensitive=True)())]
    if settings.REDIS_URL:
        checks.append(_timed("redis", _check_redis(settings.REDIS_URL)))
    results = dict(await asyncio.gather(*checks))
    ok = all(result["ok"] for result in results.values())
    return JsonResponse({"status": "ready" if ok else "unavailable", "checks": results}, status=200 if ok else 503)


class ProbeMiddleware:
    """``/health`` and ``/ready`` answer whatever Host the request names: Kubernetes and container health
    checks probe a pod or container by its IP address, which ALLOWED_HOSTS rightly does not list (the
    probes were refused with 400 and a DisallowedHost traceback in the log). First in MIDDLEWARE, so
    nothing reads the Host before it; every other path keeps Django's host validation."""

    async_capable = True
    sync_capable = False

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path == "/health":
            return await health(request)
        if request.path == "/ready":
            return await ready(request)
        return await self.get_response(request)
