"""RFC 9728 protected-resource metadata: what an MCP client reads to find the authorization server
that issues tokens for an endpoint (docs/governance.md, "MCP authorization (OAuth)").

    GET /.well-known/oauth-protected-resource                       the gateway (and its REST API)
    GET /.well-known/oauth-protected-resource/mcp                   the whole catalog's MCP endpoint
    GET /.well-known/oauth-protected-resource/servers/<name>/mcp    one virtual server's
        (also .../sse, .../message, .../rpc, .../ws of either)

404 while OAuth is off (GATEWAY_OAUTH_ISSUER empty) and for a virtual server that does not exist.
Public documents: no credentials needed, and any origin may read them (browser-based clients).
"""

from __future__ import annotations

import re

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse

from registry import oauth
from registry.models import VirtualServer

_TRANSPORTS = "|".join(oauth.TRANSPORT_PATHS)
_PATH = re.compile(rf"^(?:servers/(?P<server>[-a-zA-Z0-9_]+)/)?(?P<transport>{_TRANSPORTS})/?$")
_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "MCP-Protocol-Version, Content-Type, Authorization",
}


def protected_resource(request: HttpRequest, path: str = "") -> HttpResponse:
    """The metadata document of the resource at ``path`` ("" for the gateway as a whole)."""
    if not oauth.enabled():
        raise Http404("OAuth is off on this gateway (GATEWAY_OAUTH_ISSUER is not set).")
    server = None
    if path:
        match = _PATH.match(path)
        if match is None:
            raise Http404("No protected resource at this path.")
        server = match.group("server")
        if server is not None and not VirtualServer.objects.filter(name=server).exists():
            raise Http404(f"No virtual server named {server!r}.")
        path = oauth.endpoint_path(server, match.group("transport"))
    if request.method == "OPTIONS":
        response: HttpResponse = HttpResponse(status=204)
    elif request.method in ("GET", "HEAD"):
        base = oauth.base_urls(request.get_host(), request.scheme or "http")[0]
        response = JsonResponse(oauth.resource_metadata(base, path, server))
        response["Cache-Control"] = "public, max-age=300"
    else:
        response = HttpResponse(status=405)
        response["Allow"] = "GET, HEAD, OPTIONS"
    for name, value in _CORS.items():
        response[name] = value
    return response
