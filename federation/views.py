"""The well-known document other gateways read to discover this one and its approved peers
(`GET /.well-known/mcp-gateway`, docs/federation.md section 5)."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_safe

from federation import peers
from registry import auth
from registry.choices import Scope
from registry.conf import auth_required
from registry.exceptions import AuthenticationFailed


def _unauthorized(message: str) -> JsonResponse:
    response = JsonResponse({"detail": message}, status=401)
    response["WWW-Authenticate"] = auth.WWW_AUTHENTICATE
    return response


@require_safe
def well_known(request: HttpRequest) -> JsonResponse:
    """This gateway's name, URLs and approved peers; for callers the REST API would let read."""
    if auth_required():
        try:
            principal = auth.principal_from_authorization(request.headers.get("Authorization"))
        except AuthenticationFailed as exc:
            return _unauthorized(exc.message)
        if principal is None:
            principal = auth.session_principal(request.user)
        if principal is None:
            return _unauthorized(
                "Authentication required: send 'Authorization: Bearer <token>' with the read scope "
                "(a peer sends its GATEWAY_PEER_TOKEN) or HTTP Basic credentials."
            )
        if (refusal := auth.rest_refusal(principal)) is not None:
            return JsonResponse({"detail": refusal}, status=403)
        if not principal.allows(Scope.READ):
            return JsonResponse(
                {
                    "detail": f"Your credentials do not allow '{Scope.READ}' (they allow: "
                    f"{', '.join(sorted(principal.scopes)) or 'nothing'})."
                },
                status=403,
            )
    base = peers.public_url() or request.build_absolute_uri("/").rstrip("/")
    return JsonResponse(peers.well_known_document(base_url=base))
