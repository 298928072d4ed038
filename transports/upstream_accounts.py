"""Users connect their own accounts to per-user upstream gateways (docs/governance.md, "Per-user upstream
credentials"): ``/accounts/upstreams/`` lists the gateways that need each user's own credentials; OAuth ones are
connected with the authorization-code flow and PKCE (state and verifier in the session, tokens into the vault),
the others with a form (a bearer token, Basic username and password, or headers). Any active signed-in user
manages their own credentials here, and only their own.

The views live on the transports' side because the token exchange uses the gateway's OAuth client
(``transports/protocol/oauth_tokens.py``); the data is the catalog's (``registry.services.user_credentials_*``).
"""

from __future__ import annotations

import json
import secrets
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from registry import selectors, services
from registry.choices import AuthType
from registry.exceptions import CatalogError
from registry.models import Gateway
from transports.protocol.oauth_tokens import AuthFailed, pkce_pair, refresh_margin, request_token

SESSION_KEY = "upstream_oauth"
FLOW_SECONDS = 600  # an authorization started longer ago than this is not finished


def _gateway(name: str) -> Gateway:
    return get_object_or_404(Gateway, name=name, per_user_credentials=True, enabled=True)


def _absolute(request: HttpRequest, path: str) -> str:
    base = (settings.GATEWAY_PUBLIC_URL or "").rstrip("/")
    return f"{base}{path}" if base else request.build_absolute_uri(path)


@never_cache
@login_required
@require_GET
def upstream_accounts(request: HttpRequest) -> HttpResponse:
    """My per-user gateways: connected or not, with the form or button to connect and to disconnect."""
    rows = selectors.user_credentials_list(user=request.user)
    return TemplateResponse(request, "accounts/upstreams.html", {"rows": rows, "AuthType": AuthType})


async def discover(gateway: Gateway) -> tuple[str, str]:
    """(authorization URL, token URL): configured, else from the upstream's RFC 9728 metadata and its
    authorization server's RFC 8414 / OpenID metadata."""
    authorize, token = gateway.oauth_authorization_url, gateway.oauth_token_url
    if authorize and token:
        return authorize, token
    parts = urlsplit(gateway.url)
    origin = f"{parts.scheme}://{parts.netloc}"
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session:

        async def get_json(url: str) -> dict[str, Any] | None:
            try:
                async with session.get(url, headers={"Accept": "application/json"}) as response:
                    if response.status != 200:
                        return None
                    data = await response.json(content_type=None)
                    return data if isinstance(data, dict) else None
            except (aiohttp.ClientError, TimeoutError, ValueError):
                return None

        resource = await get_json(f"{origin}/.well-known/oauth-protected-resource{parts.path}") or await get_json(
            f"{origin}/.well-known/oauth-protected-resource"
        )
        servers = (resource or {}).get("authorization_servers") or []
        if not servers or not isinstance(servers[0], str):
            raise AuthFailed(
                f"Gateway {gateway.name!r} has no OAuth URLs configured and its upstream publishes no RFC 9728 "
                "metadata naming an authorization server; an administrator must set them."
            )
        issuer = servers[0].rstrip("/")
        issuer_parts = urlsplit(issuer)
        issuer_origin = f"{issuer_parts.scheme}://{issuer_parts.netloc}"
        metadata = None
        for url in (
            f"{issuer_origin}/.well-known/oauth-authorization-server{issuer_parts.path}",
            f"{issuer_origin}/.well-known/openid-configuration{issuer_parts.path}",
            f"{issuer}/.well-known/openid-configuration",
        ):
            metadata = await get_json(url)
            if metadata:
                break
        if not metadata:
            raise AuthFailed(f"The authorization server {issuer} of gateway {gateway.name!r} publishes no metadata.")
        return (
            authorize or str(metadata.get("authorization_endpoint") or ""),
            token or str(metadata.get("token_endpoint") or ""),
        )


@never_cache
@login_required
@require_POST
def upstream_connect(request: HttpRequest, name: str) -> HttpResponse:
    """Connect my account: OAuth per user redirects to the authorization server; other kinds take the form."""
    gateway = _gateway(name)
    back = HttpResponseRedirect(reverse("upstream_accounts"))
    if gateway.auth_type == AuthType.OAUTH_USER:
        try:
            authorize, token_url = async_to_sync(discover)(gateway)
        except AuthFailed as exc:
            messages.error(request, exc.message)
            return back
        if not authorize or not token_url:
            messages.error(request, f"Gateway {name!r} has no OAuth authorization or token URL.")
            return back
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(24)
        flows = request.session.get(SESSION_KEY) or {}
        now = time.time()
        flows = {k: v for k, v in flows.items() if now - v.get("at", 0) < FLOW_SECONDS}
        flows[state] = {"gateway": name, "verifier": verifier, "token_url": token_url, "at": now}
        request.session[SESSION_KEY] = flows
        query = {
            "response_type": "code",
            "client_id": gateway.oauth_client_id,
            "redirect_uri": _absolute(request, reverse("upstream_accounts_callback")),
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        if gateway.oauth_scopes:
            query["scope"] = gateway.oauth_scopes
        if gateway.url:
            query["resource"] = gateway.url  # RFC 8707: a token for this upstream
        separator = "&" if "?" in authorize else "?"
        return HttpResponseRedirect(f"{authorize}{separator}{urlencode(query)}")
    credentials = _form_credentials(request, gateway)
    if credentials is None:
        return back
    try:
        services.user_credentials_set(user=request.user, gateway=gateway, credentials=credentials)
    except CatalogError as exc:
        messages.error(request, f"{name}: {exc}")
        return back
    messages.success(request, f"Your credentials for {name} are stored.")
    return back


def _form_credentials(request: HttpRequest, gateway: Gateway) -> dict[str, Any] | None:
    data = request.POST
    if gateway.auth_type == AuthType.BEARER:
        return {"token": data.get("token", "").strip()}
    if gateway.auth_type == AuthType.BASIC:
        return {"username": data.get("username", ""), "password": data.get("password", "")}
    if gateway.auth_type == AuthType.HEADERS:
        try:
            headers = json.loads(data.get("headers") or "{}")
        except ValueError:
            messages.error(request, f'{gateway.name}: the headers must be a JSON object, e.g. {{"X-Api-Key": "..."}}.')
            return None
        return {"headers": headers}
    messages.error(request, f"Gateway {gateway.name!r} takes no credentials of this kind.")
    return None


@never_cache
@login_required
@require_GET
def upstream_callback(request: HttpRequest) -> HttpResponse:
    """The authorization server sends the user back here: the code is exchanged and the tokens stored."""
    back = HttpResponseRedirect(reverse("upstream_accounts"))
    flows = request.session.get(SESSION_KEY) or {}
    state = request.GET.get("state", "")
    flow = flows.pop(state, None) if state else None
    request.session[SESSION_KEY] = flows
    if flow is None or time.time() - flow.get("at", 0) > FLOW_SECONDS:
        messages.error(request, "This sign-in is unknown or took too long; start again with Connect.")
        return back
    gateway = _gateway(flow["gateway"])
    if "error" in request.GET:
        why = request.GET.get("error_description") or request.GET["error"]
        messages.error(request, f"{gateway.name}: the authorization server refused: {why}")
        return back
    code = request.GET.get("code", "")
    if not code:
        messages.error(request, f"{gateway.name}: the authorization server sent no code.")
        return back
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": _absolute(request, reverse("upstream_accounts_callback")),
        "code_verifier": flow["verifier"],
    }
    if gateway.url:
        form["resource"] = gateway.url

    async def exchange() -> Any:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30), trust_env=False) as session:
            return await request_token(
                session,
                flow["token_url"],
                form,
                client_id=gateway.oauth_client_id,
                client_secret=gateway.get_credentials().get("client_secret", ""),
            )

    try:
        answer = async_to_sync(exchange)()
    except AuthFailed as exc:
        messages.error(request, f"{gateway.name}: {exc.message}")
        return back
    refresh_at = time.time() + answer.lifetime - refresh_margin(answer.lifetime)
    credentials = {"access_token": answer.access_token, "expires_at": refresh_at, "token_url": flow["token_url"]}
    if answer.refresh_token:
        credentials["refresh_token"] = answer.refresh_token
    try:
        services.user_credentials_set(
            user=request.user,
            gateway=gateway,
            credentials=credentials,
            expires_at=datetime.fromtimestamp(refresh_at, tz=UTC),
        )
    except CatalogError as exc:
        messages.error(request, f"{gateway.name}: {exc}")
        return back
    messages.success(request, f"Your account for {gateway.name} is connected.")
    return back


@never_cache
@login_required
@require_POST
def upstream_disconnect(request: HttpRequest, name: str) -> HttpResponse:
    gateway = get_object_or_404(Gateway, name=name)
    if services.user_credentials_delete(user=request.user, gateway=gateway):
        messages.success(request, f"Your credentials for {name} are deleted.")
    return HttpResponseRedirect(reverse("upstream_accounts"))
