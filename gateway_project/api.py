"""The one NinjaAPI instance: mounts the apps' routers under /api/ and maps errors to JSON once."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.core.exceptions import DisallowedHost, RequestDataTooBig
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.urls import Resolver404, URLPattern, URLResolver, resolve
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from federation.api import router as federation_router
from registry import oauth
from registry.api import router as registry_router
from registry.exceptions import AuthenticationFailed, CatalogError, Forbidden
from registry.parsers import JsonBodyParser
from transports.api import router as transports_router
from transports.rpc import router as rpc_router

logger = logging.getLogger(__name__)


class GatewayAPI(NinjaAPI):
    """The NinjaAPI whose document says two things ninja's alone does not: of parameters, what HTTP can carry
    (a query string or header has no null: a parameter left out is the "none", so the null branch pydantic
    gives an optional parameter goes); and, as OpenAPI links, that what a create answers (an id, a name, a jti)
    is what the operations on the created entry take in their path."""

    def get_openapi_schema(self, **kwargs: Any) -> Any:
        document = super().get_openapi_schema(**kwargs)
        paths = document.get("paths", {})
        for operations in paths.values():
            for operation in operations.values():
                for parameter in operation.get("parameters", []):
                    _drop_null(parameter.get("schema", {}))
        _link_creates(paths, document.get("components", {}).get("schemas", {}))
        return document


def _link_creates(paths: dict[str, Any], components: dict[str, Any]) -> None:
    for collection, operations in paths.items():
        responses = operations.get("post", {}).get("responses", {})
        created = responses.get(201) or responses.get("201")  # ninja's keys are ints until rendered
        if created is None:
            continue
        schema = created.get("content", {}).get("application/json", {}).get("schema", {})
        fields = components.get(schema.get("$ref", "").rsplit("/", 1)[-1], {}).get("properties", {})
        links: dict[str, Any] = {}
        for path, targets in paths.items():
            head, _, rest = path.removeprefix(collection + "/").partition("/")
            if not path.startswith(collection + "/{") or not head.endswith("}"):
                continue
            parameter = head.strip("{}")
            field = "id" if parameter == "pk" else parameter
            if field not in fields:
                continue
            for method, target in targets.items():
                name = f"{method}_{rest.replace('-', '_').replace('/', '_') or 'entry'}"
                links[name] = {
                    "operationId": target["operationId"],
                    "parameters": {parameter: f"$response.body#/{field}"},
                }
        if links:
            created["links"] = links


def _drop_null(schema: dict[str, Any]) -> None:
    branches = schema.get("anyOf")
    if not isinstance(branches, list) or {"type": "null"} not in branches:
        return
    rest = [branch for branch in branches if branch != {"type": "null"}]
    del schema["anyOf"]
    if len(rest) == 1:
        schema.update(rest[0])
    else:
        schema["anyOf"] = rest
    if schema.get("default", ...) is None:
        del schema["default"]


api = GatewayAPI(
    title="MCP Gateway API",
    version="1",
    description="Manage the catalog of MCP Gateway: upstream gateways, tools, resources, templates, "
    "prompts and virtual servers. Authenticate with a bearer token (`manage.py issue_token`) or HTTP Basic.",
    urls_namespace="api",
    parser=JsonBodyParser(),  # JSON media type only (415), standard numbers only (422), clear 400s
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
    # ninja wraps whatever the body parser raised in a 400 "Cannot parse request body": answer with the
    # parser's own error (415 for a non-JSON media type, 422 naming a non-finite number's field).
    cause = exc.__cause__
    if isinstance(cause, CatalogError):
        return on_catalog_error(request, cause)
    if isinstance(cause, ValidationError):
        return on_validation_error(request, cause)
    detail = str(exc)
    if exc.status_code == 400 and isinstance(cause, json.JSONDecodeError):
        detail = f"Malformed JSON in the request body: {cause}."
    return _json(request, {"detail": detail}, exc.status_code)


# -- errors outside the operations: paths no operation serves, methods an operation lacks, refusals made
# before any view runs (a foreign Host) and unexpected failures. Under /api/ they answer in JSON like the
# operations do; elsewhere (admin, landing page) Django's own pages stay.


def _under_api(request: HttpRequest) -> bool:
    return request.path_info.startswith("/api/")


def _error(detail: str, status: int, **headers: str) -> HttpResponse:
    response = JsonResponse({"detail": detail}, status=status, content_type="application/json; charset=utf-8")
    for name, value in headers.items():
        response[name] = value
    return response


def _not_allowed(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    """ninja's plain-text 405 as JSON, keeping its Allow header."""
    if response.status_code != 405 or response.get("Content-Type", "").startswith("application/json"):
        return response
    allowed = sorted(method.strip() for method in response.get("Allow", "").split(",") if method.strip())
    return _error(
        f"{request.method} is not allowed on {request.path}: use {' or '.join(allowed) or 'another method'}.",
        405,
        Allow=", ".join(allowed),
    )


def _with_json_405(view: Callable[..., Any]) -> Callable[..., Any]:
    if iscoroutinefunction(view):

        async def async_view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            return _not_allowed(request, await view(request, *args, **kwargs))

        wrapped: Callable[..., Any] = async_view
    else:

        def sync_view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            return _not_allowed(request, view(request, *args, **kwargs))

        wrapped = sync_view
    wrapped.csrf_exempt = True  # type: ignore[attr-defined]  # as ninja's views are: ApiAuth checks CSRF itself
    return wrapped


def api_urls() -> tuple[list[URLPattern | URLResolver], str, str]:
    """``api.urls`` whose views answer a method they lack with a JSON 405 (ninja's is plain text)."""
    patterns, app_name, namespace = api.urls
    for pattern in patterns:
        if isinstance(pattern, URLPattern):
            pattern.callback = _with_json_405(pattern.callback)
    return patterns, app_name, namespace


def _id_hint(path: str) -> str:
    """Where a path would exist with a number in place of one of its parts: that part must be an id."""
    parts = path.split("/")
    for index, part in enumerate(parts):
        if part and not part.isdigit():
            candidate = "/".join([*parts[:index], "1", *parts[index + 1 :]])
            try:
                match = resolve(candidate)
            except Resolver404:
                continue
            if match.url_name != "api_not_found":
                return f" {part!r} is not an id: ids are whole numbers, as the lists show them."
    return ""


@csrf_exempt  # a 404 whatever the method: the CSRF middleware's HTML 403 must not come first
def api_not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    """The answer of every /api/ path no operation serves."""
    hint = _id_hint(request.path_info)
    return _error(f"No API endpoint at {request.path}.{hint} The endpoints are listed at /api/docs.", 404)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler400: a foreign Host header, or another request Django refuses before any view runs."""
    if not _under_api(request):
        return defaults.bad_request(request, exception)
    if isinstance(exception, DisallowedHost):
        host = request.META.get("HTTP_X_FORWARDED_HOST") or request.META.get("HTTP_HOST", "")
        return _error(
            f"The Host header {host[:200]!r} names no host this gateway serves: address it by one of its own "
            "host names (the operator lists them in ALLOWED_HOSTS).",
            400,
        )
    return _error("Bad request: the gateway could not read this request.", 400)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler403."""
    if not _under_api(request):
        return defaults.permission_denied(request, exception)
    return _error(str(exception) or "Forbidden.", 403)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler404 (an Http404 raised under /api/ outside ninja's own handling)."""
    if not _under_api(request):
        return defaults.page_not_found(request, exception)
    return api_not_found(request)


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: the failure is logged with its traceback; the caller learns only that it happened."""
    if not _under_api(request):
        return defaults.server_error(request)
    return _error("The gateway failed to answer this request (an internal error, recorded in its log).", 500)
