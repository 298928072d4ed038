"""Who is acting, for the audit log: every admin and REST request says so for the writes it makes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

from registry import audit


def _via(request: HttpRequest) -> str:
    return "admin" if request.path.startswith("/admin/") else "api"


class AuditActorMiddleware:
    """The request's user (read only when a change is recorded) through "admin" (paths under /admin/) or
    "api" (the REST API and every other view). The REST API's authentication then names the caller it
    verified (a token's or Basic user) for the rest of the request. Sync and async, so it never makes
    Django switch threads."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self.__acall__(request)
        with audit.acting_for_request(request, _via(request)):
            response: HttpResponse = self.get_response(request)
            return response

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        with audit.acting_for_request(request, _via(request)):
            response: HttpResponse = await self.get_response(request)
            return response
