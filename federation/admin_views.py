"""Admin page "Register with a connection test": the upstream's settings in, what it says about itself out
(server, protocol era and version, capabilities, the tools, resources and prompts it would add), before
anything is stored; then "Register" stores it and its catalog in one go (the same service as the API's
`POST /api/gateways` and `manage.py gateway_add`). Mounted under /admin/ by gateway_project.urls (a page
of federation's, which reads upstreams; the registry's admin may not)."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from federation import services
from registry import services as registry_services
from registry.catalog_sync import CatalogDiff
from registry.choices import AuthType, Era, Health, SyncTrigger, Transport
from registry.exceptions import CatalogError
from registry.models import Gateway

# Testing connects to a URL or starts a command of the user's choosing: as much as registering does.
REGISTER_PERMISSION = "registry.add_gateway"
TEST_TIMEOUT = 15.0


class SecretInput(forms.PasswordInput):
    """Typed secrets are kept between "Test" and "Register" (the page is the staff user's own), never shown."""

    def __init__(self) -> None:
        super().__init__(render_value=True)


class GatewayRegisterForm(forms.Form):
    name = forms.SlugField(
        max_length=64,
        help_text="How the gateway is known in the catalog.",
        widget=forms.TextInput({"class": "vTextField"}),
    )
    transport = forms.ChoiceField(choices=Transport.choices, initial=Transport.STREAMABLE_HTTP)
    url = forms.CharField(
        required=False,
        label="URL",
        help_text="Streamable HTTP, SSE or WebSocket: the endpoint.",
        widget=forms.TextInput({"class": "vURLField"}),
    )
    command = forms.CharField(
        required=False, help_text="stdio: the program to start.", widget=forms.TextInput({"class": "vTextField"})
    )
    args = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), help_text="stdio: one argument per line."
    )
    era = forms.ChoiceField(choices=Era.choices, initial=Era.AUTO, label="protocol era")
    auth_type = forms.ChoiceField(choices=AuthType.choices, initial=AuthType.NONE, label="credentials")
    token = forms.CharField(required=False, widget=SecretInput(), help_text="Bearer: the token.")
    username = forms.CharField(required=False, help_text="Basic: the user name.")
    password = forms.CharField(required=False, widget=SecretInput(), help_text="Basic: the password.")
    headers = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text='Custom headers: a JSON object, e.g. {"X-Api-Key": "..."}.',
    )

    def gateway_data(self) -> dict[str, Any]:
        """The field values the registry's services take (credentials by kind)."""
        data = self.cleaned_data
        out: dict[str, Any] = {
            "name": data["name"],
            "transport": data["transport"],
            "url": data["url"].strip(),
            "command": data["command"].strip(),
            "args": [line.strip() for line in data["args"].splitlines() if line.strip()],
            "era": data["era"],
            "auth_type": data["auth_type"],
        }
        kind = data["auth_type"]
        if kind == AuthType.BEARER:
            out["credentials"] = {"token": data["token"]}
        elif kind == AuthType.BASIC:
            out["credentials"] = {"username": data["username"], "password": data["password"]}
        elif kind == AuthType.HEADERS:
            try:
                headers = json.loads(data["headers"] or "{}")
            except json.JSONDecodeError as exc:
                raise forms.ValidationError(f"Headers: not JSON ({exc.msg} at character {exc.pos}).") from None
            out["credentials"] = {"headers": headers}
        return out


def _report(upstream: services.UpstreamCatalog) -> dict[str, Any]:
    info = upstream.description()
    server = info["server_info"] if isinstance(info["server_info"], dict) else {}
    return {
        "server": f"{server.get('name', '?')} {server.get('version', '')}".strip(),
        "era": "2026-07-28 (stateless)" if upstream.era == "modern" else "session era",
        "protocol_version": info["protocol_version"],
        "capabilities": sorted(info["capabilities"] or {}),
        "instructions": info.get("instructions") or "",
        "tools": [(tool.get("name"), tool.get("description") or "") for tool in upstream.tools],
        "resources": len(upstream.resources),
        "templates": len(upstream.templates),
        "prompts": len(upstream.prompts),
    }


@never_cache
@staff_member_required
def gateway_register(request: HttpRequest) -> HttpResponse:
    """GET: the form. POST "test": connect and show what the upstream offers, storing nothing. POST
    "register": connect again and store the gateway with its catalog (nothing when it cannot be reached)."""
    if not request.user.has_perm(REGISTER_PERMISSION):
        raise PermissionDenied
    report = None
    form = GatewayRegisterForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            data = form.gateway_data()
            if "register" in request.POST:
                gateway, diff = services.gateway_add(data=data, timeout=TEST_TIMEOUT)
                messages.success(request, f"Registered {gateway.name!r}: {diff.summary()}.")
                return HttpResponseRedirect(reverse("admin:registry_gateway_change", args=[gateway.pk]))
            probe = registry_services.entry_validate(Gateway, data=data)
            report = _report(services.read_upstream(probe, timeout=TEST_TIMEOUT))
        except forms.ValidationError as exc:
            form.add_error(None, exc)
        except CatalogError as exc:
            form.add_error(None, exc.message)
    return TemplateResponse(
        request,
        "admin/registry/gateway/register.html",
        {
            **admin.site.each_context(request),
            "title": "Register a gateway",
            "opts": Gateway._meta,
            "form": form,
            "report": report,
        },
    )


OPERATE_PERMISSION = "registry.change_gateway"


def _operate(gateway_id: int, job: str) -> tuple[str, str, Any]:
    """Run a check or sync of the gateway now, under its lease: (message level, sentence, sync run or None)."""
    from federation import health, sync
    from federation.scheduler import Busy, gateway_leased

    try:
        with gateway_leased(gateway_id) as gateway:
            if gateway is None:
                raise Http404("No such gateway.")
            if job == "check":
                result = health.gateway_check(gateway=gateway)
                state = Health(result.after).label
                if result.ok:
                    return "success", f"{gateway.name}: {state}; it answered in {result.latency_ms} ms.", None
                return "error", f"{gateway.name}: {state}; {result.error}", None
            try:
                run = sync.gateway_sync(gateway=gateway, trigger=SyncTrigger.MANUAL)
            except CatalogError as exc:
                return "error", exc.message, None
            diff = CatalogDiff.from_run(run)
            return "success", f"Synced {gateway.name!r} in {run.duration_ms} ms: {diff.summary()}.", run
    except Busy:
        return "warning", "A check or sync of this gateway is running right now; try again in a moment.", None


@never_cache
@staff_member_required
@require_POST
def gateway_operate(request: HttpRequest, pk: int, job: str) -> HttpResponse:
    """The gateway page's "Check now" and "Sync now": run it now (not queued) and show its result, inline
    as an HTMX fragment, or as a message on the gateway's page after a plain form post."""
    if not request.user.has_perm(OPERATE_PERMISSION):
        raise PermissionDenied
    if job not in ("check", "sync"):
        raise Http404("Unknown operation.")
    level, sentence, run = _operate(pk, job)
    if getattr(request, "htmx", False):
        return TemplateResponse(
            request,
            "admin/registry/gateway/_operation_result.html",
            {"level": level, "sentence": sentence, "run": run},
        )
    messages.add_message(request, getattr(messages, level.upper()), sentence)
    return HttpResponseRedirect(reverse("admin:registry_gateway_change", args=[pk]))
