"""The one NinjaAPI instance: mounts the apps' routers under /api/ and maps errors to JSON once."""

from __future__ import annotations

import json
import logging
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from federation.api import router as federation_router
from registry import oauth
from registry.api import router as registry_router
from registry.exceptions import AuthenticationFailed, CatalogError, Forbidden
from transports.api import router as transports_router
from transports.rpc import router as rpc_router

logger = logging.getLogger(__name__)

api = NinjaAPI(
    title="MCP Gateway API",
    version="1",
    description="Manage the catalog of MCP Gateway: upstream gateways, tools, resources, templates, "
    "prompts and virtual servers. Authenticate with a bearer token (`manage.py issue_token`) or HTTP Basic.",
    urls_namespace="api",
)
api.add_router("/", registry_router)
api.add_router("/", federation_router)
api.add_router("/", transports_router)  # test calls and OpenAPI import: they need the runtime

# JSON-RPC over plain HTTP lives at the root (/rpc, /servers/<name>/rpc), beside the MCP endpoints rather
# than under /api/, so it is its own small NinjaAPI; it answers in JSON-RPC and documents itself in the README.
rpc_api = NinjaAPI(title="MCP Gateway JSON-RPC", version="1", urls_namespace="rpc", docs_url=None, openapi_url=None)
rpc_api.add_router("/", rpc_router)


def _json(request: HttpRequest, body: dict[str, Any], status: int) -> HttpResponse:
    return api.create_response(request, body, status=status)


@api.exception_handler(CatalogError)
def on_catalog_error(request: HttpRequest, exc: CatalogError) -> HttpResponse:
    return _json(request, exc.as_dict(), exc.status)


def _challenge(request: HttpRequest, error: Exception | None) -> str:
    base = oauth.base_urls(request.get_host(), request.scheme or "http")[0]
    return oauth.www_authenticate(base=base, path="", error=error)


@api.exception_handler(AuthenticationFailed)
def on_authentication_failed(request: HttpRequest, exc: AuthenticationFailed) -> HttpResponse:
    if isinstance(exc, oauth.Unavailable):  # the authorization server is down: not the token's fault
        response = _json(request, {"detail": exc.message}, 503)
        response["Retry-After"] = str(exc.retry_after)
        return response
    response = _json(request, {"detail": exc.message}, 401)
    response["WWW-Authenticate"] = _challenge(request, exc)
    return response


@api.exception_handler(AuthenticationError)
def on_authentication_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return on_authentication_failed(request, AuthenticationFailed("Authentication required."))


@api.exception_handler(Forbidden)
def on_forbidden(request: HttpRequest, exc: Forbidden) -> HttpResponse:
    response = _json(request, {"detail": exc.message}, 403)
    if isinstance(exc, oauth.InsufficientScope):  # error="insufficient_scope": the client may step up
        response["WWW-Authenticate"] = _challenge(request, exc)
    return response


@api.exception_handler(DatabaseError)
def on_database_error(request: HttpRequest, exc: DatabaseError) -> HttpResponse:
    """The catalog database is unreachable (or failed): the client may retry, nothing was stored."""
    logger.warning("API %s %s: database error: %s", request.method, request.path, exc)
    response = _json(
        request, {"detail": "Service Unavailable: the catalog database cannot be reached; try again shortly."}, 503
    )
    response["Retry-After"] = "5"
    return response


@api.exception_handler(RequestDataTooBig)
def on_too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    from django.conf import settings

    limit = settings.GATEWAY_MAX_BODY_BYTES
    return _json(
        request,
        {"detail": f"The request body is larger than the limit of {limit} bytes (GATEWAY_MAX_BODY_BYTES)."},
        413,
    )


def _location(loc: list[Any]) -> str:
    parts = [str(part) for part in loc if part not in ("body", "payload", "query")]
    return ".".join(parts) or "body"


@api.exception_handler(ValidationError)
def on_validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    errors = [{"loc": _location(list(err.get("loc", []))), "msg": str(err.get("msg", "invalid"))} for err in exc.errors]
    summary = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors[:10])
    return _json(request, {"detail": f"Invalid request: {summary}", "errors": errors}, 422)


@api.exception_handler(HttpError)
def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    detail = str(exc)
    if exc.status_code == 400 and isinstance(exc.__cause__, json.JSONDecodeError):
        detail = f"Malformed JSON in the request body: {exc.__cause__}."
    return _json(request, {"detail": detail}, exc.status_code)
